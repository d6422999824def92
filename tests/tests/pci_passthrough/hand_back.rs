//! (d) Two functions behind one bridge: every BAR mapping of both handed back at SIGTERM.

use super::*;

/// Two functions behind one bridge: at SIGTERM every BAR mapping of both is removed. Xen's
/// memory_mapping checks the guest's iomem permission for a removal too (domctl.c; xen-sim
/// models it), so the first function's hand-back must not revoke the second's permissions
/// before the second one's unmaps.
#[test]
fn two_functions_hand_back_every_mapping() {
    let devices = [
        device("0000:03:00.0", PF_SLOT, "sriov-nic-pf.json", ""),
        device("0000:03:02.2", VF_SLOT, "sriov-nic-vf.json", ""),
    ]
    .concat();
    let mut h = start(&devices, false);
    let mut v = h.sim.vcpu(DOMID, 0);
    let mark = dm_ops(&h).len();
    place_bars(&mut v, PF_SLOT);
    // The VF's BARs after the PF's (place_bars starts at 0xF100_0000 each time).
    let mut next = 0xF200_0000u64;
    for (bar, size, is64) in size_bars(&mut v, VF_SLOT) {
        next = next.div_ceil(size) * size;
        cfg_wr(&mut v, VF_SLOT, 0x10 + 4 * bar, 4, next & 0xFFFF_FFFF);
        if is64 {
            cfg_wr(&mut v, VF_SLOT, 0x14 + 4 * bar, 4, next >> 32);
        }
        next += size;
    }
    cfg_wr(&mut v, VF_SLOT, 4, 2, 0x0006);
    let frames = |ops: &[Value], add: bool| -> u64 {
        ops_named(ops, "memory_mapping")
            .iter()
            .filter(|o| o["add"] == add)
            .map(|o| {
                assert_eq!(o["rc"], 0, "{o}");
                match o.get("value").and_then(Value::as_u64) {
                    Some(k) if k > 0 => k,
                    _ => o["nr"].as_u64().unwrap(),
                }
            })
            .sum()
    };
    let mapped = frames(&pt_ops_since(&h, mark), true);
    assert!(mapped > 0);
    let m = dm_ops(&h).len();
    assert_eq!(h.stop_all(), vec![Some(0)]);
    let ops = pt_ops_since(&h, m);
    assert_eq!(
        frames(&ops, false),
        mapped,
        "every mapped frame removed: {ops:?}"
    );
    assert_eq!(ops_named(&ops, "release_msix").len(), 2);
    assert_eq!(ops_named(&ops, "deassign_device").len(), 4);
}
