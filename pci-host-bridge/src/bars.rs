//! Fully virtual BARs and the guest mappings they imply.
//!
//! The guest never sees a host address. Each BAR keeps its own guest address, masked by the
//! BAR's *emulated* size, so the sizing protocol works without touching the device: writing
//! all-ones and reading back returns the size mask plus the read-only type bits.
//!
//! - Memory BARs are presented with a size of at least 4 KiB (QEMU xen_pt does the same,
//!   `xen_pt_get_emul_size`): mappings work in whole pages, so a guest must place even a tiny
//!   BAR on its own page.
//! - I/O BARs decode 16 bits (the upper 16 bits read 0), as x86 port I/O does.
//! - A 64-bit BAR occupies two slots; the upper slot holds bits 63:32 of the guest address.
//! - The expansion ROM has its enable bit (bit 0) and an address masked by its size (at least
//!   4 KiB here, for the same page reason).
//!
//! Mapping rule ([`Bars::desired_mappings`]): with memory decode on, every memory BAR whose
//! guest range lies inside a configured MMIO window and whose host range is whole pages
//! (page-aligned address, size a multiple of 4 KiB) is mapped (`XEN_DOMCTL_memory_mapping`), minus the pages holding the MSI-X table
//! or PBA; never the ROM (see [`Bars::desired_mappings`]). With I/O decode on, every I/O BAR
//! inside the I/O window is mapped (`XEN_DOMCTL_ioport_mapping`). A BAR at 0 or outside the
//! windows is never mapped (it is unplaced, or in the middle of a sizing probe). A memory BAR
//! smaller than a page is never mapped either: the rest of its host page may belong to another
//! device. Its accesses arrive through the claimed MMIO window and are forwarded to the
//! backend ([`crate::function`]).

use serde::Serialize;

use crate::backend::{BarInfo, BarKind, HostDevice};
use crate::config::Windows;

/// Page size of guest and host frames.
pub const PAGE_SIZE: u64 = 4096;

/// One BAR as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualBar {
    /// The host BAR.
    pub host: BarInfo,
    /// The size presented to the guest (a power of two, at least a page for memory).
    pub emu_size: u64,
    /// The guest address (always a multiple of `emu_size`).
    pub guest: u64,
}

impl VirtualBar {
    fn new(host: BarInfo) -> Self {
        let pow2 = host.size.checked_next_power_of_two().unwrap_or(1 << 63);
        let emu_size = match host.kind {
            BarKind::Io => pow2.max(4),
            _ => pow2.max(PAGE_SIZE),
        };
        VirtualBar {
            host,
            emu_size,
            guest: 0,
        }
    }

    fn set_guest(&mut self, addr: u64) {
        let mask = match self.host.kind {
            BarKind::Io => 0xFFFF,
            BarKind::Mem32 => 0xFFFF_FFFF,
            BarKind::Mem64 => u64::MAX,
        };
        self.guest = addr & mask & !(self.emu_size - 1);
    }
}

/// What a BAR slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BarSlot {
    /// Nothing: reads 0, writes ignored.
    Unused,
    /// A BAR.
    Bar(VirtualBar),
    /// The upper half of the 64-bit BAR in the given slot.
    Upper(u8),
}

/// A guest mapping of a BAR requested from the hypervisor (not an mmap of this process: that
/// is `ioreq_server::shared::Mapping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BarMapping {
    /// `XEN_DOMCTL_memory_mapping` of `nr` frames.
    Mem {
        /// BAR slot (6 = ROM).
        bar: u8,
        /// First guest frame.
        gfn: u64,
        /// First host frame.
        mfn: u64,
        /// Frames.
        nr: u64,
    },
    /// `XEN_DOMCTL_ioport_mapping` of `nr` ports.
    Io {
        /// BAR slot.
        bar: u8,
        /// First guest port.
        gport: u32,
        /// First host port.
        mport: u32,
        /// Ports.
        nr: u32,
    },
}

