//! Unit tests of the passthrough rules, one or more per rule of the module docs.
//!
//! This file holds the shared fixtures (the VF, its config-space file, the op builders); the
//! tests are in `mappings` (memory_mapping, ioport_mapping, iomem_permission), `ownership`
//! (assignment, quarantine, the dead domain, getdomaininfo), `msix_setup` (prepare_msix and
//! the MSI-X map_pirq precondition, table_base), `binding` (bind_pt_irq, multi-message MSI,
//! delivery with the Enable bit) and `msixtbl_intercept` (Xen's MSI-X table intercept).

use super::*;
use crate::host::{HostBar, HostPciDevice, MsixLayout, Owner, MSIX_ENABLE, MSIX_MASKALL};
use xen_abi::passthrough::MsiMap;

mod binding;
mod mappings;
mod msix_setup;
mod msixtbl_intercept;
mod ownership;

const SBDF: u32 = 0x0312;
const BAR3: u64 = 0x38_0010_8000;
const GTABLE: u64 = 0xF101_0000;

fn vf(config_file: Option<std::path::PathBuf>) -> HostPciDevice {
    let mut bars = [None; 6];
    bars[0] = Some(HostBar {
        base: 0x38_0002_0000,
        size: 0x1_0000,
    });
    bars[3] = Some(HostBar {
        base: BAR3,
        size: 0x4000,
    });
    HostPciDevice {
        sbdf: SBDF,
        bars,
        msix: Some(MsixLayout {
            entries: 5,
            table_bir: 3,
            table_offset: 0x1000,
            pba_bir: 3,
            pba_offset: 0x2000,
        }),
        config_file,
        ..Default::default()
    }
}

/// A config space with the Command register and one MSI-X capability at 0x40.
fn config_file(name: &str, command: u16, msix_ctrl: u16) -> std::path::PathBuf {
    let mut c = vec![0u8; 256];
    c[4..6].copy_from_slice(&command.to_le_bytes());
    c[6] = 0x10;
    c[0x34] = 0x40;
    c[0x40] = 0x11;
    c[0x42..0x44].copy_from_slice(&(msix_ctrl | 4).to_le_bytes());
    c[0x44..0x48].copy_from_slice(&0x1003u32.to_le_bytes());
    c[0x48..0x4C].copy_from_slice(&0x2003u32.to_le_bytes());
    let p = std::env::temp_dir().join(format!("xen-sim-unit-{}-{name}", std::process::id()));
    std::fs::write(&p, c).unwrap();
    p
}

fn set_msix_ctrl(p: &std::path::Path, ctrl: u16) {
    crate::host::write_file_at(p, 0x42, &(ctrl | 4).to_le_bytes());
}

fn setup(iommu: bool) -> (Domain, Host) {
    let mut d = Domain::new(1, 2, 16 << 20).unwrap();
    d.iommu = iommu;
    let mut h = Host::default();
    h.add(vf(None));
    (d, h)
}

fn op(d: &mut Domain, h: &mut Host, o: PtOp) -> Result<u64, i32> {
    d.passthrough(h, &o)
}

fn mm(gfn: u64, mfn: u64, nr: u64, add: bool) -> PtOp {
    PtOp::MemoryMapping { gfn, mfn, nr, add }
}

fn permit(d: &mut Domain, h: &mut Host, mfn: u64, nr: u64) {
    op(
        d,
        h,
        PtOp::IomemPermission {
            mfn,
            nr,
            allow: true,
        },
    )
    .unwrap();
}

/// deassign_device of the VF; `from_dom_io`: take it back from quarantine.
fn deassign(from_dom_io: bool) -> PtOp {
    PtOp::DeassignDevice {
        sbdf: SBDF,
        from_dom_io,
    }
}

fn map_msix(entry: u32, table_base: u64) -> PtOp {
    PtOp::MapPirqMsi(MsiMap {
        sbdf: SBDF,
        entry,
        table_base,
        nvec: 1,
    })
}

fn bind(pirq: u64, gvec: u8, unmasked: bool, gtable: u64) -> PtOp {
    PtOp::BindPtIrqMsi {
        pirq: pirq as u32,
        gvec,
        gflags: if unmasked {
            XEN_DOMCTL_VMSI_X86_UNMASKED
        } else {
            0
        },
        gtable,
    }
}

/// Assigned, prepared, entries mapped: the usual state before binds.
fn assigned_and_prepared(d: &mut Domain, h: &mut Host) {
    op(d, h, PtOp::PrepareMsix { sbdf: SBDF }).unwrap();
    op(d, h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
}
