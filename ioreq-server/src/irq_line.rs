//! Interrupt-line protocol between an interrupt source and the IOAPIC (irqfd/resamplefd pairs).
//!
//! An *interrupt source* is a process that drives one input pin of the IOAPIC (for example
//! `pci-host-bridge` forwarding a passed-through device's INTx). The IOAPIC process listens on a
//! Unix stream socket; a source opens one connection per pin it drives (a *registration*) and
//! hands over two eventfds with `SCM_RIGHTS`:
//!
//! - **trigger** (source → IOAPIC): writing `1` asserts the source's contribution to the pin;
//! - **resample** (IOAPIC → source): the IOAPIC writes `1` after an EOI released the pin.
//!
//! Several registrations may share a pin: the pin is the wired-OR of their contributions (it is
//! asserted while any source on it is asserted). A connection that closes (the source exited or
//! crashed) withdraws its contribution, so a dead source can never hold a line.
//!
//! # Line semantics: latched assert, released by EOI (the KVM irqfd "resample" model)
//!
//! A contribution is a latch:
//! - a **trigger** write sets it;
//! - an **EOI** that clears Remote IRR on the pin (EOI register, or the 0x11 edge/level toggle)
//!   *releases every contribution on the pin* and then signals **resample** to every source
//!   registered on the pin. A source whose condition still holds (a device that still requests
//!   service) asserts again, which delivers the next interrupt;
//! - an explicit **deassert** (a [`Frame::Deassert`] message on the socket) clears it.
//!
//! Why a latch released at EOI rather than a plain level: a passed-through INTx is masked at the
//! device (by the source) while the guest handles it, so the source cannot see when the guest
//! driver quietens the device. If the IOAPIC re-checked a plain level at EOI it would see the
//! stale "asserted" and inject a spurious second interrupt for every real one. Releasing the
//! latch at EOI and letting the source re-check (and unmask its device) is exactly the
//! irqfd/resamplefd contract of KVM and VFIO INTx, so a trigger/resample pair can also be wired
//! to a kernel producer that only knows that contract.
//!
//! Why deassert travels on the socket and not on a second eventfd: an eventfd only carries a
//! count, and two eventfds (assert/deassert) lose the order of the events between them, so the
//! IOAPIC could not tell "assert, deassert" (line low) from "deassert, assert" (line high). A
//! deassert message therefore carries the number of trigger writes the source made before it
//! (`triggers`). On receiving it the IOAPIC first drains the trigger eventfd (every trigger
//! written before the message is visible by then, since the source wrote it before sending);
//! if it has now consumed more triggers than the message counts, the source asserted again after
//! deasserting, and the IOAPIC applies "deassert, then assert". The client ([`IrqLine`]) writes
//! exactly `1` per assert, which keeps the counts exact.
//!
//! Edge-triggered pins see the same contributions: the rising edge of the wired-OR fires, so an
//! edge source must deassert before it can produce another edge ([`IrqLine::pulse`] does both).
//! An EOI never happens for an edge interrupt, so no resample either.
//!
//! # Wire format
//!
//! Every message is one 16-byte frame, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic [`MAGIC`] (`"IRQL"`) |
//! | 4 | 1 | protocol version [`PROTOCOL_VERSION`] (1) |
//! | 5 | 1 | kind (below) |
//! | 6 | 1 | pin |
//! | 7 | 1 | reserved, 0 |
//! | 8 | 8 | argument (depends on kind) |
//!
//! | kind | direction | argument | meaning |
//! |---|---|---|---|
//! | 1 `REGISTER` | source → IOAPIC | 0 | first and only first frame; carries exactly two fds (trigger, resample) |
//! | 2 `DEASSERT` | source → IOAPIC | trigger writes so far | clear this source's contribution (see above) |
//! | 0x81 `ACCEPTED` | IOAPIC → source | source id | reply to REGISTER |
//! | 0x82 `REFUSED` | IOAPIC → source | [`RefuseReason`] code | reply to REGISTER; the IOAPIC closes the connection |
//!
//! The IOAPIC validates everything: magic, version, reserved byte, kind, pin range (the pin of a
//! DEASSERT must be the registered pin), the number of fds (two with REGISTER, none otherwise),
//! that the fds are eventfds (where `/proc/self/fd` can tell), and every value read from a
//! trigger eventfd. A peer that breaks any rule is disconnected (its contribution withdrawn);
//! nothing a peer sends can make the IOAPIC panic.
//!
//! # Who uses what
//! - A source: [`IrqLine::connect`], then [`IrqLine::assert`] / [`IrqLine::deassert`]; watch
//!   [`IrqLine::resample_fd`] and, when it is readable, call [`IrqLine::ack_resample`] and assert
//!   again if its condition still holds.
//! - The IOAPIC: [`IrqLineServer`] (listener and connections) with a [`LineTracker`] inside; it
//!   hands out [`PinChange`]s to apply to the pins and [`IrqLineServer::release_pin`] is called
//!   on every EOI that clears Remote IRR.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};

