//! The `sim` transport: the client side of xen-sim. Same page layout and state machine as on
//! Xen, on memfd pages; event channels are eventfd pairs; everything arrives over one
//! `SOCK_SEQPACKET` socket with `SCM_RIGHTS` (protocol in [`super::sim_proto`]).
//!
//! Waiting: an epoll set of the ports' `to_dm` eventfds plus one eventfd of our own for the
//! [`Waker`] (xen-sim models no loopback channel; nothing of the waker reaches the sim). An
//! ioreq costs epoll_wait, the eventfd read, the notify write: three syscalls, as on Xen.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::sim_proto::{SimReply, SimRequest, MAX_MESSAGE};
use super::{Transport, TransportError, Waker};
use crate::seqpacket;
use crate::shared::Mapping;
use xen_abi::dmop::{DmOp, DmOpOutput};
use xen_abi::{DomId, IoservId, XEN_DM_OP_SIZE, XEN_PAGE_SIZE};

struct Port {
    to_dm: OwnedFd,
    to_xen: OwnedFd,
}

/// The epoll token of the waker (ports use their port number, which Xen keeps below 2^17).
const WAKE: Token = Token(usize::MAX);

/// [`Waker`] of the sim transport: mio's eventfd-backed waker in the wait set.
struct SimWaker(Arc<mio::Waker>);

impl Waker for SimWaker {
    fn wake(&self) -> Result<(), TransportError> {
        self.0
            .wake()
            .map_err(|e| TransportError::io("wake the event loop", e))
    }
}

/// A connection to xen-sim for one guest.
pub struct SimTransport {
    sock: OwnedFd,
    domid: DomId,
    ports: HashMap<u32, Port>,
    guest_ram: Option<(OwnedFd, u64)>,
    poll: Poll,
    events: Events,
    waker: Option<Arc<mio::Waker>>,
}

impl SimTransport {
    /// Connect to xen-sim at `path` for guest `domid`; `name` labels this process in the sim.
    pub fn connect(path: &Path, domid: DomId, name: &str) -> Result<Self, TransportError> {
        if !path.exists() {
            return Err(TransportError::Missing {
                path: path.display().to_string(),
                hint: "is xen-sim running? start it with `xen-sim serve --socket PATH`, or set [sim] socket in the config"
                    .into(),
            });
        }
        let sock = seqpacket::connect(path)
            .map_err(|e| TransportError::io(format!("connect {}", path.display()), e))?;
        let mut t = SimTransport {
            sock,
            domid,
            ports: HashMap::new(),
            guest_ram: None,
            poll: Poll::new().map_err(|e| TransportError::io("epoll_create", e))?,
            events: Events::with_capacity(64),
            waker: None,
        };
        t.call(
            &SimRequest::Hello {
                domid,
                name: name.into(),
            },
            "hello",
        )?;
        Ok(t)
    }

    /// The default socket path of xen-sim.
    pub fn default_socket() -> PathBuf {
        PathBuf::from("/run/xen-sim/sim.sock")
    }

    fn request(&mut self, req: &SimRequest) -> Result<(SimReply, Vec<OwnedFd>), TransportError> {
        let bytes = serde_json::to_vec(req).map_err(|e| TransportError::Protocol(e.to_string()))?;
        seqpacket::send(self.sock.as_raw_fd(), &bytes, &[])
            .map_err(|e| TransportError::io("send to xen-sim", e))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (n, fds) = seqpacket::recv(self.sock.as_raw_fd(), &mut buf)
            .map_err(|e| TransportError::io("receive from xen-sim", e))?;
        if n == 0 {
            return Err(TransportError::Protocol(
                "xen-sim closed the connection".into(),
            ));
        }
        let reply: SimReply = serde_json::from_slice(&buf[..n])
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        Ok((reply, fds))
    }

    fn call(
        &mut self,
        req: &SimRequest,
        what: &str,
    ) -> Result<(SimReply, Vec<OwnedFd>), TransportError> {
        let (reply, fds) = self.request(req)?;
        if reply.rc < 0 {
            return Err(TransportError::Hypervisor {
                what: what.into(),
                errno: -reply.rc,
            });
        }
        Ok((reply, fds))
    }
}

fn one_fd(mut fds: Vec<OwnedFd>, what: &str) -> Result<OwnedFd, TransportError> {
    if fds.len() != 1 {
        return Err(TransportError::Protocol(format!(
            "{what}: expected 1 fd, got {}",
            fds.len()
        )));
    }
    Ok(fds.remove(0))
}

impl Transport for SimTransport {
    fn domid(&self) -> DomId {
        self.domid
    }

