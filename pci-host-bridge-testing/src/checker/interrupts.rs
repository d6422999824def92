//! Invariant 5, interrupts: the guest-visible interrupt state of each function, what Xen has
//! bound against the guest's programming and the bridge's own list, and the hypercalls one
//! access made (their mapping calls checked against invariant 3 too).

use std::collections::{BTreeMap, BTreeSet};

use xen_abi::passthrough::{msi_gflags, PtOp};

use pci_host_bridge::backend::BarKind;
use pci_host_bridge::bars::PAGE_SIZE;
use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::function::PassthroughFunction;
use pci_host_bridge::topology::PciAddress;

use super::raw::{guest_msi, guest_msix};
use super::{Checker, Func};
use crate::ops::Op;
use crate::xen_like::{Bound, LoggedOp, PirqBlock};

/// The guest-visible interrupt state of a function (and what Xen has bound of its MSI-X).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct IrqView {
    msix: Option<(bool, bool)>,
    msi: bool,
    /// MSI-X entries bound in Xen.
    msix_bound: BTreeSet<u32>,
    /// The guest address of the MSI-X table.
    gtable: Option<u64>,
}

impl Checker {
    /// The functions whose interrupt programming `op` can change (`None`: all of them).
    pub(super) fn touched(bridge: &PciHostBridge, op: Op) -> Option<Vec<PciAddress>> {
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

    pub(super) fn irq_views(
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

    pub(super) fn check_interrupts_after(
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

    pub(super) fn check_ops(
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
