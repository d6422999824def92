//! Who may connect to an [`IrqLineServer`](crate::IrqLineServer)'s socket.
//!
//! The rule is the owner's to choose: this crate only knows the private default
//! ([`OwnerOnly`]); ioreq-server's `SocketAccess` (the `[control] group` rule, which needs
//! `SO_PEERGROUPS`) implements [`Access`] too, so that the control and irq_line sockets of a
//! device model follow one rule.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::stat::{umask, Mode};

/// An access rule for a listening Unix socket, in two layers that must both agree: the file's
/// mode (given at bind time, with no window in which anyone else may connect) and the peer's
/// credentials (checked on every accepted connection).
pub trait Access: std::fmt::Debug + Send + Sync {
    /// Bind a listening socket at `path` with this rule's mode (and owner). `bind(2)`'s errors
    /// come back unchanged (`AddrInUse` for an existing file: the server decides whether a
    /// stale one may be replaced).
    fn bind(&self, path: &Path) -> io::Result<UnixListener>;

    /// Whether the peer of the accepted connection `stream` may be served.
    fn allows(&self, stream: &UnixStream) -> bool;
}

/// The private rule: the socket file is 0600 from the start and only root and the process's
/// own effective uid are served (`SO_PEERCRED`); the same rule as ioreq-server's
/// `SocketAccess::PRIVATE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerOnly;

impl Access for OwnerOnly {
    fn bind(&self, path: &Path) -> io::Result<UnixListener> {
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old);
        bound
    }

    fn allows(&self, stream: &UnixStream) -> bool {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        getsockopt(stream, PeerCredentials)
            .is_ok_and(|c| c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw())
    }
}
