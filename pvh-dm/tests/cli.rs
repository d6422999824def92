//! The command line on a machine without Xen: help texts, `doctor`'s one line, the unit.

mod common;

use common::*;

#[test]
fn every_subcommand_explains_itself() {
    let r = Rig::new("help");
    let o = r.cmd(&["--help"]).output().unwrap();
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    for s in [
        "create",
        "status",
        "shutdown",
        "destroy",
        "doctor",
        "install-unit",
    ] {
        assert!(out.contains(s), "{s} missing from --help");
    }
    for (sub, phrases) in [
        (
            "create",
            &[
                "pvh_dm_config",
                "toolstack must add the tables",
                "--no-acpi-upgrade",
                "pci = [...]",
                "Exit codes",
                "20  a device model died",
                "--iommu-wrapper",
                "@releaseDomain",
            ][..],
        ),
        ("status", &["--json", "runtime directory"][..]),
        (
            "shutdown",
            &["power button", "control/shutdown", "ExecStop"][..],
        ),
        ("destroy", &["state.json"][..]),
        ("doctor", &["one line", "IOMMU"][..]),
        ("install-unit", &["daemon-reload"][..]),
    ] {
        let o = r.cmd(&[sub, "--help"]).output().unwrap();
        let (out, _) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{sub} --help");
        for p in phrases {
            assert!(out.contains(p), "`pvh-dm {sub} --help` lacks {p:?}:\n{out}");
        }
    }
    let o = r.cmd(&["create"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "missing argument is a usage error"
    );
}

#[test]
fn doctor_without_xen_says_so_in_one_line() {
    let r = Rig::new("doctor");
    let o = r.cmd(&["doctor"]).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("no Xen hypervisor"), "{out}");
    assert_eq!(err, "");
    assert_eq!(r.xl_log(), "", "no xl call without Xen");
}

#[test]
fn doctor_on_a_fake_xen_host_checks_the_guest() {
    let r = Rig::new("doctor-xen");
    let hv = r.dir().join("sys/hypervisor");
    std::fs::create_dir_all(hv.join("version")).unwrap();
    std::fs::write(hv.join("type"), "xen\n").unwrap();
    std::fs::write(hv.join("version/major"), "4\n").unwrap();
    std::fs::write(hv.join("version/minor"), "17\n").unwrap();
    std::fs::write(hv.join("version/extra"), ".7\n").unwrap();
    r.add_function("0000:03:10.1", None);
    r.add_function("0000:00:1f.2", Some("ahci"));
    let o = r
        .cmd(&["doctor", &r.xl_cfg().to_string_lossy()])
        .output()
        .unwrap();
    let (out, _) = text(&o);
    assert!(out.contains("ok    Xen 4.17.7"), "{out}");
    assert!(out.contains("ok    IOMMU enabled"), "{out}");
    assert!(out.contains("candidate 0000:03:10.1"), "{out}");
    assert!(
        !out.contains("candidate 0000:00:1f.2"),
        "bound to ahci: {out}"
    );
    assert!(out.contains("guest guest1 (256 MiB"), "{out}");
    assert!(out.contains("at most 3840 MiB"), "{out}");
}

#[test]
fn install_unit_writes_the_template() {
    let r = Rig::new("unit");
    let o = r.cmd(&["install-unit", "--print"]).output().unwrap();
    let (out, _) = text(&o);
    assert!(out.contains("Type=notify"), "{out}");
    assert!(out.contains(&format!(
        "ExecStart={} create /etc/xen/%i.cfg",
        std::fs::canonicalize(env!("CARGO_BIN_EXE_pvh-dm"))
            .unwrap()
            .display()
    )));
    assert!(out.contains("ExecStop=") && out.contains("shutdown /etc/xen/%i.cfg"));
    assert!(out.contains(" destroy /etc/xen/%i.cfg") && out.contains("KillMode=control-group"));
    assert!(!out.contains("@PVH_DM@"));
    let d = r.dir().join("units");
    let o = r
        .cmd(&["install-unit", "--dir", &d.to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(std::fs::read_to_string(d.join("pvh-dm@.service"))
        .unwrap()
        .contains("RestartForceExitStatus=10"));
}
