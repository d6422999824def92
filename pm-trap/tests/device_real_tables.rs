//! The trap built from each of the 60 real machines' tables (hardware-domain mode), driven
//! through the sleep sequence ACPICA runs for S5 with that machine's own \_S5 values: exactly
//! one poweroff, however often the guest repeats SLP_EN.

use std::path::PathBuf;

use ioreq_server::device::{Action, Actions, Device, ShutdownReason, Space};
use pm_trap::acpi::{AddressSpace, SleepObject};
use pm_trap::{from_acpi, inspect_dir, PmTrap};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/acpi")
}

fn space(s: AddressSpace) -> Space {
    if s == AddressSpace::SYSTEM_MEMORY {
        Space::Memory
    } else {
        Space::Port
    }
}

fn poweroffs(a: &Actions) -> usize {
    a.as_slice()
        .iter()
        .filter(|x| {
            matches!(
                x,
                Action::Shutdown {
                    reason: ShutdownReason::Poweroff
                }
            )
        })
        .count()
}

#[test]
fn acpica_s5_sequence_on_every_machine() {
    let dir = data_dir();
    let mut machines = 0;
    let mut failures = Vec::new();
    let mut ids: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    ids.sort();
    for m in ids {
        let id = m.file_name().unwrap().to_string_lossy().into_owned();
        let info = inspect_dir(&m).unwrap();
        let SleepObject::Static([a, b]) = info.sleep.s5 else {
            failures.push(format!("{id}: \\_S5 not static"));
            continue;
        };
        let setup = match from_acpi(&info, false) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{id}: from_acpi: {e}"));
                continue;
            }
        };
        let mut d = PmTrap::new(setup).unwrap();
        machines += 1;
        let mut acts = Actions::new();
        if info.hw_reduced {
            // ACPICA AcpiHwExtendedSleep: clear WAK_STS, write SLP_TYPa | SLP_EN (one byte).
            let st = info.sleep_status.unwrap();
            let ctl = info.sleep_control.unwrap();
            d.write(space(st.space), st.addr, 1, 0x80, &mut acts);
            for _ in 0..2 {
                d.write(
                    space(ctl.space),
                    ctl.addr,
                    1,
                    (((a & 7) << 2) | 0x20) as u64,
                    &mut acts,
                );
            }
        } else {
            let cnt: Vec<_> = [info.pm1a_cnt, info.pm1b_cnt]
                .into_iter()
                .flatten()
                .collect();
            for e in [info.pm1a_evt, info.pm1b_evt].into_iter().flatten() {
                d.write(space(e.space), e.addr, 2, 0x8000, &mut acts);
            }
            let ctl = cnt
                .iter()
                .fold(0, |v, g| v | d.read(space(g.space), g.addr, 2, &mut acts))
                & !0x3C00;
            assert_eq!(ctl & 1, 1, "{id}: SCI_EN reads 1");
            let vals = [ctl | ((a as u64 & 7) << 10), ctl | ((b as u64 & 7) << 10)];
            for en in [0, 0x2000] {
                for (g, v) in cnt.iter().zip(vals) {
                    d.write(space(g.space), g.addr, 2, v | en, &mut acts);
                }
            }
            // ACPICA's retry after 10 s, and a guest that keeps trying.
            for _ in 0..3 {
                for g in &cnt {
                    d.write(space(g.space), g.addr, 2, 0x2000, &mut acts);
                }
            }
        }
        if poweroffs(&acts) != 1 || acts.as_slice().len() != 1 {
            failures.push(format!("{id}: actions {:?}", acts.as_slice()));
        }
        // Reset register, where the machine has one the trap handles: reboot only after reset().
        if let Some(r) = d.setup().reset {
            d.reset();
            let mut acts = Actions::new();
            let value = r.value as u64;
            d.write(r.block.space, r.block.base, 1, value, &mut acts);
            d.write(r.block.space, r.block.base, 1, value, &mut acts);
            if acts.as_slice()
                != [Action::Shutdown {
                    reason: ShutdownReason::Reboot,
                }]
            {
                failures.push(format!("{id}: reset register: {:?}", acts.as_slice()));
            }
        }
    }
    assert_eq!(machines, 60, "{failures:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_shape_is_the_contract() {
    let info = inspect_dir(data_dir().join("80DC1538C4FA")).unwrap();
    let v = serde_json::to_value(&info).unwrap();
    for k in [
        "pm1a_cnt",
        "pm1b_cnt",
        "reset",
        "hw_reduced",
        "sleep_control",
        "sleep",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(
        v["pm1a_cnt"],
        serde_json::json!({"space": "io", "addr": 0xF804, "bit_width": 16})
    );
    assert_eq!(
        v["pm1b_cnt"],
        serde_json::json!({"space": "io", "addr": 0x460, "bit_width": 16})
    );
    assert_eq!(v["reset"], serde_json::Value::Null);
    assert_eq!(
        v["sleep"],
        serde_json::json!({"S3": [0, 5], "S4": [0, 6], "S5": [0, 7]})
    );
    let info = inspect_dir(data_dir().join("02510C38EA0D")).unwrap();
    let v = serde_json::to_value(&info).unwrap();
    assert_eq!(
        v["reset"],
        serde_json::json!({"space": "io", "addr": 0xB2, "bit_width": 8, "value": 0xE4})
    );
    assert_eq!(v["sleep"]["S3"], "dynamic");
    let text = info.to_string();
    assert!(
        text.contains("PM1a_CNT") && text.contains("dynamic"),
        "{text}"
    );
}

#[test]
fn missing_and_malformed_fadt_name_the_file() {
    let tmp = std::env::temp_dir().join(format!("pm-trap-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let e = inspect_dir(&tmp).unwrap_err().to_string();
    assert!(
        e.contains("no FADT") && e.contains(&tmp.display().to_string()),
        "{e}"
    );
    std::fs::write(tmp.join("FACP"), b"FACP\x10\0\0\0").unwrap();
    let e = inspect_dir(&tmp).unwrap_err().to_string();
    assert!(e.contains("FACP") && e.contains("malformed"), "{e}");
    // sysfs names work like acpixtract names.
    let src = data_dir().join("80DC1538C4FA");
    std::fs::copy(src.join("facp.dat"), tmp.join("FACP")).unwrap();
    std::fs::copy(src.join("dsdt.dat"), tmp.join("DSDT")).unwrap();
    let info = inspect_dir(&tmp).unwrap();
    assert_eq!(info.sleep.s5, SleepObject::Static([0, 7]));
    let _ = std::fs::remove_dir_all(&tmp);
}
