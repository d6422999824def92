//! Xen's state as the fake keeps it ([`XenState`]): mappings, permissions, assignments,
//! pirqs and their bindings, and how it answers each hypercall.

use std::collections::{BTreeMap, BTreeSet};

use xen_abi::passthrough::PtOp;

use super::p2m::{Intervals, P2m};
use super::{Bound, LoggedOp, PirqBlock, XenLikeConfig};
#[cfg(doc)]
use crate::template::Template;

/// Xen's state as the fake keeps it.
#[derive(Debug, Default)]
pub struct XenState {
    /// Every call, in order.
    pub log: Vec<LoggedOp>,
    /// Calls a real Xen would refuse or that show a DM bug, not yet reported.
    pub violations: Vec<String>,
    /// Guest frame -> host frame.
    pub p2m: P2m,
    /// Guest port -> host port (kept as runs, like the p2m).
    pub io: P2m,
    /// Host frames the guest may access.
    pub iomem: Intervals,
    /// Host ports the guest may access.
    pub ioports: Intervals,
    /// Functions assigned to the guest.
    pub assigned: BTreeSet<u32>,
    /// Functions deassigned to `DOMID_IO` (quarantine) and not taken back yet.
    pub quarantined: BTreeSet<u32>,
    /// Functions whose MSI-X table Xen read (`prepare_msix`).
    pub prepared: BTreeSet<u32>,
    /// Pirq blocks by first pirq.
    pub pirqs: BTreeMap<u32, PirqBlock>,
    /// Bound pirqs.
    pub bound: BTreeMap<u32, Bound>,
    /// The guest was destroyed ([`XenState::destroy_domain`]).
    pub dead: bool,
    next_pirq: u32,
}

impl XenState {
    /// A copy of this state with an empty call log (for [`Template::fork`]).
    pub fn fork(&self) -> XenState {
        XenState {
            // As much room as the original needed so far: a copy's run makes as many calls.
            log: Vec::with_capacity(self.log.len()),
            violations: self.violations.clone(),
            p2m: self.p2m.clone(),
            io: self.io.clone(),
            iomem: self.iomem.clone(),
            ioports: self.ioports.clone(),
            assigned: self.assigned.clone(),
            quarantined: self.quarantined.clone(),
            prepared: self.prepared.clone(),
            pirqs: self.pirqs.clone(),
            bound: self.bound.clone(),
            dead: self.dead,
            next_pirq: self.next_pirq,
        }
    }

    /// The block holding `pirq`.
    pub fn block_of(&self, pirq: u32) -> Option<PirqBlock> {
        self.pirqs
            .range(..=pirq)
            .next_back()
            .map(|(_, b)| *b)
            .filter(|b| pirq < b.base + b.nvec)
    }

    /// What is bound for host function `sbdf`, by entry: (block, binding of its first pirq).
    pub fn bound_of(&self, sbdf: u32) -> BTreeMap<u32, (PirqBlock, Bound)> {
        self.pirqs
            .values()
            .filter(|b| b.sbdf == sbdf)
            .filter_map(|b| self.bound.get(&b.base).map(|x| (b.entry, (*b, *x))))
            .collect()
    }

