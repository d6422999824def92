//! The MSI-X capability (ID 0x11) and the MSI-X table, virtualized.
//!
//! Capability: Message Control's enable (bit 15) and function mask (bit 14) are stored
//! virtually, the table size (bits 10:0) and the table / PBA offset+BIR registers are emulated
//! read-only from the device. Nothing reaches the device.
//!
//! Table: the guest's table is emulated here, 16 bytes per entry (address low with bits 1:0
//! reading 0, address high, data, vector control with only the mask bit writable), every entry
//! starting masked as after reset. Accesses of any size are accepted (the spec asks for aligned
//! 4- and 8-byte ones). The PBA is read from the device (Xen's vPCI does the same); PBA writes
//! are dropped.
//!
//! Binding entries in Xen (a pirq per entry, `XEN_DOMCTL_bind_pt_irq` with `gtable` = the
//! guest table address) is a later issue and grows here: [`MsixTable::entry`] and
//! [`MsixControl`] are what it needs.
//!
//! The pages holding any part of the table or the PBA are never mapped into the guest
//! ([`MsixInfo::trapped_pages`]); see [`crate::bridge`] for how their accesses reach us.

use serde::Serialize;

use crate::config_space::{Init, Layout, RegDesc, RegKind};

/// Capability ID.
pub const CAP_ID: u8 = 0x11;
/// `PCI_MSIX_FLAGS_QSIZE`.
pub const FLAGS_QSIZE: u16 = 0x07FF;
/// `PCI_MSIX_FLAGS_MASKALL`.
pub const FLAGS_MASKALL: u16 = 0x4000;
/// `PCI_MSIX_FLAGS_ENABLE`.
pub const FLAGS_ENABLE: u16 = 0x8000;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Length of the capability.
pub const LEN: u16 = 12;

/// The capability's register table.
pub const MSIX_CAP: &[RegDesc] = &[
    RegDesc {
        offset: 0x00,
        size: 1,
        name: "msix_cap_id",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x01,
        size: 1,
        name: "msix_next",
        init: Init::Builder,
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x02,
        size: 2,
        name: "msix_control",
        emu: 0xFFFF,
        ro: !((FLAGS_ENABLE | FLAGS_MASKALL) as u32),
        init: Init::Device(FLAGS_QSIZE as u32),
        kind: RegKind::MsixControl,
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x04,
        size: 4,
        name: "msix_table",
        init: Init::Device(u32::MAX),
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x08,
        size: 4,
        name: "msix_pba",
        init: Init::Device(u32::MAX),
        ..RegDesc::VIRT_RO
    },
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
