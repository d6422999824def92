//! The `sim` transport: the client side of xen-sim. Same page layout and state machine as on
//! Xen, on memfd pages; event channels are eventfd pairs; everything arrives over one
//! `SOCK_SEQPACKET` socket with `SCM_RIGHTS` (protocol in [`super::sim_proto`]).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::sim_proto::{SimReply, SimRequest, MAX_MESSAGE};
use super::{Transport, TransportError};
use crate::abi::{DomId, IoservId, XEN_DM_OP_SIZE, XEN_PAGE_SIZE};
use crate::dmop::{DmOp, DmOpOutput};
use crate::seqpacket;
use crate::shared::Mapping;

struct Port {
    to_dm: OwnedFd,
    to_xen: OwnedFd,
}

/// A connection to xen-sim for one guest.
pub struct SimTransport {
    sock: OwnedFd,
    domid: DomId,
    ports: HashMap<u32, Port>,
    by_fd: HashMap<RawFd, u32>,
    guest_ram: Option<(OwnedFd, u64)>,
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
            by_fd: HashMap::new(),
            guest_ram: None,
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

    fn map_resource(
        &mut self,
        id: IoservId,
        frame: u64,
        nr: u64,
    ) -> Result<Mapping, TransportError> {
        let (reply, fds) = self.call(&SimRequest::MapResource { id, frame, nr }, "map resource")?;
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
        self.by_fd.insert(to_dm.as_raw_fd(), local);
        self.ports.insert(local, Port { to_dm, to_xen });
        Ok(local)
    }

    fn unbind(&mut self, local_port: u32) -> Result<(), TransportError> {
        if let Some(p) = self.ports.remove(&local_port) {
            self.by_fd.remove(&p.to_dm.as_raw_fd());
        }
        self.call(&SimRequest::Unbind { port: local_port }, "unbind")
            .map(|_| ())
    }

    fn event_fds(&self) -> Vec<RawFd> {
        self.ports.values().map(|p| p.to_dm.as_raw_fd()).collect()
    }

    fn take_pending(&mut self, fd: RawFd, out: &mut Vec<u32>) -> Result<(), TransportError> {
        let Some(&port) = self.by_fd.get(&fd) else {
            return Ok(());
        };
        let p = &self.ports[&port];
        let mut b = [0u8; 8];
        match nix::unistd::read(p.to_dm.as_raw_fd(), &mut b) {
            Ok(_) => out.push(port),
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(TransportError::io("read event channel", e)),
        }
        Ok(())
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

    fn passthrough(&mut self, op: &crate::passthrough::PtOp) -> Result<u64, TransportError> {
        let what = format!("{op:?}");
        let (reply, _) = self.call(&SimRequest::Passthrough { op: op.clone() }, &what)?;
        Ok(reply.value.unwrap_or(0))
    }

    fn restrict(&mut self) -> Result<(), TransportError> {
        self.call(&SimRequest::Restrict, "restrict").map(|_| ())
    }
}
