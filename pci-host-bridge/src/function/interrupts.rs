//! The interrupts of a [`PassthroughFunction`]: MSI / MSI-X bindings in Xen and INTx
//! forwarding kept equal to what the guest programmed. Kept apart because it is the one
//! place that turns the guest's interrupt registers into executor calls and host writes.
//!
//! After every config write and every MSI-X table write the function compares what the
//! guest programmed with what is bound in Xen ([`crate::binding`], rules in [`crate::msi`]
//! and [`crate::msix`]) and binds or unbinds synchronously through the
//! [`PassthroughExecutor`]; a refusal is logged (rate-limited) and shown to the guest (MSI
//! Enable reads back 0; a refused MSI-X entry reads back masked). The guest's MSI / MSI-X
//! Enable (and MSI-X Function Mask) are then written through to the device as one 16-bit write
//! of Message Control: Xen leaves them to dom0. INTx ([`crate::intx`]) is reconciled after
//! every config write (MSI / MSI-X enable and the guest's Interrupt Disable force it off) and
//! on the backend's and the IOAPIC line's fds ([`PassthroughFunction::on_event`]).

use std::os::fd::RawFd;

use ioreq_server::executor::{PassthroughExecutor, PtError};
use ioreq_server::guest_warn;
use irq_line::IrqLine;

use super::PassthroughFunction;
use crate::binding::{IrqSlot, Vector};
use crate::header;
use crate::msix::{self, MsixTable};

impl PassthroughFunction {
    /// Write the guest's MSI-X Enable and Function Mask to the device: one 16-bit write of
    /// Message Control, the only write of the capability Xen lets dom0 make
    /// (xen/arch/x86/msi.c:1253-1263 in 4.17).
    pub(super) fn write_host_msix_control(&mut self) {
        let (Some(m), Some(c)) = (self.caps.msix, self.msix_control()) else {
            return;
        };
        let off = m.cap + 2;
        let cur = match self.dev.read_config_word(off) {
            Ok(v) => v,
            Err(e) => {
                guest_warn!(
                    self.warn,
                    "{}: reading the host's MSI-X control: {e}",
                    self.guest
                );
                return;
            }
        };
        let mut v = cur & !(msix::FLAGS_ENABLE | msix::FLAGS_MASKALL);
        if c.enabled {
            v |= msix::FLAGS_ENABLE;
        }
        if c.masked {
            v |= msix::FLAGS_MASKALL;
        }
        if v != cur {
            if let Err(e) = self.dev.write_config(off, &v.to_le_bytes()) {
                guest_warn!(
                    self.warn,
                    "{}: writing the host's MSI-X control: {e}",
                    self.guest
                );
            }
        }
    }

