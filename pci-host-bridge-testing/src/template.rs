//! Building bridges over snapshot devices and the fake Xen: started and checked
//! ([`bridge_with_snapshots`], [`bridge_with_xen`]), not started ([`unstarted_bridge`]), or
//! copied from a prepared [`Template`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ioreq_server::device::{Actions, Device};

use pci_host_bridge::backend::snapshot::{SnapshotDevice, SnapshotHandle};
use pci_host_bridge::backend::HostDevice;
use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::config::{PciConfig, PciDeviceConfig};
use pci_host_bridge::error::Error;
use pci_host_bridge::topology::PciAddress;

use crate::checker::Checker;
use crate::xen_like::{XenLike, XenLikeConfig, DOMID};

/// A `[[pci.device]]` entry for a snapshot device passed in memory to
/// [`bridge_with_snapshots`] (host function 0000:40:SLOT.FUNCTION at guest SLOT.FUNCTION).
pub fn snapshot_device_config(slot: u8, function: u8) -> PciDeviceConfig {
    PciDeviceConfig {
        host: PciAddress::new(0, 0x40, slot, function),
        slot,
        function,
        backend: pci_host_bridge::BackendKind::Snapshot,
        snapshot: Some("embedded".into()),
        intx: None,
        config_mirror: None,
    }
}

/// Build a bridge over snapshot devices with an executor over a default [`XenLike`], start it
/// (checking the start with [`Checker::check_start`]) and return it with its [`Checker`].
pub fn bridge_with_snapshots(
    config: &PciConfig,
    devices: Vec<SnapshotDevice>,
) -> Result<(PciHostBridge, Checker), Error> {
    bridge_with_xen(config, devices, XenLike::new(XenLikeConfig::default()))
}

/// [`bridge_with_snapshots`] with a fake Xen of the caller's.
pub fn bridge_with_xen(
    config: &PciConfig,
    devices: Vec<SnapshotDevice>,
    xen: XenLike,
) -> Result<(PciHostBridge, Checker), Error> {
    let (mut bridge, mut checker) = unstarted_bridge(config, devices, xen)?;
    let mut actions = Actions::new();
    bridge.start(&mut actions).map_err(Error::Config)?;
    checker
        .check_start(&bridge, 0, &[])
        .map_err(|e| Error::Config(format!("start: {e}")))?;
    checker.sync_logs();
    Ok((bridge, checker))
}

/// A started bridge over snapshot devices and a fake Xen, prepared once (placement, Linux's
/// bring-up, whatever a prologue does) and then copied for every run ([`Template::fork`]):
/// the fuzz targets' way to start each input from the same state without rebuilding and
/// replaying it. A copy is the template's exact state (bridge, executor, Xen, devices and
/// checker), with empty logs.
pub struct Template {
    bridge: PciHostBridge,
    checker: Checker,
    /// The devices as they went into the bridge (their static part), by guest address.
    protos: BTreeMap<PciAddress, SnapshotDevice>,
    xen: XenLikeConfig,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("bridge", &self.bridge)
            .field("xen", &self.xen)
            .finish_non_exhaustive()
    }
}

impl Template {
    /// [`bridge_with_xen`] over copies of `devices` and a fake Xen with knobs `xen` (no
    /// faults: a fault closure cannot be copied).
    pub fn new(
        config: &PciConfig,
        devices: &[SnapshotDevice],
        xen: XenLikeConfig,
    ) -> Result<Self, Error> {
        let protos = config
            .devices
            .iter()
            .zip(devices)
            .map(|(d, s)| (config.guest_address(d), s.duplicate()))
            .collect();
        let copies = devices.iter().map(SnapshotDevice::duplicate).collect();
        let (bridge, checker) = bridge_with_xen(config, copies, XenLike::new(xen))?;
        Ok(Template {
            bridge,
            checker,
            protos,
            xen,
        })
    }

    /// Perform a prologue on the template (replayed unchecked with
    /// [`Checker::apply_unchecked`], say); every copy made after starts from its end.
    pub fn prepare(&mut self, f: impl FnOnce(&mut PciHostBridge, &mut Checker)) {
        f(&mut self.bridge, &mut self.checker);
    }

    /// The template's bridge and checker (to check its state once, say).
    pub fn parts(&self) -> (&PciHostBridge, &Checker) {
        (&self.bridge, &self.checker)
    }

    /// A copy of the template: bridge, executor, fake Xen, devices and checker in the
    /// template's current state (with empty logs).
    pub fn fork(&self) -> Result<(PciHostBridge, Checker), Error> {
        let mut handles = BTreeMap::new();
        let mut backends: Vec<Box<dyn HostDevice>> = Vec::new();
        for f in self.bridge.functions() {
            let a = f.guest_address();
            let (Some(proto), Some(now)) = (self.protos.get(&a), self.checker.handle(a)) else {
                return Err(Error::Config(format!("{a}: no snapshot device to copy")));
            };
            let dev = proto.duplicate_with_state(now);
            handles.insert(a, dev.handle());
            backends.push(Box::new(dev));
        }
        let exec = match self.bridge.executor() {
            Some(e) => {
                let state = self.checker.xen().fork();
                let (chan, xen) = XenLike::new(self.xen).channel_over(DOMID, state);
                Some((e.fork(Box::new(chan)), xen))
            }
            None => None,
        };
        let (exec, xen) = match exec {
            Some((e, x)) => (Some(e), x),
            None => (None, Arc::new(Mutex::new(self.checker.xen().fork()))),
        };
        let bridge = self.bridge.fork(backends, exec)?;
        let checker = self.checker.fork(&handles, xen).map_err(Error::Config)?;
        Ok((bridge, checker))
    }
}

/// The bridge with its executor set but not started (for tests of the start itself).
pub fn unstarted_bridge(
    config: &PciConfig,
    devices: Vec<SnapshotDevice>,
    xen: XenLike,
) -> Result<(PciHostBridge, Checker), Error> {
    let handles: Vec<(PciAddress, SnapshotHandle)> = config
        .devices
        .iter()
        .zip(&devices)
        .map(|(d, s)| (config.guest_address(d), s.handle()))
        .collect();
    let backends: Vec<Box<dyn HostDevice>> = devices
        .into_iter()
        .map(|d| Box::new(d) as Box<dyn HostDevice>)
        .collect();
    let mut bridge = PciHostBridge::with_backends(config, backends)?;
    let (exec, xen) = xen.executor(DOMID);
    bridge.set_executor(exec);
    Ok((bridge, Checker::new(handles, xen)))
}