/// Frame magic: the bytes `"IRQL"` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"IRQL");
/// The protocol version this module speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Size of every frame in bytes.
pub const FRAME_LEN: usize = 16;
/// Highest number of pins a server can serve (a pin number is one byte).
pub const MAX_PINS: usize = 256;
/// Default number of registrations one server accepts at once.
pub const DEFAULT_MAX_SOURCES: usize = 256;
/// How long [`IrqLine::connect`] waits for the IOAPIC's answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const KIND_REGISTER: u8 = 1;
const KIND_DEASSERT: u8 = 2;
const KIND_ACCEPTED: u8 = 0x81;
const KIND_REFUSED: u8 = 0x82;

/// Most fds one `SCM_RIGHTS` message can carry on Linux (`SCM_MAX_FD`). The receive buffer is
/// sized for that, so that the kernel never truncates (a truncated list could not be closed).
const SCM_MAX_FD: usize = 253;

/// Identifies one registration (one connection) on an [`IrqLineServer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceId(pub u64);

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "source#{}", self.0)
    }
}

/// Why the IOAPIC refused a registration (argument of a `REFUSED` frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The pin is not below the IOAPIC's pin count (code 1).
    BadPin,
    /// The IOAPIC already serves as many registrations as it allows (code 2).
    TooManySources,
    /// The registration broke the protocol (wrong fds, bad frame; code 3).
    Protocol,
    /// A code this version does not know.
    Other(u64),
}

impl RefuseReason {
    /// The wire code.
    pub fn code(self) -> u64 {
        match self {
            RefuseReason::BadPin => 1,
            RefuseReason::TooManySources => 2,
            RefuseReason::Protocol => 3,
            RefuseReason::Other(c) => c,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u64) -> Self {
        match code {
            1 => RefuseReason::BadPin,
            2 => RefuseReason::TooManySources,
            3 => RefuseReason::Protocol,
            c => RefuseReason::Other(c),
        }
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::BadPin => f.write_str("pin out of range"),
            RefuseReason::TooManySources => f.write_str("too many sources"),
            RefuseReason::Protocol => f.write_str("protocol violation"),
            RefuseReason::Other(c) => write!(f, "unknown reason {c}"),
        }
    }
}

/// A frame that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Bytes 0..4 are not [`MAGIC`].
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// Byte 4 is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// Byte 7 is not zero.
    #[error("reserved byte is {0:#04x}, not 0")]
    Reserved(u8),
    /// Byte 5 names no known frame.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A field has a value its frame does not allow.
    #[error("bad argument {arg:#x} for frame kind {kind:#04x}")]
    BadArgument {
        /// Frame kind.
        kind: u8,
        /// The offending argument.
        arg: u64,
    },
}

/// One protocol message (see the module docs for the wire format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Source → IOAPIC, first frame of a connection, with the trigger and resample fds.
    Register {
        /// The pin to drive.
        pin: u8,
    },
    /// Source → IOAPIC: clear this source's contribution.
    Deassert {
        /// The registered pin.
        pin: u8,
        /// How many trigger writes (of 1) the source made before sending this frame.
        triggers: u64,
    },
    /// IOAPIC → source: the registration is in effect.
    Accepted {
        /// The registered pin.
        pin: u8,
        /// The id the IOAPIC gave the registration (for its logs and status).
        source: SourceId,
    },
    /// IOAPIC → source: the registration was refused; the connection is closed.
    Refused {
        /// The pin asked for.
        pin: u8,
        /// Why.
        reason: RefuseReason,
    },
}

impl Frame {
    /// The 16 wire bytes of this frame.
    pub fn encode(&self) -> [u8; FRAME_LEN] {
        let (kind, pin, arg) = match *self {
            Frame::Register { pin } => (KIND_REGISTER, pin, 0),
            Frame::Deassert { pin, triggers } => (KIND_DEASSERT, pin, triggers),
            Frame::Accepted { pin, source } => (KIND_ACCEPTED, pin, source.0),
            Frame::Refused { pin, reason } => (KIND_REFUSED, pin, reason.code()),
        };
        let mut b = [0u8; FRAME_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = PROTOCOL_VERSION;
        b[5] = kind;
        b[6] = pin;
        b[7] = 0;
        b[8..16].copy_from_slice(&arg.to_le_bytes());
        b
    }

    /// Decodes 16 wire bytes, validating every field.
    pub fn decode(b: &[u8; FRAME_LEN]) -> Result<Frame, ProtocolError> {
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        if b[4] != PROTOCOL_VERSION {
            return Err(ProtocolError::BadVersion(b[4]));
        }
        if b[7] != 0 {
            return Err(ProtocolError::Reserved(b[7]));
        }
        let (kind, pin) = (b[5], b[6]);
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[8..16]);
        let arg = u64::from_le_bytes(a);
        match kind {
            KIND_REGISTER if arg == 0 => Ok(Frame::Register { pin }),
            KIND_REGISTER => Err(ProtocolError::BadArgument { kind, arg }),
            KIND_DEASSERT => Ok(Frame::Deassert { pin, triggers: arg }),
            KIND_ACCEPTED => Ok(Frame::Accepted {
                pin,
                source: SourceId(arg),
            }),
            KIND_REFUSED => Ok(Frame::Refused {
                pin,
                reason: RefuseReason::from_code(arg),
            }),
            k => Err(ProtocolError::UnknownKind(k)),
        }
    }
}

