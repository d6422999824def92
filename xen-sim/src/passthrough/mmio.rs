//! Guest memory and I/O port mappings of passed-through resources: `memory_mapping` (at most
//! `MAP_MMIO_MAX_ITER` iterations per call, unmap of any sub-range, a different mfn crashes the
//! guest), `iomem_permission`, `ioport_mapping`, and the p2m queries the guest side uses.

use serde_json::json;

use super::{neg, MAP_MMIO_MAX_ITER};
use crate::domain::Domain;
use crate::host::Host;

impl Domain {
    /// Whether every frame of `[first, last]` (guest physical bytes) is mapped in the p2m.
    pub fn p2m_mapped(&self, first: u64, last: u64) -> bool {
        let (a, b) = (first >> 12, last >> 12);
        (a..=b).all(|g| self.p2m.contains_key(&g))
    }

    /// The host address behind guest address `gpa`, if mapped.
    pub fn p2m_translate(&self, gpa: u64) -> Option<u64> {
        self.p2m
            .get(&(gpa >> 12))
            .map(|m| (m << 12) | (gpa & 0xFFF))
    }

    pub(super) fn iomem_permitted(&self, mfn: u64, last: u64) -> bool {
        // rangeset_contains_range: one range must hold all of it.
        self.iomem.iter().any(|&(a, b)| a <= mfn && last <= b)
    }

