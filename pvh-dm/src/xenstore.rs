//! The xenstore wire protocol, enough to watch `@releaseDomain` (and read a node).
//!
//! Messages (xen/include/public/io/xs_wire.h, Xen 4.17): a header `struct xsd_sockmsg { u32
//! type; u32 req_id; u32 tx_id; u32 len; }` in the host's byte order, then `len` bytes of
//! payload (at most `XENSTORE_PAYLOAD_MAX` = 4096). `XS_WATCH` (4) takes `path\0token\0` and is
//! answered `OK\0`; xenstored then sends `XS_WATCH_EVENT` (15) with `path\0token\0` once at
//! once and again on every change. `XS_ERROR` (16) carries an errno name. `@releaseDomain`
//! fires when any domain shuts down or is destroyed (xenstored's `domain_cleanup` on
//! `VIRQ_DOM_EXC`): the watcher must then look at the domain it cares about.
//!
//! The connection is either xenstored's Unix socket (`/run/xenstored/socket`) or the dom0
//! kernel's `/dev/xen/xenbus`, which takes the same messages through read and write. Reads
//! are unbuffered, so that `poll` on the descriptor tells whether a message is waiting.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// `XS_READ`.
pub const XS_READ: u32 = 2;
/// `XS_WRITE`.
pub const XS_WRITE: u32 = 11;
/// `XS_WATCH`.
pub const XS_WATCH: u32 = 4;
/// `XS_UNWATCH`.
pub const XS_UNWATCH: u32 = 5;
/// `XS_WATCH_EVENT`.
pub const XS_WATCH_EVENT: u32 = 15;
/// `XS_ERROR`.
pub const XS_ERROR: u32 = 16;
/// `XENSTORE_PAYLOAD_MAX`.
pub const PAYLOAD_MAX: usize = 4096;
/// Header length.
pub const HEADER_LEN: usize = 16;

/// Where pvh-dm looks for xenstore, in order (after `$XENSTORED_PATH`).
pub const DEFAULT_PATHS: &[&str] = &[
    "/run/xenstored/socket",
    "/var/run/xenstored/socket",
    "/dev/xen/xenbus",
];

