//! The host functions themselves: probing and making the assignment to the guest, taking it
//! back (from dom_io after a quarantine), and MSI-X preparation while dom0 owns them.

use tracing::{info, warn};

use super::{PassthroughExecutor, PtError};
use xen_abi::passthrough::PtOp;

impl PassthroughExecutor {
    /// Whether the guest has an IOMMU context and `sbdf` could be assigned to it: Xen's
    /// `test_assign_device` against the guest (EOPNOTSUPP: no IOMMU context,
    /// xen/drivers/passthrough/iommu.c:615-622 in 4.17; EINVAL: owned by another domain or
    /// unknown to Xen, pci.c:1642-1649).
    pub fn test_assign(&mut self, sbdf: u32) -> Result<(), PtError> {
        self.call_once(&PtOp::TestAssignDevice { sbdf }).map(|_| ())
    }

    /// `PHYSDEVOP_prepare_msix` while dom0 owns the function. Xen answers EBUSY when an
    /// MSI-X entry of the function is in use (`pci_prepare_msix`, xen/arch/x86/msi.c:1142-1166
    /// in 4.17: `used_entries != 0`), which after dom0's driver let go means an earlier
    /// prepare was never released (a device model that died): the table is known to Xen
    /// then, so that is taken as done (and released at the end).
    pub fn prepare_msix(&mut self, sbdf: u32) -> Result<(), PtError> {
        match self.call_once(&PtOp::PrepareMsix { sbdf }) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::EBUSY) => {
                warn!(
                    sbdf,
                    "prepare_msix: EBUSY (an earlier prepare was not released); continuing"
                )
            }
            Err(e) => return Err(e),
        }
        if !self.prepared.contains(&sbdf) {
            self.prepared.push(sbdf);
        }
        Ok(())
    }

    /// Take over a `prepare_msix` another process made (a device model that died), so that
    /// [`PassthroughExecutor::release_msix`] releases it.
    pub fn adopt_prepared(&mut self, sbdf: u32) {
        if !self.prepared.contains(&sbdf) {
            self.prepared.push(sbdf);
        }
    }

    /// `PHYSDEVOP_release_msix` (only if this executor prepared it). Xen wants exactly the
    /// prepare's own entry in use then (`used_entries == 1`, msi.c:1154), i.e. every pirq of
    /// the function unmapped first.
    pub fn release_msix(&mut self, sbdf: u32) -> Result<(), PtError> {
        if !self.prepared.contains(&sbdf) {
            return Ok(());
        }
        self.call(&PtOp::ReleaseMsix { sbdf })?;
        self.prepared.retain(|&s| s != sbdf);
        Ok(())
    }

    /// `assign_device` to the guest.
    pub fn assign(&mut self, sbdf: u32) -> Result<(), PtError> {
        self.call(&PtOp::AssignDevice { sbdf })?;
        if !self.assigned.contains(&sbdf) {
            self.assigned.push(sbdf);
        }
        Ok(())
    }

    /// `deassign_device` from the guest; if the guest is gone (or Xen says the function is
    /// not the guest's: it was quarantined when the domain died, xen/drivers/passthrough/
    /// pci.c:849-859), from `DOMID_IO` instead, which hands it back to dom0.
    pub fn deassign(&mut self, sbdf: u32) -> Result<(), PtError> {
        let r = self.call(&PtOp::DeassignDevice {
            sbdf,
            from_dom_io: false,
        });
        let r = match r {
            Ok(_) => {
                // With quarantine on (the default, xen/drivers/passthrough/Kconfig:46) Xen
                // deassigns to dom_io; taking it from there returns it to dom0.
                self.call(&PtOp::DeassignDevice {
                    sbdf,
                    from_dom_io: true,
                })
                .map(|_| ())
                .or_else(|e| match e.errno() {
                    // Not quarantined (iommu=no-quarantine): already dom0's.
                    Some(libc::EINVAL) | Some(libc::ENODEV) | Some(libc::ESRCH) => Ok(()),
                    _ => Err(e),
                })
            }
            Err(e) => {
                info!(
                    sbdf,
                    "deassign from the guest failed ({e}); taking it out of Xen's quarantine"
                );
                self.call(&PtOp::DeassignDevice {
                    sbdf,
                    from_dom_io: true,
                })
                .map(|_| ())
            }
        };
        if r.is_ok() {
            self.assigned.retain(|&s| s != sbdf);
        }
        r
    }
}
