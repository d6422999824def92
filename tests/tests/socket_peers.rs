//! Every socket of the device models refuses a client with the wrong uid (issue 12): the
//! control sockets of pm-trap, ioapic and pci-host-bridge and the ioapic's irq_line socket, on
//! real processes behind xen-sim. Two layers: the socket file's mode (0600, root's) keeps
//! another uid from connecting at all; and when the file is opened up (chmod 0666, as a
//! careless administrator might), `SO_PEERCRED` still refuses it. Root is served, which shows
//! the probe works. With `[control] group`, the files are 0660 in that group and a member
//! (by primary or supplementary gid) is served, a stranger still refused. Needs root (a
//! client of another uid).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::harness::{bin_path, Harness};

/// The device models' own uid/gid (deprivileged with --user).
const DM_UID: u32 = 4252;
const DM_GID: u32 = 4253;
/// The stranger: neither root nor the device models' uid.
const OTHER: u32 = 4363;
/// The socket group of the second test (numeric: needs no /etc/group entry).
const SOCK_GROUP: u32 = 4370;
const IOAPIC_BASE: u64 = 0xFEC0_0000;

/// Who the probe runs as: root, or uid:gid with supplementary groups.
#[derive(Clone, Copy)]
enum As<'a> {
    Root,
    User(u32, u32, &'a [u32]),
}

fn probe(kind: &str, path: &Path, who: As) -> String {
    let mut c = Command::new(bin_path("sock-probe"));
    if let As::User(uid, gid, groups) = who {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        c.arg("--as").arg(format!("{uid}:{gid}:{}", list.join(",")));
    }
    c.arg(kind).arg(path);
    let o = c.output().expect("sock-probe runs");
    assert!(o.status.success(), "sock-probe: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// What a served client sees: a control socket answers, an irq_line socket stays open.
fn served(kind: &str) -> &'static str {
    if kind == "control" {
        "answered"
    } else {
        "open"
    }
}

/// What a client refused by `SO_PEERCRED` sees: the control socket says why and hangs up,
/// the irq_line socket just hangs up.
fn refused(kind: &str) -> &'static str {
    if kind == "control" {
        "refused"
    } else {
        "closed"
    }
}

/// Probe `path` as `who` and check the outcome; `what` names the client in the message.
fn expect(kind: &str, path: &Path, who: As, want: &str, what: &str) {
    assert_eq!(probe(kind, path, who), want, "{what} at {}", path.display());
}

/// Open every socket file up to everyone (chmod 0666), as a careless administrator might,
/// and check that each still refuses `who` (`what` names it in the message).
fn opened_up_still_refuse(sockets: &[(&str, PathBuf)], who: As, what: &str) {
    for (kind, path) in sockets {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        expect(
            kind,
            path,
            who,
            refused(kind),
            &format!("{what} (mode 0666)"),
        );
    }
}

/// The three device models of one guest behind xen-sim, deprivileged to DM_UID, with
/// `[control] group` set when `group` is; returns the harness and every socket, with the
/// directories on the way opened up so that only the sockets' own modes decide.
fn start(group: Option<u32>) -> (Harness, Vec<(&'static str, PathBuf)>) {
    let h = Harness::new(5, 1, Duration::from_secs(5));
    let mut h = h;
    let irq_sock = h.dir.join("ioapic-irq.sock");
    let cfg = h.write_config(&format!(
        "[pm_trap]\nmode = \"guest\"\n\n[ioapic]\nbase = {IOAPIC_BASE:#x}\nsocket = \"{}\"\n\n[pci]\n",
        irq_sock.display()
    ));
    if let Some(g) = group {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = text.replacen("[control]\n", &format!("[control]\ngroup = {g}\n"), 1);
        std::fs::write(&cfg, text).unwrap();
    }
    let user = format!("{DM_UID}:{DM_GID}");
    let names = ["pm-trap", "ioapic", "pci-host-bridge"];
    for n in names {
        h.spawn(&bin_path(n), &cfg, &["--user", &user]);
    }
    assert!(h.wait_ready(&names), "the device models did not come up");
    let mut sockets: Vec<(&str, PathBuf)> = names
        .iter()
        .map(|n| ("control", h.control_socket(n)))
        .collect();
    sockets.push(("irq", irq_sock));
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
    (h, sockets)
}

#[test]
fn a_client_with_another_uid_is_refused_by_every_socket() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot run a client as another uid");
        return;
    }
    let (mut h, sockets) = start(None);
    // Root is served: the probe itself works.
    for (kind, path) in &sockets {
        expect(kind, path, As::Root, served(kind), "root");
    }
    // The file's mode keeps another uid out.
    let stranger = As::User(OTHER, OTHER, &[]);
    for (kind, path) in &sockets {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} mode", path.display());
        expect(
            kind,
            path,
            stranger,
            "connect-error:EACCES",
            &format!("uid {OTHER}"),
        );
    }
    // Opened up, the socket still refuses it: SO_PEERCRED, checked on every connection.
    opened_up_still_refuse(&sockets, stranger, &format!("uid {OTHER}"));
    // And they keep serving root afterwards.
    for (kind, path) in &sockets {
        expect(kind, path, As::Root, served(kind), "root again");
    }
    assert_eq!(h.stop_all(), vec![Some(0); 3], "exit codes");
}

#[test]
fn a_member_of_the_socket_group_is_served_and_a_stranger_is_not() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot run a client as another uid");
        return;
    }
    let (mut h, sockets) = start(Some(SOCK_GROUP));
    let by_primary = As::User(OTHER, SOCK_GROUP, &[]);
    let by_supplementary = As::User(OTHER, OTHER, &[SOCK_GROUP]);
    let stranger = As::User(OTHER, OTHER, &[]);
    for (kind, path) in &sockets {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o777,
            0o660,
            "{} mode",
            path.display()
        );
        assert_eq!(m.gid(), SOCK_GROUP, "{} group", path.display());
        assert_eq!(m.uid(), 0, "{} owner", path.display());
        expect(
            kind,
            path,
            by_primary,
            served(kind),
            &format!("gid {SOCK_GROUP}"),
        );
        expect(
            kind,
            path,
            by_supplementary,
            served(kind),
            &format!("supplementary group {SOCK_GROUP}"),
        );
        expect(
            kind,
            path,
            stranger,
            "connect-error:EACCES",
            &format!("uid {OTHER} outside the group"),
        );
    }
    // Opened up, the group rule still decides: SO_PEERCRED and SO_PEERGROUPS.
    opened_up_still_refuse(
        &sockets,
        stranger,
        &format!("uid {OTHER} outside the group"),
    );
    for (kind, path) in &sockets {
        expect(
            kind,
            path,
            by_supplementary,
            served(kind),
            &format!("supplementary group {SOCK_GROUP} (mode 0666)"),
        );
    }
    assert_eq!(h.stop_all(), vec![Some(0); 3], "exit codes");
}
