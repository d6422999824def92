//! Every generated table checked by an independent implementation: ACPICA's `iasl -d` must
//! disassemble it without errors and show the expected objects; the SSDT must also recompile;
//! and pm-trap's own AML reader must find the same `\_Sx` values.

use std::path::{Path, PathBuf};
use std::process::Command;

use ioreq_server::config::GuestConfig;
use pvh_acpi::{generate, Inputs};

fn tables(config: &str, vcpus: Option<u32>) -> pvh_acpi::GuestTables {
    let cfg = GuestConfig::parse(config, Path::new("test.toml")).unwrap();
    generate(&Inputs::from_config(&cfg, vcpus).unwrap()).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pvh-acpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn iasl() -> Command {
    if Command::new("iasl").arg("-v").output().is_err() {
        panic!("iasl (ACPICA) not found: apt-get install acpica-tools (scripts/setup installs it)");
    }
    Command::new("iasl")
}

/// `iasl -d` on the table; fails the test on a non-zero exit or any error/warning about the
/// table's structure or checksum. Returns the disassembly.
fn disassemble(name: &str, bytes: &[u8]) -> String {
    let dir = scratch(name);
    let aml = dir.join(format!("{name}.aml"));
    std::fs::write(&aml, bytes).unwrap();
    let out = iasl()
        .current_dir(&dir)
        .arg("-d")
        .arg(&aml)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl -d {name} failed:\n{log}");
    for bad in ["Error", "error", "Invalid", "Unknown"] {
        assert!(
            !log.contains(bad),
            "iasl -d {name} reported {bad:?}:\n{log}"
        );
    }
    let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
    for bad in ["Incorrect", "Invalid", "**** ", "Unknown"] {
        assert!(!dsl.contains(bad), "{name}.dsl contains {bad:?}:\n{dsl}");
    }
    dsl
}

/// Compile a disassembled SSDT back with iasl: it must be valid ASL.
fn recompile(name: &str, dsl: &str) {
    let dir = scratch(&format!("{name}-re"));
    let src = dir.join(format!("{name}.dsl"));
    std::fs::write(&src, dsl).unwrap();
    let out = iasl().current_dir(&dir).arg(&src).output().unwrap();
    assert!(
        out.status.success(),
        "iasl could not recompile its own disassembly of {name}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The text with all whitespace removed, to match multi-line ASL regardless of layout.
fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

fn contains(dsl: &str, needle: &str) -> bool {
    squash(dsl).contains(&squash(needle))
}

const FULL: &str = r#"
domid = 3
vcpus = 2
[pm_trap]
mode = "guest"
[ioapic]
base = 0xFEC00000
[pci]
"#;

#[test]
fn ssdt_default_guest() {
    let t = tables(FULL, None);
    let dsl = disassemble("ssdt", &t.ssdt);
    assert!(contains(
        &dsl,
        r#"DefinitionBlock ("", "SSDT", 2, "PVHDM", "PVHSSDT", 0x00000001)"#
    ));
    assert!(
        contains(
            &dsl,
            "Name (\\_S5, Package (0x04) // _S5_: S5 System State { 0x07, Zero, Zero, Zero })"
        ),
        "{dsl}"
    );
    assert!(
        contains(
            &dsl,
            "Name (\\_S4, Package (0x04) // _S4_: S4 System State { 0x06, Zero, Zero, Zero })"
        ),
        "{dsl}"
    );
    assert!(!dsl.contains("\\_S3"), "\\_S3 without allow_s3:\n{dsl}");
    assert!(contains(&dsl, "Device (PCI0)"));
    assert!(contains(&dsl, r#"Name (_HID, EisaId ("PNP0A08")"#));
    assert!(contains(&dsl, r#"Name (_CID, EisaId ("PNP0A03")"#));
    assert!(contains(&dsl, "Name (_SEG, Zero)") && contains(&dsl, "Name (_BBN, Zero)"));
    assert!(contains(&dsl, "Name (_UID, Zero)"));
    // _CRS: bus range, CF8-CFF, the I/O window, the MMIO window.
    assert!(contains(&dsl, "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, // Granularity 0x0000, // Range Minimum 0x0000, // Range Maximum 0x0000, // Translation Offset 0x0001, // Length"), "{dsl}");
    assert!(contains(&dsl, "IO (Decode16, 0x0CF8, // Range Minimum 0x0CF8, // Range Maximum 0x01, // Alignment 0x08, // Length"));
    assert!(contains(&dsl, "0xC000, // Range Minimum 0xFFFF, // Range Maximum 0x0000, // Translation Offset 0x4000, // Length"));
    assert!(contains(&dsl, "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000, // Granularity 0xF1000000, // Range Minimum 0xFBFFFFFF, // Range Maximum 0x00000000, // Translation Offset 0x0B000000, // Length"), "{dsl}");
    // The ECAM window is not a window of the root bridge: it is reserved by the PNP0C02 device.
    let pci0 = &dsl[dsl.find("Device (PCI0)").unwrap()..dsl.find("Device (MRES)").unwrap()];
    assert!(!pci0.contains("0xF0000000"), "ECAM in PCI0._CRS:\n{pci0}");
    assert!(contains(
        &dsl,
        r#"Device (MRES) { Name (_HID, EisaId ("PNP0C02")"#
    ));
    assert!(contains(
        &dsl,
        "Memory32Fixed (ReadWrite, 0xF0000000, // Address Base 0x00100000, // Address Length"
    ));
    // _PRT: 32 slots x 4 pins, swizzled onto GSIs 16-19.
    assert!(contains(&dsl, "Name (_PRT, Package (0x80)"), "{dsl}");
    for slot in 0u8..32 {
        for pin in pvh_acpi::IntxPin::ALL {
            let gsi = pvh_acpi::intx_gsi(0, slot, pin);
            let p = match pin as u8 {
                0 => "Zero".to_string(),
                1 => "One".to_string(),
                n => format!("0x{n:02X}"),
            };
            let entry = format!("Package (0x04) {{ 0x{slot:04X}FFFF, {p}, Zero, 0x{gsi:02X} }}");
            assert!(contains(&dsl, &entry), "missing _PRT entry {entry}");
        }
    }
    recompile("ssdt", &dsl);
}

#[test]
fn ssdt_custom_layout() {
    let t = tables(
        r#"
domid = 1
[pm_trap]
allow_s3 = true
s3 = [1, 1]
s5 = [5, 2]
[pci]
ecam_base = 0xE0000000
bus_start = 0
bus_end = 3
mmio_base = 0xC0000000
mmio_size = 0x10000000
mmio64_base = 0x1000000000
mmio64_size = 0x100000000
io_base = 0x6000
io_size = 0x1000
"#,
        None,
    );
    let dsl = disassemble("ssdt-custom", &t.ssdt);
    assert!(
        contains(
            &dsl,
            "Name (\\_S3, Package (0x04) // _S3_: S3 System State { One, One, Zero, Zero })"
        ),
        "{dsl}"
    );
    assert!(
        contains(
            &dsl,
            "Name (\\_S5, Package (0x04) // _S5_: S5 System State { 0x05, 0x02, Zero, Zero })"
        ),
        "{dsl}"
    );
    assert!(contains(&dsl, "0x0000, // Range Minimum 0x0003, // Range Maximum 0x0000, // Translation Offset 0x0004, // Length"));
    assert!(contains(
        &dsl,
        "0x6000, // Range Minimum 0x6FFF, // Range Maximum"
    ));
    assert!(contains(
        &dsl,
        "0xC0000000, // Range Minimum 0xCFFFFFFF, // Range Maximum"
    ));
    assert!(contains(&dsl, "QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x0000000000000000, // Granularity 0x0000001000000000, // Range Minimum 0x00000010FFFFFFFF, // Range Maximum"), "{dsl}");
    assert!(contains(
        &dsl,
        "Memory32Fixed (ReadWrite, 0xE0000000, // Address Base 0x00400000, // Address Length"
    ));
    // No [ioapic]: no _PRT, no MADT.
    assert!(!dsl.contains("_PRT"));
    assert!(t.madt.is_none());
    let mcfg = disassemble("mcfg-custom", t.mcfg.as_ref().unwrap());
    assert!(contains(&mcfg, "Base Address : 00000000E0000000"), "{mcfg}");
    assert!(contains(&mcfg, "End Bus Number : 03"));
    recompile("ssdt-custom", &dsl);
}

#[test]
fn madt_replaces_libxl_and_lists_the_ioapic() {
    let t = tables("domid = 1\n[ioapic]\nbase = 0xFEC01000\nid = 1\n", Some(3));
    let dsl = disassemble("apic", t.madt.as_ref().unwrap());
    assert!(contains(&dsl, r#"Signature : "APIC""#));
    // libxl's header identity (tools/libacpi: "Xen", "HVM", revision 0) with a higher revision.
    assert!(contains(&dsl, r#"Oem ID : "Xen""#), "{dsl}");
    assert!(contains(&dsl, r#"Oem Table ID : "HVM""#));
    assert!(contains(&dsl, "Oem Revision : 00000001"));
    assert!(contains(&dsl, "Local Apic Address : FEE00000"));
    // No PC-AT 8259s: with the flag set Linux skips the PIC probe and panics in check_timer.
    assert!(contains(&dsl, "PC-AT Compatibility : 0"), "{dsl}");
    assert!(contains(&dsl, "Subtable Type : 01 [I/O APIC]"));
    assert!(contains(&dsl, "I/O Apic ID : 01"));
    assert!(contains(&dsl, "Address : FEC01000"));
    assert!(contains(&dsl, "Interrupt : 00000000"));
    assert_eq!(dsl.matches("[Processor Local APIC]").count(), 3, "{dsl}");
    for i in 0..3u8 {
        assert!(
            contains(
                &dsl,
                &format!("Processor ID : {i:02X} [{:03X}h", 0x3A + 8 * i as usize + 8),
            ) || contains(&dsl, &format!("Processor ID : {i:02X}"))
        );
        assert!(
            contains(&dsl, &format!("Local Apic ID : {:02X}", 2 * i)),
            "{dsl}"
        );
    }
    assert!(t.mcfg.is_none());
}

#[test]
fn mcfg_default_window() {
    let t = tables(FULL, None);
    let dsl = disassemble("mcfg", t.mcfg.as_ref().unwrap());
    assert!(contains(&dsl, r#"Signature : "MCFG""#));
    assert!(contains(&dsl, "Base Address : 00000000F0000000"), "{dsl}");
    assert!(contains(&dsl, "Segment Group Number : 0000"));
    assert!(contains(&dsl, "Start Bus Number : 00"));
    assert!(contains(&dsl, "End Bus Number : 00"));
    let madt = disassemble("apic-full", t.madt.as_ref().unwrap());
    assert!(contains(&madt, "Address : FEC00000"));
    assert_eq!(madt.matches("[Processor Local APIC]").count(), 2);
}

/// Two independent parsers agree: pm-trap's AML walker finds the SSDT's `\_Sx` values, and they
/// are the ones pm-trap itself matches SLP_TYP against.
#[test]
fn pm_trap_reader_agrees() {
    use pm_trap::acpi::{aml, RawTable, SleepObject};
    for (config, s3) in [
        (FULL.to_string(), None),
        (
            "domid = 1\n[pm_trap]\nallow_s3 = true\ns5 = [3, 1]\n".to_string(),
            Some([5u8, 0u8]),
        ),
    ] {
        let t = tables(&config, None);
        let mut warnings = Vec::new();
        let a = aml::analyze(
            &[RawTable {
                name: "ssdt.aml",
                bytes: &t.ssdt,
            }],
            &mut warnings,
        );
        assert!(a.errors.is_empty(), "{:?}", a.errors);
        assert!(warnings.is_empty(), "{warnings:?}");
        let setup = pm_trap::PmTrapConfig::from_guest_toml(&config)
            .unwrap()
            .guest_setup()
            .unwrap();
        assert_eq!(a.state(5), SleepObject::Static(setup.sleep.s5.unwrap()));
        assert_eq!(a.state(4), SleepObject::Static(setup.sleep.s4.unwrap()));
        match s3 {
            None => assert_eq!(a.state(3), SleepObject::Absent),
            Some(v) => assert_eq!(a.state(3), SleepObject::Static(v)),
        }
    }
    assert!(tables(FULL, None).ssdt.len() > 36, "the SSDT has a body");
    assert_eq!(pm_trap::GUEST_S5, [7, 0]);
}
