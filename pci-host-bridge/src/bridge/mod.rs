//! [`PciHostBridge`]: the [`Device`] the pci-host-bridge process serves.
//!
//! # Ranges it claims (registered once at setup)
//! - `Space::PciConfig`: the SBDF of the host bridge (00:00.0 on `bus_start`) and of every
//!   configured function, merged into contiguous runs. Unclaimed SBDFs never reach us over
//!   CF8/CFC: Xen's null handler answers all-ones (xen-abi.md 1.5).
//! - `Space::Memory`: the ECAM window, `(bus_end - bus_start + 1)` MiB at `ecam_base`. Inside it,
//!   functions nobody configured read all-ones and drop writes.
//! - `Space::Memory`: the BAR window(s) (`mmio_*`, `mmio64_*`), whole.
//!
//! # Why the whole BAR window is claimed (trapped MSI-X pages)
//! BAR placement is the guest's choice and changes at run time, but our server registers its
//! ranges once at setup, so the pages holding an MSI-X table or PBA cannot be claimed one by one
//! when the guest places the BAR (a `trapped_pages()` list would be stale the moment the guest
//! moves a BAR). Instead the bridge claims every BAR window up front. Pages of a BAR that are
//! mapped with `XEN_DOMCTL_memory_mapping` never produce ioreqs (the p2m entry wins over ioreq
//! ranges in Xen, and xen-sim routes to its p2m first), so what still arrives is exactly:
//! the trapped MSI-X table/PBA pages (emulated here; other registers on those pages are
//! forwarded to the device through the backend), BARs that cannot be mapped (sub-page BARs;
//! forwarded), and accesses to no decoded BAR at all (all-ones / dropped). The cost is that no
//! other ioreq server may claim addresses inside the windows. A server loop that can add and
//! remove ranges at run time (`XEN_DMOP_map_io_range_to_ioreq_server` /
//! `unmap_io_range_from_ioreq_server` are legal at any time) could instead claim just the
//! trapped pages as they move.
//!
//! The ECAM window and the BAR windows must not overlap (checked by
//! [`PciConfig::validate`]).
//!
//! # Life cycle and interrupts
//! [`Device::start`] assigns every function (permissions, `assign_device`) before the guest
//! runs; [`Device::stop`] unmaps, unbinds, deassigns and revokes. MSI / MSI-X binding actions
//! come out of config and MSI-X table writes; INTx comes in through [`Device::event_fds`]
//! (each function's host notification fd and its IOAPIC line's resample fd) once
//! [`PciHostBridge::connect_intx`] attached the lines.
//!
//! # Files
//! This file holds construction, the views and the [`Device`] implementation; `access.rs`
//! routes each guest config, ECAM and BAR-window access (and the remap a config write may
//! ask for), split off so that the per-access path reads on its own.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::path::Path;

use ioreq_server::device::{Actions, Device, Range, Space};
use ioreq_server::executor::PassthroughExecutor;
use ioreq_server::ratelimit::RateLimit;
use serde_json::json;

use crate::backend::{self, HostDevice};
use crate::config::{PciConfig, Windows};
use crate::error::Error;
use crate::function::PassthroughFunction;
use crate::host_bridge::HostBridgeFunction;
use crate::topology::{Ecam, PciAddress};

mod access;

/// The host bridge and the functions behind it.
pub struct PciHostBridge {
    config: PciConfig,
    ecam: Ecam,
    windows: Windows,
    host_bridge: HostBridgeFunction,
    /// Keyed by guest devfn on `bus_start`.
    functions: BTreeMap<u8, PassthroughFunction>,
    /// The one owner of what is set up in Xen for this guest; `None` for a bridge without
    /// passed-through functions.
    exec: Option<PassthroughExecutor>,
    /// The rate limit of the bridge's own guest-caused warnings (`guest_warn!`).
    warn: RateLimit,
}

impl std::fmt::Debug for PciHostBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciHostBridge")
            .field("config", &self.config)
            .field("functions", &self.functions)
            .finish()
    }
}

impl PciHostBridge {
    /// Build the bridge from the `[pci]` section, opening each device's backend (sysfs under
    /// `/sys`, or its snapshot file).
    pub fn from_config(config: &PciConfig) -> Result<Self, Error> {
        Self::from_config_with_sysfs_root(config, Path::new("/sys"))
    }

