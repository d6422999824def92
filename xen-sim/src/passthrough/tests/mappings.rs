//! memory_mapping (64 iterations per call, sub-range unmaps, a different mfn crashes the
//! guest, 2M runs), ioport_mapping and the iomem permission ranges.

use super::*;

#[test]
fn memory_mapping_does_64_iterations_and_returns_the_count() {
    let (mut d, mut h) = setup(true);
    // domctl.c:472-475: no iomem permission -> EPERM, nothing mapped.
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1000, 0x3800020, 100, true)),
        Err(-libc::EPERM)
    );
    permit(&mut d, &mut h, 0x3800020, 100);
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1000, 0x3800020, 100, true)),
        Ok(64)
    );
    assert_eq!(d.p2m.len(), 64);
    // The caller re-invokes for the rest, as libxenctrl does.
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1000 + 64, 0x3800020 + 64, 36, true)),
        Ok(0)
    );
    assert!(d.p2m_mapped(0xF100_0000, 0xF106_3FFF));
    // Re-mapping the same frames is allowed (identical mapping).
    assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800020, 4, true)), Ok(0));
    // Unmap of a sub-range works (no exact-match rule); partial counts here too.
    assert_eq!(op(&mut d, &mut h, mm(0xF1010, 0x3800030, 8, false)), Ok(0));
    assert!(!d.p2m_mapped(0xF101_0000, 0xF101_0FFF));
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1020, 0x3800040, 68, false)),
        Ok(64)
    );
    // Unmapping a frame that is not mapped: EINVAL (p2m.c:1185-1190) at i = 0.
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1010, 0x3800030, 1, false)),
        Err(-libc::EINVAL)
    );
    // ... but after some were done: the count.
    assert_eq!(op(&mut d, &mut h, mm(0xF1008, 0x3800028, 16, false)), Ok(8));
    // A different mfn under an unmap is only logged; the entry goes.
    assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800021, 1, false)), Ok(0));
    assert!(d.notes["xen"]
        .as_str()
        .unwrap()
        .contains("no mapping between"));
    assert!(d.report.crashed.is_none());
}

#[test]
fn mapping_over_a_different_mfn_crashes_the_guest() {
    let (mut d, mut h) = setup(true);
    permit(&mut d, &mut h, 0x3800000, 0x1000);
    assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800020, 4, true)), Ok(0));
    // Frame 2 is mapped to 0x3800022; mapping it to another mfn is "not permitted".
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1000, 0x3800100, 4, true)),
        Err(-libc::EPERM)
    );
    assert!(d
        .report
        .crashed
        .as_deref()
        .unwrap()
        .contains("not permitted"));
    // 2 frames in, it fails at the first conflicting one -> the count done.
    let (mut d, mut h) = setup(true);
    permit(&mut d, &mut h, 0x3800000, 0x1000);
    op(&mut d, &mut h, mm(0xF1002, 0x3800022, 1, true)).unwrap();
    assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800100, 4, true)), Ok(2));
}

#[test]
fn aligned_two_megabyte_runs_take_one_iteration() {
    let (mut d, mut h) = setup(true);
    permit(&mut d, &mut h, 0x3800000, 1 << 16);
    // gfn and mfn 2M-aligned: 64 iterations of 512 frames = 32768 frames (128 MiB).
    assert_eq!(
        op(&mut d, &mut h, mm(0x100000, 0x3800000, 40000, true)),
        Ok(64 * 512)
    );
    // Misaligned mfn: 4K iterations.
    let (mut d, mut h) = setup(true);
    permit(&mut d, &mut h, 0x3800000, 1 << 16);
    assert_eq!(
        op(&mut d, &mut h, mm(0x100000, 0x3800001, 1024, true)),
        Ok(64)
    );
}

#[test]
fn ioport_mapping_is_keyed_by_machine_port() {
    let (mut d, mut h) = setup(true);
    let io = |g, m, n, add| PtOp::IoportMapping {
        gport: g,
        mport: m,
        nr: n,
        add,
    };
    assert_eq!(
        op(&mut d, &mut h, io(0xFFF0, 0xE000, 0x20, true)),
        Err(-libc::EINVAL)
    );
    op(&mut d, &mut h, io(0xC000, 0xE000, 0x20, true)).unwrap();
    assert!(d.ioport_mapped(0xC01C, 4) && !d.ioport_mapped(0xC01E, 4));
    // The guest moved the BAR: an add for the same machine port replaces the entry.
    op(&mut d, &mut h, io(0xD000, 0xE000, 0x20, true)).unwrap();
    assert_eq!(d.ioport_map, vec![(0xD000, 0xE000, 0x20)]);
    // Remove by machine port; removing what is not there is no error.
    op(&mut d, &mut h, io(0, 0xE000, 0x20, false)).unwrap();
    assert!(d.ioport_map.is_empty());
    op(&mut d, &mut h, io(0, 0xE000, 0x20, false)).unwrap();
}

#[test]
fn iomem_permission_ranges() {
    let (mut d, _) = setup(true);
    d.iomem_change(10, 19, true);
    d.iomem_change(20, 29, true);
    assert_eq!(d.iomem, vec![(10, 29)]);
    d.iomem_change(15, 16, false);
    assert_eq!(d.iomem, vec![(10, 14), (17, 29)]);
    assert!(d.iomem_permitted(17, 29) && !d.iomem_permitted(14, 17));
}