/// The six BAR slots and the ROM of a function.
#[derive(Clone, Debug, Serialize)]
pub struct Bars {
    slots: [BarSlot; 6],
    rom: Option<VirtualBar>,
    rom_enabled: bool,
}

/// Memory BAR type bits for the low dword.
fn mem_flags(b: &BarInfo) -> u32 {
    let ty = if b.kind == BarKind::Mem64 { 0x4 } else { 0 };
    ty | if b.prefetchable { 0x8 } else { 0 }
}

fn push_mem_runs(
    out: &mut Vec<BarMapping>,
    windows: &Windows,
    bar: u8,
    b: &VirtualBar,
    holes: Vec<(u64, u64)>,
) {
    if b.guest == 0
        || !windows.contains_mmio(b.guest, b.emu_size)
        || !b.host.host_addr.is_multiple_of(PAGE_SIZE)
        || !b.host.size.is_multiple_of(PAGE_SIZE)
    {
        return;
    }
    let pages = b.host.size / PAGE_SIZE;
    let (g0, h0) = (b.guest / PAGE_SIZE, b.host.host_addr / PAGE_SIZE);
    let mut start = 0u64;
    for (a, z) in holes.into_iter().chain(std::iter::once((pages, pages))) {
        let a = a.min(pages);
        if a > start {
            out.push(BarMapping::Mem {
                bar,
                gfn: g0 + start,
                mfn: h0 + start,
                nr: a - start,
            });
        }
        start = start.max(z.saturating_add(1));
    }
}

