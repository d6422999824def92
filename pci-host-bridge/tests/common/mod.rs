//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ioreq_server::device::{Actions, Device, Space};
use pci_host_bridge::backend::snapshot::{SnapshotDevice, SnapshotHandle};
use pci_host_bridge::{HostDevice, PciAddress, PciConfig, PciDeviceConfig, PciHostBridge};
use pci_host_bridge_testing::{lock, XenLike, XenLikeConfig, XenState, DOMID};
use xen_abi::passthrough::PtOp;

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

pub fn snapshot(name: &str) -> SnapshotDevice {
    SnapshotDevice::open(&testdata(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn dev_cfg(slot: u8, function: u8) -> PciDeviceConfig {
    pci_host_bridge_testing::snapshot_device_config(slot, function)
}

/// A started bridge with one snapshot device, over the fake Xen; the start's calls and device
/// writes are already consumed (see [`One::start_ops`]).
pub struct One {
    pub bridge: PciHostBridge,
    pub handle: SnapshotHandle,
    pub addr: PciAddress,
    pub xen: Arc<Mutex<XenState>>,
    /// Calls of the fake Xen already returned by the helpers.
    pub seen: usize,
    /// The calls the start made.
    pub start_ops: Vec<PtOp>,
}

pub fn one(name: &str) -> One {
    one_dev(snapshot(name))
}

pub fn one_dev(dev: SnapshotDevice) -> One {
    one_at(dev, dev_cfg(2, 0).host, 2)
}

/// A bridge with one snapshot device at guest 00:SLOT.0, host function `host`, started over a
/// default fake Xen.
pub fn one_at(dev: SnapshotDevice, host: PciAddress, slot: u8) -> One {
    one_with(
        dev,
        host,
        slot,
        PciConfig::default(),
        XenLikeConfig::default(),
    )
}

/// [`one_at`] with a `[pci]` base config (its devices are replaced) and Xen knobs of the
/// caller's.
pub fn one_with(
    dev: SnapshotDevice,
    host: PciAddress,
    slot: u8,
    base: PciConfig,
    xen: XenLikeConfig,
) -> One {
    let mut t = unstarted(dev, host, slot, base, XenLike::new(xen));
    let mut a = Actions::new();
    t.bridge.start(&mut a).expect("start");
    assert!(a.is_empty());
    t.start_ops = t.ops();
    t.handle.clear_writes();
    t
}

/// The bridge with its executor set but not started.
pub fn unstarted(
    dev: SnapshotDevice,
    host: PciAddress,
    slot: u8,
    base: PciConfig,
    xen: XenLike,
) -> One {
    let handle = dev.handle();
    let config = PciConfig {
        devices: vec![PciDeviceConfig {
            host,
            ..dev_cfg(slot, 0)
        }],
        ..base
    };
    let mut bridge =
        PciHostBridge::with_backends(&config, vec![Box::new(dev) as Box<dyn HostDevice>]).unwrap();
    let (exec, xen) = xen.executor(DOMID);
    bridge.set_executor(exec);
    One {
        bridge,
        handle,
        addr: PciAddress::new(0, 0, slot, 0),
        xen,
        seen: 0,
        start_ops: Vec::new(),
    }
}

impl One {
    pub fn cfg_addr(&self, reg: u16) -> u64 {
        u64::from(self.addr.sbdf()) << 32 | u64::from(reg)
    }

    /// The calls made since the last helper returned them.
    pub fn ops(&mut self) -> Vec<PtOp> {
        let x = lock(&self.xen);
        let v: Vec<PtOp> = x.log[self.seen..].iter().map(|l| l.op.clone()).collect();
        self.seen = x.log.len();
        assert!(x.violations.is_empty(), "{:?}", x.violations);
        v
    }

    /// CF8/CFC read.
    pub fn rd(&mut self, reg: u16, size: u8) -> u64 {
        let a = self.cfg_addr(reg);
        let mut act = Actions::new();
        let v = self.bridge.read(Space::PciConfig, a, size, &mut act);
        assert!(act.is_empty());
        assert!(self.ops().is_empty(), "a read made hypercalls");
        v & mask(size)
    }

    /// CF8/CFC write, returning the hypercalls it made.
    pub fn wr(&mut self, reg: u16, size: u8, data: u64) -> Vec<PtOp> {
        let a = self.cfg_addr(reg);
        let mut act = Actions::new();
        self.bridge
            .write(Space::PciConfig, a, size, data & mask(size), &mut act);
        assert!(act.is_empty());
        self.ops()
    }

    /// ECAM read.
    pub fn ecam_rd(&mut self, reg: u16, size: u8) -> u64 {
        let a = self.bridge.ecam().encode(self.addr, reg).unwrap();
        let mut act = Actions::new();
        self.bridge.read(Space::Memory, a, size, &mut act) & mask(size)
    }

    /// ECAM write, returning the hypercalls.
    pub fn ecam_wr(&mut self, reg: u16, size: u8, data: u64) -> Vec<PtOp> {
        let a = self.bridge.ecam().encode(self.addr, reg).unwrap();
        let mut act = Actions::new();
        self.bridge
            .write(Space::Memory, a, size, data & mask(size), &mut act);
        self.ops()
    }

    pub fn mmio_rd(&mut self, addr: u64, size: u8) -> u64 {
        let mut act = Actions::new();
        let v = self.bridge.read(Space::Memory, addr, size, &mut act) & mask(size);
        assert!(self.ops().is_empty(), "an MMIO read made hypercalls");
        v
    }

    pub fn mmio_wr(&mut self, addr: u64, size: u8, data: u64) {
        assert!(self.mmio_wr_act(addr, size, data).is_empty());
    }

    /// MMIO write, returning the hypercalls.
    pub fn mmio_wr_act(&mut self, addr: u64, size: u8, data: u64) -> Vec<PtOp> {
        let mut act = Actions::new();
        self.bridge
            .write(Space::Memory, addr, size, data & mask(size), &mut act);
        assert!(act.is_empty());
        self.ops()
    }

    /// Device config dword as the device has it now.
    pub fn dev_dword(&self, off: usize) -> u32 {
        let c = self.handle.config();
        u32::from_le_bytes([c[off], c[off + 1], c[off + 2], c[off + 3]])
    }

    /// Device config word as the device has it now.
    pub fn dev_word(&self, off: usize) -> u16 {
        let c = self.handle.config();
        u16::from_le_bytes([c[off], c[off + 1]])
    }

    /// The function under test.
    pub fn func(&self) -> &pci_host_bridge::function::PassthroughFunction {
        self.bridge.function(self.addr).unwrap()
    }

    /// Stop the bridge; the calls it made.
    pub fn stop(&mut self) -> Vec<PtOp> {
        let mut a = Actions::new();
        self.bridge.stop(&mut a);
        assert!(a.is_empty());
        self.ops()
    }
}

pub fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

/// `memory_mapping` calls merged into the runs the bridge asked for: a call that continues
/// the previous one (the executor looping over Xen's partial counts) joins it. Other calls
/// are dropped.
pub fn runs(ops: &[PtOp]) -> Vec<(u64, u64, u64, bool)> {
    let mut out: Vec<(u64, u64, u64, bool)> = Vec::new();
    for o in ops {
        if let PtOp::MemoryMapping { gfn, mfn, nr, add } = *o {
            // A continuation starts 64 frames (Xen's partial count) after the previous call
            // and asks for the rest.
            if let Some(l) = out.last_mut() {
                let done = gfn.wrapping_sub(l.0);
                if l.3 == add && done > 0 && done < l.2 && mfn == l.1 + done && done + nr == l.2 {
                    continue;
                }
            }
            out.push((gfn, mfn, nr, add));
        }
    }
    out
}

/// A `memory_mapping` run as [`runs`] gives it.
pub fn mem(gfn: u64, mfn: u64, nr: u64, add: bool) -> (u64, u64, u64, bool) {
    (gfn, mfn, nr, add)
}

/// The names of the calls (`map_pirq_msi`, ...), as the ops serialise.
///
/// The same few lines stand in the library's own unit tests (src/binding.rs) and in
/// ioreq-server's and xen-abi's: deliberate, as integration tests cannot reach a `#[cfg(test)]`
/// helper and those crates share no test-only crate.
pub fn names(ops: &[PtOp]) -> Vec<String> {
    ops.iter()
        .map(|o| {
            serde_json::to_value(o).unwrap()["op"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// An in-process IOAPIC side of the irq_line protocol and a line registered on `pin`.
pub fn ioapic_line(pin: u8) -> (irq_line::IrqLineServer, irq_line::IrqLine) {
    use irq_line::{IrqLine, IrqLineServer};
    let mut srv = IrqLineServer::unbound(24).unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    srv.adopt(a).unwrap();
    let reg =
        std::thread::spawn(move || IrqLine::register_on(b, pin, std::time::Duration::from_secs(5)));
    let mut changes = Vec::new();
    while !reg.is_finished() {
        for fd in srv.fds() {
            srv.handle(fd, &mut changes);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    (srv, reg.join().unwrap().unwrap())
}

/// A scratch directory (a fake sysfs tree), removed on drop.
///
/// pvh-dm/tests/common has its own, on purpose: the two crates share no test-only crate,
/// and a scratch directory is not worth making one for.
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
