//! What Xen 4.17 does with a device model's passthrough hypercalls, rule by rule, each with
//! the source lines of branch `stable-4.17` of xen-project/xen it models:
//!
//! - `memory_mapping`: at most 64 iterations per call, the positive count done when not all
//!   were done; unmap of any sub-range; mapping over a different mfn crashes the guest;
//!   `iomem_permission` first.
//! - ownership of host functions (hardware domain / guest / dom_io), assignment only with an
//!   IOMMU context, quarantine on deassign and on the domain's death.
//! - `prepare_msix` / `release_msix` and the MSI-X `map_pirq` precondition (ENODATA), the
//!   `table_base` comparison and the path on which Xen makes it.
//! - `bind_pt_irq`: first bind vs rebind, gtable registered once, UNMASKED that never masks.
//! - the msixtbl intercept of bound MSI-X entries (guest accesses handled before any ioreq
//!   server), with its completion after the device model answers.
//! - delivery of a bound device interrupt only with the physical Enable bit set.

use std::collections::BTreeSet;

use serde_json::json;
use xen_abi::passthrough::PtOp;
use xen_abi::*;

use crate::domain::Domain;
use crate::host::{Host, Owner, MSIX_ENABLE, MSIX_MASKALL, MSI_ENABLE};

/// `MAP_MMIO_MAX_ITER` (xen/arch/x86/mm/p2m.c:1670).
pub const MAP_MMIO_MAX_ITER: u64 = 64;
/// `MAX_MSIX_TABLE_ENTRIES`.
const MAX_MSIX_TABLE_ENTRIES: u32 = 2048;
/// `MAX_MSIX_ACC_ENTRIES` (vmsi.c:160): entries whose address/data Xen shadows.
const MAX_MSIX_ACC_ENTRIES: usize = 3;
/// `MAX_MSI_IRQS`.
const MAX_MSI_IRQS: u32 = 32;
const PCI_MSIX_ENTRY_SIZE: u64 = 16;
const PCI_MSIX_ENTRY_VECTOR_CTRL_OFFSET: u64 = 12;
const PCI_MSIX_VECTOR_BITMASK: u64 = 1;

fn neg(e: i32) -> i32 {
    -e
}

