//! Ownership of host functions: assignment (only with an IOMMU context), deassignment and
//! quarantine (to dom_io and back), the domain's destruction, and `prepare_msix` /
//! `release_msix`.

use serde_json::json;

use super::neg;
use crate::domain::Domain;
use crate::host::{Host, Owner, MSIX_MASKALL};

impl Domain {
    /// `XEN_DOMCTL_assign_device` / `test_assign_device`: iommu_do_domctl
    /// (xen/drivers/passthrough/iommu.c:615-634) and iommu_do_pci_domctl
    /// (xen/drivers/passthrough/pci.c:1612-1657).
    pub(super) fn assign(&mut self, host: &mut Host, sbdf: u32, test: bool) -> Result<u64, i32> {
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
    pub(super) fn deassign(&mut self, host: &mut Host, sbdf: u32) -> Result<u64, i32> {
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
pub(super) fn cleanup_msix(dev: &mut crate::host::PhysDev) {
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
