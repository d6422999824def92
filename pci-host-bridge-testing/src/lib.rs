//! Support for pci-host-bridge's tests and the fuzz targets: a Xen-like fake behind the
//! passthrough executor ([`XenLike`]), guest access sequences, and the invariants every
//! sequence must keep ([`Checker`]). A crate of its own (a dev-dependency of the bridge), so
//! no build of the device model contains it; it uses only the bridge's public interface
//! (plus the copy and state helpers of the bridge's `testing` feature).
//!
//! # The fake Xen
//! [`XenLike`] answers the executor's hypercalls as Xen 4.17 does, as far as these tests need:
//! `XEN_DOMCTL_memory_mapping` needs the guest's iomem permission for the whole range
//! (`EPERM`), does at most 64 frames a call and returns the number done (`map_mmio_regions`,
//! xen/arch/x86/mm/p2m.c:1670-1738), and unmaps any sub-range of what is mapped; `map_pirq` hands out fresh pirqs, refuses multi-vector MSI without interrupt
//! remapping (`EOPNOTSUPP`, xen/arch/x86/irq.c:2919-2923) and an MSI-X vector of a function
//! whose table Xen has not read (`ENODATA` without `prepare_msix`, msi.c:881-887);
//! `test_assign_device` / `assign_device` refuse a domain without an IOMMU context
//! (`EOPNOTSUPP`); `deassign_device` leaves the function quarantined with `DOMID_IO`
//! (pci.c:849-859) until it is deassigned from there. It keeps Xen's state (p2m, pirqs and
//! their bindings, assignments, permissions) and records every call with a sequence number
//! shared with the snapshot devices' event logs ([`pci_host_bridge::backend::snapshot::next_seq`]), and
//! every call a real Xen would refuse or that shows a DM bug (a `violation`).
//!
//! # Invariants ([`Checker::apply`], after each guest access)
//! The expected values are computed here from the guest's programming and the *device's raw*
//! config bytes and BARs (the MSI-X table BIR and offsets read by the checker itself), not
//! with the bridge's formulas:
//! 1. Device config writes: either inside the guest's access, only bytes with pass-through
//!    bits, changing no bit the table does not pass through; or the bridge's own register
//!    writes: Interrupt Disable (one byte at 0x05, only for functions forwarding INTx, to the
//!    state the function wants), MSI-X Message Control (exactly 2 bytes at cap+2, changing only
//!    Enable and Function Mask: Xen refuses any other dom0 write to the capability, msi.c:
//!    1253-1263), MSI Message Control (2 bytes at cap+2 changing only Enable). After an access
//!    that changed the guest's MSI-X Enable / Function Mask, the device has the guest's bits;
//!    the device's MSI Enable is set exactly while the MSI vector is bound in Xen.
//! 2. Reads agree with the table: bits that are not emulated equal the device's current
//!    config bytes; absent bytes read all-ones; hidden bytes read 0; emulated read-only bits
//!    (and the type bits of BARs) never change; unconfigured functions read all-ones. A read
//!    makes no hypercall.
//! 3. Mappings: every `memory_mapping` / `ioport_mapping` maps host frames/ports of one of the
//!    function's own BARs (never a page holding its MSI-X table or PBA, computed from the raw
//!    capability) to guest addresses inside the windows at the BAR's guest offset; Xen's p2m
//!    (as the fake keeps it, partial counts included) equals exactly what the guest's
//!    placement and decode ask for (every frame of every decoded, non-overlapping, page-sized
//!    BAR, minus the MSI-X pages), and the bridge's and executor's own lists.
//! 4. MMIO accesses never reach config space; forwarded BAR writes never touch a page of the
//!    MSI-X table or PBA.
//! 5. Interrupts: every `map_pirq` / `bind_pt_irq` matches the guest's programming: MSI with
//!    entry 0, `nvec = 2^MME`, `table_base` 0, vector `i` of the block as `gvec + i`; MSI-X
//!    with `table_base` = the host address of the BAR the raw BIR names (Xen adds the offset
//!    itself, msi.c:847-860), `gtable` = the guest address of the table, the entry's vector and
//!    flags. An MSI-X table access never unbinds (Xen's msixtbl owns the masks of bound
//!    entries), an address/data write never binds (latched until the unmask), an unmask write
//!    while MSI-X is enabled binds the entry (or, refused, it reads back masked). After every
//!    access the vectors bound in Xen equal the bridge's list; nothing of MSI-X is bound while
//!    MSI-X is disabled (and every entry reads masked right after a disable); the MSI vector is
//!    bound exactly while the guest's MSI Enable reads 1 (a refused bind reads back 0).
//!
//! Start and stop ([`Checker::check_start`], [`Checker::stop_and_check`]) are checked on the
//! same records: the lifecycle's order (test_assign, decode on, prepare_msix, reset, assign,
//! permissions for every BAR; Bus Master off before the first unmap, unbinds and unmaps before
//! the reset, reset before release_msix, release before deassign, deassign from the guest
//! and from `DOMID_IO`, decode off last) and that nothing is left in Xen after a stop.
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ioreq_server::device::{Actions, Device, Space};
use ioreq_server::executor::fake::FakeChannel;
use ioreq_server::executor::PassthroughExecutor;
use xen_abi::passthrough::{msi_gflags, PtOp};

use pci_host_bridge::backend::snapshot::{
    next_seq, DeviceEventKind, SnapshotDevice, SnapshotHandle,
};
use pci_host_bridge::backend::{BarInfo, BarKind, HostDevice};
use pci_host_bridge::bars::{BarMapping, BarSlot, PAGE_SIZE};
use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::config::{PciConfig, PciDeviceConfig, Windows};
use pci_host_bridge::config_space::{RegKind, Slot};
use pci_host_bridge::error::Error;
use pci_host_bridge::function::PassthroughFunction;
use pci_host_bridge::topology::PciAddress;

/// A small deterministic PRNG (SplitMix64), so failures reproduce from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`%.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One guest access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A config read, through CF8/CFC (`Space::PciConfig`) or ECAM.
    CfgRead {
        /// Through ECAM.
        ecam: bool,
        /// Guest function.
        addr: PciAddress,
        /// Register.
        reg: u16,
        /// Size (1, 2, 4; 8 only through ECAM).
        size: u8,
    },
    /// A config write.
    CfgWrite {
        /// Through ECAM.
        ecam: bool,
        /// Guest function.
        addr: PciAddress,
        /// Register.
        reg: u16,
        /// Size.
        size: u8,
        /// Data.
        data: u64,
    },
    /// An MMIO read in the BAR windows.
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Size (1, 2, 4, 8).
        size: u8,
    },
    /// An MMIO write in the BAR windows.
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// Size.
        size: u8,
        /// Data.
        data: u64,
    },
}

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

/// A `[[pci.device]]` entry for a snapshot device passed in memory to
/// [`bridge_with_snapshots`] (host function 0000:40:SLOT.FUNCTION at guest SLOT.FUNCTION).
pub fn snapshot_device_config(slot: u8, function: u8) -> PciDeviceConfig {
    PciDeviceConfig {
        host: PciAddress::new(0, 0x40, slot, function),
        slot,
        function,
        backend: pci_host_bridge::BackendKind::Snapshot,
        snapshot: Some("embedded".into()),
        intx: None,
        config_mirror: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The fake Xen.

/// A hypercall the fake answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedOp {
    /// Position in the process-wide sequence ([`next_seq`]).
    pub seq: u64,
    /// The call.
    pub op: PtOp,
    /// Its answer: the value, or the errno.
    pub result: Result<u64, i32>,
    /// For pirq ops: the block the pirq belongs to, as it was at the call.
    pub pirq: Option<PirqBlock>,
}

/// A pirq block `map_pirq` handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PirqBlock {
    /// First pirq.
    pub base: u32,
    /// Host function.
    pub sbdf: u32,
    /// Entry (MSI-X table entry, 0 for MSI).
    pub entry: u32,
    /// `table_base` it was mapped with (0: MSI).
    pub table_base: u64,
    /// Vectors.
    pub nvec: u32,
}

/// A bound pirq: what `bind_pt_irq` last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Guest vector.
    pub gvec: u8,
    /// Flags.
    pub gflags: u32,
    /// Guest table address (registered on the first bind only, as Xen does).
    pub gtable: u64,
}

/// A set of frames (or ports) kept as disjoint half-open intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intervals(BTreeMap<u64, u64>);

impl Intervals {
    /// Add `[a, a + n)`.
    pub fn add(&mut self, a: u64, n: u64) {
        let (mut lo, mut hi) = (a, a.saturating_add(n));
        if lo >= hi {
            return;
        }
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=hi)
            .filter(|(_, &e)| e >= lo)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.0.insert(lo, hi);
    }

    /// Remove `[a, a + n)`.
    pub fn remove(&mut self, a: u64, n: u64) {
        let (lo, hi) = (a, a.saturating_add(n));
        let hit: Vec<(u64, u64)> = self
            .0
            .range(..hi)
            .filter(|(_, &e)| e > lo)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            self.0.remove(&s);
            if s < lo {
                self.0.insert(s, lo);
            }
            if e > hi {
                self.0.insert(hi, e);
            }
        }
    }

    /// Whether all of `[a, a + n)` is in the set.
    pub fn covers(&self, a: u64, n: u64) -> bool {
        n == 0
            || self
                .0
                .range(..=a)
                .next_back()
                .is_some_and(|(_, &e)| e >= a.saturating_add(n))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many frames (ports) the set holds.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }
}

/// Xen's p2m as the fake keeps it: guest frame -> host frame (and, the same way, its guest
/// port -> host port mappings), stored as disjoint runs so that mapping, unmapping and copying
/// a large BAR costs per run, not per frame (the answers are the same as for a frame-by-frame
/// map).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct P2m {
    /// First guest frame -> (first host frame, frames); the runs do not overlap.
    runs: BTreeMap<u64, (u64, u64)>,
    frames: u64,
}

impl P2m {
    /// Frames mapped.
    pub fn len(&self) -> usize {
        self.frames as usize
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// The host frame guest frame `gfn` maps.
    pub fn get(&self, gfn: u64) -> Option<u64> {
        let (&g, &(m, n)) = self.runs.range(..=gfn).next_back()?;
        (gfn - g < n).then(|| m + (gfn - g))
    }

    /// Every mapped frame, (guest frame, host frame), in guest order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs
            .iter()
            .flat_map(|(&g, &(m, n))| (0..n).map(move |k| (g + k, m + k)))
    }

