//! A supervised guest's ends: poweroff, reboot and crash, destroyed from outside, a device
//! model that dies, SIGTERM to the supervisor; each with its exit code and its cleanup.

use super::*;

#[test]
fn supervised_poweroff_stops_everything_and_exits_0() {
    let r = Rig::new("poweroff");
    r.write_toml("[ioapic]\n[pci]\n");
    let (mut child, xs) = supervised(&r, &[]);
    assert!(
        r.xl_log().lines().any(|l| l.starts_with("create -p -e ")),
        "{}",
        r.xl_log()
    );
    let st = r.cmd(&["status"]).output().unwrap();
    let (out, _) = text(&st);
    assert!(
        out.contains("domid 7 guest1 running supervisor pid"),
        "{out}"
    );
    assert!(
        out.contains("pci-host-bridge") && out.contains("uptime"),
        "{out}"
    );
    // The guest powers off: Xen marks it shut down, xenstored fires @releaseDomain.
    r.set_state("---s-- 0");
    xs.fire.send(()).unwrap();
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("shut down: poweroff"), "{err}");
    let e = ended(&r, "guest1");
    assert_eq!(e["exit_code"], 0);
    assert_eq!(e["end"], "shutdown");
    assert_eq!(e["reason"], "poweroff");
    assert_eq!(e["reason_code"], 0);
    assert_eq!(e["domid"], 7);
    assert!(r.xl_log().contains("destroy 7"), "{}", r.xl_log());
    let dm = r.dm_log();
    let order: Vec<&str> = dm
        .lines()
        .filter(|l| l.contains("sigterm"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(order, ["pci-host-bridge", "pm-trap", "ioapic"], "{dm}");
    // The device models stop before the domain is destroyed (on Xen 4.17 `xl destroy` of a
    // PVH guest with a VF did not return while they ran); a shut-down guest is not paused.
    let lines: Vec<&str> = dm.lines().collect();
    let last_term = lines.iter().rposition(|l| l.contains("sigterm")).unwrap();
    let destroy = lines.iter().position(|l| *l == "xl destroy 7");
    assert!(destroy.is_some_and(|d| d > last_term), "{dm}");
    assert!(!dm.contains("xl pause"), "{dm}");
    // xl runs with no signal blocked: its libxl waits for its destroyer child through SIGCHLD,
    // and with pvh-dm's signalfd mask inherited `xl destroy` never returned on the rig.
    let masks = std::fs::read_to_string(r.dir().join("xl-sigmask")).unwrap();
    assert!(masks.lines().count() >= 3, "{masks}");
    assert!(
        masks.lines().all(|l| l.ends_with("0000000000000000")),
        "{masks}"
    );
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

#[test]
fn supervised_reboot_and_crash_exit_codes() {
    for (state, code, word) in [("---sr- 1", 10, "reboot"), ("---sc- 3", 11, "crash")] {
        let r = Rig::new("reasons");
        let (mut child, xs) = supervised(&r, &[]);
        r.set_state(state);
        xs.fire.send(()).unwrap();
        let (status, err) = exit_of(&mut child);
        assert_eq!(status.code(), Some(code), "{err}");
        assert!(err.contains(word), "{err}");
    }
}

#[test]
fn destroyed_from_outside_exits_14() {
    let r = Rig::new("gone");
    let (mut child, xs) = supervised(&r, &[]);
    std::fs::remove_file(r.dir().join("xl/domain")).unwrap();
    xs.fire.send(()).unwrap();
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(14), "{err}");
    assert!(err.contains("without a shutdown reason"), "{err}");
    assert!(r.dm_log().contains("pm-trap sigterm 7"));
    assert!(r.run_entries().is_empty());
}

#[test]
fn a_dying_device_model_destroys_the_domain() {
    let r = Rig::new("dmdies");
    r.write_toml("[pci]\n");
    let (mut child, _xs) = supervised(&r, &[("FAKE_DM_DIE", "pm-trap:1500")]);
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(20), "{err}");
    assert!(err.contains("device model pm-trap (pid"), "{err}");
    assert!(err.contains("exited with status 3"), "{err}");
    assert_eq!(ended(&r, "guest1")["end"], "device_model_died");
    assert!(r.xl_log().contains("destroy 7"), "{}", r.xl_log());
    // Its vCPUs may still run: paused, then the other device models stop, then destroyed.
    let dm = r.dm_log();
    let pos = |w: &str| dm.lines().position(|l| l.contains(w));
    let (p, t, d) = (
        pos("xl pause 7"),
        pos("pci-host-bridge sigterm 7"),
        pos("xl destroy 7"),
    );
    assert!(p.is_some() && t.is_some() && d.is_some(), "{dm}");
    assert!(p < t && t < d, "pause, stop, destroy: {dm}");
    assert!(r.run_entries().is_empty());
}

#[test]
fn sigterm_asks_for_a_clean_shutdown_then_destroys() {
    // The guest obeys: control/shutdown -> it powers off -> exit 0.
    let r = Rig::new("term-ok");
    let (mut child, xs) = supervised(&r, &[]);
    signal(child.id(), Signal::SIGTERM);
    within(10, || r.dir().join("xl/shutdown-requested").exists());
    assert_eq!(r.xs_writes(), "/local/domain/7/control/shutdown poweroff\n");
    r.set_state("---s-- 0");
    xs.fire.send(()).unwrap();
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(0), "{err}");

    // The guest ignores it: destroyed after --shutdown-timeout (2 s) -> exit 15.
    let r = Rig::new("term-forced");
    let (mut child, _xs) = supervised(&r, &[]);
    signal(child.id(), Signal::SIGTERM);
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(15), "{err}");
    assert!(err.contains("did not shut down within 2 s"), "{err}");
    assert!(r.xl_log().contains("destroy 7"));
    assert!(r.run_entries().is_empty());
}

#[test]
fn a_dead_bridge_names_the_devices_left_in_quarantine() {
    let r = Rig::new("bridgedies");
    r.add_function("0000:03:10.1", Some("pciback"));
    r.write_toml(PT_DEVICE);
    let (mut child, _xs) = supervised(&r, &[("FAKE_DM_DIE", "pci-host-bridge:1000")]);
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(20), "{err}");
    assert!(err.contains("device model pci-host-bridge (pid"), "{err}");
    assert!(
        err.contains("without handing back 0000:03:10.1")
            && err.contains("dom_io")
            && err.contains("reclaim"),
        "{err}"
    );
    assert!(r.xl_log().contains("destroy 7"));
}

#[test]
fn a_device_model_exiting_because_the_domain_went_away_is_not_blamed() {
    // The guest powers off and pm-trap exits at about the same time: the end is the poweroff.
    let r = Rig::new("dm-after-poweroff");
    let (mut child, _xs) = supervised(&r, &[("FAKE_DM_DIE", "pm-trap:1500")]);
    // The initial watch event has seen the domain alive; now it shuts down, and no watch
    // event is sent: pm-trap's exit is what pvh-dm notices first.
    std::thread::sleep(Duration::from_millis(300));
    r.set_state("---s-- 0");
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("shut down: poweroff"), "{err}");
}