/// A xenstore problem.
#[derive(Debug, thiserror::Error)]
pub enum XsError {
    /// No xenstore to connect to.
    #[error("cannot reach xenstore (tried {tried}): {source}")]
    Connect {
        /// Paths tried.
        tried: String,
        /// The last error.
        #[source]
        source: io::Error,
    },
    /// I/O on the connection.
    #[error("xenstore connection: {0}")]
    Io(#[from] io::Error),
    /// xenstored answered with an error.
    #[error("xenstore {op}: {errno}")]
    Refused {
        /// The operation.
        op: &'static str,
        /// xenstored's errno name.
        errno: String,
    },
    /// A malformed message.
    #[error("xenstore: malformed message: {0}")]
    Protocol(String),
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    /// Type.
    pub ty: u32,
    /// Request id (echoed in the reply).
    pub req_id: u32,
    /// Transaction id.
    pub tx_id: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Msg {
    /// Encode header and payload as one buffer (one `write` on /dev/xen/xenbus).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.payload.len());
        b.extend_from_slice(&self.ty.to_ne_bytes());
        b.extend_from_slice(&self.req_id.to_ne_bytes());
        b.extend_from_slice(&self.tx_id.to_ne_bytes());
        b.extend_from_slice(&(self.payload.len() as u32).to_ne_bytes());
        b.extend_from_slice(&self.payload);
        b
    }

    /// Read one message from `r`.
    pub fn read_from(r: &mut impl Read) -> Result<Msg, XsError> {
        let mut h = [0u8; HEADER_LEN];
        r.read_exact(&mut h)?;
        let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let len = w(12) as usize;
        if len > PAYLOAD_MAX {
            return Err(XsError::Protocol(format!("payload of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Msg {
            ty: w(0),
            req_id: w(4),
            tx_id: w(8),
            payload,
        })
    }

    /// The payload's NUL-separated strings.
    pub fn strings(&self) -> Vec<String> {
        let p = self.payload.strip_suffix(&[0]).unwrap_or(&self.payload);
        p.split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }
}

enum Conn {
    Socket(UnixStream),
    Dev(File),
}

impl Read for Conn {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Socket(s) => s.read(b),
            Conn::Dev(f) => f.read(b),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Socket(s) => s.write(b),
            Conn::Dev(f) => f.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A watch event: the path that fired and the watch's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Path.
    pub path: String,
    /// Token.
    pub token: String,
}

/// A connection to xenstore.
pub struct Xenstore {
    conn: Conn,
    path: PathBuf,
    next_req: u32,
    events: VecDeque<WatchEvent>,
}

impl Xenstore {
    /// Connect: `path` if given, else `$XENSTORED_PATH`, else [`DEFAULT_PATHS`] in order.
    pub fn open(path: Option<&Path>) -> Result<Xenstore, XsError> {
        let candidates: Vec<PathBuf> = match path {
            Some(p) => vec![p.into()],
            None => std::env::var_os("XENSTORED_PATH")
                .map(PathBuf::from)
                .into_iter()
                .chain(DEFAULT_PATHS.iter().map(PathBuf::from))
                .collect(),
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no path");
        for p in &candidates {
            match Self::open_one(p) {
                Ok(conn) => {
                    return Ok(Xenstore {
                        conn,
                        path: p.clone(),
                        next_req: 1,
                        events: VecDeque::new(),
                    })
                }
                Err(e) => last = e,
            }
        }
        Err(XsError::Connect {
            tried: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            source: last,
        })
    }

    fn open_one(p: &Path) -> io::Result<Conn> {
        let md = std::fs::metadata(p)?;
        if md.file_type().is_socket() {
            Ok(Conn::Socket(UnixStream::connect(p)?))
        } else {
            Ok(Conn::Dev(
                OpenOptions::new().read(true).write(true).open(p)?,
            ))
        }
    }

    /// Where it is connected.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor to poll for incoming messages.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.conn {
            Conn::Socket(s) => s.as_fd(),
            Conn::Dev(f) => f.as_fd(),
        }
    }

    /// Whether watch events read while waiting for a reply are queued.
    pub fn has_queued_events(&self) -> bool {
        !self.events.is_empty()
    }

    fn request(&mut self, op: &'static str, ty: u32, payload: Vec<u8>) -> Result<Msg, XsError> {
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let m = Msg {
            ty,
            req_id,
            tx_id: 0,
            payload,
        };
        self.conn.write_all(&m.encode())?;
        loop {
            let r = Msg::read_from(&mut self.conn)?;
            if r.ty == XS_WATCH_EVENT {
                self.queue_event(&r)?;
                continue;
            }
            if r.req_id != req_id {
                tracing::debug!(
                    got = r.req_id,
                    want = req_id,
                    "xenstore: reply to another request"
                );
                continue;
            }
            if r.ty == XS_ERROR {
                return Err(XsError::Refused {
                    op,
                    errno: r.strings().join(""),
                });
            }
            return Ok(r);
        }
    }

    fn queue_event(&mut self, m: &Msg) -> Result<(), XsError> {
        let s = m.strings();
        if s.len() < 2 {
            return Err(XsError::Protocol(format!("watch event {:?}", s)));
        }
        self.events.push_back(WatchEvent {
            path: s[0].clone(),
            token: s[1].clone(),
        });
        Ok(())
    }

    /// Watch `path` with `token`.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), XsError> {
        let mut p = Vec::new();
        p.extend_from_slice(path.as_bytes());
        p.push(0);
        p.extend_from_slice(token.as_bytes());
        p.push(0);
        self.request("watch", XS_WATCH, p).map(|_| ())
    }

    /// Write `value` to the node `path` (created if missing): `XS_WRITE` takes `path\0` then the
    /// value's bytes, without a terminating NUL (xs_wire.h; libxenstore's `xs_write`).
    pub fn write(&mut self, path: &str, value: &str) -> Result<(), XsError> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        self.request("write", XS_WRITE, p).map(|_| ())
    }

