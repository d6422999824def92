//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use ioreq_server::device::{Action, Actions, Device, Space};
use pci_host_bridge::backend::snapshot::{SnapshotDevice, SnapshotHandle};
use pci_host_bridge::{HostDevice, PciAddress, PciConfig, PciDeviceConfig, PciHostBridge};

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

pub fn snapshot(name: &str) -> SnapshotDevice {
    SnapshotDevice::open(&testdata(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn dev_cfg(slot: u8, function: u8) -> PciDeviceConfig {
    pci_host_bridge::testing::snapshot_device_config(slot, function)
}

/// A bridge with one snapshot device at 00:02.0.
pub struct One {
    pub bridge: PciHostBridge,
    pub handle: SnapshotHandle,
    pub addr: PciAddress,
}

pub fn one(name: &str) -> One {
    one_dev(snapshot(name))
}

pub fn one_dev(dev: SnapshotDevice) -> One {
    let handle = dev.handle();
    let config = PciConfig {
        devices: vec![dev_cfg(2, 0)],
        ..Default::default()
    };
    let bridge =
        PciHostBridge::with_backends(&config, vec![Box::new(dev) as Box<dyn HostDevice>]).unwrap();
    One {
        bridge,
        handle,
        addr: PciAddress::new(0, 0, 2, 0),
    }
}

impl One {
    pub fn cfg_addr(&self, reg: u16) -> u64 {
        u64::from(self.addr.sbdf()) << 32 | u64::from(reg)
    }

    /// CF8/CFC read.
    pub fn rd(&mut self, reg: u16, size: u8) -> u64 {
        let a = self.cfg_addr(reg);
        let mut act = Actions::new();
        let v = self.bridge.read(Space::PciConfig, a, size, &mut act);
        assert!(act.is_empty());
        v & mask(size)
    }

    /// CF8/CFC write, returning the actions.
    pub fn wr(&mut self, reg: u16, size: u8, data: u64) -> Vec<Action> {
        let a = self.cfg_addr(reg);
        let mut act = Actions::new();
        self.bridge
            .write(Space::PciConfig, a, size, data & mask(size), &mut act);
        act.drain().collect()
    }

    /// ECAM read.
    pub fn ecam_rd(&mut self, reg: u16, size: u8) -> u64 {
        let a = self.bridge.ecam().encode(self.addr, reg).unwrap();
        let mut act = Actions::new();
        self.bridge.read(Space::Memory, a, size, &mut act) & mask(size)
    }

    /// ECAM write.
    pub fn ecam_wr(&mut self, reg: u16, size: u8, data: u64) -> Vec<Action> {
        let a = self.bridge.ecam().encode(self.addr, reg).unwrap();
        let mut act = Actions::new();
        self.bridge
            .write(Space::Memory, a, size, data & mask(size), &mut act);
        act.drain().collect()
    }

    pub fn mmio_rd(&mut self, addr: u64, size: u8) -> u64 {
        let mut act = Actions::new();
        self.bridge.read(Space::Memory, addr, size, &mut act) & mask(size)
    }

    pub fn mmio_wr(&mut self, addr: u64, size: u8, data: u64) {
        let mut act = Actions::new();
        self.bridge
            .write(Space::Memory, addr, size, data & mask(size), &mut act);
        assert!(act.is_empty());
    }

    /// Device config dword as the device has it now.
    pub fn dev_dword(&self, off: usize) -> u32 {
        let c = self.handle.config();
        u32::from_le_bytes([c[off], c[off + 1], c[off + 2], c[off + 3]])
    }
}

pub fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

/// A bridge with one snapshot device at guest 00:SLOT.0, host function `host`.
pub fn one_at(dev: SnapshotDevice, host: PciAddress, slot: u8) -> One {
    let handle = dev.handle();
    let config = PciConfig {
        devices: vec![PciDeviceConfig {
            host,
            ..dev_cfg(slot, 0)
        }],
        ..Default::default()
    };
    let bridge =
        PciHostBridge::with_backends(&config, vec![Box::new(dev) as Box<dyn HostDevice>]).unwrap();
    One {
        bridge,
        handle,
        addr: PciAddress::new(0, 0, slot, 0),
    }
}

impl One {
    /// MMIO write, returning the actions.
    pub fn mmio_wr_act(&mut self, addr: u64, size: u8, data: u64) -> Vec<Action> {
        let mut act = Actions::new();
        self.bridge
            .write(Space::Memory, addr, size, data & mask(size), &mut act);
        act.drain().collect()
    }

    /// The function under test.
    pub fn func(&self) -> &pci_host_bridge::function::PassthroughFunction {
        self.bridge.function(self.addr).unwrap()
    }
}

/// A scratch directory (a fake sysfs tree), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("pci-host-bridge-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
