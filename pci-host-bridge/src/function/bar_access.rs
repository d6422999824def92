//! The BAR accesses of a [`PassthroughFunction`] that reach us as ioreqs: the MSI-X table
//! and PBA emulated, everything else forwarded to the device. Kept apart because these are
//! the guest's MMIO paths, with their own rules for what Xen lets dom0 do.
//!
//! BAR accesses that reach us (the MSI-X table and PBA pages, sub-page BARs, anything Xen did
//! not map) are forwarded to the device with one access of the guest's width, except writes
//! to the MSI-X table and PBA pages outside the table and PBA themselves: Xen 4.17 puts those
//! pages in `mmio_ro_ranges` (`msix_capability_init`, xen/arch/x86/msi.c), so dom0's mapping of
//! them is read-only and such a write would fault; it is dropped with a warning.
//!
//! An unmask written to the MSI-X table (re)binds its entry here, through the rules of
//! `interrupts.rs`.

use ioreq_server::executor::PassthroughExecutor;
use ioreq_server::guest_warn;

use super::PassthroughFunction;
use crate::binding::IrqSlot;
use crate::header;
use crate::msix;

impl PassthroughFunction {
    /// Whether an MMIO access at `[addr, addr + len)` belongs to a decoded BAR of this function.
    pub fn claims_mmio(&self, addr: u64, len: usize) -> bool {
        self.command() & header::CMD_MEMORY != 0
            && self
                .bars
                .find_mem(addr, len as u64, &self.windows)
                .is_some()
    }

    /// An MMIO read that arrived (the page is not mapped): MSI-X table and PBA emulation,
    /// otherwise forwarded to the device's BAR. `None` if no decoded BAR of this function
    /// covers the access.
    pub fn mmio_read(&mut self, addr: u64, len: usize) -> Option<u64> {
        if self.command() & header::CMD_MEMORY == 0 {
            return None;
        }
        let (bar, off) = self.bars.find_mem(addr, len as u64, &self.windows)?;
        let len = len.clamp(1, 8);
        let l = len as u64;
        if let Some(t) = &self.msix {
            let info = *t.info();
            if bar == info.table_bar && overlaps(off, l, info.table_offset, info.table_len()) {
                let rel = off.wrapping_sub(info.table_offset);
                if off >= info.table_offset
                    && off + l <= info.table_offset + info.table_len()
                    && msix::access_ok(rel, len)
                {
                    return Some(t.read(rel, len));
                }
                guest_warn!(self.warn, "{}: MSI-X table access of {len} bytes at {off:#x} is not an aligned DWORD/QWORD inside the table: reads all-ones", self.guest);
                return Some(u64::MAX);
            }
            if bar == info.pba_bar && overlaps(off, l, info.pba_offset, info.pba_len()) {
                let rel = off.wrapping_sub(info.pba_offset);
                if off >= info.pba_offset
                    && off + l <= info.pba_offset + info.pba_len()
                    && msix::access_ok(rel, len)
                {
                    return Some(self.bar_read(bar, off, len).unwrap_or(0));
                }
                guest_warn!(self.warn, "{}: MSI-X PBA access of {len} bytes at {off:#x} is not an aligned DWORD/QWORD inside the PBA: reads all-ones", self.guest);
                return Some(u64::MAX);
            }
        }
        Some(self.bar_read(bar, off, len).unwrap_or(u64::MAX))
    }

