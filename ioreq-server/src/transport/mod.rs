//! One transport trait, two implementations: [`xen`] (the real hypervisor through
//! /dev/xen/privcmd and /dev/xen/evtchn) and [`sim`] (xen-sim over a Unix socket). The server
//! loop is generic over [`Transport`] and cannot tell them apart: both hand out the same page
//! layout ([`crate::shared`]) and the same event-channel semantics (a pending port is read once,
//! which also unmasks it; `notify` signals the hypervisor side).
//!
//! Waiting is the transport's: [`Transport::wait`] blocks until a guest port is pending or a
//! [`Waker`] (handed out by [`Transport::waker`], usable from another thread) fired. On Xen
//! that is one blocking `read()` of /dev/xen/evtchn, the waker being a loopback event channel
//! on the same fd, so that an ioreq costs read + unmask write + notify ioctl and nothing else.

use crate::shared::Mapping;
use xen_abi::dmop::{DmOp, DmOpOutput};
use xen_abi::{DomId, IoservId};

pub mod sim;
pub mod sim_proto;
pub mod xen;

/// Which transport a process uses.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// /dev/xen/privcmd and /dev/xen/evtchn on a Xen dom0 (the default).
    #[default]
    Xen,
    /// xen-sim, the simulated hypervisor, over its Unix socket.
    Sim,
}

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A device node or socket does not exist.
    #[error("{path} does not exist: {hint}")]
    Missing {
        /// The missing path.
        path: String,
        /// What to do about it.
        hint: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The hypervisor refused an operation (negative errno, as Xen returns it).
    #[error("{what} failed: {}", errno_name(*.errno))]
    Hypervisor {
        /// The operation.
        what: String,
        /// The positive errno value.
        errno: i32,
    },
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl TransportError {
    /// Wrap an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        TransportError::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// `EPERM (1)`-style rendering of an errno.
pub fn errno_name(errno: i32) -> String {
    format!("{} ({errno})", nix::errno::Errno::from_raw(errno).desc())
}

/// Makes a blocked [`Transport::wait`] return (`true`); wakes coalesce.
pub trait Waker: Send + Sync {
    /// Wake the waiting thread (or the next `wait`, if none is waiting).
    fn wake(&self) -> Result<(), TransportError>;
}

/// What the server loop needs from a hypervisor.
pub trait Transport {
    /// The guest this transport serves.
    fn domid(&self) -> DomId;

    /// Issue one DM op for the guest.
    fn dm_op(&mut self, op: &DmOp) -> Result<DmOpOutput, TransportError>;

    /// Map `nr` frames of the ioreq-server resource of server `id`, starting at frame `idx`
    /// (`XENMEM_resource_ioreq_server`: frame 0 = buffered page, 1.. = ioreq pages).
    fn map_resource(&mut self, id: IoservId, idx: u64, nr: u64) -> Result<Mapping, TransportError>;

    /// Bind a local event channel to the guest's `remote_port`; returns the local port.
    fn bind_interdomain(&mut self, remote_port: u32) -> Result<u32, TransportError>;

    /// Unbind a local port (teardown).
    fn unbind(&mut self, local_port: u32) -> Result<(), TransportError>;

    /// A handle that makes [`Transport::wait`] return from another thread. Called once, at
    /// setup, before [`Transport::restrict`] (on Xen it binds a loopback event channel, which
    /// a restricted handle may no longer do).
    fn waker(&mut self) -> Result<Box<dyn Waker>, TransportError>;

    /// Block until at least one bound port is pending or the [`Waker`] fired; append the
    /// pending guest ports to `out` (already unmasked) and return whether the waker fired.
    /// May return spuriously (nothing in `out`, `false`); after an event-ring overflow every
    /// bound port is reported and the return is `true`.
    fn wait(&mut self, out: &mut Vec<u32>) -> Result<bool, TransportError>;

    /// Signal the hypervisor side of a local port.
    fn notify(&mut self, local_port: u32) -> Result<(), TransportError>;

    /// Map one page of guest memory (for `data_is_ptr` requests).
    fn map_guest_page(&mut self, gfn: u64) -> Result<Mapping, TransportError>;

    /// One passthrough domctl or physdev op, exactly once (no retry, no loop): its value as
    /// [`xen_abi::passthrough::PtOp::decode_result`] reads it (the pirq of `map_pirq_msi`, the
    /// positive partial count of `memory_mapping`, ...). A negative return is
    /// [`TransportError::Hypervisor`] with the errno.
    fn passthrough(&mut self, op: &xen_abi::passthrough::PtOp) -> Result<u64, TransportError>;

    /// Restrict the process's hypervisor handles to the guest (irreversible). After this,
    /// only DM ops, resource/guest mappings and event channels for this guest work.
    fn restrict(&mut self) -> Result<(), TransportError>;
}
