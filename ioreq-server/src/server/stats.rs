//! Counters for the status socket.

use serde::Serialize;

use xen_abi::*;

/// Requests served, by ioreq type.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ByType {
    /// `IOREQ_TYPE_PIO`.
    pub pio: u64,
    /// `IOREQ_TYPE_COPY` (MMIO).
    pub mmio: u64,
    /// `IOREQ_TYPE_PCI_CONFIG`.
    pub pci_config: u64,
    /// `IOREQ_TYPE_INVALIDATE`.
    pub invalidate: u64,
    /// `IOREQ_TYPE_TIMEOFFSET`.
    pub timeoffset: u64,
    /// Any other type (answered as a bad request).
    pub unknown: u64,
}

impl ByType {
    /// Count one request of ioreq type `t`.
    pub fn count(&mut self, t: u8) {
        match t {
            IOREQ_TYPE_PIO => self.pio += 1,
            IOREQ_TYPE_COPY => self.mmio += 1,
            IOREQ_TYPE_PCI_CONFIG => self.pci_config += 1,
            IOREQ_TYPE_INVALIDATE => self.invalidate += 1,
            IOREQ_TYPE_TIMEOFFSET => self.timeoffset += 1,
            _ => self.unknown += 1,
        }
    }
}

/// All counters of one server process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Synchronous requests by type.
    pub ioreqs_by_type: ByType,
    /// Synchronous requests by vCPU.
    pub ioreqs_by_vcpu: Vec<u64>,
    /// Requests taken from the buffered ring.
    pub buffered: u64,
    /// Requests answered as bad (all-ones / dropped).
    pub bad_requests: u64,
    /// Accesses that no registered range holds (answered like Xen's null handler).
    pub unclaimed: u64,
    /// Event-channel wakeups.
    pub wakeups: u64,
    /// Actions carried out.
    pub actions_done: u64,
    /// Action attempts that failed (each retry counts).
    pub actions_failed: u64,
}
