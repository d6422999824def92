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
//!
//! This file reads the section and builds the guest-mode layout; `layout` holds [`TrapSetup`]
//! and its validation, `hwdom` the hardware-domain layout ([`from_acpi`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::acpi;

mod hwdom;
mod layout;
#[cfg(test)]
mod tests;

pub use hwdom::{from_acpi, I8042_COMMAND_PORT};
pub use layout::{Block, ResetSetup, SleepValues, TrapSetup};

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
