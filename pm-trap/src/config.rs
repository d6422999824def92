//! Configuration: the `[pm_trap]` section of the per-guest TOML file, and the resolved register
//! layout ([`TrapSetup`]) the device is built from.
//!
//! ```toml
//! [pm_trap]
//! mode = "guest"              # "guest" (default) or "hardware-domain"
//! allow_s3 = false            # S3 -> SHUTDOWN_suspend only when true
//!
//! # guest mode only (all optional; the defaults match Xen's PVH FADT, see GUEST_* constants):
//! pm1a_evt = 0xB000           # I/O port of PM1a_EVT_BLK, 0 = none
//! pm1a_cnt = 0xB004           # I/O port of PM1a_CNT_BLK, 0 = none
//! pm1b_evt = 0x0              # PM1b blocks: absent by default
//! pm1b_cnt = 0x0
//! pm1_evt_len = 4             # PM1_EVT_LEN: 4, 6 or 8
//! pm1_cnt_len = 2             # PM1_CNT_LEN: 2 to 4
//! reset_port = 0xCF9          # RESET_REG (I/O), 0 = none
//! reset_value = 6             # RESET_VALUE
//! s3 = [5, 0]                 # [SLP_TYPa, SLP_TYPb] the guest's tables declare for \_S3
//! s4 = [6, 0]                 # ... \_S4
//! s5 = [7, 0]                 # ... \_S5
//! sleep_control = 0x0         # HW-reduced SLEEP_CONTROL_REG port, 0 = none
//! sleep_status = 0x0          # HW-reduced SLEEP_STATUS_REG port, 0 = none
//!
//! # hardware-domain mode only:
//! acpi_dir = "/sys/firmware/acpi/tables"
//! ```

use std::path::PathBuf;

use ioreq_server::device::Space;
use serde::{Deserialize, Serialize};

use crate::acpi::{self, AcpiInfo, AddressSpace, Gas, SleepObject};

/// Guest mode default PM1a_EVT_BLK: Xen's FADT for HVM and PVH guests (tools/libacpi,
/// `ACPI_PM1A_EVT_BLK_ADDRESS_V1`).
pub const GUEST_PM1A_EVT: u16 = 0xB000;
/// Guest mode default PM1a_CNT_BLK (Xen `ACPI_PM1A_CNT_BLK_ADDRESS_V1`).
pub const GUEST_PM1A_CNT: u16 = 0xB004;
/// Guest mode default PM1_EVT_LEN (Xen's FADT).
pub const GUEST_PM1_EVT_LEN: u8 = 4;
/// Guest mode default PM1_CNT_LEN (Xen's FADT).
pub const GUEST_PM1_CNT_LEN: u8 = 2;
/// Guest mode default RESET_REG: I/O port 0xCF9 (Xen's FADT).
pub const GUEST_RESET_PORT: u16 = 0xCF9;
/// Guest mode default RESET_VALUE (Xen's FADT).
pub const GUEST_RESET_VALUE: u8 = 6;

/// The `\_S5` package the project's guest ACPI fragment declares: `Package() {7, 0}`.
///
/// Xen's PVH DSDT has no `\_S5`, so the project supplies it; this constant is the one place the
/// value is defined, and the table generator must use it. 7 is SLP_TYP "S5" of Intel
/// ICH/PCH chipsets and what most real firmware declares (30 of the 60 DEV machines
/// declare `{7, 0}`); it is deliberately not 0 (QEMU piix4 / Xen HVM), so that a guest writing SLP_EN
/// with a cleared SLP_TYP field does not power itself off. The second element (SLP_TYPb) only
/// matters when a PM1b block is configured.
pub const GUEST_S5: [u8; 2] = [7, 0];
/// The `\_S4` package of the guest fragment (Intel convention, `{6, 0}`): S4 powers off.
pub const GUEST_S4: [u8; 2] = [6, 0];
/// The `\_S3` package of the guest fragment (Intel convention, `{5, 0}`); declare it only when
/// `allow_s3` is set, otherwise the guest's suspend attempts fail immediately.
pub const GUEST_S3: [u8; 2] = [5, 0];

