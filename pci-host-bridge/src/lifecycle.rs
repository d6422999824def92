//! The assignment lifecycle of one passed-through function: what pciback used to do, as one
//! ordered list of steps with rollback from every one of them.
//!
//! Start ([`Lifecycle::start`]), each step recorded once it succeeded:
//! 1. dom0's driver unbound (sysfs `driver/unbind`; uio_pci_generic stays for INTx);
//! 2. host decode on (sysfs `enable`, pciback's `pci_enable_device`): QEMU 7.2 decodes a VF's
//!    BARs only with its own Memory Space bit, and Xen reads the MSI-X table through it;
//! 3. `PHYSDEVOP_prepare_msix` while dom0 still owns the function (Xen reads the table
//!    location only then; without it the first MSI-X `map_pirq` of the guest's function fails
//!    with ENODATA, xen/arch/x86/msi.c:821-886 and physdev.c:483-494 in 4.17);
//! 4. reset (sysfs `reset`), so that nothing of dom0's use reaches the guest;
//! 5. MSI-X Function Mask (and Enable) and MSI Enable cleared in the host, as the guest sees
//!    them (`assign_device` refuses a function whose Function Mask is set: EBUSY,
//!    xen/arch/x86/msi.c:1213-1233);
//! 6. `XEN_DOMCTL_assign_device` (after `test_assign_device` told us the domain has an IOMMU
//!    context, xen/drivers/passthrough/iommu.c:615-622);
//! 7. `iomem_permission` / `ioport_permission` for the BARs.
//!
//! Stop ([`Lifecycle::stop`]) undoes exactly the recorded steps, in this order: Bus Master off
//! in the host (the guest's DMA stops before anything is taken away), every mapping removed
//! (the executor loops over Xen's partial counts), every vector unbound and the host's MSI /
//! MSI-X Enable cleared, reset, `release_msix`, deassign (from the guest, or from `DOMID_IO`
//! when Xen quarantined the function because the domain died, xen/drivers/passthrough/
//! pci.c:849-859), permissions revoked, host decode off. dom0's driver is re-probed when the
//! backend is dropped, after the ioreq server is gone. Each stop step is tried even when an
//! earlier one failed, and every failure is logged: a half-returned device is worse than a
//! loud one.

use ioreq_server::executor::{PassthroughExecutor, PtError};
use serde::Serialize;

use crate::backend::{BarInfo, BarKind, HostDevice};
use crate::bars::PAGE_SIZE;
use crate::error::Error;
use crate::topology::PciAddress;

/// One completed step of [`Lifecycle::start`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// dom0's driver was unbound (the backend re-probes it when dropped).
    DriverDetached,
    /// Host decoding turned on.
    DecodeOn,
    /// `prepare_msix` done.
    MsixPrepared,
    /// Reset at start.
    Reset,
    /// Assigned to the guest.
    Assigned,
    /// Permissions granted.
    Permitted,
}

/// The steps a function went through.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Lifecycle {
    done: Vec<Step>,
    /// Permissions this function was granted: `(io, first, count)` (frames or ports).
    granted: Vec<(bool, u64, u64)>,
    /// The last stop's failures (for the status socket and the exit log).
    stop_errors: Vec<String>,
}

/// What [`Lifecycle::start`] needs to know of the function.
pub struct Target<'a> {
    /// The host function.
    pub host: PciAddress,
    /// Its backend.
    pub dev: &'a mut dyn HostDevice,
    /// The MSI-X capability's config offset, if it has one.
    pub msix_cap: Option<u16>,
    /// The MSI capability's config offset, if it has one.
    pub msi_cap: Option<u16>,
}

/// Message Control of MSI-X, relative to the capability (PCI Local Bus 3.0, 6.8.2.3).
const MSIX_CONTROL: u16 = 2;

/// The permission hypercall arguments of a BAR: `(mfn, nr)` for memory, `(port, nr)` for I/O.
fn permission_of(b: &BarInfo) -> Option<(bool, u64, u64)> {
    if b.size == 0 {
        return None;
    }
    match b.kind {
        BarKind::Io => Some((true, b.host_addr, b.size)),
        BarKind::Mem32 | BarKind::Mem64 => {
            // Whole frames covering the BAR (a sub-page BAR still needs its frame).
            let first = b.host_addr / PAGE_SIZE;
            let end = b.host_addr.checked_add(b.size)?;
            let last = (end - 1) / PAGE_SIZE;
            Some((false, first, last - first + 1))
        }
    }
}

