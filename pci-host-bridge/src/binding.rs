//! Which MSI / MSI-X vectors of a function are bound in Xen, reconciled with what the guest
//! programmed through synchronous calls on the [`PassthroughExecutor`].
//!
//! A bound vector is Xen's: `PHYSDEVOP_map_pirq` gave it a pirq and `XEN_DOMCTL_bind_pt_irq`
//! (`PT_IRQ_TYPE_MSI`) routes it to the guest vector, so Xen injects it without us
//! (xen-abi.md 8.1, 8.2). `map_pirq` programs the host's MSI address/data (and, for MSI-X,
//! the table entry), but with a hardware domain present Xen leaves MSI / MSI-X *Enable* to
//! dom0 ("the split brain model where Dom0 actually enables MSI", xen/arch/x86/msi.c:663-674
//! and 970-982 in 4.17): the function writes the guest's Enable through itself
//! ([`crate::function`]).
//!
//! [`Bindings::sync`] moves one vector to its wanted state and records only what Xen did: a
//! bind, an unbind, a rebind (the executor keeps the pirq and updates gvec/gflags), or, when
//! the size of a multi-message block changes, an unmap and a new map. A refusal comes back to
//! the caller, which decides what the guest sees. Unbinds of one round come before its binds
//! ([`Bindings::sync_all`]), since MSI and MSI-X entry 0 share Xen's entry number 0.

use std::collections::BTreeMap;

use ioreq_server::executor::{MsiBind, PassthroughExecutor, PtError};
use serde::Serialize;

/// One vector as Xen binds it (what [`MsiBind`] carries besides sbdf and entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Vector {
    /// For MSI-X: the host address of the BAR holding the table — not the table's address:
    /// Xen adds the table offset itself and checks this against the BAR it reads
    /// (`WARN_ON(msi->table_base != table_paddr)`, xen/arch/x86/msi.c:847-860 in 4.17;
    /// QEMU and Linux pass the BAR start too). 0 for MSI.
    pub table_base: u64,
    /// Vectors (multi-message MSI: `1 << MME`), 1 otherwise.
    pub nvec: u32,
    /// Guest vector (message data bits 7:0).
    pub gvec: u8,
    /// `XEN_DOMCTL_VMSI_X86_*` flags.
    pub gflags: u32,
    /// Guest-physical address of the MSI-X table (0 for MSI).
    pub gtable: u64,
}

/// Which vector of the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", content = "entry", rename_all = "snake_case")]
pub enum IrqSlot {
    /// The MSI capability (entry 0 in Xen's terms).
    Msi,
    /// MSI-X table entry `n`.
    Msix(u32),
}

impl IrqSlot {
    /// The `entry` Xen is told (`entry_nr` of map_pirq).
    pub fn entry(self) -> u32 {
        match self {
            IrqSlot::Msi => 0,
            IrqSlot::Msix(n) => n,
        }
    }
}

/// The bound vectors of one host function.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bindings {
    /// Host function, `seg << 16 | bus << 8 | devfn`.
    sbdf: u32,
    bound: BTreeMap<IrqSlot, Vector>,
    /// Binds done so far (for the status socket).
    binds: u64,
    /// Unbinds done so far.
    unbinds: u64,
}

impl Bindings {
    /// Nothing bound yet, for host function `sbdf`.
    pub fn new(sbdf: u32) -> Self {
        Bindings {
            sbdf,
            ..Default::default()
        }
    }

    /// The host function.
    pub fn sbdf(&self) -> u32 {
        self.sbdf
    }

    /// What is bound now.
    pub fn bound(&self) -> impl Iterator<Item = (IrqSlot, &Vector)> {
        self.bound.iter().map(|(s, v)| (*s, v))
    }

    /// The vector bound at `slot`, if any.
    pub fn get(&self, slot: IrqSlot) -> Option<&Vector> {
        self.bound.get(&slot)
    }

    /// Number of bound MSI-X entries.
    pub fn msix_bound(&self) -> usize {
        self.bound
            .keys()
            .filter(|s| matches!(s, IrqSlot::Msix(_)))
            .count()
    }

    fn bind(
        &mut self,
        slot: IrqSlot,
        v: Vector,
        exec: &mut PassthroughExecutor,
    ) -> Result<(), PtError> {
        tracing::debug!(sbdf = self.sbdf, ?slot, vector = ?v, "bind");
        exec.bind_msi(MsiBind {
            sbdf: self.sbdf,
            entry: slot.entry(),
            table_base: v.table_base,
            nvec: v.nvec,
            gvec: v.gvec,
            gflags: v.gflags,
            gtable: v.gtable,
        })?;
        self.bound.insert(slot, v);
        self.binds += 1;
        Ok(())
    }

    fn unbind(&mut self, slot: IrqSlot, exec: &mut PassthroughExecutor) -> Result<(), PtError> {
        if self.bound.contains_key(&slot) {
            tracing::debug!(sbdf = self.sbdf, ?slot, "unbind");
            exec.unbind_msi(self.sbdf, slot.entry())?;
            self.bound.remove(&slot);
            self.unbinds += 1;
        }
        Ok(())
    }

    /// Move `slot` to `want` (`None`: not bound). On an error nothing changed in Xen for a
    /// bind (the executor rolls a fresh pirq back); an unbind that fails stays recorded.
    pub fn sync(
        &mut self,
        slot: IrqSlot,
        want: Option<Vector>,
        exec: &mut PassthroughExecutor,
    ) -> Result<(), PtError> {
        match (self.bound.get(&slot).copied(), want) {
            (None, None) => Ok(()),
            (Some(_), None) => self.unbind(slot, exec),
            (Some(old), Some(v)) if old == v => Ok(()),
            (_, Some(v)) => {
                let r = self.bind(slot, v, exec);
                if r.is_err() && exec.pirq(self.sbdf, slot.entry()).is_none() {
                    // The executor unmapped the old block (size change) or never had one.
                    self.bound.remove(&slot);
                }
                r
            }
        }
    }

