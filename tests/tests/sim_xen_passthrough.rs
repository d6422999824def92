//! Xen 4.17's passthrough rules as a device model sees them through its sim transport
//! connection (xen-sim's `passthrough` module has the rules and their Xen source lines):
//! - memory_mapping does 64 frames per call and says so; unmap of any sub-range; mapped
//!   frames reach the device's BAR without an ioreq; a different mfn over a mapping crashes
//!   the guest;
//! - MSI-X map_pirq without prepare_msix is ENODATA; a table_base that is not the BAR base is
//!   recorded as Xen's WARN;
//! - no IOMMU context: assign EOPNOTSUPP, bind ESRCH;
//! - the domain's death quarantines its functions; deassign from dom_io hands them back;
//!   getdomaininfo of the dead domain is ESRCH;
//! - a restricted connection may issue no passthrough hypercall, a second one may;
//! - once an entry is bound, Xen's msixtbl keeps the guest's mask writes from the device
//!   model, forwards address/data writes and the unmask that follows them;
//! - a bound interrupt reaches the guest only with the device's MSI-X Enable set;
//! - and two scenarios a pci-host-bridge must pass on these rules (the workspace's, or the
//!   binary `PVH_DM_BRIDGE` names, e.g. one built from 99d563d, which fails them): the demo's
//!   VF with MSI-X, and a BAR longer than 64 frames.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ioreq_server::transport::sim::SimTransport;
use ioreq_server::transport::{Transport, TransportError};
use serde_json::Value;
use xen_abi::dmop::DmOp;
use xen_abi::dmop::Space;
use xen_abi::passthrough::{MsiMap, PtOp};
use xen_abi::*;
use xen_sim::{DomainConfig, HostBar, HostPciDevice, MsixLayout, Owner, Sim, SimOptions};

use common::bare_ioreq_server;

const VF: u32 = 0x0312;
const BAR0: u64 = 0x38_0002_0000;
const BAR3: u64 = 0x38_0010_8000;
/// The MSI-X table is at BAR3 + 0x1000 here, so that BAR base and table address differ.
const TABLE_OFFSET: u32 = 0x1000;
const GTABLE: u64 = 0xF101_1000;