/// One mapped pirq (`struct pirq` + its `msi_desc` and `hvm_pirq_dpci`).
#[derive(Clone, Debug)]
pub struct Pirq {
    /// The function.
    pub sbdf: u32,
    /// `Some(entry_nr)` for MSI-X, `None` for MSI (then `index` is the vector of the block).
    pub msix_entry: Option<u32>,
    /// Vector index inside a multi-message MSI block.
    pub index: u32,
    /// `msi_attrib.guest_masked` (msi.c:923 for MSI-X: set at map; msi.c:642 for MSI: clear).
    pub guest_masked: bool,
    /// `HVM_IRQ_DPCI_MAPPED` with `gmsi.gvec` / `gmsi.gflags` (UNMASKED stripped).
    pub bind: Option<(u8, u32)>,
}

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
    fn note(&mut self, k: &str, v: serde_json::Value) {
        self.notes.insert(k.into(), v);
    }

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

    fn iomem_permitted(&self, mfn: u64, last: u64) -> bool {
        // rangeset_contains_range: one range must hold all of it.
        self.iomem.iter().any(|&(a, b)| a <= mfn && last <= b)
    }

    fn iomem_change(&mut self, first: u64, last: u64, allow: bool) {
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
    fn set_mmio(&mut self, g: u64, m: u64, n: u64) -> Result<u64, i32> {
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
    fn clear_mmio(&mut self, g: u64, m: u64, n: u64) -> Result<u64, i32> {
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

    /// Xen's handling of one passthrough domctl / physdev op from dom0. `Ok(value)`: the pirq
    /// of map_pirq, the partial count of memory_mapping, max_pages of getdomaininfo (done by
    /// the hypervisor, which sees every domain), else 0.
    pub fn passthrough(&mut self, host: &mut Host, op: &PtOp) -> Result<u64, i32> {
        self.notes.clear();
        // De-quarantine names DOMID_IO, not this domain (domctl.c:338-347): it works whatever
        // became of the guest.
        if let PtOp::DeassignDevice {
            sbdf,
            from_dom_io: true,
        } = *op
        {
            return deassign_from_dom_io(host, sbdf);
        }
        // prepare/release_msix name a function, not a domain (physdev.c:483-494).
        match *op {
            PtOp::PrepareMsix { sbdf } => return prepare_msix(host, sbdf, false),
            PtOp::ReleaseMsix { sbdf } => return prepare_msix(host, sbdf, true),
            _ => {}
        }
        // A destroyed domain: rcu_lock_domain_by_id fails, ESRCH (domctl.c:366-369;
        // physdev_map_pirq, physdev.c:109-111).
        if self.dead {
            return Err(neg(libc::ESRCH));
        }
        match *op {
            PtOp::MemoryMapping { gfn, mfn, nr, add } => {
                self.memory_mapping(host, gfn, mfn, nr, add)
            }
            PtOp::IoportMapping {
                gport,
                mport,
                nr,
                add,
            } => self.ioport_mapping(gport, mport, nr, add).map(|()| 0),
            PtOp::IomemPermission { mfn, nr, allow } => {
                // domctl.c:417-442: the range is added to / removed from iomem_caps; existing
                // p2m entries stay (removing permission unmaps nothing).
                if nr == 0 || mfn.checked_add(nr - 1).is_none() {
                    return Err(neg(libc::EINVAL));
                }
                self.iomem_change(mfn, mfn + nr - 1, allow);
                Ok(0)
            }
            PtOp::IoportPermission { .. } | PtOp::IrqPermission { .. } => Ok(0),
            PtOp::AssignDevice { sbdf } => self.assign(host, sbdf, false),
            PtOp::TestAssignDevice { sbdf } => self.assign(host, sbdf, true),
            PtOp::DeassignDevice { sbdf, .. } => self.deassign(host, sbdf),
            // getdomaininfo needs every domain: answered by the hypervisor.
            PtOp::GetDomainInfo => Ok(self.ram_size / XEN_PAGE_SIZE as u64),
            PtOp::PrepareMsix { .. } | PtOp::ReleaseMsix { .. } => unreachable!("handled above"),
            PtOp::MapPirqMsi {
                sbdf,
                entry,
                table_base,
                nvec,
            } => self
                .map_pirq(host, sbdf, entry, table_base, nvec)
                .map(u64::from),
            PtOp::UnmapPirq { pirq } => self.unmap_pirq(host, pirq).map(|()| 0),
            PtOp::BindPtIrqMsi {
                pirq,
                gvec,
                gflags,
                gtable,
                ..
            } => self
                .bind_pt_irq(host, pirq, gvec, gflags, gtable)
                .map(|()| 0),
            PtOp::UnbindPtIrqMsi { pirq, .. } => self.unbind_pt_irq(pirq).map(|()| 0),
        }
    }

    /// `XEN_DOMCTL_ioport_mapping` (xen/arch/x86/domctl.c:600-700): ports beyond 0xFFFF are
    /// EINVAL; an add replaces the entry with the same machine port or adds one; a remove
    /// drops the entry with that machine port if there is one and succeeds either way. The
    /// guest's accesses to mapped ports are then done by Xen on the host ports
    /// (g2m_portio_accept/read/write, xen/arch/x86/hvm/io.c:182-268), never sent to a device
    /// model.
    fn ioport_mapping(&mut self, gport: u32, mport: u32, nr: u32, add: bool) -> Result<(), i32> {
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

    /// `XEN_DOMCTL_assign_device` / `test_assign_device`: iommu_do_domctl
    /// (xen/drivers/passthrough/iommu.c:615-634) and iommu_do_pci_domctl
    /// (xen/drivers/passthrough/pci.c:1612-1657).
    fn assign(&mut self, host: &mut Host, sbdf: u32, test: bool) -> Result<u64, i32> {
        // iommu.c:621-622: no IOMMU context (XEN_DOMCTL_CDF_iommu) -> EOPNOTSUPP, before
        // the device is looked at.
        if !self.iommu {
            return Err(neg(libc::EOPNOTSUPP));
        }
        // pci.c:1628-1632: assigning to a dying domain is refused.
        if !test && self.pending_destroy {
            return Err(neg(libc::EINVAL));
        }
        let domid = self.domid;
        let dev = host.get(sbdf);
        // device_assigned (pci.c:1391-1411): owned by a guest (this one included) -> EBUSY;
        // test_assign_device turns any failure into EINVAL (pci.c:1641-1648).
        let free = matches!(dev.owner, Owner::Hardware | Owner::DomIo);
        if test {
            return if free { Ok(0) } else { Err(neg(libc::EINVAL)) };
        }
        if !free {
            return Err(neg(libc::EBUSY));
        }
        // pdev_msix_assign -> pci_reset_msix_state (xen/drivers/passthrough/msi.c:6-19,
        // xen/arch/x86/msi.c:1213-1231): Function Mask set on the device -> EBUSY.
        if dev
            .info
            .msix_control()
            .is_some_and(|c| c & MSIX_MASKALL != 0)
        {
            self.notes.insert(
                "xen".into(),
                json!("MSI-X Function Mask set at assignment (msi.c:1224-1227)"),
            );
            return Err(neg(libc::EBUSY));
        }
        // pdev_msix_assign -> msixtbl_init (vmsi.c:572-586), for an MSI-X capable function
        // (unknown functions are taken to be one).
        if dev.info.msix.is_some() || !dev.registered {
            self.msixtbl_on = true;
        }
        dev.owner = Owner::Domain(domid);
        Ok(0)
    }

    /// `XEN_DOMCTL_deassign_device` from this guest: deassign_device (pci.c:833-889). The
    /// function must be this guest's (pci_get_pdev(d, ..), else ENODEV); it goes to dom_io
    /// when quarantine is on (pci.c:849-858, the default), else back to the hardware domain.
    fn deassign(&mut self, host: &mut Host, sbdf: u32) -> Result<u64, i32> {
        if !self.iommu {
            // iommu.c:621-622.
            return Err(neg(libc::EOPNOTSUPP));
        }
        let quarantine = host.quarantine;
        let dev = host.get(sbdf);
        if dev.owner != Owner::Domain(self.domid) {
            return Err(neg(libc::ENODEV));
        }
        if dev.quarantine || quarantine {
            dev.owner = Owner::DomIo;
            self.note("now_owned_by", json!("dom_io"));
        } else {
            dev.owner = Owner::Hardware;
            dev.quarantine = false;
            self.note("now_owned_by", json!("hardware_domain"));
        }
        Ok(0)
    }

    /// `PHYSDEVOP_map_pirq` with MSI/MSI-X for this guest: physdev.c:303-339,
    /// allocate_and_map_msi_pirq / allocate_pirq (xen/arch/x86/irq.c:2900-3030),
    /// map_domain_pirq (irq.c:2163-2250), pci_enable_msi (msi.c:1171-1180).
    fn map_pirq(
        &mut self,
        host: &mut Host,
        sbdf: u32,
        entry: u32,
        table_base: u64,
        nvec: u32,
    ) -> Result<u32, i32> {
        let multi = nvec > 1;
        // physdev.c:318-320: MULTI_MSI with a table base is invalid.
        if multi && table_base != 0 {
            return Err(neg(libc::EINVAL));
        }
        let mut nr = nvec.max(1);
        if multi {
            // allocate_pirq (irq.c:2919-2926): 1..=32 vectors; more than one needs interrupt
            // remapping; rounded up to a power of two.
            if nr > MAX_MSI_IRQS {
                return Err(neg(libc::EDOM));
            }
            if nr != 1 && !host.intremap {
                return Err(neg(libc::EOPNOTSUPP));
            }
            nr = nr.next_power_of_two();
        }
        let domid = self.domid;
        let dev = host.get(sbdf);
        // map_domain_pirq, irq.c:2236-2242: pci_get_pdev(d, sbdf) -- the function must belong
        // to the target domain, else ENODEV.
        if dev.owner != Owner::Domain(domid) {
            return Err(neg(libc::ENODEV));
        }
        // pci_enable_msi (msi.c:1179): a non-zero table_base means MSI-X.
        let msix_entry = if table_base != 0 {
            // __pci_enable_msix (msi.c:1054-1082).
            if dev.registered && dev.info.msix.is_none() {
                return Err(neg(libc::ENODEV));
            }
            if let Some(m) = dev.info.msix {
                if entry >= u32::from(m.entries) {
                    return Err(neg(libc::EINVAL));
                }
            }
            // msix_capability_init (msi.c:772-990).
            if dev.info.memory_decoded() == Some(false) {
                // msi.c:801-806.
                return Err(neg(libc::ENXIO));
            }
            let bar_base = dev
                .info
                .msix
                .and_then(|m| dev.info.bars[usize::from(m.table_bir)].map(|b| b.base));
            if dev.msix_used_entries == 0 {
                // msi.c:820-825: Xen reads the table location itself only when no entry is in
                // use and the caller is the hardware domain acting on a function it or dom_io
                // owns. Here the function is the guest's (checked above), so with nothing
                // prepared `table.first` is 0: ENODATA (msi.c:882-887). The table_base passed
                // is never looked at on this path.
                self.note(
                    "xen",
                    json!("MSI-X table not located: no PHYSDEVOP_prepare_msix while no entry was in use (msi.c:882-887)"),
                );
                return Err(neg(libc::ENODATA));
            }
            // msi.c:888-890: the location prepare_msix found is used; the table_base argument
            // is ignored. The WARN_ON(msi->table_base != table_paddr) of msi.c:848 only runs
            // when Xen locates the table for a map_pirq (used_entries == 0 and the function
            // is dom0's or dom_io's), which cannot happen for a guest's function. Still, what
            // Linux and QEMU pass is the BAR base (pci_resource_start), and Xen's WARN compares
            // with read_pci_mem_bar(): record whether this caller got it right.
            match bar_base {
                Some(b) if b == table_base => {
                    self.note("table_base_check", json!("ok: the BAR base"));
                }
                Some(b) => {
                    let msg = format!(
                        "table_base {table_base:#x} is not the BAR base {b:#x} that read_pci_mem_bar() gives: \
                         WARN_ON at xen/arch/x86/msi.c:848 wherever Xen compares them (ignored here: \
                         the table was located by prepare_msix)"
                    );
                    tracing::warn!("sim (Xen): {msg}");
                    self.note("table_base_warn", json!(msg));
                }
                None => {
                    self.note(
                        "table_base_check",
                        json!("skipped: the function's BARs were not registered with the sim"),
                    );
                }
            }
            // msi.c:967.
            dev.msix_used_entries += 1;
            Some(entry)
        } else {
            if let Some(max) = dev.info.msi_maxvec {
                // msi_capability_init returns msi_maxvec (msi.c:622-623); map_domain_pirq
                // turns that into ENFILE (irq.c:2245-2250).
                if nr > max {
                    return Err(neg(libc::ENFILE));
                }
            }
            None
        };
        let pirq = self.next_pirq;
        self.next_pirq += nr;
        for i in 0..nr {
            self.pirqs.insert(
                pirq + i,
                Pirq {
                    sbdf,
                    msix_entry,
                    index: i,
                    // msi.c:923 (MSI-X: masked by Xen at map), msi.c:642 (MSI: not).
                    guest_masked: msix_entry.is_some(),
                    bind: None,
                },
            );
        }
        self.pirq_blocks.insert(pirq, nr);
        Ok(pirq)
    }

    /// `PHYSDEVOP_unmap_pirq`: unmap_domain_pirq (irq.c:2382-2500). The first pirq of a
    /// multi-message block releases the block; an MSI-X entry's release drops
    /// `used_entries` and, at zero, forgets the table location (_pci_cleanup_msix,
    /// msi.c:1085-1101).
    fn unmap_pirq(&mut self, host: &mut Host, pirq: u32) -> Result<(), i32> {
        let Some(p) = self.pirqs.remove(&pirq) else {
            // irq.c:2397-2404.
            return Err(neg(libc::EINVAL));
        };
        for i in 1..self.pirq_blocks.remove(&pirq).unwrap_or(1) {
            self.pirqs.remove(&(pirq + i));
        }
        if p.msix_entry.is_some() {
            cleanup_msix(host.get(p.sbdf));
        }
        Ok(())
    }

    fn msixtbl_find_desc(&self, sbdf: u32, entry: u32) -> Option<u32> {
        self.pirqs
            .iter()
            .find(|(_, p)| p.sbdf == sbdf && p.msix_entry == Some(entry))
            .map(|(k, _)| *k)
    }

    /// `XEN_DOMCTL_bind_pt_irq` (xen/arch/x86/domctl.c:530-566) -> pt_irq_create_bind
    /// (xen/drivers/passthrough/x86/hvm.c:220-400).
    fn bind_pt_irq(
        &mut self,
        host: &Host,
        pirq: u32,
        gvec: u8,
        gflags: u32,
        gtable: u64,
    ) -> Result<(), i32> {
        // domctl.c:543-550: a pirq with no irq behind it -> EPERM.
        let Some(p) = self.pirqs.get(&pirq).cloned() else {
            return Err(neg(libc::EPERM));
        };
        // domctl.c:549-562: without an IOMMU context -> ESRCH.
        if !self.iommu {
            return Err(neg(libc::ESRCH));
        }
        self.dpci = true;
        let stripped = gflags & !XEN_DOMCTL_VMSI_X86_UNMASKED;
        if let Some(old) = p.bind {
            // hvm.c:337-356: already bound -- only gvec/gflags change; gtable is not looked at,
            // so a moved table keeps being intercepted at its first address.
            self.rebind_notes(&p, old, gvec, stripped, gtable);
            self.pirqs.get_mut(&pirq).expect("checked").bind = Some((gvec, stripped));
        } else {
            // hvm.c:291-334: the first bind records gvec/gflags and registers gtable with
            // msixtbl (msixtbl_pt_register, vmsi.c:463-531); a failed registration undoes the
            // bind.
            if gtable != 0 {
                self.msixtbl_pt_register(host, &p, gtable)?;
            }
            self.pirqs.get_mut(&pirq).expect("checked").bind = Some((gvec, stripped));
        }
        // hvm.c:387-398: UNMASKED set -> guest_mask_msi_irq(desc, false). Clear: nothing --
        // a bind never masks.
        if gflags & XEN_DOMCTL_VMSI_X86_UNMASKED != 0 {
            self.pirqs.get_mut(&pirq).expect("checked").guest_masked = false;
        }
        Ok(())
    }

    fn rebind_notes(&mut self, p: &Pirq, old: (u8, u32), gvec: u8, stripped: u32, gtable: u64) {
        if old.1 != stripped || old.0 != gvec {
            self.note(
                "rebind",
                json!("gvec/gflags updated; gtable ignored (hvm.c:344-356)"),
            );
        } else {
            self.note("rebind", json!("nothing changed (hvm.c:344-356)"));
        }
        if let Some(e) = self.msixtbl.iter().find(|e| e.sbdf == p.sbdf) {
            if gtable != 0 && e.gtable != gtable {
                self.note(
                    "gtable_ignored",
                    json!(format!(
                        "Xen keeps intercepting the table at {:#x}, not {gtable:#x}",
                        e.gtable
                    )),
                );
            }
        }
    }

    /// msixtbl_pt_register (vmsi.c:463-531).
    fn msixtbl_pt_register(&mut self, host: &Host, p: &Pirq, gtable: u64) -> Result<(), i32> {
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

    /// `XEN_DOMCTL_unbind_pt_irq` (domctl.c:568-598) -> pt_irq_destroy_bind (hvm.c:565-700).
    fn unbind_pt_irq(&mut self, pirq: u32) -> Result<(), i32> {
        let Some(p) = self.pirqs.get(&pirq).cloned() else {
            // domctl.c:580-582: no irq -> EPERM.
            return Err(neg(libc::EPERM));
        };
        if !self.iommu {
            // domctl.c:583-594: without an IOMMU context nothing is done and 0 returned.
            return Ok(());
        }
        // hvm.c:590-604: the vector is left guest-masked.
        self.pirqs.get_mut(&pirq).expect("checked").guest_masked = true;
        // hvm.c:613-618: never bound anything -> EINVAL.
        if !self.dpci {
            return Err(neg(libc::EINVAL));
        }
        if p.bind.is_some() {
            // hvm.c:677-690.
            self.pirqs.get_mut(&pirq).expect("checked").bind = None;
            if p.msix_entry.is_some() {
                self.msixtbl_pt_unregister(p.sbdf);
            }
        }
        Ok(())
    }

    /// msixtbl_pt_unregister (vmsi.c:534-570) as it is in 4.17:
    /// `if ( !atomic_dec_and_test(&entry->refcnt) ) del_msixtbl_entry(entry);` -- the entry
    /// is deleted when binds REMAIN, and kept (refcnt 0) when the last one goes. (Fixed on
    /// master by ea87662c77 "x86/msix: fix incorrect refcount decrease in msixtlb".)
    fn msixtbl_pt_unregister(&mut self, sbdf: u32) {
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
    fn msixtbl_lookup(&self, addr: u64) -> Option<(usize, u32, u32)> {
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
    fn msixtbl_read(&self, ti: usize, nr: u32, pirq: u32, offset: u64, size: u32) -> MsixtblResult {
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
    fn msixtbl_write(
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

    /// The domain's destruction (domain_kill -> pci_release_devices, pci.c:891-912):
    /// every pirq is unmapped (arch_pci_clean_pirqs), then each assigned function is
    /// deassigned -- to dom_io under quarantine (pci.c:849-858). The p2m and ioreq servers
    /// go with the domain.
    pub fn destroy(&mut self, host: &mut Host) {
        if self.dead {
            return;
        }
        let pirqs: Vec<u32> = self.pirq_blocks.keys().copied().collect();
        for p in pirqs {
            let _ = self.unmap_pirq(host, p);
        }
        for (sbdf, dev) in host.devices.iter_mut() {
            if dev.owner == Owner::Domain(self.domid) {
                dev.owner = if dev.quarantine || host.quarantine {
                    Owner::DomIo
                } else {
                    Owner::Hardware
                };
                tracing::info!(
                    domid = self.domid,
                    sbdf = format!("{sbdf:#x}"),
                    owner = ?dev.owner,
                    "sim: domain destroyed with the function assigned"
                );
            }
        }
        self.p2m.clear();
        self.p2m_superpages.clear();
        self.msixtbl.clear();
        self.servers.clear();
        self.channels.clear();
        self.dead = true;
        self.shut_down = true;
        self.pending_destroy = false;
        self.report.destroyed = true;
    }

    /// A bound device interrupt: the function raises MSI-X entry `entry` (or, for MSI, vector
    /// `entry` of its block). Xen delivers it to the guest vector it was bound to only if the
    /// physical function's Enable bit is set -- which, with a hardware domain, only dom0 (the
    /// device model) ever sets (msi.c:663-674, 970-982: "the split brain model where Dom0
    /// actually enables MSI") -- Function Mask is clear, and the guest has not masked it.
    pub fn device_interrupt(&mut self, host: &Host, sbdf: u32, entry: u32) -> Result<(), String> {
        let Some((pirq, p)) = self
            .pirqs
            .iter()
            .find(|(_, p)| {
                p.sbdf == sbdf
                    && match p.msix_entry {
                        Some(e) => e == entry,
                        None => p.index == entry,
                    }
            })
            .map(|(k, p)| (*k, p.clone()))
        else {
            return Err("no pirq mapped for this entry".into());
        };
        let Some((gvec, gflags)) = p.bind else {
            return Err(format!("pirq {pirq} is not bound"));
        };
        let dev = host.devices.get(&sbdf);
        let ctrl = match p.msix_entry {
            Some(_) => dev.and_then(|d| d.info.msix_control()),
            None => dev.and_then(|d| d.info.msi_control()),
        };
        let Some(ctrl) = ctrl else {
            return Err(
                "the sim cannot see the function's config space (no config_file): Enable unknown"
                    .into(),
            );
        };
        match p.msix_entry {
            Some(_) if ctrl & MSIX_ENABLE == 0 => {
                return Err(
                    "MSI-X Enable clear on the device (Xen leaves it to dom0, msi.c:970-982)"
                        .into(),
                )
            }
            Some(_) if ctrl & MSIX_MASKALL != 0 => {
                return Err("MSI-X Function Mask set on the device".into())
            }
            None if ctrl & MSI_ENABLE == 0 => {
                return Err(
                    "MSI Enable clear on the device (Xen leaves it to dom0, msi.c:663-674)".into(),
                )
            }
            _ => {}
        }
        if p.guest_masked {
            return Err("masked by the guest (Xen's guest_masked)".into());
        }
        let m = crate::domain::Msi::decode(
            u64::from(gflags & 0xFF) << 12 | u64::from((gflags >> 9) & 1) << 2,
            u32::from(gvec) | ((gflags >> 12) & 7) << 8 | ((gflags >> 15) & 1) << 15,
        );
        self.report.msis.push(m);
        Ok(())
    }
}

/// `XEN_DOMCTL_deassign_device` with domain DOMID_IO (domctl.c:338-347, pci.c:833-889): a
/// quarantined function goes back to the hardware domain (`pdev->quarantine` cleared,
/// pci.c:878-879). Not in dom_io -> ENODEV.
pub fn deassign_from_dom_io(host: &mut Host, sbdf: u32) -> Result<u64, i32> {
    let dev = host.get(sbdf);
    if dev.owner != Owner::DomIo {
        return Err(neg(libc::ENODEV));
    }
    dev.owner = Owner::Hardware;
    dev.quarantine = false;
    Ok(0)
}

/// `_pci_cleanup_msix` (msi.c:1085-1101).
fn cleanup_msix(dev: &mut crate::host::PhysDev) {
    dev.msix_used_entries = dev.msix_used_entries.saturating_sub(1);
    if dev.msix_used_entries == 0 {
        dev.msix_table_first = 0;
    }
}

/// `PHYSDEVOP_prepare_msix` / `release_msix` (physdev.c:483-494) -> pci_prepare_msix
/// (msi.c:1142-1165): prepare needs no entry in use (else EBUSY) and locates the table
/// (msix_capability_init with no msi: memory decode on, else ENXIO; a BAR, else ENXIO),
/// counting itself as a user; release needs exactly that one user left (EBUSY otherwise).
/// The owner is not checked.
pub fn prepare_msix(host: &mut Host, sbdf: u32, off: bool) -> Result<u64, i32> {
    let dev = host.get(sbdf);
    if dev.registered && dev.info.msix.is_none() {
        // Xen 4.17 dereferences pdev->msix unchecked here; a function without MSI-X has no
        // business with this op.
        return Err(neg(libc::ENODEV));
    }
    if dev.msix_used_entries != u32::from(off) {
        return Err(neg(libc::EBUSY));
    }
    if off {
        cleanup_msix(dev);
        return Ok(0);
    }
    if dev.info.memory_decoded() == Some(false) {
        return Err(neg(libc::ENXIO));
    }
    let first = match (dev.registered, dev.info.msix_table_paddr()) {
        (true, None) => return Err(neg(libc::ENXIO)), // msi.c:851-857
        (true, Some(p)) => p >> 12,
        (false, _) => 1, // located somewhere the sim does not know
    };
    dev.msix_table_first = first;
    dev.msix_used_entries = 1;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{HostBar, HostPciDevice, MsixLayout};

    const SBDF: u32 = 0x0312;
    const BAR3: u64 = 0x38_0010_8000;
    const GTABLE: u64 = 0xF101_0000;

    fn vf(config_file: Option<std::path::PathBuf>) -> HostPciDevice {
        let mut bars = [None; 6];
        bars[0] = Some(HostBar {
            base: 0x38_0002_0000,
            size: 0x1_0000,
        });
        bars[3] = Some(HostBar {
            base: BAR3,
            size: 0x4000,
        });
        HostPciDevice {
            sbdf: SBDF,
            bars,
            msix: Some(MsixLayout {
                entries: 5,
                table_bir: 3,
                table_offset: 0x1000,
                pba_bir: 3,
                pba_offset: 0x2000,
            }),
            config_file,
            ..Default::default()
        }
    }

    /// A config space with the Command register and one MSI-X capability at 0x40.
    fn config_file(name: &str, command: u16, msix_ctrl: u16) -> std::path::PathBuf {
        let mut c = vec![0u8; 256];
        c[4..6].copy_from_slice(&command.to_le_bytes());
        c[6] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x11;
        c[0x42..0x44].copy_from_slice(&(msix_ctrl | 4).to_le_bytes());
        c[0x44..0x48].copy_from_slice(&0x1003u32.to_le_bytes());
        c[0x48..0x4C].copy_from_slice(&0x2003u32.to_le_bytes());
        let p = std::env::temp_dir().join(format!("xen-sim-unit-{}-{name}", std::process::id()));
        std::fs::write(&p, c).unwrap();
        p
    }

    fn set_msix_ctrl(p: &std::path::Path, ctrl: u16) {
        crate::host::write_file_at(p, 0x42, &(ctrl | 4).to_le_bytes());
    }

    fn setup(iommu: bool) -> (Domain, Host) {
        let mut d = Domain::new(1, 2, 16 << 20).unwrap();
        d.iommu = iommu;
        let mut h = Host::default();
        h.add(vf(None));
        (d, h)
    }

    fn op(d: &mut Domain, h: &mut Host, o: PtOp) -> Result<u64, i32> {
        d.passthrough(h, &o)
    }

    fn mm(gfn: u64, mfn: u64, nr: u64, add: bool) -> PtOp {
        PtOp::MemoryMapping { gfn, mfn, nr, add }
    }

    fn permit(d: &mut Domain, h: &mut Host, mfn: u64, nr: u64) {
        op(
            d,
            h,
            PtOp::IomemPermission {
                mfn,
                nr,
                allow: true,
            },
        )
        .unwrap();
    }

    fn map_msix(entry: u32, table_base: u64) -> PtOp {
        PtOp::MapPirqMsi {
            sbdf: SBDF,
            entry,
            table_base,
            nvec: 1,
        }
    }

    fn bind(pirq: u64, gvec: u8, unmasked: bool, gtable: u64) -> PtOp {
        PtOp::BindPtIrqMsi {
            pirq: pirq as u32,
            gvec,
            gflags: if unmasked {
                XEN_DOMCTL_VMSI_X86_UNMASKED
            } else {
                0
            },
            gtable,
        }
    }

    /// Assigned, prepared, entries mapped: the usual state before binds.
    fn assigned_and_prepared(d: &mut Domain, h: &mut Host) {
        op(d, h, PtOp::PrepareMsix { sbdf: SBDF }).unwrap();
        op(d, h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    }

    #[test]
    fn memory_mapping_does_64_iterations_and_returns_the_count() {
        let (mut d, mut h) = setup(true);
        // domctl.c:472-475: no iomem permission -> EPERM, nothing mapped.
        assert_eq!(
            op(&mut d, &mut h, mm(0xF1000, 0x3800020, 100, true)),
            Err(-libc::EPERM)
        );
        permit(&mut d, &mut h, 0x3800020, 100);
        assert_eq!(
            op(&mut d, &mut h, mm(0xF1000, 0x3800020, 100, true)),
            Ok(64)
        );
        assert_eq!(d.p2m.len(), 64);
        // The caller re-invokes for the rest, as libxenctrl does.
        assert_eq!(
            op(&mut d, &mut h, mm(0xF1000 + 64, 0x3800020 + 64, 36, true)),
            Ok(0)
        );
        assert!(d.p2m_mapped(0xF100_0000, 0xF106_3FFF));
        // Re-mapping the same frames is allowed (identical mapping).
        assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800020, 4, true)), Ok(0));
        // Unmap of a sub-range works (no exact-match rule); partial counts here too.
        assert_eq!(op(&mut d, &mut h, mm(0xF1010, 0x3800030, 8, false)), Ok(0));
        assert!(!d.p2m_mapped(0xF101_0000, 0xF101_0FFF));
        assert_eq!(
            op(&mut d, &mut h, mm(0xF1020, 0x3800040, 68, false)),
            Ok(64)
        );
        // Unmapping a frame that is not mapped: EINVAL (p2m.c:1185-1190) at i = 0.
        assert_eq!(
            op(&mut d, &mut h, mm(0xF1010, 0x3800030, 1, false)),
            Err(-libc::EINVAL)
        );
        // ... but after some were done: the count.
        assert_eq!(op(&mut d, &mut h, mm(0xF1008, 0x3800028, 16, false)), Ok(8));
        // A different mfn under an unmap is only logged; the entry goes.
        assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800021, 1, false)), Ok(0));
        assert!(d.notes["xen"]
            .as_str()
            .unwrap()
            .contains("no mapping between"));
        assert!(d.report.crashed.is_none());
    }

    #[test]
    fn mapping_over_a_different_mfn_crashes_the_guest() {
        let (mut d, mut h) = setup(true);
        permit(&mut d, &mut h, 0x3800000, 0x1000);
        assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800020, 4, true)), Ok(0));
        // Frame 2 is mapped to 0x3800022; mapping it to another mfn is "not permitted".
        assert_eq!(
            op(&mut d, &mut h, mm(0xF1000, 0x3800100, 4, true)),
            Err(-libc::EPERM)
        );
        assert!(d
            .report
            .crashed
            .as_deref()
            .unwrap()
            .contains("not permitted"));
        // 2 frames in, it fails at the first conflicting one -> the count done.
        let (mut d, mut h) = setup(true);
        permit(&mut d, &mut h, 0x3800000, 0x1000);
        op(&mut d, &mut h, mm(0xF1002, 0x3800022, 1, true)).unwrap();
        assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800100, 4, true)), Ok(2));
    }

    #[test]
    fn aligned_two_megabyte_runs_take_one_iteration() {
        let (mut d, mut h) = setup(true);
        permit(&mut d, &mut h, 0x3800000, 1 << 16);
        // gfn and mfn 2M-aligned: 64 iterations of 512 frames = 32768 frames (128 MiB).
        assert_eq!(
            op(&mut d, &mut h, mm(0x100000, 0x3800000, 40000, true)),
            Ok(64 * 512)
        );
        // Misaligned mfn: 4K iterations.
        let (mut d, mut h) = setup(true);
        permit(&mut d, &mut h, 0x3800000, 1 << 16);
        assert_eq!(
            op(&mut d, &mut h, mm(0x100000, 0x3800001, 1024, true)),
            Ok(64)
        );
    }

    #[test]
    fn msix_map_pirq_needs_prepare_msix() {
        let (mut d, mut h) = setup(true);
        // Not assigned yet: map_domain_pirq finds no such device in the guest -> ENODEV.
        assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODEV));
        op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
        // Assigned without prepare_msix: ENODATA (msi.c:882-887).
        assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODATA));
        // prepare_msix works whoever owns the function (pci_prepare_msix checks no owner).
        op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }).unwrap();
        assert_eq!(
            op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }),
            Err(-libc::EBUSY)
        );
        let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
        assert!(pirq > 0);
        assert_eq!(h.devices[&SBDF].msix_used_entries, 2);
        assert_eq!(h.devices[&SBDF].msix_table_first, (BAR3 + 0x1000) >> 12);
        // Entry beyond the table: EINVAL.
        assert_eq!(op(&mut d, &mut h, map_msix(5, BAR3)), Err(-libc::EINVAL));
        // release_msix while an entry is in use: EBUSY; after the unmap it works, and the
        // table location is forgotten: the next map is ENODATA again.
        assert_eq!(
            op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }),
            Err(-libc::EBUSY)
        );
        op(&mut d, &mut h, PtOp::UnmapPirq { pirq: pirq as u32 }).unwrap();
        op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }).unwrap();
        assert_eq!(h.devices[&SBDF].msix_table_first, 0);
        assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODATA));
        assert_eq!(
            op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }),
            Err(-libc::EBUSY)
        );
    }

    #[test]
    fn prepare_msix_needs_memory_decode() {
        let (mut d, mut h) = setup(true);
        let cfg = config_file("decode", 0, 0);
        h.add(vf(Some(cfg.clone())));
        assert_eq!(
            op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }),
            Err(-libc::ENXIO)
        );
        crate::host::write_file_at(&cfg, 4, &2u16.to_le_bytes());
        assert_eq!(op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }), Ok(0));
        let _ = std::fs::remove_file(cfg);
    }

    #[test]
    fn table_base_that_is_not_the_bar_base_is_recorded() {
        let (mut d, mut h) = setup(true);
        assigned_and_prepared(&mut d, &mut h);
        op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
        assert_eq!(d.notes["table_base_check"], "ok: the BAR base");
        // BAR + table offset (the old bridge's formula): Xen's WARN_ON compares with the BAR.
        op(&mut d, &mut h, map_msix(1, BAR3 + 0x1000)).unwrap();
        assert!(d.notes["table_base_warn"]
            .as_str()
            .unwrap()
            .contains("msi.c:848"));
    }

    #[test]
    fn assignment_needs_an_iommu_context() {
        let (mut d, mut h) = setup(false);
        assert_eq!(
            op(&mut d, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
            Err(-libc::EOPNOTSUPP)
        );
        assert_eq!(
            op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
            Err(-libc::EOPNOTSUPP)
        );
        assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
        // bind_pt_irq: ESRCH. (The pirq can only exist for an assigned function, so plant one.)
        d.pirqs.insert(
            70,
            Pirq {
                sbdf: SBDF,
                msix_entry: Some(0),
                index: 0,
                guest_masked: true,
                bind: None,
            },
        );
        assert_eq!(
            op(&mut d, &mut h, bind(70, 0x41, true, GTABLE)),
            Err(-libc::ESRCH)
        );
        // Unbind without IOMMU: nothing done, 0 (domctl.c:583-594).
        assert_eq!(
            op(
                &mut d,
                &mut h,
                PtOp::UnbindPtIrqMsi {
                    pirq: 70,
                    gvec: 0x41,
                    gflags: 0,
                    gtable: GTABLE
                }
            ),
            Ok(0)
        );
    }

    #[test]
    fn test_assign_and_ownership() {
        let (mut d, mut h) = setup(true);
        let (mut d2, _) = setup(true);
        d2.domid = 2;
        assert_eq!(
            op(&mut d, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
            Ok(0)
        );
        op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
        // Owned by a guest: assign EBUSY (this guest too), test_assign EINVAL.
        assert_eq!(
            op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
            Err(-libc::EBUSY)
        );
        assert_eq!(
            op(&mut d2, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
            Err(-libc::EINVAL)
        );
        // Deassign from another guest: ENODEV.
        assert_eq!(
            op(
                &mut d2,
                &mut h,
                PtOp::DeassignDevice {
                    sbdf: SBDF,
                    from_dom_io: false
                }
            ),
            Err(-libc::ENODEV)
        );
        // Deassign from the guest: quarantined (dom_io), by default.
        op(
            &mut d,
            &mut h,
            PtOp::DeassignDevice {
                sbdf: SBDF,
                from_dom_io: false,
            },
        )
        .unwrap();
        assert_eq!(h.devices[&SBDF].owner, Owner::DomIo);
        // A quarantined function can be assigned again.
        assert_eq!(
            op(&mut d2, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
            Ok(0)
        );
        // De-quarantine: back to the hardware domain. Twice: ENODEV.
        op(
            &mut d,
            &mut h,
            PtOp::DeassignDevice {
                sbdf: SBDF,
                from_dom_io: true,
            },
        )
        .unwrap();
        assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
        assert_eq!(
            op(
                &mut d,
                &mut h,
                PtOp::DeassignDevice {
                    sbdf: SBDF,
                    from_dom_io: true
                }
            ),
            Err(-libc::ENODEV)
        );
        // Without quarantine, deassign hands it straight back.
        h.quarantine = false;
        op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
        op(
            &mut d,
            &mut h,
            PtOp::DeassignDevice {
                sbdf: SBDF,
                from_dom_io: false,
            },
        )
        .unwrap();
        assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
    }

    #[test]
    fn a_dead_domain_leaves_its_functions_in_quarantine() {
        let (mut d, mut h) = setup(true);
        assigned_and_prepared(&mut d, &mut h);
        let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
        op(&mut d, &mut h, bind(pirq, 0x41, true, GTABLE)).unwrap();
        d.destroy(&mut h);
        assert_eq!(h.devices[&SBDF].owner, Owner::DomIo);
        // Its pirqs were cleaned (arch_pci_clean_pirqs): only prepare_msix's user remains.
        assert_eq!(h.devices[&SBDF].msix_used_entries, 1);
        for o in [
            PtOp::DeassignDevice {
                sbdf: SBDF,
                from_dom_io: false,
            },
            PtOp::UnmapPirq { pirq: pirq as u32 },
            mm(0xF1000, 0x3800020, 16, false),
            PtOp::GetDomainInfo,
        ] {
            assert_eq!(op(&mut d, &mut h, o), Err(-libc::ESRCH));
        }
        assert_eq!(
            op(
                &mut d,
                &mut h,
                PtOp::DeassignDevice {
                    sbdf: SBDF,
                    from_dom_io: true
                }
            ),
            Ok(0)
        );
        assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
        assert_eq!(op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }), Ok(0));
    }

    #[test]
    fn get_domain_info_is_max_pages() {
        let (mut d, mut h) = setup(true);
        assert_eq!(
            op(&mut d, &mut h, PtOp::GetDomainInfo),
            Ok((16 << 20) / 4096)
        );
    }

    #[test]
    fn rebinding_changes_only_gvec_and_gflags_and_never_masks() {
        let (mut d, mut h) = setup(true);
        assigned_and_prepared(&mut d, &mut h);
        let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
        // Bind with UNMASKED clear: the vector stays masked as map left it.
        op(&mut d, &mut h, bind(pirq, 0x41, false, GTABLE)).unwrap();
        assert!(d.pirqs[&(pirq as u32)].guest_masked);
        op(&mut d, &mut h, bind(pirq, 0x41, true, GTABLE)).unwrap();
        assert!(!d.pirqs[&(pirq as u32)].guest_masked);
        // A rebind with UNMASKED clear does not mask (hvm.c:387-398).
        op(&mut d, &mut h, bind(pirq, 0x42, false, GTABLE)).unwrap();
        assert!(!d.pirqs[&(pirq as u32)].guest_masked);
        assert_eq!(d.pirqs[&(pirq as u32)].bind, Some((0x42, 0)));
        // A rebind with a moved table: Xen keeps intercepting the first address.
        op(&mut d, &mut h, bind(pirq, 0x42, true, 0xF200_0000)).unwrap();
        assert!(d.notes.contains_key("gtable_ignored"));
        assert_eq!(d.msixtbl.len(), 1);
        assert_eq!(d.msixtbl[0].gtable, GTABLE);
        assert_eq!(d.msixtbl[0].refcnt, 1, "a rebind is not a registration");
        // Bind of a pirq that is not mapped: EPERM.
        assert_eq!(op(&mut d, &mut h, bind(999, 1, true, 0)), Err(-libc::EPERM));
    }

    #[test]
    fn msixtbl_takes_bound_entries_before_the_device_model() {
        let (mut d, mut h) = setup(true);
        assigned_and_prepared(&mut d, &mut h);
        let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap() as u32;
        // Before any bind: nothing intercepted.
        assert!(matches!(
            d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
            MsixtblResult::Forward
        ));
        op(&mut d, &mut h, bind(p0.into(), 0x41, true, GTABLE)).unwrap();
        let fwd = |r: MsixtblResult| matches!(r, MsixtblResult::Forward);
        // Mask write of the bound entry: handled in Xen, never reaches the device model.
        assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 1)));
        assert!(d.pirqs[&p0].guest_masked);
        // Vector Control reads Xen's guest_masked.
        assert!(matches!(
            d.msixtbl_access(0, GTABLE + 12, 4, false, 0),
            MsixtblResult::Done(1)
        ));
        // Address/data writes: forwarded, and shadowed by Xen.
        assert!(fwd(d.msixtbl_access(0, GTABLE, 4, true, 0xFEE0_1000)));
        assert!(fwd(d.msixtbl_access(0, GTABLE + 8, 4, true, 0x51)));
        assert!(matches!(
            d.msixtbl_access(0, GTABLE + 8, 4, false, 0),
            MsixtblResult::Done(0x51)
        ));
        // Address high was never written: its read goes to the device model.
        assert!(fwd(d.msixtbl_access(0, GTABLE + 4, 4, false, 0)));
        // The unmask after address/data changed: forwarded, applied by Xen at completion.
        assert!(fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 0)));
        assert!(d.pirqs[&p0].guest_masked, "not yet");
        d.msix_write_completion(0);
        assert!(!d.pirqs[&p0].guest_masked);
        // Mask and unmask with no address/data change: both Xen's.
        assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 1)));
        assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 0)));
        assert!(!d.pirqs[&p0].guest_masked);
        // 2-byte accesses are not Xen's.
        assert!(fwd(d.msixtbl_access(0, GTABLE + 12, 2, true, 1)));
        // An 8-byte write of data + vector control: mask applied in Xen AND forwarded.
        assert!(fwd(d.msixtbl_access(
            0,
            GTABLE + 8,
            8,
            true,
            0x51 | 1 << 32
        )));
        assert!(d.pirqs[&p0].guest_masked);
        // Entry 1 is not mapped: nothing of it is intercepted, even inside the table.
        assert!(fwd(d.msixtbl_access(0, GTABLE + 16 + 12, 4, true, 1)));
    }

    #[test]
    fn an_unmask_snooped_during_the_bind_is_applied_at_completion() {
        let (mut d, mut h) = setup(true);
        assigned_and_prepared(&mut d, &mut h);
        let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
        // The guest unmasks entry 0 before anything is bound: forwarded, snooped.
        assert!(matches!(
            d.msixtbl_access(1, GTABLE + 12, 4, true, 0),
            MsixtblResult::Forward
        ));
        d.vcpu_io[1].blocked = true;
        // The device model binds it with UNMASKED clear while vCPU 1 waits.
        op(&mut d, &mut h, bind(p0, 0x41, false, GTABLE)).unwrap();
        assert!(d.pirqs[&(p0 as u32)].guest_masked);
        d.msix_write_completion(1);
        assert!(!d.pirqs[&(p0 as u32)].guest_masked, "vmsi.c:514-529");
    }

    #[test]
    fn unbinding_one_of_two_entries_drops_the_intercept_in_4_17() {
        let (mut d, mut h) = setup(true);
        assigned_and_prepared(&mut d, &mut h);
        let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
        let p1 = op(&mut d, &mut h, map_msix(1, BAR3)).unwrap();
        op(&mut d, &mut h, bind(p0, 0x41, true, GTABLE)).unwrap();
        op(&mut d, &mut h, bind(p1, 0x42, true, GTABLE)).unwrap();
        assert_eq!(d.msixtbl[0].refcnt, 2);
        let unbind = |p: u64| PtOp::UnbindPtIrqMsi {
            pirq: p as u32,
            gvec: 0,
            gflags: 0,
            gtable: GTABLE,
        };
        op(&mut d, &mut h, unbind(p1)).unwrap();
        assert!(
            d.msixtbl.is_empty(),
            "vmsi.c:566: deleted while a bind remains"
        );
        // Entry 0 is still bound, but its mask writes now reach the device model.
        assert!(matches!(
            d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
            MsixtblResult::Forward
        ));
        // Unbind leaves the vector masked (hvm.c:590-604).
        op(&mut d, &mut h, unbind(p0)).unwrap();
        assert!(d.pirqs[&(p0 as u32)].guest_masked);
    }

    #[test]
    fn multi_message_msi_rules() {
        let (mut d, mut h) = setup(true);
        op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
        let msi = |nvec, table_base| PtOp::MapPirqMsi {
            sbdf: SBDF,
            entry: 0,
            table_base,
            nvec,
        };
        assert_eq!(op(&mut d, &mut h, msi(4, BAR3)), Err(-libc::EINVAL));
        assert_eq!(op(&mut d, &mut h, msi(64, 0)), Err(-libc::EDOM));
        h.intremap = false;
        assert_eq!(op(&mut d, &mut h, msi(4, 0)), Err(-libc::EOPNOTSUPP));
        h.intremap = true;
        let p = op(&mut d, &mut h, msi(3, 0)).unwrap() as u32;
        assert_eq!(d.pirq_blocks[&p], 4, "rounded up to a power of two");
    }

    #[test]
    fn a_bound_interrupt_arrives_only_with_the_devices_enable_bit() {
        let (mut d, mut h) = setup(true);
        let cfg = config_file("enable", 2, 0);
        h.add(vf(Some(cfg.clone())));
        assigned_and_prepared(&mut d, &mut h);
        let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
        assert!(d
            .device_interrupt(&h, SBDF, 0)
            .unwrap_err()
            .contains("not bound"));
        op(&mut d, &mut h, bind(p0, 0x41, true, GTABLE)).unwrap();
        // Xen never set Enable: the device model must.
        assert!(d
            .device_interrupt(&h, SBDF, 0)
            .unwrap_err()
            .contains("Enable clear"));
        set_msix_ctrl(&cfg, MSIX_ENABLE | MSIX_MASKALL);
        assert!(d
            .device_interrupt(&h, SBDF, 0)
            .unwrap_err()
            .contains("Function Mask"));
        set_msix_ctrl(&cfg, MSIX_ENABLE);
        d.device_interrupt(&h, SBDF, 0).unwrap();
        assert_eq!(d.report.msis.last().unwrap().vector, 0x41);
        // Masked by the guest (through msixtbl): held.
        assert!(!matches!(
            d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
            MsixtblResult::Forward
        ));
        assert!(d
            .device_interrupt(&h, SBDF, 0)
            .unwrap_err()
            .contains("masked by the guest"));
        // Function Mask set at assignment: EBUSY (msi.c:1224-1227).
        let (mut d2, _) = setup(true);
        d2.domid = 2;
        d.destroy(&mut h);
        op(
            &mut d2,
            &mut h,
            PtOp::DeassignDevice {
                sbdf: SBDF,
                from_dom_io: true,
            },
        )
        .unwrap();
        set_msix_ctrl(&cfg, MSIX_MASKALL);
        assert_eq!(
            op(&mut d2, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
            Err(-libc::EBUSY)
        );
        let _ = std::fs::remove_file(cfg);
    }

    #[test]
    fn ioport_mapping_is_keyed_by_machine_port() {
        let (mut d, mut h) = setup(true);
        let io = |g, m, n, add| PtOp::IoportMapping {
            gport: g,
            mport: m,
            nr: n,
            add,
        };
        assert_eq!(
            op(&mut d, &mut h, io(0xFFF0, 0xE000, 0x20, true)),
            Err(-libc::EINVAL)
        );
        op(&mut d, &mut h, io(0xC000, 0xE000, 0x20, true)).unwrap();
        assert!(d.ioport_mapped(0xC01C, 4) && !d.ioport_mapped(0xC01E, 4));
        // The guest moved the BAR: an add for the same machine port replaces the entry.
        op(&mut d, &mut h, io(0xD000, 0xE000, 0x20, true)).unwrap();
        assert_eq!(d.ioport_map, vec![(0xD000, 0xE000, 0x20)]);
        // Remove by machine port; removing what is not there is no error.
        op(&mut d, &mut h, io(0, 0xE000, 0x20, false)).unwrap();
        assert!(d.ioport_map.is_empty());
        op(&mut d, &mut h, io(0, 0xE000, 0x20, false)).unwrap();
    }

    #[test]
    fn iomem_permission_ranges() {
        let (mut d, _) = setup(true);
        d.iomem_change(10, 19, true);
        d.iomem_change(20, 29, true);
        assert_eq!(d.iomem, vec![(10, 29)]);
        d.iomem_change(15, 16, false);
        assert_eq!(d.iomem, vec![(10, 14), (17, 29)]);
        assert!(d.iomem_permitted(17, 29) && !d.iomem_permitted(14, 17));
    }
}