    /// Set or clear the host's MSI Enable (bit 0 of Message Control, one 16-bit
    /// read-modify-write; Xen programmed address, data and Multiple Message Enable itself).
    fn write_host_msi_enable(&mut self, on: bool) {
        let Some(cap) = self.caps.msi else { return };
        let off = cap + 2;
        let r = self.dev.read_config_word(off).and_then(|cur| {
            let v = if on {
                cur | crate::msi::FLAGS_ENABLE
            } else {
                cur & !crate::msi::FLAGS_ENABLE
            };
            if v != cur {
                self.dev.write_config(off, &v.to_le_bytes())
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            guest_warn!(
                self.warn,
                "{}: writing the host's MSI Enable: {e}",
                self.guest
            );
        }
    }

    pub(super) fn refused(&mut self, what: String, e: &PtError) {
        let guest = self.guest;
        let msg = format!("{what}: {e}");
        guest_warn!(
            self.warn,
            "{guest}: Xen refused {msg}; the guest sees the vector disabled"
        );
        self.last_refusal = Some(msg);
    }

    /// Whether INTx is forced off: MSI or MSI-X enabled, or the guest's Interrupt Disable set.
    fn intx_blocked(&self) -> bool {
        self.msi_state().is_some_and(|m| m.enabled)
            || self.msix_control().is_some_and(|c| c.enabled)
            || self.command() & header::CMD_INTX_DISABLE != 0
    }

    /// The vector the MSI capability asks for now.
    pub fn msi_vector(&self) -> Option<Vector> {
        let msix_on = self.msix_control().is_some_and(|c| c.enabled);
        self.msi_state()?.vector(msix_on)
    }

    /// Whether MSI-X entries may be bound now: MSI-X enabled and MSI not (enabling both is
    /// undefined, PCI Local Bus 3.0 6.8.2, so neither is bound then).
    fn msix_live(&self) -> bool {
        self.msix_control().is_some_and(|c| c.enabled)
            && !self.msi_state().is_some_and(|m| m.enabled)
    }

    /// The vector MSI-X entry `i` asks for now: unmasked, MSI-X enabled (and MSI not enabled).
    /// The Function Mask does not unbind: it is written through to the device, and Xen
    /// tracks it (`guest_maskall`) from dom0's control write.
    pub fn msix_vector(&self, i: usize) -> Option<Vector> {
        if !self.msix_live() {
            return None;
        }
        self.msix_entry_vector(i)
    }

    /// Entry `i`'s vector if it is unmasked, MSI-X's gate aside.
    fn msix_entry_vector(&self, i: usize) -> Option<Vector> {
        let t = self.msix.as_ref()?;
        let e = t.entry(i)?;
        if e.masked {
            return None;
        }
        let info = t.info();
        let bar = self.bars.bar(usize::from(info.table_bar))?;
        // Xen wants the BAR's base and adds the table offset itself (msi.c:847-860).
        let table_base = bar.host.host_addr;
        let gtable = bar.guest.wrapping_add(info.table_offset);
        Some(e.vector(table_base, gtable))
    }

    /// What MSI-X entry `i` should be bound to after a config write while MSI-X is live
    /// ([`Self::msix_live`]; otherwise nothing is). An entry already bound keeps its message:
    /// Xen's msixtbl owns its mask, and a new address/data counts only once Xen forwards the
    /// unmask ([`PassthroughFunction::mmio_write`]); only the table's addresses follow a moved
    /// BAR. An unbound entry is bound if the guest unmasked it.
    fn msix_want_live(&self, i: usize) -> Option<Vector> {
        match self.bindings.get(IrqSlot::Msix(i as u32)) {
            Some(b) => {
                let info = self.msix.as_ref()?.info();
                let bar = self.bars.bar(usize::from(info.table_bar))?;
                Some(Vector {
                    table_base: bar.host.host_addr,
                    gtable: bar.guest.wrapping_add(info.table_offset),
                    ..*b
                })
            }
            None => self.msix_entry_vector(i),
        }
    }

    /// Bring every MSI / MSI-X binding and INTx to what the guest programmed, and the host's
    /// MSI Enable to what is bound.
    pub(super) fn sync_interrupts(&mut self, exec: &mut PassthroughExecutor) {
        let mut wants = Vec::new();
        if self.caps.msi.is_some() {
            wants.push((IrqSlot::Msi, self.msi_vector()));
        }
        if self.msix_live() {
            let n = self.msix.as_ref().map_or(0, MsixTable::len);
            for i in 0..n {
                let want = self.msix_want_live(i);
                let slot = IrqSlot::Msix(i as u32);
                if want.is_some() || self.bindings.get(slot).is_some() {
                    wants.push((slot, want));
                }
            }
        } else {
            // Not live: every bound entry is unbound, and no other entry can change.
            let bound = self.bindings.bound().map(|(slot, _)| slot);
            wants.extend(
                bound
                    .filter(|s| matches!(s, IrqSlot::Msix(_)))
                    .map(|s| (s, None)),
            );
        }
        let msi_was_bound = self.bindings.get(IrqSlot::Msi).is_some();
        for (slot, e) in self.bindings.sync_all(wants, exec) {
            match slot {
                IrqSlot::Msi => {
                    // Refused: the guest reads its Enable bit back as 0.
                    if let Some(cap) = self.caps.msi {
                        if let Some(i) = self.layout.find(cap + 2) {
                            let r = self.layout.reg_mut(i);
                            r.virt &= !u32::from(crate::msi::FLAGS_ENABLE);
                        }
                    }
                    self.refused("MSI".into(), &e);
                }
                IrqSlot::Msix(n) => {
                    if self.bindings.get(slot).is_none() {
                        if let Some(t) = &mut self.msix {
                            t.set_masked(n as usize, true);
                        }
                    }
                    self.refused(format!("MSI-X entry {n}"), &e);
                }
            }
        }
        let msi_bound = self.bindings.get(IrqSlot::Msi).is_some();
        if msi_bound != msi_was_bound {
            self.write_host_msi_enable(msi_bound);
        }
        self.reconcile_intx();
    }

    pub(super) fn reconcile_intx(&mut self) {
        let blocked = self.intx_blocked();
        if let Some(i) = &mut self.intx {
            i.reconcile(self.dev.as_mut(), blocked);
        }
    }

    /// Attach the IOAPIC line for this function's INTx (registered on
    /// [`Intx::gsi`](crate::intx::Intx::gsi)); INTx becomes live (unmasked at the device
    /// unless forced off).
    pub fn attach_intx_line(&mut self, line: IrqLine) {
        if let Some(i) = &mut self.intx {
            i.attach(line);
        }
        self.reconcile_intx();
    }

    /// Connect this function's INTx to the IOAPIC's irq_line socket (no-op without INTx).
    pub fn connect_intx(&mut self, socket: &std::path::Path) -> Result<(), irq_line::IrqLineError> {
        if let Some(i) = &mut self.intx {
            if !i.has_line() {
                i.connect(socket)?;
                tracing::info!(guest = %self.guest, gsi = i.gsi(), "INTx routed to the IOAPIC");
            }
        }
        self.reconcile_intx();
        Ok(())
    }

    /// The fds this function wants watched: the backend's INTx notification and the IOAPIC
    /// line's resample fd.
    pub fn event_fds(&self) -> Vec<RawFd> {
        let Some(i) = &self.intx else {
            return Vec::new();
        };
        self.dev
            .intx_fd()
            .into_iter()
            .chain(i.resample_fd())
            .collect()
    }

    /// One of [`PassthroughFunction::event_fds`] is readable. Returns whether it was ours.
    pub fn on_event(&mut self, fd: RawFd) -> bool {
        let blocked = self.intx_blocked();
        let Some(i) = &mut self.intx else {
            return false;
        };
        if self.dev.intx_fd() == Some(fd) {
            i.on_host_interrupt(self.dev.as_mut(), blocked);
            true
        } else if i.resample_fd() == Some(fd) {
            i.on_resample(self.dev.as_mut(), blocked);
            true
        } else {
            false
        }
    }
}