struct Rig {
    sim: Sim,
    dir: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.sim.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(name: &str, cfg: DomainConfig) -> Rig {
    let dir = std::env::temp_dir().join(format!("pvh-dm-simpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sim = Sim::start(SimOptions {
        socket: dir.join("sim.sock"),
        ioreq_timeout: Duration::from_secs(3),
    })
    .unwrap();
    sim.create_domain_with(1, &cfg).unwrap();
    Rig { sim, dir }
}

impl Rig {
    fn connect(&self, name: &str) -> SimTransport {
        SimTransport::connect(&self.dir.join("sim.sock"), 1, name).unwrap()
    }
    fn ops(&self) -> Vec<Value> {
        self.sim.report(1).dm_ops
    }
    fn last_op(&self, name: &str) -> Value {
        self.ops()
            .into_iter()
            .rev()
            .find(|o| o["op"] == name)
            .unwrap_or_else(|| panic!("no {name} recorded"))
    }
    /// A config-space file (Command with memory decode, MSI-X capability at 0x40 with
    /// 5 entries, table BIR 3 + 0x1000, PBA BIR 3 + 0x2000) standing for the VF.
    fn config_file(&self) -> PathBuf {
        let mut c = vec![0u8; 256];
        c[0..4].copy_from_slice(&0x154c_8086u32.to_le_bytes());
        c[4] = 0x06;
        c[6] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x11;
        c[0x42..0x44].copy_from_slice(&4u16.to_le_bytes());
        c[0x44..0x48].copy_from_slice(&(TABLE_OFFSET | 3).to_le_bytes());
        c[0x48..0x4C].copy_from_slice(&0x2003u32.to_le_bytes());
        let p = self.dir.join("vf-config");
        std::fs::write(&p, c).unwrap();
        p
    }
    fn add_vf(&self, config_file: Option<PathBuf>, bar0_file: Option<PathBuf>) {
        let mut bars = [None; 6];
        bars[0] = Some(HostBar {
            base: BAR0,
            size: 0x1_0000,
        });
        bars[3] = Some(HostBar {
            base: BAR3,
            size: 0x4000,
        });
        let mut bar_files: [Option<PathBuf>; 6] = Default::default();
        bar_files[0] = bar0_file;
        self.sim.add_host_device(HostPciDevice {
            sbdf: VF,
            bars,
            msix: Some(MsixLayout {
                entries: 5,
                table_bir: 3,
                table_offset: TABLE_OFFSET,
                pba_bir: 3,
                pba_offset: 0x2000,
            }),
            is_vf: true,
            config_file,
            bar_files,
            ..Default::default()
        });
    }
}

fn errno(r: Result<u64, TransportError>) -> i32 {
    match r {
        Err(TransportError::Hypervisor { errno, .. }) => errno,
        other => panic!("expected a hypervisor error, got {other:?}"),
    }
}

fn mm(gfn: u64, mfn: u64, nr: u64, add: bool) -> PtOp {
    PtOp::MemoryMapping { gfn, mfn, nr, add }
}

fn map_msix(entry: u32, table_base: u64) -> PtOp {
    PtOp::MapPirqMsi(MsiMap {
        sbdf: VF,
        entry,
        table_base,
        nvec: 1,
    })
}

fn bind(pirq: u64, gvec: u8, gtable: u64) -> PtOp {
    PtOp::BindPtIrqMsi {
        pirq: pirq as u32,
        gvec,
        gflags: xen_abi::passthrough::msi_gflags(0xFEE0_0000, u32::from(gvec), true),
        gtable,
    }
}

#[test]
fn memory_mapping_is_done_64_frames_at_a_time() {
    let r = rig("mm", DomainConfig::default());
    let bar0 = r.dir.join("bar0");
    let mut contents = vec![0u8; 0x1_0000];
    contents[0x2010..0x2014].copy_from_slice(&0xC0FF_EE00u32.to_le_bytes());
    std::fs::write(&bar0, contents).unwrap();
    r.add_vf(None, Some(bar0.clone()));
    let mut t = r.connect("bridge");
    let (mfn, gfn) = (BAR0 >> 12, 0xF1000u64);
    // Without iomem_permission: EPERM.
    assert_eq!(errno(t.passthrough(&mm(gfn, mfn, 16, true))), libc::EPERM);
    t.passthrough(&PtOp::IomemPermission {
        mfn,
        nr: 100,
        allow: true,
    })
    .unwrap();
    // 100 frames asked, 64 done: the positive count.
    assert_eq!(t.passthrough(&mm(gfn, mfn, 100, true)).unwrap(), 64);
    assert_eq!(r.last_op("memory_mapping")["value"], 64);
    assert_eq!(r.last_op("memory_mapping")["rc"], 0);
    assert_eq!(t.passthrough(&mm(gfn + 64, mfn + 64, 36, true)).unwrap(), 0);
    // The guest reaches the BAR through the mapping: no ioreq, the device's bytes.
    let mut v = r.sim.vcpu(1, 0);
    assert_eq!(v.mmio_read(0xF100_2010, 4).unwrap(), 0xC0FF_EE00);
    v.mmio_write(0xF100_3000, 4, 0x1234_5678).unwrap();
    let mut b = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::io::Cursor::new(&std::fs::read(&bar0).unwrap()[0x3000..0x3004]),
        &mut b,
    )
    .unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x1234_5678);
    let rep = r.sim.report(1);
    assert_eq!(rep.p2m_accesses, 2);
    assert!(rep.ioreqs_by_type.is_empty(), "{:?}", rep.ioreqs_by_type);
    // Unmap of a sub-range in the middle; the frames around it stay mapped.
    assert_eq!(t.passthrough(&mm(gfn + 3, mfn + 3, 1, false)).unwrap(), 0);
    assert_eq!(v.mmio_read(0xF100_2010, 4).unwrap(), 0xC0FF_EE00);
    assert_eq!(
        v.mmio_read(0xF100_3000, 4).unwrap(),
        0xFFFF_FFFF,
        "unclaimed now"
    );
    // Unmap of the rest: 64 again, then the remainder.
    assert_eq!(t.passthrough(&mm(gfn + 4, mfn + 4, 96, false)).unwrap(), 64);
    assert_eq!(
        t.passthrough(&mm(gfn + 68, mfn + 68, 32, false)).unwrap(),
        0
    );
    // Mapping a mapped frame to another mfn: EPERM, and Xen crashes the guest.
    assert_eq!(
        errno(t.passthrough(&mm(gfn, mfn + 1, 1, true))),
        libc::EPERM
    );
    assert!(r
        .sim
        .report(1)
        .crashed
        .is_some_and(|m| m.contains("not permitted")));
}

