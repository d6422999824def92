//! The Fixed ACPI Description Table (ACPI 6.0, 5.2.9 "Fixed ACPI Description Table (FADT)",
//! Table 5-34), every revision: ACPI 1.0 tables are 116 bytes, some 2.0-era tables 129 or 132,
//! ACPI 2.0-4.0 tables 244, 5.0 268 and 6.x 276. A field is read only when the table is long
//! enough to hold it; the 64-bit `X_` GAS blocks are preferred over the 32-bit block fields when
//! present and non-zero, as ACPICA's `AcpiTbConvertFadt` does.

use serde::Serialize;

use super::gas::{Gas, GAS_LEN};
use super::tables;

/// FADT byte offsets (ACPI 6.0, Table 5-34).
pub mod offset {
    /// SMI_CMD: 32-bit port of the SMI command register (0: the system is always in ACPI mode).
    pub const SMI_CMD: usize = 48;
    /// PM1a_EVT_BLK: 32-bit port of the PM1a event block.
    pub const PM1A_EVT_BLK: usize = 56;
    /// PM1b_EVT_BLK.
    pub const PM1B_EVT_BLK: usize = 60;
    /// PM1a_CNT_BLK: 32-bit port of the PM1a control block.
    pub const PM1A_CNT_BLK: usize = 64;
    /// PM1b_CNT_BLK.
    pub const PM1B_CNT_BLK: usize = 68;
    /// PM1_EVT_LEN: bytes decoded by each PM1x_EVT_BLK (>= 4).
    pub const PM1_EVT_LEN: usize = 88;
    /// PM1_CNT_LEN: bytes decoded by each PM1x_CNT_BLK (>= 2).
    pub const PM1_CNT_LEN: usize = 89;
    /// Flags (fixed feature flags, Table 5-35).
    pub const FLAGS: usize = 112;
    /// RESET_REG (GAS), ACPI 2.0+.
    pub const RESET_REG: usize = 116;
    /// RESET_VALUE (byte).
    pub const RESET_VALUE: usize = 128;
    /// X_PM1a_EVT_BLK (GAS).
    pub const X_PM1A_EVT_BLK: usize = 148;
    /// X_PM1b_EVT_BLK (GAS).
    pub const X_PM1B_EVT_BLK: usize = 160;
    /// X_PM1a_CNT_BLK (GAS).
    pub const X_PM1A_CNT_BLK: usize = 172;
    /// X_PM1b_CNT_BLK (GAS).
    pub const X_PM1B_CNT_BLK: usize = 184;
    /// SLEEP_CONTROL_REG (GAS), ACPI 5.0+.
    pub const SLEEP_CONTROL_REG: usize = 244;
    /// SLEEP_STATUS_REG (GAS), ACPI 5.0+.
    pub const SLEEP_STATUS_REG: usize = 256;
}

/// FADT fixed feature flags (ACPI 6.0, Table 5-35).
pub mod flags {
    /// Bit 10: RESET_REG_SUP, the RESET_REG / RESET_VALUE fields are valid.
    pub const RESET_REG_SUP: u32 = 1 << 10;
    /// Bit 20: HW_REDUCED_ACPI, no fixed hardware (PM1 blocks are not used; the sleep control
    /// and status registers are).
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
    /// Bit 21: LOW_POWER_S0_IDLE_CAPABLE.
    pub const LOW_POWER_S0_IDLE_CAPABLE: u32 = 1 << 21;
}

/// The smallest FADT accepted: ACPI 1.0's 116 bytes, which end with the flags field.
pub const MIN_LEN: usize = offset::FLAGS + 4;

