//! The passthrough hypercalls on a sim transport connection: memory_mapping 64 frames at a
//! time, MSI-X map_pirq after prepare_msix, no IOMMU context, quarantine and de-quarantine,
//! and a restricted connection.

use super::*;

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