/// Where pm-trap takes its register layout from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A domU: the layout comes from this configuration (defaults: Xen's PVH FADT).
    #[default]
    Guest,
    /// The hardware domain: the layout comes from the host's ACPI tables.
    HardwareDomain,
}

/// The `[pm_trap]` section. Keys are documented in the module docs; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PmTrapConfig {
    /// `mode`: "guest" (default) or "hardware-domain".
    pub mode: Mode,
    /// `allow_s3`: act on S3 with `SHUTDOWN_suspend` (default false: S3 is refused).
    pub allow_s3: bool,
    /// `pm1a_evt` (guest): I/O port of PM1a_EVT_BLK, default [`GUEST_PM1A_EVT`], 0 = none.
    pub pm1a_evt: Option<u16>,
    /// `pm1a_cnt` (guest): I/O port of PM1a_CNT_BLK, default [`GUEST_PM1A_CNT`], 0 = none.
    pub pm1a_cnt: Option<u16>,
    /// `pm1b_evt` (guest): I/O port of PM1b_EVT_BLK, default none.
    pub pm1b_evt: Option<u16>,
    /// `pm1b_cnt` (guest): I/O port of PM1b_CNT_BLK, default none.
    pub pm1b_cnt: Option<u16>,
    /// `pm1_evt_len` (guest): bytes of each PM1x_EVT_BLK, default 4.
    pub pm1_evt_len: Option<u8>,
    /// `pm1_cnt_len` (guest): bytes of each PM1x_CNT_BLK, default 2.
    pub pm1_cnt_len: Option<u8>,
    /// `reset_port` (guest): I/O port of RESET_REG, default 0xCF9, 0 = none.
    pub reset_port: Option<u16>,
    /// `reset_value` (guest): RESET_VALUE, default 6.
    pub reset_value: Option<u8>,
    /// `s3` (guest): \_S3 `[SLP_TYPa, SLP_TYPb]`, default [`GUEST_S3`].
    pub s3: Option<[u8; 2]>,
    /// `s4` (guest): \_S4, default [`GUEST_S4`].
    pub s4: Option<[u8; 2]>,
    /// `s5` (guest): \_S5, default [`GUEST_S5`].
    pub s5: Option<[u8; 2]>,
    /// `sleep_control` (guest): HW-reduced SLEEP_CONTROL_REG I/O port, default none.
    pub sleep_control: Option<u16>,
    /// `sleep_status` (guest): HW-reduced SLEEP_STATUS_REG I/O port, default none.
    pub sleep_status: Option<u16>,
    /// `acpi_dir` (hardware-domain): the host's tables, default
    /// [`acpi::DEFAULT_TABLE_DIR`].
    pub acpi_dir: Option<PathBuf>,
}

/// A configuration or register-layout problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML text or the `[pm_trap]` section does not parse (the message names the key).
    #[error("[pm_trap]: {0}")]
    Toml(String),
    /// A key has a value pm-trap cannot use.
    #[error("[pm_trap] {key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The host's ACPI tables could not be read.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// A register of the layout cannot be trapped.
    #[error("{register}: {reason}")]
    Register {
        /// Register name (`PM1a_CNT`, ...).
        register: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Two registers share addresses.
    #[error("{a} and {b} overlap")]
    Overlap {
        /// One register.
        a: &'static str,
        /// The other.
        b: &'static str,
    },
}

/// One trapped register block: `len` bytes at `base` of `space`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Block {
    /// Port or memory.
    pub space: Space,
    /// First address.
    pub base: u64,
    /// Length in bytes (at least 1).
    pub len: u64,
}

impl Block {
    /// An I/O port block.
    pub fn port(base: u16, len: u64) -> Block {
        Block {
            space: Space::Port,
            base: base as u64,
            len,
        }
    }

    fn overlaps(&self, o: &Block) -> bool {
        self.space == o.space
            && self.base < o.base.saturating_add(o.len)
            && o.base < self.base.saturating_add(self.len)
    }
}

/// The reset register and the value that resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ResetSetup {
    /// Where (one byte).
    pub block: Block,
    /// RESET_VALUE.
    pub value: u8,
}