    /// The mapped runs (first guest frame, first host frame, frames), in guest order.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.runs.iter().map(|(&g, &(m, n))| (g, m, n))
    }

    /// Unmap everything.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.frames = 0;
    }

    /// The mapped pieces of guest frames `[g, g + n)`: (guest frame, host frame, frames).
    fn pieces(&self, g: u64, n: u64) -> Vec<Run> {
        let end = g.saturating_add(n);
        let before = self.runs.range(..g).next_back();
        before
            .into_iter()
            .chain(self.runs.range(g..end))
            .filter_map(|(&s, &(m, len))| {
                let (a, z) = (s.max(g), s.saturating_add(len).min(end));
                (a < z).then(|| (a, m + (a - s), z - a))
            })
            .collect()
    }

    /// Unmap guest frames `[g, g + n)` (whatever they map).
    fn remove(&mut self, g: u64, n: u64) {
        let end = g.saturating_add(n);
        let starts: Vec<u64> = self
            .runs
            .range(..g)
            .next_back()
            .map(|(&s, _)| s)
            .into_iter()
            .chain(self.runs.range(g..end).map(|(&s, _)| s))
            .collect();
        for s in starts {
            let (m, len) = self.runs[&s];
            let z = s.saturating_add(len);
            if z <= g || s >= end {
                continue;
            }
            self.runs.remove(&s);
            self.frames -= z.min(end) - s.max(g);
            if s < g {
                self.runs.insert(s, (m, g - s));
            }
            if z > end {
                self.runs.insert(end, (m + (end - s), z - end));
            }
        }
    }

    /// Map guest frames `[g, g + n)` to host frames `[m, m + n)`, replacing what they mapped;
    /// returns the replaced pieces.
    fn insert(&mut self, g: u64, m: u64, n: u64) -> Vec<Run> {
        let old = self.pieces(g, n);
        self.remove(g, n);
        if n > 0 {
            self.runs.insert(g, (m, n));
            self.frames += n;
        }
        old
    }

    /// How many frames from `g` on map `m`, `m + 1`, ... (at most `n`).
    fn mapped_prefix(&self, g: u64, m: u64, n: u64) -> u64 {
        let mut k = 0;
        while k < n {
            let Some((&s, &(sm, len))) = self.runs.range(..=g + k).next_back() else {
                break;
            };
            let off = g + k - s;
            if off >= len || sm + off != m + k {
                break;
            }
            k += (len - off).min(n - k);
        }
        k
    }
}

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

    fn answer(&mut self, cfg: &XenLikeConfig, op: &PtOp) -> Result<u64, i32> {
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

/// The knobs of the fake Xen.
#[derive(Clone, Copy, Debug)]
pub struct XenLikeConfig {
    /// The guest's `max_pages` (4 KiB frames); 512 MiB by default.
    pub max_pages: u64,
    /// Frames one `memory_mapping` call does (Xen 4.17 on 4 KiB pages: 64).
    pub frames_per_call: u64,
    /// Interrupt remapping (multi-vector MSI is refused without it).
    pub intremap: bool,
    /// The domain has an IOMMU context (assignment is refused without it).
    pub iommu: bool,
    /// At most this many pirqs mapped at once (`map_pirq` then fails with ENOSPC, as Xen does
    /// when the domain's `nr_pirqs` are used up); `None`: no limit.
    pub pirq_limit: Option<u32>,
    /// `memory_mapping` of more frames than this fails with E2BIG (as Xen on Arm does above
    /// 64; libxenctrl then halves the batch); `None`: never.
    pub e2big_above: Option<u64>,
}

impl Default for XenLikeConfig {
    fn default() -> Self {
        XenLikeConfig {
            max_pages: 512 << 8,
            frames_per_call: 64,
            intremap: false,
            iommu: true,
            pirq_limit: None,
            e2big_above: None,
        }
    }
}

/// A run of mapped frames: (first guest frame, first host frame, frames).
pub type Run = (u64, u64, u64);

/// A fault to inject: `Some(errno)` makes the fake refuse that call (before looking at it).
pub type Fault = Box<dyn FnMut(&PtOp) -> Option<i32>>;

/// The fake Xen (see the module docs).
pub struct XenLike {
    /// Knobs.
    pub config: XenLikeConfig,
    /// Injected faults.
    pub fault: Option<Fault>,
}

impl XenLike {
    /// A fake Xen with these knobs and no fault.
    pub fn new(config: XenLikeConfig) -> Self {
        XenLike {
            config,
            fault: None,
        }
    }

    /// The same, refusing the calls `fault` picks.
    pub fn with_fault(config: XenLikeConfig, fault: Fault) -> Self {
        XenLike {
            config,
            fault: Some(fault),
        }
    }

    /// A channel for `domid` answering as this Xen, and the state it keeps.
    pub fn channel(self, domid: u16) -> (FakeChannel, Arc<Mutex<XenState>>) {
        self.channel_over(domid, XenState::default())
    }

    /// A channel for `domid` answering as this Xen from `state` on (a [`XenState::fork`],
    /// say), and the state it keeps.
    pub fn channel_over(self, domid: u16, state: XenState) -> (FakeChannel, Arc<Mutex<XenState>>) {
        let room = state.log.capacity();
        let state = Arc::new(Mutex::new(state));
        let st = state.clone();
        let XenLike { config, mut fault } = self;
        let (chan, chan_log) = FakeChannel::with_rule(
            domid,
            Box::new(move |op| {
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                let pirq = match *op {
                    PtOp::UnmapPirq { pirq }
                    | PtOp::BindPtIrqMsi { pirq, .. }
                    | PtOp::UnbindPtIrqMsi { pirq, .. } => s.block_of(pirq),
                    _ => None,
                };
                let result = match fault.as_mut().and_then(|f| f(op)) {
                    Some(errno) => Err(errno),
                    None => s.answer(&config, op),
                };
                let pirq = pirq.or_else(|| match (op, result) {
                    (PtOp::MapPirqMsi(..), Ok(v)) => s.pirqs.get(&(v as u32)).copied(),
                    _ => None,
                });
                s.log.push(LoggedOp {
                    seq: next_seq(),
                    op: op.clone(),
                    result,
                    pirq,
                });
                result
            }),
        );
        // The channel keeps a log of its own: room for it too.
        chan_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(room);
        (chan, state)
    }

    /// An executor for `domid` over this Xen.
    pub fn executor(self, domid: u16) -> (PassthroughExecutor, Arc<Mutex<XenState>>) {
        let (c, s) = self.channel(domid);
        (PassthroughExecutor::new(Box::new(c)), s)
    }
}

/// Lock the fake's state.
pub fn lock(x: &Arc<Mutex<XenState>>) -> MutexGuard<'_, XenState> {
    x.lock().unwrap_or_else(|p| p.into_inner())
}

/// The guest's domid in these tests.
pub const DOMID: u16 = 7;

// ---------------------------------------------------------------------------------------------
// Building bridges.

/// Build a bridge over snapshot devices with an executor over a default [`XenLike`], start it
/// (checking the start with [`Checker::check_start`]) and return it with its [`Checker`].
pub fn bridge_with_snapshots(
    config: &PciConfig,
    devices: Vec<SnapshotDevice>,
) -> Result<(PciHostBridge, Checker), Error> {
    bridge_with_xen(config, devices, XenLike::new(XenLikeConfig::default()))
}

/// [`bridge_with_snapshots`] with a fake Xen of the caller's.
pub fn bridge_with_xen(
    config: &PciConfig,
    devices: Vec<SnapshotDevice>,
    xen: XenLike,
) -> Result<(PciHostBridge, Checker), Error> {
    let (mut bridge, mut checker) = unstarted_bridge(config, devices, xen)?;
    let mut actions = Actions::new();
    bridge.start(&mut actions).map_err(Error::Config)?;
    checker
        .check_start(&bridge, 0, &[])
        .map_err(|e| Error::Config(format!("start: {e}")))?;
    checker.sync_logs();
    Ok((bridge, checker))
}

/// A started bridge over snapshot devices and a fake Xen, prepared once (placement, Linux's
/// bring-up, whatever a prologue does) and then copied for every run ([`Template::fork`]):
/// the fuzz targets' way to start each input from the same state without rebuilding and
/// replaying it. A copy is the template's exact state (bridge, executor, Xen, devices and
/// checker), with empty logs.
pub struct Template {
    bridge: PciHostBridge,
    checker: Checker,
    /// The devices as they went into the bridge (their static part), by guest address.
    protos: BTreeMap<PciAddress, SnapshotDevice>,
    xen: XenLikeConfig,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("bridge", &self.bridge)
            .field("xen", &self.xen)
            .finish_non_exhaustive()
    }
}

impl Template {
    /// [`bridge_with_xen`] over copies of `devices` and a fake Xen with knobs `xen` (no
    /// faults: a fault closure cannot be copied).
    pub fn new(
        config: &PciConfig,
        devices: &[SnapshotDevice],
        xen: XenLikeConfig,
    ) -> Result<Self, Error> {
        let protos = config
            .devices
            .iter()
            .zip(devices)
            .map(|(d, s)| (config.guest_address(d), s.duplicate()))
            .collect();
        let copies = devices.iter().map(SnapshotDevice::duplicate).collect();
        let (bridge, checker) = bridge_with_xen(config, copies, XenLike::new(xen))?;
        Ok(Template {
            bridge,
            checker,
            protos,
            xen,
        })
    }

    /// Perform a prologue on the template (replayed unchecked with
    /// [`Checker::apply_unchecked`], say); every copy made after starts from its end.
    pub fn prepare(&mut self, f: impl FnOnce(&mut PciHostBridge, &mut Checker)) {
        f(&mut self.bridge, &mut self.checker);
    }

    /// The template's bridge and checker (to check its state once, say).
    pub fn parts(&self) -> (&PciHostBridge, &Checker) {
        (&self.bridge, &self.checker)
    }

    /// A copy of the template: bridge, executor, fake Xen, devices and checker in the
    /// template's current state (with empty logs).
    pub fn fork(&self) -> Result<(PciHostBridge, Checker), Error> {
        let mut handles = BTreeMap::new();
        let mut backends: Vec<Box<dyn HostDevice>> = Vec::new();
        for f in self.bridge.functions() {
            let a = f.guest_address();
            let (Some(proto), Some(now)) = (self.protos.get(&a), self.checker.handle(a)) else {
                return Err(Error::Config(format!("{a}: no snapshot device to copy")));
            };
            let dev = proto.duplicate_with_state(now);
            handles.insert(a, dev.handle());
            backends.push(Box::new(dev));
        }
        let exec = match self.bridge.executor() {
            Some(e) => {
                let state = self.checker.xen().fork();
                let (chan, xen) = XenLike::new(self.xen).channel_over(DOMID, state);
                Some((e.fork(Box::new(chan)), xen))
            }
            None => None,
        };
        let (exec, xen) = match exec {
            Some((e, x)) => (Some(e), x),
            None => (None, Arc::new(Mutex::new(self.checker.xen().fork()))),
        };
        let bridge = self.bridge.fork(backends, exec)?;
        let checker = self.checker.fork(&handles, xen).map_err(Error::Config)?;
        Ok((bridge, checker))
    }
}

/// The bridge with its executor set but not started (for tests of the start itself).
pub fn unstarted_bridge(
    config: &PciConfig,
    devices: Vec<SnapshotDevice>,
    xen: XenLike,
) -> Result<(PciHostBridge, Checker), Error> {
    let handles: Vec<(PciAddress, SnapshotHandle)> = config
        .devices
        .iter()
        .zip(&devices)
        .map(|(d, s)| (config.guest_address(d), s.handle()))
        .collect();
    let backends: Vec<Box<dyn HostDevice>> = devices
        .into_iter()
        .map(|d| Box::new(d) as Box<dyn HostDevice>)
        .collect();
    let mut bridge = PciHostBridge::with_backends(config, backends)?;
    let (exec, xen) = xen.executor(DOMID);
    bridge.set_executor(exec);
    Ok((bridge, Checker::new(handles, xen)))
}

// ---------------------------------------------------------------------------------------------
// What the checker reads from raw config bytes itself.

/// The MSI and MSI-X capabilities as the device's raw config space has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCaps {
    /// MSI: (offset, Message Control).
    pub msi: Option<(u16, u16)>,
    /// MSI-X.
    pub msix: Option<RawMsix>,
}

/// The MSI-X capability as the raw bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawMsix {
    /// Offset.
    pub cap: u16,
    /// Table entries.
    pub entries: u16,
    /// Table BIR and offset.
    pub table: (u8, u64),
    /// PBA BIR and offset.
    pub pba: (u8, u64),
}

impl RawCaps {
    /// Walk the standard capability list of `raw`.
    pub fn parse(raw: &[u8]) -> Self {
        let b = |o: usize| raw.get(o).copied().unwrap_or(0);
        let w = |o: usize| u16::from(b(o)) | u16::from(b(o + 1)) << 8;
        let d = |o: usize| u32::from(w(o)) | u32::from(w(o + 2)) << 16;
        let mut out = RawCaps::default();
        if w(0x06) & 0x10 == 0 {
            return out;
        }
        let mut p = usize::from(b(0x34) & 0xFC);
        for _ in 0..48 {
            if p < 0x40 {
                break;
            }
            match b(p) {
                0x05 if out.msi.is_none() => out.msi = Some((p as u16, w(p + 2))),
                0x11 if out.msix.is_none() => {
                    let t = d(p + 4);
                    let q = d(p + 8);
                    out.msix = Some(RawMsix {
                        cap: p as u16,
                        entries: (w(p + 2) & 0x7FF) + 1,
                        table: ((t & 7) as u8, u64::from(t & !7)),
                        pba: ((q & 7) as u8, u64::from(q & !7)),
                    })
                }
                _ => {}
            }
            p = usize::from(b(p + 1) & 0xFC);
        }
        out
    }
}

impl RawMsix {
    /// The pages of BAR `bar` holding the table or the PBA (as BAR page indexes).
    pub fn pages(&self, bar: u8) -> BTreeSet<u64> {
        let mut v = BTreeSet::new();
        let tlen = u64::from(self.entries) * 16;
        let plen = u64::from(self.entries).div_ceil(64) * 8;
        for ((b, off), len) in [(self.table, tlen), (self.pba, plen)] {
            if b == bar {
                for p in off / PAGE_SIZE..=(off + len - 1) / PAGE_SIZE {
                    v.insert(p);
                }
            }
        }
        v
    }
}

/// The guest's view of the 16/32-bit register at `off` (its emulated value), if the layout
/// has a register starting there.
fn guest_reg(f: &PassthroughFunction, off: u16) -> Option<u32> {
    f.layout().find(off).map(|i| f.layout().reg(i).virt)
}

/// The guest's MSI programming read from its registers: (enabled, nvec, address, data).
fn guest_msi(f: &PassthroughFunction, cap: u16, raw_ctl: u16) -> Option<(bool, u32, u64, u32)> {
    f.caps().msi.filter(|&c| c == cap)?;
    let ctl = guest_reg(f, cap + 2)?;
    let is64 = raw_ctl & 0x80 != 0;
    let lo = u64::from(guest_reg(f, cap + 4)? & !3);
    let (hi, data) = if is64 {
        (
            u64::from(guest_reg(f, cap + 8)?),
            guest_reg(f, cap + 0x0C)? & 0xFFFF,
        )
    } else {
        (0, guest_reg(f, cap + 8)? & 0xFFFF)
    };
    Some((ctl & 1 != 0, 1 << ((ctl >> 4) & 7), hi << 32 | lo, data))
}

/// The guest's MSI-X Enable and Function Mask.
fn guest_msix(f: &PassthroughFunction, cap: u16) -> Option<(bool, bool)> {
    f.caps().msix.filter(|m| m.cap == cap)?;
    let ctl = guest_reg(f, cap + 2)?;
    Some((ctl & 0x8000 != 0, ctl & 0x4000 != 0))
}

/// What the checker knows of one function.
#[derive(Debug)]
struct Func {
    handle: SnapshotHandle,
    raw: RawCaps,
}

/// The guest-visible interrupt state of a function (and what Xen has bound of its MSI-X).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct IrqView {
    msix: Option<(bool, bool)>,
    msi: bool,
    /// MSI-X entries bound in Xen.
    msix_bound: BTreeSet<u32>,
    /// The guest address of the MSI-X table.
    gtable: Option<u64>,
}

