//! What the worker's executed requests left set up, as the broker saw it: the state the
//! broker must undo itself when the worker is gone without its teardown
//! ([`super::Broker::hand_back`]).

use std::collections::{BTreeMap, BTreeSet};

use xen_abi::passthrough::PtOp;

use super::proto::SysfsOp;

/// A run of frames or ports: `(guest first, host first, count)`.
pub type Run = (u64, u64, u64);

/// The outstanding state (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Mapped memory runs.
    pub mem: Vec<Run>,
    /// Mapped I/O-port runs.
    pub io: Vec<Run>,
    /// Granted iomem permissions `(mfn, nr)`.
    pub iomem: Vec<(u64, u64)>,
    /// Granted ioport permissions `(port, nr)`.
    pub ioports: Vec<(u64, u64)>,
    /// Bound pirqs: `pirq -> (gvec, gflags, gtable)`.
    pub bound: BTreeMap<u32, (u8, u32, u64)>,
    /// Functions assigned to the guest.
    pub assigned: BTreeSet<u32>,
    /// Functions deassigned from the guest but maybe still in Xen's quarantine (dom_io).
    pub quarantined: BTreeSet<u32>,
    /// Functions whose MSI-X table Xen was told about (`prepare_msix`).
    pub prepared: BTreeSet<u32>,
    /// Functions whose host decoding is on.
    pub decode_on: BTreeSet<u32>,
}

/// Remove `[first, first + nr)` (guest side) from `runs`, splitting runs it cuts.
fn subtract(runs: &mut Vec<Run>, first: u64, nr: u64) {
    let end = first.saturating_add(nr);
    let mut out = Vec::with_capacity(runs.len() + 1);
    for &(g, h, n) in runs.iter() {
        let e = g + n;
        if e <= first || end <= g {
            out.push((g, h, n));
            continue;
        }
        if g < first {
            out.push((g, h, first - g));
        }
        if end < e {
            out.push((end, h + (end - g), e - end));
        }
    }
    *runs = out;
}

impl Ledger {
    /// Nothing outstanding.
    pub fn is_empty(&self) -> bool {
        *self == Ledger::default()
    }

    /// A hypercall Xen answered with `value` (success).
    pub fn hypercall_done(&mut self, op: &PtOp, value: u64) {
        match *op {
            PtOp::MemoryMapping { gfn, mfn, nr, add } => {
                // A positive value is the count done (xen/arch/x86/mm/p2m.c:1670-1738 in
                // 4.17: `return i == nr ? 0 : i ?: ret`).
                let done = if value == 0 { nr } else { value.min(nr) };
                subtract(&mut self.mem, gfn, done);
                if add {
                    self.mem.push((gfn, mfn, done));
                }
            }
            PtOp::IoportMapping {
                gport,
                mport,
                nr,
                add,
            } => {
                subtract(&mut self.io, u64::from(gport), u64::from(nr));
                if add {
                    self.io
                        .push((u64::from(gport), u64::from(mport), u64::from(nr)));
                }
            }
            PtOp::IomemPermission { mfn, nr, allow } => {
                self.iomem.retain(|&p| p != (mfn, nr));
                if allow {
                    self.iomem.push((mfn, nr));
                }
            }
            PtOp::IoportPermission { port, nr, allow } => {
                let p = (u64::from(port), u64::from(nr));
                self.ioports.retain(|&q| q != p);
                if allow {
                    self.ioports.push(p);
                }
            }
            PtOp::AssignDevice { sbdf } => {
                self.assigned.insert(sbdf);
            }
            PtOp::DeassignDevice { sbdf, from_dom_io } => {
                if from_dom_io {
                    // dom0's now, also when the deassignment from the guest failed because
                    // the domain is gone (it was quarantined with it).
                    self.quarantined.remove(&sbdf);
                    self.assigned.remove(&sbdf);
                } else if self.assigned.remove(&sbdf) {
                    self.quarantined.insert(sbdf);
                }
            }
            PtOp::PrepareMsix { sbdf } => {
                self.prepared.insert(sbdf);
            }
            PtOp::ReleaseMsix { sbdf } => {
                self.prepared.remove(&sbdf);
            }
            PtOp::BindPtIrqMsi {
                pirq,
                gvec,
                gflags,
                gtable,
            } => {
                self.bound.insert(pirq, (gvec, gflags, gtable));
            }
            PtOp::UnbindPtIrqMsi { pirq, .. } => {
                self.bound.remove(&pirq);
            }
            // The pirqs themselves are the policy's (it checks against them).
            PtOp::MapPirqMsi(..)
            | PtOp::UnmapPirq { .. }
            | PtOp::IrqPermission { .. }
            | PtOp::TestAssignDevice { .. }
            | PtOp::GetDomainInfo => {}
        }
    }

    /// A hypercall Xen refused with `errno`: `prepare_msix` answering EBUSY means an earlier
    /// prepare was never released, which the executor takes as done
    /// ([`ioreq_server::executor::PassthroughExecutor::prepare_msix`]); so does the ledger.
    pub fn hypercall_refused(&mut self, op: &PtOp, errno: i32) {
        if let PtOp::PrepareMsix { sbdf } = *op {
            if errno == libc::EBUSY {
                self.prepared.insert(sbdf);
            }
        }
    }

    /// A sysfs operation that succeeded.
    pub fn sysfs_done(&mut self, sbdf: u32, op: SysfsOp) {
        match op {
            SysfsOp::EnableDecode => {
                self.decode_on.insert(sbdf);
            }
            SysfsOp::DisableDecode => {
                self.decode_on.remove(&sbdf);
            }
            SysfsOp::Reset | SysfsOp::DetachDriver | SysfsOp::ReprobeDriver => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_maps_and_unmaps_leave_exactly_the_frames_still_mapped() {
        let mut l = Ledger::default();
        let mm = |gfn, mfn, nr, add| PtOp::MemoryMapping { gfn, mfn, nr, add };
        // 64 of 100 done, then the rest.
        l.hypercall_done(&mm(0x1000, 0x8000, 100, true), 64);
        l.hypercall_done(&mm(0x1040, 0x8040, 36, true), 0);
        assert_eq!(l.mem, vec![(0x1000, 0x8000, 64), (0x1040, 0x8040, 36)]);
        // Unmap the middle: the runs split around it.
        l.hypercall_done(&mm(0x1010, 0x8010, 0x40, false), 0);
        assert_eq!(l.mem, vec![(0x1000, 0x8000, 0x10), (0x1050, 0x8050, 20)]);
        l.hypercall_done(&mm(0x1000, 0x8000, 100, false), 0);
        assert!(l.mem.is_empty());
        assert!(l.is_empty());
    }

    #[test]
    fn a_function_taken_from_quarantine_is_dom0s() {
        let deassign = |from_dom_io| PtOp::DeassignDevice {
            sbdf: 0x312,
            from_dom_io,
        };
        let mut l = Ledger::default();
        l.hypercall_done(&PtOp::AssignDevice { sbdf: 0x312 }, 0);
        l.hypercall_done(&deassign(false), 0);
        assert!(l.assigned.is_empty() && l.quarantined.contains(&0x312));
        l.hypercall_done(&deassign(true), 0);
        assert!(l.is_empty());
        // The domain died: deassigning from it failed, taking it from dom_io did not.
        l.hypercall_done(&PtOp::AssignDevice { sbdf: 0x312 }, 0);
        l.hypercall_refused(&deassign(false), libc::ESRCH);
        l.hypercall_done(&deassign(true), 0);
        assert!(l.is_empty(), "{l:?}");
    }
}
