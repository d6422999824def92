//! Arbitrary programming of the MSI capability (control with enable and Multiple Message
//! Enable, address, upper address, data, mask, pending, any byte of the capability) and of the
//! command register, on functions with 32-bit and 64-bit MSI, with and without per-vector
//! masking and with multiple messages, some with INTx forwarding, over the fake Xen of
//! `pci_host_bridge_testing` (with or without interrupt remapping). After every access the
//! `Checker` checks on the recorded hypercalls: no panic; every `map_pirq` / `bind_pt_irq`
//! matches the state programmed at that moment (entry 0, nvec = 2^MME, vector i of the block
//! bound to gvec + i); the MSI vector is bound exactly while the guest's Enable reads 1 (a
//! refused multi-vector bind reads back 0); the device's MSI Enable is set exactly while the
//! vector is bound; nothing else of the capability reaches the device; Interrupt Disable is
//! written only to the wanted state. A run whose selector asks for
//! it (`pvh_dm_fuzz::pci::NO_STOP` clear) ends with a stop that must leave nothing in Xen.
//! The fixed prologues (placement, enumeration, Linux's MSI-X bring-up) are checked by the
//! stable tests; here each variant (the selector byte's bits) is built, started, replayed
//! unchecked and checked once per process into a `Template`, and every input runs on a copy
//! of it (`Template::fork`, checked against a bridge prepared from scratch by
//! pci-host-bridge/tests/fork.rs).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run pci_msi -O -- -max_total_time=20`
#![no_main]

use libfuzzer_sys::fuzz_target;
use pci_host_bridge::{PciConfig, PciDeviceConfig};
use pci_host_bridge_testing::XenLikeConfig;
use pci_host_bridge_testing::{
    msi_ops_from_bytes, placement_ops, snapshot_device_config, Template,
};

const SRIOV_PF: &str = include_str!("../../pci-host-bridge/testdata/sriov-nic-pf.json");
const INTEL_PF: &str = include_str!("../../pci-host-bridge/testdata/intel-82599-like-pf.json");
const LEGACY: &str = include_str!("../../pci-host-bridge/testdata/legacy-io-msi.json");

fn dev(slot: u8) -> PciDeviceConfig {
    snapshot_device_config(slot, 0)
}

/// The bits of the selector byte that choose the set-up (the same key, the same template).
fn key(sel: u8) -> u8 {
    sel & 0x83
}

/// The prepared bridge for one selector: started, prologue replayed, state checked.
fn template(sel: u8) -> Template {
    let config = PciConfig {
        devices: vec![dev(2), dev(3), dev(4)],
        ..Default::default()
    };
    let mut devices = pvh_dm_fuzz::pci::snapshots(&[SRIOV_PF, INTEL_PF, LEGACY]);
    if sel & 1 != 0 {
        // INTx forwarding on the functions with a pin: MSI enable must force it off.
        devices[0].enable_intx().expect("eventfd");
        devices[2].enable_intx().expect("eventfd");
    }
    // Xen with or without interrupt remapping (multi-vector MSI refused without it).
    let xen = XenLikeConfig {
        intremap: sel & 0x80 != 0,
        ..Default::default()
    };
    let mut t = Template::new(&config, &devices, xen).expect("bridge");
    if sel & 2 != 0 {
        t.prepare(|bridge, checker| {
            for op in placement_ops(bridge) {
                // Fixed, and checked by the stable tests: replayed unchecked.
                checker.apply_unchecked(bridge, op);
            }
        });
    }
    pvh_dm_fuzz::pci::checked(t)
}

fuzz_target!(|data: &[u8]| pvh_dm_fuzz::pci::run(data, key, template, msi_ops_from_bytes));
