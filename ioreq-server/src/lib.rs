//! The ioreq-server library: Xen's ioreq protocol for device-model processes.
//!
//! - [`abi`]: every Xen and Linux structure and number the project uses;
//! - [`dmop`]: DM ops as data and their exact byte encoding;
//! - [`device`]: the device API (a state machine returning actions);
//! - [`transport`]: one trait, two implementations (`xen` and `sim`);
//! - [`server`]: the event loop that serves a device over a transport;
//! - [`config`]: the per-guest TOML configuration; [`control`]: the status socket.
#![deny(missing_docs)]

pub mod abi;
pub mod device;
pub mod dmop;
pub mod irq_line;
