//! The broker refuses what it must without executing anything, and executes what it
//! accepts exactly once.

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

fn mm(gfn: u64, mfn: u64, nr: u64) -> PtOp {
    PtOp::MemoryMapping {
        gfn,
        mfn,
        nr,
        add: true,
    }
}

const GFN: u64 = GUEST_MMIO.0 >> 12;

#[test]
fn refused_requests_reach_neither_xen_nor_the_device() {
    let mut r = rig();
    let vf = VF.sbdf();
    let legacy = LEGACY.sbdf();
    let vf_cmd = r.config_word(vf, crate::header::COMMAND);
    r.take_dev_log();
    let hypercalls = [
        // Another domid, with an op that would otherwise pass.
        Request::Hypercall {
            domid: DOMID + 1,
            op: mm(GFN, BAR0_MFN, 16),
        },
        Request::Hypercall {
            domid: 0,
            op: PtOp::GetDomainInfo,
        },
        // Host frames outside every BAR; one past the end of BAR0; straddling two BARs.
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, 0x1000, 1),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR0_MFN, 17),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR0_MFN + 15, 0x100_0000),
        },
        // The MSI-X table page, the PBA page, and a run over page 1 that reaches the PBA.
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR3_MFN, 1),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR3_MFN + 2, 1),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR3_MFN + 1, 2),
        },
        // The sub-page BAR's frame (it may hold another function's registers).
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, 0xFE000, 1),
        },
        // A good host run to guest frames outside the windows (dom0 RAM, the guest's RAM).
        Request::Hypercall {
            domid: DOMID,
            op: mm(0x100, BAR0_MFN, 16),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN + 0xFFFF, BAR0_MFN, 16),
        },
        // Ports outside the I/O BAR, and to guest ports outside the window.
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IoportMapping {
                gport: 0x6000,
                mport: 0x60,
                nr: 1,
                add: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IoportMapping {
                gport: 0x60,
                mport: 0xC000,
                nr: 0x100,
                add: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IomemPermission {
                mfn: 0xFEE00,
                nr: 1,
                allow: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IoportPermission {
                port: 0xCF8,
                nr: 8,
                allow: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IrqPermission {
                pirq: 9,
                allow: true,
            },
        },
        // Another device: assignment and a pirq for its SBDF.
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::AssignDevice { sbdf: OTHER },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::DeassignDevice {
                sbdf: OTHER,
                from_dom_io: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: OTHER,
                entry: 0,
                table_base: 0,
                nvec: 1,
            }),
        },
        // Beyond the VF's 5 MSI-X entries; a table_base that is not the BAR's address;
        // more MSI vectors than the legacy device has; MSI-X for a function without it.
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: vf,
                entry: 5,
                table_base: BAR3_MFN << 12,
                nvec: 1,
            }),
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: vf,
                entry: 0,
                table_base: (BAR3_MFN << 12) + 0x1000,
                nvec: 1,
            }),
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: legacy,
                entry: 0,
                table_base: 0,
                nvec: 32,
            }),
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: legacy,
                entry: 0,
                table_base: 0xFE00_0000,
                nvec: 1,
            }),
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::PrepareMsix { sbdf: legacy },
        },
        // Pirqs this broker never mapped (dom0's own devices' pirqs).
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::BindPtIrqMsi {
                pirq: 16,
                gvec: 0x30,
                gflags: 0,
                gtable: 0,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::UnmapPirq { pirq: 16 },
        },
    ];
    let device = [
        // Virtual registers: a BAR, the MSI-X table offset, the MSI address.
        Request::ConfigWrite {
            sbdf: vf,
            offset: 0x10,
            data: vec![0xFF; 4],
        },
        Request::ConfigWrite {
            sbdf: legacy,
            offset: 0x14,
            data: vec![0x00, 0x10, 0x00, 0xFE],
        },
        // Memory Space in the command register is the bridge's (host decode stays on).
        Request::ConfigWrite {
            sbdf: vf,
            offset: crate::header::COMMAND,
            data: (vf_cmd ^ crate::header::CMD_MEMORY).to_le_bytes().to_vec(),
        },
        // Unaligned, too wide, outside config space.
        Request::ConfigWrite {
            sbdf: vf,
            offset: 0x05,
            data: vec![0, 0],
        },
        Request::ConfigWrite {
            sbdf: vf,
            offset: 0x04,
            data: vec![0; 8],
        },
        Request::ConfigWrite {
            sbdf: legacy,
            offset: 0x100,
            data: vec![0],
        },
        // A function not assigned.
        Request::ConfigWrite {
            sbdf: OTHER,
            offset: 0x04,
            data: vec![0, 0],
        },
        Request::ConfigRead {
            sbdf: OTHER,
            offset: 0,
            len: 4,
        },
        Request::ConfigRead {
            sbdf: legacy,
            offset: 0xFC,
            len: 8,
        },
        // The host's MSI-X table and PBA; outside a BAR; unaligned.
        Request::BarWrite {
            sbdf: vf,
            bar: 3,
            offset: 0x10,
            data: vec![0; 4],
        },
        Request::BarWrite {
            sbdf: vf,
            bar: 3,
            offset: 0x2000,
            data: vec![0; 8],
        },
        Request::BarWrite {
            sbdf: legacy,
            bar: 6,
            offset: 0,
            data: vec![0; 4],
        },
        Request::BarRead {
            sbdf: vf,
            bar: 3,
            offset: 0x4000,
            len: 4,
        },
        Request::BarRead {
            sbdf: vf,
            bar: 0,
            offset: 0xFFFE,
            len: 4,
        },
        Request::BarRead {
            sbdf: vf,
            bar: 0,
            offset: 0,
            len: 3,
        },
        Request::BarRead {
            sbdf: vf,
            bar: 2,
            offset: 0,
            len: 4,
        },
        // Sysfs operations on a function not assigned.
        Request::Sysfs {
            sbdf: OTHER,
            op: SysfsOp::Reset,
        },
        Request::Sysfs {
            sbdf: OTHER,
            op: SysfsOp::DetachDriver,
        },
        Request::Sysfs {
            sbdf: OTHER,
            op: SysfsOp::EnableDecode,
        },
    ];
    let n = hypercalls.len() + device.len();
    for req in hypercalls.into_iter().chain(device) {
        let what = format!("{req:?}");
        let reply = r.ask(req);
        assert!(
            matches!(reply, Reply::Refused { .. }),
            "{what} must be refused, got {reply:?}"
        );
    }
    assert!(
        r.ops.lock().unwrap().is_empty(),
        "a refused hypercall reached Xen"
    );
    // The config-write checks read the current value; nothing else reached the device.
    let log = r.take_dev_log();
    assert!(
        log.iter().all(|l| l.starts_with("read_config")),
        "a refused request reached the device: {log:?}"
    );
    assert_eq!(r.broker.stats().refused, n as u64);
    assert_eq!(r.broker.stats().executed, 1, "only the first config read");
}

