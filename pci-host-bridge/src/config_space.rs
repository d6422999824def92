//! The register-descriptor model of a virtualized config space.
//!
//! Every register the guest can see is described by a [`RegDesc`]: its offset and size, and
//! for each bit exactly one of three owners:
//! - **emulated** (`emu`): the guest reads a virtual value kept here; of those, the bits in `ro`
//!   cannot be changed by the guest and the bits in `w1c` are cleared by writing 1;
//! - **pass-through** (`pass`): the guest reads the device and its writes reach the device;
//! - neither: the guest reads the device, its writes are dropped (device-owned, read-only).
//!
//! `w1c` also names the device's own write-1-to-clear bits: when a pass-through write is
//! merged into the device's current value, W1C bits the guest does not pass are written as 0,
//! so reading a 1 and writing it back never clears a status bit behind the guest's back.
//!
//! A [`Layout`] assigns each byte of a function's 4 KiB config space to one register instance
//! (or marks it unknown / hidden / absent). Accesses of any size at any offset are split into bytes
//! against the layout, so no access can straddle its way around the table.
//!
//! Bytes no register covers:
//! - in 0x40..0x100 outside exposed capabilities: **unknown** — read from the device (legacy
//!   devices keep vendor registers there), writes dropped and logged;
//! - the two header bytes of a hidden capability, and the extended space 0x100.. outside
//!   exposed extended capabilities: **hidden** — read 0, writes dropped and logged;
//! - past the backend's config length: **absent** — read all-ones, writes dropped.

use std::sync::Arc;

use serde::Serialize;

/// How a register's virtual value (its emulated bits) starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Init {
    /// Zero.
    Zero,
    /// A constant.
    Const(u32),
    /// The device's value at setup, keeping only these bits (the rest start 0).
    Device(u32),
    /// Computed by the builder (IDs, next pointers, header type, BARs): starts 0 and is set
    /// explicitly with [`Layout::set_virt`].
    Builder,
}

/// Registers with behaviour beyond the masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum RegKind {
    /// Only the masks.
    Plain,
    /// The command register: memory / I/O decode drive BAR mapping.
    Command,
    /// BAR `n` (0..=5): fully virtual, value from [`crate::bars::Bars`].
    Bar(u8),
    /// The expansion ROM BAR: fully virtual, value from [`crate::bars::Bars`].
    Rom,
    /// The kind [`Layout::rule`] reports for [`Slot::Hidden`] bytes (no register has it).
    Hidden,
    /// Device-owned bytes of unknown meaning inside an exposed capability (vendor-specific
    /// bodies): read from the device, writes dropped and logged.
    Opaque,
    /// MSI Message Control (virtual; Multiple Message Enable kept within Multiple Message
    /// Capable; enabling binds the vector in Xen, [`crate::msi`]).
    MsiControl,
    /// MSI-X Message Control (virtual; enable and function mask drive the binding of the
    /// table's entries, [`crate::msix`]).
    MsixControl,
}

/// One register: which bits the guest owns, which the device owns, which pass through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RegDesc {
    /// Offset from the start of its group (the header or a capability).
    pub offset: u16,
    /// Size in bytes: 1, 2 or 4.
    pub size: u8,
    /// Name for logs and status.
    pub name: &'static str,
    /// Emulated bits: read from the virtual value.
    pub emu: u32,
    /// Emulated bits the guest cannot change (must be a subset of `emu`).
    pub ro: u32,
    /// Pass-through bits: read from and written to the device (disjoint from `emu`).
    pub pass: u32,
    /// Write-1-to-clear bits (virtual ones if emulated, the device's own otherwise).
    pub w1c: u32,
    /// Initial virtual value.
    pub init: Init,
    /// Special behaviour.
    pub kind: RegKind,
}

impl RegDesc {
    /// A device-owned read-only register (read from the device, writes dropped): the template
    /// of [`RegDesc::device_ro`], also usable with struct update syntax:
    /// `RegDesc { offset: 8, size: 4, name: "class", ..RegDesc::DEVICE_RO }`.
    pub const DEVICE_RO: RegDesc = RegDesc {
        offset: 0,
        size: 4,
        name: "",
        emu: 0,
        ro: 0,
        pass: 0,
        w1c: 0,
        init: Init::Zero,
        kind: RegKind::Plain,
    };

    /// A fully emulated read-only register with the value given by `init`: the template of
    /// [`RegDesc::virt_ro`].
    pub const VIRT_RO: RegDesc = RegDesc {
        offset: 0,
        size: 4,
        name: "",
        emu: u32::MAX,
        ro: u32::MAX,
        pass: 0,
        w1c: 0,
        init: Init::Zero,
        kind: RegKind::Plain,
    };

