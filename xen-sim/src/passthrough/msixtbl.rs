//! The msixtbl intercept (xen/arch/x86/hvm/vmsi.c): Xen's handling of guest accesses to bound
//! MSI-X table entries before any ioreq server sees them, its registration per bind, and the
//! completion of a snooped write after the device model answers.

use std::collections::BTreeSet;

use serde_json::json;

use super::{
    neg, Pirq, MAX_MSIX_ACC_ENTRIES, MAX_MSIX_TABLE_ENTRIES, PCI_MSIX_ENTRY_SIZE,
    PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET, PCI_MSIX_VECTOR_BITMASK,
};
use crate::domain::Domain;
use crate::host::Host;

/// One `struct msixtbl_entry` (vmsi.c:151-168): Xen's intercept of a function's MSI-X table
/// at the guest address `gtable`.
#[derive(Clone, Debug)]
pub struct MsixTblEntry {
    /// The function (`entry->pdev`).
    pub sbdf: u32,
    /// Guest physical address of the table.
    pub gtable: u64,
    /// `nr_entries * 16` (vmsi.c:441).
    pub table_len: u64,
    /// Binds counted (`refcnt`).
    pub refcnt: i64,
    /// `table_flags`: entries whose address/data the guest wrote since the last unmask.
    pub table_flags: BTreeSet<u32>,
    /// `gentries[].msi_ad` with `acc_valid`: shadowed address low/high/data of entries 0-2.
    pub gentries: [[Option<u32>; 3]; MAX_MSIX_ACC_ENTRIES],
}

/// `v->arch.hvm.hvm_io.msix_*` of one vCPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuIo {
    /// `msix_snoop_address`.
    pub snoop_address: u64,
    /// `msix_snoop_gpa`.
    pub snoop_gpa: u64,
    /// `msix_unmask_address`.
    pub unmask_address: u64,
    /// `VPF_blocked_in_xen`: waiting for a device model.
    pub blocked: bool,
}

/// What the msixtbl handler did with one access.
pub enum MsixtblResult {
    /// Not an intercepted entry (or Xen declined it): the access goes on to the ioreq servers.
    Forward,
    /// `X86EMUL_OKAY`: handled inside Xen; the value for a read.
    Done(u64),
}

impl Domain {
    pub(super) fn msixtbl_find_desc(&self, sbdf: u32, entry: u32) -> Option<u32> {
        self.pirqs
            .iter()
            .find(|(_, p)| p.sbdf == sbdf && p.msix_entry == Some(entry))
            .map(|(k, _)| *k)
    }

    /// msixtbl_pt_register (vmsi.c:463-531).
    pub(super) fn msixtbl_pt_register(
        &mut self,
        host: &Host,
        p: &Pirq,
        gtable: u64,
    ) -> Result<(), i32> {
        // vmsi.c:474-475.
        if !self.msixtbl_on {
            return Err(neg(libc::ENODEV));
        }
        let entries = host
            .devices
            .get(&p.sbdf)
            .and_then(|d| d.info.msix)
            .map_or(MAX_MSIX_TABLE_ENTRIES, |m| u32::from(m.entries));
        match self.msixtbl.iter_mut().find(|e| e.sbdf == p.sbdf) {
            // vmsi.c:498-509: one entry per function; a later gtable is not recorded.
            Some(e) => e.refcnt += 1,
            None => self.msixtbl.push(MsixTblEntry {
                sbdf: p.sbdf,
                gtable,
                table_len: u64::from(entries) * PCI_MSIX_ENTRY_SIZE,
                refcnt: 1,
                table_flags: BTreeSet::new(),
                gentries: Default::default(),
            }),
        }
        // vmsi.c:514-529: a vCPU blocked on an unmask write of this very entry (snooped by
        // msixtbl_range) gets the unmask applied at completion.
        let gt = self
            .msixtbl
            .iter()
            .find(|e| e.sbdf == p.sbdf)
            .map(|e| e.gtable)
            .expect("just added");
        if let Some(entry) = p.msix_entry {
            let ctrl =
                gt + u64::from(entry) * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET;
            for v in &mut self.vcpu_io {
                if v.blocked && v.snoop_gpa == 0 && v.snoop_address == ctrl {
                    v.unmask_address = v.snoop_address;
                }
            }
        }
        Ok(())
    }

