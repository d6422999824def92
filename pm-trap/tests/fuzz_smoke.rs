//! The fuzz surface under plain `cargo test`: a few thousand pseudo-random and mutated real
//! tables through the ACPI reader, and random access sequences through the device, with a
//! fixed seed (reproducible). Nothing may panic; the device must never issue more than one
//! poweroff/reboot per life. The coverage-guided version is `pm-trap/fuzz` (cargo-fuzz).

use std::path::PathBuf;

use ioreq_server::device::{Action, Actions, Device, ShutdownReason, Space};
use pm_trap::acpi::{inspect_tables, RawTable};
use pm_trap::{from_acpi, PmTrap, PmTrapConfig};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Bytes AML and FADT parsers care about.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0xFF, 0x08, 0x0A, 0x0D, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x2E, 0x2F, 0x5B, 0x5C,
    0x5E, 0x5F, 0x80, 0x81, 0x82, 0xA0, 0xA1, 0xA2, 0x40, 0xC0, 0x3F, 0x7F,
];

fn mutate(r: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + r.below(8) {
        let n = b.len();
        match r.below(7) {
            0 if n > 0 => {
                let i = r.below(n);
                b[i] ^= 1 << r.below(8);
            }
            1 if n > 0 => {
                let i = r.below(n);
                b[i] = INTERESTING[r.below(INTERESTING.len())];
            }
            2 => {
                let i = r.below(n + 1);
                let k = 1 + r.below(16);
                let ins = r.bytes(k);
                b.splice(i..i, ins);
            }
            3 if n > 0 => {
                let i = r.below(n);
                let len = 1 + r.below((n - i).min(64));
                b.drain(i..i + len);
            }
            4 if n > 0 => {
                // Splice a copy of one part elsewhere (structure-aware-ish).
                let i = r.below(n);
                let len = 1 + r.below((n - i).min(256));
                let part = b[i..i + len].to_vec();
                let at = r.below(n + 1);
                b.splice(at..at, part);
            }
            5 => b.truncate(r.below(n + 1)),
            _ if n > 8 => {
                // A random PkgLength-looking lead byte.
                let i = r.below(n);
                b[i] = (r.below(4) as u8) << 6 | r.below(64) as u8;
            }
            _ => {}
        }
    }
}

/// Give `b` a correct header (signature, length, checksum) so that parsing goes past it.
fn fix_header(sig: &[u8; 4], b: &mut Vec<u8>) {
    if b.len() < 36 {
        b.resize(36, 0);
    }
    b[..4].copy_from_slice(sig);
    let len = b.len() as u32;
    b[4..8].copy_from_slice(&len.to_le_bytes());
    b[9] = 0;
    let sum = b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
    b[9] = 0u8.wrapping_sub(sum);
}

fn corpus() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/acpi");
    let (mut fadts, mut aml) = (Vec::new(), Vec::new());
    let mut machines: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    machines.sort();
    for m in machines {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&m)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&f).unwrap();
            if name == "facp.dat" {
                fadts.push(bytes);
            } else if name.starts_with("ssdt") || name.starts_with("dsdt") {
                aml.push(bytes);
            }
        }
    }
    (fadts, aml)
}

