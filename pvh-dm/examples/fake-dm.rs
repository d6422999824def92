//! A stand-in device model for pvh-dm's tests: run through a symlink named `pm-trap`, `ioapic`
//! or `pci-host-bridge`, it takes `--config FILE --domid N` like the real ones, listens on the
//! control socket the config implies (`[control] dir / DOMID / NAME.sock`) and answers
//! `{"cmd":"status"}`, and exits 0 on SIGTERM. It touches no hypervisor.
//!
//! Environment: `FAKE_DM_LOG=FILE` appends `NAME start DOMID`, `NAME sigterm DOMID`;
//! `FAKE_DM_FAIL=NAME` makes that one exit 1 at once; `FAKE_DM_DIE=NAME:MS` makes that one exit
//! 3 after MS milliseconds; `FAKE_DM_IGNORE_TERM=NAME` makes that one ignore SIGTERM;
//! `FAKE_DM_DELAY=NAME:MS` makes that one open its control socket only after MS.
//! `NAME reclaim --config FILE --domid N` (what pvh-dm runs for a dead bridge) logs
//! `NAME reclaim DOMID` and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

fn log(name: &str, what: &str, domid: u16) {
    if let Some(p) = std::env::var_os("FAKE_DM_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        writeln!(f, "{name} {what} {domid} pid={}", std::process::id()).unwrap();
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let name = PathBuf::from(&argv[0])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut config = None;
    let mut domid = None;
    let reclaim = argv.get(1).is_some_and(|a| a == "reclaim");
    let mut i = if reclaim { 2 } else { 1 };
    while i < argv.len() {
        match argv[i].as_str() {
            "--config" => config = argv.get(i + 1).cloned(),
            "--domid" => domid = argv.get(i + 1).and_then(|d| d.parse::<u16>().ok()),
            _ => {}
        }
        i += 2;
    }
    let (Some(config), Some(domid)) = (config, domid) else {
        eprintln!("{name}: usage: --config FILE --domid N");
        std::process::exit(2);
    };
    if reclaim {
        log(&name, "reclaim", domid);
        return;
    }
    let mut cfg = ioreq_server::config::GuestConfig::load(std::path::Path::new(&config))
        .unwrap_or_else(|e| {
            eprintln!("{name}: {e}");
            std::process::exit(2)
        });
    cfg.domid = domid;
    // Signals first, so that a SIGTERM right after the start is seen and logged.
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().unwrap();
    let sig = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK).unwrap();
    log(&name, "start", domid);
    if std::env::var("FAKE_DM_FAIL").is_ok_and(|f| f == name) {
        eprintln!("{name}: fake failure at start-up");
        std::process::exit(1);
    }
    let die_after = std::env::var("FAKE_DM_DIE").ok().and_then(|v| {
        let (n, ms) = v.split_once(':')?;
        let ms: u64 = ms.parse().ok()?;
        (n == name).then(|| Duration::from_millis(ms))
    });
    let ignore_term = std::env::var("FAKE_DM_IGNORE_TERM").is_ok_and(|f| f == name);

    if let Some(ms) = std::env::var("FAKE_DM_DELAY").ok().and_then(|v| {
        let (n, ms) = v.split_once(':')?;
        (n == name).then(|| ms.parse::<u64>().ok()).flatten()
    }) {
        // Slow start-up: the control socket appears only after MS (SIGTERM still ends it).
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(ms) {
            let mut fds = [PollFd::new(sig.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(50u16));
            if let Ok(Some(_)) = sig.read_signal() {
                log(&name, "sigterm", domid);
                std::process::exit(0);
            }
        }
    }
    let sock = cfg.control_socket(&name);
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&sock);
    let l = UnixListener::bind(&sock).unwrap();
    l.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        let mut fds = [
            PollFd::new(sig.as_fd(), PollFlags::POLLIN),
            PollFd::new(l.as_fd(), PollFlags::POLLIN),
        ];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(50u16));
        if let Ok(Some(_)) = sig.read_signal() {
            log(&name, "sigterm", domid);
            if !ignore_term {
                let _ = std::fs::remove_file(&sock);
                std::process::exit(0);
            }
        }
        if let Some(d) = die_after {
            if start.elapsed() >= d {
                log(&name, "dies", domid);
                eprintln!("{name}: fake crash");
                std::process::exit(3);
            }
        }
        while let Ok((s, _)) = l.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut line = String::new();
            let mut r = BufReader::new(&s);
            if r.read_line(&mut line).is_ok() && line.contains("status") {
                let reply = serde_json::json!({
                    "ok": true,
                    "status": {"name": name, "domid": domid, "vcpus": 1,
                               "uptime_s": start.elapsed().as_secs_f64(),
                               "stats": {"ioreqs_by_type": {"pio": 0}}}
                });
                let _ = writeln!(&s, "{reply}");
            }
        }
    }
}