/// The \_Sx values the device matches SLP_TYP against (`None`: the state is never matched).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SleepValues {
    /// \_S3 `[SLP_TYPa, SLP_TYPb]`.
    pub s3: Option<[u8; 2]>,
    /// \_S4.
    pub s4: Option<[u8; 2]>,
    /// \_S5.
    pub s5: Option<[u8; 2]>,
}

/// The resolved layout: which registers to trap where, and the sleep values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrapSetup {
    /// PM1a event block (status, enable halves).
    pub pm1a_evt: Option<Block>,
    /// PM1b event block.
    pub pm1b_evt: Option<Block>,
    /// PM1a control block.
    pub pm1a_cnt: Option<Block>,
    /// PM1b control block: when present, SLP_EN acts once both halves have been written.
    pub pm1b_cnt: Option<Block>,
    /// Reset register.
    pub reset: Option<ResetSetup>,
    /// HW-reduced sleep control register (one byte).
    pub sleep_control: Option<Block>,
    /// HW-reduced sleep status register (one byte).
    pub sleep_status: Option<Block>,
    /// \_Sx values.
    pub sleep: SleepValues,
    /// Whether S3 becomes `SHUTDOWN_suspend` (otherwise it is refused).
    pub allow_s3: bool,
}

impl TrapSetup {
    /// Every configured register block with its name.
    pub fn blocks(&self) -> Vec<(&'static str, Block)> {
        [
            ("PM1a_EVT", self.pm1a_evt),
            ("PM1b_EVT", self.pm1b_evt),
            ("PM1a_CNT", self.pm1a_cnt),
            ("PM1b_CNT", self.pm1b_cnt),
            ("RESET_REG", self.reset.map(|r| r.block)),
            ("SLEEP_CONTROL_REG", self.sleep_control),
            ("SLEEP_STATUS_REG", self.sleep_status),
        ]
        .into_iter()
        .filter_map(|(n, b)| b.map(|b| (n, b)))
        .collect()
    }

    /// Check the layout: lengths, port range, no overlaps, and that PM1b is not configured
    /// without PM1a.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let blocks = self.blocks();
        for (name, b) in &blocks {
            if b.len == 0 || b.len > 8 {
                return Err(ConfigError::Register {
                    register: name,
                    reason: format!("length {} (1 to 8 bytes)", b.len),
                });
            }
            let last = b.base.checked_add(b.len - 1);
            let limit = match b.space {
                Space::Port => 0xFFFF,
                Space::Memory => u64::MAX,
                Space::PciConfig => {
                    return Err(ConfigError::Register {
                        register: name,
                        reason: "PCI config space is not supported".into(),
                    })
                }
            };
            if !matches!(last, Some(l) if l <= limit) {
                return Err(ConfigError::Register {
                    register: name,
                    reason: format!("{:#x}+{} is outside the {:?} space", b.base, b.len, b.space),
                });
            }
        }
        for (i, (a, ba)) in blocks.iter().enumerate() {
            for (b, bb) in &blocks[i + 1..] {
                if ba.overlaps(bb) {
                    return Err(ConfigError::Overlap { a, b });
                }
            }
        }
        if self.pm1b_cnt.is_some() && self.pm1a_cnt.is_none() {
            return Err(ConfigError::Register {
                register: "PM1b_CNT",
                reason: "PM1b without PM1a".into(),
            });
        }
        Ok(())
    }
}