/// Drive the device with random accesses in and around its ranges; return the shutdowns.
fn poke(r: &mut Rng, d: &mut PmTrap, n: usize) -> Vec<ShutdownReason> {
    let ranges = d.ranges();
    let mut acts = Actions::new();
    for _ in 0..n {
        let (space, addr) = match ranges.get(r.below(ranges.len() + 1)) {
            Some(rg) => (
                rg.space,
                (rg.start + r.below(4 + (rg.end - rg.start) as usize) as u64).wrapping_sub(1),
            ),
            None => (
                if r.below(2) == 0 {
                    Space::Port
                } else {
                    Space::Memory
                },
                r.next(),
            ),
        };
        let size = [1u8, 2, 4, 8, 1, 2, 3, 0][r.below(8)];
        let data = match r.below(4) {
            0 => 0x2000 | (r.below(8) as u64) << 10,
            1 => r.next() & 0xFF,
            _ => r.next(),
        };
        if r.below(2) == 0 {
            let _ = d.read(space, addr, size, &mut acts);
        } else {
            d.write(space, addr, size, data, &mut acts);
        }
        if r.below(500) == 0 {
            let _ = d.status();
        }
    }
    acts.as_slice()
        .iter()
        .filter_map(|a| match a {
            Action::Shutdown { reason } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn mutated_fadts() {
    let (fadts, aml) = corpus();
    let mut r = Rng(0x5EED_FAD7);
    for i in 0..2000 {
        let mut f = fadts[r.below(fadts.len())].clone();
        mutate(&mut r, &mut f);
        if i % 2 == 0 {
            fix_header(b"FACP", &mut f);
        }
        let d = if i % 10 == 0 {
            vec![aml[r.below(aml.len())].as_slice()]
        } else {
            Vec::new()
        };
        let blocks: Vec<RawTable<'_>> = d
            .iter()
            .map(|b| RawTable {
                name: "dsdt",
                bytes: b,
            })
            .collect();
        if let Ok(info) = inspect_tables(
            RawTable {
                name: "facp",
                bytes: &f,
            },
            &blocks,
        ) {
            let _ = info.to_string();
            let _ = serde_json::to_string(&info).unwrap();
            if let Ok(setup) = from_acpi(&info, r.below(2) == 0) {
                let mut dev = PmTrap::new(setup).expect("from_acpi returns a valid setup");
                let s = poke(&mut r, &mut dev, 50);
                assert!(
                    s.iter().filter(|x| **x != ShutdownReason::Suspend).count() <= 1,
                    "{s:?}"
                );
            }
        }
    }
}

#[test]
fn mutated_and_random_aml() {
    let (fadts, aml) = corpus();
    let fadt = &fadts[0];
    let mut r = Rng(0xA31_5EED);
    for i in 0..3000 {
        let mut t = match i % 4 {
            // A window of a real table: small and fast, still deep structure.
            0 | 1 => {
                let src = &aml[r.below(aml.len())];
                let start = 36 + r.below(src.len().saturating_sub(36));
                let end = (start + 1 + r.below(8192)).min(src.len());
                let mut t = src[..36].to_vec();
                t.extend_from_slice(&src[start..end]);
                t
            }
            // A whole small real table.
            2 => {
                let small: Vec<&Vec<u8>> = aml.iter().filter(|t| t.len() < 16384).collect();
                small[r.below(small.len())].clone()
            }
            // Random bytes.
            _ => {
                let n = r.below(600);
                let mut t = r.bytes(n);
                for b in t.iter_mut() {
                    if r.below(3) == 0 {
                        *b = INTERESTING[r.below(INTERESTING.len())];
                    }
                }
                t
            }
        };
        mutate(&mut r, &mut t);
        if i % 3 != 0 {
            fix_header(if i % 2 == 0 { b"DSDT" } else { b"SSDT" }, &mut t);
        }
        let other = aml[r.below(aml.len())].clone();
        let blocks = [
            RawTable {
                name: "t",
                bytes: &t,
            },
            RawTable {
                name: "u",
                bytes: if i % 8 == 0 { &other } else { &[] },
            },
        ];
        let info = inspect_tables(
            RawTable {
                name: "facp",
                bytes: fadt,
            },
            &blocks,
        )
        .expect("the FADT is real");
        let _ = serde_json::to_string(&info).unwrap();
    }
}

#[test]
fn random_access_sequences() {
    let mut r = Rng(0xD0_0D);
    let configs = [
        "",
        "allow_s3 = true\n",
        "pm1b_evt = 0x45C\npm1b_cnt = 0x460\ns5 = [0, 7]\ns3 = [0, 5]\nallow_s3 = true\n",
        "pm1_evt_len = 8\npm1_cnt_len = 4\npm1a_cnt = 0xB008\nsleep_control = 0xB010\nsleep_status = 0xB011\n",
    ];
    for i in 0..2000 {
        let c =
            PmTrapConfig::from_guest_toml(&format!("[pm_trap]\n{}", configs[i % configs.len()]))
                .unwrap();
        let mut d = PmTrap::new(c.setup().unwrap()).unwrap();
        let s = poke(&mut r, &mut d, 200);
        assert!(
            s.iter().filter(|x| **x != ShutdownReason::Suspend).count() <= 1,
            "{s:?}"
        );
        if !s.is_empty() && s.iter().all(|x| *x != ShutdownReason::Suspend) {
            assert!(d.shutdown_requested().is_some());
        }
    }
}
