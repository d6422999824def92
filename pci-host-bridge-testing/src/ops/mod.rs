//! Guest accesses ([`Op`]) and the generators that make them: a seeded PRNG ([`Rng`]),
//! pseudo-random accesses, a driver's enumeration and placement, a fuzzer's bytes decoded,
//! and [`run_random`]. The generators aimed at MSI and MSI-X are in `irq`.

use pci_host_bridge::backend::BarKind;
use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::topology::PciAddress;

use crate::checker::Checker;

mod irq;

pub use irq::{
    linux_msix_ops, linux_msix_ops_with, msi_ops_from_bytes, msix_ops_from_bytes, random_irq_op,
};

/// A small deterministic PRNG (SplitMix64), so failures reproduce from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`%.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One guest access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A config read, through CF8/CFC (`Space::PciConfig`) or ECAM.
    CfgRead {
        /// Through ECAM.
        ecam: bool,
        /// Guest function.
        addr: PciAddress,
        /// Register.
        reg: u16,
        /// Size (1, 2, 4; 8 only through ECAM).
        size: u8,
    },
    /// A config write.
    CfgWrite {
        /// Through ECAM.
        ecam: bool,
        /// Guest function.
        addr: PciAddress,
        /// Register.
        reg: u16,
        /// Size.
        size: u8,
        /// Data.
        data: u64,
    },
    /// An MMIO read in the BAR windows.
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Size (1, 2, 4, 8).
        size: u8,
    },
    /// An MMIO write in the BAR windows.
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// Size.
        size: u8,
        /// Data.
        data: u64,
    },
}

pub(crate) fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

/// Interesting config offsets of a function: header registers, capability starts and a few
/// bytes into each, the extended space's start.
fn interesting_offsets(bridge: &PciHostBridge, addr: PciAddress) -> Vec<u16> {
    let mut v: Vec<u16> = (0..0x40).step_by(2).collect();
    v.extend([0x100, 0x104, 0xFFC, 0xFFE, 0xFF]);
    if let Some(f) = bridge.function(addr) {
        for c in f.caps().standard.iter().chain(&f.caps().extended) {
            for d in 0..0x14 {
                v.push(c.offset + d);
            }
        }
    }
    v
}

