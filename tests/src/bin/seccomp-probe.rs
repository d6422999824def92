//! A helper process for the sandbox tests: installs the device models' real seccomp filters
//! (`ioreq_server::sandbox::apply_serving_filter`, the same programs a serving device model
//! runs under; with `--broker`, `apply_broker_filter`, the bridge broker's), then makes one
//! system call named on the command line. A forbidden call must kill it with SIGSYS; an
//! allowed one lets it exit 0; a refused path lookup fails with EACCES (exit 3).
//!
//! `seccomp-probe [--broker] execve|socket-inet|spawn|allowed|open|kill-other`

use std::io::Write;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let broker = args.first().is_some_and(|a| a == "--broker");
    if broker {
        args.remove(0);
    }
    let what = args.first().cloned().unwrap_or_default();
    // The broker's one signal target: a pid that is not this process's.
    let worker = std::process::id() as i32 + 100_000;
    let installed = if broker {
        ioreq_server::sandbox::apply_broker_filter(worker)
    } else {
        ioreq_server::sandbox::apply_serving_filter()
    };
    if let Err(e) = installed {
        eprintln!("seccomp-probe: installing the filter: {e}");
        std::process::exit(2);
    }
    match what.as_str() {
        // A new process: std's spawn goes through glibc's posix_spawn, which tries clone3
        // (answered ENOSYS: its flags are out of a filter's reach) and falls back to clone
        // without CLONE_THREAD, which kills. Let through, it runs /bin/true and exits 1 below.
        "spawn" => {
            let r = std::process::Command::new("/bin/true").spawn();
            eprintln!("seccomp-probe: spawn returned {r:?}");
        }
        "kill-other" => {
            // Signal 0 to itself: harmless if let through; the broker may signal its worker
            // only.
            let r = nix::sys::signal::kill(nix::unistd::Pid::this(), None);
            eprintln!("seccomp-probe: kill(self, 0) returned {r:?}");
        }
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
        // The serving filter refuses path lookups; the broker opens its sysfs files by path.
        "open" => match std::fs::read_to_string("/proc/self/status") {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => std::process::exit(3),
            Ok(_) if broker => std::process::exit(0),
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