/// Errors of the client side and of setting up a server.
#[derive(Debug, thiserror::Error)]
pub enum IrqLineError {
    /// A system call failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a valid frame.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer sent a valid frame that makes no sense at this point.
    #[error("unexpected frame {0:?}")]
    Unexpected(Frame),
    /// The IOAPIC refused the registration.
    #[error("registration of pin {pin} refused: {reason}")]
    Refused {
        /// The pin asked for.
        pin: u8,
        /// Why.
        reason: RefuseReason,
    },
    /// The IOAPIC did not answer in time.
    #[error("no answer from the IOAPIC within {0:?}")]
    Timeout(Duration),
    /// A server was asked for an impossible number of pins.
    #[error("pin count {0} is not in 1..={MAX_PINS}")]
    PinCount(usize),
}

fn nix_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Sends one frame (and optionally fds) without raising SIGPIPE on a closed peer.
fn send_frame(fd: RawFd, frame: &Frame, fds: &[RawFd]) -> io::Result<()> {
    let bytes = frame.encode();
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<UnixAddr>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).map_err(nix_io)?;
    if n != FRAME_LEN {
        // A 16-byte send on a Unix stream socket is never split in practice; treat a short
        // write as a broken connection rather than trying to resume mid-frame.
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write of an irq-line frame",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// The source's end of one registered pin.
///
/// Created by [`IrqLine::connect`]. Dropping it closes the connection, which withdraws the
/// source's contribution at the IOAPIC.
#[derive(Debug)]
pub struct IrqLine {
    stream: UnixStream,
    pin: u8,
    source: SourceId,
    trigger: EventFd,
    resample: EventFd,
    /// Number of trigger writes (each writes 1) so far.
    triggers: u64,
    /// The source's own view of its contribution.
    asserted: bool,
}

impl IrqLine {
    /// Connects to the IOAPIC socket at `socket_path` and registers as a source for `pin`,
    /// waiting up to [`DEFAULT_CONNECT_TIMEOUT`] for the answer. The line starts deasserted.
    pub fn connect(socket_path: impl AsRef<Path>, pin: u8) -> Result<IrqLine, IrqLineError> {
        Self::connect_timeout(socket_path, pin, DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`IrqLine::connect`] with an explicit timeout for the IOAPIC's answer.
    pub fn connect_timeout(
        socket_path: impl AsRef<Path>,
        pin: u8,
        timeout: Duration,
    ) -> Result<IrqLine, IrqLineError> {
        let stream = UnixStream::connect(socket_path.as_ref())?;
        Self::register_on(stream, pin, timeout)
    }

    /// Registers over an already connected stream (for example one end of a socketpair that
    /// the other end gave to [`IrqLineServer::adopt`]).
    pub fn register_on(
        stream: UnixStream,
        pin: u8,
        timeout: Duration,
    ) -> Result<IrqLine, IrqLineError> {
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let trigger = EventFd::from_flags(flags).map_err(nix_io)?;
        let resample = EventFd::from_flags(flags).map_err(nix_io)?;
        send_frame(
            stream.as_raw_fd(),
            &Frame::Register { pin },
            &[trigger.as_raw_fd(), resample.as_raw_fd()],
        )?;

        // Wait for the answer; a zero timeout would mean "block forever" to std, so clamp it.
        let timeout = timeout.max(Duration::from_millis(1));
        stream.set_read_timeout(Some(timeout))?;
        let mut reply = [0u8; FRAME_LEN];
        if let Err(e) = (&stream).read_exact(&mut reply) {
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    IrqLineError::Timeout(timeout)
                }
                _ => IrqLineError::Io(e),
            });
        }
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(Some(DEFAULT_CONNECT_TIMEOUT))?;
        match Frame::decode(&reply)? {
            Frame::Accepted { pin: p, source } if p == pin => Ok(IrqLine {
                stream,
                pin,
                source,
                trigger,
                resample,
                triggers: 0,
                asserted: false,
            }),
            Frame::Refused { pin, reason } => Err(IrqLineError::Refused { pin, reason }),
            other => Err(IrqLineError::Unexpected(other)),
        }
    }

    /// The pin this line drives.
    pub fn pin(&self) -> u8 {
        self.pin
    }

    /// The id the IOAPIC gave this registration.
    pub fn source(&self) -> SourceId {
        self.source
    }

    /// Whether this source currently asserts, as far as it knows: true after [`IrqLine::assert`]
    /// until [`IrqLine::deassert`] or until a resample is acknowledged.
    pub fn is_asserted(&self) -> bool {
        self.asserted
    }

    /// Asserts this source's contribution (one write of 1 to the trigger eventfd). A no-op
    /// while the line is already asserted: after an EOI the IOAPIC releases the line and
    /// signals resample, so acknowledge it ([`IrqLine::ack_resample`]) and then assert again if
    /// the condition still holds.
    pub fn assert(&mut self) -> Result<(), IrqLineError> {
        if self.asserted {
            return Ok(());
        }
        self.trigger.write(1).map_err(nix_io)?;
        self.triggers = self.triggers.wrapping_add(1);
        self.asserted = true;
        Ok(())
    }

    /// Clears this source's contribution (a `DEASSERT` frame). A no-op while not asserted.
    pub fn deassert(&mut self) -> Result<(), IrqLineError> {
        if !self.asserted {
            return Ok(());
        }
        send_frame(
            self.stream.as_raw_fd(),
            &Frame::Deassert {
                pin: self.pin,
                triggers: self.triggers,
            },
            &[],
        )?;
        self.asserted = false;
        Ok(())
    }

    /// Asserts and deasserts: one rising edge, for sources on edge-triggered pins.
    pub fn pulse(&mut self) -> Result<(), IrqLineError> {
        self.assert()?;
        self.deassert()
    }

    /// The resample eventfd, to watch for readability in the source's own event loop.
    pub fn resample_fd(&self) -> BorrowedFd<'_> {
        self.resample.as_fd()
    }

    /// The connection to the IOAPIC; it becomes readable (end of file) when the IOAPIC goes
    /// away.
    pub fn socket_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Consumes a pending resample without blocking. Returns whether there was one; if so the
    /// IOAPIC has released this source's contribution, which [`IrqLine::is_asserted`] now
    /// reflects: re-check the condition and [`IrqLine::assert`] again if it still holds.
    pub fn ack_resample(&mut self) -> Result<bool, IrqLineError> {
        // Poll first so that this never blocks, whatever the fd's O_NONBLOCK state.
        if !poll_readable(self.resample.as_fd(), PollTimeout::ZERO)? {
            return Ok(false);
        }
        match self.resample.read() {
            Ok(n) if n > 0 => {
                self.asserted = false;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(nix_io(e).into()),
        }
    }

    /// Waits up to `timeout` (forever with `None`) for a resample and acknowledges it (see
    /// [`IrqLine::ack_resample`]). Returns whether one came.
    pub fn wait_resample(&mut self, timeout: Option<Duration>) -> Result<bool, IrqLineError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
            };
            if poll_readable(self.resample.as_fd(), left)? && self.ack_resample()? {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }
}