/// A pseudo-random guest access, biased towards what matters (BAR sizing and placement,
/// decode enables, capability registers, the MSI-X table).
pub fn random_op(rng: &mut Rng, bridge: &PciHostBridge) -> Op {
    let cfg = bridge.config();
    let funcs: Vec<PciAddress> = bridge.functions().map(|f| f.guest_address()).collect();
    let windows = cfg.windows();
    let kind = rng.below(100);
    if kind < 20 && !funcs.is_empty() {
        // MMIO near a placed BAR (often its MSI-X table / PBA), else anywhere in a window.
        let f = bridge
            .function(funcs[rng.below(funcs.len() as u64) as usize])
            .expect("listed");
        let size = [1u8, 2, 4, 8][rng.below(4) as usize];
        let placed: Vec<_> = (0..6)
            .filter_map(|i| f.bars().bar(i))
            .filter(|b| b.guest != 0 && b.host.is_mem())
            .collect();
        let addr = if !placed.is_empty() && rng.percent(80) {
            let b = placed[rng.below(placed.len() as u64) as usize];
            let off = match f.caps().msix {
                Some(m) if rng.percent(60) => {
                    let (o, l) = if rng.percent(70) {
                        (m.table_offset, m.table_len())
                    } else {
                        (m.pba_offset, m.pba_len())
                    };
                    o + rng.below(l + 8) / 4 * 4
                }
                _ => rng.below(b.emu_size.min(1 << 20)),
            };
            b.guest + off
        } else {
            let (a, z) = windows.mmio[rng.below(windows.mmio.len() as u64) as usize];
            a + rng.below(z - a)
        };
        let data = rng.next_u64();
        return if rng.percent(50) {
            Op::MmioRead { addr, size }
        } else {
            Op::MmioWrite { addr, size, data }
        };
    }
    let addr = match rng.below(10) {
        0 => PciAddress::new(0, cfg.bus_start, 0, 0),
        1 => PciAddress::new(0, cfg.bus_start, rng.below(32) as u8, rng.below(8) as u8),
        _ if !funcs.is_empty() => funcs[rng.below(funcs.len() as u64) as usize],
        _ => PciAddress::new(0, cfg.bus_start, 0, 0),
    };
    let ecam = rng.percent(50);
    let size = if ecam {
        [1u8, 2, 4, 4, 8][rng.below(5) as usize]
    } else {
        [1u8, 2, 4, 4][rng.below(4) as usize]
    };
    let offs = interesting_offsets(bridge, addr);
    let mut reg = match rng.below(10) {
        0..=5 => offs[rng.below(offs.len() as u64) as usize],
        6 | 7 => rng.below(0x100) as u16,
        _ => rng.below(0x1000) as u16,
    };
    if rng.percent(75) {
        reg &= !(u16::from(size) - 1);
    }
    let reg = reg.min(0x1000 - u16::from(size));
    if rng.percent(45) {
        return Op::CfgRead {
            ecam,
            addr,
            reg,
            size,
        };
    }
    let data = match rng.below(10) {
        0..=2 => u64::MAX,
        3 => 0,
        4 | 5 if (0x10..0x28).contains(&reg) || reg == 0x30 => {
            // Place a BAR inside a window (the emulated size masks the low bits).
            let (a, z) = windows.mmio[rng.below(windows.mmio.len() as u64) as usize];
            let addr = a + rng.below(z - a);
            if reg % 8 == 4 && rng.percent(50) {
                addr >> 32
            } else {
                addr | rng.below(2)
            }
        }
        4 | 5 if reg == 0x04 => rng.next_u64() | 0x3,
        _ => rng.next_u64(),
    };
    Op::CfgWrite {
        ecam,
        addr,
        reg,
        size,
        data,
    }
}

/// What a guest driver does first: read IDs, size every BAR (all-ones, read, restore),
/// place them inside the windows, enable decode and bus mastering. Returns the ops so a test
/// can replay or extend them.
pub fn enumeration_ops(bridge: &PciHostBridge) -> Vec<Op> {
    let mut ops = Vec::new();
    let cfg = bridge.config();
    let windows = cfg.windows();
    let mut next_mmio = windows.mmio.first().map_or(0, |w| w.0);
    let mut next_io = windows.io.map_or(0, |w| u64::from(w.0));
    for f in bridge.functions() {
        let addr = f.guest_address();
        ops.push(Op::CfgRead {
            ecam: false,
            addr,
            reg: 0,
            size: 4,
        });
        ops.push(Op::CfgWrite {
            ecam: false,
            addr,
            reg: 4,
            size: 2,
            data: 0,
        });
        for i in 0..6u16 {
            let reg = 0x10 + 4 * i;
            ops.push(Op::CfgRead {
                ecam: true,
                addr,
                reg,
                size: 4,
            });
            ops.push(Op::CfgWrite {
                ecam: true,
                addr,
                reg,
                size: 4,
                data: 0xFFFF_FFFF,
            });
            ops.push(Op::CfgRead {
                ecam: true,
                addr,
                reg,
                size: 4,
            });
            ops.push(Op::CfgWrite {
                ecam: true,
                addr,
                reg,
                size: 4,
                data: 0,
            });
            if let Some(b) = f.bars().bar(usize::from(i)) {
                let (base, next) = if b.host.kind == BarKind::Io {
                    (&mut next_io, b.emu_size)
                } else {
                    (&mut next_mmio, b.emu_size)
                };
                *base = base.div_ceil(next) * next;
                let g = *base;
                *base += next;
                ops.push(Op::CfgWrite {
                    ecam: true,
                    addr,
                    reg,
                    size: 4,
                    data: g & 0xFFFF_FFFF,
                });
                if b.host.kind == BarKind::Mem64 {
                    ops.push(Op::CfgWrite {
                        ecam: true,
                        addr,
                        reg: reg + 4,
                        size: 4,
                        data: g >> 32,
                    });
                }
            }
        }
        ops.push(Op::CfgWrite {
            ecam: true,
            addr,
            reg: 0x30,
            size: 4,
            data: 0xFFFF_F800,
        });
        ops.push(Op::CfgRead {
            ecam: true,
            addr,
            reg: 0x30,
            size: 4,
        });
        ops.push(Op::CfgWrite {
            ecam: true,
            addr,
            reg: 0x30,
            size: 4,
            data: 0,
        });
        ops.push(Op::CfgWrite {
            ecam: false,
            addr,
            reg: 4,
            size: 2,
            data: 0x0007,
        });
    }
    ops
}

