//! The device API: what a device model implements, and the *actions* it hands back.
//!
//! A device is a pure state machine. The server loop decodes each ioreq into single accesses
//! (one item of `size` bytes at one address; `count > 1`, `df` and `data_is_ptr` are unrolled by
//! the loop) and calls [`Device::read`] or [`Device::write`]. The device answers with a value and
//! pushes side effects as [`Action`]s; the server carries them out through the transport. A
//! device never talks to the hypervisor and never knows whether it runs on Xen or on xen-sim.
//!
//! Guarantees the loop gives every device, so that devices can stay simple:
//! - `size` is 1, 2, 4 or 8 (8 only for [`Space::Memory`]); other sizes never reach a device;
//! - the whole access `[addr, addr + size)` lies inside one range the device registered;
//! - write data is already masked to `size` bytes.
//!
//! Devices must still treat every value as hostile: any offset inside their ranges, any order.

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

pub use xen_abi::dmop::Space;

/// An inclusive range of one address space, as Xen registers it (`start..=end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Range {
    /// Address space.
    pub space: Space,
    /// First address (port, guest-physical address or SBDF).
    pub start: u64,
    /// Last address, inclusive.
    pub end: u64,
}

impl Range {
    /// A range of `len` addresses starting at `start` (`len` must be at least 1; a range that
    /// would run past the top of the address space ends there).
    pub fn new(space: Space, start: u64, len: u64) -> Self {
        Range {
            space,
            start,
            end: start.saturating_add(len.max(1) - 1),
        }
    }

    /// A single PCI function, claimed by its SBDF.
    pub fn pci_function(sbdf: u32) -> Self {
        Range {
            space: Space::PciConfig,
            start: sbdf as u64,
            end: sbdf as u64,
        }
    }

    /// Whether `[addr, addr + len)` lies entirely inside this range.
    pub fn contains_span(&self, addr: u64, len: u64) -> bool {
        len > 0
            && addr >= self.start
            && addr
                .checked_add(len - 1)
                .is_some_and(|last| last <= self.end)
    }
}

/// Why a guest is shut down: one type with the supervisor's (`xen_abi::ShutdownReason`).
/// A device asks only for `Poweroff`, `Reboot`, `Suspend` or `Crash`.
pub use xen_abi::ShutdownReason;

/// A device's answer to a control-socket command ([`Device::control`]): `None` for a command
/// it does not know, else the reply or an error the client reads.
pub type ControlReply = Option<Result<serde_json::Value, String>>;

/// A side effect a device asks for whose failure the device need not know: the server carries
/// it out through the transport; a failing action is retried with backoff and, if it can never
/// be delivered, the process exits non-zero so that the launcher notices.
///
/// Effects Xen can refuse or do partly (map a BAR, bind a vector, assign a device) are not
/// actions: a device makes them as synchronous calls on a
/// [`PassthroughExecutor`](crate::executor::PassthroughExecutor) and acts on the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `XEN_DMOP_inject_msi`: deliver an MSI to the guest's local APIC.
    InjectMsi {
        /// MSI address (0xFEExxxxx: destination in bits 19:12, destination mode bit 2).
        addr: u64,
        /// MSI data (vector bits 7:0, delivery mode 10:8, trigger 15).
        data: u32,
    },
    /// `XEN_DMOP_remote_shutdown`: end the guest with this reason.
    Shutdown {
        /// Why.
        reason: ShutdownReason,
    },
}

/// The list a device pushes its actions into during one access.
#[derive(Debug, Default)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask for a side effect.
    pub fn push(&mut self, action: Action) {
        self.0.push(action);
    }
    /// Whether nothing was asked for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The actions asked for so far, in order.
    pub fn as_slice(&self) -> &[Action] {
        &self.0
    }
    /// Take all actions out, leaving the list empty.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.0.drain(..)
    }
}

/// What a device model implements.
pub trait Device {
    /// A short name for logs and the status socket (`"pm-trap"`, `"ioapic"`, ...).
    fn name(&self) -> &str;

    /// The ranges this device claims. Called once at setup; the server registers them with the
    /// hypervisor and routes every access inside them here.
    fn ranges(&self) -> Vec<Range>;

    /// A read of `size` bytes at `addr` (see the module docs for what the loop guarantees).
    /// The returned value is masked to `size` bytes by the caller.
    fn read(&mut self, space: Space, addr: u64, size: u8, actions: &mut Actions) -> u64;

    /// A write of `size` bytes of `data` at `addr`.
    fn write(&mut self, space: Space, addr: u64, size: u8, data: u64, actions: &mut Actions);

    /// Extra file descriptors the device wants watched for readability (pin eventfds, a
    /// device-specific socket). Asked again after every [`Device::on_event`].
    fn event_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// One of [`Device::event_fds`] became readable.
    fn on_event(&mut self, _fd: RawFd, _actions: &mut Actions) {}

    /// A JSON value with device-specific state for the status socket.
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Called once when the server is set up and its ranges are registered, before the guest
    /// is let run (device assignment, permissions). An error stops the setup: the server then
    /// calls [`Device::stop`] of every device whose `start` ran (this one included, so that
    /// `stop` must undo a partial `start`) and destroys itself.
    fn start(&mut self, _actions: &mut Actions) -> Result<(), String> {
        Ok(())
    }

    /// Called once at teardown, before the server is destroyed: undo what `start` and the
    /// guest's programming did (unmap BARs, unbind interrupts, deassign, hand back).
    fn stop(&mut self, _actions: &mut Actions) {}

    /// A device-specific control-socket command (`{"cmd": NAME, ...}`), e.g. `snapshot`.
    /// `None` means the device does not know the command.
    fn control(&mut self, _cmd: &str, _request: &serde_json::Value) -> ControlReply {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_at_the_top_of_the_address_space_does_not_overflow() {
        let r = Range::new(Space::Memory, u64::MAX - 3, 16);
        assert_eq!(r.end, u64::MAX);
        assert!(r.contains_span(u64::MAX - 3, 4));
        assert!(!r.contains_span(u64::MAX, 2));
        assert_eq!(Range::new(Space::Port, 0xB004, 2).end, 0xB005);
    }
}
