//! MSI-X on the VF: Linux's sequence bound lazily entry by entry, latched messages applied
//! at the unmask, the BAR (not the table) as table_base, and a refused entry.

use super::*;

#[test]
fn msix_linux_sequence_binds_lazily() {
    let mut t = vf();
    place_vf(&mut t);
    t.handle.clear_writes();
    assert_eq!(t.rd(0x72, 2), 0x0004, "5 entries, disabled, not masked");
    let e = |i: u64| VF_TABLE + 16 * i;
    // Entries programmed while masked (and MSI-X off): nothing bound.
    for i in 0..5u64 {
        assert!(t.mmio_wr_act(e(i) + 12, 4, 1).is_empty());
        assert!(t.mmio_wr_act(e(i), 4, 0xFEE0_0000 | i << 12).is_empty());
        assert!(t.mmio_wr_act(e(i) + 4, 4, 0).is_empty());
        assert!(t.mmio_wr_act(e(i) + 8, 4, 0x41 + i).is_empty());
    }
    // Enable with the function masked, then clear the function mask: all entries masked,
    // nothing bound; each change reaches the device as one 16-bit Message Control write.
    assert!(t.wr(0x72, 2, 0xC000).is_empty());
    assert_eq!(t.rd(0x72, 2), 0xC004);
    assert!(t.wr(0x72, 2, 0x8000).is_empty());
    assert_eq!(msix_control_writes(&t), vec![0xC004, 0x8004]);
    // Unmask entries 0 and 1 one by one: one map + bind each, with the host address of the
    // table's BAR as table_base (the table is at offset 0 of BAR3 here; see
    // msix_table_base_is_the_bar_not_the_table for an offset) and the guest table address as
    // gtable.
    let tb = 0x38_0010_8000u64;
    assert_eq!(
        t.mmio_wr_act(e(0) + 12, 4, 0),
        vec![
            map_pirq(VF_SBDF, 0, tb, 1),
            bind(64, 0xFEE0_0000, 0x41, VF_TABLE)
        ]
    );
    assert_eq!(
        t.mmio_wr_act(e(1) + 12, 4, 0),
        vec![
            map_pirq(VF_SBDF, 1, tb, 1),
            bind(65, 0xFEE0_1000, 0x42, VF_TABLE)
        ]
    );
    assert_eq!(
        t.func().bindings().msix_bound(),
        2,
        "entries 2-4 stay masked: unbound"
    );
    // Reads come back from the emulated table.
    assert_eq!(t.mmio_rd(e(1), 8), 0xFEE0_1000);
    assert_eq!(t.mmio_rd(e(1) + 12, 4), 0);
    // New data and address while bound: latched, nothing happens until the unmask that Xen
    // forwards after address/data changed (vmsi.c:321-326); then one rebind keeping the
    // pirq. (The old test expected a rebind on every DWORD.)
    assert!(t.mmio_wr_act(e(1) + 8, 4, 0x0051).is_empty());
    assert!(t.mmio_wr_act(e(1), 8, 0xFEE0_2004).is_empty());
    assert_eq!(
        t.mmio_wr_act(e(1) + 12, 4, 0),
        vec![bind(65, 0xFEE0_2004, 0x51, VF_TABLE)]
    );
    // Same value again: nothing.
    assert!(t.mmio_wr_act(e(1) + 8, 4, 0x0051).is_empty());
    assert!(t.mmio_wr_act(e(1) + 12, 4, 0).is_empty());
    // Mask entry 0: nothing (Xen's msixtbl owns the masks of bound entries: the DM never
    // sees them on Xen, and must not unbind; the old test expected an unbind). Unmask:
    // nothing either, it is still bound as it was.
    assert!(t.mmio_wr_act(e(0) + 12, 4, 1).is_empty());
    assert!(t.mmio_wr_act(e(0) + 12, 4, 0).is_empty());
    assert_eq!(t.func().bindings().msix_bound(), 2);
    // Function mask: written through, nothing unbound (Xen tracks it from dom0's control
    // write; the old test expected every entry unbound).
    t.handle.clear_writes();
    assert!(t.wr(0x72, 2, 0xC000).is_empty());
    assert!(t.wr(0x72, 2, 0x8000).is_empty());
    assert_eq!(msix_control_writes(&t), vec![0xC004, 0x8004]);
    assert_eq!(t.func().bindings().msix_bound(), 2);
    // Moving the table's BAR changes gtable: Xen registers gtable on the first bind only, so
    // each entry is unbound and bound again (same pirq).
    let a = t.wr(0x1C, 4, 0xF102_0000);
    let irq: Vec<PtOp> = a
        .iter()
        .filter(|o| !matches!(o, PtOp::MemoryMapping { .. }))
        .cloned()
        .collect();
    assert_eq!(
        irq,
        vec![
            unbind(64, 0xFEE0_0000, 0x41, VF_TABLE),
            bind(64, 0xFEE0_0000, 0x41, 0xF102_0000),
            unbind(65, 0xFEE0_2004, 0x51, VF_TABLE),
            bind(65, 0xFEE0_2004, 0x51, 0xF102_0000),
        ],
        "{a:?}"
    );
    t.wr(0x1C, 4, VF_TABLE);
    // Odd accesses to the table: dropped / all-ones, no call.
    assert!(t.mmio_wr_act(e(2) + 12, 2, 0).is_empty());
    assert!(t.mmio_wr_act(e(2) + 12, 1, 0).is_empty());
    assert!(t.mmio_wr_act(e(2) + 10, 4, 0).is_empty());
    assert!(
        t.mmio_wr_act(e(2) + 12, 8, 0).is_empty(),
        "QWORD must be 8-aligned"
    );
    assert_eq!(t.mmio_rd(e(2) + 12, 4), 1, "entry 2 still masked");
    assert_eq!(t.mmio_rd(e(2) + 12, 2), 0xFFFF);
    // The PBA comes from the device (entry 1 pending there); writes dropped.
    assert_eq!(t.mmio_rd(VF_PBA, 8), 2);
    assert!(t.mmio_wr_act(VF_PBA, 8, 0).is_empty());
    assert_eq!(t.mmio_rd(VF_PBA, 4), 2);
    // Disable: both unbound and unmapped, every entry reads masked, the device's Enable off.
    t.handle.clear_writes();
    assert_eq!(
        t.wr(0x72, 2, 0x0000),
        vec![
            unbind(64, 0xFEE0_0000, 0x41, VF_TABLE),
            unmap(64),
            unbind(65, 0xFEE0_2004, 0x51, VF_TABLE),
            unmap(65),
        ]
    );
    for i in 0..5 {
        assert_eq!(
            t.mmio_rd(e(i) + 12, 4),
            1,
            "entry {i} masked after the disable"
        );
    }
    assert_eq!(msix_control_writes(&t), vec![0x0004]);
    assert!(lock(&t.xen).pirqs.is_empty());
    // No BAR write reached the device.
    assert!(t.handle.bar_writes().is_empty());
}