    /// msixtbl_pt_unregister (vmsi.c:534-570) as it is in 4.17:
    /// `if ( !atomic_dec_and_test(&entry->refcnt) ) del_msixtbl_entry(entry);` -- the entry
    /// is deleted when binds REMAIN, and kept (refcnt 0) when the last one goes. (Fixed on
    /// master by ea87662c77 "x86/msix: fix incorrect refcount decrease in msixtlb".)
    pub(super) fn msixtbl_pt_unregister(&mut self, sbdf: u32) {
        if let Some(i) = self.msixtbl.iter().position(|e| e.sbdf == sbdf) {
            self.msixtbl[i].refcnt -= 1;
            if self.msixtbl[i].refcnt != 0 {
                self.msixtbl.remove(i);
                self.note(
                    "msixtbl",
                    json!(
                        "entry deleted although binds remain (vmsi.c:566, the 4.17 refcount bug)"
                    ),
                );
            }
        }
    }

    /// msixtbl_range's decision (vmsi.c:363-431): an MMIO access at `addr` is Xen's when it
    /// falls in a registered table and the entry there has an MSI-X msi_desc (is mapped).
    pub(super) fn msixtbl_lookup(&self, addr: u64) -> Option<(usize, u32, u32)> {
        let (i, e) = self
            .msixtbl
            .iter()
            .enumerate()
            .find(|(_, e)| addr >= e.gtable && addr < e.gtable + e.table_len)?;
        let nr = ((addr - e.gtable) / PCI_MSIX_ENTRY_SIZE) as u32;
        let pirq = self.msixtbl_find_desc(e.sbdf, nr)?;
        Some((i, nr, pirq))
    }

    /// Xen's msixtbl handler for one guest MMIO access (before any ioreq server; it is an
    /// internal handler of hvm_io_intercept, xen/arch/x86/hvm/emulate.c:240-330). Only
    /// single (non-REP, not `data_is_ptr`) accesses are modelled; others are forwarded.
    pub fn msixtbl_access(
        &mut self,
        vcpu: u32,
        addr: u64,
        size: u32,
        write: bool,
        val: u64,
    ) -> MsixtblResult {
        let Some((ti, nr, pirq)) = self.msixtbl_lookup(addr) else {
            // Not accepted. msixtbl_range still snoops an unmask write (vmsi.c:379-400), so
            // that a bind made while the device model handles it applies the unmask.
            if write && (size == 4 || size == 8) {
                let (mut a, mut d) = (addr, val);
                if size == 8 {
                    d >>= 32;
                    a += 4;
                }
                if a & (PCI_MSIX_ENTRY_SIZE - 1) == PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET
                    && d & PCI_MSIX_VECTOR_BITMASK == 0
                {
                    if let Some(v) = self.vcpu_io.get_mut(vcpu as usize) {
                        v.snoop_address = a;
                        v.snoop_gpa = 0;
                    }
                }
            }
            return MsixtblResult::Forward;
        };
        // vmsi.c:226-227 / 287-288: only aligned 4- and 8-byte accesses.
        if (size != 4 && size != 8) || addr & u64::from(size - 1) != 0 {
            return MsixtblResult::Forward;
        }
        let offset = addr & (PCI_MSIX_ENTRY_SIZE - 1);
        if !write {
            return self.msixtbl_read(ti, nr, pirq, offset, size);
        }
        self.msixtbl_write(vcpu, ti, nr, addr, size, val)
    }

