//! Device assignment without pciback: the hypercalls around a passed-through function's life
//! (xen-abi.md 8.1, "Without pciback the DM must itself unbind dom0's driver (sysfs), grant
//! iomem/irq permissions, assign, and map BARs").
//!
//! - start ([`start_ops`]), before the guest runs: `XEN_DOMCTL_iomem_permission` for the host
//!   frames of every memory BAR (and the ROM), `XEN_DOMCTL_ioport_permission` for every I/O
//!   BAR, then `XEN_DOMCTL_assign_device`. IRQ permission is not granted here: for MSI / MSI-X
//!   `PHYSDEVOP_map_pirq` grants the domain its pirqs itself (Xen's `allocate_and_map_msi_pirq`
//!   calls `irq_permit_access`), and INTx is not given to the guest as a pirq at all (it goes
//!   through the ioapic process).
//! - stop ([`stop_ops`]), after the function unmapped its BARs and unbound its vectors:
//!   `XEN_DOMCTL_deassign_device`, then the permissions revoked. Handing the function back to
//!   dom0's driver is the backend's (sysfs: re-probe when dropped, after the server's
//!   teardown).
//!
//! Without pciback the device must still be assignable by Xen: owned by the hardware domain
//! (or quarantined in dom_io), not by another guest (xen/drivers/passthrough/pci.c).

use ioreq_server::passthrough::PtOp;

use crate::backend::{BarInfo, BarKind};
use crate::bars::PAGE_SIZE;

/// The permission ops for a function's BARs and ROM.
pub fn permissions(bars: &[Option<BarInfo>; 6], rom: Option<BarInfo>, allow: bool) -> Vec<PtOp> {
    let mut out = Vec::new();
    for b in bars.iter().flatten().chain(rom.iter()) {
        if b.size == 0 {
            continue;
        }
        match b.kind {
            BarKind::Io => {
                let (Ok(port), Ok(nr)) = (u32::try_from(b.host_addr), u32::try_from(b.size)) else {
                    continue;
                };
                out.push(PtOp::IoportPermission { port, nr, allow });
            }
            BarKind::Mem32 | BarKind::Mem64 => {
                // Whole frames covering the BAR (a sub-page BAR still needs its frame).
                let first = b.host_addr / PAGE_SIZE;
                let Some(end) = b.host_addr.checked_add(b.size) else {
                    continue;
                };
                let last = (end - 1) / PAGE_SIZE;
                out.push(PtOp::IomemPermission {
                    mfn: first,
                    nr: last - first + 1,
                    allow,
                });
            }
        }
    }
    out
}

/// What start does for host function `sbdf`: permissions, then assignment.
pub fn start_ops(sbdf: u32, bars: &[Option<BarInfo>; 6], rom: Option<BarInfo>) -> Vec<PtOp> {
    let mut v = permissions(bars, rom, true);
    v.push(PtOp::AssignDevice { sbdf });
    v
}

/// What stop does (after unmapping and unbinding): deassignment, then the permissions revoked.
pub fn stop_ops(sbdf: u32, bars: &[Option<BarInfo>; 6], rom: Option<BarInfo>) -> Vec<PtOp> {
    let mut v = vec![PtOp::DeassignDevice { sbdf }];
    v.extend(permissions(bars, rom, false));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_ports() {
        let mut bars = [None; 6];
        bars[0] = Some(BarInfo {
            kind: BarKind::Mem64,
            prefetchable: true,
            host_addr: 0x38_0002_0000,
            size: 0x1_0000,
        });
        bars[2] = Some(BarInfo {
            kind: BarKind::Io,
            prefetchable: false,
            host_addr: 0xe000,
            size: 0x20,
        });
        bars[3] = Some(BarInfo {
            kind: BarKind::Mem32,
            prefetchable: false,
            host_addr: 0xfe00_0f80,
            size: 0x100,
        });
        let ops = start_ops(0x0312, &bars, None);
        assert_eq!(
            ops,
            vec![
                PtOp::IomemPermission {
                    mfn: 0x380_0020,
                    nr: 16,
                    allow: true
                },
                PtOp::IoportPermission {
                    port: 0xe000,
                    nr: 0x20,
                    allow: true
                },
                // 0xfe000f80..0xfe001080 spans two frames.
                PtOp::IomemPermission {
                    mfn: 0xfe000,
                    nr: 2,
                    allow: true
                },
                PtOp::AssignDevice { sbdf: 0x0312 },
            ]
        );
        let stop = stop_ops(0x0312, &bars, None);
        assert_eq!(stop[0], PtOp::DeassignDevice { sbdf: 0x0312 });
        assert!(stop[1..].iter().all(|o| matches!(
            o,
            PtOp::IomemPermission { allow: false, .. }
                | PtOp::IoportPermission { allow: false, .. }
        )));
    }
}
