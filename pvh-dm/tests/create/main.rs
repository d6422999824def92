//! `pvh-dm create` end to end against a fake `xl`, fake device models and a fake xenstored.
//!
//! This file holds the helpers the tests share (a supervised create, waiting, signals); the
//! tests are in `refusals` (what is refused before anything changes), `rollback` (a create
//! that fails or is interrupted half-way is undone), `supervision` (the supervisor's ends and
//! exit codes), `reaper` (the reaper after the supervisor is SIGKILLed) and `detached`
//! (detached guests: status, destroy, shutdown, what is cleaned up).

#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use nix::sys::signal::Signal;

use common::*;

mod detached;
mod reaper;
mod refusals;
mod rollback;
mod supervision;

const PT_DEVICE: &str = r#"
[pci]
[[pci.device]]
host = "0000:03:10.1"
slot = 2
backend = "sysfs"
"#;

fn supervised(r: &Rig, extra_env: &[(&str, &str)]) -> (std::process::Child, FakeXenstored) {
    let xs = fake_xenstored(r.dir());
    let mut c = r.create_cmd(&[
        "--xenstore",
        &xs.path.to_string_lossy(),
        "--shutdown-timeout",
        "2",
    ]);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let mut child = spawn(c);
    let line = first_line(&mut child, Duration::from_secs(20));
    assert_eq!(
        line.as_deref(),
        Some("7"),
        "stderr: {}",
        stderr_of(&mut child)
    );
    let w = xs.watched.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(w, "@releaseDomain pvh-dm-7");
    (child, xs)
}

/// Wait up to 20 s for the supervisor to exit: its status and what it wrote to stderr.
fn exit_of(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    let status = wait_timeout(child, Duration::from_secs(20)).expect("pvh-dm exits");
    (status, stderr_of(child))
}

/// The stderr of `o`, which must have exited with `code` (its stderr is the failure message).
fn stderr_exited(o: &std::process::Output, code: i32) -> String {
    let (_, err) = text(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    err
}

/// `pvh-dm create --detach`, which must succeed.
fn create_detached_ok(r: &Rig) {
    let o = r.create(&["--detach"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
}

/// `pvh-dm destroy TARGET`, which must succeed.
fn destroy_ok(r: &Rig, target: &str) {
    let o = r.cmd(&["destroy", target]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
}

/// `pvh-dm create --detach` of a second guest: guest1's xl config renamed guest2, with
/// guest1's TOML.
fn create_guest2(r: &Rig) -> std::process::Output {
    std::fs::write(
        r.dir().join("guest2.cfg"),
        std::fs::read_to_string(r.xl_cfg())
            .unwrap()
            .replace("guest1", "guest2"),
    )
    .unwrap();
    let mut c = r.cmd(&["create"]);
    c.arg(r.dir().join("guest2.cfg"))
        .arg("--dm-config")
        .arg(r.dir().join("guest1.toml"))
        .arg("--detach");
    c.output().unwrap()
}

/// `RUN/7/state.json` of the running guest.
fn state7(r: &Rig) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(r.run_dir().join("7/state.json")).unwrap())
        .unwrap()
}

fn signal(pid: u32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// Wait up to `secs` for `f` (polled every 20 ms); whether it came true.
fn within(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn destroys(r: &Rig) -> usize {
    r.xl_log()
        .lines()
        .filter(|l| l.starts_with("destroy 7 "))
        .count()
}