    fn dm_op(&mut self, op: &DmOp) -> Result<DmOpOutput, TransportError> {
        let what = format!("dm_op {op:?}");
        let (reply, _) = self.call(
            &SimRequest::DmOp {
                buf: op.encode().to_vec(),
            },
            &what,
        )?;
        let buf: [u8; XEN_DM_OP_SIZE] = reply
            .buf
            .as_deref()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| TransportError::Protocol("dm_op reply without its buffer".into()))?;
        Ok(op.read_output(&buf))
    }

    fn map_resource(&mut self, id: IoservId, idx: u64, nr: u64) -> Result<Mapping, TransportError> {
        let (reply, fds) = self.call(
            &SimRequest::MapResource { id, frame: idx, nr },
            "map resource",
        )?;
        let fd = one_fd(fds, "map resource")?;
        let off = reply.value.unwrap_or(0);
        Mapping::map_fd(fd.as_fd(), off, nr as usize * XEN_PAGE_SIZE)
            .map_err(|e| TransportError::io("mmap ioreq resource", e))
    }

    fn bind_interdomain(&mut self, remote_port: u32) -> Result<u32, TransportError> {
        let (reply, mut fds) = self.call(
            &SimRequest::BindInterdomain { remote_port },
            "bind interdomain",
        )?;
        if fds.len() != 2 {
            return Err(TransportError::Protocol(format!(
                "bind: expected 2 fds, got {}",
                fds.len()
            )));
        }
        let local = reply
            .value
            .ok_or_else(|| TransportError::Protocol("bind without a port".into()))?
            as u32;
        let to_xen = fds.pop().expect("len checked");
        let to_dm = fds.pop().expect("len checked");
        self.poll
            .registry()
            .register(
                &mut SourceFd(&to_dm.as_raw_fd()),
                Token(local as usize),
                Interest::READABLE,
            )
            .map_err(|e| TransportError::io("epoll_ctl ADD event channel", e))?;
        self.ports.insert(local, Port { to_dm, to_xen });
        Ok(local)
    }

    fn unbind(&mut self, local_port: u32) -> Result<(), TransportError> {
        if let Some(p) = self.ports.remove(&local_port) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&p.to_dm.as_raw_fd()));
        }
        self.call(&SimRequest::Unbind { port: local_port }, "unbind")
            .map(|_| ())
    }

    fn waker(&mut self) -> Result<Box<dyn Waker>, TransportError> {
        if self.waker.is_none() {
            let w = mio::Waker::new(self.poll.registry(), WAKE)
                .map_err(|e| TransportError::io("eventfd for the waker", e))?;
            self.waker = Some(Arc::new(w));
        }
        Ok(Box::new(SimWaker(self.waker.clone().expect("set above"))))
    }

    fn wait(&mut self, out: &mut Vec<u32>) -> Result<bool, TransportError> {
        loop {
            match self.poll.poll(&mut self.events, None) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TransportError::io("epoll_wait", e)),
            }
        }
        let mut woken = false;
        for ev in self.events.iter() {
            if ev.token() == WAKE {
                // mio's waker needs no read: an edge-triggered eventfd reports every write.
                woken = true;
                continue;
            }
            let port = ev.token().0 as u32;
            let Some(p) = self.ports.get(&port) else {
                continue;
            };
            // Reading the eventfd resets it: the sim's "unmask" (edge-triggered, so a signal
            // after this read is a new event).
            let mut b = [0u8; 8];
            match nix::unistd::read(p.to_dm.as_raw_fd(), &mut b) {
                Ok(_) => out.push(port),
                Err(nix::errno::Errno::EAGAIN) => {}
                Err(e) => return Err(TransportError::io("read event channel", e)),
            }
        }
        Ok(woken)
    }

    fn notify(&mut self, local_port: u32) -> Result<(), TransportError> {
        let p = self
            .ports
            .get(&local_port)
            .ok_or_else(|| TransportError::Protocol(format!("notify unbound port {local_port}")))?;
        nix::unistd::write(&p.to_xen, &1u64.to_ne_bytes())
            .map_err(|e| TransportError::io("notify", e))?;
        Ok(())
    }

    fn map_guest_page(&mut self, gfn: u64) -> Result<Mapping, TransportError> {
        if self.guest_ram.is_none() {
            let (reply, fds) = self.call(&SimRequest::GuestMemory, "map guest memory")?;
            self.guest_ram = Some((one_fd(fds, "guest memory")?, reply.value.unwrap_or(0)));
        }
        let (fd, size) = self.guest_ram.as_ref().expect("set above");
        let off = gfn
            .checked_mul(XEN_PAGE_SIZE as u64)
            .filter(|o| o + XEN_PAGE_SIZE as u64 <= *size);
        // Xen's MMAPBATCH reports a per-page error for a gfn the guest does not have.
        let off = off.ok_or(TransportError::Hypervisor {
            what: format!("map guest frame {gfn:#x}"),
            errno: libc::EFAULT,
        })?;
        Mapping::map_fd(fd.as_fd(), off, XEN_PAGE_SIZE)
            .map_err(|e| TransportError::io("mmap guest page", e))
    }

    fn passthrough(&mut self, op: &xen_abi::passthrough::PtOp) -> Result<u64, TransportError> {
        let what = format!("{op:?}");
        let (reply, _) = self.call(&SimRequest::Passthrough { op: op.clone() }, &what)?;
        Ok(reply.value.unwrap_or(0))
    }

    fn restrict(&mut self) -> Result<(), TransportError> {
        self.call(&SimRequest::Restrict, "restrict").map(|_| ())
    }
}