/// Address/data written to a bound entry are latched until the entry's unmask: a config write
/// in between (any: the command register here) must not rebind with them (the guest holds
/// the entry masked in Xen's msixtbl while it rewrites the message).
#[test]
fn latched_msix_message_waits_for_the_unmask() {
    let mut t = vf();
    place_vf(&mut t);
    let e0 = VF_TABLE;
    t.wr(0x72, 2, 0x8000);
    t.mmio_wr(e0, 4, 0xFEE0_0000);
    t.mmio_wr(e0 + 8, 4, 0x41);
    assert_eq!(
        names(&t.mmio_wr_act(e0 + 12, 4, 0)),
        ["map_pirq_msi", "bind_pt_irq_msi"]
    );
    // Linux: mask (in Xen: never seen here), new address and data.
    t.mmio_wr(e0, 4, 0xFEE0_3000);
    t.mmio_wr(e0 + 8, 4, 0x77);
    // An unrelated config write of the guest (same command value).
    assert_eq!(
        t.wr(4, 2, 0x0006),
        vec![],
        "a config write rebound a latched, not yet unmasked message"
    );
    // The unmask applies it.
    assert_eq!(
        t.mmio_wr_act(e0 + 12, 4, 0),
        vec![bind(64, 0xFEE0_3000, 0x77, VF_TABLE)]
    );
}

