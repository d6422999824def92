//! The invariant checker ([`Checker`], see the crate docs): what it knows of each function,
//! its accessors, and performing one guest access and checking it ([`Checker::apply`]). The
//! checks themselves are in the submodules, one subject each: config reads and device writes
//! (`config`), interrupts and the calls of an access (`interrupts`), mappings (`mappings`),
//! start and stop (`lifecycle`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ioreq_server::device::{Actions, Device, Space};
use xen_abi::passthrough::PtOp;

use pci_host_bridge::backend::snapshot::SnapshotHandle;
use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::topology::PciAddress;

use crate::ops::{mask, Op};
#[cfg(doc)]
use crate::template::Template;
use crate::xen_like::{lock, LoggedOp, XenState};

mod config;
mod interrupts;
mod lifecycle;
mod mappings;
mod raw;

pub use raw::{RawCaps, RawMsix};

/// What the checker knows of one function.
#[derive(Debug)]
struct Func {
    handle: SnapshotHandle,
    raw: RawCaps,
}

/// The invariant checker (see the crate docs).
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
}
