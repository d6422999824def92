//! Ownership of host functions: assignment only with an IOMMU context, test_assign,
//! quarantine on deassign and on the domain's death; getdomaininfo.

use super::*;

#[test]
fn assignment_needs_an_iommu_context() {
    let (mut d, mut h) = setup(false);
    assert_eq!(
        op(&mut d, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
        Err(-libc::EOPNOTSUPP)
    );
    assert_eq!(
        op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
        Err(-libc::EOPNOTSUPP)
    );
    assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
    // bind_pt_irq: ESRCH. (The pirq can only exist for an assigned function, so plant one.)
    d.pirqs.insert(
        70,
        Pirq {
            sbdf: SBDF,
            msix_entry: Some(0),
            index: 0,
            guest_masked: true,
            bind: None,
        },
    );
    assert_eq!(
        op(&mut d, &mut h, bind(70, 0x41, true, GTABLE)),
        Err(-libc::ESRCH)
    );
    // Unbind without IOMMU: nothing done, 0 (domctl.c:583-594).
    assert_eq!(
        op(
            &mut d,
            &mut h,
            PtOp::UnbindPtIrqMsi {
                pirq: 70,
                gvec: 0x41,
                gflags: 0,
                gtable: GTABLE
            }
        ),
        Ok(0)
    );
}

#[test]
fn test_assign_and_ownership() {
    let (mut d, mut h) = setup(true);
    let (mut d2, _) = setup(true);
    d2.domid = 2;
    assert_eq!(
        op(&mut d, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
        Ok(0)
    );
    op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    // Owned by a guest: assign EBUSY (this guest too), test_assign EINVAL.
    assert_eq!(
        op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
    assert_eq!(
        op(&mut d2, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
        Err(-libc::EINVAL)
    );
    // Deassign from another guest: ENODEV.
    assert_eq!(op(&mut d2, &mut h, deassign(false)), Err(-libc::ENODEV));
    // Deassign from the guest: quarantined (dom_io), by default.
    op(&mut d, &mut h, deassign(false)).unwrap();
    assert_eq!(h.devices[&SBDF].owner, Owner::DomIo);
    // A quarantined function can be assigned again.
    assert_eq!(
        op(&mut d2, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
        Ok(0)
    );
    // De-quarantine: back to the hardware domain. Twice: ENODEV.
    op(&mut d, &mut h, deassign(true)).unwrap();
    assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
    assert_eq!(op(&mut d, &mut h, deassign(true)), Err(-libc::ENODEV));
    // Without quarantine, deassign hands it straight back.
    h.quarantine = false;
    op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    op(&mut d, &mut h, deassign(false)).unwrap();
    assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
}

#[test]
fn a_dead_domain_leaves_its_functions_in_quarantine() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    op(&mut d, &mut h, bind(pirq, 0x41, true, GTABLE)).unwrap();
    d.destroy(&mut h);
    assert_eq!(h.devices[&SBDF].owner, Owner::DomIo);
    // Its pirqs were cleaned (arch_pci_clean_pirqs): only prepare_msix's user remains.
    assert_eq!(h.devices[&SBDF].msix_used_entries, 1);
    for o in [
        deassign(false),
        PtOp::UnmapPirq { pirq: pirq as u32 },
        mm(0xF1000, 0x3800020, 16, false),
        PtOp::GetDomainInfo,
    ] {
        assert_eq!(op(&mut d, &mut h, o), Err(-libc::ESRCH));
    }
    assert_eq!(op(&mut d, &mut h, deassign(true)), Ok(0));
    assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
    assert_eq!(op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }), Ok(0));
}

#[test]
fn get_domain_info_is_max_pages() {
    let (mut d, mut h) = setup(true);
    assert_eq!(
        op(&mut d, &mut h, PtOp::GetDomainInfo),
        Ok((16 << 20) / 4096)
    );
}