/// Whether `fd` is readable within `timeout` (EINTR counts as "not yet").
fn poll_readable(fd: BorrowedFd<'_>, timeout: PollTimeout) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(0) | Err(Errno::EINTR) => Ok(false),
        Ok(_) => Ok(fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))),
        Err(e) => Err(nix_io(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Server side: the wired-OR tracker
// ---------------------------------------------------------------------------------------------

/// A pin's level changed: apply it to the interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinChange {
    /// The pin.
    pub pin: u8,
    /// The new wired-OR level (true = asserted).
    pub level: bool,
}

/// Per-source contributions and the wired-OR level of every pin. Pure state, no I/O.
#[derive(Clone, Debug, Default)]
pub struct LineTracker {
    /// Asserted contributions, ordered by pin.
    asserted: BTreeSet<(u8, SourceId)>,
    /// Number of asserted contributions per pin.
    count: Vec<u32>,
}

impl LineTracker {
    /// A tracker for `pins` pins (at most [`MAX_PINS`]), all deasserted.
    pub fn new(pins: usize) -> Self {
        LineTracker {
            asserted: BTreeSet::new(),
            count: vec![0; pins.min(MAX_PINS)],
        }
    }

    /// Number of pins.
    pub fn pins(&self) -> usize {
        self.count.len()
    }

    /// Sets `source`'s contribution to `pin`. Returns the pin's new level if it changed.
    /// A pin outside the tracker is ignored.
    pub fn set(&mut self, source: SourceId, pin: u8, asserted: bool) -> Option<bool> {
        let slot = self.count.get_mut(usize::from(pin))?;
        let before = *slot > 0;
        if asserted {
            if self.asserted.insert((pin, source)) {
                *slot += 1;
            }
        } else if self.asserted.remove(&(pin, source)) {
            *slot -= 1;
        }
        let after = *slot > 0;
        (before != after).then_some(after)
    }

    /// Whether `source` asserts `pin`.
    pub fn is_asserted(&self, source: SourceId, pin: u8) -> bool {
        self.asserted.contains(&(pin, source))
    }

    /// The wired-OR level of `pin` (false outside the tracker).
    pub fn level(&self, pin: u8) -> bool {
        self.count.get(usize::from(pin)).is_some_and(|&c| c > 0)
    }

    /// Releases every contribution on `pin` (an EOI). Returns the sources that were asserted.
    pub fn release_pin(&mut self, pin: u8) -> Vec<SourceId> {
        let released: Vec<SourceId> = self
            .asserted
            .range((pin, SourceId(0))..=(pin, SourceId(u64::MAX)))
            .map(|&(_, s)| s)
            .collect();
        for s in &released {
            self.asserted.remove(&(pin, *s));
        }
        if let Some(c) = self.count.get_mut(usize::from(pin)) {
            *c = 0;
        }
        released
    }
}

// ---------------------------------------------------------------------------------------------
// Server side: listener and connections
// ---------------------------------------------------------------------------------------------

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
    /// Who may connect (checked on every connection, [`crate::socket_access`]).
    access: crate::socket_access::SocketAccess,
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
            warn: RateLimit::new(),
            access: crate::socket_access::SocketAccess::PRIVATE,
        })
    }

    /// Binds a listening socket at `path` for `pins` pins. A stale socket file (nobody
    /// listening) is replaced; a live one is an error (`AddrInUse`). The file is removed when
    /// the server is dropped.
    pub fn bind(path: impl AsRef<Path>, pins: usize) -> Result<Self, IrqLineError> {
        Self::bind_with(path, pins, crate::socket_access::SocketAccess::PRIVATE)
    }

    /// [`IrqLineServer::bind`] with the access rule of `access`: mode 0600 from the start, or
    /// 0660 and its group; `SO_PEERCRED` is checked again on every connection.
    pub fn bind_with(
        path: impl AsRef<Path>,
        pins: usize,
        access: crate::socket_access::SocketAccess,
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

    /// Every fd to watch for readability: the listener, each connection, each trigger eventfd.
    /// Changes after [`IrqLineServer::handle`].
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = Vec::with_capacity(1 + 2 * self.conns.len());
        if let Some(l) = &self.listener {
            fds.push(l.as_raw_fd());
        }
        for c in self.conns.values() {
            fds.push(c.stream.as_raw_fd());
            if let Some(r) = &c.reg {
                fds.push(r.trigger.as_raw_fd());
            }
        }
        fds
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
        let mut cmsg_buf = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return Ok(());
            };
            let start = conn.rx_len;
            let (bytes, fds) = {
                let mut iov = [IoSliceMut::new(&mut conn.rx[start..])];
                let msg = match recvmsg::<UnixAddr>(
                    conn.stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg_buf),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(m) => m,
                    Err(Errno::EAGAIN) => return Ok(()),
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(Drop_::Io(nix_io(e))),
                };
                let mut fds: Vec<OwnedFd> = Vec::new();
                let mut bad_cmsg = false;
                match msg.cmsgs() {
                    Ok(cmsgs) => {
                        for c in cmsgs {
                            match c {
                                ControlMessageOwned::ScmRights(raw) => {
                                    for fd in raw {
                                        // SAFETY: the kernel just installed `fd` in this process
                                        // for this SCM_RIGHTS message; nothing else owns it, and
                                        // wrapping it at once guarantees it is closed.
                                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                                    }
                                }
                                _ => bad_cmsg = true,
                            }
                        }
                    }
                    // MSG_CTRUNC: cannot happen with a buffer for SCM_MAX_FD fds.
                    Err(_) => bad_cmsg = true,
                }
                if bad_cmsg {
                    return Err(Drop_::Protocol(
                        "unexpected or truncated control message".into(),
                    ));
                }
                (msg.bytes, fds)
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
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| format!("F_SETFL: {e}"))?;
    Ok(())
}

