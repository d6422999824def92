//! The `[pci]` section of the per-guest configuration file.
//!
//! ```toml
//! [pci]
//! ecam_base = 0xF0000000        # ECAM (MMCONFIG) window, 1 MiB per bus, 1 MiB aligned
//! bus_start = 0                 # buses decoded by the ECAM window (the root bus is bus_start)
//! bus_end = 0
//! mmio_base = 0xF1000000        # guest MMIO window for BARs below 4 GiB (for the ACPI _CRS)
//! mmio_size = 0x0B000000
//! mmio64_base = 0               # optional 64-bit window (0 = none)
//! mmio64_size = 0
//! io_base = 0xC000              # guest I/O port window for I/O BARs
//! io_size = 0x4000
//! host_bridge_vendor = 0x1b36   # identity of the emulated host bridge at 00:00.0
//! host_bridge_device = 0x0008
//! # ioapic_socket = "/run/pvh-dm/7/ioapic.sock"  # the ioapic's irq_line socket for INTx
//!                               # (default: the [ioapic] section's socket)
//!
//! [[pci.device]]
//! host = "0000:03:10.1"         # host function (sysfs name)
//! slot = 2                      # guest device number on bus_start (1..=31)
//! function = 0                  # guest function number (default 0)
//! backend = "sysfs"             # or "snapshot"
//! # snapshot = "nic.json"      # file for the snapshot backend
//! # intx = "uio"               # forward INTx (see below)
//! ```
//!
//! `intx` names where the host's INTx notification comes from; without it INTx is not
//! forwarded (the guest still sees the device's Interrupt Pin; drivers use MSI / MSI-X):
//! - sysfs: `"uio"` (the function is bound to `uio_pci_generic`; `/dev/uioN` is found through
//!   sysfs) or the path of its `/dev/uioN` (see [`crate::backend::uio`]);
//! - snapshot: the path of a Unix socket on which the backend hands out its INTx eventfd, for
//!   a test to signal ([`crate::backend::intx_eventfd`]).
//!
//! A function with `intx` needs the IOAPIC's irq_line socket; the binary takes it from
//! `ioapic_socket`, else from `[ioapic] socket`. It registers on IOAPIC pin
//! [`crate::intx::guest_gsi`]`(slot, pin)`.
//!
//! Defaults and why:
//! - ECAM at 0xF000_0000: the start of Xen's below-4G MMIO hole for HVM/PVH guests
//!   (`HVM_BELOW_4G_MMIO_START`, xen/include/public/hvm/e820.h), so it never collides with guest
//!   RAM; one bus needs 1 MiB, up to 16 buses fit before the BAR window.
//! - BAR window 0xF100_0000..=0xFBFF_FFFF (176 MiB): the rest of the hole below 0xFC00_0000,
//!   which stays clear of what Xen and the toolstack put at the top of the hole (0xFC00_0000 and
//!   up: ACPI info, IOAPIC 0xFEC0_0000, LAPIC 0xFEE0_0000, special pages below 0xFF00_0000).
//! - I/O window 0xC000..=0xFFFF: the conventional PCI I/O range above the legacy ISA ports.
//! - Host bridge 1b36:0008: QEMU's generic "PCIe host bridge" ID (Red Hat, Inc.). It is a plain
//!   class 06/00 host bridge that Linux binds no driver and applies no chipset quirk to, unlike
//!   real chipset IDs (e.g. Intel 8086:29c0) that trigger quirks probing registers we do not
//!   emulate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::topology::{Ecam, PciAddress, ECAM_BUS_SIZE};

/// Default ECAM base (see the module docs).
pub const DEFAULT_ECAM_BASE: u64 = 0xF000_0000;
/// Default base of the 32-bit BAR window.
pub const DEFAULT_MMIO_BASE: u64 = 0xF100_0000;
/// Default size of the 32-bit BAR window.
pub const DEFAULT_MMIO_SIZE: u64 = 0x0B00_0000;
/// Default first port of the I/O BAR window.
pub const DEFAULT_IO_BASE: u32 = 0xC000;
/// Default size of the I/O BAR window.
pub const DEFAULT_IO_SIZE: u32 = 0x4000;
/// Default host bridge vendor ID (Red Hat / QEMU).
pub const DEFAULT_HOST_BRIDGE_VENDOR: u16 = 0x1b36;
/// Default host bridge device ID (QEMU PCIe host bridge).
pub const DEFAULT_HOST_BRIDGE_DEVICE: u16 = 0x0008;