impl PmTrapConfig {
    /// The `[pm_trap]` section of a whole per-guest config file (absent: all defaults).
    /// Other sections are not looked at.
    pub fn from_guest_toml(text: &str) -> Result<PmTrapConfig, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.message().to_owned()))?;
        match table.get("pm_trap") {
            None => Ok(PmTrapConfig::default()),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Toml(e.message().to_owned())),
        }
    }

    /// Resolve the layout: guest mode from this section, hardware-domain mode from the host's
    /// tables in `acpi_dir`.
    pub fn setup(&self) -> Result<TrapSetup, ConfigError> {
        match self.mode {
            Mode::Guest => self.guest_setup(),
            Mode::HardwareDomain => {
                self.reject_guest_keys()?;
                let dir = self
                    .acpi_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(acpi::DEFAULT_TABLE_DIR));
                let info = acpi::inspect_dir(&dir)?;
                from_acpi(&info, self.allow_s3)
            }
        }
    }

    fn reject_guest_keys(&self) -> Result<(), ConfigError> {
        let set = [
            ("pm1a_evt", self.pm1a_evt.is_some()),
            ("pm1a_cnt", self.pm1a_cnt.is_some()),
            ("pm1b_evt", self.pm1b_evt.is_some()),
            ("pm1b_cnt", self.pm1b_cnt.is_some()),
            ("pm1_evt_len", self.pm1_evt_len.is_some()),
            ("pm1_cnt_len", self.pm1_cnt_len.is_some()),
            ("reset_port", self.reset_port.is_some()),
            ("reset_value", self.reset_value.is_some()),
            ("s3", self.s3.is_some()),
            ("s4", self.s4.is_some()),
            ("s5", self.s5.is_some()),
            ("sleep_control", self.sleep_control.is_some()),
            ("sleep_status", self.sleep_status.is_some()),
        ];
        match set.iter().find(|(_, s)| *s) {
            Some((key, _)) => Err(ConfigError::Invalid {
                key,
                message: "only valid with mode = \"guest\" (hardware-domain mode reads the host's ACPI tables)".into(),
            }),
            None => Ok(()),
        }
    }

    /// Guest mode: the layout from this section and the `GUEST_*` defaults.
    pub fn guest_setup(&self) -> Result<TrapSetup, ConfigError> {
        if self.mode != Mode::Guest {
            return Err(ConfigError::Invalid {
                key: "mode",
                message: "guest_setup needs mode = \"guest\"".into(),
            });
        }
        if self.acpi_dir.is_some() {
            return Err(ConfigError::Invalid {
                key: "acpi_dir",
                message: "only valid with mode = \"hardware-domain\"".into(),
            });
        }
        let evt_len = self.pm1_evt_len.unwrap_or(GUEST_PM1_EVT_LEN);
        if !(4..=8).contains(&evt_len) || evt_len & 1 != 0 {
            return Err(ConfigError::Invalid {
                key: "pm1_evt_len",
                message: format!("{evt_len}: must be 4, 6 or 8"),
            });
        }
        let cnt_len = self.pm1_cnt_len.unwrap_or(GUEST_PM1_CNT_LEN);
        if !(2..=4).contains(&cnt_len) {
            return Err(ConfigError::Invalid {
                key: "pm1_cnt_len",
                message: format!("{cnt_len}: must be 2 to 4"),
            });
        }
        for (key, v) in [("s3", self.s3), ("s4", self.s4), ("s5", self.s5)] {
            if let Some(v) = v.filter(|v| v.iter().any(|x| *x > 7)) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{v:?}: SLP_TYP values are 3 bits (0 to 7)"),
                });
            }
        }
        let port = |p: Option<u16>, default: u16, len: u8| match p.unwrap_or(default) {
            0 => None,
            p => Some(Block::port(p, len as u64)),
        };
        let setup = TrapSetup {
            pm1a_evt: port(self.pm1a_evt, GUEST_PM1A_EVT, evt_len),
            pm1b_evt: port(self.pm1b_evt, 0, evt_len),
            pm1a_cnt: port(self.pm1a_cnt, GUEST_PM1A_CNT, cnt_len),
            pm1b_cnt: port(self.pm1b_cnt, 0, cnt_len),
            reset: port(self.reset_port, GUEST_RESET_PORT, 1).map(|block| ResetSetup {
                block,
                value: self.reset_value.unwrap_or(GUEST_RESET_VALUE),
            }),
            sleep_control: port(self.sleep_control, 0, 1),
            sleep_status: port(self.sleep_status, 0, 1),
            sleep: SleepValues {
                s3: Some(self.s3.unwrap_or(GUEST_S3)),
                s4: Some(self.s4.unwrap_or(GUEST_S4)),
                s5: Some(self.s5.unwrap_or(GUEST_S5)),
            },
            allow_s3: self.allow_s3,
        };
        setup.validate()?;
        Ok(setup)
    }
}