/// The invariant checker (see the module docs).
pub struct Checker {
    funcs: BTreeMap<PciAddress, Func>,
    xen: Arc<Mutex<XenState>>,
    seen_ops: usize,
    seen_writes: BTreeMap<PciAddress, usize>,
    seen_bar_writes: BTreeMap<PciAddress, usize>,
    /// Emulated read-only bits first seen, per function and offset: `(mask, value)`.
    stable: HashMap<(PciAddress, u16), (u8, u8)>,
    /// Emulated bits whose value the checker knows (from an earlier read or a guest write),
    /// per function and offset: `(known mask, value)`.
    shadow: HashMap<(PciAddress, u16), (u8, u8)>,
    /// Operations applied.
    pub ops: u64,
    /// Device writes checked.
    pub device_writes: u64,
    /// `memory_mapping` and `ioport_mapping` (add) calls seen.
    pub maps: u64,
    /// Of those, answered with a partial count.
    pub partial_maps: u64,
    /// `bind_pt_irq` calls seen.
    pub binds: u64,
    /// `unbind_pt_irq` calls seen.
    pub unbinds: u64,
    /// Hypercalls Xen refused during guest accesses.
    pub refused: u64,
    /// Bridge-owned Interrupt Disable writes seen.
    pub intx_writes: u64,
    /// MSI-X Message Control writes to the device seen.
    pub msix_control_writes: u64,
    /// MSI Enable writes to the device seen.
    pub msi_enable_writes: u64,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("ops", &self.ops)
            .field("maps", &self.maps)
            .field("binds", &self.binds)
            .finish_non_exhaustive()
    }
}

fn ops_of(log: &[LoggedOp]) -> Vec<PtOp> {
    log.iter().map(|l| l.op.clone()).collect()
}

/// The calls for an error message: the first few, and how many more.
fn brief(log: &[LoggedOp]) -> String {
    const N: usize = 8;
    let head: Vec<PtOp> = log.iter().take(N).map(|l| l.op.clone()).collect();
    if log.len() > N {
        format!("{head:?} and {} more", log.len() - N)
    } else {
        format!("{head:?}")
    }
}

impl Checker {
    /// A checker for functions at these guest addresses backed by these snapshots, with the
    /// fake Xen's state.
    pub fn new(handles: Vec<(PciAddress, SnapshotHandle)>, xen: Arc<Mutex<XenState>>) -> Self {
        let funcs = handles
            .into_iter()
            .map(|(a, handle)| {
                let raw = RawCaps::parse(&handle.config());
                (a, Func { raw, handle })
            })
            .collect();
        Checker {
            funcs,
            xen,
            seen_ops: 0,
            seen_writes: BTreeMap::new(),
            seen_bar_writes: BTreeMap::new(),
            stable: HashMap::new(),
            shadow: HashMap::new(),
            ops: 0,
            device_writes: 0,
            maps: 0,
            partial_maps: 0,
            binds: 0,
            unbinds: 0,
            refused: 0,
            intx_writes: 0,
            msix_control_writes: 0,
            msi_enable_writes: 0,
        }
    }

