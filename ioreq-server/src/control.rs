//! The per-process control socket: JSON lines over a Unix stream socket.
//!
//! Commands: `{"cmd":"status"}` (counters per ioreq type and per vCPU, ranges, uptime, device
//! state) and `{"cmd":"shutdown"}` (tear down and exit 0); devices may add their own (e.g. the
//! ioapic's `snapshot`). Every reply is one JSON line with `"ok": true|false`.
//!
//! Access: `shutdown` hands a device back under a running guest and the ioapic's `restore`
//! replaces its interrupt state, so the socket is created mode 0600 (0660 with `[control]
//! group`) and every connection's `SO_PEERCRED` is checked: only root, the process's own uid
//! and the group are served ([`crate::socket_access`]). A second process
//! for the same path is refused while the first still answers (an old socket nobody answers
//! is replaced). A reply never blocks the serving loop: a client that does not read its
//! replies is disconnected.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use tracing::{debug, warn};

use crate::socket_access::SocketAccess;

/// Longest command line accepted; a client sending more is disconnected.
pub const MAX_LINE: usize = 64 * 1024;

/// The listening socket and its clients.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    clients: HashMap<usize, (UnixStream, Vec<u8>)>,
    /// Who may connect.
    access: SocketAccess,
    /// Clients to drop once answered.
    closing: Vec<usize>,
    next: usize,
}

impl ControlServer {
    /// Fail with `AddrInUse` (naming the path) if a live process answers at `path`; checked
    /// before anything is set up, so that a second device model for the same guest changes
    /// nothing.
    pub fn check_free(path: &Path) -> io::Result<()> {
        if path.exists() && StdUnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is served by another live process (a second device model for the same guest?)",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Listen at `path` with the mode and group of `access` (its directory is created). A
    /// socket some process still answers on is an error ([`ControlServer::check_free`]); a
    /// stale one is replaced.
    pub fn bind(path: &Path, access: SocketAccess) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Self::check_free(path)?;
        let _ = std::fs::remove_file(path);
        let listener = access.bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer {
            listener: UnixListener::from_std(listener),
            path: path.into(),
            clients: HashMap::new(),
            access,
            closing: Vec::new(),
            next: 0,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Register the listener.
    pub fn register(&mut self, r: &Registry, t: Token) -> io::Result<()> {
        r.register(&mut self.listener, t, Interest::READABLE)
    }

    /// Accept every waiting client, registering each under `base + n`; a client that is
    /// neither root, this process's uid nor in the configured group is refused.
    pub fn accept(&mut self, r: &Registry, base: usize) {
        while let Ok((mut s, _)) = self.listener.accept() {
            if !self.access.allows(&s) {
                let _ = writeln!(
                    s,
                    "{}",
                    serde_json::json!({"ok": false, "error": "permission denied (SO_PEERCRED: not root, not this process's uid, not in its socket group)"})
                );
                warn!("control connection from a foreign uid refused");
                continue;
            }
            let id = base + self.next;
            self.next = (self.next + 1) % (1 << 20);
            if r.register(&mut s, Token(id), Interest::READABLE).is_ok() {
                self.clients.insert(id, (s, Vec::new()));
            }
        }
    }

    /// Read what client `token` sent; return the complete JSON commands. Bad JSON gets an
    /// error reply at once. On EOF (or an overlong line) the client is marked to be dropped by
    /// [`ControlServer::finish`], after the caller replied to what it sent: a client that
    /// writes a command and closes its end at once still gets its answer.
    pub fn read_commands(&mut self, token: usize, _r: &Registry) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut close = false;
        if let Some((s, buf)) = self.clients.get_mut(&token) {
            let mut chunk = [0u8; 4096];
            loop {
                match s.read(&mut chunk) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                match serde_json::from_slice::<serde_json::Value>(&line) {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        let _ = writeln!(
                            s,
                            "{}",
                            serde_json::json!({"ok": false, "error": format!("bad JSON: {e}")})
                        );
                    }
                }
            }
            if buf.len() > MAX_LINE {
                warn!("control client sent an overlong line; disconnecting it");
                close = true;
            }
        }
        if close {
            self.closing.push(token);
        }
        out
    }

    /// Drop the clients that reached EOF (after their replies were sent).
    pub fn finish(&mut self, r: &Registry) {
        for token in std::mem::take(&mut self.closing) {
            if let Some((mut s, _)) = self.clients.remove(&token) {
                let _ = r.deregister(&mut s);
            }
        }
    }

    /// Send one reply line to client `token`, without blocking: a client whose socket buffer
    /// is full (it does not read its replies) is disconnected.
    pub fn reply(&mut self, token: usize, v: &serde_json::Value) {
        if let Some((s, _)) = self.clients.get_mut(&token) {
            let mut line = v.to_string().into_bytes();
            line.push(b'\n');
            let mut off = 0;
            while off < line.len() {
                match s.write(&line[off..]) {
                    Ok(0) => break,
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        debug!("control reply not sent ({e}); disconnecting the client");
                        break;
                    }
                }
            }
            if off < line.len() {
                self.closing.push(token);
            }
        }
    }
}

/// Client side: send one command to a control socket and return the reply.
pub fn request(path: &Path, cmd: &serde_json::Value) -> io::Result<serde_json::Value> {
    let mut s = StdUnixStream::connect(path)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    writeln!(s, "{cmd}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn socket_is_private_and_a_live_one_is_not_taken_over() {
        let dir = std::env::temp_dir().join(format!("pvh-dm-control-{}", std::process::id()));
        let path = dir.join("x.sock");
        let first = ControlServer::bind(&path, SocketAccess::PRIVATE).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        let second = ControlServer::bind(&path, SocketAccess::PRIVATE);
        assert_eq!(
            second.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        drop(first);
        // The old socket file stays but nobody answers: it is replaced.
        assert!(path.exists());
        ControlServer::bind(&path, SocketAccess::PRIVATE).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
