//! INTx of a passed-through function: the host's interrupt in, an IOAPIC pin out.
//!
//! A PVH domU has no interrupt controller in Xen behind INTx (xen-abi.md 8.1: INTx passthrough
//! injects into the vIOAPIC, which a PVH domU lacks), so the line goes through the `ioapic`
//! process: the bridge is an interrupt source on its irq_line socket
//! ([`irq_line`]), one registration per function, on the pin the guest's ACPI
//! `_PRT` routes the function's pin to ([`guest_gsi`]).
//!
//! The host side is level-triggered and masked at the device by the host while it waits
//! (uio_pci_generic sets Interrupt Disable in its handler; the snapshot backend does the same
//! for its test eventfd), which is the irqfd/resamplefd contract:
//! 1. the backend's INTx fd becomes readable: the device asserted INTx and is now masked;
//!    the bridge asserts the pin ([`Intx::on_host_interrupt`]);
//! 2. the guest handles the interrupt and EOIs the IOAPIC, which releases the pin and signals
//!    resample ([`Intx::on_resample`]);
//! 3. the bridge unmasks INTx at the device (clears Interrupt Disable, PCI Local Bus 3.0
//!    6.2.2); if the device still needs service it asserts again and we are back at 1.
//!
//! INTx is forced off while MSI or MSI-X is enabled, or while the guest's own (virtual)
//! Interrupt Disable bit is set, or while no IOAPIC line is attached: the device stays masked
//! (Interrupt Disable set at the device) and nothing is asserted; a line asserted when that
//! happens is deasserted (setting Interrupt Disable deasserts INTx, 6.2.2). The device's bit is
//! written only when the wanted state changes ([`Intx::reconcile`]).

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use irq_line::{IrqLine, IrqLineError};
use serde_json::json;

use crate::backend::HostDevice;

/// The GSI (= IOAPIC pin: the guest's only IOAPIC has GSI base 0) that interrupt pin `pin`
/// (1 = INTA# .. 4 = INTD#) of the function in guest slot `slot` is routed to:
/// [`irq_line::pci_intx_gsi`], the one formula the guest's `_PRT` (pvh-acpi)
/// uses too. `None` for a pin outside 1..=4.
pub fn guest_gsi(slot: u8, pin: u8) -> Option<u8> {
    irq_line::pci_intx_gsi(0, slot, pin).and_then(|g| u8::try_from(g).ok())
}

/// The INTx state of one function.
#[derive(Debug)]
pub struct Intx {
    pin: u8,
    gsi: u8,
    line: Option<IrqLine>,
    /// We asserted the pin and wait for the resample.
    asserted: bool,
    /// Our knowledge of the device's Interrupt Disable bit (`None`: not known yet).
    device_masked: Option<bool>,
    host_interrupts: u64,
    forwarded: u64,
    resamples: u64,
}

impl Intx {
    /// INTx for interrupt pin `pin` (1..=4) of a function in guest slot `slot`.
    pub fn new(slot: u8, pin: u8) -> Option<Self> {
        Some(Intx {
            pin,
            gsi: guest_gsi(slot, pin)?,
            line: None,
            asserted: false,
            device_masked: None,
            host_interrupts: 0,
            forwarded: 0,
            resamples: 0,
        })
    }

    /// A copy of this state for a copy of the function ([`crate::PciHostBridge::fork`]);
    /// `None` while a line is attached (its socket cannot be shared).
    #[cfg(any(test, feature = "testing"))]
    pub fn fork(&self) -> Option<Self> {
        if self.line.is_some() {
            return None;
        }
        Some(Intx {
            pin: self.pin,
            gsi: self.gsi,
            line: None,
            asserted: self.asserted,
            device_masked: self.device_masked,
            host_interrupts: self.host_interrupts,
            forwarded: self.forwarded,
            resamples: self.resamples,
        })
    }

    /// The IOAPIC pin (GSI).
    pub fn gsi(&self) -> u8 {
        self.gsi
    }

    /// Whether an IOAPIC line is attached.
    pub fn has_line(&self) -> bool {
        self.line.is_some()
    }

    /// Whether we currently assert the pin.
    pub fn is_asserted(&self) -> bool {
        self.asserted
    }

    /// Attach a registered line (its pin should be [`Intx::gsi`]).
    pub fn attach(&mut self, line: IrqLine) {
        if line.pin() != self.gsi {
            tracing::warn!(
                line = line.pin(),
                gsi = self.gsi,
                "INTx line registered on another pin than the _PRT routes to"
            );
        }
        self.line = Some(line);
    }

