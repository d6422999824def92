//! A helper process for the sandbox tests: installs the device models' real seccomp filters
//! (`ioreq_server::sandbox::apply_serving_filter`, the same programs a serving device model
//! runs under), then makes one system call named on the command line. A forbidden call must
//! kill it with SIGSYS; an allowed one lets it exit 0; a refused path lookup fails with EACCES
//! (exit 3).
//!
//! `seccomp-probe execve|socket-inet|fork-exec|allowed|open`

use std::io::Write;

fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    if let Err(e) = ioreq_server::sandbox::apply_serving_filter() {
        eprintln!("seccomp-probe: installing the filter: {e}");
        std::process::exit(2);
    }
    match what.as_str() {
        "execve" => {
            let sh = c"/bin/true";
            let r = nix::unistd::execv(sh, &[sh]);
            eprintln!("seccomp-probe: execve returned {r:?}");
        }
        "socket-inet" => {
            use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
            let r = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::empty(),
                None,
            );
            eprintln!("seccomp-probe: socket(AF_INET) returned {r:?}");
        }
        "allowed" => {
            // What the serving loop does: time, a write to stderr, a thread (the watcher's
            // kind) that allocates and is joined.
            let t = std::time::Instant::now();
            let h = std::thread::Builder::new()
                .name("probe-thread".into())
                .spawn(|| vec![0u8; 1 << 20].len())
                .expect("spawn");
            let n = h.join().expect("join");
            let _ = writeln!(
                std::io::stderr(),
                "seccomp-probe: allowed calls made ({n} bytes in a thread, {:?})",
                t.elapsed()
            );
            std::process::exit(0);
        }
        "open" => match std::fs::File::open("/etc/hostname") {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => std::process::exit(3),
            r => eprintln!("seccomp-probe: open returned {r:?}"),
        },
        other => {
            eprintln!("seccomp-probe: unknown probe {other:?}");
            std::process::exit(2);
        }
    }
    // Reached only if the forbidden call was let through.
    std::process::exit(1);
}
