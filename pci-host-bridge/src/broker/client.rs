//! The worker's side: synchronous request/reply to the broker, and the two seams it plugs
//! into, a [`PtChannel`] for the passthrough executor and a [`HostDevice`] for one function.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ioreq_server::executor::PtChannel;
use ioreq_server::seqpacket;
use ioreq_server::transport::TransportError;
use xen_abi::passthrough::PtOp;
use xen_abi::DomId;

pub use super::proto::DeviceFacts;
use super::proto::{self, Envelope, Reply, Request, SysfsOp, MAX_MESSAGE, VERSION};
use crate::backend::HostDevice;
use crate::error::Error;
use crate::topology::PciAddress;

/// One end of the socketpair, asking the broker.
#[derive(Debug)]
pub struct BrokerClient {
    /// The socket; the lock keeps a request and its reply together.
    sock: Mutex<OwnedFd>,
    seq: AtomicU64,
}

impl BrokerClient {
    /// A client on `sock` (a `SOCK_SEQPACKET` socket connected to the broker).
    pub fn new(sock: OwnedFd) -> Self {
        BrokerClient {
            sock: Mutex::new(sock),
            seq: AtomicU64::new(1),
        }
    }

    /// Send `req` and wait for its one reply. An error means the broker is gone or broke
    /// the protocol: the worker must stop serving.
    pub fn call(&self, req: Request) -> Result<Reply, TransportError> {
        self.call_with_fds(req).map(|(r, _)| r)
    }

    /// [`BrokerClient::call`], with the fds the reply carried.
    pub fn call_with_fds(&self, req: Request) -> Result<(Reply, Vec<OwnedFd>), TransportError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let msg = proto::encode(&Envelope {
            version: VERSION,
            seq,
            req,
        });
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        seqpacket::send(sock.as_raw_fd(), &msg, &[])
            .map_err(|e| TransportError::io("request to the broker", e))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (n, fds) = loop {
            match seqpacket::recv(sock.as_raw_fd(), &mut buf) {
                Ok((0, _)) => {
                    return Err(TransportError::Protocol(
                        "the broker closed the socket (it exited)".into(),
                    ))
                }
                Ok(r) => break r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TransportError::io("reply from the broker", e)),
            }
        };
        let reply: Reply = proto::decode(&buf[..n]).map_err(TransportError::Protocol)?;
        if reply.seq() != seq {
            return Err(TransportError::Protocol(format!(
                "broker answered request {} instead of {seq}",
                reply.seq()
            )));
        }
        Ok((reply, fds))
    }
}

/// Passthrough hypercalls through the broker.
#[derive(Clone, Debug)]
pub struct BrokerChannel {
    client: Arc<BrokerClient>,
    domid: DomId,
}

impl BrokerChannel {
    /// Hypercalls for `domid` through `client`.
    pub fn new(client: Arc<BrokerClient>, domid: DomId) -> Self {
        BrokerChannel { client, domid }
    }
}

impl PtChannel for BrokerChannel {
    fn domid(&self) -> DomId {
        self.domid
    }

    fn call(&mut self, op: &PtOp) -> Result<u64, TransportError> {
        match self.client.call(Request::Hypercall {
            domid: self.domid,
            op: op.clone(),
        })? {
            Reply::Value { value, .. } => Ok(value),
            Reply::Errno { what, errno, .. } => Err(TransportError::Hypervisor { what, errno }),
            // Not Xen's answer: the executor reports it as a channel failure.
            Reply::Refused { reason, .. } => Err(TransportError::Protocol(format!(
                "the broker refused {op:?}: {reason}"
            ))),
            Reply::Failed { message, .. } => Err(TransportError::Protocol(message)),
            r => Err(TransportError::Protocol(format!(
                "broker answered a hypercall with {r:?}"
            ))),
        }
    }
}

/// A host function whose config space, BARs, sysfs operations, INTx acknowledgement and
/// status are reached through the broker. The worker holds only a duplicate of the INTx
/// notification fd, to wait on.
#[derive(Debug)]
pub struct BrokerDevice {
    client: Arc<BrokerClient>,
    host: PciAddress,
    facts: DeviceFacts,
    intx: Option<OwnedFd>,
}

impl BrokerDevice {
    /// Function `host` with `facts`, through `client`, without INTx.
    pub fn new(client: Arc<BrokerClient>, host: PciAddress, facts: DeviceFacts) -> Self {
        BrokerDevice {
            client,
            host,
            facts,
            intx: None,
        }
    }

    /// Function `host` as the broker's backend describes it, with its INTx notification fd
    /// if it has one.
    pub fn connect(client: Arc<BrokerClient>, host: PciAddress) -> Result<Self, Error> {
        let err = |message: String| Error::Backend {
            device: host.to_string(),
            message,
        };
        let sbdf = host.sbdf();
        let facts = match client.call(Request::Facts { sbdf }) {
            Ok(Reply::Facts { facts, .. }) => facts,
            Ok(r) => return Err(err(format!("broker answered facts with {r:?}"))),
            Err(e) => return Err(err(format!("broker: {e}"))),
        };
        let intx = match client.call_with_fds(Request::IntxFd { sbdf }) {
            Ok((Reply::Value { value: 0, .. }, _)) => None,
            Ok((Reply::Value { value: 1, .. }, mut fds)) if fds.len() == 1 => fds.pop(),
            Ok((r, _)) => return Err(err(format!("broker answered intx_fd with {r:?}"))),
            Err(e) => return Err(err(format!("broker: {e}"))),
        };
        Ok(BrokerDevice {
            client,
            host,
            facts,
            intx,
        })
    }

