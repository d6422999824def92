//! Deterministic randomized test of the MSI / MSI-X / INTx surfaces (stable Rust, fixed seeds):
//! a Linux-like MSI-X bring-up, then pseudo-random hostile programming of the MSI capability,
//! MSI-X control, table entries (aligned and odd accesses), the PBA, the table's BAR, decode
//! and Interrupt Disable, every access checked by `pci_host_bridge_testing::Checker` against
//! the fake Xen's record (nothing reaches a device that the table does not pass through but
//! the bridge's own 16-bit MSI / MSI-X control writes; every map_pirq / bind matches the
//! programming with table_base the BAR of the raw BIR; mask writes never unbind; an unmask
//! while enabled binds; the device has the guest's MSI-X Enable / Function Mask and its MSI
//! Enable exactly while MSI is bound; INTx disable only written to the wanted state), and a
//! stop that leaves nothing in Xen.

mod common;

use common::*;
use pci_host_bridge::backend::snapshot::SnapshotDevice;
use pci_host_bridge::{PciAddress, PciConfig};
use pci_host_bridge_testing::{
    bridge_with_xen, linux_msix_ops, placement_ops, random_irq_op, Rng, XenLike, XenLikeConfig,
};

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
    let (mut binds, mut unbinds, mut intx, mut msix_ctl, mut msi_en, mut refused) =
        (0, 0, 0, 0, 0, 0);
    for seed in 0..SEEDS {
        // Every other seed with interrupt remapping; every fourth with few pirqs (Xen then
        // refuses map_pirq with ENOSPC: a refused MSI-X entry must read back masked).
        let xen = XenLike::new(XenLikeConfig {
            intremap: seed % 2 == 1,
            pirq_limit: (seed % 4 == 3).then_some(40),
            ..Default::default()
        });
        let (mut bridge, mut checker) = bridge_with_xen(&config, devices(), xen).unwrap();
        // INTx live on the functions that forward it: an IOAPIC line on the pin the guest's
        // _PRT routes them to (the servers stay alive for the run).
        let mut ioapics = Vec::new();
        for slot in [2u8, 4] {
            let a = PciAddress::new(0, 0, slot, 0);
            let gsi = bridge.function(a).unwrap().intx().unwrap().gsi();
            let (srv, line) = ioapic_line(gsi);
            bridge.function_mut(a).unwrap().attach_intx_line(line);
            ioapics.push(srv);
        }
        checker.sync_logs();
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
        msix_ctl += checker.msix_control_writes;
        msi_en += checker.msi_enable_writes;
        refused += checker.refused;
        checker
            .stop_and_check(&mut bridge)
            .unwrap_or_else(|e| panic!("seed {seed} stop: {e}"));
    }
    eprintln!(
        "binds {binds}, unbinds {unbinds}, INTx writes {intx}, MSI-X control writes {msix_ctl}, MSI Enable writes {msi_en}, refused {refused}"
    );
    assert!(
        msix_ctl > 100 && msi_en > 100,
        "the device saw its MSI-X control {msix_ctl} and MSI Enable {msi_en} times"
    );
    assert!(
        refused > 0,
        "multi-vector MSI without intremap is refused sometimes"
    );
    // The generators reach what they aim at.
    assert!(
        binds > 1000 && unbinds > 500,
        "binds {binds}, unbinds {unbinds}"
    );
    assert!(intx > 10, "Interrupt Disable writes {intx}");
}
