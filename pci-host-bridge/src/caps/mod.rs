//! Capabilities: which are exposed, their register tables, and the relinked lists.
//!
//! Exposed (the first of each kind, except vendor-specific which are all exposed):
//! - Power Management (0x01): PMC read from the device with PME support, aux current and PME
//!   clock hidden (QEMU's emulated mask `0xF9C8`: PME is not delivered); PMCSR fully virtual
//!   (power state and PME enable stored, PME status never set, No_Soft_Reset from the device),
//!   so a guest D3 request never powers the device down under a live mapping.
//! - MSI (0x05) and MSI-X (0x11): virtual, see [`crate::msi`] and [`crate::msix`]. An MSI-X
//!   capability whose table or PBA does not fit a memory BAR of the device is hidden.
//! - PCI Express (0x10), sanitized: Device Capabilities hides FLR (a guest-initiated function
//!   reset would reset the device under the mapping); Device Control, Link Control, Slot
//!   Control, Device Control 2 and Link Control 2 are virtual (initialized from the device;
//!   initiate-FLR, link disable and retrain read 0 and are read-only, QEMU's read-only masks
//!   otherwise); Device Status error bits (3:0, RW1C) pass through so the guest can clear them;
//!   the root-port registers read 0; capabilities and status registers are read from the
//!   device.
//! - Vendor-specific (0x09): header virtual, body read from the device, writes dropped and
//!   logged.
//!
//! Extended capabilities (only for PCIe functions with 4 KiB of config space): Device Serial
//! Number (0x0003) and vendor-specific (0x000B) are exposed read-only; everything else (AER,
//! SR-IOV 0x0010, ARI 0x000E, Resizable BAR 0x0015, ATS, PRI, PASID, LTR, unknown) is hidden.
//! The list is relinked; if 0x100 itself is hidden it reads as a null header (ID 0) whose
//! next pointer leads to the first exposed one (or 0 for none).
//!
//! A hidden standard capability's two header bytes read 0 (writes dropped and logged); its
//! body stays "unknown" (read from the device, writes dropped and logged). Every byte of the
//! extended space outside exposed extended capabilities is hidden.
//!
//! The ID constants, the register tables and the capability names are in `tables.rs`
//! (re-exported here); this file walks the device's lists, chooses what to expose and places
//! it in the [`Layout`].

use serde::Serialize;

use crate::backend::BarInfo;
use crate::config_space::{Layout, RegDesc, RegKind};
use crate::msi;
use crate::msix::{self, MsixInfo};

mod tables;

use tables::{name_ext, name_std};
pub use tables::{
    DSN_BODY, EXT_ARI, EXT_DSN, EXT_HEADER, EXT_REBAR, EXT_SRIOV, EXT_VSEC, PCIE, PCIE_ID,
    PCIE_V1_LEN, PCIE_V2_LEN, PM, PM_ID, PM_LEN, VENDOR, VENDOR_ID,
};

/// One capability found on the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapEntry {
    /// Config offset.
    pub offset: u16,
    /// Capability ID.
    pub id: u16,
    /// Whether the guest sees it.
    pub exposed: bool,
    /// What it is.
    pub name: &'static str,
}

/// The capabilities of a function and how they are presented.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Caps {
    /// Standard capabilities in list order.
    pub standard: Vec<CapEntry>,
    /// Extended capabilities in list order.
    pub extended: Vec<CapEntry>,
    /// The capabilities pointer the guest reads (0 for none).
    pub first: u8,
    /// Offset of the exposed PM capability.
    pub pm: Option<u16>,
    /// Offset of the exposed MSI capability.
    pub msi: Option<u16>,
    /// The exposed MSI-X capability.
    pub msix: Option<MsixInfo>,
    /// Offset of the exposed PCIe capability.
    pub pcie: Option<u16>,
    /// Virtual values the builder must set after initialization: `(offset, value)`.
    #[serde(skip)]
    pub builder_values: Vec<(u16, u32)>,
}

fn byte(config: &[u8], off: usize) -> u8 {
    config.get(off).copied().unwrap_or(0xFF)
}

fn word(config: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([byte(config, off), byte(config, off + 1)])
}

fn dword(config: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([
        byte(config, off),
        byte(config, off + 1),
        byte(config, off + 2),
        byte(config, off + 3),
    ])
}

