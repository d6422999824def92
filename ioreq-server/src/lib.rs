//! The ioreq-server library: Xen's ioreq protocol for device-model processes.
//!
//! - the Xen and Linux ABI, DM ops and passthrough ops as data with their encodings are the
//!   `xen-abi` crate's ([`xen_abi`], [`xen_abi::dmop`], [`xen_abi::passthrough`]); users import
//!   it directly, this crate does not re-export it;
//! - [`device`]: the device API (a state machine returning actions);
//! - [`executor`]: the synchronous executor of passthrough ops, the one owner of what is set
//!   up in Xen;
//! - [`shared`]: the shared ioreq and buffered pages (the only shared-memory code);
//! - [`transport`]: one trait, two implementations (`xen` and `sim`);
//! - [`server`]: the event loop that serves devices over a transport;
//! - [`config`]: the per-guest TOML configuration; [`control`]: the status socket;
//! - [`socket_access`]: who may connect to a device model's sockets; [`seqpacket`]: messages
//!   with fds, and the fd-receiving half of the `irq-line` crate's stream protocol (the
//!   interrupt-line protocol between an interrupt source and the IOAPIC, which depends on
//!   this crate and not the other way round).
//!
//! `unsafe` code lives in this crate only (xen-abi and irq-line forbid it), each block with a
//! `SAFETY` comment.
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod control;
pub mod device;
pub mod executor;
pub mod ratelimit;
pub mod sandbox;
pub mod seqpacket;
pub mod server;
pub mod shared;
pub mod signals;
pub mod socket_access;
pub mod transport;