/// A GAS as a trap block of `len` bytes: System I/O -> ports, System Memory -> MMIO; other
/// spaces cannot be trapped by an ioreq server's port/memory ranges.
fn gas_block(register: &'static str, g: &Gas, len: u64) -> Result<Block, ConfigError> {
    let space = match g.space {
        AddressSpace::SYSTEM_IO => Space::Port,
        AddressSpace::SYSTEM_MEMORY => Space::Memory,
        other => {
            return Err(ConfigError::Register {
                register,
                reason: format!("address space {other} cannot be trapped"),
            })
        }
    };
    Ok(Block {
        space,
        base: g.addr,
        len,
    })
}

/// Byte length of a block from a GAS width, clamped to what the register can be; a width
/// outside the range is logged (ACPICA likewise forces PM1 control widths to 16 bits).
fn gas_len(register: &str, g: &Gas, min: u64, max: u64, even: bool) -> u64 {
    let bytes = g.bit_width as u64 / 8;
    let mut len = bytes.clamp(min, max);
    if even {
        len &= !1;
    }
    if len != bytes || g.bit_width & 7 != 0 {
        tracing::warn!(
            "{register}: declared {} bits; trapping {len} bytes",
            g.bit_width
        );
    }
    len
}

fn sleep_value(state: &str, o: &SleepObject) -> Option<[u8; 2]> {
    match o {
        SleepObject::Static(v) => Some(*v),
        SleepObject::Absent => None,
        SleepObject::Dynamic(why) => {
            tracing::warn!("\\{state} is {why}: SLP_EN with its sleep type will not be recognised");
            None
        }
        SleepObject::Invalid(why) => {
            tracing::warn!("\\{state} is invalid ({why}): ignored");
            None
        }
    }
}

/// I/O port 0x64: the i8042 keyboard controller's command port (some firmware resets through it
/// with RESET_VALUE 0xFE, "pulse reset line").
pub const I8042_COMMAND_PORT: u64 = 0x64;

