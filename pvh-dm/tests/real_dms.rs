//! pvh-dm with the project's real device models (pm-trap, ioapic, pci-host-bridge) on the
//! sim transport, served by `xen-sim serve` for domid 7; `xl` is still the fake one. Needs
//! the workspace's binaries (`cargo build --workspace`); skipped with a note when they are
//! not built next to pvh-dm.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pvh-dm"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn missing_binaries() -> bool {
    let bins = bin_dir();
    let missing: Vec<&str> = ["xen-sim", "pm-trap", "ioapic", "pci-host-bridge"]
        .into_iter()
        .filter(|b| !bins.join(b).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: {} not built in {} (cargo build --workspace)",
            missing.join(", "),
            bins.display()
        );
    }
    !missing.is_empty()
}

/// xen-sim serving domid 7, and a guest TOML for it with all three device models.
fn sim_rig(tag: &str) -> (Rig, std::process::Child) {
    let bins = bin_dir();
    let r = Rig::new(tag);
    let sim = r.dir().join("sim.sock");
    let xen_sim = Command::new(bins.join("xen-sim"))
        .args(["serve", "--domid", "7", "--vcpus", "2", "--socket"])
        .arg(&sim)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sim.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sim.exists(), "xen-sim did not create {}", sim.display());
    std::fs::write(
        r.dir().join("guest1.toml"),
        format!(
            "domid = 0\ntransport = \"sim\"\nvcpus = 2\n[sim]\nsocket = \"{}\"\n[control]\ndir = \"{}\"\n\
             [pm_trap]\nmode = \"guest\"\n[ioapic]\nsocket = \"{}\"\n[pci]\n",
            sim.display(),
            r.run_dir().display(),
            r.dir().join("pins.sock").display()
        ),
    )
    .unwrap();
    (r, xen_sim)
}

fn stop_sim(mut xen_sim: std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(xen_sim.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = wait_timeout(&mut xen_sim, Duration::from_secs(10));
}

/// `pvh-dm create` of the sim rig's guest with the real device models, supervised (against
/// a fake xenstored), once it has printed the domid.
fn supervised_real(r: &Rig, extra: &[&str]) -> (std::process::Child, FakeXenstored) {
    let xs = fake_xenstored(r.dir());
    let mut args = vec![
        "--xenstore".to_string(),
        xs.path.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = r.create_cmd(&args);
    c.env("PVH_DM_BIN_DIR", bin_dir());
    let mut child = spawn(c);
    let line = first_line(&mut child, Duration::from_secs(30));
    assert_eq!(line.as_deref(), Some("7"), "{}", stderr_of(&mut child));
    (child, xs)
}

#[test]
fn supervised_real_device_models_a_killed_one_ends_the_guest() {
    if missing_binaries() {
        return;
    }
    let (r, xen_sim) = sim_rig("real-kill");
    let (mut child, _xs) = supervised_real(&r, &[]);
    let st = runtime_state(&r);
    let pm = st["device_models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "pm-trap")
        .unwrap()["pid"]
        .as_u64()
        .unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pm),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("pvh-dm exits");
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(20), "{err}");
    assert!(
        err.contains("device model pm-trap (pid") && err.contains("SIGKILL"),
        "{err}"
    );
    assert!(
        err.contains("pci-host-bridge exited with status 0"),
        "{err}"
    );
    assert!(err.contains("ioapic exited with status 0"), "{err}");
    assert!(r.xl_log().contains("destroy 7"));
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
    stop_sim(xen_sim);
}

fn runtime_state(r: &Rig) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(r.run_dir().join("7/state.json")).unwrap())
        .unwrap()
}