    /// Like [`PciHostBridge::from_config`] with another sysfs root.
    pub fn from_config_with_sysfs_root(
        config: &PciConfig,
        sysfs_root: &Path,
    ) -> Result<Self, Error> {
        config.validate()?;
        let backends = config
            .devices
            .iter()
            .map(|d| backend::open(d, sysfs_root))
            .collect::<Result<Vec<_>, _>>()?;
        Self::with_backends(config, backends)
    }

    /// Build the bridge with ready backends, one per `config.devices` entry, in order (tests,
    /// or a caller that opens backends itself).
    pub fn with_backends(
        config: &PciConfig,
        backends: Vec<Box<dyn HostDevice>>,
    ) -> Result<Self, Error> {
        config.validate()?;
        if backends.len() != config.devices.len() {
            return Err(Error::Config(format!(
                "{} backends for {} configured devices",
                backends.len(),
                config.devices.len()
            )));
        }
        let windows = config.windows();
        let mut functions = BTreeMap::new();
        for (d, dev) in config.devices.iter().zip(backends) {
            let guest = config.guest_address(d);
            let multifunction = d.function == 0
                && config
                    .devices
                    .iter()
                    .any(|o| o.slot == d.slot && o.function != 0);
            let f = PassthroughFunction::new(guest, d.host, dev, windows.clone(), multifunction)?;
            functions.insert(guest.devfn(), f);
        }
        Ok(PciHostBridge {
            config: config.clone(),
            ecam: config.ecam(),
            windows,
            host_bridge: HostBridgeFunction::new(
                config.host_bridge_vendor,
                config.host_bridge_device,
            ),
            functions,
            exec: None,
            warn: RateLimit::guest(),
        })
    }

    /// A copy of this bridge in its current state (every function's layout, BARs, interrupts,
    /// mappings and lifecycle as they are) over `backends`, copies of this bridge's devices in
    /// their current state, one per function in guest-address order, and `exec`, a
    /// [`PassthroughExecutor::fork`] of this bridge's executor over a copy of its Xen. For
    /// tests and fuzz targets that start many runs from one prepared bridge instead of
    /// replaying its set-up (`testing` feature). Refused while an INTx line is attached.
    #[cfg(any(test, feature = "testing"))]
    pub fn fork(
        &self,
        backends: Vec<Box<dyn HostDevice>>,
        exec: Option<PassthroughExecutor>,
    ) -> Result<Self, Error> {
        if backends.len() != self.functions.len() {
            return Err(Error::Config(format!(
                "{} backends for {} functions",
                backends.len(),
                self.functions.len()
            )));
        }
        let functions = self
            .functions
            .iter()
            .zip(backends)
            .map(|((devfn, f), dev)| Ok((*devfn, f.fork(dev)?)))
            .collect::<Result<BTreeMap<_, _>, Error>>()?;
        Ok(PciHostBridge {
            config: self.config.clone(),
            ecam: self.ecam,
            windows: self.windows.clone(),
            host_bridge: self.host_bridge.clone(),
            functions,
            exec,
            warn: self.warn.clone(),
        })
    }

    /// Give the bridge its passthrough executor (required as soon as a function is
    /// configured; [`Device::start`] refuses without one).
    pub fn set_executor(&mut self, exec: PassthroughExecutor) {
        self.exec = Some(exec);
    }

    /// The executor (for tests and the status socket).
    pub fn executor(&self) -> Option<&PassthroughExecutor> {
        self.exec.as_ref()
    }