    /// A checker that knows what this one does (first-seen read-only bits, known emulated
    /// bits, counters) for a copy of its bridge ([`Template::fork`]): the functions' devices
    /// are now behind `handles` and Xen is `xen`, whose logs start empty (everything before
    /// counts as seen).
    pub fn fork(
        &self,
        handles: &BTreeMap<PciAddress, SnapshotHandle>,
        xen: Arc<Mutex<XenState>>,
    ) -> Result<Self, String> {
        let funcs = self
            .funcs
            .iter()
            .map(|(a, f)| {
                let handle = handles
                    .get(a)
                    .ok_or_else(|| format!("no device for {a}"))?
                    .clone();
                Ok((*a, Func { handle, raw: f.raw }))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let mut c = Checker {
            funcs,
            xen,
            seen_ops: 0,
            seen_writes: BTreeMap::new(),
            seen_bar_writes: BTreeMap::new(),
            stable: self.stable.clone(),
            shadow: self.shadow.clone(),
            ops: self.ops,
            device_writes: self.device_writes,
            maps: self.maps,
            partial_maps: self.partial_maps,
            binds: self.binds,
            unbinds: self.unbinds,
            refused: self.refused,
            intx_writes: self.intx_writes,
            msix_control_writes: self.msix_control_writes,
            msi_enable_writes: self.msi_enable_writes,
        };
        c.sync_logs();
        Ok(c)
    }

    /// The fake Xen's state.
    pub fn xen(&self) -> MutexGuard<'_, XenState> {
        lock(&self.xen)
    }

    /// The fake Xen's state, shared.
    pub fn xen_state(&self) -> Arc<Mutex<XenState>> {
        self.xen.clone()
    }

    /// The snapshot handle of the function at guest address `a`.
    pub fn handle(&self, a: PciAddress) -> Option<&SnapshotHandle> {
        self.funcs.get(&a).map(|f| &f.handle)
    }

    /// The raw capabilities of the function at `a`.
    pub fn raw_caps(&self, a: PciAddress) -> Option<RawCaps> {
        self.funcs.get(&a).map(|f| f.raw)
    }

    /// Mark every hypercall and device write so far as seen.
    pub fn sync_logs(&mut self) {
        let n = self.xen().log.len();
        self.seen_ops = n;
        for (a, f) in &self.funcs {
            let (writes, bar_writes, _) = f.handle.log_lengths();
            self.seen_writes.insert(*a, writes);
            self.seen_bar_writes.insert(*a, bar_writes);
        }
    }

    fn take_violations(&self) -> Result<(), String> {
        let v: Vec<String> = std::mem::take(&mut self.xen().violations);
        if v.is_empty() {
            Ok(())
        } else {
            Err(format!("Xen would refuse or the DM got wrong: {v:?}"))
        }
    }

    /// The functions whose interrupt programming `op` can change (`None`: all of them).
    fn touched(bridge: &PciHostBridge, op: Op) -> Option<Vec<PciAddress>> {
        match op {
            Op::CfgRead { .. } | Op::MmioRead { .. } => Some(Vec::new()),
            // An ECAM write running into the next function: all of them.
            Op::CfgWrite { reg, size, .. } if usize::from(reg) + usize::from(size) > 4096 => None,
            Op::CfgWrite { addr, .. } => Some(vec![addr]),
            Op::MmioWrite { addr, size, .. } => Some(
                bridge
                    .functions()
                    .filter(|f| f.claims_mmio(addr, usize::from(size)))
                    .map(|f| f.guest_address())
                    .collect(),
            ),
        }
    }

    fn irq_views(
        &self,
        bridge: &PciHostBridge,
        only: &Option<Vec<PciAddress>>,
    ) -> BTreeMap<PciAddress, IrqView> {
        let x = self.xen();
        self.funcs
            .iter()
            .filter(|(a, _)| only.as_ref().is_none_or(|v| v.contains(a)))
            .filter_map(|(a, fc)| {
                let f = bridge.function(*a)?;
                Some((
                    *a,
                    IrqView {
                        msix: fc.raw.msix.and_then(|m| guest_msix(f, m.cap)),
                        msi: fc
                            .raw
                            .msi
                            .and_then(|(c, ctl)| guest_msi(f, c, ctl))
                            .is_some_and(|m| m.0),
                        msix_bound: x
                            .bound_of(f.host_address().sbdf())
                            .iter()
                            .filter(|(_, (b, _))| b.table_base != 0)
                            .map(|(e, _)| *e)
                            .collect(),
                        gtable: fc.raw.msix.and_then(|m| {
                            f.bars()
                                .bar(usize::from(m.table.0))
                                .map(|b| b.guest.wrapping_add(m.table.1))
                        }),
                    },
                ))
            })
            .collect()
    }

    /// Perform `op` without checking it (a fixed prologue the stable tests check already,
    /// replayed by every fuzz run); what it did counts as seen.
    pub fn apply_unchecked(&mut self, bridge: &mut PciHostBridge, op: Op) {
        let mut actions = Actions::new();
        let ecam = bridge.ecam();
        match op {
            Op::CfgRead { .. } | Op::MmioRead { .. } => return,
            Op::CfgWrite {
                ecam: via_ecam,
                addr,
                reg,
                size,
                data,
            } => {
                let data = data & mask(size);
                self.model_write(bridge, addr, reg, size, data);
                match (via_ecam, ecam.encode(addr, reg)) {
                    (true, Some(a)) => bridge.write(Space::Memory, a, size, data, &mut actions),
                    (true, None) => {}
                    (false, _) => bridge.write(
                        Space::PciConfig,
                        u64::from(addr.sbdf()) << 32 | u64::from(reg),
                        size,
                        data,
                        &mut actions,
                    ),
                }
            }
            Op::MmioWrite { addr, size, data } => {
                bridge.write(Space::Memory, addr, size, data & mask(size), &mut actions)
            }
        }
        self.sync_logs();
    }

    /// Perform `op` on `bridge` through the [`Device`] interface and check every invariant.
    pub fn apply(&mut self, bridge: &mut PciHostBridge, op: Op) -> Result<(), String> {
        self.ops += 1;
        let touched = Self::touched(bridge, op);
        let before = self.irq_views(bridge, &touched);
        let pre_bound = if matches!(op, Op::CfgWrite { .. }) {
            self.xen().bound.clone()
        } else {
            BTreeMap::new()
        };
        let mut actions = Actions::new();
        let ecam = bridge.ecam();
        match op {
            Op::CfgRead {
                ecam: via_ecam,
                addr,
                reg,
                size,
            } => {
                let v = if via_ecam {
                    let Some(a) = ecam.encode(addr, reg) else {
                        return Ok(());
                    };
                    bridge.read(Space::Memory, a, size, &mut actions)
                } else {
                    bridge.read(
                        Space::PciConfig,
                        u64::from(addr.sbdf()) << 32 | u64::from(reg),
                        size,
                        &mut actions,
                    )
                } & mask(size);
                self.check_read(bridge, addr, reg, size, v, via_ecam)
                    .map_err(|e| format!("{op:?} -> {v:#x}: {e}"))?;
            }
            Op::CfgWrite {
                ecam: via_ecam,
                addr,
                reg,
                size,
                data,
            } => {
                let data = data & mask(size);
                self.model_write(bridge, addr, reg, size, data);
                if via_ecam {
                    let Some(a) = ecam.encode(addr, reg) else {
                        return Ok(());
                    };
                    bridge.write(Space::Memory, a, size, data, &mut actions);
                } else {
                    bridge.write(
                        Space::PciConfig,
                        u64::from(addr.sbdf()) << 32 | u64::from(reg),
                        size,
                        data,
                        &mut actions,
                    );
                }
            }
            Op::MmioRead { addr, size } => {
                let _ = bridge.read(Space::Memory, addr, size, &mut actions);
            }
            Op::MmioWrite { addr, size, data } => {
                bridge.write(Space::Memory, addr, size, data & mask(size), &mut actions);
            }
        }
        if !actions.is_empty() {
            return Err(format!(
                "{op:?}: the bridge asked for actions {:?} (everything goes through the executor)",
                actions.as_slice()
            ));
        }
        let new_ops: Vec<LoggedOp> = {
            let x = self.xen();
            x.log[self.seen_ops.min(x.log.len())..].to_vec()
        };
        self.seen_ops += new_ops.len();
        self.take_violations()
            .map_err(|e| format!("{op:?}: {e}; calls {}", brief(&new_ops)))?;
        let access = match op {
            Op::CfgWrite {
                addr, reg, size, ..
            } => Some((addr, reg, size)),
            _ => None,
        };
        self.check_device_writes(bridge, access)
            .map_err(|e| format!("{op:?}: {e}"))?;
        self.check_ops(bridge, op, &new_ops, &pre_bound)
            .map_err(|e| format!("{op:?}: {e}; calls {}", brief(&new_ops)))?;
        // The guest's placement and decode change only with the command register, a BAR or
        // the ROM register (or an ECAM write running into the next function); Xen's p2m only
        // with a mapping call.
        let placement = match op {
            Op::CfgWrite { reg, size, .. } => {
                let (a, z) = (usize::from(reg), usize::from(reg) + usize::from(size));
                z > 4096
                    || [(4, 6), (0x10, 0x28), (0x30, 0x34)]
                        .iter()
                        .any(|&(x, y)| a < y && x < z)
            }
            _ => false,
        };
        if placement
            || new_ops.iter().any(|l| {
                matches!(
                    l.op,
                    PtOp::MemoryMapping { .. } | PtOp::IoportMapping { .. }
                )
            })
        {
            self.check_mappings(bridge)
                .map_err(|e| format!("{op:?}: {e}; calls {}", brief(&new_ops)))?;
        }
        if matches!(op, Op::CfgRead { .. } | Op::MmioRead { .. }) {
            return Ok(());
        }
        let after = self.irq_views(bridge, &touched);
        self.check_interrupts_after(bridge, op, &before, &after)
            .map_err(|e| format!("{op:?}: {e}; calls {}", brief(&new_ops)))
    }

    /// Check the state invariants (mappings and interrupts of every function) without an
    /// access: after an unchecked prologue, say.
    pub fn check_state(&self, bridge: &PciHostBridge) -> Result<(), String> {
        self.take_violations()?;
        self.check_mappings(bridge)?;
        self.check_interrupts(bridge)
    }

    /// Check the interrupt invariants against the bridge's current state without an access
    /// (after an event, say).
    pub fn check_interrupts(&self, bridge: &PciHostBridge) -> Result<(), String> {
        let v = self.irq_views(bridge, &None);
        self.check_interrupts_after(
            bridge,
            Op::MmioRead {
                addr: u64::MAX,
                size: 1,
            },
            &v,
            &v,
        )
    }

    fn check_interrupts_after(
        &self,
        bridge: &PciHostBridge,
        op: Op,
        before: &BTreeMap<PciAddress, IrqView>,
        after: &BTreeMap<PciAddress, IrqView>,
    ) -> Result<(), String> {
        let x = self.xen();
        // The functions in `after` (those the access could change).
        for (a, fc) in self.funcs.iter().filter(|(a, _)| after.contains_key(a)) {
            let Some(f) = bridge.function(*a) else {
                continue;
            };
            let sbdf = f.host_address().sbdf();
            let bound = x.bound_of(sbdf);
            // Every vector of a block is bound together.
            for b in x.pirqs.values().filter(|b| b.sbdf == sbdf) {
                let n = (b.base..b.base + b.nvec)
                    .filter(|p| x.bound.contains_key(p))
                    .count() as u32;
                if n != 0 && n != b.nvec {
                    return Err(format!("{a}: {n} of the {} vectors of {b:?} bound", b.nvec));
                }
            }
            // Xen's bound set equals the bridge's own list.
            let own: BTreeMap<u32, (u64, u32, u8, u32, u64)> = f
                .bindings()
                .bound()
                .map(|(s, v)| {
                    (
                        s.entry(),
                        (v.table_base, v.nvec, v.gvec, v.gflags, v.gtable),
                    )
                })
                .collect();
            let xen: BTreeMap<u32, (u64, u32, u8, u32, u64)> = bound
                .iter()
                .map(|(e, (b, v))| (*e, (b.table_base, b.nvec, v.gvec, v.gflags, v.gtable)))
                .collect();
            if own != xen {
                return Err(format!(
                    "{a}: the bridge lists {own:x?} bound, Xen has {xen:x?}"
                ));
            }
            let view = after.get(a).cloned().unwrap_or_default();
            let was = before.get(a).cloned().unwrap_or_default();
            let msix_on = view.msix.is_some_and(|m| m.0);
            // MSI.
            if let Some((cap, raw_ctl)) = fc.raw.msi {
                let m = guest_msi(f, cap, raw_ctl);
                let msi_bound = bound.iter().find(|(_, (b, _))| b.table_base == 0);
                match (m, msi_bound) {
                    (Some((true, nvec, addr, data)), Some((&e, (b, v)))) if !msix_on => {
                        let want = (0, nvec, data as u8, msi_gflags(addr, data, true), 0);
                        let have = (e, b.nvec, v.gvec, v.gflags, v.gtable);
                        if want != have {
                            return Err(format!(
                                "{a}: MSI bound as {have:x?}, the programming asks for {want:x?}"
                            ));
                        }
                    }
                    (Some((true, ..)), None) if !msix_on => {
                        return Err(format!(
                            "{a}: the guest's MSI Enable reads 1 but nothing is bound (a refused bind must read back 0)"
                        ))
                    }
                    (_, Some(_)) if !view.msi || msix_on => {
                        return Err(format!(
                            "{a}: MSI bound while the guest has it disabled (or MSI-X enabled too)"
                        ))
                    }
                    _ => {}
                }
                let dev_on = fc.handle.config_bytes(usize::from(cap) + 2, 1)[0] & 1 != 0;
                if dev_on != msi_bound.is_some() {
                    return Err(format!(
                        "{a}: the device's MSI Enable is {dev_on} but the vector is {}bound",
                        if msi_bound.is_some() { "" } else { "not " }
                    ));
                }
            }
            // MSI-X.
            let Some(rm) = fc.raw.msix else { continue };
            let msix_bound: Vec<(u32, PirqBlock, Bound)> = bound
                .iter()
                .filter(|(_, (b, _))| b.table_base != 0)
                .map(|(e, (b, v))| (*e, *b, *v))
                .collect();
            if (!msix_on || view.msi) && !msix_bound.is_empty() {
                return Err(format!(
                    "{a}: MSI-X entries bound while MSI-X is disabled (or MSI enabled): {msix_bound:x?}"
                ));
            }
            let table_host = f.device().bar(usize::from(rm.table.0)).map(|b| b.host_addr);
            let table_guest = f
                .bars()
                .bar(usize::from(rm.table.0))
                .map(|b| b.guest.wrapping_add(rm.table.1));
            for (e, b, v) in &msix_bound {
                if Some(b.table_base) != table_host {
                    return Err(format!(
                        "{a}: entry {e} bound with table_base {:#x}, the table's BAR is at {table_host:x?}",
                        b.table_base
                    ));
                }
                if Some(v.gtable) != table_guest {
                    return Err(format!(
                        "{a}: entry {e} bound with gtable {:#x}, the guest's table is at {table_guest:x?}",
                        v.gtable
                    ));
                }
            }
            // While MSI-X stays enabled (and MSI off) and the table stays where it is, a
            // config write (the Function Mask, say: written through, Xen tracks it) never
            // unbinds an entry, and nothing but an unmask binds one from the table.
            if matches!(op, Op::CfgWrite { .. })
                && was.msix.is_some_and(|m| m.0)
                && msix_on
                && !was.msi
                && !view.msi
                && was.gtable == view.gtable
                && !was.msix_bound.is_subset(&view.msix_bound)
            {
                return Err(format!(
                    "{a}: a config write unbound MSI-X entries {:?} while MSI-X stayed enabled",
                    was.msix_bound
                        .difference(&view.msix_bound)
                        .collect::<Vec<_>>()
                ));
            }
            if let Op::MmioWrite { .. } = op {
                if !was.msix_bound.is_subset(&view.msix_bound) {
                    return Err(format!("{a}: an MMIO write unbound MSI-X entries"));
                }
            }
            if was.msix.is_some_and(|m| m.0) && !msix_on {
                if let Some(t) = f.msix_table() {
                    if (0..t.len()).any(|i| t.entry(i).is_some_and(|e| !e.masked)) {
                        return Err(format!(
                            "{a}: MSI-X disabled but some entries read unmasked"
                        ));
                    }
                }
            }
            // An unmask write of entry i while MSI-X is on binds it (or it reads back masked).
            if let (Op::MmioWrite { addr, size, data }, Some(tg), Some(t)) =
                (op, table_guest, f.msix_table())
            {
                let in_table = addr >= tg
                    && addr + u64::from(size) <= tg + u64::from(rm.entries) * 16
                    && f.claims_mmio(addr, usize::from(size));
                let rel = addr.wrapping_sub(tg);
                let ctrl = match size {
                    4 if rel % 16 == 12 => Some(data as u32),
                    8 if rel % 16 == 8 => Some((data >> 32) as u32),
                    _ => None,
                };
                if let (true, Some(vc)) = (in_table, ctrl) {
                    let i = (rel / 16) as u32;
                    if vc & 1 == 0 && msix_on && !view.msi {
                        let entry = t.entry(i as usize);
                        match (bound.get(&i), entry) {
                            (Some((_, v)), Some(en)) => {
                                let want = (en.data as u8, msi_gflags(en.address, en.data, true));
                                if (v.gvec, v.gflags) != want {
                                    return Err(format!(
                                        "{a}: entry {i} unmasked: bound as {v:x?}, the entry asks for {want:x?}"
                                    ));
                                }
                            }
                            (None, Some(en)) if !en.masked => {
                                return Err(format!(
                                    "{a}: entry {i} unmasked while MSI-X is enabled but not bound (nor read back masked)"
                                ))
                            }
                            _ => {}
                        }
                    }
                }
            }
            // The device gets the guest's MSI-X Enable / Function Mask.
            if view.msix != was.msix {
                if let Some((en, ma)) = view.msix {
                    let c = fc.handle.config_bytes(usize::from(rm.cap) + 2, 2);
                    let ctl = u16::from_le_bytes([c[0], c[1]]);
                    if (ctl & 0x8000 != 0, ctl & 0x4000 != 0) != (en, ma) {
                        return Err(format!(
                            "{a}: the guest's MSI-X Enable/Function Mask are {en}/{ma}, the device's control is {ctl:#06x}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_ops(
        &mut self,
        bridge: &PciHostBridge,
        op: Op,
        ops: &[LoggedOp],
        pre_bound: &BTreeMap<u32, Bound>,
    ) -> Result<(), String> {
        if matches!(op, Op::CfgRead { .. } | Op::MmioRead { .. }) && !ops.is_empty() {
            return Err("a read made hypercalls".into());
        }
        let windows = bridge.config().windows();
        let mmio = matches!(op, Op::MmioWrite { .. });
        for l in ops {
            if l.result.is_err() {
                self.refused += 1;
            }
            match l.op {
                PtOp::MemoryMapping { gfn, mfn, nr, add } => {
                    if !add {
                        continue;
                    }
                    self.maps += 1;
                    if matches!(l.result, Ok(k) if k > 0) {
                        self.partial_maps += 1;
                    }
                    if !windows.contains_mmio(gfn * PAGE_SIZE, nr * PAGE_SIZE) {
                        return Err(format!("mapping gfn {gfn:#x}+{nr} outside the windows"));
                    }
                    if !self.frames_of_a_bar(bridge, gfn, mfn, nr) {
                        return Err(format!(
                            "mapping gfn {gfn:#x} -> mfn {mfn:#x}+{nr}: not the guest placement of one BAR, or hits an MSI-X page"
                        ));
                    }
                }
                PtOp::IoportMapping {
                    gport,
                    mport,
                    nr,
                    add: true,
                } => {
                    self.maps += 1;
                    if !windows.contains_io(u64::from(gport), u64::from(nr)) {
                        return Err(format!("I/O mapping {gport:#x}+{nr} outside the window"));
                    }
                    let owned = bridge.functions().any(|f| {
                        (0..6).any(|i| {
                            let (Some(h), Some(v)) = (f.device().bar(i), f.bars().bar(i)) else {
                                return false;
                            };
                            h.kind == BarKind::Io
                                && u64::from(mport) >= h.host_addr
                                && u64::from(mport) + u64::from(nr) <= h.host_addr + h.size
                                && u64::from(gport) - v.guest == u64::from(mport) - h.host_addr
                        })
                    });
                    if !owned {
                        return Err(format!(
                            "I/O mapping of host ports {mport:#x}+{nr} to {gport:#x}: not one I/O BAR's placement"
                        ));
                    }
                }
                PtOp::IoportMapping { add: false, .. } => {}
                PtOp::MapPirqMsi(m) => {
                    let (sbdf, entry, table_base, nvec) = (m.sbdf, m.entry, m.table_base, m.nvec);
                    if mmio && table_base == 0 {
                        return Err("an MMIO access mapped an MSI pirq".into());
                    }
                    let (f, fc) = self.by_sbdf(bridge, sbdf)?;
                    if table_base != 0 {
                        let Some(rm) = fc.raw.msix else {
                            return Err(format!("MSI-X map_pirq for {sbdf:#x} without MSI-X"));
                        };
                        let host = f.device().bar(usize::from(rm.table.0)).map(|b| b.host_addr);
                        if Some(table_base) != host || nvec != 1 || entry >= u32::from(rm.entries) {
                            return Err(format!(
                                "MSI-X map_pirq entry {entry} table_base {table_base:#x} nvec {nvec}: the table's BAR (BIR {}) is at {host:x?} (Xen adds the table offset itself)",
                                rm.table.0
                            ));
                        }
                    } else {
                        let Some((cap, ctl)) = fc.raw.msi else {
                            return Err(format!("MSI map_pirq for {sbdf:#x} without MSI"));
                        };
                        let want = guest_msi(f, cap, ctl).map(|m| m.1);
                        if entry != 0 || Some(nvec) != want {
                            return Err(format!(
                                "MSI map_pirq entry {entry} nvec {nvec}: the guest asks for {want:?} vectors at entry 0"
                            ));
                        }
                    }
                }
                PtOp::BindPtIrqMsi {
                    pirq,
                    gvec,
                    gflags,
                    gtable,
                } => {
                    self.binds += 1;
                    let Some(b) = l.pirq else { continue };
                    let (f, fc) = self.by_sbdf(bridge, b.sbdf)?;
                    if b.table_base == 0 {
                        let Some((cap, ctl)) = fc.raw.msi else {
                            return Err("MSI bind without MSI".into());
                        };
                        let Some((_, _, addr, data)) = guest_msi(f, cap, ctl) else {
                            return Err("MSI bind without MSI".into());
                        };
                        let i = pirq - b.base;
                        let want = (
                            (data as u8).wrapping_add(i as u8),
                            msi_gflags(addr, data, true),
                            0,
                        );
                        if (gvec, gflags, gtable) != want {
                            return Err(format!(
                                "MSI bind of vector {i}: {:x?}, the programming asks for {want:x?}",
                                (gvec, gflags, gtable)
                            ));
                        }
                        continue;
                    }
                    let Some(rm) = fc.raw.msix else {
                        return Err("MSI-X bind without MSI-X".into());
                    };
                    let tg = f
                        .bars()
                        .bar(usize::from(rm.table.0))
                        .map(|v| v.guest.wrapping_add(rm.table.1));
                    if Some(gtable) != tg {
                        return Err(format!(
                            "MSI-X bind with gtable {gtable:#x}, the guest's table is at {tg:x?}"
                        ));
                    }
                    let Some(e) = f.msix_table().and_then(|t| t.entry(b.entry as usize)) else {
                        return Err(format!("bind of entry {} beyond the table", b.entry));
                    };
                    let want = match (op, pre_bound.get(&pirq)) {
                        // A config write (BAR move, enable, ...) rebinding a bound entry keeps
                        // the message of its last unmask: address/data written since are
                        // latched until the next unmask.
                        (Op::CfgWrite { .. }, Some(old)) => (old.gvec, old.gflags),
                        _ => (e.data as u8, msi_gflags(e.address, e.data, true)),
                    };
                    if (gvec, gflags) != want {
                        return Err(format!(
                            "MSI-X bind of entry {}: {:x?}, the entry asks for {want:x?} (the message of its last unmask for a rebind by a config write)",
                            b.entry,
                            (gvec, gflags)
                        ));
                    }
                    if let Op::MmioWrite { addr, size, data } = op {
                        // Only the unmask write of this entry binds from the table.
                        let rel = tg.map(|t| addr.wrapping_sub(t));
                        let unmask = match (rel, size) {
                            (Some(r), 4) if r / 16 == u64::from(b.entry) && r % 16 == 12 => {
                                data & 1 == 0
                            }
                            (Some(r), 8) if r / 16 == u64::from(b.entry) && r % 16 == 8 => {
                                (data >> 32) & 1 == 0
                            }
                            _ => false,
                        };
                        if !unmask {
                            return Err(format!(
                                "an MSI-X table write other than the unmask of entry {} bound it (address/data are latched until the unmask)",
                                b.entry
                            ));
                        }
                    }
                }
                PtOp::UnbindPtIrqMsi { .. } | PtOp::UnmapPirq { .. } => {
                    if matches!(l.op, PtOp::UnbindPtIrqMsi { .. }) {
                        self.unbinds += 1;
                    }
                    if mmio && l.pirq.is_some_and(|b| !bind_rollback(ops, b)) {
                        return Err(
                            "an MSI-X table access unbound a vector (Xen's msixtbl owns the masks of bound entries: a mask write never unbinds)"
                                .into(),
                        );
                    }
                }
                ref other => {
                    return Err(format!("lifecycle call {other:?} during a guest access"));
                }
            }
        }
        Ok(())
    }

    fn by_sbdf<'a>(
        &'a self,
        bridge: &'a PciHostBridge,
        sbdf: u32,
    ) -> Result<(&'a PassthroughFunction, &'a Func), String> {
        let f = bridge
            .functions()
            .find(|f| f.host_address().sbdf() == sbdf)
            .ok_or_else(|| format!("call for unknown host function {sbdf:#x}"))?;
        let fc = self
            .funcs
            .get(&f.guest_address())
            .ok_or("function without a snapshot")?;
        Ok((f, fc))
    }

    /// Whether guest frames `[gfn, +nr)` -> host frames `[mfn, +nr)` are the guest placement
    /// of part of one memory BAR of a function (never the ROM), off its MSI-X pages.
    fn frames_of_a_bar(&self, bridge: &PciHostBridge, gfn: u64, mfn: u64, nr: u64) -> bool {
        for f in bridge.functions() {
            let raw = self.funcs.get(&f.guest_address()).and_then(|c| c.raw.msix);
            let bars = (0..6u8).filter_map(|i| {
                Some((
                    i,
                    f.device().bar(usize::from(i))?,
                    f.bars().bar(usize::from(i))?.guest,
                ))
            });
            for (i, h, g) in bars {
                if h.kind == BarKind::Io
                    || mfn * PAGE_SIZE < h.host_addr
                    || (mfn + nr) * PAGE_SIZE > h.host_addr + h.size
                {
                    continue;
                }
                let first = mfn - h.host_addr / PAGE_SIZE;
                if gfn.wrapping_sub(g / PAGE_SIZE) != first {
                    continue;
                }
                if let (Some(m), true) = (raw, i < 6) {
                    let pages = m.pages(i);
                    if (first..first + nr).any(|p| pages.contains(&p)) {
                        return false;
                    }
                }
                return true;
            }
        }
        false
    }

    /// Invariant 3: Xen's p2m and port mappings equal what the guest's placement asks for,
    /// and the bridge's and executor's own lists.
    fn check_mappings(&self, bridge: &PciHostBridge) -> Result<(), String> {
        let windows = bridge.config().windows();
        let (want_mem, want_io) = self.expected_mappings(bridge, &windows);
        let x = self.xen();
        let p2m = &x.p2m;
        // Runs of (gfn, mfn, nr) equal a per-frame map when they hold as many frames and each
        // is there frame by frame (the runs do not overlap). The same for ports.
        let same_in = |map: &P2m, runs: &[Run]| -> Option<String> {
            let total: u64 = runs.iter().map(|r| r.2).sum();
            if total != map.len() as u64 {
                return Some(format!("{total} frames or ports, Xen has {}", map.len()));
            }
            for &(g, m, n) in runs {
                let k = map.mapped_prefix(g, m, n);
                if k != n {
                    return Some(format!(
                        "run {g:#x} -> {m:#x} +{n}: {:#x} should map {:#x}, Xen has {:x?}",
                        g + k,
                        m + k,
                        map.get(g + k)
                    ));
                }
            }
            None
        };
        let same = |runs: &[Run]| same_in(p2m, runs);
        if let Some(e) = same(&want_mem) {
            let extra: Vec<_> = p2m
                .iter()
                .filter(|(g, _)| !want_mem.iter().any(|r| *g >= r.0 && *g < r.0 + r.2))
                .take(4)
                .collect();
            return Err(format!(
                "Xen's p2m is not what the guest's placement asks for: {e}; frames outside the wanted runs {extra:x?}"
            ));
        }
        if let Some(e) = same_in(&x.io, &want_io) {
            return Err(format!(
                "Xen's port mappings {:x?} are not what the guest asks for {want_io:x?}: {e}",
                x.io.runs().collect::<Vec<_>>()
            ));
        }
        let mut own = Vec::new();
        let mut own_io = Vec::new();
        for f in bridge.functions() {
            for m in f.mappings() {
                match *m {
                    BarMapping::Mem { gfn, mfn, nr, .. } => own.push((gfn, mfn, nr)),
                    BarMapping::Io {
                        gport, mport, nr, ..
                    } => own_io.push((u64::from(gport), u64::from(mport), u64::from(nr))),
                }
            }
        }
        if let Some(e) = same(&own) {
            return Err(format!(
                "the bridge's own list of mappings is not Xen's: {e}"
            ));
        }
        if let Some(e) = same_in(&x.io, &own_io) {
            return Err(format!(
                "the bridge's own list of port mappings is not Xen's: {e}"
            ));
        }
        if let Some(e) = bridge.executor() {
            let runs: Vec<(u64, u64, u64)> =
                e.memory_runs().map(|r| (r.gfn, r.mfn, r.nr)).collect();
            if let Some(err) = same(&runs) {
                return Err(format!("the executor's record is not Xen's p2m: {err}"));
            }
        }
        Ok(())
    }

    /// What the guest's placement and decode ask to be mapped: runs of (guest frame, host
    /// frame, frames) and guest port -> host port (computed from the backend's BARs and the raw MSI-X
    /// capability; BARs whose guest ranges overlap another decoded BAR are not mapped). The
    /// expansion ROM is never mapped (its host decoder stays off: its enable bit is
    /// virtual), but a decoded ROM still keeps a BAR it overlaps unmapped.
    pub fn expected_mappings(
        &self,
        bridge: &PciHostBridge,
        windows: &Windows,
    ) -> (Vec<Run>, Vec<Run>) {
        // (is_io, guest start, guest len, mappable host BAR, trapped pages, is the ROM)
        type Decoded = (bool, u64, u64, Option<BarInfo>, BTreeSet<u64>, bool);
        let mut decoded: Vec<Decoded> = Vec::new();
        for f in bridge.functions() {
            let cmd = f.command();
            let raw = self.funcs.get(&f.guest_address()).and_then(|c| c.raw.msix);
            for i in 0..6usize {
                let (Some(h), Some(v)) = (f.device().bar(i), f.bars().bar(i)) else {
                    continue;
                };
                if v.guest == 0 {
                    continue;
                }
                if h.kind == BarKind::Io {
                    if cmd & 1 != 0 && windows.contains_io(v.guest, h.size) {
                        decoded.push((true, v.guest, h.size, Some(h), BTreeSet::new(), false));
                    }
                    continue;
                }
                let emu = h.size.next_power_of_two().max(PAGE_SIZE);
                if cmd & 2 == 0 || !windows.contains_mmio(v.guest, emu) {
                    continue;
                }
                let mappable = h.host_addr % PAGE_SIZE == 0 && h.size % PAGE_SIZE == 0;
                let trapped = raw.map(|m| m.pages(i as u8)).unwrap_or_default();
                decoded.push((false, v.guest, emu, mappable.then_some(h), trapped, false));
            }
            if let (Some(h), Some(v)) = (f.device().rom(), f.bars().rom()) {
                let emu = h.size.next_power_of_two().max(PAGE_SIZE);
                let rom_on =
                    guest_reg(f, 0x30).is_some_and(|r| r & 1 != 0) || f.bars().rom_enabled();
                if cmd & 2 != 0 && rom_on && v.guest != 0 && windows.contains_mmio(v.guest, emu) {
                    decoded.push((false, v.guest, emu, None, BTreeSet::new(), true));
                }
            }
        }
        let mut mem: Vec<(u64, u64, u64)> = Vec::new();
        let mut io = Vec::new();
        for (k, d) in decoded.iter().enumerate() {
            let overlaps = decoded.iter().enumerate().any(|(j, o)| {
                j != k
                    && o.0 == d.0
                    && d.1 < o.1.saturating_add(o.2)
                    && o.1 < d.1.saturating_add(d.2)
            });
            let Some(h) = d.3.filter(|_| !overlaps) else {
                continue;
            };
            if d.0 {
                io.push((d.1, h.host_addr, h.size));
            } else {
                // The BAR's frames minus the trapped pages, as runs: the gaps between the
                // trapped pages (a walk over those, not over every frame of the BAR).
                let (g0, h0) = (d.1 / PAGE_SIZE, h.host_addr / PAGE_SIZE);
                let frames = h.size / PAGE_SIZE;
                let mut start = 0;
                for &p in d.4.range(..frames).chain(std::iter::once(&frames)) {
                    if p > start {
                        mem.push((g0 + start, h0 + start, p - start));
                    }
                    start = p + 1;
                }
            }
        }
        (mem, io)
    }

    /// Check the start the bridge just made (the calls from log index `from` on): for each
    /// function, test_assign, decode on, prepare_msix (with MSI-X), reset, the host's Function
    /// Mask clear, assign and permissions for every BAR, in that order. `skip` lists guest
    /// addresses not to check (functions a failed start did not reach).
    pub fn check_start(
        &self,
        bridge: &PciHostBridge,
        from: usize,
        skip: &[PciAddress],
    ) -> Result<(), String> {
        self.take_violations()?;
        let x = self.xen();
        let log = &x.log[from.min(x.log.len())..];
        let seq_of = |pred: &dyn Fn(&PtOp) -> bool| log.iter().find(|l| pred(&l.op)).map(|l| l.seq);
        let info = seq_of(&|o| matches!(o, PtOp::GetDomainInfo));
        for (a, fc) in &self.funcs {
            if skip.contains(a) {
                continue;
            }
            let f = bridge.function(*a).ok_or("function vanished")?;
            let sbdf = f.host_address().sbdf();
            let test = seq_of(&|o| *o == PtOp::TestAssignDevice { sbdf });
            let assign = seq_of(&|o| *o == PtOp::AssignDevice { sbdf });
            let prepare = seq_of(&|o| *o == PtOp::PrepareMsix { sbdf });
            let ev = fc.handle.events();
            let dev = |k: &DeviceEventKind| ev.iter().find(|e| e.kind == *k).map(|e| e.seq);
            let decode = dev(&DeviceEventKind::EnableDecode);
            let reset = dev(&DeviceEventKind::Reset);
            let (Some(test), Some(assign), Some(decode)) = (test, assign, decode) else {
                return Err(format!(
                    "{a}: start without test_assign ({test:?}), assign ({assign:?}) or decode on ({decode:?})"
                ));
            };
            if info.is_none_or(|i| i > test) {
                return Err(format!(
                    "{a}: the guest's RAM was not checked before assigning"
                ));
            }
            if !(test < decode && decode < assign) {
                return Err(format!(
                    "{a}: order test_assign {test} < decode on {decode} < assign {assign} broken"
                ));
            }
            if let Some(r) = reset {
                if !(decode < r && r < assign) {
                    return Err(format!(
                        "{a}: reset at {r}, not between decode on and assign"
                    ));
                }
                if prepare.is_some_and(|p| p > r) {
                    return Err(format!("{a}: prepare_msix after the reset"));
                }
            }
            if let Some(rm) = fc.raw.msix {
                let Some(p) = prepare else {
                    return Err(format!("{a}: MSI-X function assigned without prepare_msix"));
                };
                if !(decode < p && p < assign) {
                    return Err(format!(
                        "{a}: prepare_msix not between decode on and assign"
                    ));
                }
                let cfg = fc.handle.config();
                let ctl = u16::from_le_bytes([
                    cfg[usize::from(rm.cap) + 2],
                    cfg[usize::from(rm.cap) + 3],
                ]);
                if ctl & 0x4000 != 0 {
                    return Err(format!(
                        "{a}: the host's Function Mask is still set (assign_device refuses that)"
                    ));
                }
                let clear = ev.iter().find(|e| {
                    matches!(&e.kind, DeviceEventKind::ConfigWrite { offset, data } if *offset == rm.cap + 2 && data.len() == 2)
                });
                if let Some(c) = clear {
                    if c.seq > assign {
                        return Err(format!("{a}: Function Mask cleared after assign"));
                    }
                }
            } else if prepare.is_some() {
                return Err(format!("{a}: prepare_msix without MSI-X"));
            }
            if !x.assigned.contains(&sbdf) {
                return Err(format!("{a}: not assigned after start"));
            }
            for i in 0..6 {
                let Some(b) = f.device().bar(i) else { continue };
                let ok = if b.kind == BarKind::Io {
                    x.ioports.covers(b.host_addr, b.size)
                } else {
                    let first = b.host_addr / PAGE_SIZE;
                    x.iomem
                        .covers(first, (b.host_addr + b.size - 1) / PAGE_SIZE + 1 - first)
                };
                if !ok {
                    return Err(format!("{a}: BAR {i} ({b:x?}) not permitted to the guest"));
                }
            }
            // Permissions of this function's BARs after its assignment.
            let bars: Vec<BarInfo> = (0..6).filter_map(|i| f.device().bar(i)).collect();
            let perm = log
                .iter()
                .filter(|l| match l.op {
                    PtOp::IomemPermission {
                        mfn, allow: true, ..
                    } => bars
                        .iter()
                        .any(|b| b.kind != BarKind::Io && mfn == b.host_addr / PAGE_SIZE),
                    PtOp::IoportPermission {
                        port, allow: true, ..
                    } => bars
                        .iter()
                        .any(|b| b.kind == BarKind::Io && u64::from(port) == b.host_addr),
                    _ => false,
                })
                .map(|l| l.seq)
                .min();
            if perm.is_some_and(|p| p < assign) {
                return Err(format!("{a}: permissions granted before the assignment"));
            }
        }
        Ok(())
    }

    /// Stop the bridge ([`Device::stop`]) and check the hand-back (see the module docs):
    /// nothing left in Xen, the device's Bus Master and MSI / MSI-X Enable off, and the order
    /// of the steps. Stopping again makes no call.
    pub fn stop_and_check(&mut self, bridge: &mut PciHostBridge) -> Result<(), String> {
        let from = self.xen().log.len();
        let ev_from: BTreeMap<PciAddress, usize> = self
            .funcs
            .iter()
            .map(|(a, f)| (*a, f.handle.events().len()))
            .collect();
        let bme_before: BTreeMap<PciAddress, bool> = self
            .funcs
            .iter()
            .map(|(a, f)| (*a, f.handle.config_bytes(4, 1)[0] & 4 != 0))
            .collect();
        let mut actions = Actions::new();
        bridge.stop(&mut actions);
        self.take_violations()?;
        let x = self.xen();
        let left = x.leftovers();
        if !left.is_empty() {
            return Err(format!("after stop, left in Xen: {left:?}"));
        }
        // The stop's calls, read in place (nothing below calls into the fake Xen).
        let log = &x.log[from..];
        // The first call of each kind that the order checks below look for, by host function
        // (one pass over the log instead of a search per function and kind).
        let mut firsts: BTreeMap<(u32, u8), u64> = BTreeMap::new();
        for l in log {
            let key = match l.op {
                PtOp::ReleaseMsix { sbdf } => (sbdf, 0),
                PtOp::DeassignDevice {
                    sbdf,
                    from_dom_io: false,
                } => (sbdf, 1),
                PtOp::DeassignDevice {
                    sbdf,
                    from_dom_io: true,
                } => (sbdf, 2),
                _ => continue,
            };
            firsts.entry(key).or_insert(l.seq);
        }
        for (a, fc) in &self.funcs {
            let Some(f) = bridge.function(*a) else {
                continue;
            };
            let sbdf = f.host_address().sbdf();
            let cfg = fc.handle.config();
            let cmd = u16::from_le_bytes([cfg[4], cfg[5]]);
            if cmd & 4 != 0 {
                return Err(format!("{a}: Bus Master still on after stop"));
            }
            if let Some((c, _)) = fc.raw.msi {
                if cfg[usize::from(c) + 2] & 1 != 0 {
                    return Err(format!("{a}: the device's MSI Enable is still on"));
                }
            }
            if let Some(m) = fc.raw.msix {
                if cfg[usize::from(m.cap) + 3] & 0xC0 != 0 {
                    return Err(format!(
                        "{a}: the device's MSI-X Enable / Function Mask still on"
                    ));
                }
            }
            let ev = fc.handle.events_from(ev_from.get(a).copied().unwrap_or(0));
            let bme_off = ev.iter().find_map(|e| match &e.kind {
                DeviceEventKind::ConfigWrite { offset: 4, data } if data[0] & 4 == 0 => Some(e.seq),
                _ => None,
            });
            let reset = ev
                .iter()
                .find(|e| e.kind == DeviceEventKind::Reset)
                .map(|e| e.seq);
            let decode_off = ev
                .iter()
                .find(|e| e.kind == DeviceEventKind::DisableDecode)
                .map(|e| e.seq);
            // The function's host BARs (and ROM), looked up once instead of per call.
            let mem: Vec<(u64, u64)> = (0..6)
                .filter_map(|i| f.device().bar(i))
                .chain(f.device().rom())
                .filter(|b| b.kind != BarKind::Io)
                .map(|b| (b.host_addr, b.host_addr + b.size))
                .collect();
            let io: Vec<(u64, u64)> = (0..6)
                .filter_map(|i| f.device().bar(i))
                .filter(|b| b.kind == BarKind::Io)
                .map(|b| (b.host_addr, b.host_addr + b.size))
                .collect();
            let mine = |l: &&LoggedOp| match l.op {
                PtOp::MemoryMapping { mfn, nr, .. } => mem
                    .iter()
                    .any(|&(lo, hi)| mfn * PAGE_SIZE >= lo && (mfn + nr) * PAGE_SIZE <= hi),
                PtOp::IoportMapping { mport, .. } => io
                    .iter()
                    .any(|&(lo, hi)| u64::from(mport) >= lo && u64::from(mport) < hi),
                PtOp::UnbindPtIrqMsi { .. } | PtOp::UnmapPirq { .. } => {
                    l.pirq.is_some_and(|b| b.sbdf == sbdf)
                }
                _ => false,
            };
            let teardown: Vec<&LoggedOp> = log.iter().filter(mine).collect();
            let last_teardown = teardown.iter().map(|l| l.seq).max();
            let first_unmap = teardown
                .iter()
                .filter(|l| {
                    matches!(
                        l.op,
                        PtOp::MemoryMapping { .. } | PtOp::IoportMapping { .. }
                    )
                })
                .map(|l| l.seq)
                .min();
            if bme_before.get(a).copied().unwrap_or(false) {
                match (bme_off, first_unmap) {
                    (Some(b), Some(u)) if b < u => {}
                    (Some(_), None) => {}
                    _ => {
                        return Err(format!(
                            "{a}: Bus Master not turned off before the first unmap ({bme_off:?} vs {first_unmap:?})"
                        ))
                    }
                }
            }
            let release = firsts.get(&(sbdf, 0)).copied();
            let deassign = firsts.get(&(sbdf, 1)).copied();
            let dom_io = firsts.get(&(sbdf, 2)).copied();
            let Some(deassign) = deassign else {
                return Err(format!("{a}: no deassign at stop"));
            };
            if dom_io.is_none_or(|d| d < deassign) {
                return Err(format!(
                    "{a}: not taken back from DOMID_IO after the deassign"
                ));
            }
            if let Some(r) = reset {
                if last_teardown.is_some_and(|t| t > r) {
                    return Err(format!("{a}: unmaps or unbinds after the reset"));
                }
                if r > deassign {
                    return Err(format!("{a}: reset after the deassign (the guest's DMA state reaches dom0's IOMMU context)"));
                }
            } else {
                return Err(format!("{a}: no reset at stop"));
            }
            if fc.raw.msix.is_some() {
                let Some(rel) = release else {
                    return Err(format!("{a}: no release_msix at stop"));
                };
                if reset.is_some_and(|r| rel < r) || rel > deassign {
                    return Err(format!("{a}: release_msix not between reset and deassign"));
                }
            }
            if decode_off.is_none_or(|d| d < deassign) {
                return Err(format!(
                    "{a}: host decode not turned off after the deassign"
                ));
            }
        }
        drop(x);
        // A second stop does nothing (but ask whether the guest is alive).
        let n = self.xen().log.len();
        bridge.stop(&mut actions);
        let again = ops_of(&self.xen().log[n..]);
        if again.iter().any(|o| *o != PtOp::GetDomainInfo) {
            return Err(format!("a second stop made calls: {again:?}"));
        }
        self.sync_logs();
        Ok(())
    }

    fn check_read(
        &mut self,
        bridge: &PciHostBridge,
        addr: PciAddress,
        reg: u16,
        size: u8,
        v: u64,
        via_ecam: bool,
    ) -> Result<(), String> {
        let cfg = bridge.config();
        let mut len = usize::from(size);
        if via_ecam && usize::from(reg) + len > 4096 {
            // ECAM splits at the function's end; the rest belongs to the next function.
            len = 4096 - usize::from(reg);
        }
        if usize::from(reg) + len > 4096 || addr.segment != 0 || addr.bus != cfg.bus_start {
            return if v == mask(size) {
                Ok(())
            } else {
                Err("expected all-ones".into())
            };
        }
        if addr.device == 0 && addr.function == 0 {
            return Ok(());
        }
        let Some(f) = bridge.function(addr) else {
            let m = mask(len as u8);
            return if v & m == m {
                Ok(())
            } else {
                Err("unconfigured function must read all-ones".into())
            };
        };
        let dev = self
            .funcs
            .get(&addr)
            .map(|h| h.handle.config_bytes(usize::from(reg), len))
            .unwrap_or_default();
        for i in 0..len {
            let off = usize::from(reg) + i;
            let byte = (v >> (8 * i)) as u8;
            let rule = f.layout().rule(off);
            match rule.slot {
                Slot::Absent => {
                    if byte != 0xFF {
                        return Err(format!("absent byte {off:#x} read {byte:#04x}"));
                    }
                    continue;
                }
                Slot::Unknown | Slot::Reg(_) | Slot::Hidden => {
                    let d = dev.get(i).copied().unwrap_or(0xFF);
                    if (byte ^ d) & !rule.emu != 0 {
                        return Err(format!(
                            "byte {off:#x}: read {byte:#04x} but device has {d:#04x} and only {:#04x} is emulated",
                            rule.emu
                        ));
                    }
                }
            }
            // Emulated bits equal what the guest last wrote or the checker last read.
            let modelled = matches!(
                rule.kind,
                RegKind::Plain | RegKind::Command | RegKind::MsixControl | RegKind::Hidden
            );
            if modelled && rule.emu != 0 {
                let key = (addr, off as u16);
                if let Some(&(m, val)) = self.shadow.get(&key) {
                    if (byte ^ val) & m & rule.emu != 0 {
                        return Err(format!(
                            "emulated bits of byte {off:#x} read {byte:#04x}, expected {val:#04x} under mask {m:#04x}"
                        ));
                    }
                }
                self.shadow.insert(key, (rule.emu, byte & rule.emu));
            }
            if rule.kind == RegKind::Hidden && byte != 0 {
                return Err(format!("hidden byte {off:#x} read {byte:#04x}"));
            }
            // Bits that must never change.
            let is_base = match rule.slot {
                Slot::Reg(idx) => usize::from(f.layout().reg(usize::from(idx)).base) == off,
                _ => false,
            };
            let stable_mask = match rule.kind {
                RegKind::Bar(n) => match f.bars().slot(usize::from(n)) {
                    BarSlot::Unused => 0xFF,
                    BarSlot::Upper(_) => 0,
                    BarSlot::Bar(b) if is_base && b.host.kind == BarKind::Io => 0x03,
                    BarSlot::Bar(_) if is_base => 0x0F,
                    BarSlot::Bar(_) => 0,
                },
                RegKind::Rom if f.bars().rom().is_none() => 0xFF,
                RegKind::Rom if is_base => 0xFE,
                RegKind::Rom => 0,
                _ => rule.ro,
            };
            if stable_mask != 0 {
                let e = self
                    .stable
                    .entry((addr, off as u16))
                    .or_insert((stable_mask, byte & stable_mask));
                if byte & e.0 != e.1 & e.0 {
                    return Err(format!(
                        "read-only emulated bits of byte {off:#x} changed: {byte:#04x} vs {:#04x}",
                        e.1
                    ));
                }
            }
        }
        Ok(())
    }

    /// Predict the emulated bits a guest write leaves behind.
    fn model_write(
        &mut self,
        bridge: &PciHostBridge,
        addr: PciAddress,
        reg: u16,
        size: u8,
        data: u64,
    ) {
        if usize::from(reg) + usize::from(size) > 4096 {
            // Crosses into the next function (ECAM): forget everything rather than model it.
            self.shadow.clear();
            return;
        }
        let Some(f) = bridge.function(addr) else {
            return;
        };
        for i in 0..usize::from(size) {
            let off = usize::from(reg) + i;
            let d = (data >> (8 * i)) as u8;
            let rule = f.layout().rule(off);
            let modelled = matches!(
                rule.kind,
                RegKind::Plain | RegKind::Command | RegKind::MsixControl | RegKind::Hidden
            );
            let key = (addr, off as u16);
            if !modelled {
                self.shadow.remove(&key);
                continue;
            }
            let writable = rule.emu & !rule.ro;
            let set = writable & !rule.w1c;
            let clear = writable & rule.w1c & d;
            let (m, v) = self.shadow.get(&key).copied().unwrap_or((0, 0));
            self.shadow
                .insert(key, (m | set, (v & !set & !clear) | (d & set)));
        }
    }

    fn check_device_writes(
        &mut self,
        bridge: &PciHostBridge,
        access: Option<(PciAddress, u16, u8)>,
    ) -> Result<(), String> {
        for (addr, fc) in &self.funcs {
            let h = &fc.handle;
            let seen = self.seen_writes.entry(*addr).or_insert(0);
            let writes = h.writes_from(*seen);
            let f = bridge.function(*addr).ok_or("function vanished")?;
            for w in &writes {
                self.device_writes += 1;
                if is_intx_write(f, w) {
                    self.intx_writes += 1;
                    continue;
                }
                let start = usize::from(w.offset);
                let end = start + w.data.len();
                let changed = |bit: usize, m: u16| -> bool {
                    // Whether only bits in `m` of the 16-bit register at `bit` changed.
                    w.offset as usize == bit
                        && w.data.len() == 2
                        && (u16::from_le_bytes([w.data[0], w.data[1]])
                            ^ u16::from_le_bytes([w.before[0], w.before[1]]))
                            & !m
                            == 0
                };
                if let Some(m) = fc.raw.msix {
                    let (c, e) = (usize::from(m.cap), usize::from(m.cap) + 12);
                    if start < e && c < end {
                        if changed(c + 2, 0xC000) {
                            self.msix_control_writes += 1;
                            continue;
                        }
                        return Err(format!(
                            "{addr}: device write {w:?} to the MSI-X capability other than a 16-bit write of Message Control's Enable / Function Mask (Xen refuses it: EACCES)"
                        ));
                    }
                }
                if let Some((c, _)) = fc.raw.msi {
                    if changed(usize::from(c) + 2, 0x0001) {
                        self.msi_enable_writes += 1;
                        continue;
                    }
                }
                let Some((a, reg, size)) = access else {
                    return Err(format!(
                        "an MMIO access wrote config space of {addr}: {w:?}"
                    ));
                };
                // An ECAM access crossing into the next function is split; compare within it.
                let (lo, hi) = if a == *addr {
                    (usize::from(reg), usize::from(reg) + usize::from(size))
                } else {
                    (0, usize::from(size))
                };
                if start < lo || end > hi {
                    return Err(format!(
                        "{addr}: device write {w:?} outside the guest access {reg:#x}+{size}"
                    ));
                }
                for (j, (&d, &b)) in w.data.iter().zip(&w.before).enumerate() {
                    let rule = f.layout().rule(start + j);
                    if rule.pass == 0 {
                        return Err(format!(
                            "{addr}: device write to byte {:#x} which has no pass-through bits",
                            start + j
                        ));
                    }
                    let keep = !rule.pass & !rule.w1c;
                    if (d ^ b) & keep != 0 {
                        return Err(format!(
                            "{addr}: device write changed non-pass bits of byte {:#x}: {b:#04x} -> {d:#04x} (pass {:#04x})",
                            start + j,
                            rule.pass
                        ));
                    }
                    if d & rule.w1c & !rule.pass != 0 {
                        return Err(format!(
                            "{addr}: device write sets a non-pass W1C bit at {:#x}",
                            start + j
                        ));
                    }
                }
            }
            *seen += writes.len();
            let seen_b = self.seen_bar_writes.entry(*addr).or_insert(0);
            let bw = h.bar_writes_from(*seen_b);
            for w in &bw {
                if let Some(m) = fc.raw.msix {
                    let pages = m.pages(w.index);
                    let first = w.offset / PAGE_SIZE;
                    let last = (w.offset + w.data.len() as u64 - 1) / PAGE_SIZE;
                    if (first..=last).any(|p| pages.contains(&p)) {
                        return Err(format!(
                            "{addr}: BAR write {w:?} reached a page of the MSI-X table/PBA (Xen keeps those read-only for dom0)"
                        ));
                    }
                }
            }
            *seen_b += bw.len();
        }
        Ok(())
    }
}

/// Whether an unbind/unmap of block `b` in `ops` rolls back a bind of that block Xen refused
/// in the same access.
fn bind_rollback(ops: &[LoggedOp], b: PirqBlock) -> bool {
    ops.iter().any(|l| {
        l.result.is_err()
            && matches!(l.op, PtOp::BindPtIrqMsi { .. })
            && l.pirq.is_some_and(|p| p.base == b.base)
    })
}

/// Whether a device write is the bridge's own Interrupt Disable management: the command
/// register as a word ([`pci_host_bridge::backend::set_interrupt_disable`]) of a function that forwards
/// INTx, changing only bit 10, to the state the function wants.
fn is_intx_write(
    f: &PassthroughFunction,
    w: &pci_host_bridge::backend::snapshot::WriteRecord,
) -> bool {
    let Some(i) = f.intx() else { return false };
    if w.offset != pci_host_bridge::header::COMMAND || w.data.len() != 2 || w.before.len() != 2 {
        return false;
    }
    let bit = pci_host_bridge::header::CMD_INTX_DISABLE;
    let d = u16::from_le_bytes([w.data[0], w.data[1]]);
    let b = u16::from_le_bytes([w.before[0], w.before[1]]);
    (d ^ b) & !bit == 0 && i.device_masked() == Some(d & bit != 0)
}

/// Interesting config offsets of a function: header registers, capability starts and a few
/// bytes into each, the extended space's start.
fn interesting_offsets(bridge: &PciHostBridge, addr: PciAddress) -> Vec<u16> {
    let mut v: Vec<u16> = (0..0x40).step_by(2).collect();
    v.extend([0x100, 0x104, 0xFFC, 0xFFE, 0xFF]);
    if let Some(f) = bridge.function(addr) {
        for c in f.caps().standard.iter().chain(&f.caps().extended) {
            for d in 0..0x14 {
                v.push(c.offset + d);
            }
        }
    }
    v
}

/// A pseudo-random guest access, biased towards what matters (BAR sizing and placement,
/// decode enables, capability registers, the MSI-X table).
pub fn random_op(rng: &mut Rng, bridge: &PciHostBridge) -> Op {
    let cfg = bridge.config();
    let funcs: Vec<PciAddress> = bridge.functions().map(|f| f.guest_address()).collect();
    let windows = cfg.windows();
    let kind = rng.below(100);
    if kind < 20 && !funcs.is_empty() {
        // MMIO near a placed BAR (often its MSI-X table / PBA), else anywhere in a window.
        let f = bridge
            .function(funcs[rng.below(funcs.len() as u64) as usize])
            .expect("listed");
        let size = [1u8, 2, 4, 8][rng.below(4) as usize];
        let placed: Vec<_> = (0..6)
            .filter_map(|i| f.bars().bar(i))
            .filter(|b| b.guest != 0 && b.host.is_mem())
            .collect();
        let addr = if !placed.is_empty() && rng.percent(80) {
            let b = placed[rng.below(placed.len() as u64) as usize];
            let off = match f.caps().msix {
                Some(m) if rng.percent(60) => {
                    let (o, l) = if rng.percent(70) {
                        (m.table_offset, m.table_len())
                    } else {
                        (m.pba_offset, m.pba_len())
                    };
                    o + rng.below(l + 8) / 4 * 4
                }
                _ => rng.below(b.emu_size.min(1 << 20)),
            };
            b.guest + off
        } else {
            let (a, z) = windows.mmio[rng.below(windows.mmio.len() as u64) as usize];
            a + rng.below(z - a)
        };
        let data = rng.next_u64();
        return if rng.percent(50) {
            Op::MmioRead { addr, size }
        } else {
            Op::MmioWrite { addr, size, data }
        };
    }
    let addr = match rng.below(10) {
        0 => PciAddress::new(0, cfg.bus_start, 0, 0),
        1 => PciAddress::new(0, cfg.bus_start, rng.below(32) as u8, rng.below(8) as u8),
        _ if !funcs.is_empty() => funcs[rng.below(funcs.len() as u64) as usize],
        _ => PciAddress::new(0, cfg.bus_start, 0, 0),
    };
    let ecam = rng.percent(50);
    let size = if ecam {
        [1u8, 2, 4, 4, 8][rng.below(5) as usize]
    } else {
        [1u8, 2, 4, 4][rng.below(4) as usize]
    };
    let offs = interesting_offsets(bridge, addr);
    let mut reg = match rng.below(10) {
        0..=5 => offs[rng.below(offs.len() as u64) as usize],
        6 | 7 => rng.below(0x100) as u16,
        _ => rng.below(0x1000) as u16,
    };
    if rng.percent(75) {
        reg &= !(u16::from(size) - 1);
    }
    let reg = reg.min(0x1000 - u16::from(size));
    if rng.percent(45) {
        return Op::CfgRead {
            ecam,
            addr,
            reg,
            size,
        };
    }
    let data = match rng.below(10) {
        0..=2 => u64::MAX,
        3 => 0,
        4 | 5 if (0x10..0x28).contains(&reg) || reg == 0x30 => {
            // Place a BAR inside a window (the emulated size masks the low bits).
            let (a, z) = windows.mmio[rng.below(windows.mmio.len() as u64) as usize];
            let addr = a + rng.below(z - a);
            if reg % 8 == 4 && rng.percent(50) {
                addr >> 32
            } else {
                addr | rng.below(2)
            }
        }
        4 | 5 if reg == 0x04 => rng.next_u64() | 0x3,
        _ => rng.next_u64(),
    };
    Op::CfgWrite {
        ecam,
        addr,
        reg,
        size,
        data,
    }
}

/// What a guest driver does first: read IDs, size every BAR (all-ones, read, restore),
/// place them inside the windows, enable decode and bus mastering. Returns the ops so a test
/// can replay or extend them.
pub fn enumeration_ops(bridge: &PciHostBridge) -> Vec<Op> {
    let mut ops = Vec::new();
    let cfg = bridge.config();
    let windows = cfg.windows();
    let mut next_mmio = windows.mmio.first().map_or(0, |w| w.0);
    let mut next_io = windows.io.map_or(0, |w| u64::from(w.0));
    for f in bridge.functions() {
        let addr = f.guest_address();
        ops.push(Op::CfgRead {
            ecam: false,
            addr,
            reg: 0,
            size: 4,
        });
        ops.push(Op::CfgWrite {
            ecam: false,
            addr,
            reg: 4,
            size: 2,
            data: 0,
        });
        for i in 0..6u16 {
            let reg = 0x10 + 4 * i;
            ops.push(Op::CfgRead {
                ecam: true,
                addr,
                reg,
                size: 4,
            });
            ops.push(Op::CfgWrite {
                ecam: true,
                addr,
                reg,
                size: 4,
                data: 0xFFFF_FFFF,
            });
            ops.push(Op::CfgRead {
                ecam: true,
                addr,
                reg,
                size: 4,
            });
            ops.push(Op::CfgWrite {
                ecam: true,
                addr,
                reg,
                size: 4,
                data: 0,
            });
            if let Some(b) = f.bars().bar(usize::from(i)) {
                let (base, next) = if b.host.kind == BarKind::Io {
                    (&mut next_io, b.emu_size)
                } else {
                    (&mut next_mmio, b.emu_size)
                };
                *base = base.div_ceil(next) * next;
                let g = *base;
                *base += next;
                ops.push(Op::CfgWrite {
                    ecam: true,
                    addr,
                    reg,
                    size: 4,
                    data: g & 0xFFFF_FFFF,
                });
                if b.host.kind == BarKind::Mem64 {
                    ops.push(Op::CfgWrite {
                        ecam: true,
                        addr,
                        reg: reg + 4,
                        size: 4,
                        data: g >> 32,
                    });
                }
            }
        }
        ops.push(Op::CfgWrite {
            ecam: true,
            addr,
            reg: 0x30,
            size: 4,
            data: 0xFFFF_F800,
        });
        ops.push(Op::CfgRead {
            ecam: true,
            addr,
            reg: 0x30,
            size: 4,
        });
        ops.push(Op::CfgWrite {
            ecam: true,
            addr,
            reg: 0x30,
            size: 4,
            data: 0,
        });
        ops.push(Op::CfgWrite {
            ecam: false,
            addr,
            reg: 4,
            size: 2,
            data: 0x0007,
        });
    }
    ops
}

/// The short form of [`enumeration_ops`] without the sizing probes: place every BAR inside the
/// windows and enable decode and bus mastering (cheap set-up for fuzzing).
pub fn placement_ops(bridge: &PciHostBridge) -> Vec<Op> {
    enumeration_ops(bridge)
        .into_iter()
        .filter(|op| match *op {
            Op::CfgWrite { reg, data, .. } => {
                !(data == 0xFFFF_FFFF || data == 0xFFFF_F800 || (reg != 4 && data == 0))
            }
            _ => false,
        })
        .collect()
}

/// Decode a fuzzer's bytes into guest accesses (13 bytes each).
pub fn ops_from_bytes(bridge: &PciHostBridge, bytes: &[u8]) -> Vec<Op> {
    let cfg = bridge.config();
    let funcs: Vec<PciAddress> = bridge.functions().map(|f| f.guest_address()).collect();
    let windows = cfg.windows();
    bytes
        .chunks_exact(13)
        .map(|c| {
            let sel = c[1];
            let reg = u16::from_le_bytes([c[2], c[3]]) & 0xFFF;
            let data = u64::from_le_bytes([c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12]]);
            let addr = if sel < 0xE0 && !funcs.is_empty() {
                funcs[usize::from(sel) % funcs.len()]
            } else {
                PciAddress::new(0, cfg.bus_start, sel & 0x1F, c[4] >> 5)
            };
            let ecam = c[0] & 0x10 != 0;
            let size = match (c[4] & 3, ecam) {
                (0, _) => 1,
                (1, _) => 2,
                (3, true) => 8,
                _ => 4,
            };
            let reg = reg.min(0x1000 - u16::from(size));
            match c[0] % 4 {
                0 => Op::CfgRead {
                    ecam,
                    addr,
                    reg,
                    size,
                },
                1 => Op::CfgWrite {
                    ecam,
                    addr,
                    reg,
                    size,
                    data,
                },
                k => {
                    // MMIO relative to the first placed memory BAR of a function, else the window.
                    let off = u64::from(u32::from_le_bytes([c[2], c[3], c[4], c[5]]) & 0xF_FFFF);
                    let base = bridge
                        .function(addr)
                        .and_then(|f| {
                            (0..6)
                                .filter_map(|i| f.bars().bar(i))
                                .find(|b| b.guest != 0 && b.host.is_mem())
                        })
                        .map(|b| b.guest)
                        .unwrap_or_else(|| windows.mmio.first().map_or(0, |w| w.0));
                    let addr = base + (off & !(u64::from(size) - 1));
                    if k == 2 {
                        Op::MmioRead { addr, size }
                    } else {
                        Op::MmioWrite { addr, size, data }
                    }
                }
            }
        })
        .collect()
}

/// Run `n` pseudo-random accesses (after the enumeration prologue) with every check.
pub fn run_random(
    bridge: &mut PciHostBridge,
    checker: &mut Checker,
    seed: u64,
    n: usize,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    for op in enumeration_ops(bridge) {
        checker
            .apply(bridge, op)
            .map_err(|e| format!("seed {seed}: enumeration: {e}"))?;
    }
    for i in 0..n {
        let op = random_op(&mut rng, bridge);
        checker
            .apply(bridge, op)
            .map_err(|e| format!("seed {seed} op {i}: {e}"))?;
    }
    Ok(())
}

/// The MSI / MSI-X surfaces of a function, for the interrupt-focused generators.
struct IrqSurface {
    addr: PciAddress,
    msi: Option<(u16, u16)>,
    msix_cap: Option<u16>,
    /// Guest address of the table and the PBA, and the number of entries (BARs placed).
    table: Option<(u64, u64, u16)>,
    table_bar_reg: Option<u16>,
    windows: pci_host_bridge::config::Windows,
}

fn irq_surfaces(bridge: &PciHostBridge) -> Vec<IrqSurface> {
    bridge
        .functions()
        .map(|f| {
            let msi = f.caps().msi.map(|o| {
                (
                    o,
                    f.layout()
                        .find(o + 2)
                        .map_or(0, |i| f.layout().reg(i).virt as u16),
                )
            });
            let table = f.caps().msix.and_then(|m| {
                let tb = f.bars().bar(usize::from(m.table_bar))?;
                let pb = f.bars().bar(usize::from(m.pba_bar))?;
                Some((
                    tb.guest.wrapping_add(m.table_offset),
                    pb.guest.wrapping_add(m.pba_offset),
                    m.entries,
                ))
            });
            IrqSurface {
                addr: f.guest_address(),
                msi,
                msix_cap: f.caps().msix.map(|m| m.cap),
                table,
                table_bar_reg: f.caps().msix.map(|m| 0x10 + 4 * u16::from(m.table_bar)),
                windows: bridge.config().windows(),
            }
        })
        .collect()
}

/// An MSI address a guest might program: mostly Linux's (0xFEE, destination, physical or
/// logical mode), sometimes anything.
fn msi_address(rng: &mut Rng) -> u64 {
    if rng.percent(85) {
        0xFEE0_0000 | rng.below(256) << 12 | rng.below(2) << 2 | rng.below(2) << 3
    } else {
        rng.next_u64()
    }
}

fn cfg_w(addr: PciAddress, reg: u16, size: u8, data: u64, ecam: bool) -> Op {
    Op::CfgWrite {
        ecam,
        addr,
        reg,
        size,
        data,
    }
}

/// A pseudo-random access aimed at the MSI and MSI-X surfaces (capability registers, table
/// entries with aligned and odd accesses, the PBA, the table BAR, decode and Interrupt
/// Disable), mixed with some [`random_op`]s.
pub fn random_irq_op(rng: &mut Rng, bridge: &PciHostBridge) -> Op {
    let surfaces = irq_surfaces(bridge);
    if surfaces.is_empty() || rng.percent(10) {
        return random_op(rng, bridge);
    }
    let s = &surfaces[rng.below(surfaces.len() as u64) as usize];
    let ecam = rng.percent(50);
    match rng.below(100) {
        // MSI-X table entries.
        0..=34 => {
            let Some((table, _, n)) = s.table else {
                return random_op(rng, bridge);
            };
            let e = rng.below(u64::from(n) + 1);
            let field = rng.below(4) * 4;
            let (size, off) = match rng.below(10) {
                0 => (1u8, rng.below(16)),
                1 => (2, rng.below(8) * 2),
                2..=3 => (8, (field & 8)),
                _ => (4, field),
            };
            let addr = table + e * 16 + off;
            if rng.percent(20) {
                return Op::MmioRead { addr, size };
            }
            let data = match off {
                0 if size == 8 => msi_address(rng),
                0 => msi_address(rng) & 0xFFFF_FFFF,
                4 => rng.below(2) * rng.next_u64(),
                8 if size == 8 => rng.below(256) | rng.below(2) << 32,
                8 => (0x20 + rng.below(0xE0)) | (rng.below(2) << 15) | (rng.below(8) << 8),
                12 => rng.below(2) | (rng.below(2) * rng.next_u64()),
                _ => rng.next_u64(),
            };
            Op::MmioWrite { addr, size, data }
        }
        // MSI-X Message Control: enable / function mask.
        35..=49 => {
            let Some(cap) = s.msix_cap else {
                return random_op(rng, bridge);
            };
            if rng.percent(20) {
                return cfg_w(s.addr, cap + 3, 1, rng.below(4) << 6, ecam);
            }
            cfg_w(s.addr, cap + 2, 2, rng.below(4) << 14, ecam)
        }
        // MSI capability.
        50..=69 => {
            let Some((cap, flags)) = s.msi else {
                return random_op(rng, bridge);
            };
            let is64 = flags & pci_host_bridge::msi::FLAGS_64BIT != 0;
            let data_off = if is64 { 0x0C } else { 0x08 };
            let mask_off = if is64 { 0x10 } else { 0x0C };
            match rng.below(6) {
                0 => cfg_w(s.addr, cap + 2, 2, rng.below(2) | rng.below(8) << 4, ecam),
                1 => cfg_w(s.addr, cap + 4, 4, msi_address(rng) & 0xFFFF_FFFF, ecam),
                2 if is64 => cfg_w(s.addr, cap + 8, 4, rng.below(2) * rng.next_u64(), ecam),
                3 => cfg_w(
                    s.addr,
                    cap + data_off,
                    2,
                    (0x20 + rng.below(0xE0)) | (rng.below(2) << 15),
                    ecam,
                ),
                4 => cfg_w(s.addr, cap + mask_off, 4, rng.next_u64() & 0xFF, ecam),
                _ => Op::CfgRead {
                    ecam,
                    addr: s.addr,
                    reg: cap + rng.below(0x18) as u16,
                    size: 4,
                },
            }
        }
        // The PBA.
        70..=74 => match s.table {
            Some((_, pba, _)) => Op::MmioRead {
                addr: pba + rng.below(3) * 4,
                size: [4u8, 8][rng.below(2) as usize],
            },
            None => random_op(rng, bridge),
        },
        // Decode on/off and the guest's Interrupt Disable.
        75..=84 => cfg_w(
            s.addr,
            4,
            2,
            0x0006 | rng.below(2) << 10 | if rng.percent(15) { 0 } else { 0x2 },
            ecam,
        ),
        // Move the table's BAR (gtable changes).
        _ => match s.table_bar_reg {
            Some(reg) => {
                let (a, z) = s.windows.mmio[0];
                cfg_w(s.addr, reg, 4, a + (rng.below((z - a) >> 16) << 16), ecam)
            }
            None => random_op(rng, bridge),
        },
    }
}

/// Linux's MSI-X bring-up for every function with MSI-X: entries written while masked, MSI-X
/// enabled with the function masked, the function mask cleared, then each entry unmasked in
/// turn (vectors from `first_vector`). Needs the BARs placed and decode on.
pub fn linux_msix_ops(bridge: &PciHostBridge, first_vector: u8) -> Vec<Op> {
    linux_msix_ops_with(bridge, first_vector, u16::MAX)
}

/// [`linux_msix_ops`] for a driver that allocates `vectors` vectors per function (a 2-vCPU
/// guest's NIC driver takes one per queue pair plus one for its mailbox or config: 3): every
/// entry of the table is masked first (Linux's `msix_mask_all()` before MSI-X Enable), only
/// the first `vectors` entries are programmed and unmasked.
pub fn linux_msix_ops_with(bridge: &PciHostBridge, first_vector: u8, vectors: u16) -> Vec<Op> {
    let mut ops = Vec::new();
    for s in irq_surfaces(bridge) {
        let (Some(cap), Some((table, _, n))) = (s.msix_cap, s.table) else {
            continue;
        };
        let w = |ops: &mut Vec<Op>, a: u64, size: u8, data: u64| {
            ops.push(Op::MmioWrite {
                addr: a,
                size,
                data,
            })
        };
        ops.push(cfg_w(s.addr, cap + 2, 2, 0xC000, false));
        for e in 0..u64::from(n) {
            w(&mut ops, table + e * 16 + 12, 4, 1);
        }
        let used = u64::from(n.min(vectors));
        for e in 0..used {
            w(&mut ops, table + e * 16, 4, 0xFEE0_0000);
            w(&mut ops, table + e * 16 + 4, 4, 0);
            w(
                &mut ops,
                table + e * 16 + 8,
                4,
                u64::from(first_vector.wrapping_add(e as u8)),
            );
        }
        ops.push(cfg_w(s.addr, cap + 2, 2, 0x8000, false));
        for e in 0..used {
            w(&mut ops, table + e * 16 + 12, 4, 0);
        }
    }
    ops
}

/// Decode a fuzzer's bytes into accesses aimed at the MSI capability (4 bytes each): which
/// function, which register, and the value.
pub fn msi_ops_from_bytes(bridge: &PciHostBridge, bytes: &[u8]) -> Vec<Op> {
    let surfaces = irq_surfaces(bridge);
    let with_msi: Vec<&IrqSurface> = surfaces.iter().filter(|s| s.msi.is_some()).collect();
    if with_msi.is_empty() {
        return Vec::new();
    }
    bytes
        .chunks_exact(4)
        .map(|c| {
            let s = with_msi[usize::from(c[0] >> 4) % with_msi.len()];
            let (cap, _) = s.msi.unwrap_or((0x50, 0));
            let ecam = c[0] & 8 != 0;
            let v = u64::from(u16::from_le_bytes([c[2], c[3]]));
            match c[0] & 7 {
                0 => cfg_w(s.addr, cap + 2, 2, v & 0x71 | u64::from(c[1] & 1), ecam),
                1 => cfg_w(s.addr, cap + 4, 4, 0xFEE0_0000 | v << 4, ecam),
                2 => cfg_w(s.addr, cap + 8, 4, if c[1] & 1 != 0 { v } else { 0 }, ecam),
                3 => cfg_w(s.addr, cap + u16::from(c[1] & 0x1F), 2, v, ecam),
                4 => cfg_w(s.addr, cap + 0x0C, 4, v, ecam),
                5 => cfg_w(s.addr, cap + 0x10, 4, v, ecam),
                6 => cfg_w(s.addr, 4, 2, v & 0x0407 | 2, ecam),
                _ => Op::CfgRead {
                    ecam,
                    addr: s.addr,
                    reg: cap + u16::from(c[1] & 0x1F),
                    size: [1u8, 2, 4, 4][usize::from(c[2] & 3)],
                },
            }
        })
        .collect()
}

/// Decode a fuzzer's bytes into accesses aimed at MSI-X (6 bytes each): table entries with
/// any size and offset, Message Control, the PBA, the table BAR and decode.
pub fn msix_ops_from_bytes(bridge: &PciHostBridge, bytes: &[u8]) -> Vec<Op> {
    let surfaces = irq_surfaces(bridge);
    let with_msix: Vec<&IrqSurface> = surfaces.iter().filter(|s| s.msix_cap.is_some()).collect();
    if with_msix.is_empty() {
        return Vec::new();
    }
    bytes
        .chunks_exact(6)
        .map(|c| {
            let s = with_msix[usize::from(c[0] >> 5) % with_msix.len()];
            let cap = s.msix_cap.unwrap_or(0x70);
            let (table, pba, n) = s.table.unwrap_or((0, 0, 1));
            let size = [1u8, 2, 4, 4, 8, 8, 4, 4][usize::from(c[1] & 7)];
            let entry = u64::from(c[1] >> 3) % (u64::from(n) + 1);
            let off = u64::from(c[2] & 0xF);
            let data32 = u64::from(u32::from_le_bytes([c[2], c[3], c[4], c[5]]));
            match c[0] & 0x1F {
                0..=15 => {
                    let addr = table + entry * 16 + if c[0] & 1 != 0 { off } else { off & 0xC };
                    let data = match (off & 0xC, c[3] & 3) {
                        (0, 0..=2) => 0xFEE0_0000 | data32 & 0xFF00C,
                        (8, _) => data32 & 0xC7FF,
                        (12, _) => data32 & 1,
                        _ => data32 | data32 << 32,
                    };
                    if c[0] & 0x10 != 0 {
                        Op::MmioRead { addr, size }
                    } else {
                        Op::MmioWrite { addr, size, data }
                    }
                }
                16..=21 => cfg_w(
                    s.addr,
                    cap + 2,
                    2,
                    u64::from(c[2] & 0xC0) << 8,
                    c[3] & 1 != 0,
                ),
                22 => cfg_w(s.addr, cap + 3, 1, u64::from(c[2]), false),
                23 | 24 => Op::MmioRead {
                    addr: pba + off,
                    size,
                },
                25 => Op::MmioWrite {
                    addr: pba + (off & 8),
                    size,
                    data: data32,
                },
                26 => cfg_w(
                    s.addr,
                    4,
                    2,
                    u64::from(c[2] & 0x07) | 0x2 | u64::from(c[3] & 4) << 8,
                    false,
                ),
                27 => match s.table_bar_reg {
                    Some(reg) => {
                        let (a, z) = s.windows.mmio[0];
                        cfg_w(
                            s.addr,
                            reg,
                            4,
                            a + ((data32 % ((z - a) >> 16).max(1)) << 16),
                            false,
                        )
                    }
                    None => Op::MmioRead {
                        addr: table,
                        size: 4,
                    },
                },
                _ => Op::CfgRead {
                    ecam: false,
                    addr: s.addr,
                    reg: cap + u16::from(c[2] % 12),
                    size: 4,
                },
            }
        })
        .collect()
}
