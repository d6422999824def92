//! Who may connect to a device model's Unix sockets (the control socket and the ioapic's
//! irq_line socket), in two layers that must both agree:
//!
//! 1. **The file.** The socket is bound under a umask that gives it its final mode at once
//!    (no window in which anyone may connect): 0600 by default, so only its owner (root, who
//!    binds it during setup) can connect; with `[control] group`, 0660 and then `chown`ed to
//!    that group (between the bind and the chown the file is root's 0660: still only root).
//! 2. **The peer.** Every accepted connection's `SO_PEERCRED` is checked: root, the process's
//!    own effective uid (the device models of one guest share their per-guest uid after the
//!    sandbox, so the bridge's worker reaches the ioapic), or, with a group, a peer whose
//!    primary gid is the group or whose supplementary groups (`SO_PEERGROUPS`, Linux 4.13)
//!    include it. A socket file opened up by mistake (chmod 0666) still refuses a stranger.
//!
//! The credentials are those the peer had when it connected (socket(7)); a connection that
//! cannot be asked is refused.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::stat::{umask, Mode};

/// `SO_PEERGROUPS` (include/uapi/asm-generic/socket.h: 59): the peer's supplementary groups.
pub const SO_PEERGROUPS: i32 = 59;

/// Most supplementary groups read from a peer (NGROUPS_MAX is 65536; a peer with more than
/// this many is judged on the first ones only, which can only refuse, never admit wrongly).
const MAX_PEER_GROUPS: usize = 256;

/// The access rule of a socket: its owner is root (it is bound during setup, as root on a
/// real dom0); `group`, when set, may connect as well.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketAccess {
    /// The gid that may connect besides root and the process's own uid.
    pub group: Option<u32>,
}

impl SocketAccess {
    /// Only root and the process's own uid (mode 0600).
    pub const PRIVATE: SocketAccess = SocketAccess { group: None };

    /// The socket file's mode: 0600, or 0660 with a group.
    pub fn mode(&self) -> u32 {
        if self.group.is_some() {
            0o660
        } else {
            0o600
        }
    }

    /// Bind a listening socket at `path` with this rule's mode and group. `bind(2)`'s errors
    /// come back unchanged (`AddrInUse` for an existing file: the callers decide whether a
    /// stale one may be replaced); a failed `chown` removes the socket again.
    pub fn bind(&self, path: &Path) -> io::Result<UnixListener> {
        let old = umask(Mode::from_bits_truncate(0o777 & !self.mode()));
        let bound = UnixListener::bind(path);
        umask(old);
        let listener = bound?;
        if let Some(gid) = self.group {
            if let Err(e) = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))) {
                let _ = std::fs::remove_file(path);
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("chown {} to group {gid}: {e}", path.display()),
                ));
            }
        }
        Ok(listener)
    }

    /// Whether the peer of the connected socket `s` may be served.
    pub fn allows(&self, s: &impl AsFd) -> bool {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let Ok(c) = getsockopt(s, PeerCredentials) else {
            return false;
        };
        if c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw() {
            return true;
        }
        match self.group {
            Some(g) if c.gid() == g => true,
            Some(g) => peer_groups(s).is_ok_and(|gs| gs.contains(&g)),
            None => false,
        }
    }
}

/// The supplementary groups of the peer of `s` (`SO_PEERGROUPS`, socket(7)).
fn peer_groups(s: &impl AsFd) -> io::Result<Vec<u32>> {
    let mut groups = vec![0u32; MAX_PEER_GROUPS];
    let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
    // SAFETY: `groups` is a live buffer of `len` bytes that getsockopt may fill; `len` is an
    // in/out parameter the kernel updates to the bytes written (or needed, with ERANGE); the
    // fd is borrowed for the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        // ERANGE: more groups than the buffer holds; the caller then refuses.
        return Err(io::Error::last_os_error());
    }
    groups.truncate(len as usize / std::mem::size_of::<u32>());
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::UnixStream;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pvh-dm-sa-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join("s.sock")
    }

    #[test]
    fn private_is_0600_and_serves_our_own_uid() {
        let p = tmp("private");
        let _ = std::fs::remove_file(&p);
        let l = SocketAccess::PRIVATE.bind(&p).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let _c = UnixStream::connect(&p).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(SocketAccess::PRIVATE.allows(&s));
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn a_group_gives_0660_and_that_group() {
        // Our own primary gid: chown to it needs no privilege.
        let gid = nix::unistd::getegid().as_raw();
        let a = SocketAccess { group: Some(gid) };
        let p = tmp("group");
        let _ = std::fs::remove_file(&p);
        let _l = a.bind(&p).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660);
        assert_eq!(m.gid(), gid);
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn our_own_supplementary_groups_are_read() {
        let (a, b) = UnixStream::pair().unwrap();
        let got = peer_groups(&a).unwrap();
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort_unstable();
        want.sort_unstable();
        want.dedup();
        got_sorted.dedup();
        assert_eq!(got_sorted, want);
        drop(b);
    }
}