/// Hardware-domain mode: the layout from the host's tables. A HW-reduced platform uses the
/// sleep control/status registers and no PM1 blocks (as ACPICA does); otherwise PM1a and PM1b.
/// A dynamic or invalid \_Sx is never matched (logged).
///
/// The reset register is not trapped when it is a port the hardware domain needs for other
/// traffic: the FADT's SMI_CMD port (22 of the 43 DEV machines with a reset register reset
/// through an SMI) or the i8042 command port: trapping those would swallow every SMI command
/// (ACPI enable, firmware calls from AML) or keyboard-controller command of the hardware
/// domain. Its reboot then goes its usual way.
pub fn from_acpi(info: &AcpiInfo, allow_s3: bool) -> Result<TrapSetup, ConfigError> {
    let mut s = TrapSetup {
        sleep: SleepValues {
            s3: sleep_value("_S3", &info.sleep.s3),
            s4: sleep_value("_S4", &info.sleep.s4),
            s5: sleep_value("_S5", &info.sleep.s5),
        },
        allow_s3,
        ..TrapSetup::default()
    };
    if info.hw_reduced {
        let Some(ctl) = &info.sleep_control else {
            return Err(ConfigError::Register {
                register: "SLEEP_CONTROL_REG",
                reason: "the FADT is HW-reduced but has no sleep control register".into(),
            });
        };
        s.sleep_control = Some(gas_block("SLEEP_CONTROL_REG", ctl, 1)?);
        s.sleep_status = match info
            .sleep_status
            .as_ref()
            .map(|g| gas_block("SLEEP_STATUS_REG", g, 1))
        {
            Some(Ok(b)) if s.sleep_control.is_some_and(|c| c.overlaps(&b)) => {
                tracing::warn!("SLEEP_STATUS_REG is the sleep control register's address: not trapped separately");
                None
            }
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                tracing::warn!("{e}: not trapped");
                None
            }
            None => None,
        };
    } else {
        let Some(cnt) = &info.pm1a_cnt else {
            return Err(ConfigError::Register {
                register: "PM1a_CNT",
                reason: "the FADT has no PM1a control block".into(),
            });
        };
        s.pm1a_cnt = Some(gas_block(
            "PM1a_CNT",
            cnt,
            gas_len("PM1a_CNT", cnt, 2, 4, false),
        )?);
        if let Some(g) = &info.pm1b_cnt {
            s.pm1b_cnt = Some(gas_block(
                "PM1b_CNT",
                g,
                gas_len("PM1b_CNT", g, 2, 4, false),
            )?);
        }
        for (name, g, slot) in [
            ("PM1a_EVT", &info.pm1a_evt, &mut s.pm1a_evt),
            ("PM1b_EVT", &info.pm1b_evt, &mut s.pm1b_evt),
        ] {
            if let Some(g) = g {
                match gas_block(name, g, gas_len(name, g, 4, 8, true)) {
                    Ok(b) => *slot = Some(b),
                    Err(e) => tracing::warn!("{e}: not trapped"),
                }
            }
        }
    }
    let shared_port = |r: &acpi::ResetRegister| {
        r.space == AddressSpace::SYSTEM_IO
            && ((info.smi_cmd != 0 && r.addr == info.smi_cmd as u64)
                || r.addr == I8042_COMMAND_PORT)
    };
    if let Some(r) = info.reset.as_ref().filter(|r| shared_port(r)) {
        tracing::warn!(
            "RESET_REG is I/O port {:#x}, shared with SMI_CMD or the i8042: not trapped",
            r.addr
        );
    } else if let Some(r) = &info.reset {
        match (r.value, gas_block("RESET_REG", &r.gas(), 1)) {
            (Some(value), Ok(block)) => s.reset = Some(ResetSetup { block, value }),
            (None, _) => tracing::warn!("RESET_REG without a RESET_VALUE field: not trapped"),
            (_, Err(e)) => tracing::warn!("{e}: not trapped"),
        }
    }
    s.validate()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_xen_pvh() {
        let c = PmTrapConfig::from_guest_toml("domid = 1\n").unwrap();
        assert_eq!(c, PmTrapConfig::default());
        let s = c.setup().unwrap();
        assert_eq!(s.pm1a_evt, Some(Block::port(0xB000, 4)));
        assert_eq!(s.pm1a_cnt, Some(Block::port(0xB004, 2)));
        assert_eq!(s.pm1b_cnt, None);
        assert_eq!(
            s.reset,
            Some(ResetSetup {
                block: Block::port(0xCF9, 1),
                value: 6
            })
        );
        assert_eq!(s.sleep.s5, Some(GUEST_S5));
        assert!(!s.allow_s3);
    }

    fn info() -> AcpiInfo {
        let g = |addr, bits| Some(Gas::io(addr, bits));
        AcpiInfo {
            pm1a_cnt: g(0x404, 2),
            pm1b_cnt: None,
            reset: Some(acpi::ResetRegister {
                space: AddressSpace::SYSTEM_IO,
                addr: 0xB2,
                bit_width: 8,
                value: Some(0xE4),
            }),
            hw_reduced: false,
            sleep_control: None,
            sleep: acpi::SleepStates {
                s3: SleepObject::Dynamic("conditional".into()),
                s4: SleepObject::Absent,
                s5: SleepObject::Static([7, 0]),
            },
            pm1a_evt: g(0x400, 4),
            pm1b_evt: None,
            sleep_status: None,
            smi_cmd: 0xB2,
            fadt_revision: 4,
            fadt_length: 244,
            sleep_detail: Vec::new(),
            tables: Vec::new(),
            aml_errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn from_acpi_layouts() {
        let mut i = info();
        let s = from_acpi(&i, true).unwrap();
        assert_eq!(s.pm1a_cnt, Some(Block::port(0x404, 2)));
        assert_eq!(s.pm1a_evt, Some(Block::port(0x400, 4)));
        assert_eq!(s.reset, None, "SMI_CMD is not trapped");
        assert_eq!(
            s.sleep,
            SleepValues {
                s3: None,
                s4: None,
                s5: Some([7, 0])
            }
        );
        assert!(s.allow_s3);
        i.reset = Some(acpi::ResetRegister {
            space: AddressSpace::SYSTEM_IO,
            addr: 0xCF9,
            bit_width: 8,
            value: Some(6),
        });
        i.pm1a_cnt = Some(Gas {
            space: AddressSpace::SYSTEM_IO,
            addr: 0x1004,
            bit_width: 32,
            bit_offset: 0,
            access_size: 0,
        });
        i.pm1a_evt = Some(Gas {
            space: AddressSpace::SYSTEM_MEMORY,
            addr: 0xFE00_0000,
            bit_width: 8,
            bit_offset: 0,
            access_size: 0,
        });
        let s = from_acpi(&i, false).unwrap();
        assert_eq!(
            s.reset,
            Some(ResetSetup {
                block: Block::port(0xCF9, 1),
                value: 6
            })
        );
        assert_eq!(s.pm1a_cnt, Some(Block::port(0x1004, 4)));
        assert_eq!(
            s.pm1a_evt,
            Some(Block {
                space: Space::Memory,
                base: 0xFE00_0000,
                len: 4
            })
        );
        // HW-reduced: sleep registers only; missing control register is an error.
        i.hw_reduced = true;
        assert!(from_acpi(&i, false).is_err());
        i.sleep_control = Some(Gas::io(0x405, 1));
        i.sleep_status = Some(Gas::io(0x401, 1));
        let s = from_acpi(&i, false).unwrap();
        assert_eq!((s.pm1a_cnt, s.pm1a_evt), (None, None));
        assert_eq!(s.sleep_control, Some(Block::port(0x405, 1)));
        assert_eq!(s.sleep_status, Some(Block::port(0x401, 1)));
        // A PM1 control block in PCI config space cannot be trapped.
        i.hw_reduced = false;
        i.pm1a_cnt = Some(Gas {
            space: AddressSpace::PCI_CONFIG,
            addr: 0x40,
            bit_width: 16,
            bit_offset: 0,
            access_size: 0,
        });
        assert!(from_acpi(&i, false)
            .unwrap_err()
            .to_string()
            .contains("PM1a_CNT"));
    }

    #[test]
    fn keys_and_errors() {
        let c = PmTrapConfig::from_guest_toml(
            "[pm_trap]\nmode = \"guest\"\nallow_s3 = true\npm1b_evt = 0x45C\npm1b_cnt = 0x460\ns5 = [0, 7]\nreset_port = 0\n",
        )
        .unwrap();
        let s = c.setup().unwrap();
        assert_eq!(s.pm1b_cnt, Some(Block::port(0x460, 2)));
        assert_eq!(s.sleep.s5, Some([0, 7]));
        assert_eq!(s.reset, None);
        assert!(s.allow_s3);
        let e = PmTrapConfig::from_guest_toml("[pm_trap]\npm1a_ctn = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pm1a_ctn"), "{e}");
        let e = PmTrapConfig::from_guest_toml("[pm_trap]\nmode = \"dom0\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dom0") || e.contains("mode"), "{e}");
        let e = PmTrapConfig::from_guest_toml("[pm_trap]\npm1a_cnt = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("70000"), "{e}");
        let c = PmTrapConfig::from_guest_toml("[pm_trap]\npm1a_cnt = 0xB002\n").unwrap();
        assert!(matches!(c.setup(), Err(ConfigError::Overlap { .. })));
        let c = PmTrapConfig::from_guest_toml("[pm_trap]\ns5 = [8, 0]\n").unwrap();
        assert!(c.setup().unwrap_err().to_string().contains("s5"));
        let c =
            PmTrapConfig::from_guest_toml("[pm_trap]\nmode = \"hardware-domain\"\ns5 = [7, 0]\n")
                .unwrap();
        assert!(c.setup().unwrap_err().to_string().contains("s5"));
        let c = PmTrapConfig::from_guest_toml("[pm_trap]\npm1a_cnt = 0xFFFF\n").unwrap();
        assert!(c.setup().unwrap_err().to_string().contains("outside"));
        let c = PmTrapConfig::from_guest_toml(
            "[pm_trap]\nmode = \"hardware-domain\"\nacpi_dir = \"/nonexistent\"\n",
        )
        .unwrap();
        assert!(c.setup().unwrap_err().to_string().contains("/nonexistent"));
    }
}
