//! The broker's side: receive one request, check it ([`BrokerPolicy`]), execute it on the
//! privileged handles it keeps (the unrestricted passthrough channel and the host functions'
//! backends), answer exactly once.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use ioreq_server::executor::{PassthroughExecutor, PtChannel, PtError};
use ioreq_server::ratelimit::RateLimit;
use ioreq_server::seqpacket;
use ioreq_server::transport::TransportError;
use serde::Serialize;
use xen_abi::passthrough::PtOp;

use super::ledger::{Ledger, Run};
use super::policy::{BrokerPolicy, Refusal};
use super::proto::{self, DeviceFacts, Envelope, Reply, Request, SysfsOp, MAX_MESSAGE, VERSION};
use crate::backend::HostDevice;
use crate::error::Error;
use crate::topology::PciAddress;

/// Counters, for the status socket and the exit log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BrokerStats {
    /// Requests executed.
    pub executed: u64,
    /// Requests refused.
    pub refused: u64,
}

/// The broker (see the module docs of [`crate::broker`]).
pub struct Broker {
    policy: BrokerPolicy,
    chan: Box<dyn PtChannel>,
    devices: BTreeMap<u32, Box<dyn HostDevice>>,
    ledger: Ledger,
    warn: RateLimit,
    stats: BrokerStats,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("domid", &self.policy.domid())
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker executing on `chan` (which must be for the policy's guest) and on the
    /// backends of exactly the policy's functions.
    pub fn new(
        policy: BrokerPolicy,
        chan: Box<dyn PtChannel>,
        devices: Vec<(PciAddress, Box<dyn HostDevice>)>,
    ) -> Result<Self, Error> {
        if chan.domid() != policy.domid() {
            return Err(Error::Config(format!(
                "broker: channel for domain {}, policy for domain {}",
                chan.domid(),
                policy.domid()
            )));
        }
        let devices: BTreeMap<u32, Box<dyn HostDevice>> =
            devices.into_iter().map(|(a, d)| (a.sbdf(), d)).collect();
        let mut want: Vec<u32> = policy.functions().iter().map(|f| f.host.sbdf()).collect();
        want.sort_unstable();
        if devices.keys().copied().collect::<Vec<_>>() != want {
            return Err(Error::Config(
                "broker: the backends are not those of the assigned functions".into(),
            ));
        }
        Ok(Broker {
            policy,
            chan,
            devices,
            ledger: Ledger::default(),
            warn: RateLimit::guest(),
            stats: BrokerStats::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> BrokerStats {
        self.stats
    }

    /// What the executed requests left set up.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn refused(&mut self, seq: u64, req: Option<&Request>, r: Refusal) -> Reply {
        self.stats.refused += 1;
        if let Some(dropped) = self.warn.check() {
            tracing::warn!(?req, dropped, "broker refused a request: {r}");
        }
        Reply::Refused { seq, reason: r.0 }
    }

    /// Answer one encoded message (the reply, encoded).
    pub fn handle_message(&mut self, msg: &[u8]) -> Vec<u8> {
        self.handle_message_fd(msg).0
    }

    /// [`Broker::handle_message`], with the fd the reply carries ([`Request::IntxFd`]).
    fn handle_message_fd(&mut self, msg: &[u8]) -> (Vec<u8>, Option<RawFd>) {
        // The version is read first, so that a worker of another version gets a clear answer
        // even when its request enum does not decode.
        #[derive(serde::Deserialize)]
        struct Head {
            version: u32,
            seq: u64,
        }
        let reply = match proto::decode::<Head>(msg) {
            Err(e) => self.refused(0, None, Refusal(e)),
            Ok(h) if h.version != VERSION => self.refused(
                h.seq,
                None,
                Refusal(format!(
                    "protocol version {}, this broker speaks {VERSION}",
                    h.version
                )),
            ),
            Ok(h) => match proto::decode::<Envelope>(msg) {
                Err(e) => self.refused(h.seq, None, Refusal(e)),
                Ok(env) => {
                    let (r, fd) = self.handle_fd(env);
                    return (proto::encode(&r), fd);
                }
            },
        };
        (proto::encode(&reply), None)
    }

    /// Answer one request: check it, and execute it only if it passes.
    pub fn handle(&mut self, env: Envelope) -> Reply {
        self.handle_fd(env).0
    }

    fn handle_fd(&mut self, env: Envelope) -> (Reply, Option<RawFd>) {
        let seq = env.seq;
        match &env.req {
            Request::IntxFd { sbdf } => {
                if let Err(r) = self.policy.check(&env.req) {
                    return (self.refused(seq, Some(&env.req), r), None);
                }
                self.stats.executed += 1;
                let fd = self.dev(*sbdf).intx_fd();
                let value = u64::from(fd.is_some());
                (Reply::Value { seq, value }, fd)
            }
            _ => (self.execute(env), None),
        }
    }

    fn execute(&mut self, env: Envelope) -> Reply {
        let seq = env.seq;
        if let Err(r) = self.policy.check(&env.req) {
            return self.refused(seq, Some(&env.req), r);
        }
        let failed = |e: Error| Reply::Failed {
            seq,
            message: e.to_string(),
        };
        let reply = match &env.req {
            Request::Hypercall { op, .. } => match self.chan.call(op) {
                Ok(value) => {
                    self.policy.note_success(op, value);
                    self.ledger.hypercall_done(op, value);
                    Reply::Value { seq, value }
                }
                Err(TransportError::Hypervisor { what, errno }) => {
                    self.ledger.hypercall_refused(op, errno);
                    Reply::Errno { seq, what, errno }
                }
                Err(e) => Reply::Failed {
                    seq,
                    message: e.to_string(),
                },
            },
            Request::ConfigRead { sbdf, offset, len } => {
                let mut data = vec![0u8; usize::from(*len)];
                match self.dev(*sbdf).read_config(*offset, &mut data) {
                    Ok(()) => Reply::Bytes { seq, data },
                    Err(e) => failed(e),
                }
            }
            Request::ConfigWrite { sbdf, offset, data } => {
                let mut cur = vec![0u8; data.len()];
                if let Err(e) = self.dev(*sbdf).read_config(*offset, &mut cur) {
                    return failed(e);
                }
                if let Err(r) = self.policy.check_config_write(*sbdf, *offset, data, &cur) {
                    return self.refused(seq, Some(&env.req), r);
                }
                match self.dev_mut(*sbdf).write_config(*offset, data) {
                    Ok(()) => Reply::Value { seq, value: 0 },
                    Err(e) => failed(e),
                }
            }
            Request::BarRead {
                sbdf,
                bar,
                offset,
                len,
            } => {
                let mut data = vec![0u8; usize::from(*len)];
                match self.dev(*sbdf).read_bar(*bar, *offset, &mut data) {
                    Ok(()) => Reply::Bytes { seq, data },
                    Err(e) => failed(e),
                }
            }
            Request::BarWrite {
                sbdf,
                bar,
                offset,
                data,
            } => match self.dev_mut(*sbdf).write_bar(*bar, *offset, data) {
                Ok(()) => Reply::Value { seq, value: 0 },
                Err(e) => failed(e),
            },
            Request::Sysfs { sbdf, op } => {
                let d = self.dev_mut(*sbdf);
                let r = match op {
                    SysfsOp::EnableDecode => d.enable_decode().map(|()| (true, None)),
                    SysfsOp::DisableDecode => d.disable_decode().map(|()| (true, None)),
                    SysfsOp::Reset => d.reset().map(|done| (done, None)),
                    SysfsOp::DetachDriver => d.detach_host_driver().map(|drv| (true, drv)),
                    SysfsOp::ReprobeDriver => d.reprobe_host_driver().map(|()| (true, None)),
                };
                match r {
                    Ok((done, driver)) => {
                        self.ledger.sysfs_done(*sbdf, *op);
                        Reply::Sysfs { seq, done, driver }
                    }
                    Err(e) => failed(e),
                }
            }
            Request::Facts { sbdf } => Reply::Facts {
                seq,
                facts: DeviceFacts::of(self.dev(*sbdf)),
            },
            Request::IntxAck { sbdf } => match self.dev_mut(*sbdf).intx_ack() {
                Ok(value) => Reply::Value { seq, value },
                Err(e) => failed(e),
            },
            Request::Status { sbdf } => Reply::Status {
                seq,
                json: self.dev(*sbdf).status().to_string(),
            },
            Request::IntxFd { .. } => Reply::Failed {
                seq,
                message: "intx_fd answered elsewhere".into(),
            },
        };
        self.stats.executed += 1;
        reply
    }

    fn dev(&self, sbdf: u32) -> &dyn HostDevice {
        // BrokerPolicy::check accepted only assigned functions, and `new` made sure each has its
        // backend.
        self.devices[&sbdf].as_ref()
    }

    fn dev_mut(&mut self, sbdf: u32) -> &mut dyn HostDevice {
        self.devices
            .get_mut(&sbdf)
            .expect("checked: an assigned function")
            .as_mut()
    }

    /// Serve the worker on `sock` (one end of a `SOCK_SEQPACKET` socketpair) until it closes
    /// its end (EOF: the worker exited). Every message gets exactly one reply.
    pub fn serve(&mut self, sock: BorrowedFd<'_>) -> io::Result<()> {
        while self.serve_one(sock)? {}
        Ok(())
    }

    /// Receive one message on `sock` (blocking) and answer it; `false` at EOF.
    pub fn serve_one(&mut self, sock: BorrowedFd<'_>) -> io::Result<bool> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = loop {
            match seqpacket::recv(sock.as_raw_fd(), &mut buf) {
                Ok((0, _)) => return Ok(false),
                // Fds the worker sent are dropped (closed): the interface takes none.
                Ok((n, _fds)) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A truncated message still gets its one answer.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let r = self.refused(0, None, Refusal(format!("message: {e}")));
                    seqpacket::send(sock.as_raw_fd(), &proto::encode(&r), &[])?;
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        };
        let (reply, fd) = self.handle_message_fd(&buf[..n]);
        let fds: Vec<RawFd> = fd.into_iter().collect();
        seqpacket::send(sock.as_raw_fd(), &reply, &fds)?;
        Ok(true)
    }

    /// Hand back what the worker left set up, once it is gone (EOF after [`Broker::serve`]):
    /// nothing when its own teardown went through, otherwise the stop of
    /// [`crate::lifecycle`] in its order, from the broker's [`Ledger`]: Bus Master off,
    /// mappings removed (looping over Xen's partial counts), vectors unbound and pirqs
    /// unmapped, the host's MSI / MSI-X Enable off, reset, `release_msix`, deassign (and out
    /// of Xen's quarantine), permissions revoked, host decode off. The guest side is skipped
    /// when the domain is gone (Xen dropped it with the domain). dom0's driver is re-probed
    /// when the backends are dropped, at the end. Returns the failed steps; each step is tried
    /// even when an earlier one failed.
    pub fn hand_back(self) -> Vec<String> {
        let Broker {
            policy,
            chan,
            mut devices,
            ledger,
            ..
        } = self;
        let mut errs = Vec::new();
        let pirqs = policy.mapped_pirqs();
        if ledger.is_empty() && pirqs.is_empty() {
            return errs;
        }
        let mut exec = PassthroughExecutor::new(chan);
        let alive = exec.domain_alive();
        let live: Vec<u32> = ledger.decode_on.union(&ledger.assigned).copied().collect();
        for &s in &live {
            errs.extend(clear(
                &mut devices,
                s,
                crate::header::COMMAND,
                crate::header::CMD_MASTER,
                "bus master off",
            ));
        }
        let mut steps: Vec<(String, Result<(), PtError>)> = Vec::new();
        if alive {
            for &run in &ledger.mem {
                steps.push((
                    format!("unmapping frames {run:x?}"),
                    unmap_mem(&mut exec, run),
                ));
            }
            for &(g, h, n) in &ledger.io {
                let op = PtOp::IoportMapping {
                    gport: g as u32,
                    mport: h as u32,
                    nr: n as u32,
                    add: false,
                };
                steps.push((format!("{op:?}"), exec.call(&op).map(|_| ())));
            }
            for (&pirq, &(gvec, gflags, gtable)) in &ledger.bound {
                let op = PtOp::UnbindPtIrqMsi {
                    pirq,
                    gvec,
                    gflags,
                    gtable,
                };
                steps.push((format!("{op:?}"), exec.call(&op).map(|_| ())));
            }
            for &pirq in &pirqs {
                let op = PtOp::UnmapPirq { pirq };
                steps.push((format!("{op:?}"), exec.call(&op).map(|_| ())));
            }
        }
        errs.extend(
            steps
                .drain(..)
                .filter_map(|(w, r)| r.err().map(|e| format!("{w}: {e}"))),
        );
        for f in policy.functions() {
            let s = f.host.sbdf();
            if let Some((cap, _)) = f.msi {
                errs.extend(clear(
                    &mut devices,
                    s,
                    cap + 2,
                    crate::msi::FLAGS_ENABLE,
                    "MSI off",
                ));
            }
            if let Some(m) = f.msix {
                errs.extend(clear(
                    &mut devices,
                    s,
                    m.cap + 2,
                    crate::msix::FLAGS_ENABLE | crate::msix::FLAGS_MASKALL,
                    "MSI-X off",
                ));
            }
        }
        for &s in &ledger.decode_on {
            if let Some(Err(e)) = devices.get_mut(&s).map(|d| d.reset()) {
                errs.push(format!("{}: reset: {e}", PciAddress::from_sbdf(s)));
            }
        }
        for &s in &ledger.prepared {
            exec.adopt_prepared(s);
            steps.push((format!("release_msix {s:#x}"), exec.release_msix(s)));
        }
        for &s in &ledger.assigned {
            steps.push((format!("deassign {s:#x}"), exec.deassign(s)));
        }
        for &s in &ledger.quarantined {
            let r = exec
                .call(&PtOp::DeassignDevice {
                    sbdf: s,
                    from_dom_io: true,
                })
                .map(|_| ())
                .or_else(|e| match e.errno() {
                    // Not quarantined (iommu=no-quarantine): already dom0's. With
                    // quarantine on, deassigning from the guest moved it to dom_io, and only
                    // deassigning from dom_io returns it to dom0
                    // (xen/drivers/passthrough/pci.c:849-859 in 4.17).
                    Some(libc::EINVAL) | Some(libc::ENODEV) | Some(libc::ESRCH) => Ok(()),
                    _ => Err(e),
                });
            steps.push((format!("deassign {s:#x} from dom_io"), r));
        }
        if alive {
            for &(mfn, nr) in &ledger.iomem {
                steps.push((
                    format!("revoking frames {mfn:#x}+{nr:#x}"),
                    exec.iomem_permission(mfn, nr, false),
                ));
            }
            for &(port, nr) in &ledger.ioports {
                steps.push((
                    format!("revoking ports {port:#x}+{nr:#x}"),
                    exec.ioport_permission(port as u32, nr as u32, false),
                ));
            }
        }
        errs.extend(
            steps
                .drain(..)
                .filter_map(|(w, r)| r.err().map(|e| format!("{w}: {e}"))),
        );
        for &s in &ledger.decode_on {
            if let Some(Err(e)) = devices.get_mut(&s).map(|d| d.disable_decode()) {
                errs.push(format!(
                    "{}: host decode off: {e}",
                    PciAddress::from_sbdf(s)
                ));
            }
        }
        for e in &errs {
            tracing::error!("broker hand-back step failed: {e}");
        }
        tracing::info!(
            failed = errs.len(),
            "broker: handed back what the worker left set up"
        );
        errs
    }

    /// The backends, for the hand-back after the worker is gone.
    pub fn into_parts(self) -> (Box<dyn PtChannel>, BTreeMap<u32, Box<dyn HostDevice>>) {
        (self.chan, self.devices)
    }
}

/// `memory_mapping` removal of a run, looping from Xen's partial counts and halving the batch
/// on `E2BIG`, as the executor's own loop does.
fn unmap_mem(exec: &mut PassthroughExecutor, (gfn, mfn, nr): Run) -> Result<(), PtError> {
    let (mut done, mut batch) = (0u64, nr);
    while done < nr {
        let n = batch.min(nr - done);
        match exec.call(&PtOp::MemoryMapping {
            gfn: gfn + done,
            mfn: mfn + done,
            nr: n,
            add: false,
        }) {
            Ok(0) => done += n,
            Ok(k) if k < n => done += k,
            Ok(k) => {
                return Err(PtError::Invalid(format!(
                    "memory_mapping removal of {n} frames returned {k}"
                )))
            }
            Err(e) if e.errno() == Some(libc::E2BIG) && batch > 1 => batch /= 2,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Clear `bits` of the 16-bit host register at `off` (one read-modify-write, no write when
/// they are clear); the failure, if any.
fn clear(
    devices: &mut BTreeMap<u32, Box<dyn HostDevice>>,
    sbdf: u32,
    off: u16,
    bits: u16,
    what: &str,
) -> Option<String> {
    let d = devices.get_mut(&sbdf)?;
    let r = d.read_config_word(off).and_then(|c| {
        if c & bits != 0 {
            d.write_config(off, &(c & !bits).to_le_bytes())
        } else {
            Ok(())
        }
    });
    r.err()
        .map(|e| format!("{}: {what}: {e}", PciAddress::from_sbdf(sbdf)))
}
