//! The type-0 header (0x00..0x40) of a passed-through function.
//!
//! Masks follow QEMU's xen_pt (hw/xen/xen_pt_config_init.c, xen-abi.md 8.2) and Xen's vPCI
//! (xen/drivers/vpci/header.c, xen-abi.md 9.2), with these decisions:
//! - Vendor/Device ID: emulated read-only, set from the backend's IDs (an SR-IOV VF reads 0xFFFF
//!   in its raw config space; sysfs reports the real IDs).
//! - Command: the bits QEMU emulates (`0x0743`: I/O and memory decode, parity error response,
//!   SERR#, fast back-to-back, INTx disable) are a guest shadow; memory and I/O decode drive BAR
//!   mapping. Reserved bits `0xF880` read 0. Bus master, special cycles, memory write and
//!   invalidate and VGA palette snoop (`0x003C`) pass through: bus master must reach the device
//!   for DMA. INTx disable is virtual: the device's own bit belongs to the bridge, which sets
//!   it while INTx is forced off (MSI / MSI-X enabled, the guest's bit set, no IOAPIC line) or
//!   waiting for the guest's EOI, and clears it otherwise — only for functions that forward
//!   INTx ([`crate::intx`]); for the others the host keeps its own value, so a guest can never
//!   unmask a line dom0 has no handler for.
//! - Status: the capability-list bit (`0x0010`) is virtual (set if any capability is exposed
//!   after relinking). The error bits `0xF900` (master data parity error, signaled/received
//!   target abort, received master abort, signaled system error, detected parity error) are
//!   the device's RW1C bits and pass through, so a guest driver can clear error state; every
//!   other bit (interrupt status, 66 MHz, DEVSEL timing, ...) is read from the device.
//! - Revision, class, BIST, CardBus CIS, subsystem IDs, Min_Gnt/Max_Lat: read from the device,
//!   read-only.
//! - Cache line size, latency timer, interrupt line: guest-writable virtual registers.
//! - Header type: virtual; type 0, multi-function bit set when other functions share the slot.
//! - BARs and the expansion ROM: fully virtual ([`crate::bars`]).
//! - Capabilities pointer: virtual, the first exposed capability ([`crate::caps`]).
//! - Interrupt pin: emulated read-only, from the device (0 for SR-IOV VFs, which have no INTx).

use crate::config_space::{Init, RegDesc, RegKind};

/// `PCI_COMMAND_IO`.
pub const CMD_IO: u16 = 0x0001;
/// `PCI_COMMAND_MEMORY`.
pub const CMD_MEMORY: u16 = 0x0002;
/// `PCI_COMMAND_MASTER`.
pub const CMD_MASTER: u16 = 0x0004;
/// `PCI_COMMAND_INTX_DISABLE` (Interrupt Disable, PCI Local Bus 3.0 6.2.2).
pub const CMD_INTX_DISABLE: u16 = 0x0400;
/// `PCI_STATUS_CAP_LIST`.
pub const STATUS_CAP_LIST: u16 = 0x0010;

/// Offset of the command register.
pub const COMMAND: u16 = 0x04;
/// Offset of the status register.
pub const STATUS: u16 = 0x06;
/// Offset of the header type register.
pub const HEADER_TYPE: u16 = 0x0E;
/// Offset of the capabilities pointer.
pub const CAP_PTR: u16 = 0x34;
/// Offset of the Interrupt Pin register (PCI Local Bus 3.0, 6.2.4: 1 = INTA# .. 4 = INTD#).
pub const INTERRUPT_PIN: u16 = 0x3D;

/// Command bits emulated (QEMU xen_pt: `0x0743`) plus the reserved bits `0xF880`.
pub const CMD_EMU: u32 = 0x0743 | 0xF880;
/// Command bits passed to the device.
pub const CMD_PASS: u32 = 0x003C;