/// Which [`HostDevice`](crate::HostDevice) implementation serves a function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// `/sys/bus/pci/devices/SBDF/{config,resource}` (the default in a Xen dom0).
    #[default]
    Sysfs,
    /// A file-backed snapshot (tests, dry runs); writes are recorded, never sent anywhere.
    Snapshot,
    /// VFIO (`vfio-pci`; hosts whose IOMMU groups Linux sees): config region, BAR regions,
    /// reset, INTx eventfd. `intx = "vfio"` forwards INTx.
    Vfio,
}

/// `[pci]`. A key left out takes its value from [`PciConfig::default`] (the struct-level
/// `serde(default)`), so the defaults are written once, there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PciConfig {
    /// Guest-physical base of the ECAM window.
    pub ecam_base: u64,
    /// First bus of the ECAM window; the host bridge and all devices sit on this bus.
    pub bus_start: u8,
    /// Last bus of the ECAM window (inclusive).
    pub bus_end: u8,
    /// Base of the guest MMIO window for BARs (below 4 GiB).
    pub mmio_base: u64,
    /// Size of that window.
    pub mmio_size: u64,
    /// Base of an optional 64-bit MMIO window (0 = none).
    pub mmio64_base: u64,
    /// Size of the 64-bit window (0 = none).
    pub mmio64_size: u64,
    /// First port of the I/O window for I/O BARs.
    pub io_base: u32,
    /// Number of ports of the I/O window.
    pub io_size: u32,
    /// Vendor ID of the emulated host bridge.
    pub host_bridge_vendor: u16,
    /// Device ID of the emulated host bridge.
    pub host_bridge_device: u16,
    /// The IOAPIC's irq_line socket, for functions that forward INTx (default: `[ioapic]
    /// socket`, which the binary reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ioapic_socket: Option<PathBuf>,
    /// Passed-through functions (`[[pci.device]]`).
    #[serde(rename = "device")]
    pub devices: Vec<PciDeviceConfig>,
}

/// `[[pci.device]]`: one passed-through host function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciDeviceConfig {
    /// The host function (`DDDD:BB:DD.F`).
    pub host: PciAddress,
    /// Guest device number on the root bus (1..=31; 0 is the host bridge).
    pub slot: u8,
    /// Guest function number (0..=7). Each used slot needs a function 0.
    #[serde(default)]
    pub function: u8,
    /// Backend.
    #[serde(default)]
    pub backend: BackendKind,
    /// Snapshot file (required for, and only allowed with, `backend = "snapshot"`).
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
    /// Where the host's INTx notification comes from (see the module docs); `None`: INTx is
    /// not forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intx: Option<String>,
    /// Snapshot backend only: a file the device's config space is mirrored into after every
    /// change, so that another process (xen-sim, which models Xen's view of the physical
    /// function, e.g. whether its MSI-X Enable is set) sees the "device" as Xen would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_mirror: Option<PathBuf>,
}

impl Default for PciConfig {
    fn default() -> Self {
        PciConfig {
            ecam_base: DEFAULT_ECAM_BASE,
            bus_start: 0,
            bus_end: 0,
            mmio_base: DEFAULT_MMIO_BASE,
            mmio_size: DEFAULT_MMIO_SIZE,
            mmio64_base: 0,
            mmio64_size: 0,
            io_base: DEFAULT_IO_BASE,
            io_size: DEFAULT_IO_SIZE,
            host_bridge_vendor: DEFAULT_HOST_BRIDGE_VENDOR,
            host_bridge_device: DEFAULT_HOST_BRIDGE_DEVICE,
            ioapic_socket: None,
            devices: Vec::new(),
        }
    }
}

/// The guest address windows BARs may be placed in (a BAR outside them is never mapped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Windows {
    /// MMIO windows as `(first, last)` inclusive.
    pub mmio: Vec<(u64, u64)>,
    /// The I/O port window as `(first, last)` inclusive, if any.
    pub io: Option<(u32, u32)>,
}

