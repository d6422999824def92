//! The MSI-X capability (ID 0x11) and the MSI-X table, virtualized, and the vectors they ask
//! Xen to bind.
//!
//! Capability (PCI Local Bus Specification 3.0, 6.8.2; PCIe Base 5.0, 7.7.2): Message
//! Control's MSI-X Enable (bit 15) and Function Mask (bit 14) are the guest's, kept virtually
//! *and* written through to the device ([`crate::function`]) as one 16-bit write of Message
//! Control, the only dom0 write to the capability Xen accepts (`pci_msi_conf_write_intercept`,
//! xen/arch/x86/msi.c:1253-1263 in 4.17: any other size or offset is EACCES). Xen never sets
//! Enable itself while a hardware domain exists (msi.c:970-982). The table size (bits 10:0) and
//! the Table / PBA Offset+BIR registers are emulated read-only from the device.
//!
//! Table (6.8.2.6-6.8.2.9): emulated here, 16 bytes per entry (Message Address with bits 1:0
//! reading 0, Message Upper Address, Message Data, Vector Control with only the Mask bit
//! writable), every entry starting masked as after reset. Software must use aligned DWORD or
//! QWORD accesses (6.8.2): [`access_ok`] is the rule the function applies (other accesses read
//! all-ones and are dropped, as Xen's vPCI does). The PBA (6.8.2.10) is read from the device;
//! PBA writes are dropped.
//!
//! Binding ([`MsixEntry::vector`]): entry `n` is bound — lazily, one entry at a time — when the
//! guest unmasks it while MSI-X is enabled (and MSI is not), with `entry = n`, `table_base` the
//! host address of the BAR holding the table (Xen adds the table offset itself and checks the
//! BAR, xen/arch/x86/msi.c:847-860), `nvec = 1`, `gvec = data[7:0]`, `gflags =
//! msi_gflags(address, data, true)` and `gtable` the guest-physical address of the table.
//!
//! Once an entry is bound, Xen's `msixtbl` handler (xen/arch/x86/hvm/vmsi.c:216-420 in 4.17)
//! sees the guest's accesses to it before any ioreq server: it masks and unmasks the entry
//! itself, so mask writes of a bound entry never reach us; address and data writes are
//! forwarded, and so is the next unmask after they changed ("Exit to device model when
//! unmasking and address/data got modified", vmsi.c:321-326). So the function latches address
//! and data and rebinds on the forwarded unmask, as QEMU does; it never unbinds on a mask
//! write. Disabling MSI-X unbinds every entry.
//!
//! The pages holding any part of the table or the PBA are never mapped into the guest
//! ([`MsixInfo::trapped_pages`]); see [`crate::bridge`] for how their accesses reach us.

use serde::Serialize;

use xen_abi::passthrough::msi_gflags;

use crate::binding::Vector;
use crate::config_space::{cap_regs, Init, Layout, RegDesc, RegKind};

/// Whether an access of `len` bytes at `offset` (from the start of the table or PBA) is one
/// the spec defines: an aligned DWORD or QWORD (6.8.2).
pub fn access_ok(offset: u64, len: usize) -> bool {
    matches!(len, 4 | 8) && offset.is_multiple_of(len as u64)
}

/// Capability ID.
pub const CAP_ID: u8 = 0x11;
/// `PCI_MSIX_FLAGS_QSIZE`: Table Size - 1 (Message Control bits 10:0, 6.8.2.3).
pub const FLAGS_QSIZE: u16 = 0x07FF;
/// `PCI_MSIX_FLAGS_MASKALL`: Function Mask (Message Control bit 14, 6.8.2.3).
pub const FLAGS_MASKALL: u16 = 0x4000;
/// `PCI_MSIX_FLAGS_ENABLE`: MSI-X Enable (Message Control bit 15, 6.8.2.3).
pub const FLAGS_ENABLE: u16 = 0x8000;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Length of the capability.
pub const LEN: u16 = 12;

/// Message Control bits the guest writes (MSI-X Enable, Function Mask); the rest is read-only.
const CONTROL_GUEST: u32 = (FLAGS_ENABLE | FLAGS_MASKALL) as u32;

// The table is `#[rustfmt::skip]`: one register per line, aligned as a table (offset, size,
// name, then the bits the guest owns: `.emu(emulated, read-only)`, `.init`, `.kind`).

