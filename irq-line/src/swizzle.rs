//! The INTx swizzle of a guest's root bus: the one formula for the pin a PCI INTx drives.

/// GSI of the first PCI INTx line: GSIs 0-15 are the ISA IRQs.
pub const PCI_INTX_GSI_OFFSET: u32 = 16;

/// THE INTx routing of a guest's root bus: the GSI (= pin of the IOAPIC whose GSI base is
/// `gsi_base`) that interrupt pin `pin` (the Interrupt Pin register: 1 = INTA# .. 4 = INTD#) of
/// the function in guest slot `slot` is wired to:
///
/// `GSI = gsi_base + 16 + ((slot + pin - 1) % 4)`
///
/// the PCI-to-PCI bridge swizzle (PCI-to-PCI Bridge Architecture 1.2, 9.1) applied to the root
/// bus, as QEMU's boards and most PC firmware route their root slots. pci-host-bridge raises
/// INTx on this GSI and pvh-acpi's `_PRT` tells the guest the same: both call this function,
/// so they cannot disagree. `None` for a pin outside 1..=4 (0 = the function has no INTx).
pub fn pci_intx_gsi(gsi_base: u32, slot: u8, pin: u8) -> Option<u32> {
    if !(1..=4).contains(&pin) {
        return None;
    }
    Some(gsi_base + PCI_INTX_GSI_OFFSET + (u32::from(slot) + u32::from(pin) - 1) % 4)
}

#[cfg(test)]
mod tests {
    use super::pci_intx_gsi;

    #[test]
    fn root_bus_swizzle() {
        assert_eq!(pci_intx_gsi(0, 0, 1), Some(16));
        assert_eq!(pci_intx_gsi(0, 2, 1), Some(18));
        assert_eq!(pci_intx_gsi(0, 2, 3), Some(16));
        assert_eq!(pci_intx_gsi(0, 31, 4), Some(18));
        assert_eq!(pci_intx_gsi(24, 1, 1), Some(41));
        assert_eq!(pci_intx_gsi(0, 5, 0), None);
        assert_eq!(pci_intx_gsi(0, 5, 5), None);
    }
}