impl Windows {
    /// Whether `[addr, addr + len)` lies inside one MMIO window.
    pub fn contains_mmio(&self, addr: u64, len: u64) -> bool {
        let Some(last) = len.checked_sub(1).and_then(|l| addr.checked_add(l)) else {
            return false;
        };
        self.mmio.iter().any(|&(a, b)| addr >= a && last <= b)
    }

    /// Whether `[port, port + len)` lies inside the I/O window.
    pub fn contains_io(&self, port: u64, len: u64) -> bool {
        let Some(last) = len.checked_sub(1).and_then(|l| port.checked_add(l)) else {
            return false;
        };
        self.io
            .is_some_and(|(a, b)| port >= u64::from(a) && last <= u64::from(b))
    }
}

impl PciConfig {
    /// The ECAM window.
    pub fn ecam(&self) -> Ecam {
        Ecam {
            base: self.ecam_base,
            bus_start: self.bus_start,
            bus_end: self.bus_end,
        }
    }

    /// The BAR windows.
    pub fn windows(&self) -> Windows {
        let mut mmio = Vec::new();
        if self.mmio_size > 0 {
            mmio.push((self.mmio_base, self.mmio_base + (self.mmio_size - 1)));
        }
        if self.mmio64_size > 0 {
            mmio.push((self.mmio64_base, self.mmio64_base + (self.mmio64_size - 1)));
        }
        let io = (self.io_size > 0).then(|| (self.io_base, self.io_base + (self.io_size - 1)));
        Windows { mmio, io }
    }

    /// The guest address of a configured device (segment 0, bus `bus_start`).
    pub fn guest_address(&self, dev: &PciDeviceConfig) -> PciAddress {
        PciAddress::new(0, self.bus_start, dev.slot, dev.function)
    }

