//! `pvh-dm create` end to end against a fake `xl`, fake device models and a fake xenstored.

mod common;

use std::time::Duration;

use nix::sys::signal::Signal;

use common::*;

const PT_DEVICE: &str = r#"
[pci]
[[pci.device]]
host = "0000:03:10.1"
slot = 2
backend = "sysfs"
"#;

#[test]
fn a_device_missing_from_sysfs_is_named_and_nothing_happens() {
    let r = Rig::new("baddev");
    r.write_toml(PT_DEVICE);
    let o = r.create(&["--detach"]);
    let err = stderr_exited(&o, 3);
    assert!(err.contains("0000:03:10.1"), "{err}");
    assert!(err.contains("no such host function"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(r.xl_log(), "", "xl must not be called at all");
    assert_eq!(r.dm_log(), "", "no device model started");
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

#[test]
fn a_function_bound_to_a_dom0_driver_is_refused() {
    let r = Rig::new("bound");
    r.add_function("0000:03:10.1", Some("nvme"));
    r.write_toml(PT_DEVICE);
    let o = r.create(&["--detach"]);
    let err = stderr_exited(&o, 3);
    assert!(err.contains("in use by dom0's driver nvme"), "{err}");
    assert_eq!(r.xl_log(), "");
}

#[test]
fn an_xl_pci_list_is_refused_with_the_reason() {
    let r = Rig::new("pcilist");
    r.write_xl(&format!("{XL_CFG}pci = [ '0000:03:10.1' ]\n"));
    let o = r.create(&["--detach"]);
    let err = stderr_exited(&o, 3);
    assert!(err.contains("line 10"), "{err}");
    assert!(err.contains("pciback/pcifront"), "{err}");
    assert_eq!(r.xl_log(), "");
}

#[test]
fn other_refusals() {
    let r = Rig::new("refusals");
    // Not PVH.
    r.write_xl(&XL_CFG.replace("\"pvh\"", "\"hvm\""));
    let (_, err) = text(&r.create(&["--detach"]));
    assert!(err.contains("PVH guests only"), "{err}");
    // No ramdisk.
    r.write_xl(&XL_CFG.replace("ramdisk = \"RAMDISK\"\n", ""));
    let o = r.create(&["--detach"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        err.contains("no `ramdisk`") && err.contains("--no-acpi-upgrade"),
        "{err}"
    );
    // Not a Linux kernel.
    std::fs::write(r.dir().join("other.elf"), b"\x7fELF a unikernel").unwrap();
    r.write_xl(&XL_CFG.replace("KERNEL", &r.dir().join("other.elf").to_string_lossy()));
    let (_, err) = text(&r.create(&["--detach"]));
    assert!(
        err.contains("not a Linux bzImage") && err.contains("toolstack must add"),
        "{err}"
    );
    // Memory over the ECAM window.
    r.write_xl(&XL_CFG.replace("memory = 256", "memory = 4096"));
    r.write_toml("[pci]\n");
    let (_, err) = text(&r.create(&["--detach"]));
    assert!(
        err.contains("0xf0000000") && err.contains("at most 3840 MiB"),
        "{err}"
    );
    // INTx without an IOAPIC.
    r.write_xl(XL_CFG);
    r.add_function("0000:03:00.0", Some("uio_pci_generic"));
    r.write_toml("[pci]\n[[pci.device]]\nhost = \"0000:03:00.0\"\nslot = 1\nintx = \"uio\"\n");
    let (_, err) = text(&r.create(&["--detach"]));
    assert!(err.contains("no [ioapic] section"), "{err}");
    // No guest TOML.
    std::fs::remove_file(r.dir().join("guest1.toml")).unwrap();
    let (_, err) = text(&r.create(&["--detach"]));
    assert!(
        err.contains("no guest TOML") && err.contains("guest1.toml"),
        "{err}"
    );
    assert_eq!(r.xl_log(), "");
}

#[test]
fn dry_run_validates_and_changes_nothing() {
    let r = Rig::new("dry");
    r.write_toml("[ioapic]\n[pci]\n");
    let o = r.create(&["--dry-run"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        out.contains("device models: ioapic, pm-trap, pci-host-bridge"),
        "{out}"
    );
    assert!(out.contains("ssdt, apic, mcfg"), "{out}");
    assert_eq!(
        r.xl_log(),
        "domid guest1 | PVH_DM_IOMMU= LD_PRELOAD=\n",
        "only the name check"
    );
    assert!(r.run_entries().is_empty());
}

/// The passthrough guest: unpause fails -> device models killed, domain destroyed, runtime
/// dir removed; and what xl was given on the way.
#[test]
fn unpause_failure_undoes_everything() {
    let r = Rig::new("rollback");
    r.add_function("0000:03:10.1", None);
    r.write_toml(&format!(
        "[ioapic]\nsocket = \"{}\"\n{}intx = \"/dev/uio0\"\n",
        r.dir().join("pins.sock").display(),
        PT_DEVICE
    ));
    r.touch("fail-unpause");
    let o = r.create(&["--detach"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert_eq!(out, "", "no domid printed");
    assert!(err.contains("step 'xl unpause'"), "{err}");
    assert!(err.contains("fake unpause failure"), "{err}");
    assert!(err.contains("domain 7 destroyed"), "{err}");
    let e = ended(&r, "guest1");
    assert_eq!(e["exit_code"], 4);
    assert_eq!(e["end"], "setup_failed");
    assert!(
        e["message"].as_str().unwrap().contains("step 'xl unpause'"),
        "{e}"
    );
    let xl = r.xl_log();
    let calls: Vec<&str> = xl.lines().map(|l| l.split(" | ").next().unwrap()).collect();
    assert_eq!(calls[0], "domid guest1", "the name is free: {xl}");
    assert_eq!(calls[1], "info", "{xl}");
    assert!(
        calls[2].starts_with("create -p ") && !calls[2].contains(" -e "),
        "{xl}"
    );
    assert!(xl.lines().nth(2).unwrap().contains(&format!(
        "PVH_DM_IOMMU=1 LD_PRELOAD={}",
        r.dir().join("cdf-iommu.so").display()
    )));
    assert_eq!(
        &calls[3..],
        ["domid guest1", "unpause 7", "destroy 7"],
        "{xl}"
    );
    // Every device model started, in order, and got SIGTERM in the reverse order.
    let dm = r.dm_log();
    let events: Vec<String> = dm
        .lines()
        .map(|l| l.split(" pid=").next().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        [
            "ioapic start 7",
            "pm-trap start 7",
            "pci-host-bridge start 7",
            "pci-host-bridge sigterm 7",
            "pm-trap sigterm 7",
            "ioapic sigterm 7",
            // ... and only then the domain (the fake xl logs it here too).
            "xl destroy 7"
        ],
        "{dm}"
    );
    for pid in started_pids(&dm) {
        assert!(!alive(pid), "device model {pid} still runs");
    }
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
    // What xl was given: the derived config, ramdisk replaced by tables + original ramdisk.
    let cfg = std::fs::read_to_string(r.dir().join("xl/cfg-seen")).unwrap();
    assert!(cfg.contains("# Derived by pvh-dm"), "{cfg}");
    assert!(
        cfg.contains("name = \"guest1\"") && cfg.contains("memory = 256"),
        "{cfg}"
    );
    let initrd = std::fs::read(r.dir().join("xl/initrd-seen")).unwrap();
    let (entries, end) = pvh_dm::cpio::parse(&initrd).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kernel",
            "kernel/firmware",
            "kernel/firmware/acpi",
            "kernel/firmware/acpi/ssdt.aml",
            "kernel/firmware/acpi/apic.aml",
            "kernel/firmware/acpi/mcfg.aml"
        ]
    );
    assert_eq!(&entries[3].data[..4], b"SSDT");
    assert_eq!(&entries[4].data[..4], b"APIC");
    assert_eq!(&entries[5].data[..4], b"MCFG");
    let tail = &initrd[initrd.len() - 22..];
    assert_eq!(tail, b"ORIGINAL-RAMDISK-BYTES");
    assert!(initrd[end..initrd.len() - 22].iter().all(|&b| b == 0));
    assert_eq!(
        (initrd.len() - 22) % 512,
        0,
        "the tables cpio is padded to 512 bytes"
    );
}

#[test]
fn a_device_model_that_dies_at_start_up_is_named_and_undone() {
    let r = Rig::new("dmfail");
    r.write_toml("[ioapic]\n");
    let mut c = r.create_cmd(&["--detach"]);
    c.env("FAKE_DM_FAIL", "pm-trap");
    let o = c.output().unwrap();
    let err = stderr_exited(&o, 4);
    assert!(err.contains("step 'start pm-trap'"), "{err}");
    assert!(err.contains("exited with status 1"), "{err}");
    assert!(
        err.contains("fake failure at start-up"),
        "the log's end is quoted: {err}"
    );
    let xl = r.xl_log();
    assert!(xl.contains("destroy 7"), "{xl}");
    assert!(!xl.contains("unpause"), "{xl}");
    assert!(
        !xl.contains("PVH_DM_IOMMU=1"),
        "no passthrough, no wrapper: {xl}"
    );
    let dm = r.dm_log();
    assert!(dm.contains("ioapic sigterm 7"), "{dm}");
    assert!(!dm.contains("pci-host-bridge"), "{dm}");
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

#[test]
fn xl_create_failure_leaves_nothing() {
    let r = Rig::new("createfail");
    r.touch("fail-create");
    let o = r.create(&["--detach"]);
    let err = stderr_exited(&o, 4);
    assert!(
        err.contains("step 'xl create'") && err.contains("fake create failure"),
        "{err}"
    );
    assert_eq!(r.dm_log(), "");
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

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
fn supervision_without_xenstore_is_refused_up_front() {
    let r = Rig::new("noxs");
    let o = r.create(&["--xenstore", &r.dir().join("nope.sock").to_string_lossy()]);
    let err = stderr_exited(&o, 3);
    assert!(
        err.contains("xenstore") && err.contains("--detach"),
        "{err}"
    );
    assert_eq!(r.xl_log(), "");
}

#[test]
fn a_passthrough_domain_without_an_iommu_context_is_destroyed() {
    let r = Rig::new("nocdf");
    r.add_function("0000:03:10.1", Some("pciback"));
    r.write_toml(PT_DEVICE);
    r.touch("no-cdf");
    let o = r.create(&["--detach"]);
    let err = stderr_exited(&o, 4);
    assert!(
        err.contains("step 'xl create'") && err.contains("no IOMMU context"),
        "{err}"
    );
    assert!(err.contains("domain guest1 destroyed"), "{err}");
    assert!(r.xl_log().contains("destroy guest1"), "{}", r.xl_log());
    assert_eq!(r.dm_log(), "xl destroy guest1\n", "no device model started");
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

#[test]
fn no_iommu_in_xen_is_refused_before_create() {
    let r = Rig::new("noiommu");
    r.add_function("0000:03:10.1", None);
    r.write_toml(PT_DEVICE);
    let xl = std::fs::read_to_string(r.dir().join("xl-bin"))
        .unwrap()
        .replace("pv hvm hvm_directio pv_directio hap", "pv hvm hap");
    std::fs::write(r.dir().join("xl-bin"), xl).unwrap();
    let o = r.create(&["--detach"]);
    let err = stderr_exited(&o, 3);
    assert!(
        err.contains("no IOMMU enabled") && err.contains("hvm_directio"),
        "{err}"
    );
    assert_eq!(
        r.xl_log().lines().count(),
        2,
        "only `xl info`: {}",
        r.xl_log()
    );
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

#[test]
fn an_existing_domain_of_that_name_is_refused() {
    let r = Rig::new("exists");
    r.touch("domain");
    let o = r.create(&["--detach"]);
    let err = stderr_exited(&o, 3);
    assert!(
        err.contains("a domain named guest1 already exists (domid 7)"),
        "{err}"
    );
    assert_eq!(r.xl_log().lines().count(), 1);
}

#[test]
fn two_guests_cannot_share_an_ioapic_socket() {
    let r = Rig::new("ioapic-sock");
    let sock = r.dir().join("pins.sock");
    r.write_toml(&format!("[ioapic]\nsocket = \"{}\"\n", sock.display()));
    create_detached_ok(&r);
    // A second guest (another name) with the same TOML.
    let o = create_guest2(&r);
    let err = stderr_exited(&o, 3);
    assert!(
        err.contains("already the ioapic socket of guest guest1 (domid 7)"),
        "{err}"
    );
    destroy_ok(&r, "7");
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
fn a_device_model_that_never_answers_times_out_and_is_undone() {
    let r = Rig::new("dmslow");
    let mut c = r.cmd(&["create"]);
    c.arg(r.xl_cfg())
        .args(["--dm-timeout", "1", "--dm-stop-timeout", "3", "--detach"])
        .env("FAKE_DM_DELAY", "pm-trap:60000");
    let o = c.output().unwrap();
    let err = stderr_exited(&o, 4);
    assert!(
        err.contains("step 'start pm-trap'") && err.contains("within 1 s"),
        "{err}"
    );
    assert!(r.dm_log().contains("pm-trap sigterm 7"), "{}", r.dm_log());
    assert!(r.xl_log().contains("destroy 7"));
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

#[test]
fn sigterm_during_create_undoes_it() {
    let r = Rig::new("termcreate");
    let mut c = r.create_cmd(&["--detach"]);
    c.env("FAKE_DM_DELAY", "pm-trap:1500");
    let mut child = spawn(c);
    within(10, || r.dm_log().contains("pm-trap start"));
    signal(child.id(), Signal::SIGTERM);
    let (status, err) = exit_of(&mut child);
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(
        err.contains("create interrupted by SIGTERM after step 'start pm-trap'"),
        "{err}"
    );
    assert!(
        r.xl_log().contains("destroy 7") && !r.xl_log().contains("unpause"),
        "{}",
        r.xl_log()
    );
    assert!(r.dm_log().contains("pm-trap sigterm 7"), "{}", r.dm_log());
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}

#[test]
fn a_second_create_sees_the_first_ones_claim_while_it_starts() {
    let r = Rig::new("claim");
    r.add_function("0000:03:10.1", Some("pciback"));
    r.write_toml(PT_DEVICE);
    let mut first = r.create_cmd(&["--detach"]);
    first.env("FAKE_DM_DELAY", "pm-trap:2000");
    let mut first = spawn(first);
    within(10, || r.dm_log().contains("pm-trap start"));
    let o = create_guest2(&r);
    let err = stderr_exited(&o, 3);
    assert!(
        err.contains("0000:03:10.1") && err.contains("already passed through to guest guest1"),
        "{err}"
    );
    let st = wait_timeout(&mut first, Duration::from_secs(20)).unwrap();
    assert_eq!(st.code(), Some(0), "{}", stderr_of(&mut first));
    destroy_ok(&r, "guest1");
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

#[test]
fn a_device_model_that_ignores_sigterm_is_killed() {
    let r = Rig::new("ignoreterm");
    r.touch("fail-unpause");
    let mut c = r.cmd(&["create"]);
    c.arg(r.xl_cfg())
        .args(["--dm-stop-timeout", "1", "--detach"])
        .env("FAKE_DM_IGNORE_TERM", "pm-trap");
    let o = c.output().unwrap();
    let err = stderr_exited(&o, 4);
    assert!(
        err.contains("pm-trap did not exit within 1 s of SIGTERM: SIGKILLed"),
        "{err}"
    );
    for pid in started_pids(&r.dm_log()) {
        assert!(!alive(pid), "device model {pid} still runs");
    }
    assert!(r.run_entries().is_empty(), "{:?}", r.run_entries());
}