/// The FADT fields pm-trap needs, already resolved (X_ GAS vs 32-bit block).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fadt {
    /// Table revision (header byte 8).
    pub revision: u8,
    /// Length used (header length, clamped to the bytes present).
    pub length: u32,
    /// Fixed feature flags.
    pub flags: u32,
    /// SMI_CMD port (0 if none).
    pub smi_cmd: u32,
    /// PM1_EVT_LEN.
    pub pm1_evt_len: u8,
    /// PM1_CNT_LEN.
    pub pm1_cnt_len: u8,
    /// PM1a event block, `None` when not implemented (address 0).
    pub pm1a_evt: Option<Gas>,
    /// PM1b event block.
    pub pm1b_evt: Option<Gas>,
    /// PM1a control block.
    pub pm1a_cnt: Option<Gas>,
    /// PM1b control block.
    pub pm1b_cnt: Option<Gas>,
    /// RESET_REG as declared (`None` if the table is too short to hold it; its address may be 0).
    pub reset_reg: Option<Gas>,
    /// RESET_VALUE (`None` if the table is too short to hold it).
    pub reset_value: Option<u8>,
    /// SLEEP_CONTROL_REG as declared (`None` if the table is too short; the address may be 0).
    pub sleep_control: Option<Gas>,
    /// SLEEP_STATUS_REG as declared.
    pub sleep_status: Option<Gas>,
}

impl Fadt {
    /// Whether RESET_REG_SUP (flags bit 10) is set.
    pub fn reset_reg_sup(&self) -> bool {
        self.flags & flags::RESET_REG_SUP != 0
    }

    /// Whether HW_REDUCED_ACPI (flags bit 20) is set.
    pub fn hw_reduced(&self) -> bool {
        self.flags & flags::HW_REDUCED_ACPI != 0
    }
}

