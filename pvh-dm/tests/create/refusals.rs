//! What `pvh-dm create` refuses before it changes anything: functions missing or bound to a
//! dom0 driver, an xl `pci` list, configurations it cannot run, no xenstore for supervision,
//! no IOMMU, a name or an ioapic socket or a function already in use; and `--dry-run`.

use super::*;

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
