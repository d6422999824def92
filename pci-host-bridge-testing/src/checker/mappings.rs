//! Invariant 3, mappings: what the guest's placement and decode ask to be mapped, against
//! Xen's p2m and port mappings and the bridge's and executor's own lists.

use std::collections::BTreeSet;

use pci_host_bridge::backend::{BarInfo, BarKind};
use pci_host_bridge::bars::{BarMapping, PAGE_SIZE};
use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::config::Windows;

use super::raw::guest_reg;
use super::Checker;
use crate::xen_like::{P2m, Run};

impl Checker {
    /// Whether guest frames `[gfn, +nr)` -> host frames `[mfn, +nr)` are the guest placement
    /// of part of one memory BAR of a function (never the ROM), off its MSI-X pages.
    pub(super) fn frames_of_a_bar(
        &self,
        bridge: &PciHostBridge,
        gfn: u64,
        mfn: u64,
        nr: u64,
    ) -> bool {
        for f in bridge.functions() {
            let raw = self.funcs.get(&f.guest_address()).and_then(|c| c.raw.msix);
            let bars = (0..6u8).filter_map(|i| {
                Some((
                    i,
                    f.device().bar(usize::from(i))?,
                    f.bars().bar(usize::from(i))?.guest,
                ))
            });
            for (i, h, g) in bars {
                if h.kind == BarKind::Io
                    || mfn * PAGE_SIZE < h.host_addr
                    || (mfn + nr) * PAGE_SIZE > h.host_addr + h.size
                {
                    continue;
                }
                let first = mfn - h.host_addr / PAGE_SIZE;
                if gfn.wrapping_sub(g / PAGE_SIZE) != first {
                    continue;
                }
                if let (Some(m), true) = (raw, i < 6) {
                    let pages = m.pages(i);
                    if (first..first + nr).any(|p| pages.contains(&p)) {
                        return false;
                    }
                }
                return true;
            }
        }
        false
    }

    /// Invariant 3: Xen's p2m and port mappings equal what the guest's placement asks for,
    /// and the bridge's and executor's own lists.
    pub(super) fn check_mappings(&self, bridge: &PciHostBridge) -> Result<(), String> {
        let windows = bridge.config().windows();
        let (want_mem, want_io) = self.expected_mappings(bridge, &windows);
        let x = self.xen();
        let p2m = &x.p2m;
        // Runs of (gfn, mfn, nr) equal a per-frame map when they hold as many frames and each
        // is there frame by frame (the runs do not overlap). The same for ports.
        let same_in = |map: &P2m, runs: &[Run]| -> Option<String> {
            let total: u64 = runs.iter().map(|r| r.2).sum();
            if total != map.len() as u64 {
                return Some(format!("{total} frames or ports, Xen has {}", map.len()));
            }
            for &(g, m, n) in runs {
                let k = map.mapped_prefix(g, m, n);
                if k != n {
                    return Some(format!(
                        "run {g:#x} -> {m:#x} +{n}: {:#x} should map {:#x}, Xen has {:x?}",
                        g + k,
                        m + k,
                        map.get(g + k)
                    ));
                }
            }
            None
        };
        let same = |runs: &[Run]| same_in(p2m, runs);
        if let Some(e) = same(&want_mem) {
            let extra: Vec<_> = p2m
                .iter()
                .filter(|(g, _)| !want_mem.iter().any(|r| *g >= r.0 && *g < r.0 + r.2))
                .take(4)
                .collect();
            return Err(format!(
                "Xen's p2m is not what the guest's placement asks for: {e}; frames outside the wanted runs {extra:x?}"
            ));
        }
        if let Some(e) = same_in(&x.io, &want_io) {
            return Err(format!(
                "Xen's port mappings {:x?} are not what the guest asks for {want_io:x?}: {e}",
                x.io.runs().collect::<Vec<_>>()
            ));
        }
        let mut own = Vec::new();
        let mut own_io = Vec::new();
        for f in bridge.functions() {
            for m in f.mappings() {
                match *m {
                    BarMapping::Mem { gfn, mfn, nr, .. } => own.push((gfn, mfn, nr)),
                    BarMapping::Io {
                        gport, mport, nr, ..
                    } => own_io.push((u64::from(gport), u64::from(mport), u64::from(nr))),
                }
            }
        }
        if let Some(e) = same(&own) {
            return Err(format!(
                "the bridge's own list of mappings is not Xen's: {e}"
            ));
        }
        if let Some(e) = same_in(&x.io, &own_io) {
            return Err(format!(
                "the bridge's own list of port mappings is not Xen's: {e}"
            ));
        }
        if let Some(e) = bridge.executor() {
            let runs: Vec<(u64, u64, u64)> =
                e.memory_runs().map(|r| (r.gfn, r.mfn, r.nr)).collect();
            if let Some(err) = same(&runs) {
                return Err(format!("the executor's record is not Xen's p2m: {err}"));
            }
        }
        Ok(())
    }

