//! Xen 4.17's passthrough rules as a device model sees them through its sim transport
//! connection (xen-sim's `passthrough` module has the rules and their Xen source lines):
//! - memory_mapping does 64 frames per call and says so; unmap of any sub-range; mapped
//!   frames reach the device's BAR without an ioreq; a different mfn over a mapping crashes
//!   the guest;
//! - MSI-X map_pirq without prepare_msix is ENODATA; a table_base that is not the BAR base is
//!   recorded as Xen's WARN;
//! - no IOMMU context: assign EOPNOTSUPP, bind ESRCH;
//! - the domain's death quarantines its functions; deassign from dom_io hands them back;
//!   getdomaininfo of the dead domain is ESRCH;
//! - a restricted connection may issue no passthrough hypercall, a second one may;
//! - once an entry is bound, Xen's msixtbl keeps the guest's mask writes from the device
//!   model, forwards address/data writes and the unmask that follows them;
//! - a bound interrupt reaches the guest only with the device's MSI-X Enable set;
//! - and two scenarios a pci-host-bridge must pass on these rules (the workspace's, or the
//!   binary `PVH_DM_BRIDGE` names, e.g. one built from 99d563d, which fails them): the demo's
//!   VF with MSI-X, and a BAR longer than 64 frames.
//!
//! This file holds the rig (a sim with domain 1 and the VF) and the op builders; the hypercall
//! rules are in `hypercalls`, the msixtbl intercept and MSI-X Enable in `msixtbl`, the two
//! bridge scenarios in `bridge`.

#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ioreq_server::transport::sim::SimTransport;
use ioreq_server::transport::{Transport, TransportError};
use serde_json::Value;
use xen_abi::dmop::DmOp;
use xen_abi::dmop::Space;
use xen_abi::passthrough::{MsiMap, PtOp};
use xen_abi::*;
use xen_sim::{DomainConfig, HostBar, HostPciDevice, MsixLayout, Owner, Sim, SimOptions};

use common::bare_ioreq_server;

mod bridge;
mod hypercalls;
mod msixtbl;

const VF: u32 = 0x0312;
const BAR0: u64 = 0x38_0002_0000;
const BAR3: u64 = 0x38_0010_8000;
/// The MSI-X table is at BAR3 + 0x1000 here, so that BAR base and table address differ.
const TABLE_OFFSET: u32 = 0x1000;
const GTABLE: u64 = 0xF101_1000;

struct Rig {
    sim: Sim,
    dir: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.sim.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(name: &str, cfg: DomainConfig) -> Rig {
    let dir = std::env::temp_dir().join(format!("pvh-dm-simpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sim = Sim::start(SimOptions {
        socket: dir.join("sim.sock"),
        ioreq_timeout: Duration::from_secs(3),
    })
    .unwrap();
    sim.create_domain_with(1, &cfg).unwrap();
    Rig { sim, dir }
}

impl Rig {
    fn connect(&self, name: &str) -> SimTransport {
        SimTransport::connect(&self.dir.join("sim.sock"), 1, name).unwrap()
    }
    fn ops(&self) -> Vec<Value> {
        self.sim.report(1).dm_ops
    }
    fn last_op(&self, name: &str) -> Value {
        self.ops()
            .into_iter()
            .rev()
            .find(|o| o["op"] == name)
            .unwrap_or_else(|| panic!("no {name} recorded"))
    }
    /// A config-space file (Command with memory decode, MSI-X capability at 0x40 with
    /// 5 entries, table BIR 3 + 0x1000, PBA BIR 3 + 0x2000) standing for the VF.
    fn config_file(&self) -> PathBuf {
        let mut c = vec![0u8; 256];
        c[0..4].copy_from_slice(&0x154c_8086u32.to_le_bytes());
        c[4] = 0x06;
        c[6] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x11;
        c[0x42..0x44].copy_from_slice(&4u16.to_le_bytes());
        c[0x44..0x48].copy_from_slice(&(TABLE_OFFSET | 3).to_le_bytes());
        c[0x48..0x4C].copy_from_slice(&0x2003u32.to_le_bytes());
        let p = self.dir.join("vf-config");
        std::fs::write(&p, c).unwrap();
        p
    }
    fn add_vf(&self, config_file: Option<PathBuf>, bar0_file: Option<PathBuf>) {
        let mut bars = [None; 6];
        bars[0] = Some(HostBar {
            base: BAR0,
            size: 0x1_0000,
        });
        bars[3] = Some(HostBar {
            base: BAR3,
            size: 0x4000,
        });
        let mut bar_files: [Option<PathBuf>; 6] = Default::default();
        bar_files[0] = bar0_file;
        self.sim.add_host_device(HostPciDevice {
            sbdf: VF,
            bars,
            msix: Some(MsixLayout {
                entries: 5,
                table_bir: 3,
                table_offset: TABLE_OFFSET,
                pba_bir: 3,
                pba_offset: 0x2000,
            }),
            is_vf: true,
            config_file,
            bar_files,
            ..Default::default()
        });
    }
}

fn errno(r: Result<u64, TransportError>) -> i32 {
    match r {
        Err(TransportError::Hypervisor { errno, .. }) => errno,
        other => panic!("expected a hypervisor error, got {other:?}"),
    }
}

fn mm(gfn: u64, mfn: u64, nr: u64, add: bool) -> PtOp {
    PtOp::MemoryMapping { gfn, mfn, nr, add }
}

fn map_msix(entry: u32, table_base: u64) -> PtOp {
    PtOp::MapPirqMsi(MsiMap {
        sbdf: VF,
        entry,
        table_base,
        nvec: 1,
    })
}

fn bind(pirq: u64, gvec: u8, gtable: u64) -> PtOp {
    PtOp::BindPtIrqMsi {
        pirq: pirq as u32,
        gvec,
        gflags: xen_abi::passthrough::msi_gflags(0xFEE0_0000, u32::from(gvec), true),
        gtable,
    }
}
