//! SR-IOV VF synthesis: IDs, BARs and the pin from the PF's SR-IOV capability, and the
//! snapshot rules for a VF.

use super::*;

#[test]
fn vf_ids_bars_and_pin_come_from_the_pf() {
    let mut t = vf();
    // Raw config: IDs 0xFFFF, BARs 0; the guest sees the PF's vendor and VF Device ID.
    assert_eq!(t.dev_dword(0), 0xFFFF_FFFF);
    assert_eq!(t.rd(0, 4), 0x154c_8086);
    assert!(t.func().device().is_virtual_function());
    assert_eq!(t.rd(0x3D, 1), 0, "no INTx on a VF");
    // BAR sizing: BAR0 64 KiB 64-bit prefetchable, BAR3 16 KiB, the others unused.
    let mut sizes = Vec::new();
    for reg in (0x10..0x28).step_by(4) {
        t.wr(reg, 4, 0xFFFF_FFFF);
        sizes.push(t.rd(reg, 4));
        t.wr(reg, 4, 0);
    }
    assert_eq!(
        sizes,
        vec![0xFFFF_000C, 0xFFFF_FFFF, 0, 0xFFFF_C00C, 0xFFFF_FFFF, 0]
    );
    // VF 2 of the PF: BARi = VF BARi base + 2 * size.
    let host = |i: usize| t.func().device().bar(i).unwrap().host_addr;
    assert_eq!((host(0), host(3)), (0x38_0002_0000, 0x38_0010_8000));
    // Decode on: BAR0 whole, BAR3 around the table (page 0) and PBA (page 2).
    assert_eq!(
        runs(&place_vf(&mut t)),
        vec![
            mem(0xF1000, 0x3800020, 16, true),
            mem(0xF1011, 0x3800109, 1, true),
            mem(0xF1013, 0x380010B, 1, true),
        ]
    );
    // Only bus mastering reached the device.
    assert!(
        t.handle.writes().iter().all(|w| w.offset == 4),
        "{:?}",
        t.handle.writes()
    );
}

#[test]
fn vf_snapshot_rules() {
    // Not a VF of that PF (03:01.0 is below First VF Offset): refused.
    assert!(SnapshotDevice::open_at(&testdata(VF), Some(PciAddress::new(0, 3, 1, 0))).is_err());
    // Past NumVFs (8): 03:03.0 would be VF 8.
    assert!(SnapshotDevice::open_at(&testdata(VF), Some(PciAddress::new(0, 3, 3, 0))).is_err());
    let d = SnapshotDevice::open_at(&testdata(VF), Some(PciAddress::new(0, 3, 2, 7))).unwrap();
    assert_eq!(d.vf_identity().unwrap().index, 7);
    assert_eq!(d.bar(0).unwrap().host_addr, 0x38_0007_0000);
    // physfn and explicit ids together: one truth only.
    let text = std::fs::read_to_string(testdata(VF)).unwrap().replace(
        "\"physfn\"",
        "\"ids\": {\"vendor\": \"0x8086\", \"device\": \"0x1\"}, \"physfn\"",
    );
    let dir = std::env::temp_dir().join(format!("vf-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(testdata(PF), dir.join(PF)).unwrap();
    std::fs::write(dir.join(VF), text).unwrap();
    let e = SnapshotDevice::open(&dir.join(VF)).unwrap_err().to_string();
    assert!(e.contains("physfn"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