/// The capability's register table.
#[rustfmt::skip]
pub const MSIX_CAP: &[RegDesc] = &cap_regs!["msix";
    RegDesc::virt_rw  (0x02, 2, "msix_control").emu(0xFFFF, !CONTROL_GUEST).init(Init::Device(FLAGS_QSIZE as u32)).kind(RegKind::MsixControl),
    RegDesc::virt_ro  (0x04, 4, "msix_table")  .init(Init::Device(u32::MAX)),
    RegDesc::virt_ro  (0x08, 4, "msix_pba")    .init(Init::Device(u32::MAX)),
];

/// Where a function's MSI-X table and PBA live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MsixInfo {
    /// Config offset of the capability.
    pub cap: u16,
    /// Number of table entries (1..=2048).
    pub entries: u16,
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in that BAR.
    pub table_offset: u64,
    /// BAR holding the PBA.
    pub pba_bar: u8,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u64,
}

impl MsixInfo {
    /// Decode the capability at `cap` from raw config bytes.
    pub fn parse(config: &[u8], cap: u16) -> Option<Self> {
        let c = usize::from(cap);
        let b = config.get(c..c + usize::from(LEN))?;
        let ctrl = u16::from_le_bytes([b[2], b[3]]);
        let table = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let pba = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        Some(MsixInfo {
            cap,
            entries: (ctrl & FLAGS_QSIZE) + 1,
            table_bar: (table & 7) as u8,
            table_offset: u64::from(table & !7),
            pba_bar: (pba & 7) as u8,
            pba_offset: u64::from(pba & !7),
        })
    }

    /// Bytes of the table.
    pub fn table_len(&self) -> u64 {
        u64::from(self.entries) * ENTRY_SIZE
    }

    /// Bytes of the PBA (one bit per entry, in qwords).
    pub fn pba_len(&self) -> u64 {
        u64::from(self.entries).div_ceil(64) * 8
    }

    /// The pages (4 KiB, as inclusive page-index ranges relative to the BAR start) of BAR
    /// `bar` that hold any part of the table or PBA, sorted and merged. These are never mapped.
    pub fn trapped_pages(&self, bar: u8) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        for (b, off, len) in [
            (self.table_bar, self.table_offset, self.table_len()),
            (self.pba_bar, self.pba_offset, self.pba_len()),
        ] {
            if b == bar && len > 0 {
                v.push((off >> 12, (off + len - 1) >> 12));
            }
        }
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        out
    }
}

/// The virtual MSI-X Message Control bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MsixControl {
    /// MSI-X enable.
    pub enabled: bool,
    /// Function mask.
    pub masked: bool,
}

impl MsixControl {
    /// Read from the layout of a function whose MSI-X capability is at `cap`.
    pub fn from_layout(layout: &Layout, cap: u16) -> Self {
        let v = layout
            .find(cap + 2)
            .map(|i| layout.reg(i).virt as u16)
            .unwrap_or(0);
        MsixControl {
            enabled: v & FLAGS_ENABLE != 0,
            masked: v & FLAGS_MASKALL != 0,
        }
    }
}

/// One guest-programmed table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MsixEntry {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
    /// Vector control mask bit.
    pub masked: bool,
}

impl MsixEntry {
    /// The vector Xen binds for this entry of a table at host address `table_base` and guest
    /// address `gtable` (whether it should be bound at all is the caller's rule).
    pub fn vector(&self, table_base: u64, gtable: u64) -> Vector {
        Vector {
            table_base,
            nvec: 1,
            gvec: self.data as u8,
            gflags: msi_gflags(self.address, self.data, true),
            gtable,
        }
    }
}

/// The emulated MSI-X table.
#[derive(Clone, Debug)]
pub struct MsixTable {
    info: MsixInfo,
    entries: Vec<[u8; 16]>,
}

/// Guest-writable bits of each entry's bytes: address low without bits 1:0, address high,
/// data, and bit 0 of vector control.
const ENTRY_WRITABLE: [u8; 16] = [
    0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0, 0, 0,
];

impl MsixTable {
    /// A table in its reset state (every entry masked).
    pub fn new(info: MsixInfo) -> Self {
        let mut e = [0u8; 16];
        e[12] = 1;
        MsixTable {
            info,
            entries: vec![e; usize::from(info.entries)],
        }
    }

