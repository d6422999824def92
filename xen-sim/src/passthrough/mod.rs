//! What Xen 4.17 does with a device model's passthrough hypercalls, rule by rule, each with
//! the source lines of branch `stable-4.17` of xen-project/xen it models:
//!
//! - `memory_mapping`: at most 64 iterations per call, the positive count done when not all
//!   were done; unmap of any sub-range; mapping over a different mfn crashes the guest;
//!   `iomem_permission` first.
//! - ownership of host functions (hardware domain / guest / dom_io), assignment only with an
//!   IOMMU context, quarantine on deassign and on the domain's death.
//! - `prepare_msix` / `release_msix` and the MSI-X `map_pirq` precondition (ENODATA), the
//!   `table_base` comparison and the path on which Xen makes it.
//! - `bind_pt_irq`: first bind vs rebind, gtable registered once, UNMASKED that never masks.
//! - the msixtbl intercept of bound MSI-X entries (guest accesses handled before any ioreq
//!   server), with its completion after the device model answers.
//! - delivery of a bound device interrupt only with the physical Enable bit set.
//!
//! This file holds the shared state (pirqs, constants) and the dispatch of [`PtOp`]; the rules
//! live in `mmio` (mappings and permissions), `assign` (ownership, quarantine, destruction,
//! prepare/release_msix), `pirq` (map/bind/unbind, device interrupts) and `msixtbl` (the
//! MSI-X table intercept).

use xen_abi::passthrough::PtOp;
use xen_abi::*;

use crate::domain::Domain;
use crate::host::Host;

/// `MAP_MMIO_MAX_ITER` (xen/arch/x86/mm/p2m.c:1670).
pub const MAP_MMIO_MAX_ITER: u64 = 64;
/// `MAX_MSIX_TABLE_ENTRIES`.
const MAX_MSIX_TABLE_ENTRIES: u32 = 2048;
/// `MAX_MSIX_ACC_ENTRIES` (vmsi.c:160): entries whose address/data Xen shadows.
const MAX_MSIX_ACC_ENTRIES: usize = 3;
/// `MAX_MSI_IRQS`.
const MAX_MSI_IRQS: u32 = 32;
const PCI_MSIX_ENTRY_SIZE: u64 = 16;
const PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET: u64 = 12;
const PCI_MSIX_VECTOR_BITMASK: u64 = 1;

fn neg(e: i32) -> i32 {
    -e
}

/// One mapped pirq (`struct pirq` + its `msi_desc` and `hvm_pirq_dpci`).
#[derive(Clone, Debug)]
pub struct Pirq {
    /// The function.
    pub sbdf: u32,
    /// `Some(entry_nr)` for MSI-X, `None` for MSI (then `index` is the vector of the block).
    pub msix_entry: Option<u32>,
    /// Vector index inside a multi-message MSI block.
    pub index: u32,
    /// `msi_attrib.guest_masked` (msi.c:923 for MSI-X: set at map; msi.c:642 for MSI: clear).
    pub guest_masked: bool,
    /// `HVM_IRQ_DPCI_MAPPED` with `gmsi.gvec` / `gmsi.gflags` (UNMASKED stripped).
    pub bind: Option<(u8, u32)>,
}

mod assign;
mod mmio;
mod msixtbl;
mod pirq;

pub use assign::{deassign_from_dom_io, prepare_msix};
pub use msixtbl::{MsixTblEntry, MsixtblResult, VcpuIo};

impl Domain {
    fn note(&mut self, k: &str, v: serde_json::Value) {
        self.notes.insert(k.into(), v);
    }

    /// Xen's handling of one passthrough domctl / physdev op from dom0. `Ok(value)`: the pirq
    /// of map_pirq, the partial count of memory_mapping, max_pages of getdomaininfo (done by
    /// the hypervisor, which sees every domain), else 0.
    pub fn passthrough(&mut self, host: &mut Host, op: &PtOp) -> Result<u64, i32> {
        self.notes.clear();
        // De-quarantine names DOMID_IO, not this domain (domctl.c:338-347): it works whatever
        // became of the guest.
        if let PtOp::DeassignDevice {
            sbdf,
            from_dom_io: true,
        } = *op
        {
            return deassign_from_dom_io(host, sbdf);
        }
        // prepare/release_msix name a function, not a domain (physdev.c:483-494).
        match *op {
            PtOp::PrepareMsix { sbdf } => return prepare_msix(host, sbdf, false),
            PtOp::ReleaseMsix { sbdf } => return prepare_msix(host, sbdf, true),
            _ => {}
        }
        // A destroyed domain: rcu_lock_domain_by_id fails, ESRCH (domctl.c:366-369;
        // physdev_map_pirq, physdev.c:109-111).
        if self.dead {
            return Err(neg(libc::ESRCH));
        }
        match *op {
            PtOp::MemoryMapping { gfn, mfn, nr, add } => {
                self.memory_mapping(host, gfn, mfn, nr, add)
            }
            PtOp::IoportMapping {
                gport,
                mport,
                nr,
                add,
            } => self.ioport_mapping(gport, mport, nr, add).map(|()| 0),
            PtOp::IomemPermission { mfn, nr, allow } => {
                // domctl.c:417-442: the range is added to / removed from iomem_caps; existing
                // p2m entries stay (removing permission unmaps nothing).
                if nr == 0 || mfn.checked_add(nr - 1).is_none() {
                    return Err(neg(libc::EINVAL));
                }
                self.iomem_change(mfn, mfn + nr - 1, allow);
                Ok(0)
            }
            PtOp::IoportPermission { .. } | PtOp::IrqPermission { .. } => Ok(0),
            PtOp::AssignDevice { sbdf } => self.assign(host, sbdf, false),
            PtOp::TestAssignDevice { sbdf } => self.assign(host, sbdf, true),
            PtOp::DeassignDevice { sbdf, .. } => self.deassign(host, sbdf),
            // getdomaininfo needs every domain: answered by the hypervisor.
            PtOp::GetDomainInfo => Ok(self.ram_size / XEN_PAGE_SIZE as u64),
            PtOp::PrepareMsix { .. } | PtOp::ReleaseMsix { .. } => unreachable!("handled above"),
            PtOp::MapPirqMsi(m) => self
                .map_pirq(host, m.sbdf, m.entry, m.table_base, m.nvec)
                .map(u64::from),
            PtOp::UnmapPirq { pirq } => self.unmap_pirq(host, pirq).map(|()| 0),
            PtOp::BindPtIrqMsi {
                pirq,
                gvec,
                gflags,
                gtable,
                ..
            } => self
                .bind_pt_irq(host, pirq, gvec, gflags, gtable)
                .map(|()| 0),
            PtOp::UnbindPtIrqMsi { pirq, .. } => self.unbind_pt_irq(pirq).map(|()| 0),
        }
    }
}

#[cfg(test)]
mod tests;