    /// A fully emulated register the guest can write freely: the template of
    /// [`RegDesc::virt_rw`].
    pub const VIRT_RW: RegDesc = RegDesc {
        offset: 0,
        size: 4,
        name: "",
        emu: u32::MAX,
        ro: 0,
        pass: 0,
        w1c: 0,
        init: Init::Zero,
        kind: RegKind::Plain,
    };

    // Constructors and builder methods, so that a register table reads as a table, one register
    // per line: `RegDesc::virt_rw(0x04, 2, "pm_pmcsr").emu(0xFFF7, 0x7EF4).w1c(0x8000)`.

    /// A device-owned read-only register ([`RegDesc::DEVICE_RO`]) at `offset`.
    pub const fn device_ro(offset: u16, size: u8, name: &'static str) -> RegDesc {
        RegDesc::DEVICE_RO.at(offset, size, name)
    }

    /// A fully emulated read-only register ([`RegDesc::VIRT_RO`]) at `offset`.
    pub const fn virt_ro(offset: u16, size: u8, name: &'static str) -> RegDesc {
        RegDesc::VIRT_RO.at(offset, size, name)
    }

    /// A fully emulated guest-writable register ([`RegDesc::VIRT_RW`]) at `offset`.
    pub const fn virt_rw(offset: u16, size: u8, name: &'static str) -> RegDesc {
        RegDesc::VIRT_RW.at(offset, size, name)
    }

    /// `self` moved to `offset`, resized and renamed.
    const fn at(self, offset: u16, size: u8, name: &'static str) -> RegDesc {
        RegDesc {
            offset,
            size,
            name,
            ..self
        }
    }

    /// The register with these emulated bits, of which the guest cannot change `ro`.
    pub const fn emu(self, emu: u32, ro: u32) -> RegDesc {
        RegDesc { emu, ro, ..self }
    }

    /// The register with these pass-through bits.
    pub const fn pass(self, pass: u32) -> RegDesc {
        RegDesc { pass, ..self }
    }

    /// The register with these write-1-to-clear bits.
    pub const fn w1c(self, w1c: u32) -> RegDesc {
        RegDesc { w1c, ..self }
    }

    /// The register with this initial virtual value.
    pub const fn init(self, init: Init) -> RegDesc {
        RegDesc { init, ..self }
    }

    /// The register with this special behaviour.
    pub const fn kind(self, kind: RegKind) -> RegDesc {
        RegDesc { kind, ..self }
    }

    /// The mask of the register's bytes (`0xFF`, `0xFFFF` or `0xFFFF_FFFF`).
    pub const fn size_mask(&self) -> u32 {
        match self.size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => 0xFFFF_FFFF,
        }
    }

    /// The masks restricted to the register's size: `(emu, ro, pass, w1c)`.
    pub const fn masks(&self) -> (u32, u32, u32, u32) {
        let m = self.size_mask();
        (
            self.emu & m,
            self.ro & self.emu & m,
            self.pass & !self.emu & m,
            self.w1c & m,
        )
    }

    /// Whether the descriptor is well-formed: size 1/2/4, naturally aligned, `ro` within
    /// `emu` and `pass` disjoint from `emu` (masks are taken within the size; bits above it are
    /// ignored, so [`RegDesc::virt_ro`] and the other templates can be used for any size).
    pub const fn is_consistent(&self) -> bool {
        let m = self.size_mask();
        matches!(self.size, 1 | 2 | 4)
            && self.offset.is_multiple_of(self.size as u16)
            && (self.ro & !self.emu) & m == 0
            && (self.pass & self.emu) & m == 0
    }
}

/// A capability's register table, as an array expression (for a `const` slice or array): the
/// two bytes every capability starts with (PCI Local Bus 3.0, 6.7), then its own `rows`. The
/// Capability ID is the device's, read-only; the next pointer is virtual, written by the
/// builder when it relinks the list around hidden capabilities. They are named
/// `PREFIX_cap_id` and `PREFIX_next`.
macro_rules! cap_regs {
    ($prefix:literal; $($row:expr),* $(,)?) => {
        [
            RegDesc::device_ro(0x00, 1, concat!($prefix, "_cap_id")),
            RegDesc::virt_ro(0x01, 1, concat!($prefix, "_next")).init(Init::Builder),
            $($row),*
        ]
    };
}
pub(crate) use cap_regs;