    /// Connect to the IOAPIC's irq_line socket and register on [`Intx::gsi`].
    pub fn connect(&mut self, socket: &Path) -> Result<(), IrqLineError> {
        let line = IrqLine::connect(socket, self.gsi)?;
        self.attach(line);
        Ok(())
    }

    /// The line's resample fd, if attached.
    pub fn resample_fd(&self) -> Option<RawFd> {
        self.line.as_ref().map(|l| l.resample_fd().as_raw_fd())
    }

    /// Whether the device's Interrupt Disable bit must be set: forced off (`blocked`: MSI or
    /// MSI-X enabled, or the guest's Interrupt Disable set), no line, or asserted and waiting
    /// for the guest's EOI.
    pub fn wants_masked(&self, blocked: bool) -> bool {
        blocked || self.line.is_none() || self.asserted
    }

    /// What the bridge last made (or knows) the device's Interrupt Disable bit to be.
    pub fn device_masked(&self) -> Option<bool> {
        self.device_masked
    }

    /// Bring the device's Interrupt Disable bit and the pin to the wanted state.
    pub fn reconcile(&mut self, dev: &mut dyn HostDevice, blocked: bool) {
        if blocked && self.asserted {
            if let Some(l) = &mut self.line {
                if let Err(e) = l.deassert() {
                    tracing::warn!(gsi = self.gsi, "INTx deassert failed: {e}");
                }
            }
            self.asserted = false;
        }
        let want = self.wants_masked(blocked);
        if self.device_masked == Some(want) {
            return;
        }
        let r = if want {
            dev.intx_mask()
        } else {
            dev.intx_unmask()
        };
        match r {
            Ok(()) => self.device_masked = Some(want),
            Err(e) => {
                self.device_masked = None;
                tracing::warn!(
                    gsi = self.gsi,
                    masked = want,
                    "INTx disable at the device failed: {e}"
                );
            }
        }
    }

    /// The backend's INTx fd is readable: take the notification and, unless INTx is forced
    /// off, assert the pin.
    pub fn on_host_interrupt(&mut self, dev: &mut dyn HostDevice, blocked: bool) {
        let n = match dev.intx_ack() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(
                    gsi = self.gsi,
                    "reading the host INTx notification failed: {e}"
                );
                return;
            }
        };
        if n == 0 {
            return;
        }
        self.host_interrupts += n;
        // The host masked the device before notifying us.
        self.device_masked = Some(true);
        if !blocked && !self.asserted {
            if let Some(l) = &mut self.line {
                match l.assert() {
                    Ok(()) => {
                        self.asserted = true;
                        self.forwarded += 1;
                    }
                    Err(e) => tracing::warn!(gsi = self.gsi, "INTx assert failed: {e}"),
                }
            }
        }
        self.reconcile(dev, blocked);
    }

    /// The line's resample fd is readable: the guest EOI'd the pin; unmask the device so that
    /// it can raise the line again if it still needs service.
    pub fn on_resample(&mut self, dev: &mut dyn HostDevice, blocked: bool) {
        let Some(l) = &mut self.line else { return };
        match l.ack_resample() {
            Ok(true) => {
                self.resamples += 1;
                self.asserted = false;
            }
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(gsi = self.gsi, "INTx resample failed: {e}");
                return;
            }
        }
        self.reconcile(dev, blocked);
    }

    /// State for the status socket.
    pub fn status(&self) -> serde_json::Value {
        json!({
            "pin": self.pin,
            "gsi": self.gsi,
            "line": self.line.is_some(),
            "asserted": self.asserted,
            "device_masked": self.device_masked,
            "host_interrupts": self.host_interrupts,
            "forwarded": self.forwarded,
            "resamples": self.resamples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swizzle_matches_the_prt() {
        // 16 + ((slot + pin - 1) % 4), pin 1 = INTA.
        assert_eq!(guest_gsi(0, 1), Some(16));
        assert_eq!(guest_gsi(2, 1), Some(18));
        assert_eq!(guest_gsi(2, 3), Some(16));
        assert_eq!(guest_gsi(3, 4), Some(18));
        assert_eq!(guest_gsi(31, 4), Some(18));
        assert_eq!(guest_gsi(5, 0), None);
        assert_eq!(guest_gsi(5, 5), None);
        for slot in 0..32u8 {
            for pin in 1..=4u8 {
                let g = guest_gsi(slot, pin).unwrap();
                assert_eq!(
                    u32::from(g),
                    16 + (u32::from(slot) + u32::from(pin) - 1) % 4
                );
            }
        }
    }
}