/// The short form of [`enumeration_ops`] without the sizing probes: place every BAR inside the
/// windows and enable decode and bus mastering (cheap set-up for fuzzing).
pub fn placement_ops(bridge: &PciHostBridge) -> Vec<Op> {
    enumeration_ops(bridge)
        .into_iter()
        .filter(|op| match *op {
            Op::CfgWrite { reg, data, .. } => {
                !(data == 0xFFFF_FFFF || data == 0xFFFF_F800 || (reg != 4 && data == 0))
            }
            _ => false,
        })
        .collect()
}

/// Decode a fuzzer's bytes into guest accesses (13 bytes each).
pub fn ops_from_bytes(bridge: &PciHostBridge, bytes: &[u8]) -> Vec<Op> {
    let cfg = bridge.config();
    let funcs: Vec<PciAddress> = bridge.functions().map(|f| f.guest_address()).collect();
    let windows = cfg.windows();
    bytes
        .chunks_exact(13)
        .map(|c| {
            let sel = c[1];
            let reg = u16::from_le_bytes([c[2], c[3]]) & 0xFFF;
            let data = u64::from_le_bytes([c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12]]);
            let addr = if sel < 0xE0 && !funcs.is_empty() {
                funcs[usize::from(sel) % funcs.len()]
            } else {
                PciAddress::new(0, cfg.bus_start, sel & 0x1F, c[4] >> 5)
            };
            let ecam = c[0] & 0x10 != 0;
            let size = match (c[4] & 3, ecam) {
                (0, _) => 1,
                (1, _) => 2,
                (3, true) => 8,
                _ => 4,
            };
            let reg = reg.min(0x1000 - u16::from(size));
            match c[0] % 4 {
                0 => Op::CfgRead {
                    ecam,
                    addr,
                    reg,
                    size,
                },
                1 => Op::CfgWrite {
                    ecam,
                    addr,
                    reg,
                    size,
                    data,
                },
                k => {
                    // MMIO relative to the first placed memory BAR of a function, else the window.
                    let off = u64::from(u32::from_le_bytes([c[2], c[3], c[4], c[5]]) & 0xF_FFFF);
                    let base = bridge
                        .function(addr)
                        .and_then(|f| {
                            (0..6)
                                .filter_map(|i| f.bars().bar(i))
                                .find(|b| b.guest != 0 && b.host.is_mem())
                        })
                        .map(|b| b.guest)
                        .unwrap_or_else(|| windows.mmio.first().map_or(0, |w| w.0));
                    let addr = base + (off & !(u64::from(size) - 1));
                    if k == 2 {
                        Op::MmioRead { addr, size }
                    } else {
                        Op::MmioWrite { addr, size, data }
                    }
                }
            }
        })
        .collect()
}

/// Run `n` pseudo-random accesses (after the enumeration prologue) with every check.
pub fn run_random(
    bridge: &mut PciHostBridge,
    checker: &mut Checker,
    seed: u64,
    n: usize,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    for op in enumeration_ops(bridge) {
        checker
            .apply(bridge, op)
            .map_err(|e| format!("seed {seed}: enumeration: {e}"))?;
    }
    for i in 0..n {
        let op = random_op(&mut rng, bridge);
        checker
            .apply(bridge, op)
            .map_err(|e| format!("seed {seed} op {i}: {e}"))?;
    }
    Ok(())
}
