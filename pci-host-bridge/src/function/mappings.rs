//! The guest mappings of a [`PassthroughFunction`]'s BARs in Xen: which guest ranges the
//! function decodes now, and the map / unmap calls that make Xen's p2m follow them. Kept
//! apart because it is the only code that changes what the guest reaches without an ioreq.
//!
//! A write touching the command register, a BAR or the ROM makes
//! [`PassthroughFunction::config_write`] return `true`; the owner (the bridge, which knows
//! every function's BARs and resolves guest address overlaps between them) then calls
//! [`PassthroughFunction::update_mappings`], which makes the differences as unmap-then-map
//! actions. The pages of the MSI-X table and PBA are never mapped (they stay trapped, see
//! `bar_access.rs`).

use ioreq_server::executor::{PassthroughExecutor, PtError};
use ioreq_server::guest_warn;

use super::PassthroughFunction;
use crate::bars::BarMapping;
use crate::header;

impl PassthroughFunction {
    /// The guest ranges this function decodes now: `(bar, is_io, start, len)` for every BAR
    /// (6 = ROM) that is placed inside the windows with its decode enabled.
    pub fn decoded_ranges(&self) -> Vec<(u8, bool, u64, u64)> {
        let cmd = self.command();
        let mut v = Vec::new();
        for i in 0..6 {
            let Some(b) = self.bars.bar(i) else { continue };
            if b.guest == 0 {
                continue;
            }
            if b.host.kind == crate::backend::BarKind::Io {
                if cmd & header::CMD_IO != 0 && self.windows.contains_io(b.guest, b.host.size) {
                    v.push((i as u8, true, b.guest, b.host.size));
                }
            } else if cmd & header::CMD_MEMORY != 0
                && self.windows.contains_mmio(b.guest, b.emu_size)
            {
                v.push((i as u8, false, b.guest, b.emu_size));
            }
        }
        if let Some(r) = self.bars.rom() {
            if cmd & header::CMD_MEMORY != 0
                && self.bars.rom_enabled()
                && r.guest != 0
                && self.windows.contains_mmio(r.guest, r.emu_size)
            {
                v.push((6, false, r.guest, r.emu_size));
            }
        }
        v
    }

    /// Recompute the mappings, leaving out the BARs in `blocked` (6 = ROM; the bridge blocks
    /// BARs whose guest ranges overlap another decoded BAR), and make the differences in Xen
    /// (unmaps first). Only what Xen did is recorded: a mapping Xen refused is left out (its
    /// accesses then arrive as ioreqs and are forwarded), an unmapping Xen refused stays.
    pub fn update_mappings(&mut self, blocked: &[u8], exec: &mut PassthroughExecutor) {
        let msix = self.caps.msix;
        let trapped = move |bar: u8| msix.map(|m| m.trapped_pages(bar)).unwrap_or_default();
        let mut desired = self
            .bars
            .desired_mappings(self.command(), &self.windows, &trapped);
        desired.retain(|m| {
            let bar = match m {
                BarMapping::Mem { bar, .. } | BarMapping::Io { bar, .. } => *bar,
            };
            !blocked.contains(&bar)
        });
        let guest = self.guest;
        let mut now = Vec::new();
        for m in std::mem::take(&mut self.mapped) {
            if desired.contains(&m) {
                now.push(m);
                continue;
            }
            tracing::debug!(guest = %guest, mapping = ?m, "unmap");
            if let Err(e) = unmap(&m, exec) {
                guest_warn!(self.warn, "{guest}: Xen refused to unmap {m:?}: {e}");
                now.push(m);
            }
        }
        for m in desired {
            if now.contains(&m) {
                continue;
            }
            tracing::debug!(guest = %guest, mapping = ?m, "map");
            match map(&m, exec) {
                Ok(()) => now.push(m),
                Err(e) => guest_warn!(
                    self.warn,
                    "{guest}: Xen refused to map {m:?}: {e}; its accesses are forwarded instead"
                ),
            }
        }
        self.mapped = now;
    }

    /// Remove every mapping (at shutdown); the ones Xen refused to remove stay recorded.
    pub fn unmap_all(&mut self, exec: &mut PassthroughExecutor) {
        let mut left = Vec::new();
        for m in std::mem::take(&mut self.mapped) {
            if let Err(e) = unmap(&m, exec) {
                tracing::error!(guest = %self.guest, mapping = ?m, "unmapping failed: {e}");
                left.push(m);
            }
        }
        self.mapped = left;
    }
}

fn map(m: &BarMapping, exec: &mut PassthroughExecutor) -> Result<(), PtError> {
    match *m {
        BarMapping::Mem { gfn, mfn, nr, .. } => exec.map_memory(gfn, mfn, nr),
        BarMapping::Io {
            gport, mport, nr, ..
        } => exec.map_ioports(gport, mport, nr),
    }
}

pub(super) fn unmap(m: &BarMapping, exec: &mut PassthroughExecutor) -> Result<(), PtError> {
    match *m {
        BarMapping::Mem { gfn, .. } => exec.unmap_memory(gfn),
        BarMapping::Io { gport, .. } => exec.unmap_ioports(gport),
    }
}
