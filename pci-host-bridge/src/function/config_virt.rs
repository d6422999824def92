//! Config-space virtualization of a [`PassthroughFunction`]: guest config reads and writes
//! against its [`Layout`](crate::config_space::Layout). Kept apart because it is the one
//! place where bytes are split, merged and written through, and its rules are the ones the
//! register-descriptor model ([`crate::config_space`]) promises.
//!
//! Config accesses of any size (1..=8 bytes) at any offset are split into bytes against the
//! layout:
//! - read: emulated bits from the virtual value, the rest from the device (one backend read of
//!   the bytes that need the device), all-ones past the backend's config space;
//! - write: emulated, guest-writable bits update the virtual value; pass-through bits are merged
//!   into the device's current value (W1C bits not written by the guest become 0) and written in
//!   naturally aligned pieces covering only bytes that have pass-through bits; everything else
//!   is dropped (and logged, rate-limited, for unknown, hidden or opaque bytes).
//!
//! A write's consequences elsewhere are left to the other files: the BAR and ROM registers go
//! to [`crate::bars`] (and the return value asks the owner to remap, see `mappings.rs`), and
//! the interrupts are reconciled afterwards (`interrupts.rs`).

use ioreq_server::executor::PassthroughExecutor;
use ioreq_server::guest_warn;

use super::PassthroughFunction;
use crate::config_space::{RegKind, Slot};

/// Split `[start, end)` into naturally aligned 1/2/4-byte pieces.
fn aligned_pieces(start: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut o = start;
    std::iter::from_fn(move || {
        if o >= end {
            return None;
        }
        let size = if o.is_multiple_of(4) && end - o >= 4 {
            4
        } else if o.is_multiple_of(2) && end - o >= 2 {
            2
        } else {
            1
        };
        let piece = (o, size);
        o += size;
        Some(piece)
    })
}

impl PassthroughFunction {
    /// Read `len` (1..=8) bytes of config space at `reg` (bytes past 4095 read all-ones).
    pub fn config_read(&mut self, reg: u16, len: usize) -> u64 {
        let len = len.clamp(1, 8);
        let start = usize::from(reg);
        let mut need: Option<(usize, usize)> = None;
        for off in start..start + len {
            let r = self.layout.rule(off);
            let needs = match r.slot {
                Slot::Unknown => true,
                Slot::Absent | Slot::Hidden => false,
                Slot::Reg(_) => r.emu != 0xFF,
            };
            if needs {
                need = Some(need.map_or((off, off), |(a, _)| (a, off)));
            }
        }
        let mut dev_bytes = [0xFFu8; 8];
        if let Some((a, b)) = need {
            let buf = &mut dev_bytes[a - start..=b - start];
            if let Err(e) = self.dev.read_config(a as u16, buf) {
                buf.fill(0xFF);
                guest_warn!(
                    self.warn,
                    "{}: config read at {a:#x} failed: {e}",
                    self.guest
                );
            }
        }
        let mut v = 0u64;
        for (i, off) in (start..start + len).enumerate() {
            let byte = match self.layout.slot(off) {
                Slot::Absent => 0xFF,
                Slot::Hidden => 0,
                Slot::Unknown => dev_bytes[i],
                Slot::Reg(idx) => {
                    let inst = self.layout.reg(usize::from(idx));
                    let shift = 8 * (off - usize::from(inst.base)) as u32;
                    let virt = match inst.desc.kind {
                        RegKind::Bar(n) => self.bars.read(usize::from(n)),
                        RegKind::Rom => self.bars.read_rom(),
                        _ => inst.virt,
                    };
                    let emu = (inst.desc.masks().0 >> shift) as u8;
                    (dev_bytes[i] & !emu) | ((virt >> shift) as u8 & emu)
                }
            };
            v |= u64::from(byte) << (8 * i);
        }
        v
    }