fn refused_assign(host: PciAddress, domid: u16, what: &str, e: &PtError) -> Error {
    let message = match e.errno() {
        Some(libc::EOPNOTSUPP) => format!(
            "domain {domid} has no IOMMU context, so Xen cannot assign {host} to it \
             ({what}: EOPNOTSUPP). libxl creates x86 PVH domains without \
             XEN_DOMCTL_CDF_iommu (libxl_x86.c:829-835 in 4.17); create the guest with the \
             project's xc_domain_create wrapper (scripts/xen-rig/cdf-iommu.c): \
             PVH_DM_IOMMU=1 LD_PRELOAD=/usr/local/lib/cdf-iommu.so xl create -p GUEST.cfg"
        ),
        Some(libc::EINVAL) | Some(libc::EBUSY) | Some(libc::ENODEV) => format!(
            "Xen says {host} cannot be assigned ({e}): it is assigned to another domain, \
             hidden, or unknown to Xen (is dom0's kernel telling Xen about it? `xl pci-assignable-list`)"
        ),
        _ => format!("{what} of {host}: {e}"),
    };
    Error::Unsupported {
        device: host.to_string(),
        message,
    }
}

impl Lifecycle {
    /// The completed steps.
    pub fn steps(&self) -> &[Step] {
        &self.done
    }

    /// Whether the function is assigned to the guest.
    pub fn assigned(&self) -> bool {
        self.done.contains(&Step::Assigned)
    }

    /// Run the start steps; on an error the steps done so far stay recorded for
    /// [`Lifecycle::stop`] to undo.
    pub fn start(&mut self, t: Target<'_>, exec: &mut PassthroughExecutor) -> Result<(), Error> {
        let host = t.host;
        let sbdf = host.sbdf();
        let pt = |what: &str, e: PtError| Error::Unsupported {
            device: host.to_string(),
            message: format!("{what}: {e}"),
        };
        // Before touching anything: can Xen assign it to this domain at all?
        exec.test_assign(sbdf)
            .map_err(|e| refused_assign(host, exec.domid(), "test_assign_device", &e))?;
        if let Some(d) = t.dev.detach_host_driver()? {
            tracing::info!(%host, driver = %d, "dom0 driver unbound");
            self.done.push(Step::DriverDetached);
        }
        t.dev.enable_decode()?;
        self.done.push(Step::DecodeOn);
        if t.msix_cap.is_some() {
            exec.prepare_msix(sbdf)
                .map_err(|e| pt("PHYSDEVOP_prepare_msix", e))?;
            self.done.push(Step::MsixPrepared);
        }
        match t.dev.reset() {
            Ok(true) => self.done.push(Step::Reset),
            Ok(false) => {
                tracing::warn!(%host, "the function has no reset method: dom0's device state reaches the guest")
            }
            Err(e) => return Err(e),
        }
        // The guest starts with MSI and MSI-X disabled; so does the device (dom0's driver may
        // have left Enable set, and a reset method need not clear it). One 16-bit write each.
        if let Some(cap) = t.msix_cap {
            let ctl = t.dev.read_config_word(cap + MSIX_CONTROL)?;
            let off = crate::msix::FLAGS_MASKALL | crate::msix::FLAGS_ENABLE;
            if ctl & off != 0 {
                let v = ctl & !off;
                t.dev.write_config(cap + MSIX_CONTROL, &v.to_le_bytes())?;
            }
        }
        if let Some(cap) = t.msi_cap {
            let ctl = t.dev.read_config_word(cap + 2)?;
            if ctl & crate::msi::FLAGS_ENABLE != 0 {
                let v = ctl & !crate::msi::FLAGS_ENABLE;
                t.dev.write_config(cap + 2, &v.to_le_bytes())?;
            }
        }
        let domid = exec.domid();
        exec.assign(sbdf)
            .map_err(|e| refused_assign(host, domid, "XEN_DOMCTL_assign_device", &e))?;
        self.done.push(Step::Assigned);
        // Recorded first: a partial grant is revoked by stop (the executor revokes what it
        // granted).
        self.done.push(Step::Permitted);
        let bars: Vec<BarInfo> = (0..6).filter_map(|i| t.dev.bar(i)).collect();
        for b in &bars {
            match permission_of(b) {
                Some((true, port, nr)) => {
                    let (Ok(p), Ok(n)) = (u32::try_from(port), u32::try_from(nr)) else {
                        continue;
                    };
                    exec.ioport_permission(p, n, true)
                        .map_err(|e| pt("XEN_DOMCTL_ioport_permission", e))?;
                    self.granted.push((true, port, nr));
                }
                Some((false, mfn, nr)) => {
                    exec.iomem_permission(mfn, nr, true)
                        .map_err(|e| pt("XEN_DOMCTL_iomem_permission", e))?;
                    self.granted.push((false, mfn, nr));
                }
                None => {}
            }
        }
        tracing::info!(%host, domid = exec.domid(), steps = ?self.done, "assigned");
        Ok(())
    }