    /// Checks everything that can be checked without touching the host.
    pub fn validate(&self) -> Result<(), Error> {
        let err = |m: String| Err(Error::Config(m));
        if self.bus_start > self.bus_end {
            return err(format!(
                "bus_start {} > bus_end {}",
                self.bus_start, self.bus_end
            ));
        }
        if !self.ecam_base.is_multiple_of(ECAM_BUS_SIZE) {
            return err(format!(
                "ecam_base {:#x} is not 1 MiB aligned",
                self.ecam_base
            ));
        }
        let ecam = self.ecam();
        let ecam_last = self.ecam_base.checked_add(ecam.size() - 1);
        let Some(ecam_last) = ecam_last else {
            return err("ECAM window wraps around the address space".into());
        };
        let mut windows: Vec<(&str, u64, u64)> = vec![("ECAM", self.ecam_base, ecam_last)];
        for (name, base, size) in [
            ("mmio", self.mmio_base, self.mmio_size),
            ("mmio64", self.mmio64_base, self.mmio64_size),
        ] {
            if size == 0 {
                continue;
            }
            if base % 4096 != 0 || size % 4096 != 0 {
                return err(format!("{name}_base/{name}_size must be 4 KiB aligned"));
            }
            let Some(last) = base.checked_add(size - 1) else {
                return err(format!("{name} window wraps around the address space"));
            };
            windows.push((name, base, last));
        }
        if self.mmio_size > 0 && self.mmio_base + (self.mmio_size - 1) > 0xFFFF_FFFF {
            return err("mmio window must lie below 4 GiB (use mmio64_* above)".into());
        }
        for (i, a) in windows.iter().enumerate() {
            for b in &windows[i + 1..] {
                if a.1 <= b.2 && b.1 <= a.2 {
                    return err(format!("{} window overlaps the {} window", a.0, b.0));
                }
            }
        }
        if self.io_size > 0 && u64::from(self.io_base) + u64::from(self.io_size) > 0x1_0000 {
            return err("io window must lie in ports 0..=0xFFFF".into());
        }
        let mut seen = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        for (i, d) in self.devices.iter().enumerate() {
            let name = format!("pci.device[{i}] (host {})", d.host);
            if d.slot == 0 || d.slot > 31 {
                return err(format!(
                    "{name}: slot {} (must be 1..=31; 0 is the host bridge)",
                    d.slot
                ));
            }
            if d.function > 7 {
                return err(format!("{name}: function {} (must be 0..=7)", d.function));
            }
            if let Some(j) = seen.insert((d.slot, d.function), i) {
                return err(format!(
                    "{name}: slot {}.{} already used by pci.device[{j}]",
                    d.slot, d.function
                ));
            }
            if let Some(j) = hosts.insert(d.host, i) {
                return err(format!(
                    "{name}: host function already passed as pci.device[{j}]"
                ));
            }
            match (d.backend, &d.snapshot) {
                (BackendKind::Snapshot, None) => {
                    return err(format!(
                        "{name}: backend \"snapshot\" needs snapshot = \"path\""
                    ))
                }
                (BackendKind::Sysfs | BackendKind::Vfio, Some(_)) => {
                    return err(format!(
                        "{name}: snapshot is only allowed with backend \"snapshot\""
                    ))
                }
                _ => {}
            }
            if d.config_mirror.is_some() && d.backend != BackendKind::Snapshot {
                return err(format!(
                    "{name}: config_mirror is only allowed with backend \"snapshot\""
                ));
            }
            match (d.backend, d.intx.as_deref()) {
                (_, None) => {}
                (_, Some("")) => return err(format!("{name}: intx is empty")),
                (BackendKind::Sysfs, Some(i)) if i != "uio" && !i.starts_with('/') => {
                    return err(format!(
                        "{name}: intx = {i:?}: expected \"uio\" or the path of /dev/uioN"
                    ))
                }
                (BackendKind::Vfio, Some(i)) if i != "vfio" => {
                    return err(format!(
                        "{name}: intx = {i:?}: with backend \"vfio\" use intx = \"vfio\""
                    ))
                }
                _ => {}
            }
        }
        for &(slot, func) in seen.keys() {
            if func != 0 && !seen.contains_key(&(slot, 0)) {
                return err(format!(
                    "slot {slot} has function {func} but no function 0 (guests scan function 0 first)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = PciConfig::default();
        c.validate().unwrap();
        assert_eq!(c.windows().mmio, vec![(0xF100_0000, 0xFBFF_FFFF)]);
        assert_eq!(c.windows().io, Some((0xC000, 0xFFFF)));
    }

    #[test]
    fn a_key_left_out_takes_its_default() {
        let empty: PciConfig = toml::from_str("").unwrap();
        assert_eq!(empty, PciConfig::default());
        let one: PciConfig = toml::from_str("mmio_size = 0x100000\nio_size = 0x100").unwrap();
        let want = PciConfig {
            mmio_size: 0x10_0000,
            io_size: 0x100,
            ..PciConfig::default()
        };
        assert_eq!(one, want);
        assert_eq!(one.windows().mmio, vec![(0xF100_0000, 0xF10F_FFFF)]);
    }

    #[test]
    fn rejects_bad_layouts() {
        let dev = |slot, function| PciDeviceConfig {
            host: PciAddress::new(0, 3, 0, function),
            slot,
            function,
            backend: BackendKind::Sysfs,
            snapshot: None,
            intx: None,
            config_mirror: None,
        };
        let bad = [
            PciConfig {
                bus_start: 1,
                bus_end: 0,
                ..Default::default()
            },
            PciConfig {
                ecam_base: 0xF000_1000,
                ..Default::default()
            },
            PciConfig {
                bus_end: 16,
                ..Default::default()
            }, // ECAM runs into the mmio window
            PciConfig {
                mmio_base: 0xFFFF_0000,
                mmio_size: 0x2_0000,
                ..Default::default()
            },
            PciConfig {
                io_base: 0xF000,
                io_size: 0x2000,
                ..Default::default()
            },
            PciConfig {
                devices: vec![dev(0, 0)],
                ..Default::default()
            },
            PciConfig {
                devices: vec![dev(2, 1)],
                ..Default::default()
            },
            PciConfig {
                devices: vec![PciDeviceConfig {
                    backend: BackendKind::Snapshot,
                    ..dev(2, 0)
                }],
                ..Default::default()
            },
            PciConfig {
                devices: vec![PciDeviceConfig {
                    intx: Some("eventfd".into()),
                    config_mirror: None,
                    ..dev(2, 0)
                }],
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        PciConfig {
            devices: vec![dev(2, 0), dev(2, 1)],
            ..Default::default()
        }
        .validate()
        .unwrap();
    }
}
