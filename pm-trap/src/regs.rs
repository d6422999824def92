//! The ACPI fixed-hardware registers pm-trap emulates, as data: named bit fields with the spec
//! section each comes from (ACPI 6.0, 4.8.3 "Fixed Hardware Registers"; the bit positions are
//! the same in every ACPI revision).

/// A bit field of a register: `width` bits from bit `shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Name as the spec spells it.
    pub name: &'static str,
    /// Lowest bit.
    pub shift: u32,
    /// Number of bits.
    pub width: u32,
}

impl Field {
    /// A field of `width` bits at `shift`.
    pub const fn new(name: &'static str, shift: u32, width: u32) -> Field {
        Field { name, shift, width }
    }

    /// The field's bits in place.
    pub const fn mask(self) -> u32 {
        (((1u64 << self.width) - 1) as u32) << self.shift
    }

    /// The field's value in `reg`.
    pub const fn get(self, reg: u32) -> u32 {
        (reg & self.mask()) >> self.shift
    }

    /// `reg` with the field set to `v` (extra bits of `v` dropped).
    pub const fn set(self, reg: u32, v: u32) -> u32 {
        (reg & !self.mask()) | ((v << self.shift) & self.mask())
    }

    /// Whether a one-bit field is set in `reg`.
    pub const fn is_set(self, reg: u32) -> bool {
        reg & self.mask() != 0
    }
}

/// PM1 status register, the first half of each PM1x_EVT_BLK (ACPI 6.0, 4.8.3.1.1 "PM1 Status
/// Registers", Table 4-16). Every bit is write-1-to-clear.
pub mod pm1_sts {
    use super::Field;
    /// Power-management timer carry.
    pub const TMR_STS: Field = Field::new("TMR_STS", 0, 1);
    /// Bus master activity.
    pub const BM_STS: Field = Field::new("BM_STS", 4, 1);
    /// Global lock release by firmware.
    pub const GBL_STS: Field = Field::new("GBL_STS", 5, 1);
    /// Fixed power button pressed.
    pub const PWRBTN_STS: Field = Field::new("PWRBTN_STS", 8, 1);
    /// Fixed sleep button pressed.
    pub const SLPBTN_STS: Field = Field::new("SLPBTN_STS", 9, 1);
    /// RTC alarm.
    pub const RTC_STS: Field = Field::new("RTC_STS", 10, 1);
    /// PCI Express wake event.
    pub const PCIEXP_WAKE_STS: Field = Field::new("PCIEXP_WAKE_STS", 14, 1);
    /// Set by hardware when the system has woken from a sleeping state.
    pub const WAK_STS: Field = Field::new("WAK_STS", 15, 1);
}

/// PM1 enable register, the second half of each PM1x_EVT_BLK (ACPI 6.0, 4.8.3.1.2 "PM1 Enable
/// Registers", Table 4-17). Read/write; reserved bits read 0.
pub mod pm1_en {
    use super::Field;
    /// Timer carry interrupt enable.
    pub const TMR_EN: Field = Field::new("TMR_EN", 0, 1);
    /// Global lock interrupt enable.
    pub const GBL_EN: Field = Field::new("GBL_EN", 5, 1);
    /// Power button enable.
    pub const PWRBTN_EN: Field = Field::new("PWRBTN_EN", 8, 1);
    /// Sleep button enable.
    pub const SLPBTN_EN: Field = Field::new("SLPBTN_EN", 9, 1);
    /// RTC alarm enable.
    pub const RTC_EN: Field = Field::new("RTC_EN", 10, 1);
    /// PCI Express wake disable.
    pub const PCIEXP_WAKE_DIS: Field = Field::new("PCIEXP_WAKE_DIS", 14, 1);
    /// Every defined (writable) bit.
    pub const DEFINED: u32 = TMR_EN.mask()
        | GBL_EN.mask()
        | PWRBTN_EN.mask()
        | SLPBTN_EN.mask()
        | RTC_EN.mask()
        | PCIEXP_WAKE_DIS.mask();
}

