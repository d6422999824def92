//! The device models deprivilege after setup (ioreq_server::sandbox): checked from outside,
//! on real processes behind xen-sim, through /proc/PID/status; the real seccomp filter kills a
//! helper process that makes a forbidden call; `xen-sim demo --json` reports the same.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ioreq_server::sandbox::{ProcStatus, RANGE_BASE_USER};
use tests::harness::{bin_path, Harness};

use common::json_of;

const UID: u32 = 4242;
const GID: u32 = 4243;
const IOAPIC_BASE: u64 = 0xFEC0_0000;

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn user_args() -> Vec<String> {
    if root() {
        vec!["--user".into(), format!("{UID}:{GID}")]
    } else {
        Vec::new()
    }
}

fn status_line(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_default()
        .to_string()
}

fn assert_deprivileged(name: &str, pid: u32) {
    let st = ProcStatus::read(pid).unwrap_or_else(|e| panic!("{name}: /proc/{pid}/status: {e}"));
    let uid = st.uid.expect("Uid line");
    assert_ne!(uid, 0, "{name} still runs as root");
    if root() {
        assert_eq!(uid, UID, "{name}");
        let gid = status_line(pid, "Gid");
        assert!(
            gid.split_whitespace().skip(1).all(|g| g == GID.to_string()),
            "{name}: {gid}"
        );
        let groups = status_line(pid, "Groups");
        assert_eq!(
            groups.trim(),
            "Groups:",
            "{name}: supplementary groups left"
        );
    }
    assert_eq!(st.no_new_privs, Some(1), "{name}: NoNewPrivs");
    assert_eq!(st.seccomp, Some(2), "{name}: Seccomp (2 = filter)");
    assert_eq!(st.cap_eff, Some(0), "{name}: CapEff");
    // rlimits: no core, bounded files and address space (the defaults).
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft = |key: &str| -> String {
        let l = limits.lines().find(|l| l.starts_with(key)).unwrap();
        l[key.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(soft("Max core file size"), "0", "{name}");
    assert_eq!(
        soft("Max address space"),
        (1024u64 << 20).to_string(),
        "{name}"
    );
    let files: u64 = soft("Max open files").parse().unwrap();
    // Bounded, with room for what the process serves: the ioapic's interrupt sources hold
    // three descriptors each (256 sources by default).
    let want = if name == "ioapic" {
        768..=1200
    } else {
        8..=512
    };
    assert!(want.contains(&files), "{name}: RLIMIT_NOFILE {files}");
}

/// The process whose parent is `pid` (the sandbox's unlinker).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let state = status_line(pid, "State");
        if state.is_empty() || state.contains("zombie") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_process_serves_deprivileged_and_removes_its_sockets_at_the_end() {
    let mut h = Harness::new(3, 1, Duration::from_secs(5));
    let irq_sock = h.dir.join("ioapic-irq.sock");
    let cfg = h.write_config(&format!(
        "[pm_trap]\nmode = \"guest\"\n\n[ioapic]\nbase = {IOAPIC_BASE:#x}\nsocket = \"{}\"\n\n[pci]\n",
        irq_sock.display()
    ));
    let args = user_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let names = ["pm-trap", "ioapic", "pci-host-bridge"];
    let pids: Vec<u32> = names
        .iter()
        .map(|n| h.spawn(&bin_path(n), &cfg, &args))
        .collect();
    assert!(h.wait_ready(&names), "the device models did not come up");
    for (n, pid) in names.iter().zip(&pids) {
        assert_deprivileged(n, *pid);
    }
    // They still serve, filtered: port I/O (pm-trap), MMIO (the IOAPIC's version register),
    // PCI config (the host bridge's vendor ID), a control request.
    let mut v = h.sim.vcpu(3, 0);
    assert_eq!(
        v.pio_read(0xB000, 2).unwrap() & 0x8000,
        0,
        "PM1a_STS WAK_STS"
    );
    v.mmio_write(IOAPIC_BASE, 4, 1).unwrap();
    assert_eq!(v.mmio_read(IOAPIC_BASE + 0x10, 4).unwrap() & 0xFF, 0x20);
    assert_eq!(
        v.pci_cf8_read((0, 0, 0), 0, 2).unwrap(),
        0x1B36,
        "host bridge vendor"
    );
    let st = ioreq_server::control::request(
        &h.control_socket("ioapic"),
        &serde_json::json!({"cmd": "status"}),
    )
    .unwrap();
    assert_eq!(st["ok"], true, "{st}");
    let sockets: Vec<_> = names
        .iter()
        .map(|n| h.control_socket(n))
        .chain([irq_sock.clone()])
        .collect();
    for s in &sockets {
        assert!(s.exists(), "{} missing while serving", s.display());
    }
    // A clean end: teardown, then the unlinker removes what the chroot made unreachable.
    let codes = h.stop_all();
    assert_eq!(codes, vec![Some(0); 3], "exit codes");
    for s in &sockets {
        assert!(
            !s.exists(),
            "{} left behind after a clean exit",
            s.display()
        );
    }
}

#[test]
fn a_killed_process_leaves_its_socket_and_its_unlinker_exits() {
    if !root() {
        // Without root there is no chroot and no unlinker: the property does not exist.
        eprintln!("not root: no unlinker to check");
        return;
    }
    let mut h = Harness::new(4, 1, Duration::from_secs(5));
    let cfg = h.write_config("[pm_trap]\nmode = \"guest\"\n");
    let args = user_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = h.spawn(&bin_path("pm-trap"), &cfg, &args);
    assert!(h.wait_ready(&["pm-trap"]));
    assert_deprivileged("pm-trap", pid);
    let helpers = children_of(pid);
    assert_eq!(helpers.len(), 1, "pm-trap's children: {helpers:?}");
    let helper = helpers[0];
    assert_eq!(status_line(helper, "Name"), "Name:\tunlink-pm-trap");
    // The unlinker stays root outside the chroot, but runs under its own filter.
    assert_eq!(ProcStatus::read(helper).unwrap().seccomp, Some(2));
    h.kill(pid);
    assert_eq!(h.wait_exit(pid, Duration::from_secs(5)), None, "SIGKILLed");
    // No teardown ran: the socket stays, as it always did for a killed device model (pvh-dm
    // tells a process that ended untorn by it), and the unlinker is gone with the pipe.
    assert!(h.control_socket("pm-trap").exists());
    assert!(
        gone(helper, Duration::from_secs(5)),
        "the unlinker outlived pm-trap"
    );
}

fn probe(what: &str) -> std::process::ExitStatus {
    Command::new(env!("CARGO_BIN_EXE_seccomp-probe"))
        .args(what.split(' '))
        .status()
        .unwrap()
}

#[test]
fn the_real_filter_kills_a_forbidden_call_with_sigsys() {
    for what in ["execve", "socket-inet", "spawn"] {
        let st = probe(what);
        assert_eq!(
            st.signal(),
            Some(libc::SIGSYS),
            "{what}: {st:?} (expected death by SIGSYS)"
        );
    }
    // The same filter lets the serving loop's kind of calls through (a thread, allocation,
    // time, stderr) and answers a path lookup with EACCES instead of killing.
    assert_eq!(probe("allowed").code(), Some(0));
    assert_eq!(probe("open").code(), Some(3));
}

/// The bridge broker's filter (`apply_broker_filter`): it stays root, so the filter is what
/// narrows it. No exec, no socket, no signal but SIGTERM to its worker; its own kind of calls
/// (a thread, allocation, a file opened by path as it opens sysfs files) go through.
#[test]
fn the_broker_filter_kills_a_forbidden_call_with_sigsys() {
    for what in ["execve", "socket-inet", "spawn", "kill-other"] {
        let st = probe(&format!("--broker {what}"));
        assert_eq!(
            st.signal(),
            Some(libc::SIGSYS),
            "broker {what}: {st:?} (expected death by SIGSYS)"
        );
    }
    assert_eq!(probe("--broker allowed").code(), Some(0));
    assert_eq!(probe("--broker open").code(), Some(0));
}

#[test]
fn the_demo_reports_each_process_as_it_serves() {
    let r = json_of(Command::new(bin_path("xen-sim")).args(["demo", "--json"]));
    let procs = r["processes"].as_array().expect("processes array");
    let names: Vec<&str> = procs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    // The demo's bridge passes functions through: a privileged broker (the process the demo
    // started, root under its own seccomp filter) and its deprivileged worker.
    assert_eq!(
        names,
        [
            "pm-trap",
            "ioapic",
            "pci-host-bridge",
            "pci-host-bridge/worker"
        ],
        "{procs:?}"
    );
    for p in procs {
        assert!(p["pid"].as_u64().is_some_and(|x| x > 1), "{p}");
        match p["name"].as_str().unwrap() {
            // The broker stays root under a filter of its own.
            "pci-host-bridge" => {
                assert_eq!(p["exit_code"], 0, "{p}");
                assert_eq!(p["no_new_privs"], 1, "{p}");
                assert_eq!(p["seccomp"], 2, "{p}");
            }
            name => {
                if name != "pci-host-bridge/worker" {
                    assert_eq!(p["exit_code"], 0, "{p}");
                }
                assert_ne!(p["uid"], 0, "{p}");
                if root() {
                    assert_eq!(p["uid"], 65534, "{p}");
                }
                assert_eq!(p["no_new_privs"], 1, "{p}");
                assert_eq!(p["seccomp"], 2, "{p}");
            }
        }
    }
}

#[test]
fn without_its_user_a_xen_device_model_names_the_user_and_how_to_create_it() {
    if !root()
        || nix::unistd::User::from_name(RANGE_BASE_USER)
            .ok()
            .flatten()
            .is_some()
    {
        eprintln!("not root, or {RANGE_BASE_USER} exists: the error is not reachable here");
        return;
    }
    let h = Harness::new(5, 1, Duration::from_secs(5));
    let cfg = h.write_config("[pm_trap]\nmode = \"guest\"\n");
    let out = Command::new(bin_path("pm-trap"))
        .arg("--config")
        .arg(&cfg)
        .args(["--transport", "xen"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(RANGE_BASE_USER) && err.contains("useradd") && err.contains("--user"),
        "{err}"
    );
    // Refused before anything was opened or set up.
    assert!(!Path::new(&h.control_socket("pm-trap")).exists());
}
