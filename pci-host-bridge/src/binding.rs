//! Which MSI / MSI-X vectors of a function are bound in Xen, and the actions that move the
//! bindings to what the guest has programmed.
//!
//! A bound vector is Xen's: `PHYSDEVOP_map_pirq` gave it a pirq and `XEN_DOMCTL_bind_pt_irq`
//! (`PT_IRQ_TYPE_MSI`) routes it to the guest vector, so Xen injects it without us
//! ([`Action::BindMsi`], carried out by the ioreq server; xen-abi.md 8.1, 8.2). Xen also
//! programs the host's MSI / MSI-X registers itself when it maps the pirq; the guest's values
//! never reach the device.
//!
//! [`Bindings::sync`] compares the wanted state of one vector with what is bound and pushes at
//! most two actions: nothing, a bind, an unbind, a rebind (a second `BindMsi` for the same
//! `(sbdf, entry)`: the server keeps the pirq and only rebinds), or, when the number of
//! vectors of a multi-message MSI changes, an unbind followed by a bind (the pirq block must
//! be remapped with the new size). Callers sync every vector that may have changed; unbinds
//! of one sync round must come before its binds ([`Bindings::sync_all`] orders them), since
//! MSI and MSI-X entry 0 share the server's key `(sbdf, 0)`.

use std::collections::BTreeMap;

use ioreq_server::device::{Action, Actions};
use serde::Serialize;

/// One vector as Xen binds it (the arguments of [`Action::BindMsi`] besides sbdf and entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Vector {
    /// Host physical address of the MSI-X table (0 for MSI).
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
    /// Binds pushed so far (for the status socket).
    binds: u64,
    /// Unbinds pushed so far.
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

    fn bind(&mut self, slot: IrqSlot, v: Vector, actions: &mut Actions) {
        tracing::debug!(sbdf = self.sbdf, ?slot, vector = ?v, "bind");
        actions.push(Action::BindMsi {
            sbdf: self.sbdf,
            entry: slot.entry(),
            table_base: v.table_base,
            nvec: v.nvec,
            gvec: v.gvec,
            gflags: v.gflags,
            gtable: v.gtable,
        });
        self.bound.insert(slot, v);
        self.binds += 1;
    }

    fn unbind(&mut self, slot: IrqSlot, actions: &mut Actions) {
        if self.bound.remove(&slot).is_some() {
            tracing::debug!(sbdf = self.sbdf, ?slot, "unbind");
            actions.push(Action::UnbindMsi {
                sbdf: self.sbdf,
                entry: slot.entry(),
            });
            self.unbinds += 1;
        }
    }

    /// Move `slot` to `want` (`None`: not bound): at most two actions.
    pub fn sync(&mut self, slot: IrqSlot, want: Option<Vector>, actions: &mut Actions) {
        match (self.bound.get(&slot).copied(), want) {
            (None, None) => {}
            (Some(_), None) => self.unbind(slot, actions),
            (None, Some(v)) => self.bind(slot, v, actions),
            (Some(old), Some(v)) if old == v => {}
            (Some(old), Some(v)) => {
                if old.nvec != v.nvec || old.table_base != v.table_base {
                    // The pirq (block) itself must change: unmap, then map anew.
                    self.unbind(slot, actions);
                }
                self.bind(slot, v, actions);
            }
        }
    }

    /// Sync several slots: all unbinds first, then the binds and rebinds.
    pub fn sync_all(
        &mut self,
        wants: impl IntoIterator<Item = (IrqSlot, Option<Vector>)>,
        actions: &mut Actions,
    ) {
        let wants: Vec<_> = wants.into_iter().collect();
        for (slot, want) in &wants {
            if want.is_none() {
                self.unbind(*slot, actions);
            }
        }
        for (slot, want) in wants {
            if want.is_some() {
                self.sync(slot, want, actions);
            }
        }
    }

    /// Unbind everything (teardown).
    pub fn unbind_all(&mut self, actions: &mut Actions) {
        let slots: Vec<IrqSlot> = self.bound.keys().copied().collect();
        for s in slots {
            self.unbind(s, actions);
        }
    }

    /// Binds and unbinds pushed so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.binds, self.unbinds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(gvec: u8, nvec: u32) -> Vector {
        Vector {
            table_base: 0,
            nvec,
            gvec,
            gflags: 0x1_0000,
            gtable: 0,
        }
    }

    #[test]
    fn bind_rebind_remap_unbind() {
        let mut b = Bindings::new(0x0312);
        let mut a = Actions::new();
        b.sync(IrqSlot::Msi, Some(v(0x41, 1)), &mut a);
        b.sync(IrqSlot::Msi, Some(v(0x41, 1)), &mut a);
        assert_eq!(a.as_slice().len(), 1, "same state: nothing");
        b.sync(IrqSlot::Msi, Some(v(0x42, 1)), &mut a);
        assert!(matches!(
            a.as_slice()[1],
            Action::BindMsi { gvec: 0x42, .. }
        ));
        b.sync(IrqSlot::Msi, Some(v(0x42, 4)), &mut a);
        assert!(matches!(
            a.as_slice()[2],
            Action::UnbindMsi { entry: 0, .. }
        ));
        assert!(matches!(a.as_slice()[3], Action::BindMsi { nvec: 4, .. }));
        b.sync(IrqSlot::Msi, None, &mut a);
        b.sync(IrqSlot::Msi, None, &mut a);
        assert_eq!(a.as_slice().len(), 5);
        assert_eq!(b.counts(), (3, 2));
    }

    #[test]
    fn unbinds_come_first() {
        let mut b = Bindings::new(1);
        let mut a = Actions::new();
        b.sync(IrqSlot::Msi, Some(v(0x30, 1)), &mut a);
        a.drain().for_each(drop);
        b.sync_all(
            [(IrqSlot::Msix(0), Some(v(0x31, 1))), (IrqSlot::Msi, None)],
            &mut a,
        );
        assert!(matches!(
            a.as_slice()[0],
            Action::UnbindMsi { entry: 0, .. }
        ));
        assert!(matches!(
            a.as_slice()[1],
            Action::BindMsi {
                entry: 0,
                gvec: 0x31,
                ..
            }
        ));
        let mut a = Actions::new();
        b.unbind_all(&mut a);
        assert_eq!(a.as_slice().len(), 1);
        assert_eq!(b.bound().count(), 0);
    }
}