    /// Ask the guest's PV drivers to power off, as `xl shutdown` does: write `poweroff` to
    /// `/local/domain/DOMID/control/shutdown` (libxl__domain_pvcontrol and
    /// libxl__domain_pvcontrol_xspath, tools/libs/light/libxl_domain.c:746-800 in 4.17). Unlike
    /// `xl shutdown` this does not then wait up to 60 s for the guest to acknowledge
    /// (libxl__xswait_start with timeout_ms = 60 * 1000, line 793): a guest without PV drivers
    /// never does, and the caller watches the domain anyway.
    pub fn request_poweroff(&mut self, domid: u32) -> Result<(), XsError> {
        self.write(
            &format!("/local/domain/{domid}/control/shutdown"),
            "poweroff",
        )
    }

    /// Read a node (`None` if it does not exist).
    pub fn read(&mut self, path: &str) -> Result<Option<String>, XsError> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        match self.request("read", XS_READ, p) {
            Ok(m) => Ok(Some(String::from_utf8_lossy(&m.payload).into_owned())),
            Err(XsError::Refused { errno, .. }) if errno == "ENOENT" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next watch event: a queued one, else one read from the connection (blocks; call
    /// after `poll` said the descriptor is readable). Other messages are skipped.
    pub fn next_event(&mut self) -> Result<WatchEvent, XsError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        loop {
            let m = Msg::read_from(&mut self.conn)?;
            if m.ty == XS_WATCH_EVENT {
                self.queue_event(&m)?;
                if let Some(e) = self.events.pop_front() {
                    return Ok(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        let m = Msg {
            ty: XS_WATCH,
            req_id: 7,
            tx_id: 0,
            payload: b"@releaseDomain\0t\0".to_vec(),
        };
        let b = m.encode();
        assert_eq!(&b[..4], &4u32.to_ne_bytes());
        assert_eq!(&b[4..8], &7u32.to_ne_bytes());
        assert_eq!(&b[12..16], &17u32.to_ne_bytes());
        let back = Msg::read_from(&mut &b[..]).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.strings(), vec!["@releaseDomain", "t"]);
    }

    #[test]
    fn watch_against_a_fake_xenstored() {
        // The fake xenstored's answers: every one outside a transaction.
        fn reply(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
            Msg {
                ty,
                req_id,
                tx_id: 0,
                payload: payload.to_vec(),
            }
            .encode()
        }
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let m = Msg::read_from(&mut b).unwrap();
            assert_eq!(m.ty, XS_WATCH);
            // An event before the reply, as xenstored may send.
            let ev = reply(XS_WATCH_EVENT, 0, b"@releaseDomain\0tok\0");
            b.write_all(&ev).unwrap();
            b.write_all(&reply(XS_WATCH, m.req_id, b"OK\0")).unwrap();
            b.write_all(&ev).unwrap();
            let m = Msg::read_from(&mut b).unwrap();
            assert_eq!(m.ty, XS_WRITE);
            assert_eq!(
                m.payload,
                b"/local/domain/7/control/shutdown\0poweroff".to_vec()
            );
            b.write_all(&reply(XS_WRITE, m.req_id, b"OK\0")).unwrap();
            let m = Msg::read_from(&mut b).unwrap();
            assert_eq!(m.ty, XS_READ);
            b.write_all(&reply(XS_ERROR, m.req_id, b"ENOENT\0"))
                .unwrap();
        });
        let mut xs = Xenstore {
            conn: Conn::Socket(a),
            path: "pair".into(),
            next_req: 1,
            events: VecDeque::new(),
        };
        xs.watch("@releaseDomain", "tok").unwrap();
        assert!(xs.has_queued_events());
        let e = xs.next_event().unwrap();
        assert_eq!(
            (e.path.as_str(), e.token.as_str()),
            ("@releaseDomain", "tok")
        );
        let e = xs.next_event().unwrap();
        assert_eq!(e.token, "tok");
        xs.request_poweroff(7).unwrap();
        assert_eq!(xs.read("/local/domain/5/name").unwrap(), None);
        t.join().unwrap();
    }
}
