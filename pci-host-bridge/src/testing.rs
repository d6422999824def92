//! Support for tests and the fuzz target: guest access sequences and the invariants every
//! sequence must keep. Not used by the bridge itself.
//!
//! Invariants checked by [`Checker::apply`] after each access:
//! 1. Every write that reached a device (recorded by the snapshot backend) lies inside the
//!    guest's access, touches only bytes with pass-through bits, and changes no bit the table
//!    does not pass through (non-pass bits are written back unchanged, non-pass W1C bits as 0).
//! 2. Reads agree with the table: bits that are not emulated equal the device's current
//!    config bytes; absent bytes read all-ones; hidden bytes read 0; emulated read-only bits
//!    (and the type bits of BARs) never change; unconfigured functions read all-ones.
//! 3. Mappings: every map action maps host frames/ports inside one of the function's own BARs
//!    (never a page holding its MSI-X table or PBA) to guest addresses inside the windows,
//!    never maps a guest frame twice, and every unmap removes exactly an existing mapping; the
//!    checker's model equals the bridge's own list.
//! 4. MMIO accesses never reach config space, and forwarded BAR writes never touch the MSI-X
//!    table or PBA.

use std::collections::{BTreeMap, HashMap};

use ioreq_server::device::{Action, Actions, Device, Space};

use crate::backend::snapshot::{SnapshotDevice, SnapshotHandle};
use crate::backend::{BarKind, HostDevice};
use crate::bars::{BarSlot, Mapping, PAGE_SIZE};
use crate::bridge::PciHostBridge;
use crate::config::PciConfig;
use crate::config_space::{RegKind, Slot};
use crate::error::Error;
use crate::topology::PciAddress;

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

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

/// Build a bridge over snapshot devices; returns it with a [`Checker`].
pub fn bridge_with_snapshots(
    config: &PciConfig,
    devices: Vec<SnapshotDevice>,
) -> Result<(PciHostBridge, Checker), Error> {
    let handles: Vec<(PciAddress, SnapshotHandle)> = config
        .devices
        .iter()
        .zip(&devices)
        .map(|(d, s)| (config.guest_address(d), s.handle()))
        .collect();
    let backends: Vec<Box<dyn HostDevice>> = devices
        .into_iter()
        .map(|d| Box::new(d) as Box<dyn HostDevice>)
        .collect();
    let bridge = PciHostBridge::with_backends(config, backends)?;
    Ok((bridge, Checker::new(handles)))
}

/// The invariant checker (see the module docs).
#[derive(Debug)]
pub struct Checker {
    handles: BTreeMap<PciAddress, SnapshotHandle>,
    seen_writes: BTreeMap<PciAddress, usize>,
    seen_bar_writes: BTreeMap<PciAddress, usize>,
    /// Emulated read-only bits first seen, per function and offset: `(mask, value)`.
    stable: HashMap<(PciAddress, u16), (u8, u8)>,
    /// Emulated bits whose value the checker knows (from an earlier read or a guest write),
    /// per function and offset: `(known mask, value)`.
    shadow: HashMap<(PciAddress, u16), (u8, u8)>,
    /// guest frame -> host frame currently mapped.
    frames: HashMap<u64, u64>,
    /// guest port -> host port currently mapped.
    ports: HashMap<u32, u32>,
    /// Operations applied.
    pub ops: u64,
    /// Device writes checked.
    pub device_writes: u64,
    /// Map actions seen.
    pub maps: u64,
}

impl Checker {
    /// A checker for functions at these guest addresses backed by these snapshots.
    pub fn new(handles: Vec<(PciAddress, SnapshotHandle)>) -> Self {
        Checker {
            handles: handles.into_iter().collect(),
            seen_writes: BTreeMap::new(),
            seen_bar_writes: BTreeMap::new(),
            stable: HashMap::new(),
            shadow: HashMap::new(),
            frames: HashMap::new(),
            ports: HashMap::new(),
            ops: 0,
            device_writes: 0,
            maps: 0,
        }
    }