#[test]
fn msix_map_pirq_needs_prepare_msix_and_the_bar_base() {
    let r = rig("prepare", DomainConfig::default());
    r.add_vf(None, None);
    let mut t = r.connect("bridge");
    t.passthrough(&PtOp::AssignDevice { sbdf: VF }).unwrap();
    assert_eq!(r.sim.host_device_owner(VF), Owner::Domain(1));
    // Assigned, no prepare_msix: ENODATA (xen/arch/x86/msi.c:882-887).
    assert_eq!(errno(t.passthrough(&map_msix(0, BAR3))), libc::ENODATA);
    assert_eq!(r.last_op("map_pirq_msi")["rc"], -libc::ENODATA);
    t.passthrough(&PtOp::PrepareMsix { sbdf: VF }).unwrap();
    let pirq = t.passthrough(&map_msix(0, BAR3)).unwrap();
    assert!(pirq > 0);
    assert_eq!(r.last_op("map_pirq_msi")["pirq"], pirq);
    assert_eq!(
        r.last_op("map_pirq_msi")["table_base_check"],
        "ok: the BAR base"
    );
    // BAR + table offset, the formula the review found (S1-6): Xen's WARN is recorded.
    t.passthrough(&map_msix(1, BAR3 + u64::from(TABLE_OFFSET)))
        .unwrap();
    let w = r.last_op("map_pirq_msi");
    assert!(
        w["table_base_warn"]
            .as_str()
            .unwrap()
            .contains("WARN_ON at xen/arch/x86/msi.c:848"),
        "{w}"
    );
    // release_msix needs every entry unmapped first.
    assert_eq!(
        errno(t.passthrough(&PtOp::ReleaseMsix { sbdf: VF })),
        libc::EBUSY
    );
}

#[test]
fn no_iommu_context_no_assignment() {
    let r = rig(
        "noiommu",
        DomainConfig {
            iommu: false,
            ..Default::default()
        },
    );
    let mut t = r.connect("bridge");
    assert_eq!(
        errno(t.passthrough(&PtOp::TestAssignDevice { sbdf: VF })),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(t.passthrough(&PtOp::AssignDevice { sbdf: VF })),
        libc::EOPNOTSUPP
    );
    assert_eq!(r.sim.host_device_owner(VF), Owner::Hardware);
    // bind_pt_irq of a pirq that does not exist: EPERM (domctl.c:543-550); the ESRCH of a
    // domain without IOMMU needs a mapped pirq, which needs an assignment (see the unit test).
    assert_eq!(errno(t.passthrough(&bind(70, 0x41, 0))), libc::EPERM);
    // get_domain_info: max_pages of the 16 MiB guest.
    assert_eq!(t.passthrough(&PtOp::GetDomainInfo).unwrap(), 4096);
}

