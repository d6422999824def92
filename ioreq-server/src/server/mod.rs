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

pub mod dispatch;
pub mod guest_mem;
pub mod ranges;
pub mod stats;
pub mod watch;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tracing::{debug, error, info, warn};

use crate::control::ControlServer;
use crate::device::{Action, Actions, Device, Range};
use crate::shared::{BufferedPage, IoreqPage, SLOTS_PER_PAGE};
use crate::transport::{Transport, TransportError};
use dispatch::Dispatcher;
use ranges::RangeTable;
use watch::{Watcher, TOKEN_TIMER};
use xen_abi::dmop::DmOp;
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
    /// Set up an ioreq server for `devices` on `transport` (steps 2-9 of the setup order).
    pub fn setup(
        mut transport: T,
        devices: Vec<Box<dyn Device>>,
        opts: ServerOptions,
    ) -> Result<Self, ServerError> {
        let mut table = RangeTable::default();
        let mut all: Vec<Range> = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            for r in d.ranges() {
                table.insert(r, i)?;
                all.push(r);
            }
        }
        // SIGTERM/SIGINT are blocked and queued from the very start, so that a signal during
        // setup (a device reset can take seconds) tears down what exists instead of killing
        // the process with an ioreq server, an assignment and permissions left behind.
        if let Some(p) = &opts.control_path {
            ControlServer::check_free(p).map_err(|e| ServerError::Io("control socket", e))?;
        }
        let signals = if opts.handle_signals {
            Some(crate::signals::signalfd().map_err(|e| ServerError::Io("signalfd", e))?)
        } else {
            None
        };
        let vcpus = transport
            .dm_op(&DmOp::NrVcpus)?
            .vcpus
            .ok_or_else(|| ServerError::Setup("nr_vcpus returned nothing".into()))?;
        if vcpus == 0 || vcpus as usize > SLOTS_PER_PAGE {
            return Err(ServerError::Setup(format!(
                "guest has {vcpus} vCPUs; this server maps one ioreq frame ({SLOTS_PER_PAGE} vCPUs at most, as Xen serves today)"
            )));
        }
        let id = transport
            .dm_op(&DmOp::CreateIoreqServer {
                handle_bufioreq: opts.bufioreq,
            })?
            .id
            .ok_or_else(|| ServerError::Setup("create_ioreq_server returned no id".into()))?;
        info!(
            server = id,
            vcpus,
            domid = transport.domid(),
            "ioreq server created"
        );
        // From here on, failures must destroy the server again.
        match Self::finish_setup(transport, id, vcpus, table, all, devices, opts, signals) {
            Ok(s) => Ok(s),
            Err((mut t, e)) => {
                if let Err(e2) = t.dm_op(&DmOp::DestroyIoreqServer { id }) {
                    warn!("destroying server {id} after a failed setup also failed: {e2}");
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn finish_setup(
        mut t: T,
        id: IoservId,
        vcpus: u32,
        table: RangeTable,
        all: Vec<Range>,
        devices: Vec<Box<dyn Device>>,
        opts: ServerOptions,
        mut signals: Option<nix::sys::signalfd::SignalFd>,
    ) -> Result<Self, (T, ServerError)> {
        macro_rules! tryt {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err((t, ServerError::from(e))),
                }
            };
        }
        let ioreq_map = tryt!(t.map_resource(id, xenmem_resource_ioreq_server_frame_ioreq(0), 1));
        let ioreq = match IoreqPage::new(ioreq_map, vcpus) {
            Ok(p) => p,
            Err(e) => return Err((t, ServerError::Io("ioreq page", e))),
        };
        let buffered = if opts.bufioreq != HVM_IOREQSRV_BUFIOREQ_OFF {
            let m = tryt!(t.map_resource(id, XENMEM_RESOURCE_IOREQ_SERVER_FRAME_BUFIOREQ, 1));
            Some(match BufferedPage::new(m) {
                Ok(p) => p,
                Err(e) => return Err((t, ServerError::Io("buffered page", e))),
            })
        } else {
            None
        };
        let info = tryt!(t.dm_op(&DmOp::GetIoreqServerInfo {
            id,
            flags: XEN_DMOP_NO_GFNS
        }));
        tryt!(t.dm_op(&DmOp::SetIoreqServerState { id, enabled: true }));
        let mut ports = Vec::with_capacity(vcpus as usize);
        for v in 0..vcpus {
            let remote = ioreq.read(v).vp_eport;
            ports.push(tryt!(t.bind_interdomain(remote)));
        }
        let buf_port = match (&buffered, info.bufioreq_port) {
            (Some(_), Some(p)) if p != 0 => Some(tryt!(t.bind_interdomain(p))),
            _ => None,
        };
        for r in &all {
            tryt!(t.dm_op(&DmOp::MapIoRange {
                id,
                space: r.space,
                start: r.start,
                end: r.end
            }));
        }
        // Device setup actions (assignment, permissions) run before restricting the handles,
        // synchronously: a device that cannot be set up must not be served.
        let mut devices = devices;
        for i in 0..devices.len() {
            let mut actions = Actions::new();
            let mut r = devices[i].start(&mut actions);
            if let Some(sig) = signals
                .as_mut()
                .and_then(|s| s.read_signal().ok().flatten())
            {
                r = r.and(Err(format!(
                    "signal {} during setup: undoing what was set up",
                    sig.ssi_signo
                )));
            }
            let r = r
                .map_err(|e| format!("{}: {e}", devices[i].name()))
                .and_then(|()| {
                    actions.drain().try_for_each(|a| {
                        execute_action(&mut t, &a).map_err(|e| format!("{a:?}: {e}"))
                    })
                });
            if let Err(e) = r {
                // Undo what started, this device included (its stop undoes a partial start).
                for d in devices[..=i].iter_mut().rev() {
                    let mut actions = Actions::new();
                    d.stop(&mut actions);
                    for a in actions.drain() {
                        if let Err(e) = execute_action(&mut t, &a) {
                            warn!(action = ?a, "after a failed start: {e}");
                        }
                    }
                }
                return Err((t, ServerError::Setup(format!("device setup failed: {e}"))));
            }
        }
        // The waker before restricting: on Xen it binds a loopback event channel, which a
        // restricted evtchn handle may no longer do. The watcher's fds are created now too,
        // so that after setup (a sandbox may follow) the loop creates no epoll set or timer;
        // its thread starts with the loop.
        let waker = tryt!(t.waker());
        let watch = match Watcher::new(waker) {
            Ok(w) => w,
            Err(e) => return Err((t, ServerError::Io("watcher", e))),
        };
        if opts.restrict {
            tryt!(t.restrict());
            debug!("privcmd and evtchn restricted to domain {}", t.domid());
        }
        // The control socket appears last: once it answers, setup is complete.
        let control = match &opts.control_path {
            Some(p) => match ControlServer::bind(p, opts.control_access) {
                Ok(c) => Some(c),
                Err(e) => return Err((t, ServerError::Io("control socket", e))),
            },
            None => None,
        };
        info!(
            ranges = all.len(),
            "serving: {}",
            all.iter()
                .map(|r| format!("{:?} {:#x}-{:#x}", r.space, r.start, r.end))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Server {
            transport: t,
            id,
            vcpus,
            ioreq: Some(ioreq),
            buffered,
            ports,
            buf_port,
            dispatcher: Dispatcher::new(devices, table, vcpus),
            control,
            signals,
            watch: Some(watch),
            retries: VecDeque::new(),
            started: Instant::now(),
            torn_down: false,
            stop: false,
            opts,
        })
    }

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

    fn run_loop(&mut self) -> Result<(), ServerError> {
        // Dropped on every way out of here, a panic included: stops and joins the thread.
        let mut watch = self
            .watch
            .take()
            .ok_or_else(|| ServerError::Setup("the event loop ran before".into()))?;
        watch
            .start(&self.opts.name)
            .map_err(|e| ServerError::Io("watcher thread", e))?;
        if let Some(s) = &self.signals {
            watch
                .registry()
                .register(
                    &mut SourceFd(&s.as_raw_fd()),
                    TOKEN_SIGNAL,
                    Interest::READABLE,
                )
                .map_err(|e| ServerError::Io("register signalfd", e))?;
        }
        if let Some(c) = &mut self.control {
            c.register(watch.registry(), TOKEN_CONTROL)
                .map_err(|e| ServerError::Io("register control socket", e))?;
        }
        let mut dev_fds: Vec<RawFd> = Vec::new();
        self.sync_device_fds(watch.registry(), &mut dev_fds)?;
        let mut ready = Vec::new();
        let mut pending = Vec::new();
        // Requests may already be waiting (posted before we bound our ports).
        self.service(&mut pending)?;
        while !self.stop {
            // The only blocking call: guest ports and the watcher's wake-ups alike.
            let woken = self.transport.wait(&mut pending)?;
            if !pending.is_empty() {
                self.dispatcher.stats.wakeups += 1;
                self.service(&mut pending)?;
            }
            if woken {
                watch
                    .take_ready(&mut ready)
                    .map_err(|e| ServerError::Io("watcher", std::io::Error::other(e)))?;
                self.handle_ready(&ready, &mut watch, &mut dev_fds)?;
            }
            self.run_retries()?;
            // No system call unless the earliest retry changed (none at all while none waits).
            let due = self.retries.iter().map(|p| p.due).min();
            watch
                .set_deadline(due)
                .map_err(|e| ServerError::Io("retry timer", e))?;
        }
        Ok(())
    }

    /// Handle what the watcher found ready (on this thread: device and control state stay
    /// single-threaded).
    fn handle_ready(
        &mut self,
        ready: &[Token],
        watch: &mut Watcher,
        dev_fds: &mut Vec<RawFd>,
    ) -> Result<(), ServerError> {
        let mut device_events = Vec::new();
        for &t in ready {
            match t {
                TOKEN_SIGNAL => {
                    if let Some(sig) = self
                        .signals
                        .as_mut()
                        .and_then(|s| s.read_signal().ok().flatten())
                    {
                        info!(signal = sig.ssi_signo, "signal received, shutting down");
                        self.stop = true;
                    }
                }
                TOKEN_CONTROL => {
                    if let Some(c) = &mut self.control {
                        c.accept(watch.registry(), TOKEN_CLIENT_BASE);
                    }
                }
                TOKEN_TIMER => watch.timer_fired(),
                Token(t) if t >= TOKEN_CLIENT_BASE => self.control_client(t, watch.registry()),
                Token(t) if t >= TOKEN_DEVICE_BASE => {
                    if let Some(fd) = dev_fds.get(t - TOKEN_DEVICE_BASE) {
                        device_events.push(*fd);
                    }
                }
                _ => {}
            }
        }
        if !device_events.is_empty() {
            let mut actions = Actions::new();
            for fd in device_events {
                for d in self.dispatcher.devices.iter_mut() {
                    if d.event_fds().contains(&fd) {
                        d.on_event(fd, &mut actions);
                    }
                }
            }
            self.perform(&mut actions);
            self.sync_device_fds(watch.registry(), dev_fds)?;
        }
        Ok(())
    }

    fn sync_device_fds(
        &mut self,
        registry: &Registry,
        registered: &mut Vec<RawFd>,
    ) -> Result<(), ServerError> {
        let want: Vec<RawFd> = self
            .dispatcher
            .devices
            .iter()
            .flat_map(|d| d.event_fds())
            .collect();
        if want == *registered {
            return Ok(());
        }
        for fd in registered.iter() {
            let _ = registry.deregister(&mut SourceFd(fd));
        }
        for (i, fd) in want.iter().enumerate() {
            registry
                .register(
                    &mut SourceFd(fd),
                    Token(TOKEN_DEVICE_BASE + i),
                    Interest::READABLE,
                )
                .map_err(|e| ServerError::Io("register device fd", e))?;
        }
        *registered = want;
        Ok(())
    }

    /// Scan every vCPU slot and the buffered ring; answer everything that is ready.
    fn service(&mut self, pending: &mut Vec<u32>) -> Result<(), ServerError> {
        if pending.iter().any(|p| Some(*p) == self.buf_port) || self.buffered.is_some() {
            self.drain_buffered();
        }
        pending.clear();
        for v in 0..self.vcpus {
            let Some(page) = &self.ioreq else {
                return Ok(());
            };
            if page.state(v) != STATE_IOREQ_READY {
                continue;
            }
            let req = page.read(v);
            page.set_state(v, STATE_IOREQ_INPROCESS);
            let mut actions = Actions::new();
            let data = self
                .dispatcher
                .handle(&req, v, &mut self.transport, &mut actions);
            // Side effects first: a BAR mapped or an MSI sent before the vCPU resumes.
            self.perform(&mut actions);
            let Some(page) = &self.ioreq else {
                return Ok(());
            };
            if let Some(d) = data {
                page.write_data(v, d);
            }
            page.set_state(v, STATE_IORESP_READY);
            self.transport.notify(self.ports[v as usize])?;
        }
        Ok(())
    }

    fn drain_buffered(&mut self) {
        let Some(page) = &self.buffered else { return };
        let mut actions = Actions::new();
        loop {
            let (r, w) = page.pointers();
            if r == w {
                break;
            }
            if w.wrapping_sub(r) > IOREQ_BUFFER_SLOT_NUM {
                // Corrupt pointers: skip to the writer rather than loop on garbage.
                warn!(
                    read = r,
                    write = w,
                    "buffered ring pointers out of range; skipping"
                );
                page.advance_read(w.wrapping_sub(r));
                break;
            }
            let s = page.slot(r);
            let mut data = u64::from(s.data);
            let mut n = 1;
            if s.size_bytes() == 8 {
                if w.wrapping_sub(r) < 2 {
                    break; // second half not published yet
                }
                data |= u64::from(page.slot(r.wrapping_add(1)).data) << 32;
                n = 2;
            }
            self.dispatcher.handle_buffered(
                s.type_(),
                u64::from(s.addr()),
                s.size_bytes(),
                data,
                &mut self.transport,
                &mut actions,
            );
            page.advance_read(n);
        }
        self.perform(&mut actions);
    }

    fn execute(&mut self, a: &Action) -> Result<(), TransportError> {
        execute_action(&mut self.transport, a)
    }

    /// Carry out actions in order; failures go to the retry queue.
    fn perform(&mut self, actions: &mut Actions) {
        for a in actions.drain() {
            match self.execute(&a) {
                Ok(()) => self.dispatcher.stats.actions_done += 1,
                Err(e) => {
                    self.dispatcher.stats.actions_failed += 1;
                    warn!(action = ?a, "action failed, will retry: {e}");
                    let due = Instant::now() + self.opts.retry_delay;
                    self.retries.push_back(Pending {
                        action: a,
                        attempts: 1,
                        due,
                        last: e.to_string(),
                    });
                }
            }
        }
    }

    fn run_retries(&mut self) -> Result<(), ServerError> {
        if self.retries.is_empty() {
            // No clock read on the hot path (one syscall per ioreq saved).
            return Ok(());
        }
        let now = Instant::now();
        let mut keep = VecDeque::new();
        while let Some(mut p) = self.retries.pop_front() {
            if p.due > now {
                keep.push_back(p);
                continue;
            }
            match self.execute(&p.action) {
                Ok(()) => {
                    info!(action = ?p.action, attempts = p.attempts + 1, "action delivered after retry");
                    self.dispatcher.stats.actions_done += 1;
                }
                Err(e) => {
                    self.dispatcher.stats.actions_failed += 1;
                    p.attempts += 1;
                    p.last = e.to_string();
                    if p.attempts > self.opts.action_retries {
                        error!(action = ?p.action, attempts = p.attempts, "action could not be delivered: {e}");
                        self.retries = keep;
                        return Err(ServerError::ActionFailed {
                            action: p.action,
                            attempts: p.attempts,
                            last: p.last,
                        });
                    }
                    let delay = self.opts.retry_delay * 2u32.saturating_pow(p.attempts.min(16) - 1);
                    warn!(action = ?p.action, attempts = p.attempts, retry_in = ?delay, "action failed again: {e}");
                    p.due = now + delay;
                    keep.push_back(p);
                }
            }
        }
        self.retries = keep;
        Ok(())
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

    fn control_client(&mut self, token: usize, registry: &Registry) {
        let Some(mut c) = self.control.take() else {
            return;
        };
        for cmd in c.read_commands(token, registry) {
            let reply = match cmd.get("cmd").and_then(|v| v.as_str()) {
                Some("status") => serde_json::json!({"ok": true, "status": self.status()}),
                Some("shutdown") => {
                    info!("shutdown requested on the control socket");
                    self.stop = true;
                    serde_json::json!({"ok": true})
                }
                Some(other) => {
                    let r = self
                        .dispatcher
                        .devices
                        .iter_mut()
                        .find_map(|d| d.control(other, &cmd));
                    match r {
                        Some(Ok(v)) => serde_json::json!({"ok": true, "result": v}),
                        Some(Err(e)) => serde_json::json!({"ok": false, "error": e}),
                        None => {
                            serde_json::json!({"ok": false, "error": format!("unknown command {other:?}; try status or shutdown")})
                        }
                    }
                }
                None => serde_json::json!({"ok": false, "error": "expected {\"cmd\": ...}"}),
            };
            c.reply(token, &reply);
        }
        c.finish(registry);
        self.control = Some(c);
    }

    /// Answer a slot left INPROCESS: only a request whose handling was cut short (a panic or
    /// an error out of [`Server::service`]) is in that state here, since the loop answers
    /// each request before it looks at the next. Its vCPU would otherwise stay blocked: a read
    /// gets all-ones, as from no device.
    fn answer_interrupted(&mut self) {
        let Some(page) = &self.ioreq else { return };
        for v in 0..self.vcpus {
            if page.state(v) != STATE_IOREQ_INPROCESS {
                continue;
            }
            let req = page.read(v);
            warn!(
                vcpu = v,
                addr = req.addr,
                "answering a request whose handling was interrupted"
            );
            if req.is_read() && !req.data_is_ptr() {
                let bits = (req.size.clamp(1, 8) * 8) as u64;
                page.write_data(v, u64::MAX >> (64 - bits));
            }
            page.set_state(v, STATE_IORESP_READY);
            if let Err(e) = self.transport.notify(self.ports[v as usize]) {
                debug!("notifying vcpu {v}: {e}");
            }
        }
    }

    /// Disable and destroy the server, unmap, unbind (idempotent).
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        // A server set up but never run still has its watcher thread: stop and join it.
        self.watch = None;
        // Disable first: Xen then sends the guest's new accesses to no server (a read of them
        // answers all-ones, xen/arch/x86/hvm/ioreq.c's null handler), so nothing of the
        // device is reachable through us while the devices stop (a BAR unmapped by the bridge
        // must not turn into ioreqs nobody answers). Requests already posted are answered
        // before and after the devices stop: a destroyed server leaves a waiting vCPU blocked.
        let id = self.id;
        if let Err(e) = self
            .transport
            .dm_op(&DmOp::SetIoreqServerState { id, enabled: false })
        {
            warn!("disabling server {id}: {e}");
        }
        self.answer_interrupted();
        let mut none = Vec::new();
        if let Err(e) = self.service(&mut none) {
            debug!("answering the last requests: {e}");
        }
        // The devices undo what they did (unmap BARs, unbind interrupts, deassign).
        let mut actions = Actions::new();
        for d in self.dispatcher.devices.iter_mut() {
            d.stop(&mut actions);
        }
        for a in actions.drain() {
            if let Err(e) = self.execute(&a) {
                warn!(action = ?a, "teardown action failed: {e}");
            }
        }
        if let Err(e) = self.service(&mut none) {
            debug!("answering the last requests: {e}");
        }
        if let Err(e) = self.transport.dm_op(&DmOp::DestroyIoreqServer { id }) {
            warn!("destroying server {id}: {e}");
        }
        // xen-abi.md 7.3: destroy, then unmap the resource, then unbind the ports.
        self.ioreq = None;
        self.buffered = None;
        for p in self.ports.drain(..).chain(self.buf_port.take()) {
            if let Err(e) = self.transport.unbind(p) {
                debug!("unbinding port {p}: {e}");
            }
        }
        if let Some(p) = &self.opts.control_path {
            let _ = std::fs::remove_file(p);
        }
        info!(server = id, "ioreq server torn down");
    }
}

impl<T: Transport> Drop for Server<T> {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Carry out one action through the transport.
fn execute_action<T: Transport>(transport: &mut T, a: &Action) -> Result<(), TransportError> {
    match *a {
        Action::InjectMsi { addr, data } => {
            transport.dm_op(&DmOp::InjectMsi { addr, data }).map(|_| ())
        }
        Action::Shutdown { reason } => {
            info!(?reason, "asking the hypervisor to shut the guest down");
            transport
                .dm_op(&DmOp::RemoteShutdown {
                    reason: reason.code(),
                })
                .map(|_| ())
        }
    }
}