    /// msixtbl_read (vmsi.c:216-273): address/data words come from Xen's shadow when the
    /// guest wrote them since registration (entries 0-2 only), else the device model answers;
    /// Vector Control reads Xen's guest_masked.
    pub(super) fn msixtbl_read(
        &self,
        ti: usize,
        nr: u32,
        pirq: u32,
        offset: u64,
        size: u32,
    ) -> MsixtblResult {
        let e = &self.msixtbl[ti];
        let masked = u64::from(self.pirqs[&pirq].guest_masked);
        let mut val = 0u64;
        let mut offset = offset;
        if offset != PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET {
            let index = (offset / 4) as usize;
            let Some(ge) = e.gentries.get(nr as usize) else {
                return MsixtblResult::Forward;
            };
            let Some(w) = ge[index] else {
                return MsixtblResult::Forward;
            };
            val = u64::from(w);
            if size == 8 {
                if index != 0 {
                    offset = PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET;
                } else if let Some(hi) = ge[1] {
                    val |= u64::from(hi) << 32;
                } else {
                    return MsixtblResult::Forward;
                }
            }
        }
        if offset == PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET {
            if size == 4 {
                val = masked;
            } else {
                val |= masked << 32;
            }
        }
        MsixtblResult::Done(val)
    }

    /// msixtbl_write (vmsi.c:275-350): an address/data write is shadowed, marks the entry
    /// modified and is FORWARDED to the device model (a 4-byte one, or an 8-byte one at
    /// offset 0); a Vector Control write is handled in Xen (guest_mask_msi_irq) and not
    /// forwarded -- except an unmask after address/data changed, which is forwarded and
    /// applied at completion (vmsi.c:321-326). An 8-byte write at offset 8 applies the mask
    /// and is forwarded too.
    pub(super) fn msixtbl_write(
        &mut self,
        vcpu: u32,
        ti: usize,
        nr: u32,
        mut addr: u64,
        size: u32,
        mut val: u64,
    ) -> MsixtblResult {
        let offset = addr & (PCI_MSIX_ENTRY_SIZE - 1);
        if offset != PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET {
            let index = (offset / 4) as usize;
            let e = &mut self.msixtbl[ti];
            if let Some(ge) = e.gentries.get_mut(nr as usize) {
                ge[index] = Some(val as u32);
                if size == 8 && index == 0 {
                    ge[1] = Some((val >> 32) as u32);
                }
            }
            e.table_flags.insert(nr);
            if size != 8 || index == 0 {
                return MsixtblResult::Forward;
            }
            val >>= 32;
            addr += 4;
        }
        if val & PCI_MSIX_VECTOR_BITMASK == 0 && self.msixtbl[ti].table_flags.remove(&nr) {
            if let Some(v) = self.vcpu_io.get_mut(vcpu as usize) {
                v.unmask_address = addr;
            }
            return MsixtblResult::Forward;
        }
        let sbdf = self.msixtbl[ti].sbdf;
        if let Some(p) = self.msixtbl_find_desc(sbdf, nr) {
            self.pirqs.get_mut(&p).expect("found").guest_masked =
                val & PCI_MSIX_VECTOR_BITMASK != 0;
        }
        if size == 4 {
            MsixtblResult::Done(0)
        } else {
            MsixtblResult::Forward
        }
    }

    /// msix_write_completion (vmsi.c:605-640), run when the vCPU resumes after a device model
    /// answered (xen/common/ioreq.c:226): an unmask Xen deferred is now applied.
    pub fn msix_write_completion(&mut self, vcpu: u32) {
        let Some(v) = self.vcpu_io.get_mut(vcpu as usize) else {
            return;
        };
        let ctrl = v.unmask_address;
        v.snoop_address = 0;
        v.blocked = false;
        if ctrl == 0 {
            return;
        }
        v.unmask_address = 0;
        if let Some((ti, nr, _)) = self.msixtbl_lookup(ctrl) {
            let _ = self.msixtbl_write(vcpu, ti, nr, ctrl, 4, 0);
        }
    }
}