    pub(super) fn iomem_change(&mut self, first: u64, last: u64, allow: bool) {
        let mut out = Vec::new();
        for &(a, b) in &self.iomem {
            if b < first || last < a {
                out.push((a, b));
                continue;
            }
            if allow {
                out.push((a.min(first), b.max(last)));
                continue;
            }
            if a < first {
                out.push((a, first - 1));
            }
            if last < b {
                out.push((last + 1, b));
            }
        }
        if allow && !out.iter().any(|&(a, b)| a <= first && last <= b) {
            out.push((first, last));
        }
        out.sort_unstable();
        // merge overlaps and neighbours
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in out {
            match merged.last_mut() {
                Some(m) if a <= m.1.saturating_add(1) => m.1 = m.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.iomem = merged;
    }

    /// `XEN_DOMCTL_memory_mapping` (xen/common/domctl.c:445-503) with x86's
    /// `map_mmio_regions` / `unmap_mmio_regions` (xen/arch/x86/mm/p2m.c:1670-1740).
    /// Ok(0) when all `nr` frames were done, Ok(i) (positive) when only the first `i` were.
    pub fn memory_mapping(
        &mut self,
        host: &Host,
        gfn: u64,
        mfn: u64,
        nr: u64,
        add: bool,
    ) -> Result<u64, i32> {
        // domctl.c:453-457: wrap of mfn or gfn, or an mfn beyond paddr_bits (52 here).
        let Some(mfn_end) = mfn.checked_add(nr.wrapping_sub(1)).filter(|_| nr > 0) else {
            return Err(neg(libc::EINVAL));
        };
        if (mfn | mfn_end) >> (52 - 12) != 0 || gfn.checked_add(nr - 1).is_none() {
            return Err(neg(libc::EINVAL));
        }
        // domctl.c:472-475: dom0 and the guest must both hold iomem permission for the range
        // (XEN_DOMCTL_iomem_permission); the whole range, else EPERM and nothing is done.
        if !self.iomem_permitted(mfn, mfn_end) {
            self.note(
                "xen",
                json!("no iomem_permission for the range (domctl.c:472-475)"),
            );
            return Err(neg(libc::EPERM));
        }
        let mut i = 0u64;
        let mut iter = 0u64;
        let mut ret = 0i32;
        // p2m.c:1687-1704: at most MAP_MMIO_MAX_ITER iterations; one iteration is one 4K
        // frame, or one 2M page when gfn and mfn are both 2M-aligned there and at least 2M
        // remain (mmio_order, p2m.c:1642-1668; HAP, no 1G pages) and no frame of it is an
        // MSI-X table/PBA page (set_mmio_p2m_entry, p2m.c:1144-1150).
        while i < nr && iter < MAP_MMIO_MAX_ITER {
            let (g, m) = (gfn + i, mfn + i);
            let big = (g | m) & 511 == 0 && nr - i >= 512;
            let r = if add {
                let order_2m = big && !host.mmio_ro(m, 512);
                self.set_mmio(g, m, if order_2m { 512 } else { 1 })
            } else {
                self.clear_mmio(g, m, if big { 512 } else { 1 })
            };
            match r {
                Ok(n) => i += n,
                Err(e) => {
                    ret = e;
                    break;
                }
            }
            iter += 1;
        }
        // p2m.c:1704/1739: `return i == nr ? 0 : i ?: ret;`
        if i == nr {
            Ok(0)
        } else if i > 0 {
            Ok(i)
        } else {
            Err(ret)
        }
    }

    /// `set_mmio_p2m_entry` -> `set_typed_p2m_entry` (p2m.c:1021-1066) for `n` frames (1 or
    /// 512): an existing mmio_direct entry must be the same mfn (then nothing changes),
    /// otherwise "GFN ... not permitted", the domain is crashed and EPERM returned. RAM under
    /// the frames is replaced. Returns the frames done.
    pub(super) fn set_mmio(&mut self, g: u64, m: u64, n: u64) -> Result<u64, i32> {
        if n > 1 && (g..g + n).any(|x| self.p2m.contains_key(&x)) {
            // cur_order < order: retry at 4K (p2m.c:1041-1045).
            return self.set_mmio(g, m, 1);
        }
        if let Some(&old) = self.p2m.get(&g) {
            if old != m {
                let msg = format!(
                    "d{}: GFN {g:#x} ({old:#x},0,p2m_mmio_direct) -> ({m:#x},0,p2m_mmio_direct) not permitted",
                    self.domid
                );
                tracing::error!("sim (Xen): {msg}; crashing domain");
                self.report.crashed.get_or_insert(msg.clone());
                self.note("xen_crash", json!(msg));
                return Err(neg(libc::EPERM));
            }
            return Ok(1);
        }
        for k in 0..n {
            self.p2m.insert(g + k, m + k);
        }
        if n > 1 {
            self.p2m_superpages.insert(g);
        }
        Ok(n)
    }

    /// `clear_mmio_p2m_entry` (p2m.c:1163-1199): the gfn must hold an mmio_direct entry, else
    /// EINVAL; a different mfn is only logged ("no mapping between mfn and gfn") and the entry
    /// is still removed. A 2M unmap needs a 2M entry (else retried at 4K); a 4K unmap inside a
    /// 2M entry splits it.
    pub(super) fn clear_mmio(&mut self, g: u64, m: u64, n: u64) -> Result<u64, i32> {
        if n > 1 && !self.p2m_superpages.contains(&g) {
            return self.clear_mmio(g, m, 1);
        }
        let Some(&old) = self.p2m.get(&g) else {
            self.note(
                "xen",
                json!(format!("gfn_to_mfn failed! gfn={g:08x} (p2m.c:1185-1190)")),
            );
            return Err(neg(libc::EINVAL));
        };
        if old != m {
            self.note(
                "xen",
                json!(format!(
                    "no mapping between mfn {m:08x} and gfn {g:08x} (p2m.c:1192-1195): removed anyway"
                )),
            );
        }
        if n == 1 {
            let sp = g & !511;
            self.p2m_superpages.remove(&sp);
        } else {
            self.p2m_superpages.remove(&g);
        }
        for k in 0..n {
            self.p2m.remove(&(g + k));
        }
        Ok(n)
    }

    /// `XEN_DOMCTL_ioport_mapping` (xen/arch/x86/domctl.c:600-700): ports beyond 0xFFFF are
    /// EINVAL; an add replaces the entry with the same machine port or adds one; a remove
    /// drops the entry with that machine port if there is one and succeeds either way. The
    /// guest's accesses to mapped ports are then done by Xen on the host ports
    /// (g2m_portio_accept/read/write, xen/arch/x86/hvm/io.c:182-268), never sent to a device
    /// model.
    pub(super) fn ioport_mapping(
        &mut self,
        gport: u32,
        mport: u32,
        nr: u32,
        add: bool,
    ) -> Result<(), i32> {
        const MAX_IOPORTS: u32 = 0x10000;
        if (gport | mport | nr.wrapping_sub(1)) >= MAX_IOPORTS
            || gport + nr > MAX_IOPORTS
            || mport + nr > MAX_IOPORTS
        {
            return Err(neg(libc::EINVAL));
        }
        if let Some(i) = self.ioport_map.iter().position(|m| m.1 == mport) {
            if add {
                self.ioport_map[i] = (gport, mport, nr);
            } else {
                self.ioport_map.remove(i);
            }
        } else if add {
            self.ioport_map.push((gport, mport, nr));
        }
        Ok(())
    }

    /// Whether a guest port access of `size` bytes at `port` hits a g2m_ioport mapping
    /// (g2m_portio_find_and_lock, xen/arch/x86/hvm/io.c:160-180).
    pub fn ioport_mapped(&self, port: u64, size: u32) -> bool {
        self.ioport_map.iter().any(|&(g, _, n)| {
            port >= u64::from(g) && port + u64::from(size) <= u64::from(g) + u64::from(n)
        })
    }
}
