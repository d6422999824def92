//! The reaper: after a kill -9 of the launcher (alone or with its process group) it destroys
//! the domain and cleans up; after a normal end or a rollback it is told and destroys
//! nothing; with the reaper killed too, `pvh-dm destroy` cleans up and reclaims.

use super::*;

#[test]
fn after_kill_9_of_the_launcher_its_reaper_destroys_the_domain_and_cleans_up() {
    let r = Rig::new("kill9reap");
    r.add_function("0000:03:10.1", Some("pciback"));
    r.write_toml(PT_DEVICE);
    let (mut child, _xs) = supervised(&r, &[]);
    let st = state7(&r);
    let sup = st["supervisor"].as_u64().unwrap() as u32;
    let reaper = st["reaper"].as_u64().expect("state.json names the reaper") as u32;
    assert_eq!(sup, child.id());
    assert!(alive(reaper));
    let pids = started_pids(&r.dm_log());
    assert_eq!(pids.len(), 2, "{}", r.dm_log());
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        within(10, || !alive(reaper)),
        "the reaper did its work and exited"
    );
    assert_eq!(destroys(&r), 1, "{}", r.xl_log());
    for pid in pids {
        assert!(!alive(pid), "device model {pid} still runs");
    }
    assert!(!r.run_dir().join("7").exists());
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
    let dm = r.dm_log();
    assert_eq!(sigterm_order(&dm), ["pci-host-bridge", "pm-trap"], "{dm}");
    assert!(
        !dm.contains("reclaim"),
        "the bridge's own teardown ran: {dm}"
    );
    let e = ended(&r, "guest1");
    assert_eq!(e["end"], "supervisor_died");
    assert_eq!(e["exit_code"], serde_json::Value::Null);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "supervisor pid {sup} of domain 7 (guest1) died; destroyed the domain, stopped pci-host-bridge (pid"
        )),
        "{msg}"
    );
    assert!(
        msg.contains("exited after SIGTERM")
            && msg.contains("pci-host-bridge handed back 0000:03:10.1 itself"),
        "{msg}"
    );
    // The same line went to the shared stderr.
    let err = stderr_of(&mut child);
    assert!(err.contains(msg), "{err}");
}

#[test]
fn a_kill_9_of_the_launchers_process_group_leaves_the_reaper_to_reclaim_the_bridges_devices() {
    // `kill -9 -- -PGID` of the launcher's group: the supervisor and its device models die
    // together; the reaper, in a group of its own, destroys the domain and, since the bridge
    // died without its teardown, runs `pci-host-bridge reclaim`.
    use std::os::unix::process::CommandExt;
    let r = Rig::new("killpg");
    r.add_function("0000:03:10.1", Some("pciback"));
    r.write_toml(PT_DEVICE);
    let xs = fake_xenstored(r.dir());
    let mut c = r.create_cmd(&["--xenstore", &xs.path.to_string_lossy()]);
    c.process_group(0);
    let mut child = spawn(c);
    let line = first_line(&mut child, Duration::from_secs(20));
    assert_eq!(line.as_deref(), Some("7"), "{}", stderr_of(&mut child));
    let reaper = state7(&r)["reaper"].as_u64().unwrap() as u32;
    let pids = started_pids(&r.dm_log());
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert!(within(10, || !alive(reaper)), "the reaper exited");
    assert_eq!(destroys(&r), 1, "{}", r.xl_log());
    for pid in pids {
        assert!(!alive(pid), "device model {pid} still runs");
    }
    let dm = r.dm_log();
    let e = ended(&r, "guest1");
    assert!(dm.contains("pci-host-bridge reclaim 7"), "{dm} {e}");
    assert!(!dm.contains("sigterm"), "all were SIGKILLed: {dm}");
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
    let msg = ended(&r, "guest1")["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("destroyed the domain")
            && msg.contains("pci-host-bridge (pid")
            && msg.contains("not running")
            && msg.contains("reclaimed 0000:03:10.1"),
        "{msg}"
    );
}

