//! sock-probe: connect to a device model's Unix socket and say what happened, for the
//! socket-access tests (run as another uid through `Command::uid`). Prints one word:
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
    let args: Vec<String> = std::env::args().collect();
    let (Some(kind), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: sock-probe control|irq PATH");
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