    fn ask(&self, req: Request) -> Result<Reply, Error> {
        let err = |message: String| Error::Backend {
            device: self.facts.name.clone(),
            message,
        };
        match self.client.call(req) {
            Err(e) => Err(err(format!("broker: {e}"))),
            Ok(Reply::Refused { reason, .. }) => Err(err(format!("the broker refused: {reason}"))),
            Ok(Reply::Failed { message, .. }) => Err(err(message)),
            Ok(Reply::Errno { what, errno, .. }) => Err(err(format!("{what}: errno {errno}"))),
            Ok(r) => Ok(r),
        }
    }

    fn bytes(&self, req: Request, buf: &mut [u8]) -> Result<(), Error> {
        match self.ask(req)? {
            Reply::Bytes { data, .. } if data.len() == buf.len() => {
                buf.copy_from_slice(&data);
                Ok(())
            }
            r => Err(Error::Backend {
                device: self.facts.name.clone(),
                message: format!("broker answered a read with {r:?}"),
            }),
        }
    }

    fn sysfs(&self, op: SysfsOp) -> Result<(bool, Option<String>), Error> {
        match self.ask(Request::Sysfs {
            sbdf: self.host.sbdf(),
            op,
        })? {
            Reply::Sysfs { done, driver, .. } => Ok((done, driver)),
            r => Err(Error::Backend {
                device: self.facts.name.clone(),
                message: format!("broker answered {op:?} with {r:?}"),
            }),
        }
    }
}

impl HostDevice for BrokerDevice {
    crate::backend::answers_learned_at_open!(facts.learned);

    fn name(&self) -> String {
        self.facts.name.clone()
    }
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), Error> {
        let len = u16::try_from(buf.len()).map_err(|_| Error::Backend {
            device: self.facts.name.clone(),
            message: "config read too long".into(),
        })?;
        self.bytes(
            Request::ConfigRead {
                sbdf: self.host.sbdf(),
                offset,
                len,
            },
            buf,
        )
    }
    fn write_config(&mut self, offset: u16, data: &[u8]) -> Result<(), Error> {
        self.ask(Request::ConfigWrite {
            sbdf: self.host.sbdf(),
            offset,
            data: data.to_vec(),
        })
        .map(|_| ())
    }
    fn read_bar(&self, index: u8, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.bytes(
            Request::BarRead {
                sbdf: self.host.sbdf(),
                bar: index,
                offset,
                len: buf.len() as u8,
            },
            buf,
        )
    }
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.ask(Request::BarWrite {
            sbdf: self.host.sbdf(),
            bar: index,
            offset,
            data: data.to_vec(),
        })
        .map(|_| ())
    }
    fn enable_decode(&mut self) -> Result<(), Error> {
        self.sysfs(SysfsOp::EnableDecode).map(|_| ())
    }
    fn disable_decode(&mut self) -> Result<(), Error> {
        self.sysfs(SysfsOp::DisableDecode).map(|_| ())
    }
    fn reset(&mut self) -> Result<bool, Error> {
        self.sysfs(SysfsOp::Reset).map(|(d, _)| d)
    }
    fn reprobe_host_driver(&mut self) -> Result<(), Error> {
        self.sysfs(SysfsOp::ReprobeDriver).map(|_| ())
    }
    fn detach_host_driver(&mut self) -> Result<Option<String>, Error> {
        self.sysfs(SysfsOp::DetachDriver).map(|(_, d)| d)
    }
    fn intx_fd(&self) -> Option<std::os::fd::RawFd> {
        self.intx.as_ref().map(|f| f.as_raw_fd())
    }
    fn intx_ack(&mut self) -> Result<u64, Error> {
        if self.intx.is_none() {
            return Ok(0);
        }
        match self.ask(Request::IntxAck {
            sbdf: self.host.sbdf(),
        })? {
            Reply::Value { value, .. } => Ok(value),
            r => Err(Error::Backend {
                device: self.facts.name.clone(),
                message: format!("broker answered intx_ack with {r:?}"),
            }),
        }
    }
    fn status(&self) -> serde_json::Value {
        match self.ask(Request::Status {
            sbdf: self.host.sbdf(),
        }) {
            Ok(Reply::Status { json, .. }) => {
                serde_json::from_str(&json).unwrap_or(serde_json::Value::Null)
            }
            Ok(r) => serde_json::json!({ "broker": format!("unexpected answer {r:?}") }),
            Err(e) => serde_json::json!({ "broker": e.to_string() }),
        }
    }
}
