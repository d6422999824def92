//! The source's side: one registered pin ([`IrqLine`]).

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::wire::{nix_io, send_frame};
use crate::*;

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
