//! The device-model socket: accepting connections, reading each connection's sim transport
//! requests (ioreq_server::transport::sim_proto) and answering them against the machine.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::Ordering;

use ioreq_server::seqpacket;
use ioreq_server::transport::sim_proto::{SimReply, SimRequest, MAX_MESSAGE};
use tracing::{debug, info, warn};
use xen_abi::dmop::DmOp;
use xen_abi::XEN_PAGE_SIZE;

use super::Sim;

impl Sim {
    pub(super) fn accept_loop(self, listener: UnixListener) {
        for conn in listener.incoming() {
            if self.inner.stop.load(Ordering::SeqCst) {
                break;
            }
            match conn {
                Ok(c) => {
                    let id = self.inner.next_conn.fetch_add(1, Ordering::SeqCst);
                    let s = self.clone();
                    let fd: OwnedFd = c.into();
                    let _ = std::thread::Builder::new()
                        .name(format!("xen-sim-conn{id}"))
                        .spawn(move || s.serve_conn(id, fd));
                }
                Err(e) => warn!("xen-sim accept: {e}"),
            }
        }
    }

    pub(super) fn serve_conn(self, conn: u64, fd: OwnedFd) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut domid: Option<u16> = None;
        let mut name = String::from("?");
        let mut restricted = false;
        loop {
            let n = match seqpacket::recv(fd.as_raw_fd(), &mut buf) {
                Ok((0, _)) | Err(_) => break,
                Ok((n, _)) => n,
            };
            let req: SimRequest = match serde_json::from_slice(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    warn!(conn, "xen-sim: bad request: {e}");
                    break;
                }
            };
            let mut fds: Vec<RawFd> = Vec::new();
            let mut keep: Vec<OwnedFd> = Vec::new();
            let reply = match (&req, domid) {
                (SimRequest::Hello { domid: d, name: n }, _) => {
                    if self.inner.lock().get(d).is_some_and(|x| !x.dead) {
                        domid = Some(*d);
                        name = n.clone();
                        info!(conn, domid = d, process = %name, "device model connected");
                        SimReply::default()
                    } else {
                        SimReply {
                            rc: -libc::ESRCH,
                            ..Default::default()
                        }
                    }
                }
                (_, None) => SimReply {
                    rc: -libc::ESRCH,
                    ..Default::default()
                },
                (r, Some(d)) => self.handle(conn, d, r, &mut restricted, &mut keep),
            };
            for k in &keep {
                fds.push(k.as_fd().as_raw_fd());
            }
            let bytes = serde_json::to_vec(&reply).expect("serializable");
            if seqpacket::send(fd.as_raw_fd(), &bytes, &fds).is_err() {
                break;
            }
            self.inner.changed.notify_all();
        }
        info!(conn, process = %name, "device model disconnected");
        // Like closing /dev/xen/evtchn: the process's ports are unbound. Its servers stay
        // (Xen does not know the process died): their vCPUs will be reported stuck.
        if let Some(d) = domid {
            if let Some(dom) = self.inner.lock().get_mut(&d) {
                let mine: Vec<u32> = dom
                    .servers
                    .values()
                    .filter(|s| s.emulator == conn)
                    .flat_map(|s| s.vcpu_ports.clone())
                    .collect();
                for p in mine {
                    if let Some(ch) = dom.channels.get_mut(&p) {
                        ch.local = None;
                    }
                }
            }
        }
        self.inner.changed.notify_all();
    }

    pub(super) fn handle(
        &self,
        conn: u64,
        domid: u16,
        req: &SimRequest,
        restricted: &mut bool,
        fds: &mut Vec<OwnedFd>,
    ) -> SimReply {
        let mut g = self.inner.lock();
        let m = &mut *g;
        let live: Vec<u16> = {
            let mut v: Vec<u16> = m
                .domains
                .iter()
                .filter(|(_, d)| !d.dead)
                .map(|(id, _)| *id)
                .collect();
            v.sort_unstable();
            v
        };
        let Some(d) = m.domains.get_mut(&domid) else {
            return SimReply {
                rc: -libc::ESRCH,
                ..Default::default()
            };
        };
        let host = &mut m.host;
        let err = |rc: i32| SimReply {
            rc,
            ..Default::default()
        };
        match req {
            SimRequest::Hello { .. } => err(-libc::EINVAL),
            SimRequest::DmOp { buf } => {
                let op = match DmOp::decode(buf) {
                    Ok(op) => op,
                    Err(e) => {
                        debug!("sim: undecodable dm_op: {e}");
                        let rc = match e {
                            xen_abi::dmop::DecodeError::Unknown(_) => -libc::EOPNOTSUPP,
                            xen_abi::dmop::DecodeError::Short(_) => -libc::EFAULT,
                            _ => -libc::EINVAL,
                        };
                        return err(rc);
                    }
                };
                let r = d.dm_op(&op, conn);
                let rc = r.as_ref().err().copied().unwrap_or(0);
                let rec = serde_json::to_value(&op).unwrap_or_default();
                d.record(rec, rc);
                if d.pending_destroy {
                    // on_poweroff = "destroy": the toolstack destroys the domain.
                    info!(domid, "sim: domain powered off and destroyed");
                    d.destroy(host);
                }
                match r {
                    Ok(out) => {
                        let mut b: [u8; xen_abi::XEN_DM_OP_SIZE] = op.encode();
                        DmOp::write_output(&mut b, &out);
                        SimReply {
                            rc: 0,
                            buf: Some(b.to_vec()),
                            value: None,
                        }
                    }
                    Err(rc) => err(rc),
                }
            }
            SimRequest::MapResource { id, frame, nr } => {
                let Some(s) = d.servers.get(id) else {
                    return err(-libc::ENOENT);
                };
                if s.emulator != conn {
                    return err(-libc::EPERM);
                }
                // Frame 0 is the buffered page (-ENOENT without buffering), 1 the ioreq page;
                // this Xen serves no further frames (xen-abi.md 3).
                let Some(last) = frame.checked_add(*nr).filter(|l| *nr > 0 && *l <= 2) else {
                    return err(-libc::EINVAL);
                };
                let _ = last;
                if *frame == 0 && s.bufioreq == xen_abi::HVM_IOREQSRV_BUFIOREQ_OFF {
                    return err(-libc::ENOENT);
                }
                match s.frames.try_clone() {
                    Ok(f) => {
                        fds.push(f);
                        SimReply {
                            rc: 0,
                            buf: None,
                            value: Some(frame * XEN_PAGE_SIZE as u64),
                        }
                    }
                    Err(_) => err(-libc::ENOMEM),
                }
            }
            SimRequest::BindInterdomain { remote_port } => match d.bind(*remote_port) {
                Ok((local, ch)) => match (ch.to_dm.try_clone(), ch.to_xen.try_clone()) {
                    (Ok(a), Ok(b)) => {
                        fds.push(a);
                        fds.push(b);
                        SimReply {
                            rc: 0,
                            buf: None,
                            value: Some(u64::from(local)),
                        }
                    }
                    _ => err(-libc::ENOMEM),
                },
                Err(rc) => err(rc),
            },
            SimRequest::Unbind { port } => match d.unbind(*port) {
                Ok(()) => SimReply::default(),
                Err(rc) => err(rc),
            },
            SimRequest::GuestMemory => match d.ram.try_clone() {
                Ok(f) => {
                    fds.push(f);
                    SimReply {
                        rc: 0,
                        buf: None,
                        value: Some(d.ram_size),
                    }
                }
                Err(_) => err(-libc::ENOMEM),
            },
            SimRequest::Passthrough { op } => {
                // Linux privcmd refuses IOCTL_PRIVCMD_HYPERCALL on a handle restricted to a
                // domain (drivers/xen/privcmd.c, privcmd_ioctl_hypercall: `if (data->domid !=
                // DOMID_INVALID) return -EPERM;`): a restricted connection cannot issue one.
                let r = if *restricted {
                    d.notes.clear();
                    d.notes
                        .insert("refused".into(), "restricted privcmd handle".into());
                    Err(-libc::EPERM)
                } else if let (xen_abi::passthrough::PtOp::GetDomainInfo, true) = (op, d.dead) {
                    // getdomaininfo of a domain that is gone answers for the first domain
                    // whose id is >= the one asked for (xen/common/domctl.c:375-414), or ESRCH.
                    // The echoed id then differs (PtOp::decode_result refuses that); the sim
                    // protocol carries no buffer here, so the sim answers ESRCH itself.
                    d.notes.clear();
                    if let Some(other) = live.iter().find(|&&x| x >= domid) {
                        d.notes
                            .insert("xen_answers_for_domain".into(), (*other).into());
                    }
                    Err(-libc::ESRCH)
                } else {
                    d.passthrough(host, op)
                };
                let mut rec = serde_json::to_value(op).unwrap_or_default();
                if let Some(o) = rec.as_object_mut() {
                    match (&r, op) {
                        (Ok(v), xen_abi::passthrough::PtOp::MapPirqMsi(..)) => {
                            o.insert("pirq".into(), (*v).into());
                        }
                        (Ok(v), _) if *v != 0 => {
                            o.insert("value".into(), (*v).into());
                        }
                        _ => {}
                    }
                    for (k, v) in std::mem::take(&mut d.notes) {
                        o.insert(k, v);
                    }
                }
                d.record(rec, r.err().unwrap_or(0));
                match r {
                    Ok(v) => SimReply {
                        rc: 0,
                        buf: None,
                        value: Some(v),
                    },
                    Err(rc) => err(rc),
                }
            }
            SimRequest::Restrict => {
                *restricted = true;
                SimReply::default()
            }
        }
    }
}
