//! The generators aimed at the MSI and MSI-X surfaces: pseudo-random accesses to the
//! capabilities, the table and the PBA, Linux's MSI-X bring-up, and a fuzzer's bytes decoded
//! into such accesses.

use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::topology::PciAddress;

use super::{random_op, Op, Rng};

/// The MSI / MSI-X surfaces of a function, for the interrupt-focused generators.
struct IrqSurface {
    addr: PciAddress,
    msi: Option<(u16, u16)>,
    msix_cap: Option<u16>,
    /// Guest address of the table and the PBA, and the number of entries (BARs placed).
    table: Option<(u64, u64, u16)>,
    table_bar_reg: Option<u16>,
    windows: pci_host_bridge::config::Windows,
}

fn irq_surfaces(bridge: &PciHostBridge) -> Vec<IrqSurface> {
    bridge
        .functions()
        .map(|f| {
            let msi = f.caps().msi.map(|o| {
                (
                    o,
                    f.layout()
                        .find(o + 2)
                        .map_or(0, |i| f.layout().reg(i).virt as u16),
                )
            });
            let table = f.caps().msix.and_then(|m| {
                let tb = f.bars().bar(usize::from(m.table_bar))?;
                let pb = f.bars().bar(usize::from(m.pba_bar))?;
                Some((
                    tb.guest.wrapping_add(m.table_offset),
                    pb.guest.wrapping_add(m.pba_offset),
                    m.entries,
                ))
            });
            IrqSurface {
                addr: f.guest_address(),
                msi,
                msix_cap: f.caps().msix.map(|m| m.cap),
                table,
                table_bar_reg: f.caps().msix.map(|m| 0x10 + 4 * u16::from(m.table_bar)),
                windows: bridge.config().windows(),
            }
        })
        .collect()
}

/// An MSI address a guest might program: mostly Linux's (0xFEE, destination, physical or
/// logical mode), sometimes anything.
fn msi_address(rng: &mut Rng) -> u64 {
    if rng.percent(85) {
        0xFEE0_0000 | rng.below(256) << 12 | rng.below(2) << 2 | rng.below(2) << 3
    } else {
        rng.next_u64()
    }
}

fn cfg_w(addr: PciAddress, reg: u16, size: u8, data: u64, ecam: bool) -> Op {
    Op::CfgWrite {
        ecam,
        addr,
        reg,
        size,
        data,
    }
}

/// A pseudo-random access aimed at the MSI and MSI-X surfaces (capability registers, table
/// entries with aligned and odd accesses, the PBA, the table BAR, decode and Interrupt
/// Disable), mixed with some [`random_op`]s.
pub fn random_irq_op(rng: &mut Rng, bridge: &PciHostBridge) -> Op {
    let surfaces = irq_surfaces(bridge);
    if surfaces.is_empty() || rng.percent(10) {
        return random_op(rng, bridge);
    }
    let s = &surfaces[rng.below(surfaces.len() as u64) as usize];
    let ecam = rng.percent(50);
    match rng.below(100) {
        // MSI-X table entries.
        0..=34 => {
            let Some((table, _, n)) = s.table else {
                return random_op(rng, bridge);
            };
            let e = rng.below(u64::from(n) + 1);
            let field = rng.below(4) * 4;
            let (size, off) = match rng.below(10) {
                0 => (1u8, rng.below(16)),
                1 => (2, rng.below(8) * 2),
                2..=3 => (8, (field & 8)),
                _ => (4, field),
            };
            let addr = table + e * 16 + off;
            if rng.percent(20) {
                return Op::MmioRead { addr, size };
            }
            let data = match off {
                0 if size == 8 => msi_address(rng),
                0 => msi_address(rng) & 0xFFFF_FFFF,
                4 => rng.below(2) * rng.next_u64(),
                8 if size == 8 => rng.below(256) | rng.below(2) << 32,
                8 => (0x20 + rng.below(0xE0)) | (rng.below(2) << 15) | (rng.below(8) << 8),
                12 => rng.below(2) | (rng.below(2) * rng.next_u64()),
                _ => rng.next_u64(),
            };
            Op::MmioWrite { addr, size, data }
        }
        // MSI-X Message Control: enable / function mask.
        35..=49 => {
            let Some(cap) = s.msix_cap else {
                return random_op(rng, bridge);
            };
            if rng.percent(20) {
                return cfg_w(s.addr, cap + 3, 1, rng.below(4) << 6, ecam);
            }
            cfg_w(s.addr, cap + 2, 2, rng.below(4) << 14, ecam)
        }
        // MSI capability.
        50..=69 => {
            let Some((cap, flags)) = s.msi else {
                return random_op(rng, bridge);
            };
            let is64 = flags & pci_host_bridge::msi::FLAGS_64BIT != 0;
            let data_off = if is64 { 0x0C } else { 0x08 };
            let mask_off = if is64 { 0x10 } else { 0x0C };
            match rng.below(6) {
                0 => cfg_w(s.addr, cap + 2, 2, rng.below(2) | rng.below(8) << 4, ecam),
                1 => cfg_w(s.addr, cap + 4, 4, msi_address(rng) & 0xFFFF_FFFF, ecam),
                2 if is64 => cfg_w(s.addr, cap + 8, 4, rng.below(2) * rng.next_u64(), ecam),
                3 => cfg_w(
                    s.addr,
                    cap + data_off,
                    2,
                    (0x20 + rng.below(0xE0)) | (rng.below(2) << 15),
                    ecam,
                ),
                4 => cfg_w(s.addr, cap + mask_off, 4, rng.next_u64() & 0xFF, ecam),
                _ => Op::CfgRead {
                    ecam,
                    addr: s.addr,
                    reg: cap + rng.below(0x18) as u16,
                    size: 4,
                },
            }
        }
        // The PBA.
        70..=74 => match s.table {
            Some((_, pba, _)) => Op::MmioRead {
                addr: pba + rng.below(3) * 4,
                size: [4u8, 8][rng.below(2) as usize],
            },
            None => random_op(rng, bridge),
        },
        // Decode on/off and the guest's Interrupt Disable.
        75..=84 => cfg_w(
            s.addr,
            4,
            2,
            0x0006 | rng.below(2) << 10 | if rng.percent(15) { 0 } else { 0x2 },
            ecam,
        ),
        // Move the table's BAR (gtable changes).
        _ => match s.table_bar_reg {
            Some(reg) => {
                let (a, z) = s.windows.mmio[0];
                cfg_w(s.addr, reg, 4, a + (rng.below((z - a) >> 16) << 16), ecam)
            }
            None => random_op(rng, bridge),
        },
    }
}

