//! The MSI capability (ID 0x05), virtualized, and the vector it asks Xen to bind.
//!
//! Registers (PCI Local Bus Specification 3.0, 6.8.1; Linux include/uapi/linux/pci_regs.h),
//! emulated; Xen's `map_pirq` programs the host's address and data itself (xen-abi.md 8.2),
//! but leaves the Enable bit to dom0 while a hardware domain exists (xen/arch/x86/msi.c:663-674
//! in 4.17), so the function writes the guest's Enable through after a successful bind
//! ([`crate::function`]):
//! - `+0x02` Message Control (6.8.1.3): enable (bit 0, guest; written through after the bind),
//!   Multiple Message Capable (3:1, from the device, read-only), Multiple Message Enable (6:4,
//!   guest, kept within MMC), 64-bit address capable (7, from the device), per-vector masking
//!   capable (8, from the device); the rest reads 0.
//! - `+0x04` Message Address (6.8.1.4; bits 1:0 read 0), `+0x08` Message Upper Address for
//!   64-bit functions (6.8.1.5), then Message Data (16 bits, 6.8.1.6) and Extended Message
//!   Data (16 bits, reads 0: the extended-data capable bit is not offered).
//! - With per-vector masking: Mask Bits (6.8.1.7) read 0 and are read-only, Pending Bits
//!   (6.8.1.8) are read from the device. Mask Bits are read-only as in QEMU's xen_pt: clearing
//!   `XEN_DOMCTL_VMSI_X86_UNMASKED` in a rebind masks nothing in Xen
//!   (xen/drivers/passthrough/x86/hvm.c:387-398), so a guest's per-vector mask could not be
//!   honoured.
//!
//! Binding ([`MsiState::vector`]): while MSI is enabled (and MSI-X is not: enabling both is
//! undefined, PCI Local Bus 3.0 6.8.2, so neither is bound then) the capability asks for one
//! [`Vector`]: `nvec = 2^MME`, `gvec = data[7:0]`, `gflags = msi_gflags(address, data, true)`,
//! `table_base` and `gtable` 0. Any change of those while enabled rebinds; disabling unbinds.
//! A bind Xen refuses (multi-message MSI without interrupt remapping is EOPNOTSUPP,
//! xen/arch/x86/irq.c:2919-2923) leaves the guest's Enable bit reading 0.

use serde::Serialize;

use xen_abi::passthrough::msi_gflags;

use crate::binding::Vector;
use crate::config_space::{cap_regs, Init, Layout, RegDesc, RegKind};

/// Capability ID.
pub const CAP_ID: u8 = 0x05;
/// `PCI_MSI_FLAGS_ENABLE`.
pub const FLAGS_ENABLE: u16 = 0x0001;
/// `PCI_MSI_FLAGS_QMASK` (Multiple Message Capable).
pub const FLAGS_QMASK: u16 = 0x000E;
/// `PCI_MSI_FLAGS_QSIZE` (Multiple Message Enable).
pub const FLAGS_QSIZE: u16 = 0x0070;
/// `PCI_MSI_FLAGS_64BIT`.
pub const FLAGS_64BIT: u16 = 0x0080;
/// `PCI_MSI_FLAGS_MASKBIT`.
pub const FLAGS_MASKBIT: u16 = 0x0100;

/// Message Control bits the guest writes (Enable, Multiple Message Enable); the rest is
/// read-only.
const CONTROL_GUEST: u32 = (FLAGS_ENABLE | FLAGS_QSIZE) as u32;
/// Message Control bits read from the device at setup (MMC, 64-bit and per-vector masking
/// capable); the rest starts 0.
const CONTROL_DEVICE: u32 = (FLAGS_QMASK | FLAGS_64BIT | FLAGS_MASKBIT) as u32;

// The tables are `#[rustfmt::skip]`: one register per line, aligned as a table (offset, size,
// name, then the bits the guest owns: `.emu(emulated, read-only)`, `.init`, `.kind`).

/// The registers every MSI capability starts with: ID, next pointer, Message Control and the
/// low Message Address (`+0x00..+0x07`, 6.8.1.1-6.8.1.4).
#[rustfmt::skip]
const HEAD: [RegDesc; 4] = cap_regs!["msi";
    RegDesc::virt_rw  (0x02, 2, "msi_control")   .emu(0xFFFF, !CONTROL_GUEST).init(Init::Device(CONTROL_DEVICE)).kind(RegKind::MsiControl),
    RegDesc::virt_rw  (0x04, 4, "msi_address_lo").emu(u32::MAX, 0x3),
];

/// `+0x08` Message Upper Address (6.8.1.5), in a 64-bit capability only.
const ADDR_HI: RegDesc = RegDesc::virt_rw(0x08, 4, "msi_address_hi");

/// Message Data (6.8.1.6) at `offset` and Extended Message Data after it (reads 0: the
/// extended-data capable bit is not offered).
#[rustfmt::skip]
const fn data_regs(offset: u16) -> [RegDesc; 2] {
    [
        RegDesc::virt_rw(offset,     2, "msi_data"),
        RegDesc::virt_ro(offset + 2, 2, "msi_ext_data"),
    ]
}

/// Mask Bits (6.8.1.7; read-only, see the module docs: the guest's writes are dropped) at
/// `offset` and Pending Bits (6.8.1.8, from the device) after them.
#[rustfmt::skip]
const fn mask_regs(offset: u16) -> [RegDesc; 2] {
    [
        RegDesc::virt_ro  (offset,     4, "msi_mask"),
        RegDesc::device_ro(offset + 4, 4, "msi_pending"),
    ]
}