// The table is `#[rustfmt::skip]`: one register per line, aligned as a table (offset, size,
// name, then the bits the guest owns: `.emu(emulated, read-only)`, `.pass`, `.w1c`, `.init`).

/// [`STATUS_CAP_LIST`] as a register mask.
const CAP_LIST: u32 = STATUS_CAP_LIST as u32;

/// The type-0 header register table.
#[rustfmt::skip]
pub const HEADER_TYPE0: &[RegDesc] = &[
    RegDesc::virt_ro  (0x00,          2, "vendor_id")    .init(Init::Builder),
    RegDesc::virt_ro  (0x02,          2, "device_id")    .init(Init::Builder),
    RegDesc::device_ro(COMMAND,       2, "command")      .emu(CMD_EMU, 0xF880).pass(CMD_PASS).kind(RegKind::Command),
    RegDesc::device_ro(STATUS,        2, "status")       .emu(CAP_LIST, CAP_LIST).pass(0xF900).w1c(0xF900).init(Init::Builder),
    RegDesc::device_ro(0x08,          4, "revision_class"),
    RegDesc::virt_rw  (0x0C,          1, "cache_line_size"),
    RegDesc::virt_rw  (0x0D,          1, "latency_timer"),
    RegDesc::virt_ro  (HEADER_TYPE,   1, "header_type")  .init(Init::Builder),
    RegDesc::device_ro(0x0F,          1, "bist"),
    RegDesc::virt_rw  (0x10,          4, "bar0")         .kind(RegKind::Bar(0)),
    RegDesc::virt_rw  (0x14,          4, "bar1")         .kind(RegKind::Bar(1)),
    RegDesc::virt_rw  (0x18,          4, "bar2")         .kind(RegKind::Bar(2)),
    RegDesc::virt_rw  (0x1C,          4, "bar3")         .kind(RegKind::Bar(3)),
    RegDesc::virt_rw  (0x20,          4, "bar4")         .kind(RegKind::Bar(4)),
    RegDesc::virt_rw  (0x24,          4, "bar5")         .kind(RegKind::Bar(5)),
    RegDesc::device_ro(0x28,          4, "cardbus_cis"),
    RegDesc::device_ro(0x2C,          2, "subsystem_vendor_id"),
    RegDesc::device_ro(0x2E,          2, "subsystem_id"),
    RegDesc::virt_rw  (0x30,          4, "rom")          .kind(RegKind::Rom),
    RegDesc::virt_ro  (CAP_PTR,       1, "cap_ptr")      .init(Init::Builder),
    RegDesc::virt_ro  (0x35,          1, "reserved"),
    RegDesc::virt_ro  (0x36,          2, "reserved"),
    RegDesc::virt_ro  (0x38,          4, "reserved"),
    RegDesc::virt_rw  (0x3C,          1, "interrupt_line"),
    RegDesc::virt_ro  (INTERRUPT_PIN, 1, "interrupt_pin").init(Init::Device(0xFF)),
    RegDesc::device_ro(0x3E,          1, "min_gnt"),
    RegDesc::device_ro(0x3F,          1, "max_lat"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_header_exactly_once() {
        let mut cover = [0u8; 0x40];
        for d in HEADER_TYPE0 {
            assert!(d.is_consistent(), "{}", d.name);
            for b in d.offset..d.offset + u16::from(d.size) {
                cover[usize::from(b)] += 1;
            }
        }
        assert!(cover.iter().all(|&c| c == 1), "{cover:?}");
    }

    #[test]
    fn command_masks_partition_the_register() {
        let cmd = HEADER_TYPE0.iter().find(|d| d.offset == COMMAND).unwrap();
        assert_eq!(cmd.emu & cmd.pass, 0);
        assert_eq!((cmd.emu | cmd.pass) & 0xFFFF, 0xFFFF);
        assert_eq!(cmd.emu & 0x0743, 0x0743);
        assert_eq!(cmd.pass & u32::from(CMD_MASTER), u32::from(CMD_MASTER));
    }
}
