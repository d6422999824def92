//! The IOAPIC's side: the listener and its connections ([`IrqLineServer`]).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use serde::{Deserialize, Serialize};

use ioreq_server::ratelimit::RateLimit;
use ioreq_server::socket_access::SocketAccess;

use crate::wire::{nix_io, send_frame};
use crate::*;

/// What the server knows about one connection, for status reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The registration's id.
    pub source: SourceId,
    /// The pin, once registered (`None` while the connection has not registered yet).
    pub pin: Option<u8>,
    /// Whether its contribution is asserted.
    pub asserted: bool,
}

#[derive(Debug)]
struct Registered {
    pin: u8,
    trigger: OwnedFd,
    resample: OwnedFd,
    /// Sum of the values read from the trigger eventfd (wrapping).
    consumed: u64,
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    rx: [u8; FRAME_LEN],
    rx_len: usize,
    /// Fds that arrived with the first bytes of a frame not yet complete.
    pending_fds: Vec<OwnedFd>,
    reg: Option<Registered>,
}

/// Why a connection is dropped (for logs).
#[derive(Debug)]
enum Drop_ {
    Eof,
    Io(io::Error),
    Protocol(String),
}

/// The IOAPIC side: accepts registrations on a Unix socket, reads trigger eventfds and
/// `DEASSERT` frames, keeps the wired-OR per pin ([`LineTracker`]) and signals resample.
///
/// It is driven by the owner's event loop: watch [`IrqLineServer::fds`] for readability and
/// pass each readable fd to [`IrqLineServer::handle`], which never blocks and reports the pin
/// level changes to apply.
#[derive(Debug)]
pub struct IrqLineServer {
    listener: Option<UnixListener>,
    /// The socket file to remove on drop (only when this server created it).
    owned_path: Option<PathBuf>,
    pins: usize,
    max_sources: usize,
    conns: BTreeMap<SourceId, Conn>,
    next_id: u64,
    tracker: LineTracker,
    warn: RateLimit,
    /// Who may connect (checked on every connection, ioreq-server's [`SocketAccess`]).
    access: SocketAccess,
}

impl IrqLineServer {
    /// A server without a listener (connections come through [`IrqLineServer::adopt`]).
    pub fn unbound(pins: usize) -> Result<Self, IrqLineError> {
        if pins == 0 || pins > MAX_PINS {
            return Err(IrqLineError::PinCount(pins));
        }
        Ok(IrqLineServer {
            listener: None,
            owned_path: None,
            pins,
            max_sources: DEFAULT_MAX_SOURCES,
            conns: BTreeMap::new(),
            next_id: 1,
            tracker: LineTracker::new(pins),
            // Ten peer-triggered warnings per 10 s.
            warn: RateLimit::new(10, Duration::from_secs(10)),
            access: SocketAccess::PRIVATE,
        })
    }

    /// Binds a listening socket at `path` for `pins` pins. A stale socket file (nobody
    /// listening) is replaced; a live one is an error (`AddrInUse`). The file is removed when
    /// the server is dropped.
    pub fn bind(path: impl AsRef<Path>, pins: usize) -> Result<Self, IrqLineError> {
        Self::bind_with(path, pins, SocketAccess::PRIVATE)
    }

