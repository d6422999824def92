//! What the checker reads from raw config bytes itself: the MSI and MSI-X capabilities
//! ([`RawCaps`], [`RawMsix`]), and the guest's programming as a function's emulated
//! registers hold it.

use std::collections::BTreeSet;

use pci_host_bridge::bars::PAGE_SIZE;
use pci_host_bridge::function::PassthroughFunction;

/// The MSI and MSI-X capabilities as the device's raw config space has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCaps {
    /// MSI: (offset, Message Control).
    pub msi: Option<(u16, u16)>,
    /// MSI-X.
    pub msix: Option<RawMsix>,
}

/// The MSI-X capability as the raw bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawMsix {
    /// Offset.
    pub cap: u16,
    /// Table entries.
    pub entries: u16,
    /// Table BIR and offset.
    pub table: (u8, u64),
    /// PBA BIR and offset.
    pub pba: (u8, u64),
}

impl RawCaps {
    /// Walk the standard capability list of `raw`.
    pub fn parse(raw: &[u8]) -> Self {
        let b = |o: usize| raw.get(o).copied().unwrap_or(0);
        let w = |o: usize| u16::from(b(o)) | u16::from(b(o + 1)) << 8;
        let d = |o: usize| u32::from(w(o)) | u32::from(w(o + 2)) << 16;
        let mut out = RawCaps::default();
        if w(0x06) & 0x10 == 0 {
            return out;
        }
        let mut p = usize::from(b(0x34) & 0xFC);
        for _ in 0..48 {
            if p < 0x40 {
                break;
            }
            match b(p) {
                0x05 if out.msi.is_none() => out.msi = Some((p as u16, w(p + 2))),
                0x11 if out.msix.is_none() => {
                    let t = d(p + 4);
                    let q = d(p + 8);
                    out.msix = Some(RawMsix {
                        cap: p as u16,
                        entries: (w(p + 2) & 0x7FF) + 1,
                        table: ((t & 7) as u8, u64::from(t & !7)),
                        pba: ((q & 7) as u8, u64::from(q & !7)),
                    })
                }
                _ => {}
            }
            p = usize::from(b(p + 1) & 0xFC);
        }
        out
    }
}

impl RawMsix {
    /// The pages of BAR `bar` holding the table or the PBA (as BAR page indexes).
    pub fn pages(&self, bar: u8) -> BTreeSet<u64> {
        let mut v = BTreeSet::new();
        let tlen = u64::from(self.entries) * 16;
        let plen = u64::from(self.entries).div_ceil(64) * 8;
        for ((b, off), len) in [(self.table, tlen), (self.pba, plen)] {
            if b == bar {
                for p in off / PAGE_SIZE..=(off + len - 1) / PAGE_SIZE {
                    v.insert(p);
                }
            }
        }
        v
    }
}

/// The guest's view of the 16/32-bit register at `off` (its emulated value), if the layout
/// has a register starting there.
pub(super) fn guest_reg(f: &PassthroughFunction, off: u16) -> Option<u32> {
    f.layout().find(off).map(|i| f.layout().reg(i).virt)
}

/// The guest's MSI programming read from its registers: (enabled, nvec, address, data).
pub(super) fn guest_msi(
    f: &PassthroughFunction,
    cap: u16,
    raw_ctl: u16,
) -> Option<(bool, u32, u64, u32)> {
    f.caps().msi.filter(|&c| c == cap)?;
    let ctl = guest_reg(f, cap + 2)?;
    let is64 = raw_ctl & 0x80 != 0;
    let lo = u64::from(guest_reg(f, cap + 4)? & !3);
    let (hi, data) = if is64 {
        (
            u64::from(guest_reg(f, cap + 8)?),
            guest_reg(f, cap + 0x0C)? & 0xFFFF,
        )
    } else {
        (0, guest_reg(f, cap + 8)? & 0xFFFF)
    };
    Some((ctl & 1 != 0, 1 << ((ctl >> 4) & 7), hi << 32 | lo, data))
}

/// The guest's MSI-X Enable and Function Mask.
pub(super) fn guest_msix(f: &PassthroughFunction, cap: u16) -> Option<(bool, bool)> {
    f.caps().msix.filter(|m| m.cap == cap)?;
    let ctl = guest_reg(f, cap + 2)?;
    Some((ctl & 0x8000 != 0, ctl & 0x4000 != 0))
}