/// Xen wants the address of the BAR holding the table as `table_base` and adds the table
/// offset itself (msi.c:847-860); a table at BAR3 + 0x1000 must not pass BAR3 + 0x1000.
#[test]
fn msix_table_base_is_the_bar_not_the_table() {
    let json = r#"{
        "format": "pci-host-bridge-snapshot/1",
        "description": "MSI-X table at BAR3 + 0x1000, PBA at BAR3 + 0x2000",
        "config_len": 256,
        "config": {
            "0x00": "34 12 78 56 00 00 10 00",
            "0x08": "00 00 00 02",
            "0x34": "70",
            "0x70": "11 00 03 00 03 10 00 00 03 20 00 00"
        },
        "bars": [
            { "index": 3, "kind": "mem64", "prefetchable": true, "host_addr": "0x3800108000", "size": "0x4000" }
        ]
    }"#;
    let dev = SnapshotDevice::from_json(json, "table-at-0x1000").unwrap();
    let mut t = one_dev(dev);
    assert!(t.wr(0x1C, 4, 0xF101_0000).is_empty());
    assert!(t.wr(0x20, 4, 0).is_empty());
    // Pages 1 (table) and 2 (PBA) trapped; 0 and 3 mapped.
    assert_eq!(
        runs(&t.wr(4, 2, 0x0006)),
        vec![
            mem(0xF1010, 0x3800108, 1, true),
            mem(0xF1013, 0x380010B, 1, true)
        ]
    );
    let table = 0xF101_1000u64;
    t.wr(0x72, 2, 0x8000);
    t.mmio_wr(table, 4, 0xFEE0_0000);
    t.mmio_wr(table + 8, 4, 0x45);
    assert_eq!(
        t.mmio_wr_act(table + 12, 4, 0),
        vec![
            map_pirq(0x4010, 0, 0x38_0010_8000, 1),
            bind(64, 0xFEE0_0000, 0x45, table)
        ]
    );
}

/// Xen refuses a pirq (the domain's pirqs are used up: ENOSPC): the entry the guest unmasked
/// reads back masked, nothing of it stays mapped, and the others are not disturbed.
#[test]
fn refused_msix_entry_reads_back_masked() {
    let mut t = one_with(
        SnapshotDevice::open_at(&testdata(VF), Some(VF_HOST)).unwrap(),
        VF_HOST,
        3,
        PciConfig::default(),
        XenLikeConfig {
            pirq_limit: Some(1),
            ..Default::default()
        },
    );
    place_vf(&mut t);
    t.wr(0x72, 2, 0x8000);
    for i in 0..2u64 {
        t.mmio_wr(VF_TABLE + 16 * i, 4, 0xFEE0_0000);
        t.mmio_wr(VF_TABLE + 16 * i + 8, 4, 0x41 + i);
    }
    assert_eq!(
        names(&t.mmio_wr_act(VF_TABLE + 12, 4, 0)),
        ["map_pirq_msi", "bind_pt_irq_msi"]
    );
    assert_eq!(
        t.mmio_wr_act(VF_TABLE + 16 + 12, 4, 0),
        vec![map_pirq(VF_SBDF, 1, 0x38_0010_8000, 1)]
    );
    assert_eq!(lock(&t.xen).log.last().unwrap().result, Err(libc::ENOSPC));
    assert_eq!(
        t.mmio_rd(VF_TABLE + 16 + 12, 4),
        1,
        "refused: reads back masked"
    );
    assert_eq!(
        t.mmio_rd(VF_TABLE + 12, 4),
        0,
        "entry 0 stays unmasked and bound"
    );
    assert_eq!(t.func().bindings().msix_bound(), 1);
    assert_eq!(lock(&t.xen).pirqs.len(), 1);
}
