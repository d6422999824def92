//! Arbitrary MSI-X programming: table entries written and read with any size at any offset
//! (aligned DWORD/QWORD ones take effect, the others are dropped), Message Control enable and
//! function mask, PBA reads and writes, moving the table's BAR, decode on and off, starting
//! from a fresh bridge or after Linux's bring-up sequence, over the fake Xen of
//! `pci_host_bridge::testing`. After every access the `Checker` checks on the recorded
//! hypercalls: no panic; every MSI-X `map_pirq` has the host address of the BAR the raw BIR
//! names as `table_base`, every bind the guest table address as `gtable` and the entry's
//! vector and flags; an address/data write never binds (latched until the unmask), a mask
//! write never unbinds, an unmask while MSI-X is enabled binds the entry; nothing is bound
//! while MSI-X is disabled; Xen's bindings equal the bridge's list; the device's MSI-X Enable
//! and Function Mask follow the guest's through 16-bit Message Control writes only; no
//! forwarded BAR write touches a page of the table or PBA. The run ends with a stop that must
//! leave nothing in Xen.
//! The fixed prologues (placement, enumeration, Linux's MSI-X bring-up) are checked by the
//! stable tests; here they are replayed unchecked and the state they leave is checked once.
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run pci_msix -O -- -max_total_time=20`
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pci_host_bridge::backend::snapshot::SnapshotDevice;
use pci_host_bridge::testing::{
    bridge_with_xen, linux_msix_ops, msix_ops_from_bytes, placement_ops, snapshot_device_config,
};
use pci_host_bridge::testing::{XenLike, XenLikeConfig};
use pci_host_bridge::{PciConfig, PciDeviceConfig};

const SRIOV_PF: &str = include_str!("../../pci-host-bridge/testdata/sriov-nic-pf.json");
const INTEL_PF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-pf.json");
const INTEL_VF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-vf.json");
const VIRTIO: &str = include_str!("../../pci-host-bridge/testdata/real/virtio-net-1af4-1041.json");

fn dev(slot: u8) -> PciDeviceConfig {
    snapshot_device_config(slot, 0)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let config = PciConfig {
        mmio64_base: if sel & 4 != 0 { 0x80_0000_0000 } else { 0 },
        mmio64_size: if sel & 4 != 0 { 0x10_0000_0000 } else { 0 },
        devices: vec![dev(2), dev(3), dev(4), dev(5)],
        ..Default::default()
    };
    static PROTOTYPES: OnceLock<Vec<SnapshotDevice>> = OnceLock::new();
    let protos = PROTOTYPES.get_or_init(|| {
        [SRIOV_PF, INTEL_PF, INTEL_VF, VIRTIO]
            .iter()
            .map(|j| SnapshotDevice::from_json(j, "embedded").expect("embedded snapshot"))
            .collect()
    });
    let devices = protos.iter().map(SnapshotDevice::duplicate).collect();
    // Xen with or without interrupt remapping (multi-vector MSI refused without it).
    let xen = XenLike::new(XenLikeConfig {
        intremap: sel & 0x80 != 0,
        ..Default::default()
    });
    let (mut bridge, mut checker) = bridge_with_xen(&config, devices, xen).expect("bridge");
    // Fresh (0), BARs placed with decode on (1), or placed plus Linux's bring-up (2, 3).
    let mut prologue = Vec::new();
    if sel & 3 != 0 {
        prologue = placement_ops(&bridge);
    }
    for op in prologue {
        // Fixed, and checked by the stable tests: replayed unchecked.
        checker.apply_unchecked(&mut bridge, op);
    }
    if sel & 2 != 0 {
        for op in linux_msix_ops(&bridge, 0x30) {
            checker.apply_unchecked(&mut bridge, op);
        }
    }
    if let Err(e) = checker.check_state(&bridge) {
        panic!("after the prologue: {e}");
    }
    for op in msix_ops_from_bytes(&bridge, rest) {
        if let Err(e) = checker.apply(&mut bridge, op) {
            panic!("{e}");
        }
    }
    // Whatever the guest did, the hand-back leaves nothing in Xen.
    if let Err(e) = checker.stop_and_check(&mut bridge) {
        panic!("stop: {e}");
    }
});