    /// Write `len` (1..=8) bytes of `data` at `reg`, (re)binding interrupts as the write
    /// implies. Returns whether the guest mappings may have changed (command, BAR or ROM
    /// written): then call [`PassthroughFunction::update_mappings`].
    pub fn config_write(
        &mut self,
        reg: u16,
        len: usize,
        data: u64,
        exec: &mut PassthroughExecutor,
    ) -> bool {
        let len = len.clamp(1, 8);
        let start = usize::from(reg);
        // (offset, guest byte, pass mask, w1c mask) of bytes with pass-through bits.
        let mut pass: Vec<(usize, u8, u8, u8)> = Vec::new();
        // BAR register writes: (kind, byte mask, value) merged per register.
        let mut bar_writes: Vec<(RegKind, u32, u32)> = Vec::new();
        let mut remap = false;
        let mut msi_ctrl = None;
        let msix_before = self.msix_control();
        for (i, off) in (start..start + len).enumerate() {
            let d = (data >> (8 * i)) as u8;
            let idx = match self.layout.slot(off) {
                Slot::Reg(idx) => usize::from(idx),
                Slot::Unknown | Slot::Absent => {
                    self.drop_write(off, d, "unknown");
                    continue;
                }
                Slot::Hidden => {
                    self.drop_write(off, d, "hidden");
                    continue;
                }
            };
            let (kind, base, (emu, ro, pmask, w1c)) = {
                let inst = self.layout.reg(idx);
                (inst.desc.kind, usize::from(inst.base), inst.desc.masks())
            };
            let shift = 8 * (off - base) as u32;
            match kind {
                RegKind::Opaque => {
                    self.drop_write(off, d, "vendor-specific");
                    continue;
                }
                RegKind::Bar(_) | RegKind::Rom => {
                    let m = 0xFFu32 << shift;
                    let v = u32::from(d) << shift;
                    match bar_writes.iter_mut().find(|(k, _, _)| *k == kind) {
                        Some(w) => {
                            w.1 |= m;
                            w.2 = (w.2 & !m) | v;
                        }
                        None => bar_writes.push((kind, m, v)),
                    }
                    remap = true;
                    continue;
                }
                RegKind::Command => remap = true,
                RegKind::MsiControl => msi_ctrl = Some(idx),
                _ => {}
            }
            let (emu, ro, pmask, w1c) = (
                (emu >> shift) as u8,
                (ro >> shift) as u8,
                (pmask >> shift) as u8,
                (w1c >> shift) as u8,
            );
            let writable = emu & !ro;
            if writable != 0 {
                let clear = writable & w1c & d;
                let set = writable & !w1c;
                let inst = self.layout.reg_mut(idx);
                let vb = (inst.virt >> shift) as u8;
                let nb = (vb & !set & !clear) | (d & set);
                inst.virt = (inst.virt & !(0xFF << shift)) | (u32::from(nb) << shift);
            }
            if pmask != 0 {
                pass.push((off, d, pmask, w1c));
            }
        }
        if let Some(idx) = msi_ctrl {
            let inst = self.layout.reg_mut(idx);
            inst.virt = crate::msi::clamp_control(inst.virt);
        }
        for (kind, mask, value) in bar_writes {
            match kind {
                RegKind::Bar(n) => {
                    let cur = self.bars.read(usize::from(n));
                    self.bars
                        .write(usize::from(n), (cur & !mask) | (value & mask));
                }
                _ => {
                    let cur = self.bars.read_rom();
                    self.bars.write_rom((cur & !mask) | (value & mask));
                }
            }
        }
        self.write_through(&pass);
        let msix_after = self.msix_control();
        if msix_before.is_some_and(|b| b.enabled) && !msix_after.is_some_and(|a| a.enabled) {
            // MSI-X disabled: every entry is unbound (below); our copy of the mask bits may
            // be stale (Xen took the guest's mask writes of bound entries), and Linux masks
            // every entry before disabling anyway.
            if let Some(t) = &mut self.msix {
                for i in 0..t.len() {
                    t.set_masked(i, true);
                }
            }
        }
        self.sync_interrupts(exec);
        if msix_before != msix_after {
            self.write_host_msix_control();
        }
        remap
    }

    fn drop_write(&mut self, off: usize, d: u8, what: &str) {
        let guest = self.guest;
        guest_warn!(
            self.warn,
            "{guest}: guest write {d:#04x} to {what} config byte {off:#x} dropped"
        );
    }

    /// Merge and write the pass-through bytes, run by run of consecutive offsets.
    fn write_through(&mut self, pass: &[(usize, u8, u8, u8)]) {
        let mut i = 0;
        while i < pass.len() {
            let mut j = i + 1;
            while j < pass.len() && pass[j].0 == pass[j - 1].0 + 1 {
                j += 1;
            }
            let run = &pass[i..j];
            let a = run[0].0;
            let mut cur = vec![0u8; run.len()];
            if let Err(e) = self.dev.read_config(a as u16, &mut cur) {
                // Without the current value a merge could change bits the guest does not own.
                guest_warn!(
                    self.warn,
                    "{}: config read at {a:#x} failed, write dropped: {e}",
                    self.guest
                );
                i = j;
                continue;
            }
            let out: Vec<u8> = run
                .iter()
                .zip(&cur)
                .map(|(&(_, d, p, w), &c)| (c & !p & !w) | (d & p))
                .collect();
            for (o, size) in aligned_pieces(a, a + run.len()) {
                let k = o - a;
                let piece = &out[k..k + size];
                // Skip a piece that neither changes a non-W1C bit nor clears a W1C bit.
                let unchanged = run[k..k + size]
                    .iter()
                    .zip(piece.iter().zip(&cur[k..k + size]))
                    .all(|(r, (&o, &c))| (o ^ c) & !r.3 == 0 && o & r.3 == 0);
                if unchanged {
                    continue;
                }
                if let Err(e) = self.dev.write_config(o as u16, piece) {
                    guest_warn!(
                        self.warn,
                        "{}: config write at {o:#x} failed: {e}",
                        self.guest
                    );
                }
            }
            i = j;
        }
    }
}
