//! The ioreq-server library: Xen's ioreq protocol for device-model processes.
//!
//! - [`abi`]: every Xen and Linux structure and number the project uses;
//! - [`dmop`]: DM ops as data and their exact byte encoding;
//! - [`device`]: the device API (a state machine returning actions);
//! - [`passthrough`]: passthrough domctls/physdev ops as data, Xen 4.17 encodings;
//!   [`executor`]: their synchronous executor, the one owner of what is set up in Xen;
//! - [`shared`]: the shared ioreq and buffered pages (the only shared-memory code);
//! - [`transport`]: one trait, two implementations (`xen` and `sim`);
//! - [`server`]: the event loop that serves devices over a transport;
//! - [`config`]: the per-guest TOML configuration; [`control`]: the status socket;
//! - [`irq_line`]: the interrupt-line protocol between an interrupt source and the IOAPIC.
//!
//! All `unsafe` code of the project lives in this crate, each block with a `SAFETY` comment.
#![deny(missing_docs)]

pub mod abi;
pub mod cli;
pub mod config;
pub mod control;
pub mod device;
pub mod dmop;
pub mod executor;
pub mod irq_line;
pub mod passthrough;
pub mod ratelimit;
pub mod sandbox;
pub mod seqpacket;
pub mod server;
pub mod shared;
pub mod signals;
pub mod socket_access;
pub mod transport;
