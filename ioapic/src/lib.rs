//! The IOAPIC device model for a Xen PVH guest.
//!
//! - [`regs`]: the register layout as data (82093AA datasheet, ICH EOI register);
//! - [`chip`]: the state machine ([`Ioapic`]): MMIO window, redirection table, Remote IRR and
//!   EOI, pin inputs, delivery as MSIs (level entries are sent as edge MSIs, see
//!   [`Msi::from_entry`]);
//! - [`device`]: [`IoapicDevice`], the ioreq-server [`ioreq_server::device::Device`] with pin
//!   inputs from other processes over `irq_line`;
//! - [`snapshot`]: save and restore of the whole state;
//! - [`config`]: the `[ioapic]` section of the per-guest configuration;
//! - [`cli`]: the binary's command line;
//! - [`check`]: invariant checkers shared by the fuzz targets and the randomized tests.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "testing"))]
pub mod check;
pub mod chip;
pub mod cli;
pub mod config;
pub mod device;
/// The shared guest-warning rate limiter.
pub(crate) use ioreq_server::ratelimit;
pub mod regs;
pub mod snapshot;

pub use chip::{Ioapic, IoapicError, IrqOutput, Msi, Version};
pub use config::{ConfigError, IoapicConfig};
pub use device::{DeviceError, IoapicDevice};
pub use snapshot::{Snapshot, SnapshotError, SNAPSHOT_FORMAT};