#[test]
fn a_dead_domains_functions_are_quarantined_until_deassigned_from_dom_io() {
    let r = rig(
        "death",
        DomainConfig {
            destroy_on_poweroff: true,
            ..Default::default()
        },
    );
    r.add_vf(None, None);
    let mut t = r.connect("bridge");
    t.passthrough(&PtOp::PrepareMsix { sbdf: VF }).unwrap();
    t.passthrough(&PtOp::AssignDevice { sbdf: VF }).unwrap();
    let pirq = t.passthrough(&map_msix(0, BAR3)).unwrap();
    t.passthrough(&bind(pirq, 0x41, GTABLE)).unwrap();
    // Another domain, 2, exists: Xen's getdomaininfo of the dead 1 would answer for it.
    r.sim
        .create_domain_with(2, &DomainConfig::default())
        .unwrap();
    // The guest powers off (pm-trap's remote_shutdown): the domain is destroyed.
    t.dm_op(&DmOp::RemoteShutdown {
        reason: SHUTDOWN_POWEROFF,
    })
    .unwrap();
    assert!(r.sim.report(1).destroyed);
    assert_eq!(r.sim.host_device_owner(VF), Owner::DomIo);
    // Everything aimed at the dead domain: ESRCH.
    for op in [
        PtOp::DeassignDevice {
            sbdf: VF,
            from_dom_io: false,
        },
        PtOp::UnmapPirq { pirq: pirq as u32 },
        PtOp::UnbindPtIrqMsi {
            pirq: pirq as u32,
            gvec: 0x41,
            gflags: 0,
            gtable: GTABLE,
        },
        PtOp::GetDomainInfo,
    ] {
        assert_eq!(errno(t.passthrough(&op)), libc::ESRCH, "{op:?}");
    }
    assert_eq!(r.last_op("get_domain_info")["xen_answers_for_domain"], 2);
    assert_eq!(
        errno(t.dm_op(&DmOp::DestroyIoreqServer { id: 0 }).map(|_| 0)),
        libc::ESRCH
    );
    // De-quarantine: deassign from DOMID_IO. Then release_msix (only prepare's use is left).
    t.passthrough(&PtOp::DeassignDevice {
        sbdf: VF,
        from_dom_io: true,
    })
    .unwrap();
    assert_eq!(r.sim.host_device_owner(VF), Owner::Hardware);
    t.passthrough(&PtOp::ReleaseMsix { sbdf: VF }).unwrap();
    // A dead domain accepts no new device model.
    assert!(SimTransport::connect(&r.dir.join("sim.sock"), 1, "late").is_err());
}

#[test]
fn deassign_from_a_live_guest_also_lands_in_dom_io() {
    let r = rig("live", DomainConfig::default());
    let mut t = r.connect("bridge");
    t.passthrough(&PtOp::AssignDevice { sbdf: VF }).unwrap();
    assert_eq!(
        errno(t.passthrough(&PtOp::AssignDevice { sbdf: VF })),
        libc::EBUSY
    );
    t.passthrough(&PtOp::DeassignDevice {
        sbdf: VF,
        from_dom_io: false,
    })
    .unwrap();
    assert_eq!(r.last_op("deassign_device")["now_owned_by"], "dom_io");
    assert_eq!(r.sim.host_device_owner(VF), Owner::DomIo);
    t.passthrough(&PtOp::DeassignDevice {
        sbdf: VF,
        from_dom_io: true,
    })
    .unwrap();
    assert_eq!(r.sim.host_device_owner(VF), Owner::Hardware);
}

#[test]
fn a_restricted_connection_issues_no_hypercalls_a_second_one_does() {
    let r = rig("restrict", DomainConfig::default());
    let mut first = r.connect("bridge");
    first.restrict().unwrap();
    assert_eq!(
        errno(first.passthrough(&PtOp::AssignDevice { sbdf: VF })),
        libc::EPERM
    );
    assert_eq!(
        r.last_op("assign_device")["refused"],
        "restricted privcmd handle"
    );
    // DM ops still work on the restricted handle.
    first.dm_op(&DmOp::NrVcpus).unwrap();
    let mut second = r.connect("bridge-broker");
    second
        .passthrough(&PtOp::AssignDevice { sbdf: VF })
        .unwrap();
    assert_eq!(r.sim.host_device_owner(VF), Owner::Domain(1));
}

/// A request as the device model saw it: (addr, size, write, data).
type Seen = (u64, u32, bool, u64);

