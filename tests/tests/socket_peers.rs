//! Every socket of the device models refuses a client with the wrong uid (issue 12): the
//! control sockets of pm-trap, ioapic and pci-host-bridge and the ioapic's irq_line socket, on
//! real processes behind xen-sim. Two layers: the socket file's mode (0600, root's) keeps
//! another uid from connecting at all; and when the file is opened up (chmod 0666, as a
//! careless administrator might), `SO_PEERCRED` still refuses it. Root is served, which shows
//! the probe works. Needs root (a client of another uid).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::harness::{bin_path, Harness};

/// The device models' own uid/gid (deprivileged with --user).
const DM_UID: u32 = 4252;
const DM_GID: u32 = 4253;
/// The stranger: neither root nor the device models' uid.
const OTHER: u32 = 4363;
const IOAPIC_BASE: u64 = 0xFEC0_0000;

fn probe(kind: &str, path: &Path, uid: Option<u32>) -> String {
    let mut c = Command::new(bin_path("sock-probe"));
    c.arg(kind).arg(path);
    if let Some(u) = uid {
        c.uid(u).gid(u);
    }
    let o = c.output().expect("sock-probe runs");
    assert!(o.status.success(), "sock-probe: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_client_with_another_uid_is_refused_by_every_socket() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot run a client as another uid");
        return;
    }
    let mut h = Harness::new(5, 1, Duration::from_secs(5));
    let irq_sock = h.dir.join("ioapic-irq.sock");
    let cfg = h.write_config(&format!(
        "[pm_trap]\nmode = \"guest\"\n\n[ioapic]\nbase = {IOAPIC_BASE:#x}\nsocket = \"{}\"\n\n[pci]\n",
        irq_sock.display()
    ));
    let user = format!("{DM_UID}:{DM_GID}");
    let names = ["pm-trap", "ioapic", "pci-host-bridge"];
    for n in names {
        h.spawn(&bin_path(n), &cfg, &["--user", &user]);
    }
    assert!(h.wait_ready(&names), "the device models did not come up");
    let mut sockets: Vec<(&str, std::path::PathBuf)> = names
        .iter()
        .map(|n| ("control", h.control_socket(n)))
        .collect();
    sockets.push(("irq", irq_sock.clone()));

    // Root is served: the probe itself works.
    for (kind, path) in &sockets {
        let want = if *kind == "control" {
            "answered"
        } else {
            "open"
        };
        assert_eq!(probe(kind, path, None), want, "root at {}", path.display());
    }
    // The file's mode keeps another uid out (the directories on the way are opened up, so
    // that only the socket's own mode decides).
    let mut dirs: Vec<&Path> = sockets.iter().filter_map(|(_, p)| p.parent()).collect();
    dirs.dedup();
    for d in dirs {
        let mut a = Some(d);
        while let Some(p) = a {
            if p.starts_with(&h.dir) {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            a = p.parent();
        }
    }
    for (kind, path) in &sockets {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} mode", path.display());
        assert_eq!(
            probe(kind, path, Some(OTHER)),
            "connect-error:EACCES",
            "uid {OTHER} at {}",
            path.display()
        );
    }
    // Opened up, the socket still refuses it: SO_PEERCRED, checked on every connection.
    for (kind, path) in &sockets {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        // The control socket says why and hangs up; the irq_line socket just hangs up.
        let want = if *kind == "control" {
            "refused"
        } else {
            "closed"
        };
        assert_eq!(
            probe(kind, path, Some(OTHER)),
            want,
            "uid {OTHER} at {} (mode 0666)",
            path.display()
        );
    }
    // And they keep serving root afterwards.
    for (kind, path) in &sockets {
        let want = if *kind == "control" {
            "answered"
        } else {
            "open"
        };
        assert_eq!(
            probe(kind, path, None),
            want,
            "root again at {}",
            path.display()
        );
    }
    assert_eq!(h.stop_all(), vec![Some(0); 3], "exit codes");
}