/// Linux's MSI-X bring-up for every function with MSI-X: entries written while masked, MSI-X
/// enabled with the function masked, the function mask cleared, then each entry unmasked in
/// turn (vectors from `first_vector`). Needs the BARs placed and decode on.
pub fn linux_msix_ops(bridge: &PciHostBridge, first_vector: u8) -> Vec<Op> {
    linux_msix_ops_with(bridge, first_vector, u16::MAX)
}

/// [`linux_msix_ops`] for a driver that allocates `vectors` vectors per function (a 2-vCPU
/// guest's NIC driver takes one per queue pair plus one for its mailbox or config: 3): every
/// entry of the table is masked first (Linux's `msix_mask_all()` before MSI-X Enable), only
/// the first `vectors` entries are programmed and unmasked.
pub fn linux_msix_ops_with(bridge: &PciHostBridge, first_vector: u8, vectors: u16) -> Vec<Op> {
    let mut ops = Vec::new();
    for s in irq_surfaces(bridge) {
        let (Some(cap), Some((table, _, n))) = (s.msix_cap, s.table) else {
            continue;
        };
        let w = |ops: &mut Vec<Op>, a: u64, size: u8, data: u64| {
            ops.push(Op::MmioWrite {
                addr: a,
                size,
                data,
            })
        };
        ops.push(cfg_w(s.addr, cap + 2, 2, 0xC000, false));
        for e in 0..u64::from(n) {
            w(&mut ops, table + e * 16 + 12, 4, 1);
        }
        let used = u64::from(n.min(vectors));
        for e in 0..used {
            w(&mut ops, table + e * 16, 4, 0xFEE0_0000);
            w(&mut ops, table + e * 16 + 4, 4, 0);
            w(
                &mut ops,
                table + e * 16 + 8,
                4,
                u64::from(first_vector.wrapping_add(e as u8)),
            );
        }
        ops.push(cfg_w(s.addr, cap + 2, 2, 0x8000, false));
        for e in 0..used {
            w(&mut ops, table + e * 16 + 12, 4, 0);
        }
    }
    ops
}

