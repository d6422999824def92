//! The broker refuses what it must without executing anything, and executes what it
//! accepts exactly once.
//!
//! This file holds the rig (the broker over the VF and the legacy NIC, a recording fake Xen
//! channel and recording backends); the tests are in `refusals` (what is refused reaches
//! neither Xen nor the device), `accepted` (what is accepted is executed exactly once, also
//! over a socketpair) and `hand_back` (what the broker hands back when a worker is gone).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ioreq_server::executor::fake::FakeChannel;
use ioreq_server::executor::{MsiBind, PassthroughExecutor, PtError};
use ioreq_server::seqpacket;
use xen_abi::passthrough::{MsiMap, PtOp};

use super::*;
use crate::backend::snapshot::SnapshotDevice;
use crate::backend::{BarInfo, HostDevice};
use crate::config::Windows;
use crate::error::Error;
use crate::function::PassthroughFunction;
use crate::topology::PciAddress;

mod accepted;
mod hand_back;
mod refusals;

const DOMID: u16 = 7;
/// The VF: BAR0 0x38_0002_0000 (64 KiB), BAR3 0x38_0010_8000 (16 KiB) with the MSI-X
/// table (5 entries) on its page 0 and the PBA on its page 2.
const VF: PciAddress = PciAddress::from_sbdf(0x0000_0312);
/// The legacy NIC: BAR0 I/O 0xC000 (256 ports), BAR1 sub-page at 0xFE00_0000, 32-bit MSI.
const LEGACY: PciAddress = PciAddress::from_sbdf(0x0000_0500);
/// A host function not assigned to the guest.
const OTHER: u32 = 0x0000_00C8;
const BAR0_MFN: u64 = 0x0380_0020;
const BAR3_MFN: u64 = 0x0380_0108;
const GUEST_MMIO: (u64, u64) = (0xE000_0000, 0xEFFF_FFFF);

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn windows() -> Windows {
    Windows {
        mmio: vec![GUEST_MMIO],
        io: Some((0x6000, 0x6FFF)),
    }
}

fn snapshot(addr: PciAddress) -> SnapshotDevice {
    let file = if addr == VF {
        "sriov-nic-vf.json"
    } else {
        "legacy-io-msi.json"
    };
    SnapshotDevice::open_at(&testdata(file), Some(addr)).expect("fixture")
}

/// Every call that reaches the backend, by name.
#[derive(Debug)]
struct Recording {
    inner: SnapshotDevice,
    log: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

impl HostDevice for Recording {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn config_len(&self) -> usize {
        self.inner.config_len()
    }
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), Error> {
        self.note(format!("read_config {offset:#x} {}", buf.len()));
        self.inner.read_config(offset, buf)
    }
    fn write_config(&mut self, offset: u16, data: &[u8]) -> Result<(), Error> {
        self.note(format!("write_config {offset:#x} {data:02x?}"));
        self.inner.write_config(offset, data)
    }
    fn ids(&self) -> (u16, u16) {
        self.inner.ids()
    }
    fn bar(&self, index: usize) -> Option<BarInfo> {
        self.inner.bar(index)
    }
    fn rom(&self) -> Option<BarInfo> {
        self.inner.rom()
    }
    fn read_bar(&self, index: u8, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.note(format!("read_bar {index} {offset:#x} {}", buf.len()));
        self.inner.read_bar(index, offset, buf)
    }
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.note(format!("write_bar {index} {offset:#x} {data:02x?}"));
        self.inner.write_bar(index, offset, data)
    }
    fn enable_decode(&mut self) -> Result<(), Error> {
        self.note("enable_decode".into());
        self.inner.enable_decode()
    }
    fn disable_decode(&mut self) -> Result<(), Error> {
        self.note("disable_decode".into());
        self.inner.disable_decode()
    }
    fn reset(&mut self) -> Result<bool, Error> {
        self.note("reset".into());
        self.inner.reset()
    }
    fn reprobe_host_driver(&mut self) -> Result<(), Error> {
        self.note("reprobe".into());
        self.inner.reprobe_host_driver()
    }
    fn detach_host_driver(&mut self) -> Result<Option<String>, Error> {
        self.note("detach".into());
        self.inner.detach_host_driver()
    }
}

struct Rig {
    broker: Broker,
    ops: Arc<Mutex<Vec<PtOp>>>,
    dev_log: Arc<Mutex<Vec<String>>>,
    seq: u64,
}

/// The policy from the bridge's own view of the two functions (built as the bridge builds
/// them), and a broker over a recording channel and recording backends.
fn rig() -> Rig {
    rig_with(FakeChannel::new(DOMID))
}

fn rig_with((chan, ops): (FakeChannel, Arc<Mutex<Vec<PtOp>>>)) -> Rig {
    let functions = [VF, LEGACY]
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let f = PassthroughFunction::new(
                PciAddress::new(0, 0, 2 + i as u8, 0),
                a,
                Box::new(snapshot(a)),
                windows(),
                false,
            )
            .expect("function");
            AssignedFunction::of(&f)
        })
        .collect();
    let policy = BrokerPolicy::new(DOMID, windows(), functions);
    let dev_log = Arc::new(Mutex::new(Vec::new()));
    let devices: Vec<(PciAddress, Box<dyn HostDevice>)> = [VF, LEGACY]
        .iter()
        .map(|&a| {
            let d: Box<dyn HostDevice> = Box::new(Recording {
                inner: snapshot(a),
                log: dev_log.clone(),
            });
            (a, d)
        })
        .collect();
    Rig {
        broker: Broker::new(policy, Box::new(chan), devices).expect("broker"),
        ops,
        dev_log,
        seq: 0,
    }
}

impl Rig {
    fn ask(&mut self, req: Request) -> Reply {
        self.seq += 1;
        let r = self.broker.handle(Envelope {
            version: VERSION,
            seq: self.seq,
            req,
        });
        assert_eq!(r.seq(), self.seq, "every reply answers its request");
        r
    }

    fn hc(&mut self, op: PtOp) -> Reply {
        self.ask(Request::Hypercall { domid: DOMID, op })
    }

    fn config_word(&mut self, sbdf: u32, offset: u16) -> u16 {
        match self.ask(Request::ConfigRead {
            sbdf,
            offset,
            len: 2,
        }) {
            Reply::Bytes { data, .. } => u16::from_le_bytes([data[0], data[1]]),
            r => panic!("config read: {r:?}"),
        }
    }

    fn take_dev_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.dev_log.lock().unwrap())
    }
}

impl Rig {
    fn broker_policy_msix_cap(&self, sbdf: u32) -> u16 {
        self.policy_fn(sbdf).msix.expect("MSI-X").cap
    }
    fn broker_policy_msi_cap(&self, sbdf: u32) -> u16 {
        self.policy_fn(sbdf).msi.expect("MSI").0
    }
    fn policy_fn(&self, sbdf: u32) -> AssignedFunction {
        let f = PassthroughFunction::new(
            PciAddress::new(0, 0, 2, 0),
            PciAddress::from_sbdf(sbdf),
            Box::new(snapshot(PciAddress::from_sbdf(sbdf))),
            windows(),
            false,
        )
        .expect("function");
        AssignedFunction::of(&f)
    }
}

fn mm(gfn: u64, mfn: u64, nr: u64) -> PtOp {
    PtOp::MemoryMapping {
        gfn,
        mfn,
        nr,
        add: true,
    }
}

const GFN: u64 = GUEST_MMIO.0 >> 12;
