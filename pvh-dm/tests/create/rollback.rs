//! A create that fails or is interrupted half-way is undone: device models stopped (in
//! reverse order, SIGKILLed if they ignore SIGTERM), the domain destroyed, the runtime dir
//! removed; and what xl was given on the way.

use super::*;

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
