//! Deterministic randomized test of the MSI / MSI-X / INTx surfaces (stable Rust, fixed seeds):
//! a Linux-like MSI-X bring-up, then pseudo-random hostile programming of the MSI capability,
//! MSI-X control, table entries (aligned and odd accesses), the PBA, the table's BAR, decode
//! and Interrupt Disable, every access checked by `pci_host_bridge::testing::Checker`
//! (invariants 1-6: nothing reaches a device that the table does not pass through, every bind
//! matches the programming, the bound set equals what the programming asks for, INTx disable
//! only written to the wanted state).

mod common;

use common::*;
use pci_host_bridge::backend::snapshot::SnapshotDevice;
use pci_host_bridge::testing::{
    bridge_with_snapshots, linux_msix_ops, placement_ops, random_irq_op, Rng,
};
use pci_host_bridge::PciConfig;

const SEEDS: u64 = 16;
const OPS: usize = 2500;

fn devices() -> Vec<SnapshotDevice> {
    let mut legacy = snapshot("legacy-io-msi.json");
    legacy.enable_intx().unwrap();
    let mut pf = snapshot("sriov-nic-pf.json");
    pf.enable_intx().unwrap();
    vec![
        pf,
        snapshot("sriov-nic-vf.json"),
        legacy,
        snapshot("intel-82599-like-pf.json"),
        SnapshotDevice::open(&testdata("real/virtio-net-1af4-1041.json")).unwrap(),
    ]
}

#[test]
fn hostile_interrupt_programming_keeps_invariants() {
    let config = PciConfig {
        devices: vec![
            dev_cfg(2, 0),
            dev_cfg(3, 0),
            dev_cfg(4, 0),
            dev_cfg(5, 0),
            dev_cfg(6, 0),
        ],
        ..Default::default()
    };
    let (mut binds, mut unbinds, mut intx) = (0, 0, 0);
    for seed in 0..SEEDS {
        let (mut bridge, mut checker) = bridge_with_snapshots(&config, devices()).unwrap();
        for op in placement_ops(&bridge) {
            checker
                .apply(&mut bridge, op)
                .unwrap_or_else(|e| panic!("seed {seed} placement: {e}"));
        }
        let linux = linux_msix_ops(&bridge, 0x40);
        assert!(!linux.is_empty());
        for op in linux {
            checker
                .apply(&mut bridge, op)
                .unwrap_or_else(|e| panic!("seed {seed} linux msi-x: {e}"));
        }
        if seed == 0 {
            // The Linux sequence bound every entry of every MSI-X function: 64 + 5 + 64 + 3.
            let bound: usize = bridge.functions().map(|f| f.bindings().msix_bound()).sum();
            assert_eq!(bound, 64 + 5 + 64 + 3);
        }
        let mut rng = Rng::new(seed);
        for i in 0..OPS {
            let op = random_irq_op(&mut rng, &bridge);
            checker
                .apply(&mut bridge, op)
                .unwrap_or_else(|e| panic!("seed {seed} op {i}: {e}"));
        }
        binds += checker.binds;
        unbinds += checker.unbinds;
        intx += checker.intx_writes;
    }
    // The generators reach what they aim at.
    assert!(
        binds > 1000 && unbinds > 500,
        "binds {binds}, unbinds {unbinds}"
    );
    assert!(intx > 10, "Interrupt Disable writes {intx}");
}