/// The standard capability list of raw config bytes: `(offset, id)` in order, stopping at a
/// pointer below 0x40, an ID of 0xFF, a loop, or 48 entries (Linux's `PCI_FIND_CAP_TTL`).
pub fn walk_standard(config: &[u8]) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    if word(config, 0x06) & crate::header::STATUS_CAP_LIST == 0 || config.len() < 0x100 {
        return out;
    }
    let mut seen = [false; 256];
    let mut ptr = usize::from(byte(config, 0x34) & 0xFC);
    while (0x40..0x100).contains(&ptr) && !seen[ptr] && out.len() < 48 {
        seen[ptr] = true;
        let id = byte(config, ptr);
        if id == 0xFF {
            break;
        }
        out.push((ptr as u16, id));
        ptr = usize::from(byte(config, ptr + 1) & 0xFC);
    }
    out
}

/// The extended capability list: `(offset, id, version)` in order, stopping at a header of 0
/// or all-ones, a next pointer below 0x100, a loop, or 480 entries.
pub fn walk_extended(config: &[u8]) -> Vec<(u16, u16, u8)> {
    let mut out = Vec::new();
    if config.len() < 4096 {
        return out;
    }
    let mut seen = vec![false; 4096];
    let mut pos = 0x100usize;
    while (0x100..4096).contains(&pos) && !seen[pos] && out.len() < 480 {
        seen[pos] = true;
        let hdr = dword(config, pos);
        if hdr == 0 || hdr == u32::MAX {
            break;
        }
        out.push((pos as u16, (hdr & 0xFFFF) as u16, ((hdr >> 16) & 0xF) as u8));
        pos = ((hdr >> 20) & 0xFFC) as usize;
    }
    out
}

/// Whether an MSI-X table and PBA fit memory BARs of the device.
fn msix_fits(info: &MsixInfo, bars: &[Option<BarInfo>; 6]) -> bool {
    let fits = |bar: u8, off: u64, len: u64| {
        bars.get(usize::from(bar))
            .copied()
            .flatten()
            .is_some_and(|b| b.is_mem() && off.checked_add(len).is_some_and(|e| e <= b.size))
    };
    fits(info.table_bar, info.table_offset, info.table_len())
        && fits(info.pba_bar, info.pba_offset, info.pba_len())
}

/// Split `[start, end)` into naturally aligned 1/2/4-byte pieces.
fn aligned_pieces(start: u16, end: u16) -> Vec<(u16, u8)> {
    let mut v = Vec::new();
    let mut o = start;
    while o < end {
        let size: u8 = if o.is_multiple_of(4) && end - o >= 4 {
            4
        } else if o.is_multiple_of(2) && end - o >= 2 {
            2
        } else {
            1
        };
        v.push((o, size));
        o += u16::from(size);
    }
    v
}

/// Opaque (device-read, writes dropped and logged) registers covering `[start, end)` relative.
fn opaque(name: &'static str, start: u16, end: u16) -> Vec<RegDesc> {
    aligned_pieces(start, end)
        .into_iter()
        .map(|(offset, size)| RegDesc {
            offset,
            size,
            name,
            kind: RegKind::Opaque,
            ..RegDesc::DEVICE_RO
        })
        .collect()
}