/// A simple "at most N messages per window" limiter for peer-triggered warnings.
#[derive(Debug)]
struct RateLimit {
    window_start: Option<Instant>,
    count: u32,
}

impl RateLimit {
    const PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    fn new() -> Self {
        RateLimit {
            window_start: None,
            count: 0,
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        match self.window_start {
            Some(s) if now.duration_since(s) < Self::WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.count = 0;
            }
        }
        self.count += 1;
        self.count <= Self::PER_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::thread;

    /// Runs the server's event handling until `done` or 5 s pass.
    fn pump_until(
        server: &mut IrqLineServer,
        changes: &mut Vec<PinChange>,
        mut done: impl FnMut(&IrqLineServer) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(server) {
            assert!(Instant::now() < deadline, "timed out pumping the server");
            pump_once(server, changes, 20);
        }
    }

    fn pump_once(server: &mut IrqLineServer, changes: &mut Vec<PinChange>, timeout_ms: u16) {
        let raw = server.fds();
        let ready: Vec<RawFd> = {
            let borrowed: Vec<BorrowedFd<'_>> = raw
                .iter()
                // SAFETY: the fds belong to `server`, which outlives this block and is not
                // touched while the borrowed fds are alive.
                .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
                .collect();
            let mut pfds: Vec<PollFd<'_>> = borrowed
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            poll(&mut pfds, PollTimeout::from(timeout_ms)).unwrap();
            pfds.iter()
                .zip(&raw)
                .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, fd)| *fd)
                .collect()
        };
        for fd in ready {
            server.handle(fd, changes);
        }
    }

    fn connect_pair(server: &mut IrqLineServer, pin: u8) -> Result<IrqLine, IrqLineError> {
        let (a, b) = UnixStream::pair().unwrap();
        server.adopt(b).unwrap();
        let client = thread::spawn(move || IrqLine::register_on(a, pin, Duration::from_secs(5)));
        let mut changes = Vec::new();
        pump_until(server, &mut changes, |_| client.is_finished());
        client.join().unwrap()
    }

    #[test]
    fn frame_round_trip_and_validation() {
        let frames = [
            Frame::Register { pin: 7 },
            Frame::Deassert {
                pin: 3,
                triggers: u64::MAX,
            },
            Frame::Accepted {
                pin: 0,
                source: SourceId(42),
            },
            Frame::Refused {
                pin: 200,
                reason: RefuseReason::BadPin,
            },
            Frame::Refused {
                pin: 1,
                reason: RefuseReason::Other(99),
            },
        ];
        for f in frames {
            assert_eq!(Frame::decode(&f.encode()), Ok(f));
        }
        let good = Frame::Register { pin: 1 }.encode();
        let mut b = good;
        b[0] ^= 1;
        assert!(matches!(Frame::decode(&b), Err(ProtocolError::BadMagic(_))));
        let mut b = good;
        b[4] = 2;
        assert_eq!(Frame::decode(&b), Err(ProtocolError::BadVersion(2)));
        let mut b = good;
        b[7] = 1;
        assert_eq!(Frame::decode(&b), Err(ProtocolError::Reserved(1)));
        let mut b = good;
        b[5] = 0x55;
        assert_eq!(Frame::decode(&b), Err(ProtocolError::UnknownKind(0x55)));
        let mut b = good;
        b[8] = 1;
        assert!(matches!(
            Frame::decode(&b),
            Err(ProtocolError::BadArgument { .. })
        ));
        assert_eq!(&good[0..4], b"IRQL");
    }

    #[test]
    fn tracker_wired_or() {
        let mut t = LineTracker::new(4);
        let (a, b) = (SourceId(1), SourceId(2));
        assert_eq!(t.set(a, 2, true), Some(true));
        assert_eq!(t.set(b, 2, true), None);
        assert_eq!(t.set(a, 2, true), None);
        assert_eq!(t.set(a, 2, false), None);
        assert!(t.level(2));
        assert_eq!(t.set(b, 2, false), Some(false));
        assert!(!t.level(2));
        assert_eq!(
            t.set(a, 9, true),
            None,
            "pin outside the tracker is ignored"
        );
        t.set(a, 1, true);
        t.set(b, 1, true);
        t.set(b, 3, true);
        let mut released = t.release_pin(1);
        released.sort();
        assert_eq!(released, vec![a, b]);
        assert!(!t.level(1));
        assert!(t.level(3));
        assert!(t.release_pin(200).is_empty());
    }

    #[test]
    fn assert_deassert_resample_over_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("irqline-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ioapic.sock");
        let mut server = IrqLineServer::bind(&path, 24).unwrap();
        let p2 = path.clone();
        let client = thread::spawn(move || IrqLine::connect(&p2, 5));
        let mut changes = Vec::new();
        pump_until(&mut server, &mut changes, |_| client.is_finished());
        let mut line = client.join().unwrap().unwrap();
        assert_eq!(line.pin(), 5);
        assert_eq!(
            server.sources(),
            vec![SourceInfo {
                source: line.source(),
                pin: Some(5),
                asserted: false
            }]
        );

        line.assert().unwrap();
        pump_until(&mut server, &mut changes, |s| s.level(5));
        assert_eq!(
            changes,
            vec![PinChange {
                pin: 5,
                level: true
            }]
        );
        changes.clear();

        line.deassert().unwrap();
        pump_until(&mut server, &mut changes, |s| !s.level(5));
        assert_eq!(
            changes,
            vec![PinChange {
                pin: 5,
                level: false
            }]
        );
        changes.clear();

        // EOI while asserted: released, resample signalled, the source asserts again.
        line.assert().unwrap();
        pump_until(&mut server, &mut changes, |s| s.level(5));
        assert_eq!(server.release_pin(5), 1);
        assert!(!server.level(5));
        assert!(line.is_asserted());
        assert!(line.wait_resample(Some(Duration::from_secs(5))).unwrap());
        assert!(!line.is_asserted());
        assert!(
            !line.ack_resample().unwrap(),
            "one resample, acknowledged once"
        );
        line.assert().unwrap();
        changes.clear();
        pump_until(&mut server, &mut changes, |s| s.level(5));
        assert_eq!(
            changes,
            vec![PinChange {
                pin: 5,
                level: true
            }]
        );

        // Closing the connection withdraws the contribution.
        drop(line);
        changes.clear();
        pump_until(&mut server, &mut changes, |s| {
            !s.level(5) && s.sources().is_empty()
        });
        assert_eq!(
            changes,
            vec![PinChange {
                pin: 5,
                level: false
            }]
        );
        drop(server);
        assert!(!path.exists(), "socket file removed on drop");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn stale_socket_is_replaced_live_one_is_not() {
        let dir = std::env::temp_dir().join(format!("irqline-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves a stale socket file
        let live = IrqLineServer::bind(&path, 4).unwrap();
        assert!(IrqLineServer::bind(&path, 4).is_err());
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shared_pin_is_wired_or_and_all_sources_are_resampled() {
        let mut server = IrqLineServer::unbound(24).unwrap();
        let mut a = connect_pair(&mut server, 10).unwrap();
        let mut b = connect_pair(&mut server, 10).unwrap();
        let mut c = connect_pair(&mut server, 11).unwrap();
        let mut changes = Vec::new();
        a.assert().unwrap();
        b.assert().unwrap();
        pump_until(&mut server, &mut changes, |s| {
            s.tracker().is_asserted(b.source(), 10)
        });
        assert_eq!(
            changes,
            vec![PinChange {
                pin: 10,
                level: true
            }]
        );
        changes.clear();
        a.deassert().unwrap();
        pump_until(&mut server, &mut changes, |s| {
            !s.tracker().is_asserted(a.source(), 10)
        });
        assert!(changes.is_empty(), "b still holds the line");
        assert!(server.level(10));
        assert_eq!(server.release_pin(10), 2, "both sources on pin 10 are told");
        assert!(a.wait_resample(Some(Duration::from_secs(5))).unwrap());
        assert!(b.wait_resample(Some(Duration::from_secs(5))).unwrap());
        assert!(!c.ack_resample().unwrap(), "pin 11 is not resampled");
        c.assert().unwrap();
        pump_until(&mut server, &mut changes, |s| s.level(11));
    }

    #[test]
    fn deassert_then_assert_keeps_the_line_high() {
        let mut server = IrqLineServer::unbound(8).unwrap();
        let mut line = connect_pair(&mut server, 3).unwrap();
        let mut changes = Vec::new();
        // All three happen before the server looks: assert, deassert (frame), assert (eventfd).
        line.assert().unwrap();
        line.deassert().unwrap();
        line.assert().unwrap();
        // Let the stream (with the DEASSERT) be handled first: it drains the trigger eventfd,
        // seeing two triggers against a frame that counts one.
        let stream_fd = server.fds()[0];
        assert!(server.handle(stream_fd, &mut changes));
        assert!(server.level(3), "the line ends up asserted");
        assert_eq!(
            changes,
            vec![
                PinChange {
                    pin: 3,
                    level: true
                },
                PinChange {
                    pin: 3,
                    level: false
                },
                PinChange {
                    pin: 3,
                    level: true
                }
            ]
        );
        // And in the plain order it ends up low.
        line.deassert().unwrap();
        changes.clear();
        pump_until(&mut server, &mut changes, |s| !s.level(3));
    }

    #[test]
    fn bad_pin_and_limits_are_refused() {
        let mut server = IrqLineServer::unbound(24).unwrap();
        match connect_pair(&mut server, 24) {
            Err(IrqLineError::Refused {
                pin: 24,
                reason: RefuseReason::BadPin,
            }) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(server.sources().is_empty(), "refused connection is closed");
        server.set_max_sources(1);
        let _ok = connect_pair(&mut server, 0).unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        assert!(server.adopt(b).is_err());
    }

    /// Sends raw bytes (and fds) to a fresh connection and returns whether the server dropped it.
    fn feed(bytes: &[u8], fds: &[RawFd]) -> (bool, Vec<PinChange>, Vec<u8>) {
        let mut server = IrqLineServer::unbound(24).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let id = server.adopt(b).unwrap();
        if !bytes.is_empty() {
            let iov = [IoSlice::new(bytes)];
            let cmsg = [ControlMessage::ScmRights(fds)];
            let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
            sendmsg::<UnixAddr>(a.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
        }
        let mut changes = Vec::new();
        let fd = server.fds()[0];
        server.handle(fd, &mut changes);
        let dropped = !server.sources().iter().any(|s| s.source == id);
        a.set_nonblocking(true).unwrap();
        let mut reply = Vec::new();
        let _ = (&a).read_to_end(&mut reply);
        (dropped, changes, reply)
    }

    #[test]
    fn malformed_messages_close_the_peer() {
        let e1 = EventFd::new().unwrap();
        let e2 = EventFd::new().unwrap();
        let efds = [e1.as_raw_fd(), e2.as_raw_fd()];
        let reg = Frame::Register { pin: 1 }.encode();

        // Garbage.
        assert!(feed(&[0xAB; 16], &[]).0);
        // A valid REGISTER without fds, with one fd, with three.
        assert!(feed(&reg, &[]).0);
        assert!(feed(&reg, &efds[..1]).0);
        assert!(feed(&reg, &[efds[0], efds[1], efds[0]]).0);
        // Fds that are not eventfds.
        let (p1, p2) = nix::unistd::pipe().unwrap();
        let (dropped, _, reply) = feed(&reg, &[p1.as_raw_fd(), p2.as_raw_fd()]);
        assert!(dropped);
        assert_eq!(reply.len(), FRAME_LEN);
        assert_eq!(
            Frame::decode(reply[..16].try_into().unwrap()),
            Ok(Frame::Refused {
                pin: 1,
                reason: RefuseReason::Protocol
            })
        );
        // DEASSERT before REGISTER; REGISTER twice; DEASSERT for another pin.
        assert!(
            feed(
                &Frame::Deassert {
                    pin: 1,
                    triggers: 0
                }
                .encode(),
                &[]
            )
            .0
        );
        let mut twice = reg.to_vec();
        twice.extend_from_slice(&reg);
        assert!(feed(&twice, &efds).0);
        let mut other_pin = reg.to_vec();
        other_pin.extend_from_slice(
            &Frame::Deassert {
                pin: 2,
                triggers: 0,
            }
            .encode(),
        );
        assert!(feed(&other_pin, &efds).0);
        // A server-to-client frame sent by a client.
        assert!(
            feed(
                &Frame::Accepted {
                    pin: 1,
                    source: SourceId(1)
                }
                .encode(),
                &[]
            )
            .0
        );
        // A partial frame is kept, not an error.
        assert!(!feed(&reg[..7], &[]).0);
        // A good registration survives.
        let (dropped, _, reply) = feed(&reg, &efds);
        assert!(!dropped);
        assert!(matches!(
            Frame::decode(reply[..16].try_into().unwrap()),
            Ok(Frame::Accepted { pin: 1, .. })
        ));
    }

    #[test]
    fn fds_split_from_their_frame_are_refused() {
        let mut server = IrqLineServer::unbound(24).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        let id = server.adopt(b).unwrap();
        let reg = Frame::Register { pin: 1 }.encode();
        a.write_all(&reg[..4]).unwrap();
        let mut changes = Vec::new();
        let fd = server.fds()[0];
        server.handle(fd, &mut changes);
        assert!(
            server.sources().iter().any(|s| s.source == id),
            "a partial frame is kept"
        );
        let e1 = EventFd::new().unwrap();
        let fds = [e1.as_raw_fd(), e1.as_raw_fd()];
        let iov = [IoSlice::new(&reg[4..])];
        sendmsg::<UnixAddr>(
            a.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        server.handle(fd, &mut changes);
        assert!(!server.sources().iter().any(|s| s.source == id));
    }

    #[test]
    fn connect_times_out_without_an_answer_and_wait_resample_times_out() {
        let (a, b) = UnixStream::pair().unwrap();
        let t0 = Instant::now();
        match IrqLine::register_on(a, 1, Duration::from_millis(50)) {
            Err(IrqLineError::Timeout(_)) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(b);

        let mut server = IrqLineServer::unbound(4).unwrap();
        let mut line = connect_pair(&mut server, 2).unwrap();
        assert!(!line.wait_resample(Some(Duration::from_millis(20))).unwrap());
        assert!(!line.ack_resample().unwrap());
    }

    #[test]
    fn foreign_fd_is_not_handled() {
        let mut server = IrqLineServer::unbound(2).unwrap();
        let mut changes = Vec::new();
        assert!(!server.handle(12345, &mut changes));
        assert!(IrqLineServer::unbound(0).is_err());
        assert!(IrqLineServer::unbound(257).is_err());
    }
}

/// GSI of the first PCI INTx line: GSIs 0-15 are the ISA IRQs.
pub const PCI_INTX_GSI_OFFSET: u32 = 16;

/// THE INTx routing of a guest's root bus: the GSI (= pin of the IOAPIC whose GSI base is
/// `gsi_base`) that interrupt pin `pin` (the Interrupt Pin register: 1 = INTA# .. 4 = INTD#) of
/// the function in guest slot `slot` is wired to:
///
/// `GSI = gsi_base + 16 + ((slot + pin - 1) % 4)`
///
/// the PCI-to-PCI bridge swizzle (PCI-to-PCI Bridge Architecture 1.2, 9.1) applied to the root
/// bus, as QEMU's boards and most PC firmware route their root slots. pci-host-bridge raises
/// INTx on this GSI and guest-acpi's `_PRT` tells the guest the same: both call this function,
/// so they cannot disagree. `None` for a pin outside 1..=4 (0 = the function has no INTx).
pub fn pci_intx_gsi(gsi_base: u32, slot: u8, pin: u8) -> Option<u32> {
    if !(1..=4).contains(&pin) {
        return None;
    }
    Some(gsi_base + PCI_INTX_GSI_OFFSET + (u32::from(slot) + u32::from(pin) - 1) % 4)
}

#[cfg(test)]
mod swizzle_tests {
    use super::pci_intx_gsi;

    #[test]
    fn root_bus_swizzle() {
        assert_eq!(pci_intx_gsi(0, 0, 1), Some(16));
        assert_eq!(pci_intx_gsi(0, 2, 1), Some(18));
        assert_eq!(pci_intx_gsi(0, 2, 3), Some(16));
        assert_eq!(pci_intx_gsi(0, 31, 4), Some(18));
        assert_eq!(pci_intx_gsi(24, 1, 1), Some(41));
        assert_eq!(pci_intx_gsi(0, 5, 0), None);
        assert_eq!(pci_intx_gsi(0, 5, 5), None);
    }
}
