//! The wire format: frames, their validation, and the errors of both sides.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};

/// Frame magic: the bytes `"IRQL"` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"IRQL");
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Size of every frame in bytes.
pub const FRAME_LEN: usize = 16;
/// Highest number of pins a server can serve (a pin number is one byte).
pub const MAX_PINS: usize = 256;
/// Default number of registrations one server accepts at once.
pub const DEFAULT_MAX_SOURCES: usize = 256;
/// How long [`IrqLine::connect`](crate::IrqLine::connect) waits for the IOAPIC's answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const KIND_REGISTER: u8 = 1;
pub(crate) const KIND_DEASSERT: u8 = 2;
pub(crate) const KIND_ACCEPTED: u8 = 0x81;
pub(crate) const KIND_REFUSED: u8 = 0x82;

/// Identifies one registration (one connection) on an [`IrqLineServer`](crate::IrqLineServer).
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

/// One protocol message (see the crate docs for the wire format).
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

pub(crate) fn nix_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Sends one frame (and optionally fds) without raising SIGPIPE on a closed peer.
pub(crate) fn send_frame(fd: RawFd, frame: &Frame, fds: &[RawFd]) -> io::Result<()> {
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
