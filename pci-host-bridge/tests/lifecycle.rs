//! The assignment lifecycle as the fake Xen and the snapshot device recorded it, in one
//! timeline (both stamp their events from one sequence): the order of start and stop, the
//! rollback of a start that fails part way, a guest whose RAM reaches the windows, and what a
//! stop leaves behind (nothing).

mod common;

use common::*;
use ioreq_server::device::{Actions, Device};
use pci_host_bridge::backend::snapshot::{DeviceEventKind, SnapshotDevice, SnapshotHandle};
use pci_host_bridge::{PciAddress, PciConfig};
use pci_host_bridge_testing::{
    bridge_with_snapshots, linux_msix_ops, lock, placement_ops, XenLike, XenLikeConfig, XenState,
};
use std::sync::{Arc, Mutex};
use xen_abi::passthrough::PtOp;

const VF: &str = "sriov-nic-vf.json";
const VF_HOST: PciAddress = PciAddress::new(0, 3, 2, 2);
const VF_SBDF: u32 = 0x0312;

fn vf_dev() -> SnapshotDevice {
    SnapshotDevice::open_at(&testdata(VF), Some(VF_HOST)).unwrap()
}

/// The VF at guest 00:03.0 over `xen`, its executor set but not started.
fn vf_unstarted(xen: XenLike) -> One {
    unstarted(vf_dev(), VF_HOST, 3, PciConfig::default(), xen)
}

/// A fake Xen whose guest has `gib` GiB of RAM.
fn xen_with_ram_gib(gib: u64) -> XenLike {
    XenLike::new(XenLikeConfig {
        max_pages: (gib << 30) / 4096,
        ..Default::default()
    })
}

/// The guest places the VF's BARs (BAR0 at 0xF100_0000, BAR3 at 0xF101_0000), turns memory
/// decode and bus master on and sets MSI-X Enable.
fn place_bars_and_enable(t: &mut One) {
    for (reg, v) in [
        (0x10, 0xF100_0000u64),
        (0x14, 0),
        (0x1C, 0xF101_0000),
        (0x20, 0),
    ] {
        t.wr(reg, 4, v);
    }
    t.wr(4, 2, 0x0006);
    t.wr(0x72, 2, 0x8000);
}

/// Stop the bridge: the [`timeline`] of what the stop did.
fn stop_timeline(t: &mut One, a: &mut Actions) -> Vec<String> {
    let from = lock(&t.xen).log.len();
    let ev = t.handle.events().len();
    t.bridge.stop(a);
    timeline(&t.xen, from, &t.handle, ev)
}

