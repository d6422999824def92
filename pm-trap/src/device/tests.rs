//! Unit tests of [`PmTrap`]: ACPICA's sleep sequences, byte-wise and odd-sized accesses,
//! the latch, the reset and sleep registers, the power button.

use super::*;
use crate::config::{PmTrapConfig, ResetSetup, SleepValues, GUEST_S5};
use ioreq_server::device::Action;

const SLP_EN: u64 = 1 << 13;

fn typ(t: u8) -> u64 {
    (t as u64) << 10
}

fn shutdowns(a: &Actions) -> Vec<ShutdownReason> {
    a.as_slice()
        .iter()
        .filter_map(|x| match x {
            Action::Shutdown { reason } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn guest(extra: &str) -> PmTrap {
    let c = PmTrapConfig::from_guest_toml(&format!("[pm_trap]\n{extra}")).unwrap();
    PmTrap::new(c.setup().unwrap()).unwrap()
}

/// HP dc7800 (80DC1538C4FA, FADT rev 1): PM1a_EVT 0xF800, PM1a_CNT 0xF804, PM1b_CNT 0x460
/// (no PM1b event block), \_S3/\_S4/\_S5 = {0, 5} / {0, 6} / {0, 7}.
fn dc7800() -> PmTrap {
    PmTrap::new(TrapSetup {
        pm1a_evt: Some(Block::port(0xF800, 4)),
        pm1b_evt: None,
        pm1a_cnt: Some(Block::port(0xF804, 2)),
        pm1b_cnt: Some(Block::port(0x460, 2)),
        reset: None,
        sleep_control: None,
        sleep_status: None,
        sleep: SleepValues {
            s3: Some([0, 5]),
            s4: Some([0, 6]),
            s5: Some([0, 7]),
        },
        allow_s3: false,
    })
    .unwrap()
}

fn rd(d: &mut PmTrap, port: u64, size: u8) -> u64 {
    d.read(Space::Port, port, size, &mut Actions::new())
}

/// What ACPICA's AcpiHwLegacySleep does (Linux acpi_power_off -> S5): clear WAK_STS and all
/// fixed status bits, read PM1 control (a | b), write SLP_TYPa / SLP_TYPb, then the same
/// with SLP_EN to PM1a then PM1b, and for S4/S5 after 10 s SLP_EN alone to both halves.
fn acpica_sleep(
    d: &mut PmTrap,
    evt: [Option<u64>; 2],
    cnt: [Option<u64>; 2],
    a: u8,
    b: u8,
) -> Actions {
    let mut acts = Actions::new();
    for e in evt.into_iter().flatten() {
        d.write(Space::Port, e, 2, 0x8000, &mut acts); // WAK_STS
        d.write(Space::Port, e, 2, 0x8731, &mut acts); // ACPI_BITMASK_ALL_FIXED_STATUS
    }
    let ctl = cnt
        .iter()
        .flatten()
        .fold(0, |v, p| v | d.read(Space::Port, *p, 2, &mut acts));
    let ctl = ctl & !(typ(7) | SLP_EN);
    let vals = [ctl | typ(a), ctl | typ(b)];
    for v in [vals, vals.map(|v| v | SLP_EN)] {
        for (p, v) in cnt.iter().zip(v) {
            if let Some(p) = p {
                d.write(Space::Port, *p, 2, v, &mut acts);
            }
        }
    }
    // "We wanted to sleep > S3, but it didn't happen": stall 10 s, write SLP_EN again.
    for p in cnt.iter().flatten() {
        let v = d.read(Space::Port, *p, 2, &mut acts) & (1 << 9);
        d.write(Space::Port, *p, 2, v | SLP_EN, &mut acts);
    }
    acts
}

#[test]
fn acpica_s5_with_pm1b_dc7800() {
    let mut d = dc7800();
    let acts = acpica_sleep(
        &mut d,
        [Some(0xF800), None],
        [Some(0xF804), Some(0x460)],
        0,
        7,
    );
    assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
    assert_eq!(acts.as_slice().len(), 1);
    assert_eq!(d.shutdown_requested(), Some(ShutdownReason::Poweroff));
}

#[test]
fn acpica_s5_pm1a_only_guest() {
    let mut d = guest("");
    let acts = acpica_sleep(
        &mut d,
        [Some(0xB000), None],
        [Some(0xB004), None],
        GUEST_S5[0],
        GUEST_S5[1],
    );
    assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
    assert_eq!(acts.as_slice().len(), 1);
}

#[test]
fn pm1b_halves_in_either_order_and_pairs_must_match() {
    let mut d = dc7800();
    let mut acts = Actions::new();
    d.write(Space::Port, 0x460, 2, typ(7) | SLP_EN, &mut acts);
    assert!(acts.is_empty(), "half a request does nothing");
    d.write(Space::Port, 0xF804, 2, typ(0) | SLP_EN, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
    // (7, 0) is not \_S5 = (0, 7): no match, no action, WAK_STS set.
    let mut d = dc7800();
    let mut acts = Actions::new();
    d.write(Space::Port, 0xF804, 2, typ(7) | SLP_EN, &mut acts);
    d.write(Space::Port, 0x460, 2, typ(0) | SLP_EN, &mut acts);
    assert!(acts.is_empty());
    assert_eq!(rd(&mut d, 0xF800, 2) & 0x8000, 0x8000);
}

#[test]
fn s4_powers_off() {
    let mut d = guest("");
    let acts = acpica_sleep(&mut d, [Some(0xB000), None], [Some(0xB004), None], 6, 0);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
}

#[test]
fn byte_wise_write_to_the_high_byte() {
    let mut d = guest("");
    let mut acts = Actions::new();
    // SLP_TYP written alone first (low byte untouched), then SLP_EN in a one-byte write.
    d.write(Space::Port, 0xB005, 1, 7 << 2, &mut acts);
    assert!(acts.is_empty());
    assert_eq!(
        rd(&mut d, 0xB004, 2),
        typ(7) | 1,
        "SLP_TYP reads back, SCI_EN set"
    );
    d.write(Space::Port, 0xB005, 1, (7 << 2) | 0x20, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
    assert_eq!(rd(&mut d, 0xB005, 1), 7 << 2, "SLP_EN reads 0");
    // A low-byte write never carries SLP_EN.
    let mut d = guest("");
    let mut acts = Actions::new();
    d.write(Space::Port, 0xB004, 1, 0xFF, &mut acts);
    assert!(acts.is_empty());
    assert_eq!(
        rd(&mut d, 0xB004, 1),
        0x03,
        "BM_RLD read/write, GBL_RLS write-only, SCI_EN 1"
    );
}

#[test]
fn repeated_slp_en_gives_one_action_until_reset() {
    let mut d = guest("");
    let mut acts = Actions::new();
    for _ in 0..5 {
        d.write(Space::Port, 0xB004, 2, typ(7) | SLP_EN | 1, &mut acts);
    }
    d.write(Space::Port, 0xCF9, 1, 6, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
    d.reset();
    assert_eq!(d.shutdown_requested(), None);
    d.write(Space::Port, 0xB004, 2, typ(7) | SLP_EN, &mut acts);
    assert_eq!(
        shutdowns(&acts),
        [ShutdownReason::Poweroff, ShutdownReason::Poweroff]
    );
}

#[test]
fn reset_register() {
    let mut d = guest("");
    let mut acts = Actions::new();
    d.write(Space::Port, 0xCF9, 1, 0x02, &mut acts);
    assert!(acts.is_empty(), "SYS_RST alone does not reset");
    assert_eq!(rd(&mut d, 0xCF9, 1), 0);
    d.write(Space::Port, 0xCF9, 1, 0x06, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Reboot]);
    // Linux reboot=pci cold reset writes 0x0E: RST_CPU set, chipset resets.
    let mut d = guest("");
    let mut acts = Actions::new();
    d.write(Space::Port, 0xCF9, 1, 0x0E, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Reboot]);
    // A generic (non-CF9) reset register needs the exact value.
    let mut d = PmTrap::new(TrapSetup {
        reset: Some(ResetSetup {
            block: Block {
                space: Space::Memory,
                base: 0xFED0_0000,
                len: 1,
            },
            value: 0x0E,
        }),
        ..TrapSetup::default()
    })
    .unwrap();
    let mut acts = Actions::new();
    d.write(Space::Memory, 0xFED0_0000, 1, 0x06, &mut acts);
    assert!(acts.is_empty());
    d.write(Space::Memory, 0xFED0_0000, 1, 0x0E, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Reboot]);
    assert_eq!(d.ranges(), [Range::new(Space::Memory, 0xFED0_0000, 1)]);
}

#[test]
fn hw_reduced_sleep_control() {
    // 3FE302D11C0A: SLEEP_CONTROL 0x405, SLEEP_STATUS 0x401, \_S5 = {7, 0}.
    let setup = TrapSetup {
        sleep_control: Some(Block::port(0x405, 1)),
        sleep_status: Some(Block::port(0x401, 1)),
        sleep: SleepValues {
            s3: None,
            s4: None,
            s5: Some([7, 0]),
        },
        ..TrapSetup::default()
    };
    let mut d = PmTrap::new(setup).unwrap();
    let mut acts = Actions::new();
    d.write(Space::Port, 0x401, 1, 0x80, &mut acts); // clear WAK_STS
    d.write(Space::Port, 0x405, 1, 3 << 2 | 0x20, &mut acts); // unknown type: wake at once
    assert!(acts.is_empty());
    assert_eq!(rd(&mut d, 0x401, 1), 0x80);
    d.write(Space::Port, 0x401, 1, 0x80, &mut acts);
    assert_eq!(rd(&mut d, 0x401, 1), 0);
    d.write(Space::Port, 0x405, 1, 7 << 2, &mut acts);
    assert!(acts.is_empty(), "SLP_TYP without SLP_EN");
    d.write(Space::Port, 0x405, 1, 7 << 2 | 0x20, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
    assert_eq!(rd(&mut d, 0x405, 1), 0, "write-only");
}

#[test]
fn status_is_write_one_to_clear_and_enable_read_write() {
    // One access after the other, each with the value it must leave: the same write-then-read
    // lines over and over, on purpose (the sequence is the register's behaviour).
    let mut d = guest("");
    let mut acts = Actions::new();
    d.write(Space::Port, 0xB004, 2, typ(1) | SLP_EN, &mut acts); // S1: no match
    assert_eq!(rd(&mut d, 0xB000, 2), 0x8000);
    d.write(Space::Port, 0xB000, 2, 0x0000, &mut acts);
    assert_eq!(rd(&mut d, 0xB000, 2), 0x8000, "writing 0 keeps the bit");
    d.write(Space::Port, 0xB000, 1, 0xFF, &mut acts);
    assert_eq!(
        rd(&mut d, 0xB000, 2),
        0x8000,
        "low byte does not touch WAK_STS"
    );
    d.write(Space::Port, 0xB001, 1, 0x80, &mut acts);
    assert_eq!(rd(&mut d, 0xB000, 2), 0);
    d.write(Space::Port, 0xB002, 2, 0xFFFF, &mut acts);
    assert_eq!(
        rd(&mut d, 0xB002, 2),
        0x4721,
        "only defined enable bits stick"
    );
    // A dword write covering status and enable.
    d.write(Space::Port, 0xB000, 4, 0x0100_FFFF, &mut acts);
    assert_eq!(rd(&mut d, 0xB000, 4), 0x0100_0000);
    assert!(acts.is_empty());
}

#[test]
fn s3_refused_unless_allowed_and_resume_releases_the_latch() {
    let mut d = guest("");
    let mut acts = Actions::new();
    d.write(Space::Port, 0xB004, 2, typ(5) | SLP_EN, &mut acts);
    assert!(acts.is_empty());
    assert_eq!(
        rd(&mut d, 0xB000, 2) & 0x8000,
        0x8000,
        "refused S3 wakes at once"
    );
    let mut d = guest("allow_s3 = true\n");
    let mut acts = Actions::new();
    d.write(Space::Port, 0xB000, 2, 0x8000, &mut acts);
    d.write(Space::Port, 0xB004, 2, typ(5) | SLP_EN, &mut acts);
    d.write(Space::Port, 0xB004, 2, typ(5) | SLP_EN, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Suspend]);
    // Resumed: the guest sees WAK_STS, clears it, and can suspend again.
    assert_eq!(rd(&mut d, 0xB000, 2) & 0x8000, 0x8000);
    d.write(Space::Port, 0xB000, 2, 0x8000, &mut acts);
    assert_eq!(d.shutdown_requested(), None);
    d.write(Space::Port, 0xB004, 2, typ(5) | SLP_EN, &mut acts);
    assert_eq!(
        shutdowns(&acts),
        [ShutdownReason::Suspend, ShutdownReason::Suspend]
    );
    // Clearing WAK_STS does not release a poweroff latch.
    d.write(Space::Port, 0xB000, 2, 0x8000, &mut acts);
    d.write(Space::Port, 0xB004, 2, typ(7) | SLP_EN, &mut acts);
    d.write(Space::Port, 0xB000, 2, 0x8000, &mut acts);
    d.write(Space::Port, 0xB004, 2, typ(7) | SLP_EN, &mut acts);
    assert_eq!(
        shutdowns(&acts),
        [
            ShutdownReason::Suspend,
            ShutdownReason::Suspend,
            ShutdownReason::Poweroff
        ]
    );
}

#[test]
fn bad_sizes_offsets_and_holes() {
    let mut d = guest("");
    let mut acts = Actions::new();
    assert_eq!(
        d.read(Space::Port, 0xB006, 1, &mut acts),
        0xFF,
        "outside every range"
    );
    assert_eq!(
        d.read(Space::Port, 0xB003, 2, &mut acts),
        0xFFFF,
        "crosses the end of a range"
    );
    assert_eq!(
        d.read(Space::Port, 0xB004, 3, &mut acts),
        0xFF_FFFF,
        "size 3"
    );
    assert_eq!(d.read(Space::Port, 0xB004, 0, &mut acts), 0);
    assert_eq!(
        d.read(Space::Memory, 0xB004, 2, &mut acts),
        0xFFFF,
        "wrong space"
    );
    assert_eq!(d.read(Space::Port, u64::MAX, 8, &mut acts), u64::MAX);
    d.write(Space::Port, u64::MAX - 1, 8, u64::MAX, &mut acts);
    d.write(Space::Port, 0xB004, 3, u64::MAX, &mut acts);
    assert!(acts.is_empty());
    // Every size at every offset of every range, reads and writes: no panic, and a read
    // of a register byte never returns all-ones for the control register.
    let mut d = dc7800();
    let ranges = d.ranges();
    for r in &ranges {
        for addr in r.start.saturating_sub(2)..=r.end + 2 {
            for size in [1u8, 2, 4, 8, 3, 0, 16] {
                let _ = d.read(Space::Port, addr, size, &mut acts);
                d.write(Space::Port, addr, size, 0x5A5A_5A5A_5A5A_5A5A, &mut acts);
                d.write(Space::Port, addr, size, 0, &mut acts);
            }
        }
    }
    // A 4-byte control block: the upper bytes are reserved bits and read 0; an 8-byte
    // event block splits into 4-byte status and enable halves.
    let mut d = guest("pm1_cnt_len = 4\npm1a_cnt = 0xB008\npm1_evt_len = 8\n");
    assert_eq!(rd(&mut d, 0xB008, 4), 1);
    assert_eq!(rd(&mut d, 0xB004, 4), 0, "enable half of the 8-byte block");
    assert_eq!(d.status()["counters"]["bad_accesses"], json!(0));
}

#[test]
fn block_at_the_top_of_memory() {
    let top = u64::MAX;
    let mut d = PmTrap::new(TrapSetup {
        reset: Some(ResetSetup {
            block: Block {
                space: Space::Memory,
                base: top,
                len: 1,
            },
            value: 1,
        }),
        sleep_control: Some(Block {
            space: Space::Memory,
            base: top - 1,
            len: 1,
        }),
        ..TrapSetup::default()
    })
    .unwrap();
    assert_eq!(
        d.ranges()[0],
        Range {
            space: Space::Memory,
            start: top,
            end: top
        }
    );
    let mut acts = Actions::new();
    assert_eq!(d.read(Space::Memory, top, 1, &mut acts), 0);
    assert_eq!(
        d.read(Space::Memory, top - 1, 2, &mut acts),
        0xFFFF,
        "spans two blocks"
    );
    d.write(Space::Memory, top, 1, 1, &mut acts);
    assert_eq!(shutdowns(&acts), [ShutdownReason::Reboot]);
}

#[test]
fn power_button_sets_pwrbtn_sts_until_the_guest_clears_it() {
    let mut d = guest("");
    let sts = d.setup().pm1a_evt.unwrap().base;
    assert_eq!(rd(&mut d, sts, 2) & (1 << 8), 0);
    let r = d
        .control("power_button", &serde_json::Value::Null)
        .unwrap()
        .unwrap();
    assert_eq!(r["pwrbtn_sts"], true);
    assert_eq!(r["pwrbtn_en"], false);
    assert_eq!(rd(&mut d, sts, 2) & (1 << 8), 1 << 8);
    // Writing another status bit leaves it; writing it back clears it.
    let mut a = Actions::new();
    d.write(Space::Port, sts, 2, 1 << 15, &mut a);
    assert_eq!(rd(&mut d, sts, 2) & (1 << 8), 1 << 8);
    d.write(Space::Port, sts, 2, 1 << 8, &mut a);
    assert_eq!(rd(&mut d, sts, 2) & (1 << 8), 0);
    assert!(a.is_empty(), "a button press is no shutdown by itself");
    assert!(d.control("no_such_cmd", &serde_json::Value::Null).is_none());
}

#[test]
fn ranges_and_status() {
    let d = dc7800();
    assert_eq!(
        d.ranges(),
        [
            Range::new(Space::Port, 0xF800, 4),
            Range::new(Space::Port, 0xF804, 2),
            Range::new(Space::Port, 0x460, 2),
        ]
    );
    assert_eq!(d.name(), "pm-trap");
    let s = d.status();
    assert_eq!(s["shutdown_requested"], json!(null));
    assert_eq!(s["setup"]["sleep"]["s5"], json!([0, 7]));
    assert!(all_ones(1) == 0xFF && all_ones(4) == 0xFFFF_FFFF && all_ones(8) == u64::MAX);
}
