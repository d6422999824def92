//! Detached guests (`--detach`): status and destroy, `pvh-dm shutdown` (also of a supervised
//! guest), no ACPI table upgrade, and the staging and control dirs cleaned up.

use super::*;

#[test]
fn detached_guest_then_status_and_destroy() {
    let r = Rig::new("detach");
    let o = r.create(&["--detach"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(out.trim(), "7");
    assert!(
        r.xl_log().lines().any(|l| l.starts_with("create -p /")),
        "no -e with --detach: {}",
        r.xl_log()
    );
    let st = r.cmd(&["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v[0]["state"]["domid"], 7);
    assert_eq!(v[0]["state"]["phase"], "running");
    assert_eq!(v[0]["state"]["supervisor"], serde_json::Value::Null);
    assert_eq!(v[0]["device_models"][0]["record"]["name"], "pm-trap");
    assert_eq!(v[0]["device_models"][0]["running"], true);
    assert_eq!(v[0]["device_models"][0]["status"]["name"], "pm-trap");
    assert!(r.run_dir().join("7/pm-trap.log").exists());
    destroy_ok(&r, "7");
    assert!(r.xl_log().contains("destroy 7"));
    assert!(r.dm_log().contains("pm-trap sigterm 7"), "{}", r.dm_log());
    assert!(r.run_entries().is_empty());
    let o = r.cmd(&["status", "7"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_stale_staging_dir_is_cleared() {
    let r = Rig::new("stale");
    // pid 2^22+1 does not exist (pid_max is at most 2^22).
    std::fs::create_dir_all(r.run_dir().join(".create-guest1-4194305")).unwrap();
    create_detached_ok(&r);
    assert_eq!(r.run_entries(), ["7"]);
    destroy_ok(&r, "guest1");
}

#[test]
fn without_the_table_upgrade_any_kernel_and_no_ramdisk_will_do() {
    let r = Rig::new("noupgrade");
    std::fs::write(r.dir().join("other.elf"), b"\x7fELF a unikernel").unwrap();
    r.write_xl(
        &XL_CFG
            .replace("KERNEL", &r.dir().join("other.elf").to_string_lossy())
            .replace("ramdisk = \"RAMDISK\"\n", ""),
    );
    let o = r.create(&["--detach", "--no-acpi-upgrade"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(out.trim(), "7");
    let cfg = std::fs::read_to_string(r.dir().join("xl/cfg-seen")).unwrap();
    assert!(
        !cfg.contains("ramdisk =") && cfg.contains("no ACPI table upgrade"),
        "{cfg}"
    );
    assert!(!r.dir().join("xl/initrd-seen").exists());
    destroy_ok(&r, "7");
}

#[test]
fn a_control_dir_outside_the_runtime_dir_is_cleaned_too() {
    let r = Rig::new("ctldir");
    let ctl = r.dir().join("ctl");
    std::fs::write(
        r.dir().join("guest1.toml"),
        format!(
            "domid = 0\n[control]\ndir = \"{}\"\n[pm_trap]\nmode = \"guest\"\n",
            ctl.display()
        ),
    )
    .unwrap();
    let (mut child, xs) = supervised(&r, &[]);
    assert!(ctl.join("7/pm-trap.sock").exists());
    r.set_state("---s-- 0");
    xs.fire.send(()).unwrap();
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!ctl.join("7").exists(), "control dir left behind");
    // Detached, then destroyed from state.json.
    create_detached_ok(&r);
    assert!(ctl.join("7/pm-trap.sock").exists());
    destroy_ok(&r, "7");
    assert!(!ctl.join("7").exists(), "control dir left behind");
}

#[test]
fn shutdown_subcommand_supervised_and_detached() {
    // Supervised: `pvh-dm shutdown NAME` asks the supervisor (SIGTERM) and waits for it.
    let r = Rig::new("shutdown-sup");
    r.touch("obey-shutdown");
    let (mut child, xs) = supervised(&r, &[]);
    let fire = xs.fire.clone();
    let dir = r.dir().to_path_buf();
    // xenstored would fire @releaseDomain once the guest has shut down.
    let t = std::thread::spawn(move || {
        within(10, || dir.join("xl/shutdown-requested").exists());
        let _ = fire.send(());
    });
    let o = r.cmd(&["shutdown", "guest1"]).output().unwrap();
    let err = stderr_exited(&o, 0);
    assert!(err.contains("asked supervisor"), "{err}");
    t.join().unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(5)).unwrap();
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut child));
    assert!(r.run_entries().is_empty());

    // Detached, obeyed: control/shutdown written, the domain shuts down, destroyed, device
    // models stopped.
    let r = Rig::new("shutdown-det");
    r.touch("obey-shutdown");
    assert_eq!(r.create(&["--detach"]).status.code(), Some(0));
    let xs = fake_xenstored(r.dir());
    let o = r
        .cmd(&["shutdown", "7", "--timeout", "5"])
        .env("XENSTORED_PATH", &xs.path)
        .output()
        .unwrap();
    stderr_exited(&o, 0);
    assert_eq!(r.xs_writes(), "/local/domain/7/control/shutdown poweroff\n");
    let xl = r.xl_log();
    assert!(xl.contains("destroy 7"), "{xl}");
    assert!(r.dm_log().contains("pm-trap sigterm 7"));
    assert!(r.run_entries().is_empty());

    // Detached, ignored: destroyed after the timeout, exit 15.
    let r = Rig::new("shutdown-ign");
    assert_eq!(r.create(&["--detach"]).status.code(), Some(0));
    let xs = fake_xenstored(r.dir());
    let o = r
        .cmd(&["shutdown", "7", "--timeout", "1"])
        .env("XENSTORED_PATH", &xs.path)
        .output()
        .unwrap();
    let err = stderr_exited(&o, 15);
    assert!(err.contains("did not shut down within 1 s"), "{err}");
    assert!(r.xl_log().contains("destroy 7"));
    assert!(r.run_entries().is_empty());
}