    /// What the guest's placement and decode ask to be mapped: runs of (guest frame, host
    /// frame, frames) and guest port -> host port (computed from the backend's BARs and the raw MSI-X
    /// capability; BARs whose guest ranges overlap another decoded BAR are not mapped). The
    /// expansion ROM is never mapped (its host decoder stays off: its enable bit is
    /// virtual), but a decoded ROM still keeps a BAR it overlaps unmapped.
    pub fn expected_mappings(
        &self,
        bridge: &PciHostBridge,
        windows: &Windows,
    ) -> (Vec<Run>, Vec<Run>) {
        // (is_io, guest start, guest len, mappable host BAR, trapped pages, is the ROM)
        type Decoded = (bool, u64, u64, Option<BarInfo>, BTreeSet<u64>, bool);
        let mut decoded: Vec<Decoded> = Vec::new();
        for f in bridge.functions() {
            let cmd = f.command();
            let raw = self.funcs.get(&f.guest_address()).and_then(|c| c.raw.msix);
            for i in 0..6usize {
                let (Some(h), Some(v)) = (f.device().bar(i), f.bars().bar(i)) else {
                    continue;
                };
                if v.guest == 0 {
                    continue;
                }
                if h.kind == BarKind::Io {
                    if cmd & 1 != 0 && windows.contains_io(v.guest, h.size) {
                        decoded.push((true, v.guest, h.size, Some(h), BTreeSet::new(), false));
                    }
                    continue;
                }
                let emu = h.size.next_power_of_two().max(PAGE_SIZE);
                if cmd & 2 == 0 || !windows.contains_mmio(v.guest, emu) {
                    continue;
                }
                let mappable = h.host_addr % PAGE_SIZE == 0 && h.size % PAGE_SIZE == 0;
                let trapped = raw.map(|m| m.pages(i as u8)).unwrap_or_default();
                decoded.push((false, v.guest, emu, mappable.then_some(h), trapped, false));
            }
            if let (Some(h), Some(v)) = (f.device().rom(), f.bars().rom()) {
                let emu = h.size.next_power_of_two().max(PAGE_SIZE);
                let rom_on =
                    guest_reg(f, 0x30).is_some_and(|r| r & 1 != 0) || f.bars().rom_enabled();
                if cmd & 2 != 0 && rom_on && v.guest != 0 && windows.contains_mmio(v.guest, emu) {
                    decoded.push((false, v.guest, emu, None, BTreeSet::new(), true));
                }
            }
        }
        let mut mem: Vec<(u64, u64, u64)> = Vec::new();
        let mut io = Vec::new();
        for (k, d) in decoded.iter().enumerate() {
            let overlaps = decoded.iter().enumerate().any(|(j, o)| {
                j != k
                    && o.0 == d.0
                    && d.1 < o.1.saturating_add(o.2)
                    && o.1 < d.1.saturating_add(d.2)
            });
            let Some(h) = d.3.filter(|_| !overlaps) else {
                continue;
            };
            if d.0 {
                io.push((d.1, h.host_addr, h.size));
            } else {
                // The BAR's frames minus the trapped pages, as runs: the gaps between the
                // trapped pages (a walk over those, not over every frame of the BAR).
                let (g0, h0) = (d.1 / PAGE_SIZE, h.host_addr / PAGE_SIZE);
                let frames = h.size / PAGE_SIZE;
                let mut start = 0;
                for &p in d.4.range(..frames).chain(std::iter::once(&frames)) {
                    if p > start {
                        mem.push((g0 + start, h0 + start, p - start));
                    }
                    start = p + 1;
                }
            }
        }
        (mem, io)
    }
}
