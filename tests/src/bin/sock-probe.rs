//! sock-probe: connect to a device model's Unix socket and say what happened, for the
//! socket-access tests. Started as root, `--as UID:GID[:G1,G2...]` first becomes that user
//! with those supplementary groups (none when not given). Prints one word:
//! - `connect-error:ERRNO` (e.g. `connect-error:EACCES`: the file's mode kept us out);
//! - control sockets (`control PATH`): `answered` (a reply line came), `refused` (the reply
//!   was the server's "permission denied"), `closed` (the server closed the connection
//!   without a reply), `no-answer` (nothing within a second);
//! - irq_line sockets (`irq PATH`): `closed` (refused), `open` (still open after a second,
//!   as for a source the server accepted).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--as") {
        let ids = args.get(2).cloned().unwrap_or_default();
        if let Err(e) = become_user(&ids) {
            eprintln!("sock-probe: --as {ids}: {e}");
            std::process::exit(2);
        }
        args.drain(1..3);
    }
    let (Some(kind), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: sock-probe [--as UID:GID[:G1,G2...]] control|irq PATH");
        std::process::exit(2);
    };
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            let errno = e
                .raw_os_error()
                .map(|n| format!("{:?}", nix::errno::Errno::from_raw(n)))
                .unwrap_or_else(|| e.to_string());
            println!("connect-error:{errno}");
            return;
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    if kind == "control" {
        let _ = s.write_all(b"{\"cmd\":\"status\"}\n");
    }
    // The whole first line (a reply may arrive in several writes), or what came before EOF.
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b'\n') {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    let reply = String::from_utf8_lossy(&got);
    let word = match ended {
        _ if kind == "control"
            && reply.contains("\"ok\":false")
            && reply.contains("permission denied") =>
        {
            "refused"
        }
        _ if !got.is_empty() && kind == "control" => "answered",
        _ if !got.is_empty() => "data",
        Ok(()) => "closed",
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "closed",
        Err(_) if kind == "control" => "no-answer",
        Err(_) => "open",
    };
    println!("{word}");
}

/// Drop to `UID:GID[:G1,G2...]`: supplementary groups first, then the gid, then the uid (the
/// order in which root may still change the next).
fn become_user(ids: &str) -> Result<(), String> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let mut parts = ids.split(':');
    let num = |s: Option<&str>| -> Result<u32, String> {
        s.ok_or("missing field")?
            .parse::<u32>()
            .map_err(|e| e.to_string())
    };
    let uid = num(parts.next())?;
    let gid = num(parts.next())?;
    let groups: Vec<Gid> = match parts.next() {
        Some(list) if !list.is_empty() => list
            .split(',')
            .map(|g| {
                g.parse::<u32>()
                    .map(Gid::from_raw)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    setgid(Gid::from_raw(gid)).map_err(|e| format!("setgid: {e}"))?;
    setuid(Uid::from_raw(uid)).map_err(|e| format!("setuid: {e}"))?;
    Ok(())
}
