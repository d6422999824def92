//! `Template::fork` (what the fuzz targets start every input from) against the slow way it
//! replaces: a copy of a prepared bridge must behave exactly like a bridge built, started and
//! prepared from scratch. The same pseudo-random accesses, checked by the `Checker`, go to
//! both; the hypercalls (and their answers), the device writes, every config dword read
//! back and the stop must be the same, and a second copy must not see what the first did.

mod common;

use common::*;
use ioreq_server::device::{Actions, Device, Space};
use pci_host_bridge::{PciConfig, PciHostBridge};
use pci_host_bridge_testing::{
    bridge_with_xen, linux_msix_ops, placement_ops, random_irq_op, random_op, Checker, Op, Rng,
    Template, XenLike, XenLikeConfig,
};

fn config() -> PciConfig {
    PciConfig {
        mmio64_base: 0x80_0000_0000,
        mmio64_size: 0x10_0000_0000,
        devices: vec![dev_cfg(2, 0), dev_cfg(2, 1), dev_cfg(3, 0), dev_cfg(5, 0)],
        ..Default::default()
    }
}

fn devices() -> Vec<pci_host_bridge::backend::snapshot::SnapshotDevice> {
    let mut legacy = snapshot("legacy-io-msi.json");
    legacy.enable_intx().unwrap();
    vec![
        snapshot("intel-82599-like-pf.json"),
        snapshot("intel-82599-like-vf.json"),
        legacy,
        snapshot("sriov-nic-pf.json"),
    ]
}

fn prologue(bridge: &mut PciHostBridge, checker: &mut Checker) {
    for op in placement_ops(bridge) {
        checker.apply_unchecked(bridge, op);
    }
    for op in linux_msix_ops(bridge, 0x40) {
        checker.apply_unchecked(bridge, op);
    }
}

/// Everything a run shows from the outside: the calls from `from` on with their answers, the
/// device writes from `writes_from`, and every config dword of every function.
fn observe(
    bridge: &mut PciHostBridge,
    checker: &Checker,
    from: usize,
    writes_from: &[usize],
) -> (Vec<String>, Vec<String>, Vec<u64>) {
    let calls = checker.xen().log[from..]
        .iter()
        .map(|l| format!("{:?} -> {:?}", l.op, l.result))
        .collect();
    let addrs: Vec<_> = bridge.functions().map(|f| f.guest_address()).collect();
    let mut writes = Vec::new();
    for (a, n) in addrs.iter().zip(writes_from) {
        for w in checker.handle(*a).unwrap().writes_from(*n) {
            writes.push(format!("{a} {w:?}"));
        }
    }
    let mut reads = Vec::new();
    let mut actions = Actions::new();
    for a in &addrs {
        for reg in (0..0x1000u64).step_by(4) {
            let addr = u64::from(a.sbdf()) << 32 | reg;
            reads.push(bridge.read(Space::PciConfig, addr, 4, &mut actions));
        }
    }
    (calls, writes, reads)
}

#[test]
fn a_copy_behaves_like_a_bridge_prepared_from_scratch() {
    let xen = XenLikeConfig {
        intremap: true,
        ..Default::default()
    };
    let mut template = Template::new(&config(), &devices(), xen).unwrap();
    template.prepare(prologue);
    {
        let (b, c) = template.parts();
        c.check_state(b).unwrap();
    }
    for seed in 0..6u64 {
        let (mut copy, mut cc) = template.fork().unwrap();
        let (mut fresh, mut fc) = bridge_with_xen(&config(), devices(), XenLike::new(xen)).unwrap();
        prologue(&mut fresh, &mut fc);
        fc.check_state(&fresh).unwrap();
        cc.check_state(&copy).unwrap();
        let from = fc.xen().log.len();
        let writes_from: Vec<usize> = fresh
            .functions()
            .map(|f| fc.handle(f.guest_address()).unwrap().writes().len())
            .collect();
        let mut rng = Rng::new(seed);
        for i in 0..400 {
            let op: Op = if i % 2 == 0 {
                random_op(&mut rng, &fresh)
            } else {
                random_irq_op(&mut rng, &fresh)
            };
            fc.apply(&mut fresh, op)
                .unwrap_or_else(|e| panic!("seed {seed} op {i}, from scratch: {e}"));
            cc.apply(&mut copy, op)
                .unwrap_or_else(|e| panic!("seed {seed} op {i}, copy: {e}"));
        }
        let a = observe(&mut fresh, &fc, from, &writes_from);
        let b = observe(&mut copy, &cc, 0, &[0; 4]);
        assert_eq!(a.0, b.0, "seed {seed}: the calls");
        assert_eq!(a.1, b.1, "seed {seed}: the device writes");
        assert_eq!(a.2, b.2, "seed {seed}: the config reads");
        assert!(!a.0.is_empty(), "seed {seed}: the accesses made calls");
        let from = fc.xen().log.len();
        let from_copy = cc.xen().log.len();
        fc.stop_and_check(&mut fresh).unwrap();
        cc.stop_and_check(&mut copy).unwrap();
        let calls = |c: &Checker, from: usize| -> Vec<String> {
            c.xen().log[from..]
                .iter()
                .map(|l| format!("{:?} -> {:?}", l.op, l.result))
                .collect()
        };
        assert_eq!(
            calls(&fc, from),
            calls(&cc, from_copy),
            "seed {seed}: the stop"
        );
    }
    // The template itself is untouched by its copies' runs.
    let (b, c) = template.parts();
    c.check_state(b).unwrap();
    assert!(c.xen().p2m.len() > 2048, "the template is still placed");
}
