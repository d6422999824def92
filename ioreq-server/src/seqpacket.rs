//! Messages with file descriptors over `SOCK_SEQPACKET` Unix sockets (used by the sim
//! transport and xen-sim). One message = one datagram; fds travel with `SCM_RIGHTS`. Also the
//! non-blocking receive of bytes and fds from a stream socket that the `irq-line` crate's
//! server uses ([`recv_stream`]), so that taking ownership of received fds, the one `unsafe`
//! step, stays in this crate.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};

/// Most fds one message may carry.
pub const MAX_FDS: usize = 8;

/// Send one message with optional fds.
pub fn send(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    socket::sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Receive one message into `buf`; returns its length (0 = peer closed) and the fds it carried.
/// A truncated message is an error.
pub fn recv(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = socket::recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed this fd in our table for this message
                // (SCM_RIGHTS); nothing else owns it, so taking ownership is sound.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message or its fds were truncated",
        ));
    }
    Ok((msg.bytes, fds))
}

/// Most fds one `SCM_RIGHTS` message can carry on Linux (`SCM_MAX_FD`, include/net/scm.h):
/// [`recv_stream`]'s control buffer holds that many, so a control message is never truncated.
pub const SCM_MAX_FD: usize = 253;

/// Receive what a Unix stream socket has into `buf` without blocking (`MSG_DONTWAIT`, fds
/// close-on-exec): `Ok(None)` when nothing is waiting, else the bytes read (0 = the peer
/// closed) and the fds of every `SCM_RIGHTS` message that came with them, owned. A control
/// message of another kind, or a truncated one, is `InvalidData` (the fds received with it
/// are closed). `EINTR` is retried.
pub fn recv_stream(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    loop {
        let mut iov = [IoSliceMut::new(&mut *buf)];
        let msg = match socket::recvmsg::<UnixAddr>(
            sock,
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut bad = msg.flags.intersects(MsgFlags::MSG_CTRUNC);
        match msg.cmsgs() {
            Ok(cmsgs) => {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::ScmRights(raw) => {
                            for fd in raw {
                                // SAFETY: the kernel just installed `fd` in this process for
                                // this SCM_RIGHTS message; nothing else owns it, and wrapping it
                                // at once guarantees it is closed.
                                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                            }
                        }
                        _ => bad = true,
                    }
                }
            }
            Err(_) => bad = true,
        }
        if bad {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected or truncated control message",
            ));
        }
        return Ok(Some((msg.bytes, fds)));
    }
}

/// Connect a `SOCK_SEQPACKET` socket to `path`.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let (fd, addr) = socket_for(path)?;
    socket::connect(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

/// A new close-on-exec `SOCK_SEQPACKET` socket and the address of `path`: what both ends,
/// [`connect`] and [`listen`], start from.
fn socket_for(path: &Path) -> io::Result<(OwnedFd, UnixAddr)> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    Ok((fd, UnixAddr::new(path)?))
}

/// Bind and listen on a `SOCK_SEQPACKET` socket at `path` (an old socket file is replaced).
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let (fd, addr) = socket_for(path)?;
    socket::bind(fd.as_raw_fd(), &addr)?;
    socket::listen(&fd, socket::Backlog::new(64).map_err(io::Error::from)?)?;
    Ok(UnixListener::from(fd))
}

/// A connected pair (for tests).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}