    /// Sync several slots: all unbinds first, then the binds and rebinds. Every slot is
    /// tried; the errors are returned with their slots.
    pub fn sync_all(
        &mut self,
        wants: impl IntoIterator<Item = (IrqSlot, Option<Vector>)>,
        exec: &mut PassthroughExecutor,
    ) -> Vec<(IrqSlot, PtError)> {
        let wants: Vec<_> = wants.into_iter().collect();
        let mut errs = Vec::new();
        for (slot, want) in &wants {
            if want.is_none() {
                if let Err(e) = self.unbind(*slot, exec) {
                    errs.push((*slot, e));
                }
            }
        }
        for (slot, want) in wants {
            if want.is_some() {
                if let Err(e) = self.sync(slot, want, exec) {
                    errs.push((slot, e));
                }
            }
        }
        errs
    }

    /// Unbind everything (teardown), best effort.
    pub fn unbind_all(&mut self, exec: &mut PassthroughExecutor) -> Vec<(IrqSlot, PtError)> {
        let slots: Vec<IrqSlot> = self.bound.keys().copied().collect();
        let mut errs = Vec::new();
        for s in slots {
            if let Err(e) = self.unbind(s, exec) {
                errs.push((s, e));
            }
        }
        errs
    }

    /// Forget every binding without asking Xen (the domain is gone: Xen freed its pirqs).
    pub fn forget_all(&mut self) {
        self.bound.clear();
    }

    /// Binds and unbinds done so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.binds, self.unbinds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ioreq_server::executor::fake::FakeChannel;
    use xen_abi::passthrough::{MsiMap, PtOp};

    fn v(gvec: u8, nvec: u32) -> Vector {
        Vector {
            table_base: 0,
            nvec,
            gvec,
            gflags: 0x1_0000,
            gtable: 0,
        }
    }

    fn names(log: &[PtOp]) -> Vec<String> {
        log.iter()
            .map(|o| {
                serde_json::to_value(o).unwrap()["op"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn bind_rebind_remap_unbind() {
        let (c, log) = FakeChannel::new(1);
        let mut x = PassthroughExecutor::new(Box::new(c));
        let mut b = Bindings::new(0x0312);
        b.sync(IrqSlot::Msi, Some(v(0x41, 1)), &mut x).unwrap();
        b.sync(IrqSlot::Msi, Some(v(0x41, 1)), &mut x).unwrap();
        assert_eq!(log.lock().unwrap().len(), 2, "same state: nothing more");
        b.sync(IrqSlot::Msi, Some(v(0x42, 1)), &mut x).unwrap();
        b.sync(IrqSlot::Msi, Some(v(0x42, 4)), &mut x).unwrap();
        b.sync(IrqSlot::Msi, None, &mut x).unwrap();
        b.sync(IrqSlot::Msi, None, &mut x).unwrap();
        assert_eq!(
            names(&log.lock().unwrap()),
            [
                "map_pirq_msi",
                "bind_pt_irq_msi",
                "bind_pt_irq_msi",
                "unbind_pt_irq_msi",
                "unmap_pirq",
                "map_pirq_msi",
                "bind_pt_irq_msi",
                "bind_pt_irq_msi",
                "bind_pt_irq_msi",
                "bind_pt_irq_msi",
                "unbind_pt_irq_msi",
                "unbind_pt_irq_msi",
                "unbind_pt_irq_msi",
                "unbind_pt_irq_msi",
                "unmap_pirq",
            ]
        );
        assert_eq!(b.counts(), (3, 1));
    }

    #[test]
    fn a_refused_bind_records_nothing() {
        let (c, _log) = FakeChannel::with_rule(
            1,
            Box::new(|op| match op {
                PtOp::MapPirqMsi(MsiMap { nvec, .. }) if *nvec > 1 => Err(libc::EOPNOTSUPP),
                PtOp::MapPirqMsi(..) => Ok(7),
                _ => Ok(0),
            }),
        );
        let mut x = PassthroughExecutor::new(Box::new(c));
        let mut b = Bindings::new(0x0312);
        let e = b.sync(IrqSlot::Msi, Some(v(0x40, 4)), &mut x).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EOPNOTSUPP));
        assert!(b.get(IrqSlot::Msi).is_none());
        b.sync(IrqSlot::Msi, Some(v(0x40, 1)), &mut x).unwrap();
        assert!(b.get(IrqSlot::Msi).is_some());
    }

    #[test]
    fn unbinds_come_first() {
        let (c, log) = FakeChannel::new(1);
        let mut x = PassthroughExecutor::new(Box::new(c));
        let mut b = Bindings::new(1);
        b.sync(IrqSlot::Msi, Some(v(0x30, 1)), &mut x).unwrap();
        log.lock().unwrap().clear();
        let errs = b.sync_all(
            [(IrqSlot::Msix(0), Some(v(0x31, 1))), (IrqSlot::Msi, None)],
            &mut x,
        );
        assert!(errs.is_empty());
        assert_eq!(
            names(&log.lock().unwrap()),
            [
                "unbind_pt_irq_msi",
                "unmap_pirq",
                "map_pirq_msi",
                "bind_pt_irq_msi"
            ]
        );
        assert!(b.unbind_all(&mut x).is_empty());
        assert_eq!(b.bound().count(), 0);
    }
}
