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
//! 5. Interrupts: every `BindMsi` matches the state the guest has programmed at that moment
//!    (computed here from the registers and the table, independently of the bridge's own
//!    binding code): MSI enabled (and MSI-X not) for entry 0 with `nvec = 2^MME`, or an MSI-X
//!    entry that is unmasked while MSI-X is enabled and the function is not masked, with the
//!    entry's vector and flags, the host table address as `table_base` and the guest table
//!    address as `gtable`; a rebind keeps `nvec` and `table_base` (the pirq is reused); every
//!    `UnbindMsi` undoes an earlier bind. After every access the bound set equals exactly what
//!    the programming asks for (so never more bound MSI-X entries than unmasked ones, nothing
//!    for masked entries) and equals the bridge's own list.
//! 6. The device's Interrupt Disable bit (command bit 10) is written only for functions that
//!    forward INTx, only by a one-byte write of the command register's high byte that changes
//!    nothing else, and only to the state the function wants (set while MSI / MSI-X is
//!    enabled or the guest's Interrupt Disable is set).

use std::collections::{BTreeMap, HashMap};

use ioreq_server::device::{Action, Actions, Device, Space};
use ioreq_server::passthrough::msi_gflags;

use crate::backend::snapshot::{SnapshotDevice, SnapshotHandle};
use crate::backend::{BarKind, HostDevice};
use crate::bars::{BarSlot, Mapping, PAGE_SIZE};
use crate::binding::Vector;
use crate::bridge::PciHostBridge;
use crate::config::{PciConfig, PciDeviceConfig};
use crate::config_space::{RegKind, Slot};
use crate::error::Error;
use crate::function::PassthroughFunction;
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

