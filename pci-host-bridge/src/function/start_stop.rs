//! A [`PassthroughFunction`]'s side of the assignment lifecycle: the calls into
//! [`crate::lifecycle`] with what only the function knows (its capabilities, mappings,
//! bindings and INTx state). Kept apart because the steps themselves and their rollback live
//! in [`crate::lifecycle`]; this file only hands them the function's state.
//!
//! Start: driver off, decode on, prepare_msix, reset, Function Mask clear, assign,
//! permissions; stop: the reverse, with rollback of a partial start.

use ioreq_server::executor::PassthroughExecutor;

use super::mappings::unmap;
use super::PassthroughFunction;
use crate::error::Error;
use crate::lifecycle::{Lifecycle, Target};
use crate::msix;

impl PassthroughFunction {
    /// Setup before the guest runs ([`crate::lifecycle`]); INTx starts in its wanted state.
    /// On an error the steps done stay recorded: call [`PassthroughFunction::stop`].
    pub fn start(&mut self, exec: &mut PassthroughExecutor) -> Result<(), Error> {
        let r = self.lifecycle.start(
            Target {
                host: self.host,
                dev: self.dev.as_mut(),
                msix_cap: self.caps.msix.map(|m| m.cap),
                msi_cap: self.caps.msi,
            },
            exec,
        );
        self.reconcile_intx();
        r
    }

    /// Teardown and hand-back ([`crate::lifecycle`]): bus master off, every mapping and vector
    /// removed, reset, release_msix, deassign, permissions revoked. With `guest_alive` false
    /// (the domain is gone, and with it its p2m and pirqs) only dom0's side is undone.
    pub fn stop(&mut self, exec: &mut PassthroughExecutor, guest_alive: bool) {
        if let Some(i) = &mut self.intx {
            // Setting Interrupt Disable deasserts the line; the device goes back masked.
            i.reconcile(self.dev.as_mut(), true);
        }
        let guest = self.guest;
        let mapped = std::mem::take(&mut self.mapped);
        let mut bindings = std::mem::take(&mut self.bindings);
        let msi = self.caps.msi;
        let msix = self.caps.msix.map(|m| m.cap);
        let mut left = Vec::new();
        if !guest_alive {
            bindings.forget_all();
        }
        self.lifecycle.stop(
            self.host,
            self.dev.as_mut(),
            exec,
            guest_alive,
            &mut |dev, exec| {
                let mut errs = Vec::new();
                if guest_alive {
                    for m in &mapped {
                        if let Err(e) = unmap(m, exec) {
                            errs.push(format!("{guest}: unmapping {m:?}: {e}"));
                            left.push(*m);
                        }
                    }
                    for (slot, e) in bindings.unbind_all(exec) {
                        errs.push(format!("{guest}: unbinding {slot:?}: {e}"));
                    }
                }
                // The host's MSI / MSI-X Enable off (one 16-bit write each).
                for (cap, bit) in [
                    (msi, crate::msi::FLAGS_ENABLE),
                    (msix, msix::FLAGS_ENABLE | msix::FLAGS_MASKALL),
                ] {
                    let Some(cap) = cap else { continue };
                    if let Ok(c) = dev.read_config_word(cap + 2) {
                        if c & bit != 0 {
                            let v = c & !bit;
                            if let Err(e) = dev.write_config(cap + 2, &v.to_le_bytes()) {
                                errs.push(format!("{guest}: host MSI control off: {e}"));
                            }
                        }
                    }
                }
                errs
            },
        );
        self.mapped = left;
        self.bindings = bindings;
    }

    /// Hand back a function that a dead bridge left assigned to a domain that is gone
    /// ([`Lifecycle::reclaim`]); returns the failed steps.
    pub fn reclaim(&mut self, exec: &mut PassthroughExecutor) -> Vec<String> {
        Lifecycle::reclaim(self.host, self.dev.as_mut(), self.caps.msix.is_some(), exec)
    }

    /// The lifecycle steps done.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }
}
