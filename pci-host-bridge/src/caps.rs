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

use serde::Serialize;

use crate::backend::BarInfo;
use crate::config_space::{Init, Layout, RegDesc, RegKind};
use crate::msi;
use crate::msix::{self, MsixInfo};

/// Power Management capability ID.
pub const PM_ID: u8 = 0x01;
/// Vendor-specific capability ID.
pub const VENDOR_ID: u8 = 0x09;
/// PCI Express capability ID.
pub const PCIE_ID: u8 = 0x10;
/// Extended capability: Device Serial Number.
pub const EXT_DSN: u16 = 0x0003;
/// Extended capability: vendor-specific.
pub const EXT_VSEC: u16 = 0x000B;
/// Extended capability: ARI.
pub const EXT_ARI: u16 = 0x000E;
/// Extended capability: SR-IOV.
pub const EXT_SRIOV: u16 = 0x0010;
/// Extended capability: Resizable BAR.
pub const EXT_REBAR: u16 = 0x0015;

/// Power Management capability registers.
pub const PM: &[RegDesc] = &[
    RegDesc {
        offset: 0x00,
        size: 1,
        name: "pm_cap_id",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x01,
        size: 1,
        name: "pm_next",
        init: Init::Builder,
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x02,
        size: 2,
        name: "pm_pmc",
        emu: 0xF9C8,
        ro: 0xF9C8,
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x04,
        size: 2,
        name: "pm_pmcsr",
        emu: 0xFFF7,
        ro: 0xFFF7 & !0x8103,
        w1c: 0x8000,
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x06,
        size: 1,
        name: "pm_bse",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x07,
        size: 1,
        name: "pm_data",
        ..RegDesc::VIRT_RO
    },
];
/// Length of the PM capability.
pub const PM_LEN: u16 = 8;

/// PCI Express capability registers (version 1 uses the first 0x24 bytes).
pub const PCIE: &[RegDesc] = &[
    RegDesc {
        offset: 0x00,
        size: 1,
        name: "pcie_cap_id",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x01,
        size: 1,
        name: "pcie_next",
        init: Init::Builder,
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x02,
        size: 2,
        name: "pcie_flags",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x04,
        size: 4,
        name: "pcie_devcap",
        emu: 0x1000_0000,
        ro: 0x1000_0000,
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x08,
        size: 2,
        name: "pcie_devctl",
        emu: 0xFFFF,
        ro: 0x8400,
        init: Init::Device(0x7FFF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x0A,
        size: 2,
        name: "pcie_devsta",
        pass: 0x000F,
        w1c: 0x000F,
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x0C,
        size: 4,
        name: "pcie_lnkcap",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x10,
        size: 2,
        name: "pcie_lnkctl",
        emu: 0xFFFF,
        ro: 0xFC34,
        init: Init::Device(0xFFCF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x12,
        size: 2,
        name: "pcie_lnksta",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x14,
        size: 4,
        name: "pcie_sltcap",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x18,
        size: 2,
        name: "pcie_sltctl",
        emu: 0xFFFF,
        ro: 0xE000,
        init: Init::Device(0x1FFF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x1A,
        size: 2,
        name: "pcie_sltsta",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x1C,
        size: 2,
        name: "pcie_rootctl",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x1E,
        size: 2,
        name: "pcie_rootcap",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x20,
        size: 4,
        name: "pcie_rootsta",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x24,
        size: 4,
        name: "pcie_devcap2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x28,
        size: 2,
        name: "pcie_devctl2",
        emu: 0xFFFF,
        ro: 0xFFE0,
        init: Init::Device(0xFFFF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x2A,
        size: 2,
        name: "pcie_devsta2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x2C,
        size: 4,
        name: "pcie_lnkcap2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x30,
        size: 2,
        name: "pcie_lnkctl2",
        emu: 0xFFFF,
        ro: 0xE040,
        init: Init::Device(0xFFFF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x32,
        size: 2,
        name: "pcie_lnksta2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x34,
        size: 4,
        name: "pcie_sltcap2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x38,
        size: 2,
        name: "pcie_sltctl2",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x3A,
        size: 2,
        name: "pcie_sltsta2",
        ..RegDesc::DEVICE_RO
    },
];

/// Length of a version-1 PCIe capability as described here.
pub const PCIE_V1_LEN: u16 = 0x24;
/// Length of a version-2 PCIe capability.
pub const PCIE_V2_LEN: u16 = 0x3C;

/// Vendor-specific capability header (the body is [`RegKind::Opaque`] bytes).
pub const VENDOR: &[RegDesc] = &[
    RegDesc {
        offset: 0x00,
        size: 1,
        name: "vendor_cap_id",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x01,
        size: 1,
        name: "vendor_next",
        init: Init::Builder,
        ..RegDesc::VIRT_RO
    },
];

/// Extended capability header (ID, version and the relinked next pointer, all virtual).
pub const EXT_HEADER: RegDesc = RegDesc {
    offset: 0,
    size: 4,
    name: "ext_cap_header",
    init: Init::Builder,
    ..RegDesc::VIRT_RO
};

/// Device Serial Number body.
pub const DSN_BODY: &[RegDesc] = &[
    RegDesc {
        offset: 0x04,
        size: 4,
        name: "dsn_lo",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x08,
        size: 4,
        name: "dsn_hi",
        ..RegDesc::DEVICE_RO
    },
];

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

fn name_std(id: u8) -> &'static str {
    match id {
        PM_ID => "power-management",
        0x02 => "agp",
        0x03 => "vpd",
        0x04 => "slot-id",
        msi::CAP_ID => "msi",
        0x06 => "compact-pci-hot-swap",
        0x07 => "pci-x",
        0x08 => "hypertransport",
        VENDOR_ID => "vendor-specific",
        0x0A => "debug-port",
        0x0C => "pci-hot-plug",
        0x0D => "bridge-subsystem-vendor-id",
        0x0E => "agp-8x",
        0x0F => "secure-device",
        PCIE_ID => "pci-express",
        msix::CAP_ID => "msi-x",
        0x12 => "sata",
        0x13 => "advanced-features",
        0x14 => "enhanced-allocation",
        0x15 => "flattening-portal-bridge",
        _ => "unknown",
    }
}

fn name_ext(id: u16) -> &'static str {
    match id {
        0x0000 => "null",
        0x0001 => "aer",
        0x0002 | 0x0009 => "virtual-channel",
        EXT_DSN => "device-serial-number",
        0x0004 => "power-budgeting",
        0x0005 => "root-complex-link-declaration",
        0x0007 => "root-complex-event-collector",
        0x0008 => "mfvc",
        0x000A => "rcrb",
        EXT_VSEC => "vendor-specific",
        0x000D => "acs",
        EXT_ARI => "ari",
        0x000F => "ats",
        EXT_SRIOV => "sr-iov",
        0x0011 => "mr-iov",
        0x0012 => "multicast",
        0x0013 => "page-request",
        EXT_REBAR => "resizable-bar",
        0x0016 => "dpa",
        0x0017 => "tph",
        0x0018 => "ltr",
        0x0019 => "secondary-pcie",
        0x001B => "pasid",
        0x001D => "dpc",
        0x001E => "l1-pm-substates",
        0x001F => "ptm",
        0x0023 => "dvsec",
        0x0024 => "vf-resizable-bar",
        0x0025 => "data-link-feature",
        0x0026 => "physical-layer-16gt",
        0x0027 => "lane-margining",
        _ => "unknown",
    }
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