    /// Where it lives.
    pub fn info(&self) -> &MsixInfo {
        &self.info
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries (never: a table has 1..=2048).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `i`.
    pub fn entry(&self, i: usize) -> Option<MsixEntry> {
        let e = self.entries.get(i)?;
        let dw = |o: usize| u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]);
        Some(MsixEntry {
            address: u64::from(dw(0)) | u64::from(dw(4)) << 32,
            data: dw(8),
            masked: dw(12) & 1 != 0,
        })
    }

    /// Set entry `i`'s mask bit (the guest's view): every entry after MSI-X is disabled
    /// (Xen kept the guest's mask writes of bound entries to itself, so our copy may be stale,
    /// and Linux masks every entry before disabling), and an entry Xen refused to bind.
    pub fn set_masked(&mut self, i: usize, masked: bool) {
        if let Some(e) = self.entries.get_mut(i) {
            e[12] = (e[12] & !1) | u8::from(masked);
        }
    }

    /// Read `len` (1..=8) bytes at `offset` from the start of the table; bytes past the
    /// table read all-ones.
    pub fn read(&self, offset: u64, len: usize) -> u64 {
        let mut v = 0u64;
        for i in 0..len.min(8) {
            let o = offset + i as u64;
            let byte = self
                .entries
                .get((o / ENTRY_SIZE) as usize)
                .map(|e| e[(o % ENTRY_SIZE) as usize])
                .unwrap_or(0xFF);
            v |= u64::from(byte) << (8 * i);
        }
        v
    }

    /// Write `len` (1..=8) bytes of `data` at `offset` from the start of the table; read-only
    /// bits and bytes past the table are ignored.
    pub fn write(&mut self, offset: u64, len: usize, data: u64) {
        for i in 0..len.min(8) {
            let o = offset + i as u64;
            let Some(e) = self.entries.get_mut((o / ENTRY_SIZE) as usize) else {
                continue;
            };
            let k = (o % ENTRY_SIZE) as usize;
            let m = ENTRY_WRITABLE[k];
            let d = (data >> (8 * i)) as u8;
            e[k] = (e[k] & !m) | (d & m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(entries: u16, table: u64, pba: u64) -> MsixInfo {
        MsixInfo {
            cap: 0x70,
            entries,
            table_bar: 0,
            table_offset: table,
            pba_bar: 0,
            pba_offset: pba,
        }
    }

    #[test]
    fn trapped_pages_cover_unaligned_table_and_pba() {
        // 64 entries = 1 KiB table straddling a page boundary, PBA two pages later.
        let i = info(64, 0x1E00, 0x3000);
        assert_eq!(i.trapped_pages(0), vec![(1, 3)]);
        let i = info(64, 0x1E00, 0x5000);
        assert_eq!(i.trapped_pages(0), vec![(1, 2), (5, 5)]);
        assert_eq!(i.trapped_pages(1), vec![]);
        // Table and PBA on the same page.
        let i = info(8, 0x2000, 0x2800);
        assert_eq!(i.trapped_pages(0), vec![(2, 2)]);
        assert_eq!(info(2048, 0, 0x8000).pba_len(), 256);
    }

    #[test]
    fn only_aligned_dword_and_qword_accesses() {
        assert!(access_ok(0, 4) && access_ok(12, 4) && access_ok(8, 8) && access_ok(16, 8));
        assert!(!access_ok(2, 4) && !access_ok(4, 8) && !access_ok(0, 2) && !access_ok(0, 1));
    }

    #[test]
    fn entry_vector() {
        let e = MsixEntry {
            address: 0xFEE0_1000,
            data: 0x4071,
            masked: false,
        };
        let v = e.vector(0x38_0010_8000, 0xF101_0000);
        assert_eq!((v.nvec, v.gvec), (1, 0x71));
        assert_eq!((v.table_base, v.gtable), (0x38_0010_8000, 0xF101_0000));
        assert_eq!(v.gflags, msi_gflags(0xFEE0_1000, 0x4071, true));
    }

    #[test]
    fn table_entries() {
        let mut t = MsixTable::new(info(4, 0, 0x800));
        assert!(t.entry(0).unwrap().masked);
        assert_eq!(t.read(12, 4), 1);
        t.write(16, 8, 0x0000_0001_FEE0_100F); // addr with low bits set: bits 1:0 stay 0
        t.write(24, 4, 0x4041);
        t.write(28, 4, 0xFFFF_FFFE); // unmask; reserved bits stay 0
        let e = t.entry(1).unwrap();
        assert_eq!(
            e,
            MsixEntry {
                address: 0x1_FEE0_100C,
                data: 0x4041,
                masked: false
            }
        );
        assert_eq!(t.read(16, 8), 0x1_FEE0_100C);
        assert_eq!(t.read(28, 4), 0);
        // Past the end: all-ones, writes ignored (no panic).
        assert_eq!(t.read(64, 4), 0xFFFF_FFFF);
        t.write(62, 8, u64::MAX);
        assert_eq!(t.read(60, 4), 1);
    }
}