/// Parse a FADT. `Err(reason)` when it is not a FADT or too short to hold the flags field; a
/// checksum mismatch only adds a warning.
pub(crate) fn parse(name: &str, bytes: &[u8], warnings: &mut Vec<String>) -> Result<Fadt, String> {
    let c = tables::check(name, bytes, warnings)?;
    if &c.signature != b"FACP" {
        return Err(format!(
            "signature {:?} is not \"FACP\"",
            String::from_utf8_lossy(&c.signature)
        ));
    }
    let t = c.table;
    if t.len() < MIN_LEN {
        return Err(format!(
            "{} bytes, shorter than the {MIN_LEN} bytes of an ACPI 1.0 FADT",
            t.len()
        ));
    }
    let u8_at = |o: usize| t.get(o).copied();
    let u32_at = |o: usize| {
        t.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    // A GAS is present only when the table holds all 12 bytes of it.
    let gas_at = |o: usize| t.get(o..o + GAS_LEN).and_then(Gas::parse);

    let pm1_evt_len = u8_at(offset::PM1_EVT_LEN).unwrap_or(0);
    let pm1_cnt_len = u8_at(offset::PM1_CNT_LEN).unwrap_or(0);
    // ACPICA AcpiTbConvertFadt: the X_ GAS if the table holds it and its address is non-zero,
    // otherwise the 32-bit block as SystemIO of LEN bytes; neither: not implemented.
    let block = |x: usize, legacy: usize, len: u8| -> Option<Gas> {
        gas_at(x).and_then(Gas::non_zero).or_else(|| {
            u32_at(legacy)
                .filter(|a| *a != 0)
                .map(|a| Gas::io(a as u64, len))
        })
    };
    Ok(Fadt {
        revision: c.revision,
        length: t.len() as u32,
        flags: u32_at(offset::FLAGS).unwrap_or(0),
        smi_cmd: u32_at(offset::SMI_CMD).unwrap_or(0),
        pm1_evt_len,
        pm1_cnt_len,
        pm1a_evt: block(offset::X_PM1A_EVT_BLK, offset::PM1A_EVT_BLK, pm1_evt_len),
        pm1b_evt: block(offset::X_PM1B_EVT_BLK, offset::PM1B_EVT_BLK, pm1_evt_len),
        pm1a_cnt: block(offset::X_PM1A_CNT_BLK, offset::PM1A_CNT_BLK, pm1_cnt_len),
        pm1b_cnt: block(offset::X_PM1B_CNT_BLK, offset::PM1B_CNT_BLK, pm1_cnt_len),
        reset_reg: gas_at(offset::RESET_REG),
        reset_value: u8_at(offset::RESET_VALUE),
        sleep_control: gas_at(offset::SLEEP_CONTROL_REG),
        sleep_status: gas_at(offset::SLEEP_STATUS_REG),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::acpi::gas::AddressSpace;

    /// A FADT of `len` bytes with a correct header and checksum, built by `f`.
    pub(crate) fn build(len: usize, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut t = vec![0u8; len];
        t[..4].copy_from_slice(b"FACP");
        t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        t[8] = if len >= 244 { 4 } else { 1 };
        f(&mut t);
        t[9] = 0;
        let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    fn put32(t: &mut [u8], o: usize, v: u32) {
        t[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put_gas(t: &mut [u8], o: usize, space: u8, width: u8, addr: u64) {
        t[o] = space;
        t[o + 1] = width;
        t[o + 4..o + 12].copy_from_slice(&addr.to_le_bytes());
    }

    #[test]
    fn acpi1_short_table_uses_legacy_blocks() {
        let t = build(116, |t| {
            put32(t, offset::PM1A_EVT_BLK, 0xF800);
            put32(t, offset::PM1B_EVT_BLK, 0x45C);
            put32(t, offset::PM1A_CNT_BLK, 0xF804);
            put32(t, offset::PM1B_CNT_BLK, 0x460);
            t[offset::PM1_EVT_LEN] = 4;
            t[offset::PM1_CNT_LEN] = 2;
        });
        let mut w = Vec::new();
        let f = parse("facp", &t, &mut w).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(f.pm1a_cnt, Some(Gas::io(0xF804, 2)));
        assert_eq!(f.pm1b_cnt, Some(Gas::io(0x460, 2)));
        assert_eq!(f.pm1b_evt, Some(Gas::io(0x45C, 4)));
        assert_eq!(f.reset_reg, None);
        assert_eq!(f.reset_value, None);
        assert_eq!(f.sleep_control, None);
    }

    #[test]
    fn x_blocks_win_unless_zero() {
        let t = build(244, |t| {
            put32(t, offset::PM1A_CNT_BLK, 0x404);
            t[offset::PM1_CNT_LEN] = 2;
            put_gas(t, offset::X_PM1A_CNT_BLK, 1, 32, 0x1004);
            put32(t, offset::PM1A_EVT_BLK, 0x400);
            t[offset::PM1_EVT_LEN] = 4;
            put_gas(t, offset::X_PM1A_EVT_BLK, 1, 32, 0); // X present but zero: legacy used
            put32(t, offset::FLAGS, flags::RESET_REG_SUP);
            put_gas(t, offset::RESET_REG, 1, 8, 0xCF9);
            t[offset::RESET_VALUE] = 6;
        });
        let f = parse("facp", &t, &mut Vec::new()).unwrap();
        assert_eq!(f.pm1a_cnt.unwrap().addr, 0x1004);
        assert_eq!(f.pm1a_cnt.unwrap().bit_width, 32);
        assert_eq!(f.pm1a_evt, Some(Gas::io(0x400, 4)));
        assert!(f.reset_reg_sup() && !f.hw_reduced());
        assert_eq!(f.reset_reg.unwrap().space, AddressSpace::SYSTEM_IO);
        assert_eq!(f.reset_value, Some(6));
    }

    #[test]
    fn rejects_and_warns() {
        let mut w = Vec::new();
        assert!(parse("f", &[0u8; 20], &mut w)
            .unwrap_err()
            .contains("shorter"));
        let mut t = build(116, |_| {});
        t[0] = b'X';
        assert!(parse("f", &t, &mut w).unwrap_err().contains("signature"));
        let t = build(100, |_| {});
        assert!(parse("f", &t, &mut w).unwrap_err().contains("116"));
        let mut t = build(132, |_| {});
        t[100] ^= 0xFF;
        w.clear();
        parse("f", &t, &mut w).unwrap();
        assert!(w[0].contains("checksum"), "{w:?}");
    }
}
