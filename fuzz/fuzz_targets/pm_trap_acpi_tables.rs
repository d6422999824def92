//! Arbitrary bytes as a FADT and as DSDT/SSDT through the ACPI reader, then the layout it
//! yields through the device. Must never panic.
#![no_main]

use ioreq_server::device::{Actions, Device};
use libfuzzer_sys::fuzz_target;
use pm_trap::acpi::{inspect_tables, RawTable};

/// A valid ACPI 2.0 FADT (244 bytes): PM1a 0x400/0x404, reset 0xCF9 = 6.
fn fadt() -> Vec<u8> {
    let mut t = vec![0u8; 244];
    t[..4].copy_from_slice(b"FACP");
    t[4] = 244;
    t[8] = 3;
    t[56..60].copy_from_slice(&0x400u32.to_le_bytes());
    t[64..68].copy_from_slice(&0x404u32.to_le_bytes());
    t[88] = 4;
    t[89] = 2;
    t[112..116].copy_from_slice(&(1u32 << 10).to_le_bytes());
    t[116] = 1;
    t[117] = 8;
    t[120..122].copy_from_slice(&0xCF9u16.to_le_bytes());
    t[128] = 6;
    fix(b"FACP", t)
}

/// Correct signature, length and checksum, so that the parsers go past the header.
fn fix(sig: &[u8; 4], mut t: Vec<u8>) -> Vec<u8> {
    if t.len() < 36 {
        t.resize(36, 0);
    }
    t[..4].copy_from_slice(sig);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[9] = 0;
    let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

/// AML body with a DSDT header in front.
fn dsdt(body: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 36];
    t.extend_from_slice(body);
    fix(b"DSDT", t)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (f, tables): (Vec<u8>, Vec<Vec<u8>>) = match mode % 5 {
        // The input is the FADT, raw.
        0 => (rest.to_vec(), Vec::new()),
        // The input is the FADT with a fixed header.
        1 => (fix(b"FACP", rest.to_vec()), Vec::new()),
        // The input is AML (a DSDT body); and raw as an SSDT too.
        2 => (fadt(), vec![dsdt(rest), rest.to_vec()]),
        // The input is AML split in two tables: methods of one are invoked from the other.
        3 => {
            let cut = rest.first().map_or(0, |c| *c as usize * rest.len() / 256);
            (fadt(), vec![dsdt(&rest[..cut]), dsdt(&rest[cut..])])
        }
        // FADT and DSDT both from the input.
        _ => {
            let cut = rest.len().min(276);
            (fix(b"FACP", rest[..cut].to_vec()), vec![dsdt(&rest[cut..])])
        }
    };
    let blocks: Vec<RawTable<'_>> = tables
        .iter()
        .map(|t| RawTable {
            name: "t",
            bytes: t,
        })
        .collect();
    let Ok(info) = inspect_tables(
        RawTable {
            name: "facp",
            bytes: &f,
        },
        &blocks,
    ) else {
        return;
    };
    let _ = info.to_string();
    let _ = format!("{info:?}");
    for allow_s3 in [false, true] {
        if let Ok(setup) = pm_trap::from_acpi(&info, allow_s3) {
            let mut d = pm_trap::PmTrap::new(setup).expect("from_acpi validates");
            let mut acts = Actions::new();
            for r in d.ranges() {
                for off in 0..=(r.end - r.start) {
                    let _ = d.read(r.space, r.start + off, 1, &mut acts);
                    d.write(r.space, r.start + off, 1, 0xFF, &mut acts);
                }
            }
        }
    }
});