#[test]
fn real_device_models_come_up_answer_and_stop() {
    if missing_binaries() {
        return;
    }
    let bins = bin_dir();
    let (r, xen_sim) = sim_rig("real");
    let o = r
        .create_cmd(&["--detach"])
        .env("PVH_DM_BIN_DIR", &bins)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(out.trim(), "7");

    let st = r.cmd(&["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let dms = v[0]["device_models"].as_array().unwrap();
    let names: Vec<&str> = dms
        .iter()
        .map(|d| d["record"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ioapic", "pm-trap", "pci-host-bridge"]);
    let mut pids = Vec::new();
    for d in dms {
        assert_eq!(d["running"], true, "{d}");
        assert_eq!(d["status"]["domid"], 7, "{d}");
        assert_eq!(d["status"]["vcpus"], 2, "{d}");
        pids.push(d["record"]["pid"].as_u64().unwrap() as u32);
    }
    let o = r.cmd(&["destroy", "7"]).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("exited after SIGTERM"), "{err}");
    for p in pids {
        let start = Instant::now();
        while alive(p) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(p), "device model {p} still runs");
    }
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
    stop_sim(xen_sim);
}

/// (name, pid, log) of each device model in state.json.
fn dm_records(st: &serde_json::Value) -> Vec<(String, u32, PathBuf)> {
    st["device_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["pid"].as_u64().unwrap() as u32,
                PathBuf::from(d["log"].as_str().unwrap_or_default()),
            )
        })
        .collect()
}

fn gone_within(pid: u32, secs: u64) -> bool {
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

#[test]
fn real_device_models_exit_through_their_teardown_when_their_launcher_dies() {
    // The second line of defence alone: launcher and reaper SIGKILLed together. Each device
    // model was started with --exit-with-parent (PR_SET_PDEATHSIG): it gets SIGTERM and runs
    // its normal teardown. The domain is left for `pvh-dm destroy` (nobody else is there).
    if missing_binaries() {
        return;
    }
    let (r, xen_sim) = sim_rig("real-pdeath");
    let (mut child, _xs) = supervised_real(&r, &["--dm-log-files"]);
    let st = runtime_state(&r);
    let dms = dm_records(&st);
    assert_eq!(dms.len(), 3);
    for (name, pid, _) in &dms {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let want = format!("--exit-with-parent\0{}\0", child.id());
        assert!(
            cmd.windows(want.len()).any(|w| w == want.as_bytes()),
            "{name}: {}",
            String::from_utf8_lossy(&cmd)
        );
    }
    let kill = |pid: u32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap()
    };
    kill(st["reaper"].as_u64().unwrap() as u32);
    kill(child.id());
    let _ = child.wait();
    for (name, pid, log) in &dms {
        assert!(gone_within(*pid, 10), "{name} (pid {pid}) still runs");
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("ioreq server torn down"),
            "{name} did not run its SIGTERM teardown: {text}"
        );
    }
    assert!(!r.xl_log().contains("destroy 7"), "{}", r.xl_log());
    let o = r.cmd(&["destroy", "7"]).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(r.xl_log().contains("destroy 7"));
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
    stop_sim(xen_sim);
}

#[test]
fn a_killed_launcher_of_real_device_models_is_cleaned_up_by_its_reaper() {
    if missing_binaries() {
        return;
    }
    let (r, xen_sim) = sim_rig("real-reap");
    let (mut child, _xs) = supervised_real(&r, &[]);
    let st = runtime_state(&r);
    let reaper = st["reaper"].as_u64().unwrap() as u32;
    let dms = dm_records(&st);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(gone_within(reaper, 20), "the reaper exited");
    for (name, pid, _) in &dms {
        assert!(!alive(*pid), "{name} (pid {pid}) still runs");
    }
    let destroys = r
        .xl_log()
        .lines()
        .filter(|l| l.starts_with("destroy 7 "))
        .count();
    assert_eq!(destroys, 1, "{}", r.xl_log());
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
    let err = stderr_of(&mut child);
    assert!(
        err.contains("of domain 7 (guest1) died; destroyed the domain, stopped pci-host-bridge"),
        "{err}"
    );
    stop_sim(xen_sim);
}