    /// Undo the recorded steps (see the module docs); with `guest_alive` false the domain is
    /// gone and only dom0's side is undone (Xen dropped its permissions with it; the
    /// deassignment takes the function back from dom_io). `unmap_and_unbind` removes the
    /// function's mappings and vectors and clears its host MSI / MSI-X Enable; it runs after
    /// Bus Master is off and before the reset.
    pub fn stop(
        &mut self,
        host: PciAddress,
        dev: &mut dyn HostDevice,
        exec: &mut PassthroughExecutor,
        guest_alive: bool,
        unmap_and_unbind: &mut dyn FnMut(
            &mut dyn HostDevice,
            &mut PassthroughExecutor,
        ) -> Vec<String>,
    ) {
        let sbdf = host.sbdf();
        let mut errs: Vec<String> = Vec::new();
        let has = |s: Step, done: &[Step]| done.contains(&s);
        if has(Step::DecodeOn, &self.done) {
            // Bus Master off: one 16-bit read-modify-write of the command register.
            match dev.read_config_word(crate::header::COMMAND) {
                Ok(c) if c & crate::header::CMD_MASTER != 0 => {
                    let v = c & !crate::header::CMD_MASTER;
                    if let Err(e) = dev.write_config(crate::header::COMMAND, &v.to_le_bytes()) {
                        errs.push(format!("bus master off: {e}"));
                    }
                }
                Ok(_) => {}
                Err(e) => errs.push(format!("bus master off: {e}")),
            }
        }
        errs.extend(unmap_and_unbind(dev, exec));
        if has(Step::DecodeOn, &self.done) {
            match dev.reset() {
                Ok(_) => {}
                Err(e) => errs.push(format!("reset: {e}")),
            }
        }
        if has(Step::MsixPrepared, &self.done) {
            if let Err(e) = exec.release_msix(sbdf) {
                errs.push(format!("PHYSDEVOP_release_msix: {e}"));
            }
        }
        if has(Step::Assigned, &self.done) {
            if let Err(e) = exec.deassign(sbdf) {
                errs.push(format!("XEN_DOMCTL_deassign_device: {e}"));
            }
        }
        if !guest_alive {
            self.granted.clear();
        }
        if has(Step::Permitted, &self.done) && guest_alive {
            // Only this function's: another function of the guest may still be mapped.
            for (io, first, nr) in std::mem::take(&mut self.granted) {
                let r = if io {
                    exec.ioport_permission(first as u32, nr as u32, false)
                } else {
                    exec.iomem_permission(first, nr, false)
                };
                if let Err(e) = r {
                    errs.push(format!("revoking permission {first:#x}+{nr:#x}: {e}"));
                }
            }
        }
        if has(Step::DecodeOn, &self.done) {
            if let Err(e) = dev.disable_decode() {
                errs.push(format!("host decode off: {e}"));
            }
        }
        self.done.retain(|s| *s == Step::DriverDetached);
        if errs.is_empty() {
            tracing::info!(%host, "handed back: bus master off, unmapped, unbound, reset, deassigned");
        } else {
            for e in &errs {
                tracing::error!(%host, "hand-back step failed: {e}");
            }
        }
        self.stop_errors = errs;
    }

    /// Hand back a function a bridge that died left assigned, once its domain is gone
    /// (`pci-host-bridge reclaim`): Xen freed the guest's mappings, pirqs and permissions and
    /// quarantined the function in dom_io; what is left is dom0's side, as [`Lifecycle::stop`]
    /// does it for a dead guest — Bus Master off, reset, `release_msix` (if MSI-X: the dead
    /// bridge prepared it), deassign from `DOMID_IO`, decode off, and dom0's driver re-probed.
    /// Returns the failed steps (empty: all done).
    pub fn reclaim(
        host: PciAddress,
        dev: &mut dyn HostDevice,
        msix: bool,
        exec: &mut PassthroughExecutor,
    ) -> Vec<String> {
        let mut l = Lifecycle::default();
        l.done.push(Step::DecodeOn);
        if msix {
            // The executor releases only what it prepared: record the dead bridge's prepare.
            exec.adopt_prepared(host.sbdf());
            l.done.push(Step::MsixPrepared);
        }
        l.done.push(Step::Assigned);
        l.stop(host, dev, exec, false, &mut |_, _| Vec::new());
        let mut errs = l.stop_errors;
        if let Err(e) = dev.reprobe_host_driver() {
            errs.push(format!("re-probing dom0's driver: {e}"));
        }
        errs
    }

    /// The failures of the last stop.
    pub fn stop_errors(&self) -> &[String] {
        &self.stop_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_ports() {
        let m = BarInfo {
            kind: BarKind::Mem64,
            prefetchable: true,
            host_addr: 0x38_0002_0000,
            size: 0x1_0000,
        };
        assert_eq!(permission_of(&m), Some((false, 0x380_0020, 16)));
        let io = BarInfo {
            kind: BarKind::Io,
            prefetchable: false,
            host_addr: 0xe000,
            size: 0x20,
        };
        assert_eq!(permission_of(&io), Some((true, 0xe000, 0x20)));
        // 0xfe000f80..0xfe001080 spans two frames.
        let sub = BarInfo {
            kind: BarKind::Mem32,
            prefetchable: false,
            host_addr: 0xfe00_0f80,
            size: 0x100,
        };
        assert_eq!(permission_of(&sub), Some((false, 0xfe000, 2)));
    }
}
