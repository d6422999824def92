//! Setup in the documented order (xen-abi.md 7.1): create the server, map its frames, bind
//! the ports, register the ranges, start the devices, restrict; any failure after create
//! destroys the server again.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::actions::execute_action;
use super::dispatch::Dispatcher;
use super::ranges::RangeTable;
use super::watch::Watcher;
use super::{Server, ServerError, ServerOptions};
use crate::control::ControlServer;
use crate::device::{Actions, Device, Range};
use crate::shared::{BufferedPage, IoreqPage, SLOTS_PER_PAGE};
use crate::transport::Transport;
use xen_abi::dmop::{DmOp, IoRange};
use xen_abi::*;

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
            tryt!(t.dm_op(&DmOp::MapIoRange(IoRange {
                id,
                space: r.space,
                start: r.start,
                end: r.end
            })));
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
}
