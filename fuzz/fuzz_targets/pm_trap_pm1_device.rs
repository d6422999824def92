//! Arbitrary access sequences (space, address, size, data) against the device in several
//! layouts. Must never panic, and never issue a second poweroff/reboot.
//!
//! The layouts' TOML is fixed (not fuzz input), so it is parsed and resolved once per
//! process; every input builds its device (`PmTrap::new`, validation included) from a copy
//! of the resolved layout.
#![no_main]

use std::sync::OnceLock;

use ioreq_server::device::{Action, Actions, Device, ShutdownReason, Space};
use libfuzzer_sys::fuzz_target;
use pm_trap::{PmTrap, PmTrapConfig, TrapSetup};

const CONFIGS: [&str; 4] = [
    "",
    "allow_s3 = true\n",
    "pm1b_evt = 0x45C\npm1b_cnt = 0x460\ns5 = [0, 7]\ns3 = [0, 5]\nallow_s3 = true\n",
    "pm1_evt_len = 8\npm1_cnt_len = 4\npm1a_cnt = 0xB008\nsleep_control = 0xB010\nsleep_status = 0xB011\n",
];

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, mut ops)) = data.split_first() else {
        return;
    };
    static SETUPS: OnceLock<Vec<TrapSetup>> = OnceLock::new();
    let setups = SETUPS.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|c| {
                PmTrapConfig::from_guest_toml(&format!("[pm_trap]\n{c}"))
                    .unwrap()
                    .setup()
                    .unwrap()
            })
            .collect()
    });
    let mut d = PmTrap::new(setups[cfg as usize % setups.len()].clone()).unwrap();
    let ranges = d.ranges();
    let mut acts = Actions::new();
    // Each op: [kind, range/offset, size, data u16].
    while let [kind, where_, size, lo, hi, rest @ ..] = ops {
        ops = rest;
        pvh_dm_fuzz::accesses(1);
        let (space, addr) = match ranges.get(*where_ as usize % (ranges.len() + 1)) {
            Some(r) => (
                r.space,
                r.start.wrapping_add((*where_ >> 4) as u64).wrapping_sub(2),
            ),
            None => (Space::Memory, u64::MAX - (*where_ as u64)),
        };
        let size = [1u8, 2, 4, 8, 3, 0, 1, 2][*size as usize % 8];
        let value = u16::from_le_bytes([*lo, *hi]) as u64 | ((*kind as u64) << 56);
        match kind % 4 {
            0 => {
                let _ = d.read(space, addr, size, &mut acts);
            }
            3 if kind & 0x80 != 0 => d.reset(),
            _ => d.write(space, addr, size, value, &mut acts),
        }
        let hard = acts
            .as_slice()
            .iter()
            .filter(
                |a| matches!(a, Action::Shutdown { reason } if *reason != ShutdownReason::Suspend),
            )
            .count();
        // Only a reset() may re-arm: count since the last reset.
        if kind % 4 == 3 && kind & 0x80 != 0 {
            acts = Actions::new();
        } else {
            assert!(hard <= 1, "{:?}", acts.as_slice());
        }
    }
    let _ = d.status();
});
