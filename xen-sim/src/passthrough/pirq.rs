//! Interrupts of passed-through functions: `map_pirq` / `unmap_pirq` for MSI and MSI-X (the
//! ENODATA precondition, the `table_base` comparison, multi-message MSI), `bind_pt_irq` (first
//! bind vs rebind, UNMASKED that never masks) / `unbind_pt_irq`, and the delivery of a bound
//! device interrupt only with the physical Enable bit set.

use serde_json::json;
use xen_abi::*;

use super::assign::cleanup_msix;
use super::{neg, Pirq, MAX_MSI_IRQS};
use crate::domain::Domain;
use crate::host::{Host, Owner, MSIX_ENABLE, MSIX_MASKALL, MSI_ENABLE};

impl Domain {
    /// `PHYSDEVOP_map_pirq` with MSI/MSI-X for this guest: physdev.c:303-339,
    /// allocate_and_map_msi_pirq / allocate_pirq (xen/arch/x86/irq.c:2900-3030),
    /// map_domain_pirq (irq.c:2163-2250), pci_enable_msi (msi.c:1171-1180).
    pub(super) fn map_pirq(
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
    pub(super) fn unmap_pirq(&mut self, host: &mut Host, pirq: u32) -> Result<(), i32> {
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

    /// `XEN_DOMCTL_bind_pt_irq` (xen/arch/x86/domctl.c:530-566) -> pt_irq_create_bind
    /// (xen/drivers/passthrough/x86/hvm.c:220-400).
    pub(super) fn bind_pt_irq(
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

    pub(super) fn rebind_notes(
        &mut self,
        p: &Pirq,
        old: (u8, u32),
        gvec: u8,
        stripped: u32,
        gtable: u64,
    ) {
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

    /// `XEN_DOMCTL_unbind_pt_irq` (domctl.c:568-598) -> pt_irq_destroy_bind (hvm.c:565-700).
    pub(super) fn unbind_pt_irq(&mut self, pirq: u32) -> Result<(), i32> {
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
        let m = crate::domain::DecodedMsi::decode(
            u64::from(gflags & 0xFF) << 12 | u64::from((gflags >> 9) & 1) << 2,
            u32::from(gvec) | ((gflags >> 12) & 7) << 8 | ((gflags >> 15) & 1) << 15,
        );
        self.report.msis.push(m);
        Ok(())
    }
}
