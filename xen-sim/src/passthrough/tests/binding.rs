//! bind_pt_irq (first bind vs rebind, UNMASKED that never masks), multi-message MSI, and
//! delivery of a bound device interrupt only with the device's Enable bit.

use super::*;

#[test]
fn rebinding_changes_only_gvec_and_gflags_and_never_masks() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    // Bind with UNMASKED clear: the vector stays masked as map left it.
    op(&mut d, &mut h, bind(pirq, 0x41, false, GTABLE)).unwrap();
    assert!(d.pirqs[&(pirq as u32)].guest_masked);
    op(&mut d, &mut h, bind(pirq, 0x41, true, GTABLE)).unwrap();
    assert!(!d.pirqs[&(pirq as u32)].guest_masked);
    // A rebind with UNMASKED clear does not mask (hvm.c:387-398).
    op(&mut d, &mut h, bind(pirq, 0x42, false, GTABLE)).unwrap();
    assert!(!d.pirqs[&(pirq as u32)].guest_masked);
    assert_eq!(d.pirqs[&(pirq as u32)].bind, Some((0x42, 0)));
    // A rebind with a moved table: Xen keeps intercepting the first address.
    op(&mut d, &mut h, bind(pirq, 0x42, true, 0xF200_0000)).unwrap();
    assert!(d.notes.contains_key("gtable_ignored"));
    assert_eq!(d.msixtbl.len(), 1);
    assert_eq!(d.msixtbl[0].gtable, GTABLE);
    assert_eq!(d.msixtbl[0].refcnt, 1, "a rebind is not a registration");
    // Bind of a pirq that is not mapped: EPERM.
    assert_eq!(op(&mut d, &mut h, bind(999, 1, true, 0)), Err(-libc::EPERM));
}

#[test]
fn multi_message_msi_rules() {
    let (mut d, mut h) = setup(true);
    op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    let msi = |nvec, table_base| {
        PtOp::MapPirqMsi(MsiMap {
            sbdf: SBDF,
            entry: 0,
            table_base,
            nvec,
        })
    };
    assert_eq!(op(&mut d, &mut h, msi(4, BAR3)), Err(-libc::EINVAL));
    assert_eq!(op(&mut d, &mut h, msi(64, 0)), Err(-libc::EDOM));
    h.intremap = false;
    assert_eq!(op(&mut d, &mut h, msi(4, 0)), Err(-libc::EOPNOTSUPP));
    h.intremap = true;
    let p = op(&mut d, &mut h, msi(3, 0)).unwrap() as u32;
    assert_eq!(d.pirq_blocks[&p], 4, "rounded up to a power of two");
}

#[test]
fn a_bound_interrupt_arrives_only_with_the_devices_enable_bit() {
    let (mut d, mut h) = setup(true);
    let cfg = config_file("enable", 2, 0);
    h.add(vf(Some(cfg.clone())));
    assigned_and_prepared(&mut d, &mut h);
    let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    assert!(d
        .device_interrupt(&h, SBDF, 0)
        .unwrap_err()
        .contains("not bound"));
    op(&mut d, &mut h, bind(p0, 0x41, true, GTABLE)).unwrap();
    // Xen never set Enable: the device model must.
    assert!(d
        .device_interrupt(&h, SBDF, 0)
        .unwrap_err()
        .contains("Enable clear"));
    set_msix_ctrl(&cfg, MSIX_ENABLE | MSIX_MASKALL);
    assert!(d
        .device_interrupt(&h, SBDF, 0)
        .unwrap_err()
        .contains("Function Mask"));
    set_msix_ctrl(&cfg, MSIX_ENABLE);
    d.device_interrupt(&h, SBDF, 0).unwrap();
    assert_eq!(d.report.msis.last().unwrap().vector, 0x41);
    // Masked by the guest (through msixtbl): held.
    assert!(!matches!(
        d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
        MsixtblResult::Forward
    ));
    assert!(d
        .device_interrupt(&h, SBDF, 0)
        .unwrap_err()
        .contains("masked by the guest"));
    // Function Mask set at assignment: EBUSY (msi.c:1224-1227).
    let (mut d2, _) = setup(true);
    d2.domid = 2;
    d.destroy(&mut h);
    op(&mut d2, &mut h, deassign(true)).unwrap();
    set_msix_ctrl(&cfg, MSIX_MASKALL);
    assert_eq!(
        op(&mut d2, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
    let _ = std::fs::remove_file(cfg);
}