/// Place the capability registers of raw `config` into `layout` and plan the relinked lists.
/// Call before [`Layout::init_from_device`]; then apply [`Caps::builder_values`].
pub fn build(layout: &mut Layout, config: &[u8], bars: &[Option<BarInfo>; 6]) -> Caps {
    let mut caps = Caps::default();

    // Standard list: choose what to expose.
    let found = walk_standard(config);
    let mut exposed: Vec<(u16, u8)> = Vec::new();
    for &(off, id) in &found {
        let expose = match id {
            PM_ID if caps.pm.is_none() => {
                caps.pm = Some(off);
                true
            }
            msi::CAP_ID if caps.msi.is_none() => {
                caps.msi = Some(off);
                true
            }
            msix::CAP_ID if caps.msix.is_none() => match MsixInfo::parse(config, off) {
                Some(info) if msix_fits(&info, bars) => {
                    caps.msix = Some(info);
                    true
                }
                _ => {
                    tracing::warn!(
                        offset = off,
                        "MSI-X table or PBA outside the device's BARs: hiding MSI-X"
                    );
                    false
                }
            },
            PCIE_ID if caps.pcie.is_none() => {
                caps.pcie = Some(off);
                true
            }
            VENDOR_ID => true,
            _ => false,
        };
        caps.standard.push(CapEntry {
            offset: off,
            id: u16::from(id),
            exposed: expose,
            name: name_std(id),
        });
        if expose {
            exposed.push((off, id));
        }
    }
    caps.first = exposed.first().map_or(0, |&(o, _)| o as u8);
    for (i, &(off, id)) in exposed.iter().enumerate() {
        let next = exposed.get(i + 1).map_or(0, |&(o, _)| u32::from(o));
        let group = format!("{}@{off:#x}", name_std(id));
        let table: Vec<RegDesc> = match id {
            PM_ID => PM.to_vec(),
            msi::CAP_ID => msi::table(word(config, usize::from(off) + 2)),
            msix::CAP_ID => msix::MSIX_CAP.to_vec(),
            PCIE_ID => {
                let len = if byte(config, usize::from(off) + 2) & 0xF >= 2 {
                    PCIE_V2_LEN
                } else {
                    PCIE_V1_LEN
                };
                PCIE.iter()
                    .copied()
                    .filter(|d| d.offset + u16::from(d.size) <= len)
                    .collect()
            }
            _ => {
                let len = u16::from(byte(config, usize::from(off) + 2)).clamp(2, 0x100 - off);
                let mut t = VENDOR.to_vec();
                t.extend(opaque("vendor_body", 2, len));
                t
            }
        };
        layout.add_group(&group, off, 0x100, &table);
        caps.builder_values.push((off + 1, next));
    }
    for &(off, _) in &found {
        if !exposed.iter().any(|&(o, _)| o == off) {
            layout.add_hidden(off, off + 2);
        }
    }

    // Extended list: only for PCIe functions with the full 4 KiB.
    if caps.pcie.is_none() || layout.config_len() < 4096 {
        return caps;
    }
    let found = walk_extended(config);
    let mut ext_exposed: Vec<(u16, u16, u8)> = Vec::new();
    for &(off, id, ver) in &found {
        let expose = matches!(id, EXT_DSN | EXT_VSEC);
        caps.extended.push(CapEntry {
            offset: off,
            id,
            exposed: expose,
            name: name_ext(id),
        });
        if expose {
            ext_exposed.push((off, id, ver));
        }
    }
    for (i, &(off, id, ver)) in ext_exposed.iter().enumerate() {
        let next = ext_exposed.get(i + 1).map_or(0, |&(o, _, _)| u32::from(o));
        let group = format!("{}@{off:#x}", name_ext(id));
        let mut table = vec![EXT_HEADER];
        if id == EXT_DSN {
            table.extend_from_slice(DSN_BODY);
        } else {
            // VSEC: header 2 at +4 gives the length in bits 31:20.
            let len = ((dword(config, usize::from(off) + 4) >> 20) as u16).clamp(8, 0x1000 - off);
            table.push(RegDesc {
                offset: 4,
                size: 4,
                name: "vsec_header",
                ..RegDesc::DEVICE_RO
            });
            table.extend(opaque("vsec_body", 8, len));
        }
        layout.add_group(&group, off, 0x1000, &table);
        caps.builder_values
            .push((off, u32::from(id) | u32::from(ver) << 16 | next << 20));
    }
    if ext_exposed.first().map(|e| e.0) != Some(0x100) {
        let next = ext_exposed.first().map_or(0, |&(o, _, _)| u32::from(o));
        layout.add_group("ext-null@0x100", 0x100, 0x1000, &[EXT_HEADER]);
        caps.builder_values.push((0x100, next << 20));
    }
    layout.add_hidden(0x100, 0x1000);
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_consistent() {
        for t in [PM, PCIE, VENDOR, DSN_BODY, msix::MSIX_CAP] {
            for d in t {
                assert!(d.is_consistent(), "{}", d.name);
            }
        }
        assert!(EXT_HEADER.is_consistent());
        let end = PCIE
            .iter()
            .map(|d| d.offset + u16::from(d.size))
            .max()
            .unwrap();
        assert_eq!(end, PCIE_V2_LEN);
    }

    #[test]
    fn walks_stop_on_loops_and_garbage() {
        let mut c = vec![0u8; 4096];
        c[0x06] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x01;
        c[0x41] = 0x50;
        c[0x50] = 0x05;
        c[0x51] = 0x40; // loop back
        assert_eq!(walk_standard(&c), vec![(0x40, 1), (0x50, 5)]);
        c[0x51] = 0x03; // pointer below 0x40 (masked to 0)
        assert_eq!(walk_standard(&c).len(), 2);
        // Extended: 0x100 -> 0x140 -> 0x100 (loop).
        c[0x100..0x104].copy_from_slice(&(0x0010u32 | 1 << 16 | 0x140 << 20).to_le_bytes());
        c[0x140..0x144].copy_from_slice(&(0x0003u32 | 1 << 16 | 0x100 << 20).to_le_bytes());
        assert_eq!(walk_extended(&c), vec![(0x100, 0x10, 1), (0x140, 3, 1)]);
    }
}
