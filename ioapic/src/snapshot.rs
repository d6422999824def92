//! Snapshot of the whole IOAPIC state (for save/restore and live update), as serde data.

use serde::{Deserialize, Serialize};

use crate::chip::IoapicError;

/// The snapshot format this crate writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// The whole state of an [`crate::Ioapic`].
///
/// Pin inputs are included: they are part of the state (a level pin asserted and waiting for
/// its EOI). The connections of interrupt sources are not: sources reconnect to the restored
/// process and assert again; an input restored as asserted is released by the next EOI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Format version, [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// IOAPIC version register value (0x11 or 0x20).
    pub version: u8,
    /// Number of pins.
    pub pins: u8,
    /// APIC ID (4 bits).
    pub id: u8,
    /// IOREGSEL.
    pub ioregsel: u8,
    /// The 64-bit redirection entries, one per pin (Remote IRR included).
    pub entries: Vec<u64>,
    /// Polarity-adjusted input level, one per pin.
    pub asserted: Vec<bool>,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The format version is not one this crate reads.
    #[error("snapshot format {found} is not supported (expected {expected})")]
    Format {
        /// In the snapshot.
        found: u32,
        /// What this crate reads.
        expected: u32,
    },
    /// The IOAPIC version is neither 0x11 nor 0x20.
    #[error("snapshot IOAPIC version {0:#x} is not 0x11 or 0x20")]
    Version(u8),
    /// Pin count or ID out of range.
    #[error("snapshot: {0}")]
    Invalid(IoapicError),
    /// A per-pin list does not have one element per pin.
    #[error("snapshot field {field} has {found} elements for {pins} pins")]
    Length {
        /// The field.
        field: &'static str,
        /// Its length.
        found: usize,
        /// The pin count.
        pins: usize,
    },
    /// A redirection entry the device can never hold (reserved bits, delivery status, or
    /// Remote IRR on an edge entry).
    #[error("snapshot entry of pin {pin} is invalid: {raw:#018x}")]
    Entry {
        /// The pin.
        pin: u8,
        /// The entry.
        raw: u64,
    },
    /// The snapshot does not fit the configured device.
    #[error("snapshot {field} is {found}, the device is configured with {configured}")]
    Mismatch {
        /// `pins` or `version`.
        field: &'static str,
        /// In the snapshot.
        found: u32,
        /// In the configuration.
        configured: u32,
    },
}