#[test]
fn accepted_requests_reach_it_exactly_once() {
    let mut r = rig();
    let vf = VF.sbdf();
    let legacy = LEGACY.sbdf();
    let gtable = GUEST_MMIO.0 + 0x10_0000;
    let accepted = vec![
        PtOp::TestAssignDevice { sbdf: vf },
        PtOp::PrepareMsix { sbdf: vf },
        PtOp::AssignDevice { sbdf: vf },
        PtOp::IomemPermission {
            mfn: BAR3_MFN,
            nr: 4,
            allow: true,
        },
        PtOp::IomemPermission {
            mfn: 0xFE000,
            nr: 1,
            allow: true,
        },
        PtOp::IoportPermission {
            port: 0xC000,
            nr: 0x100,
            allow: true,
        },
        mm(GFN, BAR0_MFN, 16),
        mm(GFN + 0x101, BAR3_MFN + 1, 1),
        mm(GFN + 0x103, BAR3_MFN + 3, 1),
        PtOp::IoportMapping {
            gport: 0x6000,
            mport: 0xC000,
            nr: 0x100,
            add: true,
        },
        PtOp::MapPirqMsi(MsiMap {
            sbdf: vf,
            entry: 4,
            table_base: BAR3_MFN << 12,
            nvec: 1,
        }),
        PtOp::BindPtIrqMsi {
            pirq: 104,
            gvec: 0x40,
            gflags: 0,
            gtable,
        },
        PtOp::MapPirqMsi(MsiMap {
            sbdf: legacy,
            entry: 0,
            table_base: 0,
            nvec: 1,
        }),
        PtOp::BindPtIrqMsi {
            pirq: 100,
            gvec: 0x41,
            gflags: 0,
            gtable: 0,
        },
        PtOp::UnbindPtIrqMsi {
            pirq: 104,
            gvec: 0x40,
            gflags: 0,
            gtable,
        },
        PtOp::UnmapPirq { pirq: 104 },
        PtOp::GetDomainInfo,
        PtOp::DeassignDevice {
            sbdf: vf,
            from_dom_io: true,
        },
        PtOp::ReleaseMsix { sbdf: vf },
    ];
    for op in &accepted {
        let reply = r.hc(op.clone());
        assert!(
            matches!(reply, Reply::Value { .. }),
            "{op:?} must be executed, got {reply:?}"
        );
    }
    assert_eq!(
        *r.ops.lock().unwrap(),
        accepted,
        "each accepted op exactly once"
    );
    // The unmapped pirq is no longer the guest's; a second map of a mapped entry is refused.
    assert!(matches!(
        r.hc(PtOp::BindPtIrqMsi {
            pirq: 104,
            gvec: 0x40,
            gflags: 0,
            gtable,
        }),
        Reply::Refused { .. }
    ));
    assert!(matches!(
        r.hc(PtOp::MapPirqMsi(MsiMap {
            sbdf: legacy,
            entry: 0,
            table_base: 0,
            nvec: 1,
        })),
        Reply::Refused { .. }
    ));
    assert_eq!(r.ops.lock().unwrap().len(), accepted.len());

    // Config writes the bridge makes: Bus Master (passes through), Interrupt Disable
    // (the bridge's), MSI-X Enable + Function Mask (the bridge's), MSI Enable.
    let cmd = r.config_word(vf, crate::header::COMMAND);
    let msix_cap = r.broker_policy_msix_cap(vf);
    let msix_ctl = r.config_word(vf, msix_cap + 2);
    let msi_cap = r.broker_policy_msi_cap(legacy);
    let msi_ctl = r.config_word(legacy, msi_cap + 2);
    r.take_dev_log();
    let writes = [
        (
            vf,
            crate::header::COMMAND,
            cmd | crate::header::CMD_MASTER | crate::header::CMD_INTX_DISABLE,
        ),
        (
            vf,
            msix_cap + 2,
            msix_ctl | crate::msix::FLAGS_ENABLE | crate::msix::FLAGS_MASKALL,
        ),
        (legacy, msi_cap + 2, msi_ctl | crate::msi::FLAGS_ENABLE),
    ];
    let mut want = Vec::new();
    for (sbdf, off, v) in writes {
        let data = v.to_le_bytes().to_vec();
        let reply = r.ask(Request::ConfigWrite {
            sbdf,
            offset: off,
            data: data.clone(),
        });
        assert!(matches!(reply, Reply::Value { .. }), "{reply:?}");
        want.push(format!("read_config {off:#x} 2"));
        want.push(format!("write_config {off:#x} {data:02x?}"));
    }
    let reply = r.ask(Request::Sysfs {
        sbdf: vf,
        op: SysfsOp::Reset,
    });
    assert!(matches!(reply, Reply::Sysfs { .. }), "{reply:?}");
    want.push("reset".into());
    let reply = r.ask(Request::BarRead {
        sbdf: vf,
        bar: 3,
        offset: 0x2000,
        len: 8,
    });
    assert!(matches!(reply, Reply::Bytes { .. }), "{reply:?}");
    want.push("read_bar 3 0x2000 8".into());
    assert_eq!(r.take_dev_log(), want);
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

#[test]
fn another_version_and_garbage_get_one_refusal_each() {
    let mut r = rig();
    let msg = br#"{"version":2,"seq":9,"req":{"kind":"something_new"}}"#;
    let reply: Reply = proto::decode(&r.broker.handle_message(msg)).unwrap();
    assert!(
        matches!(&reply, Reply::Refused { seq: 9, reason } if reason.contains("version 2")),
        "{reply:?}"
    );
    let reply: Reply = proto::decode(&r.broker.handle_message(b"\x00\xff")).unwrap();
    assert!(matches!(reply, Reply::Refused { seq: 0, .. }), "{reply:?}");
    assert!(r.ops.lock().unwrap().is_empty());
}

/// The worker's executor and backend over a real socketpair, the broker in another thread
/// (as it will be another process), until the worker closes its end.
#[test]
fn worker_and_broker_over_a_socketpair() {
    let (worker_end, broker_end) = seqpacket::pair().unwrap();
    let broker = std::thread::spawn(move || {
        let mut r = rig();
        r.broker
            .serve(std::os::fd::AsFd::as_fd(&broker_end))
            .expect("serve until EOF");
        let ops = r.ops.lock().unwrap().clone();
        (ops, r.broker.stats(), r.take_dev_log())
    });
    let client = Arc::new(BrokerClient::new(worker_end));
    let mut exec = PassthroughExecutor::new(Box::new(BrokerChannel::new(client.clone(), DOMID)));
    exec.map_memory(GFN, BAR0_MFN, 16).expect("a BAR maps");
    let e = exec
        .map_memory(GFN + 0x100, BAR3_MFN, 1)
        .expect_err("the MSI-X table page is refused");
    assert!(matches!(e, PtError::Channel { .. }), "{e:?}");
    let pirq = exec
        .bind_msi(MsiBind {
            sbdf: VF.sbdf(),
            entry: 1,
            table_base: BAR3_MFN << 12,
            nvec: 1,
            gvec: 0x50,
            gflags: 0,
            gtable: GUEST_MMIO.0 + 0x10_0000,
        })
        .expect("bind");
    assert_eq!(pirq, 101);
    exec.unbind_msi(VF.sbdf(), 1).expect("unbind");
    let snap = snapshot(VF);
    let mut dev = BrokerDevice::new(client.clone(), VF, DeviceFacts::of(&snap));
    let mut direct = vec![0u8; 256];
    let mut brokered = vec![0u8; 256];
    snap.read_config(0, &mut direct).unwrap();
    dev.read_config(0, &mut brokered).unwrap();
    assert_eq!(direct, brokered);
    assert!(
        dev.write_config(0x10, &[0xFF; 4]).is_err(),
        "a BAR register is virtual"
    );
    crate::backend::set_interrupt_disable(&mut dev, true).expect("INTx Disable is the bridge's");
    drop((exec, dev, client));
    let (ops, stats, log) = broker.join().expect("the broker ends at EOF");
    assert_eq!(
        ops,
        vec![
            mm(GFN, BAR0_MFN, 16),
            PtOp::MapPirqMsi(MsiMap {
                sbdf: VF.sbdf(),
                entry: 1,
                table_base: BAR3_MFN << 12,
                nvec: 1
            }),
            PtOp::BindPtIrqMsi {
                pirq: 101,
                gvec: 0x50,
                gflags: 0,
                gtable: GUEST_MMIO.0 + 0x10_0000
            },
            PtOp::UnbindPtIrqMsi {
                pirq: 101,
                gvec: 0x50,
                gflags: 0,
                gtable: GUEST_MMIO.0 + 0x10_0000
            },
            PtOp::UnmapPirq { pirq: 101 },
        ]
    );
    assert_eq!(stats.refused, 2);
    assert_eq!(
        log.iter().filter(|l| l.starts_with("write_config")).count(),
        1,
        "{log:?}"
    );
}

/// What a worker sets up for the VF (the lifecycle's start, a mapped BAR, a bound MSI-X
/// vector, Bus Master and MSI-X Enable in the host), through the broker. Its ops are listed
/// in full, like `accepted_requests_reach_it_exactly_once`'s, on purpose: what each test
/// sends stays in view.
fn set_up_vf(r: &mut Rig) -> u64 {
    let vf = VF.sbdf();
    assert!(matches!(
        r.ask(Request::Sysfs {
            sbdf: vf,
            op: SysfsOp::EnableDecode
        }),
        Reply::Sysfs { .. }
    ));
    let gtable = GUEST_MMIO.0 + 0x10_0000;
    for op in [
        PtOp::PrepareMsix { sbdf: vf },
        PtOp::AssignDevice { sbdf: vf },
        PtOp::IomemPermission {
            mfn: BAR0_MFN,
            nr: 16,
            allow: true,
        },
        mm(GFN, BAR0_MFN, 16),
        PtOp::MapPirqMsi(MsiMap {
            sbdf: vf,
            entry: 2,
            table_base: BAR3_MFN << 12,
            nvec: 1,
        }),
        PtOp::BindPtIrqMsi {
            pirq: 102,
            gvec: 0x60,
            gflags: 0,
            gtable,
        },
    ] {
        assert!(matches!(r.hc(op), Reply::Value { .. }));
    }
    let cmd = r.config_word(vf, crate::header::COMMAND);
    let cap = r.broker_policy_msix_cap(vf);
    let ctl = r.config_word(vf, cap + 2);
    for (off, v) in [
        (crate::header::COMMAND, cmd | crate::header::CMD_MASTER),
        (cap + 2, ctl | crate::msix::FLAGS_ENABLE),
    ] {
        let reply = r.ask(Request::ConfigWrite {
            sbdf: vf,
            offset: off,
            data: v.to_le_bytes().to_vec(),
        });
        assert!(matches!(reply, Reply::Value { .. }), "{reply:?}");
    }
    r.ops.lock().unwrap().clear();
    r.take_dev_log();
    gtable
}

fn deassign(sbdf: u32, from_dom_io: bool) -> PtOp {
    PtOp::DeassignDevice { sbdf, from_dom_io }
}

/// The hypercalls of a worker's teardown of what [`set_up_vf`] set up (the MSI-X table at
/// `gtable`), in order.
fn vf_teardown(gtable: u64) -> Vec<PtOp> {
    let vf = VF.sbdf();
    vec![
        PtOp::MemoryMapping {
            gfn: GFN,
            mfn: BAR0_MFN,
            nr: 16,
            add: false,
        },
        PtOp::UnbindPtIrqMsi {
            pirq: 102,
            gvec: 0x60,
            gflags: 0,
            gtable,
        },
        PtOp::UnmapPirq { pirq: 102 },
        PtOp::ReleaseMsix { sbdf: vf },
        deassign(vf, false),
        deassign(vf, true),
        PtOp::IomemPermission {
            mfn: BAR0_MFN,
            nr: 16,
            allow: false,
        },
    ]
}

#[test]
fn a_worker_gone_without_its_teardown_is_handed_back_by_the_broker() {
    let mut r = rig();
    let gtable = set_up_vf(&mut r);
    let vf = VF.sbdf();
    let cap = r.broker_policy_msix_cap(vf);
    let Rig {
        broker,
        ops,
        dev_log,
        ..
    } = r;
    let errs = broker.hand_back();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        *ops.lock().unwrap(),
        [vec![PtOp::GetDomainInfo], vf_teardown(gtable)].concat()
    );
    let log = dev_log.lock().unwrap().clone();
    let writes: Vec<&String> = log
        .iter()
        .filter(|l| !l.starts_with("read_config"))
        .collect();
    assert_eq!(writes.len(), 4, "{log:?}");
    assert!(writes[0].starts_with("write_config 0x4 "), "{log:?}");
    assert!(
        writes[1].starts_with(&format!("write_config {:#x} ", cap + 2)),
        "{log:?}"
    );
    assert_eq!(writes[2..], ["reset", "disable_decode"]);
}