/// One register placed in a function's config space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegInst {
    /// Absolute config offset.
    pub base: u16,
    /// The descriptor.
    pub desc: RegDesc,
    /// Virtual value of the emulated bits.
    pub virt: u32,
    /// Index of the group it belongs to ([`Layout::group_name`]).
    pub group: u16,
}

/// What a config byte is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Byte of register instance `n` ([`Layout::reg`]).
    Reg(u16),
    /// Inside the backend's config space but described by no register.
    Unknown,
    /// Inside a hidden capability or unexposed extended space: reads 0, writes dropped and
    /// logged.
    Hidden,
    /// Past the backend's config space.
    Absent,
}

/// The per-byte rule a test can check accesses against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRule {
    /// What the byte is.
    pub slot: Slot,
    /// The register's kind (`Plain` for unknown/absent bytes, `Hidden` for hidden ones).
    pub kind: RegKind,
    /// Emulated bits of this byte.
    pub emu: u8,
    /// Emulated read-only bits.
    pub ro: u8,
    /// Pass-through bits.
    pub pass: u8,
    /// W1C bits.
    pub w1c: u8,
}

/// The register layout of one function's config space.
#[derive(Clone, Debug)]
pub struct Layout {
    regs: Vec<RegInst>,
    /// Shared by clones: only the building of the layout changes the groups and the byte map
    /// (so copying a layout copies its registers, not 16 KiB of map).
    groups: Arc<Vec<String>>,
    map: Arc<Vec<Slot>>,
    config_len: usize,
}

impl Layout {
    /// An empty layout for a backend with `config_len` bytes of config space: everything
    /// unknown up to `config_len`, absent after.
    pub fn new(config_len: usize) -> Self {
        let len = config_len.min(4096);
        let map = (0..4096)
            .map(|i| if i < len { Slot::Unknown } else { Slot::Absent })
            .collect();
        Layout {
            regs: Vec::new(),
            groups: Arc::new(Vec::new()),
            map: Arc::new(map),
            config_len: len,
        }
    }

    /// Bytes of config space the backend has.
    pub fn config_len(&self) -> usize {
        self.config_len
    }

    /// Place the registers of a group at `base`. Bytes at or past `limit`, bytes past the
    /// config length and bytes already claimed by an earlier group are left alone (the first
    /// claim wins, so malformed overlapping capabilities cannot override the header).
    /// Returns the instance indices, in table order (`None` where nothing was placed).
    pub fn add_group(
        &mut self,
        group: &str,
        base: u16,
        limit: u16,
        descs: &[RegDesc],
    ) -> Vec<Option<usize>> {
        let g = self.groups.len().min(usize::from(u16::MAX)) as u16;
        Arc::make_mut(&mut self.groups).push(group.to_string());
        descs.iter().map(|d| self.add(g, base, limit, *d)).collect()
    }

    /// The name of a register instance's group (`"header"`, `"msi@0x50"`, ...).
    pub fn group_name(&self, reg: &RegInst) -> &str {
        self.groups
            .get(usize::from(reg.group))
            .map_or("", String::as_str)
    }

    fn add(&mut self, group: u16, base: u16, limit: u16, desc: RegDesc) -> Option<usize> {
        let start = usize::from(base) + usize::from(desc.offset);
        if self.regs.len() >= usize::from(u16::MAX) {
            return None;
        }
        let idx = self.regs.len();
        let mut placed = false;
        let end = (start + usize::from(desc.size))
            .min(usize::from(limit))
            .min(self.config_len);
        let map = Arc::make_mut(&mut self.map);
        for slot in map.get_mut(start..end).into_iter().flatten() {
            if *slot == Slot::Unknown {
                *slot = Slot::Reg(idx as u16);
                placed = true;
            }
        }
        if !placed {
            return None;
        }
        self.regs.push(RegInst {
            base: start as u16,
            desc,
            virt: 0,
            group,
        });
        Some(idx)
    }

    /// Mark `[start, end)` as hidden (reads 0, writes dropped and logged), where not claimed.
    pub fn add_hidden(&mut self, start: u16, end: u16) {
        let end = usize::from(end).min(self.config_len);
        let map = Arc::make_mut(&mut self.map);
        for slot in map.get_mut(usize::from(start)..end).into_iter().flatten() {
            if *slot == Slot::Unknown {
                *slot = Slot::Hidden;
            }
        }
    }

