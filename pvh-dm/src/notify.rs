//! systemd's readiness protocol (sd_notify(3)): one datagram of `KEY=VALUE` lines to the Unix
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Without
//! `$NOTIFY_SOCKET` (not started by systemd with `Type=notify`) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Send `msg` (e.g. `READY=1`); failures are logged at debug level and otherwise ignored, as
/// sd_notify does.
pub fn notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path.to_string_lossy(), msg) {
        tracing::debug!("sd_notify to {}: {e}", path.to_string_lossy());
    }
}

fn send(path: &str, msg: &str) -> std::io::Result<()> {
    let s = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        s.send_to_addr(msg.as_bytes(), &addr)?;
    } else {
        s.send_to(msg.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sends_a_datagram() {
        let p = std::env::temp_dir().join(format!("pvh-dm-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let r = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        super::send(&p.to_string_lossy(), "READY=1").unwrap();
        let mut b = [0u8; 64];
        let n = r.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"READY=1");
        let _ = std::fs::remove_file(&p);
    }
}