/// Decode a fuzzer's bytes into accesses aimed at the MSI capability (4 bytes each): which
/// function, which register, and the value.
pub fn msi_ops_from_bytes(bridge: &PciHostBridge, bytes: &[u8]) -> Vec<Op> {
    let surfaces = irq_surfaces(bridge);
    let with_msi: Vec<&IrqSurface> = surfaces.iter().filter(|s| s.msi.is_some()).collect();
    if with_msi.is_empty() {
        return Vec::new();
    }
    bytes
        .chunks_exact(4)
        .map(|c| {
            let s = with_msi[usize::from(c[0] >> 4) % with_msi.len()];
            let (cap, _) = s.msi.unwrap_or((0x50, 0));
            let ecam = c[0] & 8 != 0;
            let v = u64::from(u16::from_le_bytes([c[2], c[3]]));
            match c[0] & 7 {
                0 => cfg_w(s.addr, cap + 2, 2, v & 0x71 | u64::from(c[1] & 1), ecam),
                1 => cfg_w(s.addr, cap + 4, 4, 0xFEE0_0000 | v << 4, ecam),
                2 => cfg_w(s.addr, cap + 8, 4, if c[1] & 1 != 0 { v } else { 0 }, ecam),
                3 => cfg_w(s.addr, cap + u16::from(c[1] & 0x1F), 2, v, ecam),
                4 => cfg_w(s.addr, cap + 0x0C, 4, v, ecam),
                5 => cfg_w(s.addr, cap + 0x10, 4, v, ecam),
                6 => cfg_w(s.addr, 4, 2, v & 0x0407 | 2, ecam),
                _ => Op::CfgRead {
                    ecam,
                    addr: s.addr,
                    reg: cap + u16::from(c[1] & 0x1F),
                    size: [1u8, 2, 4, 4][usize::from(c[2] & 3)],
                },
            }
        })
        .collect()
}

/// Decode a fuzzer's bytes into accesses aimed at MSI-X (6 bytes each): table entries with
/// any size and offset, Message Control, the PBA, the table BAR and decode.
pub fn msix_ops_from_bytes(bridge: &PciHostBridge, bytes: &[u8]) -> Vec<Op> {
    let surfaces = irq_surfaces(bridge);
    let with_msix: Vec<&IrqSurface> = surfaces.iter().filter(|s| s.msix_cap.is_some()).collect();
    if with_msix.is_empty() {
        return Vec::new();
    }
    bytes
        .chunks_exact(6)
        .map(|c| {
            let s = with_msix[usize::from(c[0] >> 5) % with_msix.len()];
            let cap = s.msix_cap.unwrap_or(0x70);
            let (table, pba, n) = s.table.unwrap_or((0, 0, 1));
            let size = [1u8, 2, 4, 4, 8, 8, 4, 4][usize::from(c[1] & 7)];
            let entry = u64::from(c[1] >> 3) % (u64::from(n) + 1);
            let off = u64::from(c[2] & 0xF);
            let data32 = u64::from(u32::from_le_bytes([c[2], c[3], c[4], c[5]]));
            match c[0] & 0x1F {
                0..=15 => {
                    let addr = table + entry * 16 + if c[0] & 1 != 0 { off } else { off & 0xC };
                    let data = match (off & 0xC, c[3] & 3) {
                        (0, 0..=2) => 0xFEE0_0000 | data32 & 0xFF00C,
                        (8, _) => data32 & 0xC7FF,
                        (12, _) => data32 & 1,
                        _ => data32 | data32 << 32,
                    };
                    if c[0] & 0x10 != 0 {
                        Op::MmioRead { addr, size }
                    } else {
                        Op::MmioWrite { addr, size, data }
                    }
                }
                16..=21 => cfg_w(
                    s.addr,
                    cap + 2,
                    2,
                    u64::from(c[2] & 0xC0) << 8,
                    c[3] & 1 != 0,
                ),
                22 => cfg_w(s.addr, cap + 3, 1, u64::from(c[2]), false),
                23 | 24 => Op::MmioRead {
                    addr: pba + off,
                    size,
                },
                25 => Op::MmioWrite {
                    addr: pba + (off & 8),
                    size,
                    data: data32,
                },
                26 => cfg_w(
                    s.addr,
                    4,
                    2,
                    u64::from(c[2] & 0x07) | 0x2 | u64::from(c[3] & 4) << 8,
                    false,
                ),
                27 => match s.table_bar_reg {
                    Some(reg) => {
                        let (a, z) = s.windows.mmio[0];
                        cfg_w(
                            s.addr,
                            reg,
                            4,
                            a + ((data32 % ((z - a) >> 16).max(1)) << 16),
                            false,
                        )
                    }
                    None => Op::MmioRead {
                        addr: table,
                        size: 4,
                    },
                },
                _ => Op::CfgRead {
                    ecam: false,
                    addr: s.addr,
                    reg: cap + u16::from(c[2] % 12),
                    size: 4,
                },
            }
        })
        .collect()
}