    /// An MMIO write that arrived, see [`PassthroughFunction::mmio_read`]; an unmask in the
    /// MSI-X table (re)binds its entry (see [`crate::msix`] for why address/data writes are
    /// only latched and mask writes never unbind). Returns whether a decoded BAR of this
    /// function covers the access.
    pub fn mmio_write(
        &mut self,
        addr: u64,
        len: usize,
        data: u64,
        exec: &mut PassthroughExecutor,
    ) -> bool {
        if self.command() & header::CMD_MEMORY == 0 {
            return false;
        }
        let Some((bar, off)) = self.bars.find_mem(addr, len as u64, &self.windows) else {
            return false;
        };
        let len = len.clamp(1, 8);
        let l = len as u64;
        let guest = self.guest;
        if let Some(info) = self.msix.as_ref().map(|t| *t.info()) {
            if bar == info.table_bar && overlaps(off, l, info.table_offset, info.table_len()) {
                let rel = off.wrapping_sub(info.table_offset);
                if off >= info.table_offset
                    && off + l <= info.table_offset + info.table_len()
                    && msix::access_ok(rel, len)
                {
                    if let Some(t) = &mut self.msix {
                        t.write(rel, len, data);
                    }
                    // An aligned DWORD or QWORD lies inside one 16-byte entry; does it cover
                    // Vector Control (bytes 12..16)?
                    let i = (rel / msix::ENTRY_SIZE) as usize;
                    let in_entry = rel % msix::ENTRY_SIZE;
                    let ctrl = in_entry + l > 12;
                    let unmasked = self
                        .msix
                        .as_ref()
                        .and_then(|t| t.entry(i))
                        .is_some_and(|e| !e.masked);
                    if ctrl && unmasked {
                        let want = self.msix_vector(i);
                        let slot = IrqSlot::Msix(i as u32);
                        if want.is_some() {
                            if let Err(e) = self.bindings.sync(slot, want, exec) {
                                if let Some(t) = &mut self.msix {
                                    if self.bindings.get(slot).is_none() {
                                        t.set_masked(i, true);
                                    }
                                }
                                self.refused(format!("MSI-X entry {i}"), &e);
                            }
                        }
                    }
                } else {
                    guest_warn!(self.warn, "{guest}: MSI-X table write of {len} bytes at {off:#x} is not an aligned DWORD/QWORD inside the table: dropped");
                }
                return true;
            }
            if bar == info.pba_bar && overlaps(off, l, info.pba_offset, info.pba_len()) {
                guest_warn!(
                    self.warn,
                    "{guest}: write to the read-only MSI-X PBA dropped"
                );
                return true;
            }
            let page = off / crate::bars::PAGE_SIZE;
            let on_trapped_page = [
                (info.table_bar, info.table_offset, info.table_len()),
                (info.pba_bar, info.pba_offset, info.pba_len()),
            ]
            .iter()
            .any(|&(b, o, n)| {
                b == bar
                    && page >= o / crate::bars::PAGE_SIZE
                    && page <= (o + n.max(1) - 1) / crate::bars::PAGE_SIZE
            });
            if on_trapped_page {
                // Xen maps these pages read-only for dom0 (mmio_ro_ranges): a write would fault.
                guest_warn!(self.warn, "{guest}: write of {len} bytes at BAR {bar} + {off:#x} (a page Xen keeps read-only for the MSI-X table or PBA) dropped");
                return true;
            }
        }
        let size = self.bars.bar(usize::from(bar)).map_or(0, |b| b.host.size);
        if off + l <= size {
            let bytes = data.to_le_bytes();
            if let Err(e) = self.dev.write_bar(bar, off, &bytes[..len]) {
                guest_warn!(self.warn, "{guest}: BAR {bar} write forwarding failed: {e}");
            }
        }
        true
    }

    fn bar_read(&mut self, bar: u8, off: u64, len: usize) -> Option<u64> {
        let size = self.bars.bar(usize::from(bar)).map_or(0, |b| b.host.size);
        if off + len as u64 > size {
            return None;
        }
        let mut buf = [0u8; 8];
        match self.dev.read_bar(bar, off, &mut buf[..len]) {
            Ok(()) => Some(u64::from_le_bytes(buf)),
            Err(e) => {
                guest_warn!(
                    self.warn,
                    "{}: BAR {bar} read forwarding failed: {e}",
                    self.guest
                );
                None
            }
        }
    }
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}