    /// [`IrqLineServer::bind`] with the access rule `access`: its file mode from the start
    /// (0600 for [`SocketAccess::PRIVATE`], 0660 and the group with `[control] group`);
    /// its peer check (`SO_PEERCRED`) again on every connection.
    pub fn bind_with(
        path: impl AsRef<Path>,
        pins: usize,
        access: SocketAccess,
    ) -> Result<Self, IrqLineError> {
        let path = path.as_ref();
        let bound = access.bind(path);
        let listener = match bound {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                // Only a socket nobody answers on may be replaced.
                let is_socket = {
                    use std::os::unix::fs::FileTypeExt;
                    std::fs::symlink_metadata(path)
                        .map(|m| m.file_type().is_socket())
                        .unwrap_or(false)
                };
                if is_socket && UnixStream::connect(path).is_err() {
                    std::fs::remove_file(path)?;
                    access.bind(path)?
                } else {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        };
        let mut server = Self::from_listener(listener, pins)?;
        server.owned_path = Some(path.to_path_buf());
        server.access = access;
        Ok(server)
    }

    /// A server on an existing listening socket (for example one passed by the launcher).
    pub fn from_listener(listener: UnixListener, pins: usize) -> Result<Self, IrqLineError> {
        listener.set_nonblocking(true)?;
        let mut server = Self::unbound(pins)?;
        server.listener = Some(listener);
        Ok(server)
    }

    /// Limits the number of simultaneous connections (registered or not); default
    /// [`DEFAULT_MAX_SOURCES`].
    pub fn set_max_sources(&mut self, max: usize) {
        self.max_sources = max;
    }

    /// Number of pins served.
    pub fn pins(&self) -> usize {
        self.pins
    }

    /// The socket path, if this server bound it.
    pub fn path(&self) -> Option<&Path> {
        self.owned_path.as_deref()
    }

    /// Takes an already connected stream as a new connection (it must register like any
    /// other). Returns the id the connection will have.
    pub fn adopt(&mut self, stream: UnixStream) -> io::Result<SourceId> {
        if self.conns.len() >= self.max_sources {
            return Err(io::Error::other("too many irq-line connections"));
        }
        stream.set_nonblocking(true)?;
        let id = SourceId(self.next_id);
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                stream,
                rx: [0; FRAME_LEN],
                rx_len: 0,
                pending_fds: Vec::new(),
                reg: None,
            },
        );
        Ok(id)
    }

    /// [`IrqLineServer::fds`], borrowed from the server (for `poll` and the like, which take
    /// borrowed fds).
    pub fn borrowed_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = Vec::with_capacity(1 + 2 * self.conns.len());
        if let Some(l) = &self.listener {
            fds.push(l.as_fd());
        }
        for c in self.conns.values() {
            fds.push(c.stream.as_fd());
            if let Some(r) = &c.reg {
                fds.push(r.trigger.as_fd());
            }
        }
        fds
    }

    /// Every fd to watch for readability: the listener, each connection, each trigger eventfd.
    /// Changes after [`IrqLineServer::handle`].
    pub fn fds(&self) -> Vec<RawFd> {
        // The same fds in the same order as the borrowed ones: one list to keep up to date.
        self.borrowed_fds().iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Handles readiness of `fd` (one of [`IrqLineServer::fds`]) without blocking, pushing the
    /// resulting pin level changes, in order, to `changes`. Returns false if `fd` is not one of
    /// this server's.
    pub fn handle(&mut self, fd: RawFd, changes: &mut Vec<PinChange>) -> bool {
        if self.listener.as_ref().is_some_and(|l| l.as_raw_fd() == fd) {
            self.accept_all();
            return true;
        }
        let found = self.conns.iter().find_map(|(id, c)| {
            if c.stream.as_raw_fd() == fd {
                Some((*id, false))
            } else if c.reg.as_ref().is_some_and(|r| r.trigger.as_raw_fd() == fd) {
                Some((*id, true))
            } else {
                None
            }
        });
        let Some((id, is_trigger)) = found else {
            return false;
        };
        let result = if is_trigger {
            self.drain_trigger(id, changes)
        } else {
            self.read_stream(id, changes)
        };
        if let Err(why) = result {
            self.close(id, why, changes);
        }
        true
    }

    /// An EOI cleared Remote IRR on `pin`: release every contribution on it and signal resample
    /// to every source registered on it. Returns how many sources were signalled. The pin's
    /// level is low afterwards (until a source asserts again).
    pub fn release_pin(&mut self, pin: u8) -> usize {
        self.tracker.release_pin(pin);
        let mut signalled = 0;
        for (id, c) in &self.conns {
            let Some(r) = c.reg.as_ref().filter(|r| r.pin == pin) else {
                continue;
            };
            match nix::unistd::write(&r.resample, &1u64.to_ne_bytes()) {
                Ok(_) | Err(Errno::EAGAIN) => signalled += 1,
                Err(e) => {
                    if self.warn.allow() {
                        tracing::warn!(%id, pin, error = %e, "irq-line: cannot signal resample");
                    }
                }
            }
        }
        signalled
    }

    /// The wired-OR level of `pin`.
    pub fn level(&self, pin: u8) -> bool {
        self.tracker.level(pin)
    }

    /// The tracker (per-source contributions).
    pub fn tracker(&self) -> &LineTracker {
        &self.tracker
    }

    /// All connections, for status reports.
    pub fn sources(&self) -> Vec<SourceInfo> {
        self.conns
            .iter()
            .map(|(id, c)| SourceInfo {
                source: *id,
                pin: c.reg.as_ref().map(|r| r.pin),
                asserted: c
                    .reg
                    .as_ref()
                    .is_some_and(|r| self.tracker.is_asserted(*id, r.pin)),
            })
            .collect()
    }

    fn accept_all(&mut self) {
        loop {
            let accepted = match &self.listener {
                Some(listener) => listener.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    if !self.access.allows(&stream) {
                        if self.warn.allow() {
                            tracing::warn!(
                                "irq-line: connection from a foreign uid refused (SO_PEERCRED: not root, not our uid, not in the socket group)"
                            );
                        }
                        continue;
                    }
                    if let Err(e) = self.adopt(stream) {
                        // The stream is dropped (closed): the peer sees end of file.
                        if self.warn.allow() {
                            tracing::warn!(error = %e, "irq-line: connection refused");
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ECONNABORTED, EMFILE...: nothing to do but try again on the next event.
                    if self.warn.allow() {
                        tracing::warn!(error = %e, "irq-line: accept failed");
                    }
                    break;
                }
            }
        }
    }

    /// Reads the trigger eventfd of `id` (nonblocking); a positive count asserts.
    fn drain_trigger(&mut self, id: SourceId, changes: &mut Vec<PinChange>) -> Result<(), Drop_> {
        let Some(reg) = self.conns.get_mut(&id).and_then(|c| c.reg.as_mut()) else {
            return Ok(());
        };
        let mut buf = [0u8; 8];
        let value = loop {
            match nix::unistd::read(reg.trigger.as_raw_fd(), &mut buf) {
                Ok(8) => break u64::from_ne_bytes(buf),
                Ok(n) => {
                    return Err(Drop_::Protocol(format!(
                        "trigger fd read {n} bytes: not an eventfd"
                    )))
                }
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Drop_::Io(nix_io(e))),
            }
        };
        if value == 0 {
            // An eventfd never reads 0.
            return Err(Drop_::Protocol("trigger fd read 0: not an eventfd".into()));
        }
        reg.consumed = reg.consumed.wrapping_add(value);
        let pin = reg.pin;
        if let Some(level) = self.tracker.set(id, pin, true) {
            changes.push(PinChange { pin, level });
        }
        Ok(())
    }

    fn read_stream(&mut self, id: SourceId, changes: &mut Vec<PinChange>) -> Result<(), Drop_> {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return Ok(());
            };
            let start = conn.rx_len;
            let (bytes, fds) = match ioreq_server::seqpacket::recv_stream(
                conn.stream.as_raw_fd(),
                &mut conn.rx[start..],
            ) {
                Ok(Some(got)) => got,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(Drop_::Protocol(e.to_string()))
                }
                Err(e) => return Err(Drop_::Io(e)),
            };
            if bytes == 0 {
                return Err(Drop_::Eof);
            }
            if !fds.is_empty() {
                if start != 0 || !conn.pending_fds.is_empty() {
                    return Err(Drop_::Protocol("fds in the middle of a frame".into()));
                }
                conn.pending_fds = fds;
            }
            conn.rx_len += bytes;
            if conn.rx_len < FRAME_LEN {
                continue;
            }
            conn.rx_len = 0;
            let raw = conn.rx;
            let fds = std::mem::take(&mut conn.pending_fds);
            let frame = Frame::decode(&raw).map_err(|e| Drop_::Protocol(e.to_string()))?;
            self.on_frame(id, frame, fds, changes)?;
        }
    }

    fn on_frame(
        &mut self,
        id: SourceId,
        frame: Frame,
        fds: Vec<OwnedFd>,
        changes: &mut Vec<PinChange>,
    ) -> Result<(), Drop_> {
        let pins = self.pins;
        let registered = self.conns.get(&id).is_some_and(|c| c.reg.is_some());
        let conn = self.conns.get_mut(&id).ok_or(Drop_::Eof)?;
        match (frame, registered) {
            (Frame::Register { pin }, false) => {
                let refuse = |conn: &Conn, reason: RefuseReason| {
                    let _ = send_frame(
                        conn.stream.as_raw_fd(),
                        &Frame::Refused { pin, reason },
                        &[],
                    );
                };
                if usize::from(pin) >= pins {
                    refuse(conn, RefuseReason::BadPin);
                    return Err(Drop_::Protocol(format!(
                        "pin {pin} out of range (pins: {pins})"
                    )));
                }
                let [trigger, resample]: [OwnedFd; 2] = match fds.try_into() {
                    Ok(pair) => pair,
                    Err(fds) => {
                        refuse(conn, RefuseReason::Protocol);
                        return Err(Drop_::Protocol(format!(
                            "REGISTER with {} fds, not 2",
                            fds.len()
                        )));
                    }
                };
                for fd in [&trigger, &resample] {
                    if let Err(why) = check_eventfd(fd.as_fd()) {
                        refuse(conn, RefuseReason::Protocol);
                        return Err(Drop_::Protocol(why));
                    }
                }
                send_frame(
                    conn.stream.as_raw_fd(),
                    &Frame::Accepted { pin, source: id },
                    &[],
                )
                .map_err(Drop_::Io)?;
                conn.reg = Some(Registered {
                    pin,
                    trigger,
                    resample,
                    consumed: 0,
                });
                tracing::info!(%id, pin, "irq-line: source registered");
                // Triggers written before the registration was processed count.
                self.drain_trigger(id, changes)
            }
            (Frame::Deassert { pin, triggers }, true) => {
                let reg_pin = conn.reg.as_ref().map(|r| r.pin);
                if reg_pin != Some(pin) || !fds.is_empty() {
                    return Err(Drop_::Protocol(format!(
                        "bad DEASSERT (pin {pin}, {} fds)",
                        fds.len()
                    )));
                }
                // Every trigger written before the frame is visible now: apply them first.
                self.drain_trigger(id, changes)?;
                let consumed = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.reg.as_ref())
                    .map_or(0, |r| r.consumed);
                if let Some(level) = self.tracker.set(id, pin, false) {
                    changes.push(PinChange { pin, level });
                }
                // More triggers than the frame counts: the source asserted again after it.
                if (consumed.wrapping_sub(triggers) as i64) > 0 {
                    if let Some(level) = self.tracker.set(id, pin, true) {
                        changes.push(PinChange { pin, level });
                    }
                }
                Ok(())
            }
            (frame, _) => Err(Drop_::Protocol(format!("unexpected frame {frame:?}"))),
        }
    }

    fn close(&mut self, id: SourceId, why: Drop_, changes: &mut Vec<PinChange>) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let pin = conn.reg.as_ref().map(|r| r.pin);
        if let Some(pin) = pin {
            if let Some(level) = self.tracker.set(id, pin, false) {
                changes.push(PinChange { pin, level });
            }
        }
        match why {
            Drop_::Eof => tracing::info!(%id, ?pin, "irq-line: source disconnected"),
            Drop_::Io(e) => {
                if self.warn.allow() {
                    tracing::warn!(%id, ?pin, error = %e, "irq-line: connection error, dropped");
                }
            }
            Drop_::Protocol(m) => {
                if self.warn.allow() {
                    tracing::warn!(%id, ?pin, "irq-line: protocol violation, dropped: {m}");
                }
            }
        }
    }
}

impl Drop for IrqLineServer {
    fn drop(&mut self) {
        if let Some(p) = &self.owned_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Checks that `fd` is an eventfd, where `/proc/self/fd` can tell (it may be absent in a
/// sandbox; then the values read from the fd are the only check).
fn check_eventfd(fd: BorrowedFd<'_>) -> Result<(), String> {
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(target) if target.as_os_str() == "anon_inode:[eventfd]" => {}
        Ok(target) => return Err(format!("fd is {}, not an eventfd", target.display())),
        Err(_) => {}
    }
    // The IOAPIC must never block on a peer's fd, whatever flags the peer created it with.
    // (A peer that made it with EFD_NONBLOCK, as irq-line's client does, costs no F_SETFL.)
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))
            .map_err(|e| format!("F_SETFL: {e}"))?;
    }
    Ok(())
}