    /// Set the initial virtual values from the device's config bytes ([`Init::Device`]) and
    /// the constants ([`Init::Const`]).
    pub fn init_from_device(&mut self, config: &[u8]) {
        for r in &mut self.regs {
            let b = usize::from(r.base);
            let mut dev = 0u32;
            for i in 0..usize::from(r.desc.size) {
                dev |= u32::from(config.get(b + i).copied().unwrap_or(0)) << (8 * i);
            }
            r.virt = match r.desc.init {
                Init::Zero | Init::Builder => 0,
                Init::Const(v) => v,
                Init::Device(keep) => dev & keep,
            } & r.desc.size_mask();
        }
    }

    /// Set the virtual value of the register starting at absolute `offset` (if any).
    pub fn set_virt(&mut self, offset: u16, value: u32) -> bool {
        match self.find(offset) {
            Some(i) => {
                let m = self.regs[i].desc.size_mask();
                self.regs[i].virt = value & m;
                true
            }
            None => false,
        }
    }

    /// The index of the register instance starting at absolute `offset`.
    pub fn find(&self, offset: u16) -> Option<usize> {
        match self.map.get(usize::from(offset)) {
            Some(Slot::Reg(i)) if self.regs[usize::from(*i)].base == offset => {
                Some(usize::from(*i))
            }
            _ => None,
        }
    }

    /// What byte `offset` is (offsets past 4095 are absent).
    pub fn slot(&self, offset: usize) -> Slot {
        self.map.get(offset).copied().unwrap_or(Slot::Absent)
    }

    /// Register instance `i`.
    pub fn reg(&self, i: usize) -> &RegInst {
        &self.regs[i]
    }

    /// Register instance `i`, mutable.
    pub fn reg_mut(&mut self, i: usize) -> &mut RegInst {
        &mut self.regs[i]
    }

    /// All register instances.
    pub fn regs(&self) -> &[RegInst] {
        &self.regs
    }

    /// The rule for byte `offset`.
    pub fn rule(&self, offset: usize) -> ByteRule {
        match self.slot(offset) {
            Slot::Reg(i) => {
                let r = &self.regs[usize::from(i)];
                let shift = 8 * (offset - usize::from(r.base)) as u32;
                let (emu, ro, pass, w1c) = r.desc.masks();
                ByteRule {
                    slot: Slot::Reg(i),
                    kind: r.desc.kind,
                    emu: (emu >> shift) as u8,
                    ro: (ro >> shift) as u8,
                    pass: (pass >> shift) as u8,
                    w1c: (w1c >> shift) as u8,
                }
            }
            Slot::Hidden => ByteRule {
                slot: Slot::Hidden,
                kind: RegKind::Hidden,
                emu: 0xFF,
                ro: 0xFF,
                pass: 0,
                w1c: 0,
            },
            s => ByteRule {
                slot: s,
                kind: RegKind::Plain,
                emu: 0,
                ro: 0,
                pass: 0,
                w1c: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_first_claim_wins_and_limits() {
        let mut l = Layout::new(256);
        let a = RegDesc {
            offset: 0,
            size: 4,
            name: "a",
            ..RegDesc::VIRT_RW
        };
        let b = RegDesc {
            offset: 2,
            size: 2,
            name: "b",
            ..RegDesc::DEVICE_RO
        };
        assert_eq!(l.add_group("g", 0x40, 0x100, &[a]), vec![Some(0)]);
        // b at 0x42 overlaps a: nothing placed.
        assert_eq!(l.add_group("h", 0x40, 0x100, &[b]), vec![None]);
        // Clipped at the limit: one byte of a dword at 0xFF.
        assert_eq!(
            l.add_group("i", 0xFC, 0x100, &[RegDesc { offset: 0, ..a }]),
            vec![Some(1)]
        );
        assert_eq!(l.slot(0x100), Slot::Absent);
        assert_eq!(l.slot(0x44), Slot::Unknown);
        assert_eq!(l.rule(0x41).emu, 0xFF);
        l.add_hidden(0x45, 0x4B);
        assert_eq!(l.rule(0x45).kind, RegKind::Hidden);
        assert_eq!(l.rule(0x4A).kind, RegKind::Hidden);
        assert_eq!(l.rule(0x4B).slot, Slot::Unknown);
    }

    #[test]
    fn masks_are_clipped() {
        let d = RegDesc {
            offset: 0,
            size: 2,
            name: "x",
            emu: 0xFF00_00F0,
            ro: 0xF0,
            pass: 0x0F0F,
            w1c: 0,
            ..RegDesc::DEVICE_RO
        };
        assert_eq!(d.masks(), (0x00F0, 0x00F0, 0x0F0F, 0));
    }
}
