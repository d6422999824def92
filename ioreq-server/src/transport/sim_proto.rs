//! The wire protocol between a device-model process (the `sim` transport) and xen-sim.
//!
//! A `SOCK_SEQPACKET` Unix socket; each message is one JSON object, file descriptors ride
//! along with `SCM_RIGHTS`. The client sends a [`SimRequest`] and waits for exactly one
//! [`SimReply`]. Requests mirror the real interfaces one for one: DM ops carry the very bytes
//! of `struct xen_dm_op`, resources come back as a memfd holding the frames, event channels as
//! an eventfd pair, guest memory as a memfd of guest RAM.

use serde::{Deserialize, Serialize};

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A request from a device model to xen-sim.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum SimRequest {
    /// First message: the guest this process serves, and a name for the sim's logs.
    Hello {
        /// Target domain.
        domid: u16,
        /// Process name, for logs.
        name: String,
    },
    /// `IOCTL_PRIVCMD_DM_OP` with one buffer: the bytes of `struct xen_dm_op`.
    DmOp {
        /// The buffer.
        buf: Vec<u8>,
    },
    /// `IOCTL_PRIVCMD_MMAP_RESOURCE` of the ioreq-server resource. Reply: `value` = offset
    /// of the first frame in the memfd passed along.
    MapResource {
        /// Server id.
        id: u16,
        /// First frame.
        frame: u64,
        /// Number of frames.
        nr: u64,
    },
    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN`. Reply: `value` = local port; fds = [to_dm, to_xen]
    /// eventfds (the sim signals `to_dm`; the client writes `to_xen` to notify).
    BindInterdomain {
        /// The guest-side port.
        remote_port: u32,
    },
    /// `IOCTL_EVTCHN_UNBIND`.
    Unbind {
        /// Local port.
        port: u32,
    },
    /// Guest RAM as a memfd (the sim's `IOCTL_PRIVCMD_MMAPBATCH_V2`). Reply: `value` = size.
    GuestMemory,
    /// A passthrough hypercall (`IOCTL_PRIVCMD_HYPERCALL` on Xen). Reply: `rc` < 0 for an
    /// error; else `value` = what [`xen_abi::passthrough::PtOp::decode_result`] gives on Xen (the
    /// pirq of `map_pirq_msi`, the partial count of `memory_mapping`, `max_pages` of
    /// `get_domain_info`; absent means 0).
    Passthrough {
        /// The operation.
        op: xen_abi::passthrough::PtOp,
    },
    /// `IOCTL_PRIVCMD_RESTRICT` + `IOCTL_EVTCHN_RESTRICT_DOMID`.
    Restrict,
}

/// xen-sim's answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SimReply {
    /// 0, or a negative errno as Xen (or the kernel) would return it.
    pub rc: i32,
    /// The DM op buffer after the hypervisor wrote its outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buf: Option<Vec<u8>>,
    /// A request-specific value (see [`SimRequest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
}
