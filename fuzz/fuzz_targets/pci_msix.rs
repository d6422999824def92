//! Arbitrary MSI-X programming: table entries written and read with any size at any offset
//! (aligned DWORD/QWORD ones take effect, the others are dropped), Message Control enable and
//! function mask, PBA reads and writes, moving the table's BAR, decode on and off, starting
//! from a fresh bridge or after Linux's bring-up sequence, over the fake Xen of
//! `pci_host_bridge_testing`. After every access the `Checker` checks on the recorded
//! hypercalls: no panic; every MSI-X `map_pirq` has the host address of the BAR the raw BIR
//! names as `table_base`, every bind the guest table address as `gtable` and the entry's
//! vector and flags; an address/data write never binds (latched until the unmask), a mask
//! write never unbinds, an unmask while MSI-X is enabled binds the entry; nothing is bound
//! while MSI-X is disabled; Xen's bindings equal the bridge's list; the device's MSI-X Enable
//! and Function Mask follow the guest's through 16-bit Message Control writes only; no
//! forwarded BAR write touches a page of the table or PBA. A run whose selector asks for it
//! (`pvh_dm_fuzz::pci::NO_STOP` clear) ends with a stop that must leave nothing in Xen.
//! The fixed prologues (placement, enumeration, Linux's MSI-X bring-up) are checked by the
//! stable tests; here each variant (the selector byte's bits) is built, started, replayed
//! unchecked and checked once per process into a `Template`, and every input runs on a copy
//! of it (`Template::fork`, checked against a bridge prepared from scratch by
//! pci-host-bridge/tests/fork.rs).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run pci_msix -O -- -max_total_time=20`
#![no_main]

use libfuzzer_sys::fuzz_target;
use pci_host_bridge::{PciConfig, PciDeviceConfig};
use pci_host_bridge_testing::XenLikeConfig;
use pci_host_bridge_testing::{
    linux_msix_ops_with, msix_ops_from_bytes, placement_ops, snapshot_device_config, Template,
};

const SRIOV_PF: &str = include_str!("../../pci-host-bridge/testdata/sriov-nic-pf.json");
const INTEL_PF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-pf.json");
const INTEL_VF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-vf.json");
const VIRTIO: &str = include_str!("../../pci-host-bridge/testdata/real/virtio-net-1af4-1041.json");

fn dev(slot: u8) -> PciDeviceConfig {
    snapshot_device_config(slot, 0)
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
        devices: vec![dev(2), dev(3), dev(4), dev(5)],
        ..Default::default()
    };
    let devices = pvh_dm_fuzz::pci::snapshots(&[SRIOV_PF, INTEL_PF, INTEL_VF, VIRTIO]);
    // Xen with or without interrupt remapping (multi-vector MSI refused without it).
    let xen = XenLikeConfig {
        intremap: sel & 0x80 != 0,
        ..Default::default()
    };
    let mut t = Template::new(&config, &devices, xen).expect("bridge");
    // Fresh (0), BARs placed with decode on (1), or placed plus Linux's bring-up (2, 3).
    t.prepare(|bridge, checker| {
        if sel & 3 != 0 {
            for op in placement_ops(bridge) {
                // Fixed, and checked by the stable tests: replayed unchecked.
                checker.apply_unchecked(bridge, op);
            }
        }
        if sel & 2 != 0 {
            // A 2-vCPU guest's drivers: 3 vectors a function, the rest masked. (All of them,
            // 134 over the four functions, made every input's stop and interrupt checks
            // cost per bound vector; the fuzzer unmasks more entries itself.)
            for op in linux_msix_ops_with(bridge, 0x30, 3) {
                checker.apply_unchecked(bridge, op);
            }
        }
    });
    pvh_dm_fuzz::pci::checked(t)
}

fuzz_target!(|data: &[u8]| pvh_dm_fuzz::pci::run(data, key, template, msix_ops_from_bytes));
