//! Hardware-domain mode: the register layout read from the host's ACPI tables ([`from_acpi`]),
//! GAS by GAS, with the registers that must not be trapped left out.

use ioreq_server::device::Space;

use super::{Block, ConfigError, ResetSetup, SleepValues, TrapSetup};
use crate::acpi::{self, AcpiInfo, AddressSpace, Gas, SleepObject};

/// A GAS as a trap block of `len` bytes: System I/O -> ports, System Memory -> MMIO; other
/// spaces cannot be trapped by an ioreq server's port/memory ranges.
pub(super) fn gas_block(register: &'static str, g: &Gas, len: u64) -> Result<Block, ConfigError> {
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
pub(super) fn gas_len(register: &str, g: &Gas, min: u64, max: u64, even: bool) -> u64 {
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

pub(super) fn sleep_value(state: &str, o: &SleepObject) -> Option<[u8; 2]> {
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