#[test]
fn after_a_clean_teardown_the_broker_has_nothing_to_hand_back() {
    let mut r = rig();
    let gtable = set_up_vf(&mut r);
    let vf = VF.sbdf();
    for op in vf_teardown(gtable) {
        assert!(matches!(r.hc(op), Reply::Value { .. }));
    }
    assert!(matches!(
        r.ask(Request::Sysfs {
            sbdf: vf,
            op: SysfsOp::DisableDecode
        }),
        Reply::Sysfs { .. }
    ));
    assert!(r.broker.ledger().is_empty(), "{:?}", r.broker.ledger());
    r.ops.lock().unwrap().clear();
    let ops = r.ops.clone();
    assert!(r.broker.hand_back().is_empty());
    assert!(ops.lock().unwrap().is_empty());
}

#[test]
fn with_the_domain_gone_only_dom0s_side_is_handed_back() {
    let dead = std::sync::atomic::AtomicBool::new(false);
    let dead = Arc::new(dead);
    let d = dead.clone();
    let mut r = rig_with(FakeChannel::with_rule(
        DOMID,
        Box::new(move |op| match op {
            PtOp::MapPirqMsi(m) => Ok(100 + u64::from(m.entry)),
            PtOp::GetDomainInfo if d.load(std::sync::atomic::Ordering::Relaxed) => Err(libc::ESRCH),
            PtOp::GetDomainInfo => Ok(256 * 256),
            // Quarantined when the domain died: only dom_io gives it back.
            PtOp::DeassignDevice {
                from_dom_io: false, ..
            } if d.load(std::sync::atomic::Ordering::Relaxed) => Err(libc::EINVAL),
            _ => Ok(0),
        }),
    ));
    set_up_vf(&mut r);
    dead.store(true, std::sync::atomic::Ordering::Relaxed);
    let vf = VF.sbdf();
    let ops = r.ops.clone();
    let errs = r.broker.hand_back();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        *ops.lock().unwrap(),
        vec![
            PtOp::GetDomainInfo,
            PtOp::ReleaseMsix { sbdf: vf },
            deassign(vf, false),
            deassign(vf, true),
        ]
    );
}
