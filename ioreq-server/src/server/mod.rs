//! The ioreq server: setup in the documented order, the event loop, teardown.
//!
//! Setup (xen-abi.md 7.1): nr_vcpus, create_ioreq_server, map the resource frames, get_info
//! with `no_gfns`, enable, bind each vCPU's `vp_eport` (and the buffered port), register the
//! ranges, restrict. Any failure after create destroys the server again.
//!
//! Loop (7.2): the main thread blocks in [`Transport::wait`] and nowhere else; on Xen that is
//! a plain blocking `read()` of /dev/xen/evtchn, which returns the pending ports, unmasked at
//! once with one `write()`. It then scans *every* vCPU slot for READY (ports coalesce),
//! dispatches, writes `data`, releases IORESP_READY and notifies (`IOCTL_EVTCHN_NOTIFY`), and
//! drains the buffered ring: read, write, ioctl per ioreq, no poll call. The signalfd, the
//! control socket and its clients, the devices' fds and the action-retry timer are watched by
//! a second thread ([`watch`]) in its own edge-triggered epoll set. Its fds are created at
//! setup and the thread when the loop starts: after setup (a sandbox may be in place) the loop
//! creates a thread, but no epoll set, eventfd or timer, and the thread inherits the sandbox.
//! When one of its fds is ready it fires the transport's [`Waker`](crate::transport::Waker)
//! (on Xen a loopback event channel on the same evtchn fd, bound before `restrict`), `wait`
//! returns "woken", and the main thread handles those fds without blocking. Devices, control
//! clients and slots are only touched by the main thread. No timer runs while idle: the retry
//! timerfd is armed only while a failed action waits for its retry, and both threads sleep
//! without a timeout. The watcher thread is stopped and joined when the loop ends, by return,
//! error or panic, before teardown answers what is posted (a request whose handling a panic
//! cut short included).
//!
//! Teardown (7.3): disable, answer what is posted, stop the devices, answer again, destroy,
//! unmap, unbind, close; also on SIGTERM/SIGINT.

mod actions;
pub mod dispatch;
mod event_loop;
pub mod guest_mem;
pub mod ranges;
mod setup;
mod slots;
pub mod stats;
mod teardown;
pub mod watch;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::Token;

use crate::control::ControlServer;
use crate::device::Action;
use crate::shared::{BufferedPage, IoreqPage};
use crate::transport::{Transport, TransportError};
use dispatch::Dispatcher;
use watch::Watcher;
use xen_abi::*;

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Name for logs and the status socket.
    pub name: String,
    /// `HVM_IOREQSRV_BUFIOREQ_*`: OFF unless something needs the buffered ring.
    pub bufioreq: u8,
    /// Restrict privcmd/evtchn to the guest after setup (only for processes that need no
    /// other hypercall).
    pub restrict: bool,
    /// Where to listen for status/shutdown commands (None: no control socket).
    pub control_path: Option<PathBuf>,
    /// Who may connect to the control socket (`[control] group`).
    pub control_access: crate::socket_access::SocketAccess,
    /// Handle SIGTERM/SIGINT through a signalfd (binaries: yes; in-process tests: no).
    pub handle_signals: bool,
    /// Retries of a failing action before the process gives up.
    pub action_retries: u32,
    /// First retry delay; doubles each time.
    pub retry_delay: Duration,
}

impl ServerOptions {
    /// The defaults (restricted handles after setup, signals handled, no buffered ring) for
    /// the process `name`.
    pub fn named(name: &str) -> Self {
        ServerOptions {
            name: name.into(),
            ..Default::default()
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            name: "ioreq-server".into(),
            bufioreq: HVM_IOREQSRV_BUFIOREQ_OFF,
            restrict: true,
            control_path: None,
            control_access: crate::socket_access::SocketAccess::PRIVATE,
            handle_signals: true,
            action_retries: 8,
            retry_delay: Duration::from_millis(10),
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Talking to the hypervisor failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Devices of this process claimed overlapping ranges.
    #[error(transparent)]
    Overlap(#[from] ranges::Overlap),
    /// An action could not be carried out even after retries.
    #[error("giving up on {action:?} after {attempts} attempts: {last}")]
    ActionFailed {
        /// The action.
        action: Action,
        /// How often it was tried.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// A local system call failed.
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    /// The hypervisor reported something impossible.
    #[error("{0}")]
    Setup(String),
}

struct Pending {
    action: Action,
    attempts: u32,
    due: Instant,
    last: String,
}

/// A running ioreq server for one guest.
pub struct Server<T: Transport> {
    transport: T,
    opts: ServerOptions,
    id: IoservId,
    vcpus: u32,
    /// The shared pages; `None` once unmapped at teardown.
    ioreq: Option<IoreqPage>,
    buffered: Option<BufferedPage>,
    /// local port of each vCPU.
    ports: Vec<u32>,
    buf_port: Option<u32>,
    /// The dispatcher (public for in-process benchmarks and fuzzing).
    pub dispatcher: Dispatcher,
    control: Option<ControlServer>,
    signals: Option<nix::sys::signalfd::SignalFd>,
    /// The watcher (its fds created at setup; the event loop takes it and starts its thread,
    /// which dropping it stops and joins).
    watch: Option<Watcher>,
    retries: VecDeque<Pending>,
    started: Instant,
    torn_down: bool,
    stop: bool,
}

const TOKEN_SIGNAL: Token = Token(0);
const TOKEN_CONTROL: Token = Token(1);
// Token(2) and Token(3) are the watcher's (the retry timer, its stop eventfd).
const TOKEN_DEVICE_BASE: usize = 1 << 20;
const TOKEN_CLIENT_BASE: usize = 1 << 24;

impl<T: Transport> Server<T> {
    /// The server id Xen gave us.
    pub fn id(&self) -> IoservId {
        self.id
    }

    /// The transport (for tests).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Ask the loop to stop after the current iteration.
    pub fn request_stop(&mut self) {
        self.stop = true;
    }

    /// Serve until SIGTERM/SIGINT, a control-socket `shutdown`, or a fatal error; then tear
    /// down. A fatal error is returned after teardown.
    pub fn run(mut self) -> Result<(), ServerError> {
        let r = self.run_loop();
        self.teardown();
        r
    }

    /// The status object served on the control socket.
    pub fn status(&self) -> serde_json::Value {
        let ranges: Vec<_> = self.dispatcher.ranges.iter().map(|(r, d)| {
            serde_json::json!({"space": r.space, "start": r.start, "end": r.end, "device": self.dispatcher.devices[*d].name()})
        }).collect();
        serde_json::json!({
            "name": self.opts.name,
            "domid": self.transport.domid(),
            "server_id": self.id,
            "vcpus": self.vcpus,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "ranges": ranges,
            "stats": self.dispatcher.stats,
            "pending_actions": self.retries.len(),
            "guest_pages_mapped": self.dispatcher.guest_mem.cached(),
            "devices": self.dispatcher.devices.iter().map(|d| serde_json::json!({"name": d.name(), "state": d.status()})).collect::<Vec<_>>(),
        })
    }
}

impl<T: Transport> Drop for Server<T> {
    fn drop(&mut self) {
        self.teardown();
    }
}
