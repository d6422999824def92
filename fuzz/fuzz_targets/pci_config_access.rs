//! Arbitrary sequences of config (CF8/CFC and ECAM, any size and offset) and MMIO accesses
//! against a bridge with three snapshot devices, checking after every access that nothing
//! reached a device that the register table does not pass through, that reads agree with the
//! table, and that Xen's p2m (the fake Xen of `pci_host_bridge::testing`, 64 frames per
//! `memory_mapping` call) is exactly what the guest's placement and decode ask for, inside the
//! devices' own BARs and off their MSI-X pages (`pci_host_bridge::testing::Checker`); the run
//! ends with a stop that must leave nothing in Xen.
//! The fixed prologues (placement, enumeration, Linux's MSI-X bring-up) are checked by the
//! stable tests; here they are replayed unchecked and the state they leave is checked once.
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run pci_config_access -O -- -max_total_time=20`
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pci_host_bridge::backend::snapshot::SnapshotDevice;
use pci_host_bridge::testing::{
    bridge_with_xen, enumeration_ops, ops_from_bytes, placement_ops, snapshot_device_config,
};
use pci_host_bridge::testing::{XenLike, XenLikeConfig};
use pci_host_bridge::{PciConfig, PciDeviceConfig};

const PF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-pf.json");
const VF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-vf.json");
const LEGACY: &str = include_str!("../../pci-host-bridge/testdata/legacy-io-msi.json");
const VIRTIO: &str = include_str!("../../pci-host-bridge/testdata/real/virtio-net-1af4-1041.json");

fn dev(slot: u8, function: u8) -> PciDeviceConfig {
    snapshot_device_config(slot, function)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let config = PciConfig {
        mmio64_base: if sel & 4 != 0 { 0x80_0000_0000 } else { 0 },
        mmio64_size: if sel & 4 != 0 { 0x10_0000_0000 } else { 0 },
        devices: vec![dev(2, 0), dev(2, 1), dev(5, 0), dev(6, 0)],
        ..Default::default()
    };
    static PROTOTYPES: OnceLock<Vec<SnapshotDevice>> = OnceLock::new();
    let protos = PROTOTYPES.get_or_init(|| {
        [PF, VF, LEGACY, VIRTIO]
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
    // Start from a fresh bridge (0), placed BARs with decode on (1), or a full Linux-like
    // enumeration with sizing probes (2, 3).
    let prologue = match sel & 0x3 {
        0 => Vec::new(),
        1 => placement_ops(&bridge),
        _ => enumeration_ops(&bridge),
    };
    for op in prologue {
        // Fixed, and checked by the stable tests: replayed unchecked.
        checker.apply_unchecked(&mut bridge, op);
    }
    if let Err(e) = checker.check_state(&bridge) {
        panic!("after the prologue: {e}");
    }
    for op in ops_from_bytes(&bridge, rest) {
        if let Err(e) = checker.apply(&mut bridge, op) {
            panic!("{e}");
        }
    }
    // Whatever the guest did, the hand-back leaves nothing in Xen.
    if let Err(e) = checker.stop_and_check(&mut bridge) {
        panic!("stop: {e}");
    }
});