    /// Whether anything of the guest is left in Xen (mappings, pirqs, assignments,
    /// permissions, quarantine, MSI-X preparation); the list of what is.
    pub fn leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.p2m.is_empty() {
            v.push(format!("{} frames mapped", self.p2m.len()));
        }
        if !self.io.is_empty() {
            v.push(format!("{} ports mapped", self.io.len()));
        }
        if !self.pirqs.is_empty() {
            v.push(format!("pirqs mapped: {:?}", self.pirqs));
        }
        if !self.bound.is_empty() {
            v.push(format!("pirqs bound: {:?}", self.bound));
        }
        if !self.assigned.is_empty() {
            v.push(format!("assigned: {:x?}", self.assigned));
        }
        if !self.quarantined.is_empty() {
            v.push(format!(
                "left in quarantine (DOMID_IO): {:x?}",
                self.quarantined
            ));
        }
        if !self.prepared.is_empty() {
            v.push(format!("MSI-X prepared: {:x?}", self.prepared));
        }
        if !self.iomem.is_empty() {
            v.push(format!("{} host frames permitted", self.iomem.len()));
        }
        if !self.ioports.is_empty() {
            v.push(format!("{} host ports permitted", self.ioports.len()));
        }
        v
    }

    /// The guest dies: Xen frees its p2m, pirqs and permissions and moves its devices to
    /// `DOMID_IO` (xen/drivers/passthrough/pci.c:849-859); from now on calls about the guest
    /// fail with ESRCH. (`prepare_msix` is dom0's and stays.)
    pub fn destroy_domain(&mut self) {
        self.dead = true;
        self.p2m.clear();
        self.io.clear();
        self.pirqs.clear();
        self.bound.clear();
        self.iomem = Intervals::default();
        self.ioports = Intervals::default();
        let a = std::mem::take(&mut self.assigned);
        self.quarantined.extend(a);
    }

    fn violation(&mut self, s: String) {
        self.violations.push(s);
    }

    pub(super) fn answer(&mut self, cfg: &XenLikeConfig, op: &PtOp) -> Result<u64, i32> {
        use libc::{EINVAL, ENODATA, EOPNOTSUPP};
        let dom0_only = matches!(
            op,
            PtOp::PrepareMsix { .. }
                | PtOp::ReleaseMsix { .. }
                | PtOp::DeassignDevice {
                    from_dom_io: true,
                    ..
                }
        );
        if self.dead && !dom0_only {
            return Err(libc::ESRCH);
        }
        match *op {
            PtOp::GetDomainInfo => Ok(cfg.max_pages),
            PtOp::TestAssignDevice { sbdf } => {
                if !cfg.iommu {
                    Err(EOPNOTSUPP)
                } else if self.assigned.contains(&sbdf) {
                    Err(libc::EBUSY)
                } else {
                    Ok(0)
                }
            }
            PtOp::AssignDevice { sbdf } => {
                if !cfg.iommu {
                    return Err(EOPNOTSUPP);
                }
                self.quarantined.remove(&sbdf);
                self.assigned.insert(sbdf);
                Ok(0)
            }
            PtOp::DeassignDevice {
                sbdf,
                from_dom_io: false,
            } => {
                if !self.assigned.remove(&sbdf) {
                    return Err(EINVAL);
                }
                if self.pirqs.values().any(|b| b.sbdf == sbdf) {
                    self.violation(format!(
                        "deassign of {sbdf:#x} while its pirqs are mapped: {:?}",
                        self.pirqs
                    ));
                }
                self.quarantined.insert(sbdf);
                Ok(0)
            }
            PtOp::DeassignDevice {
                sbdf,
                from_dom_io: true,
            } => {
                if self.quarantined.remove(&sbdf) {
                    Ok(0)
                } else {
                    Err(EINVAL)
                }
            }
            PtOp::PrepareMsix { sbdf } => {
                if self.assigned.contains(&sbdf) {
                    self.violation(format!(
                        "prepare_msix of {sbdf:#x} after it was assigned (Xen reads the table only while dom0 owns the function)"
                    ));
                }
                self.prepared.insert(sbdf);
                Ok(0)
            }
            PtOp::ReleaseMsix { sbdf } => {
                if !self.prepared.remove(&sbdf) {
                    self.violation(format!("release_msix of {sbdf:#x} never prepared"));
                }
                Ok(0)
            }
            PtOp::IomemPermission { mfn, nr, allow } => {
                if allow {
                    self.iomem.add(mfn, nr);
                } else {
                    self.iomem.remove(mfn, nr);
                }
                Ok(0)
            }
            PtOp::IoportPermission { port, nr, allow } => {
                let (a, n) = (u64::from(port), u64::from(port.saturating_add(nr) - port));
                if allow {
                    self.ioports.add(a, n);
                } else {
                    self.ioports.remove(a, n);
                }
                Ok(0)
            }
            PtOp::IrqPermission { .. } => Ok(0),
            PtOp::MemoryMapping { gfn, mfn, nr, add } => {
                if nr == 0 {
                    self.violation("memory_mapping of 0 frames".into());
                    return Err(EINVAL);
                }
                if cfg.e2big_above.is_some_and(|m| nr > m) {
                    return Err(libc::E2BIG);
                }
                // domctl.c: the guest must be permitted the whole range (iomem_permission),
                // else EPERM and nothing is done.
                if !self.iomem.covers(mfn, nr) {
                    return Err(libc::EPERM);
                }
                let n = nr.min(cfg.frames_per_call);
                if add {
                    for (g, old, k) in self.p2m.insert(gfn, mfn, n) {
                        let m = mfn + (g - gfn);
                        self.violation(format!(
                            "memory_mapping of gfn {g:#x} to {m:#x}: already mapped to {old:#x} ({k} frames from there)"
                        ));
                    }
                } else {
                    // Frame by frame: those before the first one not mapped as asked are gone.
                    let k = self.p2m.mapped_prefix(gfn, mfn, n);
                    self.p2m.remove(gfn, k);
                    if k < n {
                        let (g, m) = (gfn + k, mfn + k);
                        self.violation(format!(
                            "unmap of gfn {g:#x} from mfn {m:#x}: mapped to {:?}",
                            self.p2m.get(g)
                        ));
                        return Err(EINVAL);
                    }
                }
                Ok(if n < nr { n } else { 0 })
            }
            PtOp::IoportMapping {
                gport,
                mport,
                nr,
                add,
            } => {
                let (g0, m0, n) = (u64::from(gport), u64::from(mport), u64::from(nr));
                if add {
                    for (g, _, k) in self.io.insert(g0, m0, n) {
                        self.violation(format!(
                            "guest port {g:#x} mapped twice ({k} ports from there)"
                        ));
                    }
                } else {
                    // Port by port: those before the first one not mapped as asked are gone,
                    // and that one too.
                    let k = self.io.mapped_prefix(g0, m0, n);
                    self.io.remove(g0, k);
                    if k < n {
                        let (g, m) = (g0 + k, m0 + k);
                        self.io.remove(g, 1);
                        self.violation(format!("unmap of guest port {g:#x} not mapped to {m:#x}"));
                        return Err(EINVAL);
                    }
                }
                Ok(0)
            }
            PtOp::MapPirqMsi(m) => {
                let (sbdf, entry, table_base, nvec) = (m.sbdf, m.entry, m.table_base, m.nvec);
                if !self.assigned.contains(&sbdf) {
                    self.violation(format!("map_pirq for {sbdf:#x}, not assigned to the guest"));
                    return Err(EINVAL);
                }
                if nvec == 0 || !nvec.is_power_of_two() || nvec > 32 {
                    self.violation(format!("map_pirq with nvec {nvec}"));
                    return Err(EINVAL);
                }
                if nvec > 1 && !cfg.intremap {
                    return Err(EOPNOTSUPP);
                }
                if table_base != 0 && !self.prepared.contains(&sbdf) {
                    return Err(ENODATA);
                }
                if self
                    .pirqs
                    .values()
                    .any(|b| b.sbdf == sbdf && b.entry == entry)
                {
                    self.violation(format!(
                        "map_pirq of {sbdf:#x} entry {entry}, which already has a pirq"
                    ));
                    return Err(libc::EEXIST);
                }
                let used: u32 = self.pirqs.values().map(|b| b.nvec).sum();
                if cfg.pirq_limit.is_some_and(|l| used + nvec > l) {
                    return Err(libc::ENOSPC);
                }
                let base = self.next_pirq.max(64).next_multiple_of(nvec);
                self.next_pirq = base + nvec;
                self.pirqs.insert(
                    base,
                    PirqBlock {
                        base,
                        sbdf,
                        entry,
                        table_base,
                        nvec,
                    },
                );
                Ok(u64::from(base))
            }
            PtOp::UnmapPirq { pirq } => {
                let Some(b) = self.pirqs.get(&pirq).copied() else {
                    self.violation(format!("unmap_pirq of {pirq}, not mapped"));
                    return Err(EINVAL);
                };
                if (b.base..b.base + b.nvec).any(|p| self.bound.contains_key(&p)) {
                    self.violation(format!("unmap_pirq of {pirq} while bound"));
                }
                self.pirqs.remove(&pirq);
                Ok(0)
            }
            PtOp::BindPtIrqMsi {
                pirq,
                gvec,
                gflags,
                gtable,
            } => {
                if self.block_of(pirq).is_none() {
                    self.violation(format!("bind_pt_irq of pirq {pirq}, not mapped"));
                    return Err(EINVAL);
                }
                let new = Bound {
                    gvec,
                    gflags,
                    gtable,
                };
                if let Some(old) = self.bound.insert(pirq, new) {
                    if old.gtable != gtable {
                        self.violation(format!(
                            "rebind of pirq {pirq} with gtable {gtable:#x}: Xen keeps {:#x} (the guest table is registered on the first bind only)",
                            old.gtable
                        ));
                    }
                }
                Ok(0)
            }
            PtOp::UnbindPtIrqMsi { pirq, .. } => {
                if self.bound.remove(&pirq).is_none() {
                    self.violation(format!("unbind_pt_irq of pirq {pirq}, not bound"));
                    return Err(EINVAL);
                }
                Ok(0)
            }
        }
    }
}