    /// Perform `op` on `bridge` through the [`Device`] interface and check every invariant.
    pub fn apply(&mut self, bridge: &mut PciHostBridge, op: Op) -> Result<(), String> {
        self.ops += 1;
        let mut actions = Actions::new();
        let ecam = bridge.ecam();
        match op {
            Op::CfgRead {
                ecam: via_ecam,
                addr,
                reg,
                size,
            } => {
                let v = if via_ecam {
                    let Some(a) = ecam.encode(addr, reg) else {
                        return Ok(());
                    };
                    bridge.read(Space::Memory, a, size, &mut actions)
                } else {
                    bridge.read(
                        Space::PciConfig,
                        u64::from(addr.sbdf()) << 32 | u64::from(reg),
                        size,
                        &mut actions,
                    )
                } & mask(size);
                if !actions.is_empty() {
                    return Err(format!(
                        "{op:?}: a read produced actions {:?}",
                        actions.as_slice()
                    ));
                }
                self.check_read(bridge, addr, reg, size, v, via_ecam)
                    .map_err(|e| format!("{op:?} -> {v:#x}: {e}"))?;
            }
            Op::CfgWrite {
                ecam: via_ecam,
                addr,
                reg,
                size,
                data,
            } => {
                let data = data & mask(size);
                self.model_write(bridge, addr, reg, size, data);
                if via_ecam {
                    let Some(a) = ecam.encode(addr, reg) else {
                        return Ok(());
                    };
                    bridge.write(Space::Memory, a, size, data, &mut actions);
                } else {
                    bridge.write(
                        Space::PciConfig,
                        u64::from(addr.sbdf()) << 32 | u64::from(reg),
                        size,
                        data,
                        &mut actions,
                    );
                }
                self.check_device_writes(bridge, Some((addr, reg, size)))
                    .map_err(|e| format!("{op:?}: {e}"))?;
            }
            Op::MmioRead { addr, size } => {
                let _ = bridge.read(Space::Memory, addr, size, &mut actions);
                if !actions.is_empty() {
                    return Err(format!("{op:?}: a read produced actions"));
                }
            }
            Op::MmioWrite { addr, size, data } => {
                bridge.write(Space::Memory, addr, size, data & mask(size), &mut actions);
                self.check_device_writes(bridge, None)
                    .map_err(|e| format!("{op:?}: {e}"))?;
            }
        }
        self.check_actions(bridge, actions.as_slice())
            .map_err(|e| format!("{op:?}: {e}"))
    }

    fn check_read(
        &mut self,
        bridge: &PciHostBridge,
        addr: PciAddress,
        reg: u16,
        size: u8,
        v: u64,
        via_ecam: bool,
    ) -> Result<(), String> {
        let cfg = bridge.config();
        let mut len = usize::from(size);
        if via_ecam && usize::from(reg) + len > 4096 {
            // ECAM splits at the function's end; the rest belongs to the next function.
            len = 4096 - usize::from(reg);
        }
        if usize::from(reg) + len > 4096 || addr.segment != 0 || addr.bus != cfg.bus_start {
            return if v == mask(size) {
                Ok(())
            } else {
                Err("expected all-ones".into())
            };
        }
        if addr.device == 0 && addr.function == 0 {
            return Ok(());
        }
        let Some(f) = bridge.function(addr) else {
            let m = mask(len as u8);
            return if v & m == m {
                Ok(())
            } else {
                Err("unconfigured function must read all-ones".into())
            };
        };
        let dev = self
            .handles
            .get(&addr)
            .map(|h| h.config_bytes(usize::from(reg), len))
            .unwrap_or_default();
        for i in 0..len {
            let off = usize::from(reg) + i;
            let byte = (v >> (8 * i)) as u8;
            let rule = f.layout().rule(off);
            match rule.slot {
                Slot::Absent => {
                    if byte != 0xFF {
                        return Err(format!("absent byte {off:#x} read {byte:#04x}"));
                    }
                    continue;
                }
                Slot::Unknown | Slot::Reg(_) | Slot::Hidden => {
                    let d = dev.get(i).copied().unwrap_or(0xFF);
                    if (byte ^ d) & !rule.emu != 0 {
                        return Err(format!(
                            "byte {off:#x}: read {byte:#04x} but device has {d:#04x} and only {:#04x} is emulated",
                            rule.emu
                        ));
                    }
                }
            }
            // Emulated bits equal what the guest last wrote or the checker last read.
            let modelled = matches!(
                rule.kind,
                RegKind::Plain | RegKind::Command | RegKind::MsixControl | RegKind::Hidden
            );
            if modelled && rule.emu != 0 {
                let key = (addr, off as u16);
                if let Some(&(m, val)) = self.shadow.get(&key) {
                    if (byte ^ val) & m & rule.emu != 0 {
                        return Err(format!(
                            "emulated bits of byte {off:#x} read {byte:#04x}, expected {val:#04x} under mask {m:#04x}"
                        ));
                    }
                }
                self.shadow.insert(key, (rule.emu, byte & rule.emu));
            }
            if rule.kind == RegKind::Hidden && byte != 0 {
                return Err(format!("hidden byte {off:#x} read {byte:#04x}"));
            }
            // Bits that must never change.
            let is_base = match rule.slot {
                Slot::Reg(idx) => usize::from(f.layout().reg(usize::from(idx)).base) == off,
                _ => false,
            };
            let stable_mask = match rule.kind {
                RegKind::Bar(n) => match f.bars().slot(usize::from(n)) {
                    BarSlot::Unused => 0xFF,
                    BarSlot::Upper(_) => 0,
                    BarSlot::Bar(b) if is_base && b.host.kind == BarKind::Io => 0x03,
                    BarSlot::Bar(_) if is_base => 0x0F,
                    BarSlot::Bar(_) => 0,
                },
                RegKind::Rom if f.bars().rom().is_none() => 0xFF,
                RegKind::Rom if is_base => 0xFE,
                RegKind::Rom => 0,
                _ => rule.ro,
            };
            if stable_mask != 0 {
                let e = self
                    .stable
                    .entry((addr, off as u16))
                    .or_insert((stable_mask, byte & stable_mask));
                if byte & e.0 != e.1 & e.0 {
                    return Err(format!(
                        "read-only emulated bits of byte {off:#x} changed: {byte:#04x} vs {:#04x}",
                        e.1
                    ));
                }
            }
        }
        Ok(())
    }