/// A device model claiming the MSI-X table page, which records every request it gets.
struct TableDm {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TableDm {
    fn start(r: &Rig, first: u64, last: u64) -> TableDm {
        let mut t = r.connect("table-dm");
        let (page, port) = bare_ioreq_server(&mut t, Space::Memory, first, last);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st2.load(Ordering::SeqCst) {
                if page.state(0) == STATE_IOREQ_READY {
                    let q = page.read(0);
                    s2.lock()
                        .unwrap()
                        .push((q.addr, q.size, !q.is_read(), q.data));
                    if q.is_read() {
                        page.write_data(0, 0xAAAA_AAAA);
                    }
                    page.set_state(0, STATE_IORESP_READY);
                    t.notify(port).unwrap();
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        TableDm {
            seen,
            stop,
            thread: Some(thread),
        }
    }
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for TableDm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn msixtbl_keeps_mask_writes_of_bound_entries_from_the_device_model() {
    let r = rig("msixtbl", DomainConfig::default());
    r.add_vf(None, None);
    let dm = TableDm::start(&r, GTABLE, GTABLE + 0xFFF);
    let mut pt = r.connect("broker");
    pt.passthrough(&PtOp::PrepareMsix { sbdf: VF }).unwrap();
    pt.passthrough(&PtOp::AssignDevice { sbdf: VF }).unwrap();
    let mut v = r.sim.vcpu(1, 0);
    // Nothing bound yet: every access reaches the device model.
    v.mmio_write(GTABLE + 12, 4, 1).unwrap();
    assert_eq!(dm.take(), vec![(GTABLE + 12, 4, true, 1)]);
    let p0 = pt.passthrough(&map_msix(0, BAR3)).unwrap();
    pt.passthrough(&bind(p0, 0x41, GTABLE)).unwrap();
    // Bound: Xen takes the mask and unmask writes of entry 0 itself, and its reads.
    v.mmio_write(GTABLE + 12, 4, 1).unwrap();
    v.mmio_write(GTABLE + 12, 4, 0).unwrap();
    assert_eq!(
        v.mmio_read(GTABLE + 12, 4).unwrap(),
        0,
        "Xen's guest_masked"
    );
    assert_eq!(dm.take(), vec![], "no mask write reaches the device model");
    assert_eq!(r.sim.report(1).msixtbl_accesses, 3);
    // Linux's update of a live entry: mask, address, data, unmask. The mask is Xen's; the
    // address/data writes and the unmask after them are forwarded (vmsi.c:321-326).
    v.mmio_write(GTABLE + 12, 4, 1).unwrap();
    v.mmio_write(GTABLE, 4, 0xFEE0_1000).unwrap();
    v.mmio_write(GTABLE + 8, 4, 0x51).unwrap();
    v.mmio_write(GTABLE + 12, 4, 0).unwrap();
    assert_eq!(
        dm.take(),
        vec![
            (GTABLE, 4, true, 0xFEE0_1000),
            (GTABLE + 8, 4, true, 0x51),
            (GTABLE + 12, 4, true, 0)
        ]
    );
    // Xen answers a read of the data word from its shadow; address high it never saw.
    assert_eq!(v.mmio_read(GTABLE + 8, 4).unwrap(), 0x51);
    assert_eq!(v.mmio_read(GTABLE + 4, 4).unwrap(), 0xAAAA_AAAA);
    assert_eq!(dm.take(), vec![(GTABLE + 4, 4, false, 0)]);
    // Entry 1 is not mapped: all of it reaches the device model.
    v.mmio_write(GTABLE + 16 + 12, 4, 1).unwrap();
    assert_eq!(dm.take(), vec![(GTABLE + 16 + 12, 4, true, 1)]);
    // A rebind with the table moved: Xen still intercepts the old address.
    pt.passthrough(&bind(p0, 0x42, GTABLE + 0x10_0000)).unwrap();
    let rb = r.last_op("bind_pt_irq_msi");
    assert!(rb["gtable_ignored"].is_string(), "{rb}");
    v.mmio_write(GTABLE + 12, 4, 1).unwrap();
    assert_eq!(dm.take(), vec![]);
}

#[test]
fn a_bound_interrupt_needs_msix_enable_on_the_device() {
    let r = rig("enable", DomainConfig::default());
    let cfg = r.config_file();
    r.add_vf(Some(cfg.clone()), None);
    let mut pt = r.connect("broker");
    pt.passthrough(&PtOp::PrepareMsix { sbdf: VF }).unwrap();
    pt.passthrough(&PtOp::AssignDevice { sbdf: VF }).unwrap();
    let p0 = pt.passthrough(&map_msix(0, BAR3)).unwrap();
    pt.passthrough(&bind(p0, 0x41, GTABLE)).unwrap();
    // Xen bound the vector but did not set MSI-X Enable (a hardware domain exists).
    let e = r.sim.device_interrupt(VF, 0).unwrap_err();
    assert!(e.contains("Enable clear"), "{e}");
    assert!(r.sim.report(1).msis.is_empty());
    // The device model writes Message Control (Enable) to the device, as dom0 must.
    let mut c = std::fs::read(&cfg).unwrap();
    c[0x42..0x44].copy_from_slice(&(0x8000u16 | 4).to_le_bytes());
    std::fs::write(&cfg, c).unwrap();
    r.sim.device_interrupt(VF, 0).unwrap();
    let rep = r.sim.report(1);
    assert_eq!(rep.msis.len(), 1);
    assert_eq!(rep.msis[0].vector, 0x41);
    assert_eq!(rep.device_interrupts.len(), 2);
    assert_eq!(rep.device_interrupts[1]["delivered"], true);
}

/// The bridge these scenarios run: `PVH_DM_BRIDGE` (e.g. one built from 99d563d, the bridge
/// before the Xen review), else the workspace's.
fn bridge_under_test() -> PathBuf {
    std::env::var_os("PVH_DM_BRIDGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| tests::harness::bin_path("pci-host-bridge"))
}

/// Fail with every violation at once, so that one run lists all a bridge gets wrong.
fn check(violations: &[String]) {
    for v in violations {
        eprintln!("VIOLATION: {v}");
    }
    assert!(
        violations.is_empty(),
        "{} Xen 4.17 rules violated",
        violations.len()
    );
}

/// The demo's VF (sriov-nic-vf.json) as Linux programs it, then the guest dies and the bridge
/// is stopped: the bridge must prepare MSI-X (no ENODATA), pass the BAR base as table_base,
/// write MSI-X Enable through to the device (Xen does not, with a hardware domain), and get
/// the VF out of Xen's quarantine at the end.
#[test]
fn a_bridge_passes_the_vf_through_as_xen_4_17_wants() {
    let bin = bridge_under_test();
    let snapshot = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pci-host-bridge/testdata/sriov-nic-vf.json");
    let mut h = xen_sim::launch::Harness::with_domain(
        1,
        &DomainConfig {
            destroy_on_poweroff: true,
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .unwrap();
    // The VF as Xen sees it (the fixture's table is at BAR3 + 0).
    h.sim.add_host_device(HostPciDevice::sriov_nic_vf());
    let cfg = h.write_config(&format!(
        "[pci]\n\n[[pci.device]]\nhost = \"0000:03:02.2\"\nslot = 3\nbackend = \"snapshot\"\nsnapshot = \"{}\"\n",
        snapshot.display()
    ));
    h.spawn(&bin, &cfg, &[]);
    assert!(h.wait_ready(&["pci-host-bridge"]), "bridge did not come up");
    let mut v = h.sim.vcpu(1, 0);
    let ecam = |reg: u64| 0xF000_0000 + (3 << 15) + reg;
    // BAR0 (64-bit) at 0xF100_0000, BAR3 at 0xF101_0000, decode on, MSI-X enabled with the
    // function masked, every entry programmed masked, function mask cleared, three unmasked.
    for (reg, val) in [
        (0x10, 0xF100_0000u64),
        (0x14, 0),
        (0x1C, 0xF101_0000),
        (0x20, 0),
    ] {
        v.mmio_write(ecam(reg), 4, val).unwrap();
    }
    v.mmio_write(ecam(4), 2, 6).unwrap();
    let mut cap = v.mmio_read(ecam(0x34), 1).unwrap() & 0xFC;
    while cap != 0 && v.mmio_read(ecam(cap), 1).unwrap() != 0x11 {
        cap = v.mmio_read(ecam(cap + 1), 1).unwrap() & 0xFC;
    }
    assert_ne!(cap, 0, "MSI-X capability");
    v.mmio_write(ecam(cap + 2), 2, 0xC000).unwrap();
    let table = 0xF101_0000u64;
    for e in 0..5u64 {
        v.mmio_write(table + 16 * e + 12, 4, 1).unwrap();
        v.mmio_write(table + 16 * e, 4, 0xFEE0_0000).unwrap();
        v.mmio_write(table + 16 * e + 8, 4, 0x41 + e).unwrap();
    }
    v.mmio_write(ecam(cap + 2), 2, 0x8000).unwrap();
    for e in 0..3u64 {
        v.mmio_write(table + 16 * e + 12, 4, 0).unwrap();
    }
    // What the bridge wrote to the device's MSI-X Message Control (its snapshot backend
    // records every config write; Xen never sets Enable while a hardware domain exists,
    // msi.c:970-982).
    let st = ioreq_server::control::request(
        &h.control_socket("pci-host-bridge"),
        &serde_json::json!({"cmd": "status"}),
    )
    .expect("status");
    let writes = st["status"]["devices"][0]["state"]["functions"][0]["backend"]
        ["last_config_writes"]
        .clone();
    let enable_written = writes.as_array().into_iter().flatten().any(|w| {
        w["offset"] == cap + 2
            && w["data"].as_array().is_some_and(|d| d.len() == 2)
            && w["data"][1].as_u64().is_some_and(|hi| hi & 0x80 != 0)
    });
    // An old bridge retries failed binds for a few seconds, then gives up: let it.
    std::thread::sleep(Duration::from_millis(500));
    let during = h.sim.report(1);
    // The guest dies (xl destroy), then the bridge is stopped.
    h.sim.destroy_domain(1);
    let codes = h.stop_all();
    let r = h.sim.report(1);
    let owner = h.sim.host_device_owner(VF);
    eprintln!(
        "bridge {}: exit {codes:?}; passthrough ops while the guest ran: {}",
        bin.display(),
        during
            .dm_ops
            .iter()
            .filter(|o| xen_abi::passthrough::is_passthrough_op(o["op"].as_str().unwrap_or("")))
            .map(|o| format!("{}={}", o["op"].as_str().unwrap_or(""), o["rc"]))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut bad = Vec::new();
    let enodata = r
        .dm_ops
        .iter()
        .filter(|o| o["op"] == "map_pirq_msi" && o["rc"] == -libc::ENODATA)
        .count();
    if enodata > 0 {
        bad.push(format!(
            "{enodata} MSI-X map_pirq refused with ENODATA: no PHYSDEVOP_prepare_msix (msi.c:882-887)"
        ));
    }
    for o in r
        .dm_ops
        .iter()
        .filter(|o| o.get("table_base_warn").is_some())
    {
        bad.push(format!("table_base: {}", o["table_base_warn"]));
    }
    let bound = during
        .dm_ops
        .iter()
        .filter(|o| o["op"] == "bind_pt_irq_msi" && o["rc"] == 0)
        .count();
    if bound != 3 {
        bad.push(format!("{bound} of the 3 unmasked entries bound"));
    }
    if !enable_written {
        bad.push(format!(
            "MSI-X Enable never written to the device as a 16-bit Message Control write: {writes}"
        ));
    }
    if owner != Owner::Hardware {
        bad.push(format!(
            "the VF ends owned by {owner:?}: never deassigned from DOMID_IO (pci.c:849-858)"
        ));
    }
    if codes != vec![Some(0)] {
        bad.push(format!("the bridge exited with {codes:?}"));
    }
    check(&bad);
}

/// A PF like sriov-nic-pf.json with a 1 MiB BAR0 (256 frames: more than Xen's 64 per call,
/// less than one 2M page): the bridge must map all of it (re-invoking after each partial
/// count), and unmap all of it when it is stopped under a live guest.
#[test]
fn a_bridge_maps_and_unmaps_a_bar_longer_than_64_frames() {
    let bin = bridge_under_test();
    const PF: u32 = 0x0300;
    const PF_BAR0: u64 = 0xFA00_0000;
    let mut h =
        xen_sim::launch::Harness::with_domain(1, &DomainConfig::default(), Duration::from_secs(5))
            .unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pci-host-bridge/testdata/sriov-nic-pf.json");
    let mut snap: Value = serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    snap["bars"][0]["size"] = "0x100000".into();
    let fixture = h.dir.join("pf-1mib.json");
    std::fs::write(&fixture, snap.to_string()).unwrap();
    let bar0 = h.dir.join("pf-bar0");
    let mut contents = vec![0u8; 0x10_0000];
    contents[0x8_0000..0x8_0004].copy_from_slice(&0x5A5A_0080u32.to_le_bytes());
    contents[0x1000..0x1004].copy_from_slice(&0x5A5A_0001u32.to_le_bytes());
    std::fs::write(&bar0, contents).unwrap();
    let mut bars = [None; 6];
    bars[0] = Some(HostBar {
        base: PF_BAR0,
        size: 0x10_0000,
    });
    bars[3] = Some(HostBar {
        base: 0xFB00_8000,
        size: 0x8000,
    });
    let mut bar_files: [Option<PathBuf>; 6] = Default::default();
    bar_files[0] = Some(bar0);
    h.sim.add_host_device(HostPciDevice {
        sbdf: PF,
        bars,
        bar_files,
        // sriov-nic-pf.json: 64 entries, table at BAR3 + 0, PBA at BAR3 + 0x1000; 8 MSI vectors.
        msix: Some(MsixLayout {
            entries: 64,
            table_bir: 3,
            table_offset: 0,
            pba_bir: 3,
            pba_offset: 0x1000,
        }),
        msi_maxvec: Some(8),
        ..Default::default()
    });
    let cfg = h.write_config(&format!(
        "[pci]\n\n[[pci.device]]\nhost = \"0000:03:00.0\"\nslot = 2\nbackend = \"snapshot\"\nsnapshot = \"{}\"\n",
        fixture.display()
    ));
    h.spawn(&bin, &cfg, &[]);
    assert!(h.wait_ready(&["pci-host-bridge"]), "bridge did not come up");
    let mut v = h.sim.vcpu(1, 0);
    let ecam = |reg: u64| 0xF000_0000 + (2 << 15) + reg;
    v.mmio_write(ecam(0x10), 4, 0xF100_000C).unwrap();
    v.mmio_write(ecam(0x14), 4, 0).unwrap();
    v.mmio_write(ecam(0x1C), 4, 0xF120_000C).unwrap();
    v.mmio_write(ecam(0x20), 4, 0).unwrap();
    v.mmio_write(ecam(4), 2, 6).unwrap();
    let mut bad = Vec::new();
    // Every frame of BAR0 reaches the device through the p2m, none through the bridge.
    let mmio = |h: &xen_sim::launch::Harness| {
        h.sim
            .report(1)
            .ioreqs_by_type
            .get("MMIO")
            .copied()
            .unwrap_or(0)
    };
    for (frame, want) in [(1u64, 0x5A5A_0001u64), (128, 0x5A5A_0080)] {
        let (p0, m0) = (h.sim.report(1).p2m_accesses, mmio(&h));
        let got = v.mmio_read(0xF100_0000 + frame * 4096, 4).unwrap();
        let via_p2m = h.sim.report(1).p2m_accesses > p0;
        if !via_p2m || got != want {
            bad.push(format!(
                "BAR0 frame {frame}: read {got:#x} {} (want {want:#x} through the p2m){}",
                if via_p2m {
                    "through the p2m"
                } else {
                    "not mapped"
                },
                if mmio(&h) > m0 {
                    ": it became an ioreq to the bridge"
                } else {
                    ""
                }
            ));
        }
    }
    // The bridge is stopped while the guest runs: every frame must be unmapped.
    let codes = h.stop_all();
    for frame in [1u64, 100, 255] {
        let p0 = h.sim.report(1).p2m_accesses;
        let _ = v.mmio_read(0xF100_0000 + frame * 4096, 4);
        if h.sim.report(1).p2m_accesses > p0 {
            bad.push(format!(
                "BAR0 frame {frame} still mapped in the guest after the bridge stopped"
            ));
        }
    }
    let owner = h.sim.host_device_owner(PF);
    if owner != Owner::Hardware {
        bad.push(format!(
            "the PF ends owned by {owner:?}, not the hardware domain"
        ));
    }
    if codes != vec![Some(0)] {
        bad.push(format!("the bridge exited with {codes:?}"));
    }
    check(&bad);
}
