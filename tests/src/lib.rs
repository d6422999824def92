//! Helpers for the cross-process integration tests: a scratch device (the test device model's
//! state machine) and a harness that starts xen-sim in-process and device-model processes.
#![deny(missing_docs)]

pub mod fleet;
pub mod harness;
pub mod scratch;
