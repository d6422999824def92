//! SR-IOV VF synthesis, MSI and MSI-X binding and INTx forwarding, register by register,
//! through the Device interface against the hand-made PF / VF pair
//! (testdata/sriov-nic-{pf,vf}.json), with the bridge's executor over the fake Xen of
//! `pci_host_bridge_testing` (the hypercalls are checked as the fake recorded them).
//!
//! This file holds the fixtures and the expected hypercalls; the tests are in `vf` (what a VF
//! takes from its PF), `msix`, `msi` and `intx`.

#[path = "../common/mod.rs"]
mod common;

use std::io::Write;
use std::os::fd::AsRawFd;

use common::*;
use ioreq_server::device::{Actions, Device};
use irq_line::IrqLineServer;
use pci_host_bridge::backend::snapshot::{SnapshotDevice, WriteRecord};
use pci_host_bridge::intx::guest_gsi;
use pci_host_bridge::{HostDevice, PciAddress, PciConfig};
use pci_host_bridge_testing::{lock, XenLikeConfig};
use xen_abi::passthrough::{msi_gflags, MsiMap, PtOp};

mod intx;
mod msi;
mod msix;
mod vf;

const PF: &str = "sriov-nic-pf.json";
const VF: &str = "sriov-nic-vf.json";
const PF_HOST: PciAddress = PciAddress::new(0, 3, 0, 0);
const VF_HOST: PciAddress = PciAddress::new(0, 3, 2, 2);
const VF_SBDF: u32 = 0x0312;
const PF_SBDF: u32 = 0x0300;

fn vf() -> One {
    one_at(
        SnapshotDevice::open_at(&testdata(VF), Some(VF_HOST)).unwrap(),
        VF_HOST,
        3,
    )
}

fn pf() -> One {
    one_at(snapshot(PF), PF_HOST, 2)
}

/// The PF over a Xen with interrupt remapping (multi-vector MSI allowed).
fn pf_intremap() -> One {
    one_with(
        snapshot(PF),
        PF_HOST,
        2,
        PciConfig::default(),
        XenLikeConfig {
            intremap: true,
            ..Default::default()
        },
    )
}

/// Guest BAR placement of the VF: BAR0 at 0xF100_0000, BAR3 (MSI-X) at 0xF101_0000.
const VF_TABLE: u64 = 0xF101_0000;
const VF_PBA: u64 = 0xF101_2000;

fn place_vf(t: &mut One) -> Vec<PtOp> {
    for (reg, v) in [
        (0x10, 0xF100_0000u64),
        (0x14, 0),
        (0x1C, VF_TABLE),
        (0x20, 0),
    ] {
        assert!(t.wr(reg, 4, v).is_empty());
    }
    t.wr(4, 2, 0x0006)
}

fn map_pirq(sbdf: u32, entry: u32, table_base: u64, nvec: u32) -> PtOp {
    PtOp::MapPirqMsi(MsiMap {
        sbdf,
        entry,
        table_base,
        nvec,
    })
}

fn bind(pirq: u32, addr: u64, data: u32, gtable: u64) -> PtOp {
    PtOp::BindPtIrqMsi {
        pirq,
        gvec: data as u8,
        gflags: msi_gflags(addr, data, true),
        gtable,
    }
}

fn unbind(pirq: u32, addr: u64, data: u32, gtable: u64) -> PtOp {
    PtOp::UnbindPtIrqMsi {
        pirq,
        gvec: data as u8,
        gflags: msi_gflags(addr, data, true),
        gtable,
    }
}

fn unmap(pirq: u32) -> PtOp {
    PtOp::UnmapPirq { pirq }
}

/// The device's MSI-X Message Control writes (offset 0x72), as values.
fn msix_control_writes(t: &One) -> Vec<u16> {
    t.handle
        .writes()
        .iter()
        .map(|w| {
            assert!(
                w.offset == 0x72 && w.data.len() == 2,
                "only 16-bit Message Control writes reach the MSI-X capability: {w:?}"
            );
            u16::from_le_bytes([w.data[0], w.data[1]])
        })
        .collect()
}