/// A `[[pci.device]]` entry for a snapshot device passed in memory to
/// [`bridge_with_snapshots`] (host function 0000:40:SLOT.FUNCTION at guest SLOT.FUNCTION).
pub fn snapshot_device_config(slot: u8, function: u8) -> PciDeviceConfig {
    PciDeviceConfig {
        host: PciAddress::new(0, 0x40, slot, function),
        slot,
        function,
        backend: crate::BackendKind::Snapshot,
        snapshot: Some("embedded".into()),
        intx: None,
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
    /// Bound vectors by (host sbdf, entry), as the actions left them.
    bound: BTreeMap<(u32, u32), Vector>,
    /// `BindMsi` actions seen.
    pub binds: u64,
    /// `UnbindMsi` actions seen.
    pub unbinds: u64,
    /// Bridge-owned Interrupt Disable writes seen.
    pub intx_writes: u64,
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
            bound: BTreeMap::new(),
            binds: 0,
            unbinds: 0,
            intx_writes: 0,
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
            .map_err(|e| format!("{op:?}: {e}"))?;
        // Only a write can change a function's interrupt programming, and only the programming
        // of the function it reaches (all of them for an ECAM write crossing functions).
        let touched = match op {
            Op::CfgRead { .. } | Op::MmioRead { .. } => return Ok(()),
            Op::CfgWrite { reg, size, .. } if usize::from(reg) + usize::from(size) > 4096 => None,
            Op::CfgWrite { addr, .. } => Some(addr),
            Op::MmioWrite { addr, size, .. } => {
                match bridge
                    .functions()
                    .find(|f| f.claims_mmio(addr, usize::from(size)))
                {
                    Some(f) => Some(f.guest_address()),
                    None => return Ok(()),
                }
            }
        };
        self.check_interrupts_of(bridge, touched)
            .map_err(|e| format!("{op:?}: {e}"))
    }

    /// Check the interrupt invariants (5) against the bridge's current state without an
    /// access (after an event, say).
    pub fn check_interrupts(&self, bridge: &PciHostBridge) -> Result<(), String> {
        self.check_interrupts_of(bridge, None)
    }

    /// [`Checker::check_interrupts`] for one function (`None`: all of them).
    fn check_interrupts_of(
        &self,
        bridge: &PciHostBridge,
        only: Option<PciAddress>,
    ) -> Result<(), String> {
        for f in bridge
            .functions()
            .filter(|f| only.is_none_or(|a| a == f.guest_address()))
        {
            let sbdf = f.host_address().sbdf();
            let want = expected_vectors(f);
            let have: BTreeMap<u32, Vector> = self
                .bound
                .range((sbdf, 0)..=(sbdf, u32::MAX))
                .map(|(&(_, e), v)| (e, *v))
                .collect();
            if want != have {
                return Err(format!(
                    "{}: bound vectors {have:?} but the programming asks for {want:?}",
                    f.guest_address()
                ));
            }
            let own: BTreeMap<u32, Vector> =
                f.bindings().bound().map(|(s, v)| (s.entry(), *v)).collect();
            if own != have {
                return Err(format!(
                    "{}: the bridge lists {own:?} bound, the actions left {have:?}",
                    f.guest_address()
                ));
            }
            let unmasked = f.msix_table().map_or(0, |t| {
                (0..t.len())
                    .filter(|&i| t.entry(i).is_some_and(|e| !e.masked))
                    .count()
            });
            if f.bindings().msix_bound() > unmasked {
                return Err(format!(
                    "{}: {} MSI-X entries bound but only {unmasked} unmasked",
                    f.guest_address(),
                    f.bindings().msix_bound()
                ));
            }
        }
        Ok(())
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
                if is_intx_write(f, w) {
                    self.intx_writes += 1;
                    continue;
                }
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
                Action::BindMsi {
                    sbdf,
                    entry,
                    table_base,
                    nvec,
                    gvec,
                    gflags,
                    gtable,
                } => {
                    self.binds += 1;
                    let v = Vector {
                        table_base,
                        nvec,
                        gvec,
                        gflags,
                        gtable,
                    };
                    let f = bridge
                        .functions()
                        .find(|f| f.host_address().sbdf() == sbdf)
                        .ok_or_else(|| format!("BindMsi for unknown host function {sbdf:#x}"))?;
                    match expected_vectors(f).get(&entry) {
                        Some(w) if *w == v => {}
                        w => {
                            return Err(format!(
                                "BindMsi entry {entry} {v:?} does not match the programming {w:?}"
                            ))
                        }
                    }
                    if let Some(old) = self.bound.insert((sbdf, entry), v) {
                        if old.nvec != v.nvec || old.table_base != v.table_base {
                            return Err(format!(
                                "rebind of entry {entry} changes the pirq ({old:?} -> {v:?}) without an unbind"
                            ));
                        }
                    }
                }
                Action::UnbindMsi { sbdf, entry } => {
                    self.unbinds += 1;
                    if self.bound.remove(&(sbdf, entry)).is_none() {
                        return Err(format!(
                            "UnbindMsi of {sbdf:#x} entry {entry} that is not bound"
                        ));
                    }
                }
                _ => return Err(format!("unexpected action {a:?}")),
            }
        }
        if !actions
            .iter()
            .any(|a| matches!(a, Action::MapMemory { .. } | Action::MapIoPorts { .. }))
        {
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

/// Whether a device write is the bridge's own Interrupt Disable management: one byte at the
/// command register's high byte of a function that forwards INTx, changing only bit 10, to
/// the state the function wants.
fn is_intx_write(f: &PassthroughFunction, w: &crate::backend::snapshot::WriteRecord) -> bool {
    let Some(i) = f.intx() else { return false };
    if w.offset != crate::backend::COMMAND_HIGH || w.data.len() != 1 {
        return false;
    }
    let bit = crate::backend::INTX_DISABLE_BIT;
    let (d, b) = (w.data[0], w.before[0]);
    (d ^ b) & !bit == 0 && i.device_masked() == Some(d & bit != 0)
}

/// The vectors the guest's programming asks Xen to bind, by entry, computed from the
/// registers and the table (MSI and MSI-X rules of `crate::msi` and `crate::msix`).
pub fn expected_vectors(f: &PassthroughFunction) -> BTreeMap<u32, Vector> {
    let mut out = BTreeMap::new();
    let msi = f.msi_state().filter(|m| m.enabled);
    let msix = f.msix_control().filter(|c| c.enabled);
    match (msi, msix) {
        (Some(m), None) => {
            out.insert(
                0,
                Vector {
                    table_base: 0,
                    nvec: u32::from(m.vectors),
                    gvec: (m.data & 0xFF) as u8,
                    gflags: msi_gflags(m.address, u32::from(m.data), m.mask & 1 == 0),
                    gtable: 0,
                },
            );
        }
        (None, Some(c)) if !c.masked => {
            let (Some(t), Some(info)) = (f.msix_table(), f.caps().msix) else {
                return out;
            };
            let Some(bar) = f.bars().bar(usize::from(info.table_bar)) else {
                return out;
            };
            for i in 0..t.len() {
                let Some(e) = t.entry(i).filter(|e| !e.masked) else {
                    continue;
                };
                out.insert(
                    i as u32,
                    Vector {
                        table_base: bar.host.host_addr.wrapping_add(info.table_offset),
                        nvec: 1,
                        gvec: (e.data & 0xFF) as u8,
                        gflags: msi_gflags(e.address, e.data, true),
                        gtable: bar.guest.wrapping_add(info.table_offset),
                    },
                );
            }
        }
        _ => {}
    }
    out
}

/// Whether host frames `[mfn, mfn + nr)` lie inside one memory BAR (or the ROM) of `f` and
/// avoid its MSI-X pages.
fn host_frames_ok(f: &PassthroughFunction, mfn: u64, nr: u64) -> bool {
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

/// The MSI / MSI-X surfaces of a function, for the interrupt-focused generators.
struct IrqSurface {
    addr: PciAddress,
    msi: Option<(u16, u16)>,
    msix_cap: Option<u16>,
    /// Guest address of the table and the PBA, and the number of entries (BARs placed).
    table: Option<(u64, u64, u16)>,
    table_bar_reg: Option<u16>,
    windows: crate::config::Windows,
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
            let is64 = flags & crate::msi::FLAGS_64BIT != 0;
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
        for e in 0..u64::from(n) {
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
        for e in 0..u64::from(n) {
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