/// The hypercalls (from log index `from`) and the device's events (from index `ev`) merged
/// by sequence number, as short strings.
fn timeline(xen: &Arc<Mutex<XenState>>, from: usize, h: &SnapshotHandle, ev: usize) -> Vec<String> {
    let mut v: Vec<(u64, String)> = lock(xen).log[from..]
        .iter()
        .map(|l| {
            let s = match &l.op {
                PtOp::MemoryMapping { gfn, nr, add, .. } => {
                    format!(
                        "memory_mapping {gfn:#x}+{nr} {}",
                        if *add { "add" } else { "remove" }
                    )
                }
                PtOp::IomemPermission { mfn, nr, allow } => {
                    format!("iomem_permission {mfn:#x}+{nr} {allow}")
                }
                PtOp::DeassignDevice { from_dom_io, .. } => {
                    format!("deassign_device from_dom_io={from_dom_io}")
                }
                PtOp::UnbindPtIrqMsi { pirq, .. } => format!("unbind_pt_irq {pirq}"),
                PtOp::UnmapPirq { pirq } => format!("unmap_pirq {pirq}"),
                o => names(std::slice::from_ref(o))[0].clone(),
            };
            (l.seq, s)
        })
        .collect();
    for e in h.events_from(ev) {
        let s = match e.kind {
            DeviceEventKind::ConfigWrite { offset, data } => format!(
                "device: config write {offset:#x} = {}",
                data.iter()
                    .rev()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
            DeviceEventKind::BarWrite { index, offset, .. } => {
                format!("device: BAR{index} write {offset:#x}")
            }
            DeviceEventKind::EnableDecode => "device: decode on".into(),
            DeviceEventKind::DisableDecode => "device: decode off".into(),
            DeviceEventKind::Reset => "device: reset".into(),
        };
        v.push((e.seq, s));
    }
    v.sort();
    v.into_iter().map(|(_, s)| s).collect()
}

#[test]
fn start_and_stop_in_order_and_nothing_left() {
    let mut t = vf_unstarted(XenLike::new(XenLikeConfig::default()));
    let mut a = Actions::new();
    t.bridge.start(&mut a).unwrap();
    assert_eq!(
        timeline(&t.xen, 0, &t.handle, 0),
        [
            "get_domain_info",
            "test_assign_device",
            "device: decode on",
            "prepare_msix",
            "device: reset",
            "assign_device",
            "iomem_permission 0x3800020+16 true",
            "iomem_permission 0x3800108+4 true",
        ]
    );
    // The guest places the BARs (bus master on) and binds two MSI-X entries.
    t.ops();
    place_bars_and_enable(&mut t);
    for i in 0..2u64 {
        t.mmio_wr(0xF101_0000 + 16 * i, 4, 0xFEE0_0000);
        t.mmio_wr(0xF101_0000 + 16 * i + 8, 4, 0x30 + i);
        assert_eq!(t.mmio_wr_act(0xF101_0000 + 16 * i + 12, 4, 0).len(), 2);
    }
    assert_eq!(t.dev_word(4) & 4, 4, "bus master on in the device");
    assert_eq!(
        stop_timeline(&mut t, &mut a),
        [
            // Is the guest still there?
            "get_domain_info",
            // The guest's DMA stops before anything is taken away (one 16-bit write).
            "device: config write 0x4 = 0000",
            "memory_mapping 0xf1000+16 remove",
            "memory_mapping 0xf1011+1 remove",
            "memory_mapping 0xf1013+1 remove",
            "unbind_pt_irq 64",
            "unmap_pirq 64",
            "unbind_pt_irq 65",
            "unmap_pirq 65",
            // The host's MSI-X Enable off: one 16-bit write of Message Control.
            "device: config write 0x72 = 0004",
            "device: reset",
            "release_msix",
            "deassign_device from_dom_io=false",
            // Xen quarantined it with DOMID_IO: take it back for dom0.
            "deassign_device from_dom_io=true",
            "iomem_permission 0x3800020+16 false",
            "iomem_permission 0x3800108+4 false",
            "device: decode off",
        ]
    );
    assert_eq!(lock(&t.xen).leftovers(), Vec::<String>::new());
    // Stopping twice does nothing more (but ask whether the guest is alive).
    t.ops();
    t.bridge.stop(&mut a);
    assert_eq!(names(&t.ops()), ["get_domain_info"]);
    assert!(a.is_empty());
}

/// The same hand-back checks through the checker, after Linux's bring-up, on every
/// hand-made function at once. With several functions, each function's unmaps must still
/// find the guest's iomem permission in place (Xen's memory_mapping checks it for removals
/// too, domctl.c), so no function's stop may revoke another's permissions first.
#[test]
fn checker_sees_a_clean_hand_back_of_every_function() {
    let config = PciConfig {
        devices: vec![dev_cfg(2, 0), dev_cfg(3, 0), dev_cfg(4, 0), dev_cfg(5, 0)],
        ..Default::default()
    };
    let devs = vec![
        snapshot("sriov-nic-pf.json"),
        snapshot("intel-82599-like-pf.json"),
        snapshot("intel-82599-like-vf.json"),
        snapshot("legacy-io-msi.json"),
    ];
    let (mut bridge, mut checker) = bridge_with_snapshots(&config, devs).unwrap();
    for op in placement_ops(&bridge) {
        checker.apply(&mut bridge, op).unwrap();
    }
    for op in linux_msix_ops(&bridge, 0x40) {
        checker.apply(&mut bridge, op).unwrap();
    }
    assert!(!checker.xen().bound.is_empty());
    assert!(!checker.xen().p2m.is_empty());
    checker.stop_and_check(&mut bridge).unwrap();
}

/// A start that fails part way (Xen refuses assign_device) is undone by the stop the server
/// then runs: release_msix for the prepare_msix done, decode off, and nothing that was not
/// done (no deassign, no revoke). The error says why in terms of the IOMMU context.
#[test]
fn failed_assign_is_rolled_back() {
    let xen = XenLike::with_fault(
        XenLikeConfig::default(),
        Box::new(|op| matches!(op, PtOp::AssignDevice { .. }).then_some(libc::EOPNOTSUPP)),
    );
    let mut t = vf_unstarted(xen);
    let mut a = Actions::new();
    let e = t.bridge.start(&mut a).unwrap_err();
    let started = timeline(&t.xen, 0, &t.handle, 0);
    assert_eq!(
        started,
        [
            "get_domain_info",
            "test_assign_device",
            "device: decode on",
            "prepare_msix",
            "device: reset",
            "assign_device",
        ]
    );
    let stopped = stop_timeline(&mut t, &mut a);
    assert!(stopped.contains(&"release_msix".to_string()), "{stopped:?}");
    assert!(
        !stopped
            .iter()
            .any(|s| s.starts_with("deassign") || s.starts_with("iomem")),
        "{stopped:?}"
    );
    assert_eq!(
        stopped.last().map(String::as_str),
        Some("device: decode off")
    );
    assert_eq!(lock(&t.xen).leftovers(), Vec::<String>::new());
    // assign_device's EOPNOTSUPP means the same as test_assign_device's: no IOMMU context.
    assert!(e.contains("IOMMU context"), "{e}");
}

/// The guest died before the bridge stopped: Xen freed its mappings, pirqs and permissions
/// and quarantined the function with DOMID_IO. The stop unmaps and unbinds nothing, but still
/// turns Bus Master off, resets, releases MSI-X, takes the function back from DOMID_IO and
/// turns decode off.
#[test]
fn stop_after_the_guest_died() {
    let mut t = vf_unstarted(XenLike::new(XenLikeConfig::default()));
    let mut a = Actions::new();
    t.bridge.start(&mut a).unwrap();
    place_bars_and_enable(&mut t);
    t.mmio_wr(0xF101_0000, 4, 0xFEE0_0000);
    assert_eq!(t.mmio_wr_act(0xF101_000C, 4, 0).len(), 2);
    lock(&t.xen).destroy_domain();
    let stopped = stop_timeline(&mut t, &mut a);
    assert!(
        !stopped.iter().any(|s| s.starts_with("memory_mapping")
            || s.contains("pirq")
            || s.starts_with("iomem")),
        "{stopped:?}"
    );
    for step in [
        "device: config write 0x4 = 0000",
        "device: reset",
        "release_msix",
        "deassign_device from_dom_io=true",
        "device: decode off",
    ] {
        assert!(stopped.contains(&step.to_string()), "{step}: {stopped:?}");
    }
    assert_eq!(lock(&t.xen).leftovers(), Vec::<String>::new());
}

/// A domain without an IOMMU context (libxl creates PVH domains so): test_assign_device
/// answers EOPNOTSUPP and nothing else is done.
#[test]
fn no_iommu_context_refused_before_anything_is_done() {
    let xen = XenLike::new(XenLikeConfig {
        iommu: false,
        ..Default::default()
    });
    let mut t = vf_unstarted(xen);
    let mut a = Actions::new();
    let e = t.bridge.start(&mut a).unwrap_err();
    assert!(e.contains("IOMMU context"), "{e}");
    assert_eq!(
        timeline(&t.xen, 0, &t.handle, 0),
        ["get_domain_info", "test_assign_device"]
    );
    t.bridge.stop(&mut a);
    assert_eq!(lock(&t.xen).leftovers(), Vec::<String>::new());
    assert!(t.handle.writes().is_empty());
}

/// A failing reset at start is an error, and the stop undoes the prepare_msix before it.
#[test]
fn failed_reset_is_rolled_back() {
    let mut t = vf_unstarted(XenLike::new(XenLikeConfig::default()));
    t.handle.set_reset(None);
    let mut a = Actions::new();
    assert!(t.bridge.start(&mut a).is_err());
    let from = lock(&t.xen).log.len();
    t.bridge.stop(&mut a);
    let ops = names(
        &lock(&t.xen).log[from..]
            .iter()
            .map(|l| l.op.clone())
            .collect::<Vec<_>>(),
    );
    assert_eq!(ops, ["get_domain_info", "release_msix"]);
    assert!(lock(&t.xen).assigned.is_empty());
}

/// A PVH guest's RAM fills the space below 4 GiB up to a small hole: a guest with 4 GiB
/// reaches the default ECAM and BAR windows, and the bridge refuses it before assigning
/// anything (memory_mapping over RAM frames would replace guest memory).
#[test]
fn guest_ram_reaching_the_windows_is_refused() {
    let big = xen_with_ram_gib(4);
    let mut t = vf_unstarted(big);
    let mut a = Actions::new();
    let e = t.bridge.start(&mut a).unwrap_err();
    assert!(e.contains("RAM") && e.contains("ECAM"), "{e}");
    assert_eq!(names(&t.ops()), ["get_domain_info"]);
    t.bridge.stop(&mut a);
    assert_eq!(names(&t.ops()), ["get_domain_info"], "nothing to undo");
    // 3 GiB ends below the windows (ECAM at 0xF000_0000): accepted.
    let ok = xen_with_ram_gib(3);
    let mut t = vf_unstarted(ok);
    t.bridge.start(&mut a).unwrap();
    // With the BARs above 4 GiB the ECAM window below still collides with a 4 GiB guest.
    let base = PciConfig {
        mmio64_base: 0x80_0000_0000,
        mmio64_size: 0x10_0000_0000,
        ..Default::default()
    };
    let big = xen_with_ram_gib(4);
    let mut t = unstarted(vf_dev(), VF_HOST, 3, base, big);
    assert!(t.bridge.start(&mut a).is_err());
    assert_eq!(VF_SBDF, VF_HOST.sbdf());
}

/// Xen's assign_device refuses a function whose MSI-X Function Mask is set (EBUSY,
/// msi.c:1213-1233): the start clears it in the host, after the reset and before the
/// assignment, with one 16-bit write of Message Control.
#[test]
fn host_function_mask_cleared_before_assign() {
    let mut t = vf_unstarted(XenLike::new(XenLikeConfig::default()));
    t.handle.poke_config(0x72, &[0x04, 0x40]);
    let mut a = Actions::new();
    t.bridge.start(&mut a).unwrap();
    // The whole start spelled out again (as in start_and_stop_in_order_and_nothing_left), on
    // purpose: what is checked is where the write stands among the other steps.
    assert_eq!(
        timeline(&t.xen, 0, &t.handle, 0),
        [
            "get_domain_info",
            "test_assign_device",
            "device: decode on",
            "prepare_msix",
            "device: reset",
            "device: config write 0x72 = 0004",
            "assign_device",
            "iomem_permission 0x3800020+16 true",
            "iomem_permission 0x3800108+4 true",
        ]
    );
}