    /// Hand back every function after a bridge died (see
    /// [`crate::lifecycle::Lifecycle::reclaim`]). Refused while the domain still exists: its
    /// p2m may still map the functions' BARs, and only the dead bridge knew where.
    pub fn reclaim(&mut self) -> Result<(), Error> {
        let Some(exec) = self.exec.as_mut() else {
            return Err(Error::Config("reclaim needs a passthrough executor".into()));
        };
        if exec.domain_alive() {
            return Err(Error::Config(format!(
                "domain {} still exists: destroy it first (xl destroy {}); its p2m may still map the devices",
                exec.domid(),
                exec.domid()
            )));
        }
        let mut failed = Vec::new();
        for f in self.functions.values_mut() {
            let host = f.host_address();
            let errs = f.reclaim(exec);
            if errs.is_empty() {
                tracing::info!(%host, "reclaimed: back with dom0");
            } else {
                failed.push(format!("{host}: {}", errs.join("; ")));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "reclaim incomplete: {}",
                failed.join(" | ")
            )))
        }
    }

    /// The lowest guest address of a window below 4 GiB (ECAM or BARs) and the configured
    /// windows above it, checked against the guest's RAM: a PVH domain without a device model
    /// has only a small hole below 4 GiB (libxl_dom.c:1081-1110 in 4.17: 4G minus the special
    /// pages, LAPIC and ACPI info), so RAM of a large guest lies where the default windows are,
    /// and `memory_mapping` over RAM frames would replace the guest's memory.
    pub fn check_windows_against_ram(&self, ram_bytes: u64) -> Result<(), Error> {
        const GIB4: u64 = 1 << 32;
        let mut low: Vec<(&str, u64)> = vec![("ECAM window ([pci] ecam_base)", self.ecam.base)];
        for &(a, _) in &self.windows.mmio {
            low.push(("BAR window ([pci] mmio_base / mmio64_base)", a));
        }
        for (what, base) in low {
            // RAM below 4 GiB is [0, min(ram, hole start)); above, [4 GiB, 4 GiB + rest).
            let overlaps = if base < GIB4 {
                ram_bytes > base
            } else {
                let above = ram_bytes.saturating_sub(GIB4.min(ram_bytes));
                base < GIB4 + above
            };
            if overlaps {
                return Err(Error::Config(format!(
                    "the guest has {} MiB of RAM, which reaches the {what} at {base:#x}:                      PVH guest RAM fills the space below 4 GiB up to a small hole at the top.                      Give the guest at most {} MiB, or move the windows (a 64-bit BAR window                      above the guest's RAM: [pci] mmio64_base)",
                    ram_bytes >> 20,
                    base.min(GIB4) >> 20
                )));
            }
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &PciConfig {
        &self.config
    }

    /// The ECAM window.
    pub fn ecam(&self) -> Ecam {
        self.ecam
    }

    /// The passed-through function at a guest address.
    pub fn function(&self, guest: PciAddress) -> Option<&PassthroughFunction> {
        self.on_root_bus(guest)
            .then(|| self.functions.get(&guest.devfn()))
            .flatten()
    }

    /// The passed-through function at a guest address, mutable.
    pub fn function_mut(&mut self, guest: PciAddress) -> Option<&mut PassthroughFunction> {
        if !self.on_root_bus(guest) {
            return None;
        }
        self.functions.get_mut(&guest.devfn())
    }

    /// All passed-through functions, by guest address.
    pub fn functions(&self) -> impl Iterator<Item = &PassthroughFunction> {
        self.functions.values()
    }

    /// The guest address of the host bridge.
    pub fn host_bridge_address(&self) -> PciAddress {
        PciAddress::new(0, self.config.bus_start, 0, 0)
    }

    fn on_root_bus(&self, a: PciAddress) -> bool {
        a.segment == 0 && a.bus == self.config.bus_start
    }

    /// Remove every guest mapping (at shutdown, before the ioreq server is destroyed).
    pub fn unmap_all(&mut self) {
        let Some(exec) = self.exec.as_mut() else {
            return;
        };
        for f in self.functions.values_mut() {
            f.unmap_all(exec);
        }
    }

    /// Whether any function forwards INTx (and so needs the IOAPIC's irq_line socket).
    pub fn needs_ioapic(&self) -> bool {
        self.functions.values().any(|f| f.intx().is_some())
    }

    /// Register every INTx-forwarding function on the IOAPIC's irq_line socket, on the pin
    /// the guest's `_PRT` routes it to ([`crate::intx::guest_gsi`]).
    pub fn connect_intx(&mut self, socket: &Path) -> Result<(), Error> {
        for f in self.functions.values_mut() {
            let guest = f.guest_address();
            f.connect_intx(socket).map_err(|e| Error::Unsupported {
                device: guest.to_string(),
                message: format!(
                    "INTx: cannot register on the IOAPIC at {}: {e}",
                    socket.display()
                ),
            })?;
        }
        Ok(())
    }

    /// The MMIO pages currently trapped for MSI-X (informational: they lie inside the claimed
    /// BAR windows, see the module docs).
    pub fn trapped_pages(&self) -> Vec<Range> {
        let mut out = Vec::new();
        for f in self.functions.values() {
            let Some(m) = f.caps().msix else { continue };
            if f.command() & crate::header::CMD_MEMORY == 0 {
                continue;
            }
            for bar in [m.table_bar, m.pba_bar] {
                let Some(b) = f.bars().bar(usize::from(bar)) else {
                    continue;
                };
                if b.guest == 0 || !self.windows.contains_mmio(b.guest, b.emu_size) {
                    continue;
                }
                for (a, z) in m.trapped_pages(bar) {
                    let r = Range::new(Space::Memory, b.guest + (a << 12), (z - a + 1) << 12);
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
            }
        }
        out
    }
}

impl Device for PciHostBridge {
    fn name(&self) -> &str {
        "pci-host-bridge"
    }

    fn ranges(&self) -> Vec<Range> {
        let mut sbdfs: Vec<u32> = std::iter::once(self.host_bridge_address().sbdf())
            .chain(self.functions.values().map(|f| f.guest_address().sbdf()))
            .collect();
        sbdfs.sort_unstable();
        sbdfs.dedup();
        let mut out: Vec<Range> = Vec::new();
        for s in sbdfs {
            match out.last_mut() {
                Some(r) if r.end + 1 == u64::from(s) => r.end += 1,
                _ => out.push(Range::pci_function(s)),
            }
        }
        out.push(Range::new(Space::Memory, self.ecam.base, self.ecam.size()));
        for &(a, z) in &self.windows.mmio {
            out.push(Range {
                space: Space::Memory,
                start: a,
                end: z,
            });
        }
        out
    }

    fn read(&mut self, space: Space, addr: u64, size: u8, _actions: &mut Actions) -> u64 {
        let len = usize::from(size).clamp(1, 8);
        match space {
            Space::PciConfig => {
                let reg = addr & 0xFFFF_FFFF;
                if reg > 0xFFF {
                    return u64::MAX;
                }
                self.config_read(PciAddress::from_sbdf((addr >> 32) as u32), reg as u16, len)
            }
            Space::Memory if self.ecam.contains(addr) => self.ecam_read(addr, len),
            Space::Memory => self.mmio_read(addr, len),
            Space::Port => u64::MAX,
        }
    }

    fn write(&mut self, space: Space, addr: u64, size: u8, data: u64, _actions: &mut Actions) {
        let len = usize::from(size).clamp(1, 8);
        match space {
            Space::PciConfig => {
                let reg = addr & 0xFFFF_FFFF;
                if reg <= 0xFFF {
                    self.config_write(
                        PciAddress::from_sbdf((addr >> 32) as u32),
                        reg as u16,
                        len,
                        data,
                    );
                }
            }
            Space::Memory if self.ecam.contains(addr) => self.ecam_write(addr, len, data),
            Space::Memory => self.mmio_write(addr, len, data),
            Space::Port => {}
        }
    }

    fn event_fds(&self) -> Vec<RawFd> {
        self.functions
            .values()
            .flat_map(|f| f.event_fds())
            .collect()
    }

    fn on_event(&mut self, fd: RawFd, _actions: &mut Actions) {
        for f in self.functions.values_mut() {
            if f.on_event(fd) {
                return;
            }
        }
    }

    fn start(&mut self, _actions: &mut Actions) -> Result<(), String> {
        if self.functions.is_empty() {
            return Ok(());
        }
        let Some(exec) = self.exec.as_mut() else {
            return Err("passed-through functions configured but no passthrough executor".into());
        };
        let pages = exec
            .domain_max_pages()
            .map_err(|e| format!("reading the guest's memory size (getdomaininfo): {e}"))?;
        self.check_windows_against_ram(pages.saturating_mul(4096))
            .map_err(|e| e.to_string())?;
        let Some(exec) = self.exec.as_mut() else {
            return Ok(());
        };
        for f in self.functions.values_mut() {
            f.start(exec).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn stop(&mut self, _actions: &mut Actions) {
        let Some(exec) = self.exec.as_mut() else {
            return;
        };
        if self.functions.is_empty() {
            return;
        }
        let alive = exec.domain_alive();
        if !alive {
            exec.forget_domain();
        }
        for f in self.functions.values_mut() {
            f.stop(exec, alive);
        }
    }

    fn status(&self) -> serde_json::Value {
        json!({
            "ecam": { "base": format!("{:#x}", self.ecam.base), "bus_start": self.ecam.bus_start, "bus_end": self.ecam.bus_end },
            "host_bridge": self.host_bridge_address().to_string(),
            "functions": self.functions.values().map(|f| f.status()).collect::<Vec<_>>(),
            "trapped_pages": self.trapped_pages(),
            "xen": self.exec.as_ref().map(PassthroughExecutor::status),
        })
    }
}
