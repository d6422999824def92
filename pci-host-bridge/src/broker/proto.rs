//! The broker's whole interface: one request enum, one reply enum, versioned, serde-encoded
//! (JSON, one message per `SOCK_SEQPACKET` datagram). Every request gets exactly one reply.

use crate::backend::LearnedAtOpen;
use serde::{Deserialize, Serialize};
use xen_abi::passthrough::PtOp;
use xen_abi::DomId;

/// The protocol version; a request of another version is answered with
/// [`Reply::Refused`] and not looked at further.
pub const VERSION: u32 = 1;

/// Largest encoded message either side sends or accepts (a 4 KiB config read encodes to
/// about 16 KiB of JSON).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A request with its envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`VERSION`].
    pub version: u32,
    /// The worker's sequence number, echoed in the reply.
    pub seq: u64,
    /// The request.
    pub req: Request,
}

/// A sysfs operation on a host function (the privileged half of the backend's lifecycle,
/// [`crate::backend::HostDevice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SysfsOp {
    /// `enable` = 1 ([`crate::backend::HostDevice::enable_decode`]).
    EnableDecode,
    /// `enable` = 0.
    DisableDecode,
    /// `reset`.
    Reset,
    /// `driver/unbind` of dom0's driver.
    DetachDriver,
    /// `drivers_probe`.
    ReprobeDriver,
}

/// Everything the worker may ask. Host functions are named by `sbdf`
/// (`seg << 16 | bus << 8 | devfn`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// One passthrough hypercall against `domid` ([`ioreq_server::executor::PtChannel::call`]).
    Hypercall {
        /// The guest; must be the broker's.
        domid: DomId,
        /// The operation.
        op: PtOp,
    },
    /// Read `len` bytes of the function's config space at `offset`.
    ConfigRead {
        /// The host function.
        sbdf: u32,
        /// Byte offset.
        offset: u16,
        /// Bytes (1..=4096).
        len: u16,
    },
    /// One config write of 1, 2 or 4 naturally aligned bytes.
    ConfigWrite {
        /// The host function.
        sbdf: u32,
        /// Byte offset.
        offset: u16,
        /// The bytes (little endian).
        data: Vec<u8>,
    },
    /// One access of exactly `len` (1, 2, 4, 8) bytes inside BAR `bar` (6 = ROM).
    BarRead {
        /// The host function.
        sbdf: u32,
        /// BAR index.
        bar: u8,
        /// Offset in the BAR.
        offset: u64,
        /// Width.
        len: u8,
    },
    /// One write of `data` (1, 2, 4, 8 bytes) inside BAR `bar`.
    BarWrite {
        /// The host function.
        sbdf: u32,
        /// BAR index.
        bar: u8,
        /// Offset in the BAR.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A sysfs operation.
    Sysfs {
        /// The host function.
        sbdf: u32,
        /// What.
        op: SysfsOp,
    },
    /// What the backend says of the function ([`DeviceFacts`]).
    Facts {
        /// The host function.
        sbdf: u32,
    },
    /// A duplicate of the function's INTx notification fd, if it has one (answered with
    /// value 1 and the fd attached, or 0).
    IntxFd {
        /// The host function.
        sbdf: u32,
    },
    /// Consume the INTx notification ([`crate::backend::HostDevice::intx_ack`]).
    IntxAck {
        /// The host function.
        sbdf: u32,
    },
    /// The backend's state for the status socket ([`crate::backend::HostDevice::status`]).
    Status {
        /// The host function.
        sbdf: u32,
    },
}

/// What a host function's backend says about itself (none of it changes while the function
/// is assigned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    /// [`crate::backend::HostDevice::name`].
    pub name: String,
    /// The rest of what the backend learned when it opened the function.
    pub learned: LearnedAtOpen,
}

impl DeviceFacts {
    /// The facts of `dev`.
    pub fn of(dev: &dyn crate::backend::HostDevice) -> Self {
        DeviceFacts {
            name: dev.name(),
            learned: LearnedAtOpen::of(dev),
        }
    }
}

/// The one answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Done; for a hypercall its value ([`PtOp::decode_result`]), otherwise 0.
    Value {
        /// Echoed sequence number.
        seq: u64,
        /// The value.
        value: u64,
    },
    /// Bytes read.
    Bytes {
        /// Echoed sequence number.
        seq: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A sysfs operation's answer: `reset` had a method / the driver that was unbound.
    Sysfs {
        /// Echoed sequence number.
        seq: u64,
        /// `reset`: whether the function had a reset method.
        done: bool,
        /// `detach_driver`: the driver unbound.
        driver: Option<String>,
    },
    /// The answer to [`Request::Facts`].
    Facts {
        /// Echoed sequence number.
        seq: u64,
        /// The facts.
        facts: DeviceFacts,
    },
    /// The answer to [`Request::Status`]: JSON text.
    Status {
        /// Echoed sequence number.
        seq: u64,
        /// The backend's status, as JSON.
        json: String,
    },
    /// Xen answered with this (positive) errno.
    Errno {
        /// Echoed sequence number.
        seq: u64,
        /// What was done.
        what: String,
        /// The errno.
        errno: i32,
    },
    /// The operation was attempted and failed (not an answer from Xen).
    Failed {
        /// Echoed sequence number.
        seq: u64,
        /// Why.
        message: String,
    },
    /// The broker refused the request: nothing was executed.
    Refused {
        /// Echoed sequence number (0 when the request could not be decoded).
        seq: u64,
        /// Why.
        reason: String,
    },
}

impl Reply {
    /// The sequence number the reply answers.
    pub fn seq(&self) -> u64 {
        match self {
            Reply::Value { seq, .. }
            | Reply::Bytes { seq, .. }
            | Reply::Sysfs { seq, .. }
            | Reply::Facts { seq, .. }
            | Reply::Status { seq, .. }
            | Reply::Errno { seq, .. }
            | Reply::Failed { seq, .. }
            | Reply::Refused { seq, .. } => *seq,
        }
    }
}

/// Encode a message.
pub fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    serde_json::to_vec(m).expect("broker messages always serialize")
}

/// Decode a message.
pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("undecodable broker message: {e}"))
}