    /// Predict the emulated bits a guest write leaves behind.
    fn model_write(
        &mut self,
        bridge: &PciHostBridge,
        addr: PciAddress,
        reg: u16,
        size: u8,
        data: u64,
    ) {
        if usize::from(reg) + usize::from(size) > 4096 {
            // Crosses into the next function (ECAM): forget everything rather than model it.
            self.shadow.clear();
            return;
        }
        let Some(f) = bridge.function(addr) else {
            return;
        };
        for i in 0..usize::from(size) {
            let off = usize::from(reg) + i;
            let d = (data >> (8 * i)) as u8;
            let rule = f.layout().rule(off);
            let modelled = matches!(
                rule.kind,
                RegKind::Plain | RegKind::Command | RegKind::MsixControl | RegKind::Hidden
            );
            let key = (addr, off as u16);
            if !modelled {
                self.shadow.remove(&key);
                continue;
            }
            let writable = rule.emu & !rule.ro;
            let set = writable & !rule.w1c;
            let clear = writable & rule.w1c & d;
            let (m, v) = self.shadow.get(&key).copied().unwrap_or((0, 0));
            self.shadow
                .insert(key, (m | set, (v & !set & !clear) | (d & set)));
        }
    }

    fn check_device_writes(
        &mut self,
        bridge: &PciHostBridge,
        access: Option<(PciAddress, u16, u8)>,
    ) -> Result<(), String> {
        for (addr, h) in &self.handles {
            let seen = self.seen_writes.entry(*addr).or_insert(0);
            let writes = h.writes_from(*seen);
            let f = bridge.function(*addr).ok_or("function vanished")?;
            for w in &writes {
                self.device_writes += 1;
                let Some((a, reg, size)) = access else {
                    return Err(format!(
                        "an MMIO access wrote config space of {addr}: {w:?}"
                    ));
                };
                let start = usize::from(w.offset);
                // An ECAM access crossing into the next function is split; compare within it.
                let (lo, hi) = if a == *addr {
                    (usize::from(reg), usize::from(reg) + usize::from(size))
                } else {
                    (0, usize::from(size))
                };
                if start < lo || start + w.data.len() > hi {
                    return Err(format!(
                        "{addr}: device write {w:?} outside the guest access {reg:#x}+{size}"
                    ));
                }
                for (j, (&d, &b)) in w.data.iter().zip(&w.before).enumerate() {
                    let rule = f.layout().rule(start + j);
                    if rule.pass == 0 {
                        return Err(format!(
                            "{addr}: device write to byte {:#x} which has no pass-through bits",
                            start + j
                        ));
                    }
                    let keep = !rule.pass & !rule.w1c;
                    if (d ^ b) & keep != 0 {
                        return Err(format!(
                            "{addr}: device write changed non-pass bits of byte {:#x}: {b:#04x} -> {d:#04x} (pass {:#04x})",
                            start + j,
                            rule.pass
                        ));
                    }
                    if d & rule.w1c & !rule.pass != 0 {
                        return Err(format!(
                            "{addr}: device write sets a non-pass W1C bit at {:#x}",
                            start + j
                        ));
                    }
                }
            }
            *seen += writes.len();
            let seen_b = self.seen_bar_writes.entry(*addr).or_insert(0);
            let bw = h.bar_writes_from(*seen_b);
            for w in &bw {
                if let Some(m) = f.caps().msix {
                    for (bar, off, len) in [
                        (m.table_bar, m.table_offset, m.table_len()),
                        (m.pba_bar, m.pba_offset, m.pba_len()),
                    ] {
                        if w.index == bar
                            && w.offset < off + len
                            && off < w.offset + w.data.len() as u64
                        {
                            return Err(format!(
                                "{addr}: BAR write {w:?} reached the MSI-X table/PBA"
                            ));
                        }
                    }
                }
            }
            *seen_b += bw.len();
        }
        Ok(())
    }