impl Bars {
    /// The BARs of a host device, all unplaced.
    pub fn new(dev: &dyn HostDevice) -> Self {
        let mut slots = [BarSlot::Unused; 6];
        let mut i = 0;
        while i < 6 {
            match dev.bar(i) {
                Some(b) if b.size > 0 => {
                    slots[i] = BarSlot::Bar(VirtualBar::new(b));
                    if b.kind == BarKind::Mem64 {
                        if i == 5 {
                            slots[i] = BarSlot::Unused;
                        } else {
                            slots[i + 1] = BarSlot::Upper(i as u8);
                            i += 1;
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let rom = dev.rom().filter(|r| r.size > 0).map(|r| {
            VirtualBar::new(BarInfo {
                kind: BarKind::Mem32,
                ..r
            })
        });
        Bars {
            slots,
            rom,
            rom_enabled: false,
        }
    }

    /// Slot `i` (0..=5).
    pub fn slot(&self, i: usize) -> BarSlot {
        self.slots.get(i).copied().unwrap_or(BarSlot::Unused)
    }

    /// BAR `i` if slot `i` starts a BAR.
    pub fn bar(&self, i: usize) -> Option<&VirtualBar> {
        match self.slots.get(i) {
            Some(BarSlot::Bar(b)) => Some(b),
            _ => None,
        }
    }

    /// The ROM.
    pub fn rom(&self) -> Option<&VirtualBar> {
        self.rom.as_ref()
    }

    /// Whether the ROM's enable bit is set.
    pub fn rom_enabled(&self) -> bool {
        self.rom_enabled
    }

    /// The value the guest reads from BAR register `i` (0..=5).
    pub fn read(&self, i: usize) -> u32 {
        match self.slot(i) {
            BarSlot::Unused => 0,
            BarSlot::Upper(lo) => match self.slot(usize::from(lo)) {
                BarSlot::Bar(b) => (b.guest >> 32) as u32,
                _ => 0,
            },
            BarSlot::Bar(b) => match b.host.kind {
                BarKind::Io => (b.guest as u32 & 0xFFFC) | 0x1,
                _ => (b.guest as u32 & 0xFFFF_FFF0) | mem_flags(&b.host),
            },
        }
    }

    /// A guest write of `value` to BAR register `i` (0..=5). Read-only bits (type, size) stay.
    pub fn write(&mut self, i: usize, value: u32) {
        match self.slot(i) {
            BarSlot::Unused => {}
            BarSlot::Upper(lo) => {
                if let Some(BarSlot::Bar(b)) = self.slots.get_mut(usize::from(lo)) {
                    let addr = (b.guest & 0xFFFF_FFFF) | u64::from(value) << 32;
                    b.set_guest(addr);
                }
            }
            BarSlot::Bar(_) => {
                if let Some(BarSlot::Bar(b)) = self.slots.get_mut(i) {
                    let addr = match b.host.kind {
                        BarKind::Io => u64::from(value & 0xFFFC),
                        _ => (b.guest & !0xFFFF_FFFF) | u64::from(value & 0xFFFF_FFF0),
                    };
                    b.set_guest(addr);
                }
            }
        }
    }

    /// The value the guest reads from the ROM BAR register.
    pub fn read_rom(&self) -> u32 {
        match &self.rom {
            Some(r) => (r.guest as u32 & 0xFFFF_F800) | u32::from(self.rom_enabled),
            None => 0,
        }
    }

    /// A guest write to the ROM BAR register.
    pub fn write_rom(&mut self, value: u32) {
        if let Some(r) = &mut self.rom {
            r.set_guest(u64::from(value & 0xFFFF_F800));
            self.rom_enabled = value & 1 != 0;
        }
    }

    /// The memory BAR (not ROM) whose guest range contains `[addr, addr + len)`, if it is placed
    /// inside the windows: `(slot, offset in BAR)`.
    pub fn find_mem(&self, addr: u64, len: u64, windows: &Windows) -> Option<(u8, u64)> {
        self.slots.iter().enumerate().find_map(|(i, s)| match s {
            BarSlot::Bar(b)
                if b.host.is_mem()
                    && b.guest != 0
                    && windows.contains_mmio(b.guest, b.emu_size) =>
            {
                let off = addr.checked_sub(b.guest)?;
                (off.checked_add(len)? <= b.emu_size).then_some((i as u8, off))
            }
            _ => None,
        })
    }

    /// The mappings the current state asks for. `command` is the guest's command register;
    /// `trapped(bar)` gives the inclusive page ranges of a BAR that must stay unmapped.
    pub fn desired_mappings(
        &self,
        command: u16,
        windows: &Windows,
        trapped: &dyn Fn(u8) -> Vec<(u64, u64)>,
    ) -> Vec<BarMapping> {
        let mut out = Vec::new();
        let mem_on = command & crate::header::CMD_MEMORY != 0;
        let io_on = command & crate::header::CMD_IO != 0;
        for (i, s) in self.slots.iter().enumerate() {
            let BarSlot::Bar(b) = s else { continue };
            match b.host.kind {
                BarKind::Io => {
                    if io_on && b.guest != 0 && windows.contains_io(b.guest, b.host.size) {
                        out.push(BarMapping::Io {
                            bar: i as u8,
                            gport: b.guest as u32,
                            mport: b.host.host_addr as u32,
                            nr: b.host.size as u32,
                        });
                    }
                }
                _ => {
                    if mem_on {
                        push_mem_runs(&mut out, windows, i as u8, b, trapped(i as u8));
                    }
                }
            }
        }
        // The expansion ROM is never mapped: its host decoder is enabled by its own enable bit,
        // which stays the bridge's (virtual), so mapped ROM frames would read whatever the
        // device decodes with the ROM off (review S2-5; QEMU's xen_pt passes the enable bit
        // through instead). Guest reads of a placed ROM arrive as ioreqs and read all-ones:
        // "no ROM image" to a driver.
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::snapshot::SnapshotDevice;

    fn dev() -> SnapshotDevice {
        let mut bars = [None; 6];
        bars[0] = Some(BarInfo {
            kind: BarKind::Mem64,
            prefetchable: true,
            host_addr: 0x38_0000_0000,
            size: 0x10_0000,
        });
        bars[2] = Some(BarInfo {
            kind: BarKind::Io,
            prefetchable: false,
            host_addr: 0xe000,
            size: 0x20,
        });
        bars[3] = Some(BarInfo {
            kind: BarKind::Mem32,
            prefetchable: false,
            host_addr: 0xfb00_0000,
            size: 0x800,
        });
        let rom = Some(BarInfo {
            kind: BarKind::Mem32,
            prefetchable: false,
            host_addr: 0xfc00_0000,
            size: 0x1_0000,
        });
        SnapshotDevice::from_raw(&[0u8; 256], bars, rom)
    }

    #[test]
    fn sizing_protocol() {
        let mut b = Bars::new(&dev());
        assert_eq!(b.slot(1), BarSlot::Upper(0));
        assert_eq!(b.read(0), 0x0000_000C);
        // 64-bit pair.
        b.write(0, u32::MAX);
        b.write(1, u32::MAX);
        assert_eq!(b.read(0), 0xFFF0_000C);
        assert_eq!(b.read(1), 0xFFFF_FFFF);
        b.write(0, 0xF100_0000);
        b.write(1, 0);
        assert_eq!(b.bar(0).unwrap().guest, 0xF100_0000);
        // I/O: 16-bit decode, size 0x20.
        b.write(2, u32::MAX);
        assert_eq!(b.read(2), 0x0000_FFE1);
        // Small memory BAR presented as one page.
        b.write(3, u32::MAX);
        assert_eq!(b.read(3), 0xFFFF_F000);
        // Unused.
        b.write(4, u32::MAX);
        assert_eq!(b.read(4), 0);
        // ROM: enable bit kept, size mask 64 KiB.
        b.write_rom(u32::MAX);
        assert_eq!(b.read_rom(), 0xFFFF_0001);
        b.write_rom(0xF120_0000);
        assert_eq!(b.read_rom(), 0xF120_0000);
    }

    #[test]
    fn mappings_skip_holes_and_unplaced_bars() {
        let mut b = Bars::new(&dev());
        let w = Windows {
            mmio: vec![(0xF100_0000, 0xFBFF_FFFF)],
            io: Some((0xC000, 0xFFFF)),
        };
        let none = |_: u8| Vec::new();
        assert!(b.desired_mappings(0x3, &w, &none).is_empty());
        b.write(0, 0xF100_0000);
        b.write(2, 0xC000);
        b.write(3, 0xF120_0000);
        let holes = |bar: u8| {
            if bar == 0 {
                vec![(3, 3), (5, 6)]
            } else {
                Vec::new()
            }
        };
        let m = b.desired_mappings(0x3, &w, &holes);
        let g = 0xF100_0000 / PAGE_SIZE;
        let h = 0x38_0000_0000 / PAGE_SIZE;
        assert_eq!(
            m,
            vec![
                BarMapping::Mem {
                    bar: 0,
                    gfn: g,
                    mfn: h,
                    nr: 3
                },
                BarMapping::Mem {
                    bar: 0,
                    gfn: g + 4,
                    mfn: h + 4,
                    nr: 1
                },
                BarMapping::Mem {
                    bar: 0,
                    gfn: g + 7,
                    mfn: h + 7,
                    nr: 256 - 7
                },
                BarMapping::Io {
                    bar: 2,
                    gport: 0xC000,
                    mport: 0xe000,
                    nr: 0x20
                },
            ]
        );
        // Memory decode only: no I/O mapping.
        assert!(b
            .desired_mappings(0x2, &w, &none)
            .iter()
            .all(|m| matches!(m, BarMapping::Mem { .. })));
        // Outside the window: not mapped.
        b.write(0, 0x1000_0000);
        assert!(b.desired_mappings(0x2, &w, &none).is_empty());
        b.write(0, 0xF100_0000);
        // Hole at the last page.
        let holes = |bar: u8| {
            if bar == 0 {
                vec![(255, 255)]
            } else {
                Vec::new()
            }
        };
        assert_eq!(
            b.desired_mappings(0x2, &w, &holes),
            vec![BarMapping::Mem {
                bar: 0,
                gfn: g,
                mfn: h,
                nr: 255
            }]
        );
    }
}