/// The register table of an MSI capability whose Message Control reads `flags`.
pub fn table(flags: u16) -> Vec<RegDesc> {
    let is64 = flags & FLAGS_64BIT != 0;
    let mut regs = HEAD.to_vec();
    if is64 {
        regs.push(ADDR_HI);
    }
    let data = if is64 { 0x0C } else { 0x08 };
    regs.extend(data_regs(data));
    if flags & FLAGS_MASKBIT != 0 {
        regs.extend(mask_regs(data + 4));
    }
    regs
}

/// Keep Multiple Message Enable within Multiple Message Capable (a larger value is undefined
/// by the spec; the function cannot use more vectors than it has).
pub fn clamp_control(v: u32) -> u32 {
    let mmc = (v >> 1) & 7;
    let mme = (v >> 4) & 7;
    if mme > mmc {
        (v & !0x70) | (mmc << 4)
    } else {
        v
    }
}

/// Length in bytes of an MSI capability with these flags.
pub fn len(flags: u16) -> u16 {
    match (flags & FLAGS_64BIT != 0, flags & FLAGS_MASKBIT != 0) {
        (false, false) => 0x0C,
        (true, false) => 0x10,
        (false, true) => 0x14,
        (true, true) => 0x18,
    }
}

/// What the guest has programmed into the virtual MSI capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MsiState {
    /// Config offset of the capability.
    pub offset: u16,
    /// MSI enable.
    pub enabled: bool,
    /// Vectors enabled (1 << MME).
    pub vectors: u8,
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u16,
    /// Per-vector mask bits (0 without per-vector masking).
    pub mask: u32,
}

impl MsiState {
    /// The vector Xen should bind for this programming; `msix_enabled` is the function's MSI-X
    /// enable bit (with both enabled nothing is bound).
    pub fn vector(&self, msix_enabled: bool) -> Option<Vector> {
        if !self.enabled || msix_enabled {
            return None;
        }
        Some(Vector {
            table_base: 0,
            nvec: u32::from(self.vectors),
            gvec: self.data as u8,
            gflags: msi_gflags(self.address, u32::from(self.data), true),
            gtable: 0,
        })
    }
}

impl MsiState {
    /// Read the state from the layout of a function whose MSI capability is at `offset`.
    pub fn from_layout(layout: &Layout, offset: u16) -> Self {
        let get = |rel: u16| {
            layout
                .find(offset + rel)
                .map(|i| layout.reg(i).virt)
                .unwrap_or(0)
        };
        let flags = get(2) as u16;
        let is64 = flags & FLAGS_64BIT != 0;
        let (address, data) = if is64 {
            (
                u64::from(get(4)) | u64::from(get(8)) << 32,
                get(0x0C) as u16,
            )
        } else {
            (u64::from(get(4)), get(8) as u16)
        };
        let mask = if flags & FLAGS_MASKBIT != 0 {
            get(if is64 { 0x10 } else { 0x0C })
        } else {
            0
        };
        MsiState {
            offset,
            enabled: flags & FLAGS_ENABLE != 0,
            vectors: 1 << ((flags & FLAGS_QSIZE) >> 4).min(5),
            address,
            data,
            mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_consistent_and_sized() {
        for flags in [
            0u16,
            FLAGS_64BIT,
            FLAGS_MASKBIT,
            FLAGS_64BIT | FLAGS_MASKBIT | 0x000A,
        ] {
            let t = table(flags);
            let end = t
                .iter()
                .map(|d| d.offset + u16::from(d.size))
                .max()
                .unwrap();
            assert_eq!(end, len(flags));
            for d in &t {
                assert!(d.is_consistent(), "{}", d.name);
                assert_eq!(d.pass, 0, "MSI registers never pass through: {}", d.name);
            }
            // Pending bits come from the device, nothing else does.
            for d in t.iter().filter(|d| d.emu == 0) {
                assert!(matches!(d.name, "msi_pending" | "msi_cap_id"), "{}", d.name);
            }
        }
        // Mask bits are read-only whatever MMC says (a rebind cannot mask in Xen).
        for mmc in [0, 0x000A] {
            let t = table(FLAGS_MASKBIT | mmc);
            assert_eq!(
                t.iter().find(|d| d.name == "msi_mask").unwrap().ro,
                u32::MAX
            );
        }
    }

    #[test]
    fn control_clamps_mme_to_mmc() {
        // MMC 2 (4 vectors): MME 5 is clamped to 2, MME 1 kept.
        assert_eq!(clamp_control(0x0004 | 5 << 4 | 1), 0x0004 | 2 << 4 | 1);
        assert_eq!(clamp_control(0x0004 | 1 << 4), 0x0004 | 1 << 4);
    }

    #[test]
    fn vector_from_state() {
        let s = MsiState {
            offset: 0x50,
            enabled: true,
            vectors: 4,
            address: 0xFEE0_3000,
            data: 0x4060,
            mask: 0,
        };
        let v = s.vector(false).unwrap();
        assert_eq!((v.nvec, v.gvec, v.table_base, v.gtable), (4, 0x60, 0, 0));
        assert_eq!(v.gflags, msi_gflags(0xFEE0_3000, 0x4060, true));
        assert_eq!(
            MsiState { mask: 1, ..s }.vector(false).unwrap().gflags,
            msi_gflags(0xFEE0_3000, 0x4060, true),
            "bound unmasked: clearing UNMASKED would mask nothing in Xen"
        );
        assert_eq!(
            s.vector(true),
            None,
            "MSI and MSI-X both enabled: nothing bound"
        );
        assert_eq!(
            MsiState {
                enabled: false,
                ..s
            }
            .vector(false),
            None
        );
    }
}
