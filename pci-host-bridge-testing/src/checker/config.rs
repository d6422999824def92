//! Invariants 1 and 2, config space: reads against the layout's rules and the device's
//! bytes, the emulated bits a guest write leaves behind, and the device writes an access made.

use pci_host_bridge::backend::BarKind;
use pci_host_bridge::bars::{BarSlot, PAGE_SIZE};
use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::config_space::{RegKind, Slot};
use pci_host_bridge::function::PassthroughFunction;
use pci_host_bridge::topology::PciAddress;

use super::Checker;
use crate::ops::mask;

impl Checker {
    pub(super) fn check_read(
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
            .funcs
            .get(&addr)
            .map(|h| h.handle.config_bytes(usize::from(reg), len))
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
    pub(super) fn model_write(
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

    pub(super) fn check_device_writes(
        &mut self,
        bridge: &PciHostBridge,
        access: Option<(PciAddress, u16, u8)>,
    ) -> Result<(), String> {
        for (addr, fc) in &self.funcs {
            let h = &fc.handle;
            let seen = self.seen_writes.entry(*addr).or_insert(0);
            let writes = h.writes_from(*seen);
            let f = bridge.function(*addr).ok_or("function vanished")?;
            for w in &writes {
                self.device_writes += 1;
                if is_intx_write(f, w) {
                    self.intx_writes += 1;
                    continue;
                }
                let start = usize::from(w.offset);
                let end = start + w.data.len();
                let changed = |bit: usize, m: u16| -> bool {
                    // Whether only bits in `m` of the 16-bit register at `bit` changed.
                    w.offset as usize == bit
                        && w.data.len() == 2
                        && (u16::from_le_bytes([w.data[0], w.data[1]])
                            ^ u16::from_le_bytes([w.before[0], w.before[1]]))
                            & !m
                            == 0
                };
                if let Some(m) = fc.raw.msix {
                    let (c, e) = (usize::from(m.cap), usize::from(m.cap) + 12);
                    if start < e && c < end {
                        if changed(c + 2, 0xC000) {
                            self.msix_control_writes += 1;
                            continue;
                        }
                        return Err(format!(
                            "{addr}: device write {w:?} to the MSI-X capability other than a 16-bit write of Message Control's Enable / Function Mask (Xen refuses it: EACCES)"
                        ));
                    }
                }
                if let Some((c, _)) = fc.raw.msi {
                    if changed(usize::from(c) + 2, 0x0001) {
                        self.msi_enable_writes += 1;
                        continue;
                    }
                }
                let Some((a, reg, size)) = access else {
                    return Err(format!(
                        "an MMIO access wrote config space of {addr}: {w:?}"
                    ));
                };
                // An ECAM access crossing into the next function is split; compare within it.
                let (lo, hi) = if a == *addr {
                    (usize::from(reg), usize::from(reg) + usize::from(size))
                } else {
                    (0, usize::from(size))
                };
                if start < lo || end > hi {
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
                if let Some(m) = fc.raw.msix {
                    let pages = m.pages(w.index);
                    let first = w.offset / PAGE_SIZE;
                    let last = (w.offset + w.data.len() as u64 - 1) / PAGE_SIZE;
                    if (first..=last).any(|p| pages.contains(&p)) {
                        return Err(format!(
                            "{addr}: BAR write {w:?} reached a page of the MSI-X table/PBA (Xen keeps those read-only for dom0)"
                        ));
                    }
                }
            }
            *seen_b += bw.len();
        }
        Ok(())
    }
}

/// Whether a device write is the bridge's own Interrupt Disable management: the command
/// register as a word ([`pci_host_bridge::backend::set_interrupt_disable`]) of a function that forwards
/// INTx, changing only bit 10, to the state the function wants.
fn is_intx_write(
    f: &PassthroughFunction,
    w: &pci_host_bridge::backend::snapshot::WriteRecord,
) -> bool {
    let Some(i) = f.intx() else { return false };
    if w.offset != pci_host_bridge::header::COMMAND || w.data.len() != 2 || w.before.len() != 2 {
        return false;
    }
    let bit = pci_host_bridge::header::CMD_INTX_DISABLE;
    let d = u16::from_le_bytes([w.data[0], w.data[1]]);
    let b = u16::from_le_bytes([w.before[0], w.before[1]]);
    (d ^ b) & !bit == 0 && i.device_masked() == Some(d & bit != 0)
}
