//! (a) The SR-IOV VF with no ioapic process: IDs and BARs from the PF, the assignment
//! lifecycle at start, MSI-X bound lazily entry by entry, a latched message applied at the
//! unmask, masks left to Xen's msixtbl, disable, and the hand-back at SIGTERM.

use super::*;

#[test]
fn vf_without_ioapic_msix_bound_lazily() {
    let mut h = start(
        &device("0000:03:02.2", VF_SLOT, "sriov-nic-vf.json", ""),
        false,
    );
    // Before the guest runs: the guest's RAM checked against the windows, can it be
    // assigned (IOMMU context), prepare_msix while dom0 owns the VF, the assignment, then
    // permissions for both VF BARs.
    let start_ops = pt_ops_since(&h, 0);
    assert_eq!(
        names(&start_ops),
        [
            "get_domain_info",
            "test_assign_device",
            "prepare_msix",
            "assign_device",
            "iomem_permission",
            "iomem_permission"
        ],
        "{start_ops:?}"
    );
    for o in &start_ops[1..4] {
        assert_eq!(o["sbdf"], VF_SBDF);
    }
    assert_eq!(start_ops[4]["mfn"], 0x38_0002_0000u64 >> 12);
    assert_eq!(start_ops[4]["nr"], 16);
    assert_eq!(start_ops[5]["mfn"], 0x38_0010_8000u64 >> 12);
    assert!(start_ops.iter().all(|o| o["rc"] == 0));

    let mut v = h.sim.vcpu(DOMID, 0);
    // Enumeration: the VF's IDs come from the PF (CF8/CFC and ECAM agree), no INTx pin.
    assert_eq!(cfg_rd(&mut v, VF_SLOT, 0, 4), 0x154c_8086);
    assert_eq!(v.mmio_read(ecam(VF_SLOT, 0), 4).unwrap(), 0x154c_8086);
    assert_eq!(
        cfg_rd(&mut v, VF_SLOT, 8, 4) >> 8,
        0x02_0000,
        "Ethernet controller"
    );
    assert_eq!(cfg_rd(&mut v, VF_SLOT, 0x3D, 1), 0);
    // BARs from the PF's VF BARs: BAR0 64 KiB, BAR3 16 KiB, both 64-bit.
    assert_eq!(
        size_bars(&mut v, VF_SLOT),
        vec![(0, 0x1_0000, true), (3, 0x4000, true)]
    );
    let mark = dm_ops(&h).len();
    let placed = place_bars(&mut v, VF_SLOT);
    assert_eq!(placed, vec![(0, 0xF100_0000), (3, 0xF101_0000)]);
    // Decode on: BAR0 mapped whole, BAR3 around its MSI-X table (page 0) and PBA (page 2).
    let maps = ops_named(&pt_ops_since(&h, mark), "memory_mapping");
    let got: Vec<(u64, u64, u64)> = maps
        .iter()
        .map(|m| {
            (
                m["gfn"].as_u64().unwrap(),
                m["mfn"].as_u64().unwrap(),
                m["nr"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0xF1000, 0x3800020, 16),
            (0xF1011, 0x3800109, 1),
            (0xF1013, 0x380010B, 1)
        ]
    );

    // MSI-X as Linux programs it.
    let cap = find_cap(&mut v, VF_SLOT, 0x11).expect("MSI-X capability");
    let ctrl = cfg_rd(&mut v, VF_SLOT, cap + 2, 2);
    let entries = (ctrl & 0x7FF) + 1;
    assert_eq!(entries, 5);
    let tbl = cfg_rd(&mut v, VF_SLOT, cap + 4, 4);
    let bar = (tbl & 7) as u16;
    let table = placed.iter().find(|p| p.0 == bar).unwrap().1 + (tbl & !7);
    assert_eq!(table, 0xF101_0000);
    let mark = dm_ops(&h).len();
    cfg_wr(&mut v, VF_SLOT, cap + 2, 2, 0xC000); // enable + function mask
    for e in 0..entries {
        v.mmio_write(table + 16 * e + 12, 4, 1).unwrap(); // masked
    }
    let addr = |e: u64| 0xFEE0_0000 | (e % 2) << 12;
    for e in 0..entries {
        v.mmio_write(table + 16 * e, 4, addr(e)).unwrap();
        v.mmio_write(table + 16 * e + 4, 4, 0).unwrap();
        v.mmio_write(table + 16 * e + 8, 4, 0x41 + e).unwrap();
    }
    cfg_wr(&mut v, VF_SLOT, cap + 2, 2, 0x8000); // clear the function mask
    assert!(
        pt_ops_since(&h, mark).is_empty(),
        "nothing bound while every entry is masked"
    );
    // Xen leaves MSI-X Enable to dom0: the guest's Enable and Function Mask reached the
    // device, each change as one 16-bit write of Message Control.
    assert_eq!(
        msix_control_writes(&h, cap),
        vec![0xC004, 0x8004],
        "the device saw the guest's MSI-X Enable"
    );
    // Unmask entries 0..3 one by one: one map + one bind each; 3 and 4 stay masked.
    for e in 0..3u64 {
        let m = dm_ops(&h).len();
        v.mmio_write(table + 16 * e + 12, 4, 0).unwrap();
        let ops = pt_ops_since(&h, m);
        assert_eq!(
            names(&ops),
            ["map_pirq_msi", "bind_pt_irq_msi"],
            "entry {e}: {ops:?}"
        );
        let (map, bind) = (&ops[0], &ops[1]);
        assert_eq!(map["sbdf"], VF_SBDF);
        assert_eq!(map["entry"], e);
        assert_eq!(map["nvec"], 1);
        // The host address of the BAR holding the table (BAR3; the table is at its offset
        // 0 here): Xen adds the table offset itself.
        assert_eq!(map["table_base"], 0x38_0010_8000u64, "host address of BAR3");
        assert!(map.get("table_base_warn").is_none(), "{map}");
        assert_eq!(bind["pirq"], map["pirq"]);
        assert_eq!(bind["gvec"], 0x41 + e);
        assert_eq!(
            bind["gflags"],
            u64::from(msi_gflags(addr(e), 0x41 + e as u32, true))
        );
        assert_eq!(bind["gtable"], table, "guest address of the table");
        assert!(ops.iter().all(|o| o["rc"] == 0), "{ops:?}");
    }
    let all = pt_ops_since(&h, mark);
    assert_eq!(
        ops_named(&all, "map_pirq_msi").len(),
        3,
        "masked entries are never bound"
    );
    let pirq1 = ops_named(&all, "map_pirq_msi")[1]["pirq"].clone();

    // New data for entry 1 while bound: Linux masks it (Xen's msixtbl does that, no ioreq),
    // writes the message (forwarded, latched), unmasks (forwarded because the message
    // changed): one rebind with the new vector, same pirq.
    let m = dm_ops(&h).len();
    let tbl_before = h.sim.report(DOMID).msixtbl_accesses;
    v.mmio_write(table + 16 + 12, 4, 1).unwrap();
    v.mmio_write(table + 16 + 8, 4, 0x61).unwrap();
    assert!(pt_ops_since(&h, m).is_empty(), "latched until the unmask");
    v.mmio_write(table + 16 + 12, 4, 0).unwrap();
    let ops = pt_ops_since(&h, m);
    assert_eq!(names(&ops), ["bind_pt_irq_msi"], "{ops:?}");
    assert_eq!(ops[0]["gvec"], 0x61);
    assert_eq!(ops[0]["pirq"], pirq1);

    // Mask and unmask entry 2: Xen's msixtbl does both itself (the DM never sees them), and
    // nothing is unbound.
    let m = dm_ops(&h).len();
    v.mmio_write(table + 32 + 12, 4, 1).unwrap();
    v.mmio_write(table + 32 + 12, 4, 0).unwrap();
    assert!(pt_ops_since(&h, m).is_empty());
    assert!(
        h.sim.report(DOMID).msixtbl_accesses >= tbl_before + 3,
        "the masks of bound entries are Xen's"
    );

    // The PBA reads from the device (it shows entry 1 pending).
    assert_eq!(v.mmio_read(0xF101_2000, 8).unwrap(), 2);

    // Disable: every bound entry unbound and unmapped, the device's Enable off.
    let m = dm_ops(&h).len();
    cfg_wr(&mut v, VF_SLOT, cap + 2, 2, 0x0000);
    let ops = pt_ops_since(&h, m);
    assert_eq!(ops_named(&ops, "unbind_pt_irq_msi").len(), 3, "{ops:?}");
    assert_eq!(ops_named(&ops, "unmap_pirq").len(), 3);
    assert!(ops.iter().all(|o| o["rc"] == 0), "{ops:?}");
    assert_eq!(msix_control_writes(&h, cap).last(), Some(&0x0004));

    // Enable again and unmask entry 0 (its message is still there), then SIGTERM: Bus
    // Master off, unmap the BARs, unbind, reset, release_msix, deassign (from the guest,
    // then from DOMID_IO where Xen quarantined it), revoke.
    cfg_wr(&mut v, VF_SLOT, cap + 2, 2, 0x8000);
    v.mmio_write(table + 12, 4, 0).unwrap();
    let m = dm_ops(&h).len();
    let codes = h.stop_all();
    assert_eq!(codes, vec![Some(0)]);
    let ops = pt_ops_since(&h, m);
    assert_eq!(
        names(&ops),
        [
            "get_domain_info",
            "memory_mapping",
            "memory_mapping",
            "memory_mapping",
            "unbind_pt_irq_msi",
            "unmap_pirq",
            "release_msix",
            "deassign_device",
            "deassign_device",
            "iomem_permission",
            "iomem_permission"
        ],
        "{ops:?}"
    );
    assert!(ops.iter().all(|o| o["rc"] == 0), "{ops:?}");
    assert!(ops_named(&ops, "memory_mapping")
        .iter()
        .all(|o| o["add"] == false));
    assert!(ops_named(&ops, "iomem_permission")
        .iter()
        .all(|o| o["allow"] == false));
    let d = ops_named(&ops, "deassign_device");
    assert_eq!(
        (d[0]["from_dom_io"].clone(), d[1]["from_dom_io"].clone()),
        (false.into(), true.into())
    );
    let r = h.sim.report(DOMID);
    assert!(r.crashed.is_none() && r.stuck.is_empty(), "{r:?}");
}