#[test]
fn a_normal_end_tells_the_reaper_which_exits_0_and_destroys_nothing() {
    let r = Rig::new("reapdone");
    let (mut child, xs) = supervised(&r, &[]);
    let reaper = state7(&r)["reaper"].as_u64().unwrap() as u32;
    r.set_state("---s-- 0");
    xs.fire.send(()).unwrap();
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("reaper (pid {reaper}) exited with status 0")),
        "{err}"
    );
    assert!(!alive(reaper));
    // Give a wrongly woken reaper the time to act, then check it did not.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(destroys(&r), 1, "{}", r.xl_log());
    assert!(!err.contains("died;"), "{err}");
    assert_eq!(ended(&r, "guest1")["end"], "shutdown");
}

#[test]
fn a_rolled_back_supervised_create_tells_the_reaper_too() {
    let r = Rig::new("reaprollback");
    r.write_toml("[ioapic]\n");
    let xs = fake_xenstored(r.dir());
    let mut c = r.create_cmd(&["--xenstore", &xs.path.to_string_lossy()]);
    c.env("FAKE_DM_FAIL", "pm-trap");
    let o = c.output().unwrap();
    let err = stderr_exited(&o, 4);
    assert!(err.contains("reaper started"), "{err}");
    assert!(
        err.contains("reaper (pid") && err.contains("exited with status 0"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(destroys(&r), 1, "{}", r.xl_log());
    assert_eq!(ended(&r, "guest1")["end"], "setup_failed");
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

#[test]
fn after_kill_9_of_the_launcher_and_its_reaper_destroy_cleans_up() {
    // Both SIGKILLed together: nothing is left to clean up on its own; the guest and (fake,
    // they do not exit with their parent) device models run on until `pvh-dm destroy`.
    let r = Rig::new("kill9");
    r.write_toml("[pci]\n");
    let (mut child, _xs) = supervised(&r, &[]);
    let reaper = state7(&r)["reaper"].as_u64().unwrap() as u32;
    signal(reaper, Signal::SIGKILL);
    child.kill().unwrap();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(destroys(&r), 0, "{}", r.xl_log());
    let o = r.cmd(&["status"]).output().unwrap();
    let (out, _) = text(&o);
    assert!(out.contains("GONE (orphaned"), "{out}");
    assert!(
        out.contains("pm-trap") && out.contains("uptime"),
        "device models still answer: {out}"
    );
    let o = r
        .cmd(&["destroy", &r.xl_cfg().to_string_lossy()])
        .output()
        .unwrap();
    let err = stderr_exited(&o, 0);
    assert!(r.xl_log().contains("destroy 7"), "{}", r.xl_log());
    assert!(
        err.contains("pci-host-bridge") && err.contains("exited after SIGTERM"),
        "{err}"
    );
    let dm = r.dm_log();
    assert_eq!(sigterm_order(&dm), ["pci-host-bridge", "pm-trap"], "{dm}");
    for pid in started_pids(&dm) {
        assert!(!alive(pid), "device model {pid} still runs");
    }
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

#[test]
fn destroy_reclaims_the_functions_of_a_bridge_that_died_without_its_teardown() {
    let r = Rig::new("destroyreclaim");
    r.add_function("0000:03:10.1", Some("pciback"));
    r.write_toml(PT_DEVICE);
    create_detached_ok(&r);
    let bridge = state7(&r)["device_models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "pci-host-bridge")
        .unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    signal(bridge, Signal::SIGKILL);
    assert!(within(5, || !alive(bridge)));
    let o = r.cmd(&["destroy", "7"]).output().unwrap();
    let err = stderr_exited(&o, 0);
    assert!(
        err.contains("without handing back 0000:03:10.1: reclaimed"),
        "{err}"
    );
    let xl = r.xl_log();
    let dm = r.dm_log();
    assert!(dm.contains("pci-host-bridge reclaim 7"), "{dm}");
    assert!(xl.contains("destroy 7"), "{xl}");
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
    // A bridge that tore down (SIGTERM) is not reclaimed after.
    create_detached_ok(&r);
    destroy_ok(&r, "7");
    assert_eq!(
        r.dm_log().matches("pci-host-bridge reclaim 7").count(),
        1,
        "{}",
        r.dm_log()
    );
}