    fn check_actions(&mut self, bridge: &PciHostBridge, actions: &[Action]) -> Result<(), String> {
        let windows = bridge.config().windows();
        for a in actions {
            match *a {
                Action::MapMemory { gfn, mfn, nr, map } => {
                    if nr == 0 {
                        return Err("empty mapping".into());
                    }
                    if map {
                        self.maps += 1;
                        if !windows.contains_mmio(gfn * PAGE_SIZE, nr * PAGE_SIZE) {
                            return Err(format!("mapping gfn {gfn:#x}+{nr} outside the windows"));
                        }
                        let owned = bridge.functions().any(|f| host_frames_ok(f, mfn, nr));
                        if !owned {
                            return Err(format!("mapping mfn {mfn:#x}+{nr} not inside one BAR (or hits MSI-X pages)"));
                        }
                        for k in 0..nr {
                            if self.frames.insert(gfn + k, mfn + k).is_some() {
                                return Err(format!("gfn {:#x} mapped twice", gfn + k));
                            }
                        }
                    } else {
                        for k in 0..nr {
                            if self.frames.remove(&(gfn + k)) != Some(mfn + k) {
                                return Err(format!(
                                    "unmap of gfn {:#x} that is not mapped to {:#x}",
                                    gfn + k,
                                    mfn + k
                                ));
                            }
                        }
                    }
                }
                Action::MapIoPorts {
                    gport,
                    mport,
                    nr,
                    map,
                } => {
                    if map {
                        if !windows.contains_io(u64::from(gport), u64::from(nr)) {
                            return Err(format!("I/O mapping {gport:#x}+{nr} outside the window"));
                        }
                        let owned = bridge.functions().any(|f| {
                            (0..6).filter_map(|i| f.bars().bar(i)).any(|b| {
                                b.host.kind == BarKind::Io
                                    && u64::from(mport) >= b.host.host_addr
                                    && u64::from(mport) + u64::from(nr)
                                        <= b.host.host_addr + b.host.size
                            })
                        });
                        if !owned {
                            return Err(format!(
                                "I/O mapping of host ports {mport:#x}+{nr} outside the I/O BARs"
                            ));
                        }
                        for k in 0..nr {
                            if self.ports.insert(gport + k, mport + k).is_some() {
                                return Err(format!("port {:#x} mapped twice", gport + k));
                            }
                        }
                    } else {
                        for k in 0..nr {
                            if self.ports.remove(&(gport + k)) != Some(mport + k) {
                                return Err(format!(
                                    "unmap of port {:#x} that is not mapped",
                                    gport + k
                                ));
                            }
                        }
                    }
                }
                _ => return Err(format!("unexpected action {a:?}")),
            }
        }
        if actions.is_empty() {
            return Ok(());
        }
        // The model equals the bridge's own list.
        let mut frames = 0u64;
        let mut ports = 0u64;
        for f in bridge.functions() {
            for m in f.mappings() {
                match *m {
                    Mapping::Mem { gfn, mfn, nr, .. } => {
                        frames += nr;
                        for k in 0..nr {
                            if self.frames.get(&(gfn + k)) != Some(&(mfn + k)) {
                                return Err(format!(
                                    "bridge lists gfn {:#x} mapped but no action did it",
                                    gfn + k
                                ));
                            }
                        }
                    }
                    Mapping::Io { gport, nr, .. } => {
                        ports += u64::from(nr);
                        if !self.ports.contains_key(&gport) {
                            return Err(format!(
                                "bridge lists port {gport:#x} mapped but no action did it"
                            ));
                        }
                    }
                }
            }
        }
        if frames != self.frames.len() as u64 || ports != self.ports.len() as u64 {
            return Err(format!(
                "model has {} frames / {} ports, bridge lists {frames} / {ports}",
                self.frames.len(),
                self.ports.len()
            ));
        }
        Ok(())
    }
}

/// Whether host frames `[mfn, mfn + nr)` lie inside one memory BAR (or the ROM) of `f` and
/// avoid its MSI-X pages.
fn host_frames_ok(f: &crate::function::PassthroughFunction, mfn: u64, nr: u64) -> bool {
    let start = mfn * PAGE_SIZE;
    let end = (mfn + nr) * PAGE_SIZE;
    let bars = (0..6)
        .filter_map(|i| f.bars().bar(i).map(|b| (i as u8, b.host)))
        .chain(f.bars().rom().map(|r| (6, r.host)));
    for (i, h) in bars {
        if h.kind == BarKind::Io || start < h.host_addr || end > h.host_addr + h.size {
            continue;
        }
        if let (Some(m), true) = (f.caps().msix, i < 6) {
            let first = (start - h.host_addr) / PAGE_SIZE;
            let last = (end - h.host_addr) / PAGE_SIZE - 1;
            if m.trapped_pages(i)
                .iter()
                .any(|&(a, z)| first <= z && a <= last)
            {
                return false;
            }
        }
        return true;
    }
    false
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
