//! The host's PCI functions as a tree (PF -> VFs), for choosing what to pass through.
//!
//! Read-only sysfs access under a root parameter (normally `/sys`; tests use a fake tree):
//! `ROOT/bus/pci/devices/SBDF/` with `vendor`, `device`, `class`, `subsystem_vendor`,
//! `subsystem_device`, `sriov_totalvfs`, `sriov_numvfs` and the links `driver`, `iommu_group`,
//! `physfn`, `virtfnN`.
//!
//! "Assignable" means the function has an IOMMU group. Note that in a Xen dom0 the IOMMU
//! belongs to Xen, so Linux shows no IOMMU groups there and every function reads "not
//! assignable" by this test although Xen can assign it; the field is what Linux/VFIO says.
//! "Assigned" means its driver is pciback / xen-pciback / vfio-pci, or it is named in the
//! configuration passed in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::Error;
use crate::pci_ids::PciIds;
use crate::topology::PciAddress;

/// Drivers that mean "reserved for passthrough".
pub const PASSTHROUGH_DRIVERS: &[&str] = &["pciback", "xen-pciback", "vfio-pci"];

/// SR-IOV counts of a PF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sriov {
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// `sriov_numvfs`.
    pub num_vfs: u32,
}

/// One host function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostFunction {
    /// Host address.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Subsystem vendor ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsystem_vendor_id: Option<u16>,
    /// Subsystem ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsystem_id: Option<u16>,
    /// Class code (`class << 16 | subclass << 8 | prog_if`).
    pub class: u32,
    /// Vendor name from pci.ids (the host's or the embedded one).
    pub vendor_name: Option<String>,
    /// Device name from pci.ids.
    pub device_name: Option<String>,
    /// Class name from pci.ids.
    pub class_name: Option<String>,
    /// Bound driver.
    pub driver: Option<String>,
    /// IOMMU group number.
    pub iommu_group: Option<u32>,
    /// Whether Linux reports an IOMMU group for it.
    pub assignable: bool,
    /// Why it counts as already assigned (`"driver pciback"`, `"config"`), if it does.
    pub assigned: Option<String>,
    /// Whether it is an SR-IOV VF.
    pub is_virtual_function: bool,
    /// SR-IOV counts (PFs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sriov: Option<Sriov>,
    /// Its VFs (PFs only), by address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub virtual_functions: Vec<HostFunction>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_hex(path: &Path) -> Option<u32> {
    let s = read_trimmed(path)?;
    u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

fn read_decimal(path: &Path) -> Option<u32> {
    read_trimmed(path)?.parse().ok()
}

fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Every function under `ROOT/bus/pci/devices` as a PF/VF tree, sorted by address. `ids`
/// supplies names (see [`PciIds::load_default`]; `None`: IDs only); `configured` lists host
/// functions a configuration already passes through.
pub fn list_host_functions(
    sysfs_root: &Path,
    ids: Option<&PciIds>,
    configured: &[PciAddress],
) -> Result<Vec<HostFunction>, Error> {
    let devices = sysfs_root.join("bus/pci/devices");
    let rd = std::fs::read_dir(&devices).map_err(|e| Error::io(&devices, e))?;
    let mut flat: BTreeMap<PciAddress, (HostFunction, Option<PciAddress>)> = BTreeMap::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&devices, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(address) = name.parse::<PciAddress>() else {
            continue;
        };
        let dir = entry.path();
        let vendor_id = read_hex(&dir.join("vendor")).unwrap_or(0xFFFF) as u16;
        let device_id = read_hex(&dir.join("device")).unwrap_or(0xFFFF) as u16;
        let class = read_hex(&dir.join("class")).unwrap_or(0) & 0xFF_FFFF;
        let driver = link_name(&dir.join("driver"));
        let iommu_group = link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok());
        let physfn = link_name(&dir.join("physfn")).and_then(|p| p.parse::<PciAddress>().ok());
        let sriov = read_decimal(&dir.join("sriov_totalvfs"))
            .filter(|&t| t > 0)
            .map(|total_vfs| Sriov {
                total_vfs,
                num_vfs: read_decimal(&dir.join("sriov_numvfs")).unwrap_or(0),
            });
        let assigned = match &driver {
            Some(d) if PASSTHROUGH_DRIVERS.contains(&d.as_str()) => Some(format!("driver {d}")),
            _ if configured.contains(&address) => Some("config".to_string()),
            _ => None,
        };
        let f = HostFunction {
            address,
            vendor_id,
            device_id,
            subsystem_vendor_id: read_hex(&dir.join("subsystem_vendor")).map(|v| v as u16),
            subsystem_id: read_hex(&dir.join("subsystem_device")).map(|v| v as u16),
            class,
            vendor_name: ids.and_then(|i| i.vendor(vendor_id)).map(str::to_string),
            device_name: ids
                .and_then(|i| i.device(vendor_id, device_id))
                .map(str::to_string),
            class_name: ids.and_then(|i| i.class(class)).map(str::to_string),
            driver,
            assignable: iommu_group.is_some(),
            iommu_group,
            assigned,
            is_virtual_function: physfn.is_some(),
            sriov,
            virtual_functions: Vec::new(),
        };
        flat.insert(address, (f, physfn));
    }
    // Attach VFs to their PFs (VFs whose PF is not listed stay at the top level).
    let vfs: Vec<(PciAddress, PciAddress)> = flat
        .iter()
        .filter_map(|(a, (_, pf))| pf.filter(|p| flat.contains_key(p)).map(|p| (*a, p)))
        .collect();
    for (vf, pf) in vfs {
        if let Some((f, _)) = flat.remove(&vf) {
            if let Some((parent, _)) = flat.get_mut(&pf) {
                parent.virtual_functions.push(f);
            }
        }
    }
    Ok(flat.into_values().map(|(f, _)| f).collect())
}

fn describe(f: &HostFunction) -> String {
    let mut s = format!("{} {:04x}:{:04x}", f.address, f.vendor_id, f.device_id);
    match (&f.vendor_name, &f.device_name) {
        (Some(v), Some(d)) => {
            let _ = write!(s, " {v} {d}");
        }
        (Some(v), None) => {
            let _ = write!(s, " {v} device");
        }
        _ => {}
    }
    match &f.class_name {
        Some(c) => {
            let _ = write!(s, " [{c}]");
        }
        None => {
            let _ = write!(s, " [class {:06x}]", f.class);
        }
    }
    let _ = write!(s, " driver={}", f.driver.as_deref().unwrap_or("none"));
    match f.iommu_group {
        Some(g) => {
            let _ = write!(s, " iommu_group={g}");
        }
        None => s.push_str(" not assignable"),
    }
    if let Some(sr) = f.sriov {
        let _ = write!(s, " sriov={}/{}", sr.num_vfs, sr.total_vfs);
    }
    if let Some(a) = &f.assigned {
        let _ = write!(s, " (assigned: {a})");
    }
    s
}

/// The list as a human-readable tree.
pub fn render_tree(list: &[HostFunction]) -> String {
    let mut out = String::new();
    for f in list {
        out.push_str(&describe(f));
        out.push('\n');
        let n = f.virtual_functions.len();
        for (i, vf) in f.virtual_functions.iter().enumerate() {
            out.push_str(if i + 1 == n {
                "└── "
            } else {
                "├── "
            });
            out.push_str(&describe(vf));
            out.push('\n');
        }
    }
    out
}