/// PM1 control register, each PM1x_CNT_BLK (ACPI 6.0, 4.8.3.2.1 "PM1 Control Registers",
/// Table 4-18). Byte and word accesses; PM1a and PM1b are two halves of one logical register.
pub mod pm1_cnt {
    use super::Field;
    /// SCI (not SMI) for power-management events; set by hardware in ACPI mode, preserved by
    /// OSPM. pm-trap's chipset is always in ACPI mode: reads 1 (PM1a), writes ignored.
    pub const SCI_EN: Field = Field::new("SCI_EN", 0, 1);
    /// Bus master requests take the processor out of C3. Read/write.
    pub const BM_RLD: Field = Field::new("BM_RLD", 1, 1);
    /// Global lock release to firmware. Write-only, reads 0.
    pub const GBL_RLS: Field = Field::new("GBL_RLS", 2, 1);
    /// Sleep type of the next SLP_EN (the \_Sx value for this half). Read/write.
    pub const SLP_TYP: Field = Field::new("SLP_TYP", 10, 3);
    /// Enter the sleep state in SLP_TYP. Write-only, reads 0.
    pub const SLP_EN: Field = Field::new("SLP_EN", 13, 1);
    /// Bits that read back what was written.
    pub const READ_WRITE: u32 = BM_RLD.mask() | SLP_TYP.mask();
}

/// Sleep control register of hardware-reduced platforms, FADT SLEEP_CONTROL_REG, 8 bits (ACPI
/// 6.0, 4.8.3.7 "Sleep Control and Status Registers", Table 4-20).
pub mod sleep_control {
    use super::Field;
    /// Sleep type (the \_Sx SLP_TYPa value). Write-only.
    pub const SLP_TYPX: Field = Field::new("SLP_TYPx", 2, 3);
    /// Enter the sleep state. Write-only.
    pub const SLP_EN: Field = Field::new("SLP_EN", 5, 1);
}

/// Sleep status register of hardware-reduced platforms, FADT SLEEP_STATUS_REG, 8 bits (ACPI
/// 6.0, 4.8.3.7, Table 4-21).
pub mod sleep_status {
    use super::Field;
    /// Woken from a sleeping state; write 1 to clear.
    pub const WAK_STS: Field = Field::new("WAK_STS", 7, 1);
}

/// The PCI reset control register at I/O port 0xCF9 (Intel PIIX/ICH/PCH datasheets; QEMU's
/// piix and ich9 models): writing RST_CPU resets the system. Used as the FADT reset register by
/// Xen's guest tables (value 6) and by most PCs.
pub mod cf9 {
    use super::Field;
    /// The port.
    pub const PORT: u64 = 0xCF9;
    /// System reset (hard reset when RST_CPU is written).
    pub const SYS_RST: Field = Field::new("SYS_RST", 1, 1);
    /// Reset CPU: a write with this bit set triggers the reset.
    pub const RST_CPU: Field = Field::new("RST_CPU", 2, 1);
    /// Full reset (power cycle).
    pub const FULL_RST: Field = Field::new("FULL_RST", 3, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert_eq!(pm1_cnt::SLP_TYP.mask(), 0x1C00);
        assert_eq!(pm1_cnt::SLP_EN.mask(), 0x2000);
        assert_eq!(pm1_cnt::SLP_TYP.get(0x3C01), 7);
        assert_eq!(pm1_cnt::SLP_TYP.set(0x0001, 5), 0x1401);
        assert_eq!(pm1_sts::WAK_STS.mask(), 0x8000);
        assert_eq!(sleep_control::SLP_TYPX.mask(), 0x1C);
        assert_eq!(sleep_control::SLP_EN.mask(), 0x20);
        assert_eq!(sleep_status::WAK_STS.mask(), 0x80);
        assert_eq!(pm1_en::DEFINED, 0x4721);
    }
}
