//! The snapshot backend's INTx: a real eventfd that plays the host interrupt.
//!
//! A snapshot has no hardware to interrupt, so a test does it: writing to this eventfd means
//! "the device asserted INTx and the host's handler masked it". The bridge watches the fd
//! exactly as it watches `/dev/uioN` for the sysfs backend ([`super::uio`]); there is no
//! separate test path in the bridge.
//!
//! A test in another process (the bridge runs as its own process under xen-sim) gets the fd
//! from [`IntxEventFd::publish`]: a `SOCK_SEQPACKET` socket that answers every connection with
//! one message `"intx"` carrying the eventfd (`SCM_RIGHTS`,
//! [`ioreq_server::seqpacket`]). [`receive`] is the other end.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::Error;

/// The message that carries the fd.
pub const MESSAGE: &[u8] = b"intx";

/// A test-signalled INTx source.
#[derive(Debug)]
pub struct IntxEventFd {
    efd: EventFd,
}

fn io(path: &Path, e: impl Into<std::io::Error>) -> Error {
    Error::io(path, e.into())
}

impl IntxEventFd {
    /// A fresh eventfd (non-blocking, close-on-exec).
    pub fn new() -> Result<Self, Error> {
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| io(Path::new("eventfd"), e))?;
        Ok(IntxEventFd { efd })
    }

    /// The fd to watch.
    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// An independent owner of the same eventfd.
    pub fn duplicate(&self) -> Result<OwnedFd, Error> {
        self.efd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| io(Path::new("eventfd"), e))
    }

    /// Signal it (what a test does to assert INTx).
    pub fn signal(&self) -> Result<(), Error> {
        self.efd
            .write(1)
            .map(|_| ())
            .map_err(|e| io(Path::new("eventfd"), e))
    }

    /// Take the count without blocking (0 when nothing was signalled).
    pub fn take(&self) -> Result<u64, Error> {
        match self.efd.read() {
            Ok(n) => Ok(n),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(io(Path::new("eventfd"), e)),
        }
    }

    /// Hand a duplicate of the eventfd to whoever connects to a `SOCK_SEQPACKET` socket at
    /// `path` (replacing an old socket file), from a background thread that lives as long as
    /// the process.
    pub fn publish(&self, path: &Path) -> Result<(), Error> {
        let fd: OwnedFd = self
            .efd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| io(path, e))?;
        let listener = ioreq_server::seqpacket::listen(path).map_err(|e| io(path, e))?;
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("intx-eventfd".into())
            .spawn(move || {
                // Signals belong to the main thread (the ioreq server reads SIGTERM from a
                // signalfd, which needs it blocked in every thread).
                let _ = nix::sys::signal::pthread_sigmask(
                    nix::sys::signal::SigmaskHow::SIG_BLOCK,
                    Some(&nix::sys::signal::SigSet::all()),
                    None,
                );
                for conn in listener.incoming() {
                    match conn {
                        Ok(c) => {
                            if let Err(e) = ioreq_server::seqpacket::send(
                                c.as_raw_fd(),
                                MESSAGE,
                                &[fd.as_raw_fd()],
                            ) {
                                tracing::warn!(socket = %shown, "handing out the INTx eventfd: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(socket = %shown, "INTx eventfd socket: {e}");
                            break;
                        }
                    }
                }
            })
            .map_err(|e| io(path, e))?;
        tracing::info!(socket = %path.display(), "INTx eventfd published");
        Ok(())
    }
}

/// Connect to a socket made by [`IntxEventFd::publish`] and receive the eventfd (a test's
/// side: write a non-zero `u64` to it to assert INTx).
pub fn receive(path: &Path) -> std::io::Result<OwnedFd> {
    let sock = ioreq_server::seqpacket::connect(path)?;
    let mut buf = [0u8; 16];
    let (n, mut fds) = ioreq_server::seqpacket::recv(sock.as_raw_fd(), &mut buf)?;
    if &buf[..n] != MESSAGE || fds.len() != 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an INTx eventfd message",
        ));
    }
    Ok(fds.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn publish_and_receive() {
        let dir = std::env::temp_dir().join(format!("intx-efd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("intx.sock");
        let e = IntxEventFd::new().unwrap();
        assert_eq!(e.take().unwrap(), 0);
        e.publish(&path).unwrap();
        let fd = receive(&path).unwrap();
        std::fs::File::from(fd)
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        assert_eq!(e.take().unwrap(), 1);
        e.signal().unwrap();
        e.signal().unwrap();
        assert_eq!(e.take().unwrap(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
