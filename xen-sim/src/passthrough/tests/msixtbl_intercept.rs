//! The msixtbl intercept of bound MSI-X entries: guest accesses Xen handles before any
//! ioreq server, the completion after the device model answers, and 4.17's unbind.

use super::*;

#[test]
fn msixtbl_takes_bound_entries_before_the_device_model() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap() as u32;
    // Before any bind: nothing intercepted.
    assert!(matches!(
        d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
        MsixtblResult::Forward
    ));
    op(&mut d, &mut h, bind(p0.into(), 0x41, true, GTABLE)).unwrap();
    let fwd = |r: MsixtblResult| matches!(r, MsixtblResult::Forward);
    // Mask write of the bound entry: handled in Xen, never reaches the device model.
    assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 1)));
    assert!(d.pirqs[&p0].guest_masked);
    // Vector Control reads Xen's guest_masked.
    assert!(matches!(
        d.msixtbl_access(0, GTABLE + 12, 4, false, 0),
        MsixtblResult::Done(1)
    ));
    // Address/data writes: forwarded, and shadowed by Xen.
    assert!(fwd(d.msixtbl_access(0, GTABLE, 4, true, 0xFEE0_1000)));
    assert!(fwd(d.msixtbl_access(0, GTABLE + 8, 4, true, 0x51)));
    assert!(matches!(
        d.msixtbl_access(0, GTABLE + 8, 4, false, 0),
        MsixtblResult::Done(0x51)
    ));
    // Address high was never written: its read goes to the device model.
    assert!(fwd(d.msixtbl_access(0, GTABLE + 4, 4, false, 0)));
    // The unmask after address/data changed: forwarded, applied by Xen at completion.
    assert!(fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 0)));
    assert!(d.pirqs[&p0].guest_masked, "not yet");
    d.msix_write_completion(0);
    assert!(!d.pirqs[&p0].guest_masked);
    // Mask and unmask with no address/data change: both Xen's.
    assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 1)));
    assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 0)));
    assert!(!d.pirqs[&p0].guest_masked);
    // 2-byte accesses are not Xen's.
    assert!(fwd(d.msixtbl_access(0, GTABLE + 12, 2, true, 1)));
    // An 8-byte write of data + vector control: mask applied in Xen AND forwarded.
    assert!(fwd(d.msixtbl_access(
        0,
        GTABLE + 8,
        8,
        true,
        0x51 | 1 << 32
    )));
    assert!(d.pirqs[&p0].guest_masked);
    // Entry 1 is not mapped: nothing of it is intercepted, even inside the table.
    assert!(fwd(d.msixtbl_access(0, GTABLE + 16 + 12, 4, true, 1)));
}

#[test]
fn an_unmask_snooped_during_the_bind_is_applied_at_completion() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    // The guest unmasks entry 0 before anything is bound: forwarded, snooped.
    assert!(matches!(
        d.msixtbl_access(1, GTABLE + 12, 4, true, 0),
        MsixtblResult::Forward
    ));
    d.vcpu_io[1].blocked = true;
    // The device model binds it with UNMASKED clear while vCPU 1 waits.
    op(&mut d, &mut h, bind(p0, 0x41, false, GTABLE)).unwrap();
    assert!(d.pirqs[&(p0 as u32)].guest_masked);
    d.msix_write_completion(1);
    assert!(!d.pirqs[&(p0 as u32)].guest_masked, "vmsi.c:514-529");
}

#[test]
fn unbinding_one_of_two_entries_drops_the_intercept_in_4_17() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    let p1 = op(&mut d, &mut h, map_msix(1, BAR3)).unwrap();
    op(&mut d, &mut h, bind(p0, 0x41, true, GTABLE)).unwrap();
    op(&mut d, &mut h, bind(p1, 0x42, true, GTABLE)).unwrap();
    assert_eq!(d.msixtbl[0].refcnt, 2);
    let unbind = |p: u64| PtOp::UnbindPtIrqMsi {
        pirq: p as u32,
        gvec: 0,
        gflags: 0,
        gtable: GTABLE,
    };
    op(&mut d, &mut h, unbind(p1)).unwrap();
    assert!(
        d.msixtbl.is_empty(),
        "vmsi.c:566: deleted while a bind remains"
    );
    // Entry 0 is still bound, but its mask writes now reach the device model.
    assert!(matches!(
        d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
        MsixtblResult::Forward
    ));
    // Unbind leaves the vector masked (hvm.c:590-604).
    op(&mut d, &mut h, unbind(p0)).unwrap();
    assert!(d.pirqs[&(p0 as u32)].guest_masked);
}
