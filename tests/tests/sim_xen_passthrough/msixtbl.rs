//! Bound MSI-X entries: Xen's msixtbl keeps the guest's mask writes from a device model
//! claiming the table page; a bound interrupt needs the device's MSI-X Enable.

use super::*;

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
