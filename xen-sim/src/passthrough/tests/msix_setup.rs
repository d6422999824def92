//! prepare_msix / release_msix, the MSI-X map_pirq precondition (ENODATA) and the
//! table_base comparison.

use super::*;

#[test]
fn msix_map_pirq_needs_prepare_msix() {
    let (mut d, mut h) = setup(true);
    // Not assigned yet: map_domain_pirq finds no such device in the guest -> ENODEV.
    assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODEV));
    op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    // Assigned without prepare_msix: ENODATA (msi.c:882-887).
    assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODATA));
    // prepare_msix works whoever owns the function (pci_prepare_msix checks no owner).
    op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }).unwrap();
    assert_eq!(
        op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
    let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    assert!(pirq > 0);
    assert_eq!(h.devices[&SBDF].msix_used_entries, 2);
    assert_eq!(h.devices[&SBDF].msix_table_first, (BAR3 + 0x1000) >> 12);
    // Entry beyond the table: EINVAL.
    assert_eq!(op(&mut d, &mut h, map_msix(5, BAR3)), Err(-libc::EINVAL));
    // release_msix while an entry is in use: EBUSY; after the unmap it works, and the
    // table location is forgotten: the next map is ENODATA again.
    assert_eq!(
        op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
    op(&mut d, &mut h, PtOp::UnmapPirq { pirq: pirq as u32 }).unwrap();
    op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }).unwrap();
    assert_eq!(h.devices[&SBDF].msix_table_first, 0);
    assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODATA));
    assert_eq!(
        op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
}

#[test]
fn prepare_msix_needs_memory_decode() {
    let (mut d, mut h) = setup(true);
    let cfg = config_file("decode", 0, 0);
    h.add(vf(Some(cfg.clone())));
    assert_eq!(
        op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }),
        Err(-libc::ENXIO)
    );
    crate::host::write_file_at(&cfg, 4, &2u16.to_le_bytes());
    assert_eq!(op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }), Ok(0));
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn table_base_that_is_not_the_bar_base_is_recorded() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    assert_eq!(d.notes["table_base_check"], "ok: the BAR base");
    // BAR + table offset (the old bridge's formula): Xen's WARN_ON compares with the BAR.
    op(&mut d, &mut h, map_msix(1, BAR3 + 0x1000)).unwrap();
    assert!(d.notes["table_base_warn"]
        .as_str()
        .unwrap()
        .contains("msi.c:848"));
}
