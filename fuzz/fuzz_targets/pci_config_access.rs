//! Arbitrary sequences of config (CF8/CFC and ECAM, any size and offset) and MMIO accesses
//! against a bridge with three snapshot devices, checking after every access that nothing
//! reached a device that the register table does not pass through, that reads agree with the
//! table, and that Xen's p2m (the fake Xen of `pci_host_bridge_testing`, 64 frames per
//! `memory_mapping` call) is exactly what the guest's placement and decode ask for, inside the
//! devices' own BARs and off their MSI-X pages (`pci_host_bridge_testing::Checker`); a run
//! whose selector asks for it (`pvh_dm_fuzz::pci::NO_STOP` clear) ends with a stop that must
//! leave nothing in Xen.
//! The fixed prologues (placement, enumeration, Linux's MSI-X bring-up) are checked by the
//! stable tests; here each variant (the selector byte's bits) is built, started, replayed
//! unchecked and checked once per process into a `Template`, and every input runs on a copy
//! of it (`Template::fork`, checked against a bridge prepared from scratch by
//! pci-host-bridge/tests/fork.rs).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run pci_config_access -O -- -max_total_time=20`
#![no_main]

use libfuzzer_sys::fuzz_target;
use pci_host_bridge::{PciConfig, PciDeviceConfig};
use pci_host_bridge_testing::XenLikeConfig;
use pci_host_bridge_testing::{
    enumeration_ops, ops_from_bytes, placement_ops, snapshot_device_config, Template,
};

const PF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-pf.json");
const VF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-vf.json");
const LEGACY: &str = include_str!("../../pci-host-bridge/testdata/legacy-io-msi.json");
const VIRTIO: &str = include_str!("../../pci-host-bridge/testdata/real/virtio-net-1af4-1041.json");

fn dev(slot: u8, function: u8) -> PciDeviceConfig {
    snapshot_device_config(slot, function)
}

/// The bits of the selector byte that choose the set-up (the same key, the same template).
fn key(sel: u8) -> u8 {
    sel & 0x84 | (sel & 3).min(2)
}

/// The prepared bridge for one selector: started, prologue replayed, state checked.
fn template(sel: u8) -> Template {
    let config = PciConfig {
        mmio64_base: if sel & 4 != 0 { 0x80_0000_0000 } else { 0 },
        mmio64_size: if sel & 4 != 0 { 0x10_0000_0000 } else { 0 },
        devices: vec![dev(2, 0), dev(2, 1), dev(5, 0), dev(6, 0)],
        ..Default::default()
    };
    let devices = pvh_dm_fuzz::pci::snapshots(&[PF, VF, LEGACY, VIRTIO]);
    // Xen with or without interrupt remapping (multi-vector MSI refused without it).
    let xen = XenLikeConfig {
        intremap: sel & 0x80 != 0,
        ..Default::default()
    };
    let mut t = Template::new(&config, &devices, xen).expect("bridge");
    // Start from a fresh bridge (0), placed BARs with decode on (1), or a full Linux-like
    // enumeration with sizing probes (2, 3).
    t.prepare(|bridge, checker| {
        let prologue = match sel & 0x3 {
            0 => Vec::new(),
            1 => placement_ops(bridge),
            _ => enumeration_ops(bridge),
        };
        for op in prologue {
            // Fixed, and checked by the stable tests: replayed unchecked.
            checker.apply_unchecked(bridge, op);
        }
    });
    pvh_dm_fuzz::pci::checked(t)
}

fuzz_target!(|data: &[u8]| pvh_dm_fuzz::pci::run(data, key, template, ops_from_bytes));
