//! Passthrough hypercalls as data: domctls and physdev ops, with their Xen 4.17 encodings.
//!
//! Unlike DM ops these are not a stable ABI: `struct xen_domctl` carries an interface version
//! that must equal the hypervisor's (0x15 for Xen 4.17), and the layouts change between
//! releases. Only 4.17 is implemented — the release whose headers the layout test checks —
//! and the xen transport refuses any other hypervisor version with a clear message.
//! xen-sim receives the same operations as data and records them.

use serde::{Deserialize, Serialize};

use crate::*;

/// What [`PtOp::MapPirqMsi`] asks Xen to map: `nvec` vectors of host function `sbdf`, from
/// MSI-X table `entry` (0 for MSI); `table_base` is the host address of the BAR holding the
/// MSI-X table (0 for MSI; Xen adds the table offset itself, xen/arch/x86/msi.c:847-860).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsiMap {
    /// The host function (`seg << 16 | bus << 8 | devfn`).
    pub sbdf: u32,
    /// The MSI-X table entry; 0 for MSI.
    pub entry: u32,
    /// The MSI-X table BAR's host address; 0 for MSI.
    pub table_base: u64,
    /// How many vectors (a power of two up to 32 for multi-message MSI; 1 for MSI-X).
    pub nvec: u32,
}

/// One passthrough operation on the guest.
#[allow(missing_docs)] // field names follow domctl.h / physdev.h
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PtOp {
    /// `XEN_DOMCTL_memory_mapping`.
    MemoryMapping {
        gfn: u64,
        mfn: u64,
        nr: u64,
        add: bool,
    },
    /// `XEN_DOMCTL_ioport_mapping`.
    IoportMapping {
        gport: u32,
        mport: u32,
        nr: u32,
        add: bool,
    },
    /// `XEN_DOMCTL_iomem_permission`.
    IomemPermission { mfn: u64, nr: u64, allow: bool },
    /// `XEN_DOMCTL_ioport_permission`.
    IoportPermission { port: u32, nr: u32, allow: bool },
    /// `XEN_DOMCTL_irq_permission`.
    IrqPermission { pirq: u32, allow: bool },
    /// `XEN_DOMCTL_assign_device` (PCI; `sbdf` = seg << 16 | bus << 8 | devfn).
    AssignDevice { sbdf: u32 },
    /// `XEN_DOMCTL_deassign_device`, from the guest or, with `from_dom_io`, from Xen's
    /// quarantine domain `DOMID_IO` (where Xen puts a dead domain's devices,
    /// xen/drivers/passthrough/pci.c:849-859 in 4.17; libxl_pci.c:904 de-quarantines the same way).
    DeassignDevice {
        sbdf: u32,
        #[serde(default)]
        from_dom_io: bool,
    },
    /// `XEN_DOMCTL_test_assign_device` against the guest: a read-only probe. Xen answers
    /// EOPNOTSUPP before looking at the device when the domain has no IOMMU context
    /// (`iommu_do_domctl`, xen/drivers/passthrough/iommu.c:615-622 in 4.17), EINVAL when the
    /// device is not assignable (owned by another guest, or unknown to Xen: pci.c:1642-1649),
    /// 0 otherwise.
    TestAssignDevice { sbdf: u32 },
    /// `XEN_DOMCTL_getdomaininfo`; the result is the domain's `max_pages`. Xen 4.17 returns
    /// the first domain whose id is >= the one asked for, so the echoed id is checked.
    GetDomainInfo,
    /// `PHYSDEVOP_prepare_msix` (`struct physdev_pci_device`): Xen reads the MSI-X table
    /// location while dom0 still owns the function; without it the first MSI-X map_pirq of a
    /// domU-owned function fails with ENODATA (xen/arch/x86/msi.c:821-886, physdev.c:483-494).
    PrepareMsix { sbdf: u32 },
    /// `PHYSDEVOP_release_msix`: the reverse of `prepare_msix`, at hand-back.
    ReleaseMsix { sbdf: u32 },
    /// `PHYSDEVOP_map_pirq` for MSI/MSI-X (`MAP_PIRQ_TYPE_MSI_SEG`, or `MULTI_MSI` when
    /// `nvec` > 1); returns the pirq Xen allocated. `entry` is the MSI-X table entry (0 for MSI).
    MapPirqMsi(MsiMap),
    /// `PHYSDEVOP_unmap_pirq`.
    UnmapPirq { pirq: u32 },
    /// `XEN_DOMCTL_bind_pt_irq` with `PT_IRQ_TYPE_MSI`.
    BindPtIrqMsi {
        pirq: u32,
        gvec: u8,
        gflags: u32,
        gtable: u64,
    },
    /// `XEN_DOMCTL_unbind_pt_irq` with `PT_IRQ_TYPE_MSI`.
    UnbindPtIrqMsi {
        pirq: u32,
        gvec: u8,
        gflags: u32,
        gtable: u64,
    },
}

/// The `"op"` names [`PtOp`] serializes to (how xen-sim's record names passthrough ops).
pub const PT_OP_NAMES: [&str; 15] = [
    "memory_mapping",
    "ioport_mapping",
    "iomem_permission",
    "ioport_permission",
    "irq_permission",
    "assign_device",
    "deassign_device",
    "test_assign_device",
    "get_domain_info",
    "prepare_msix",
    "release_msix",
    "map_pirq_msi",
    "unmap_pirq",
    "bind_pt_irq_msi",
    "unbind_pt_irq_msi",
];

/// Whether a recorded operation name is a passthrough hypercall (not a DM op).
pub fn is_passthrough_op(name: &str) -> bool {
    PT_OP_NAMES.contains(&name)
}

/// A hypercall ready for `IOCTL_PRIVCMD_HYPERCALL`: which one, its command, its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// `__HYPERVISOR_domctl` with a `struct xen_domctl`.
    Domctl(Vec<u8>),
    /// `__HYPERVISOR_physdev_op(cmd, arg)`.
    Physdev {
        /// `PHYSDEVOP_*`.
        cmd: u64,
        /// The argument struct.
        arg: Vec<u8>,
    },
}

struct W(Vec<u8>);
impl W {
    fn new(n: usize) -> Self {
        W(vec![0; n])
    }
    fn u8(&mut self, o: usize, v: u8) -> &mut Self {
        self.0[o] = v;
        self
    }
    fn u16(&mut self, o: usize, v: u16) -> &mut Self {
        self.0[o..o + 2].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, o: usize, v: u32) -> &mut Self {
        self.0[o..o + 4].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, o: usize, v: u64) -> &mut Self {
        self.0[o..o + 8].copy_from_slice(&v.to_le_bytes());
        self
    }
}

/// `sbdf` split as map_pirq wants it: (segment << 16 | bus, devfn).
pub fn pirq_bus_devfn(sbdf: u32) -> (i32, i32) {
    let seg = sbdf >> 16;
    let bus = (sbdf >> 8) & 0xFF;
    (((seg << 16) | bus) as i32, (sbdf & 0xFF) as i32)
}

impl PtOp {
    /// Encode for Xen 4.17 (domctl interface version 0x15) against domain `domid`.
    pub fn encode_4_17(&self, domid: DomId) -> Hypercall {
        let domctl = |cmd: u32, fill: &dyn Fn(&mut W)| {
            let mut w = W::new(std::mem::size_of::<XenDomctl>());
            w.u32(0, cmd)
                .u32(4, XEN_DOMCTL_INTERFACE_VERSION_4_17)
                .u16(8, domid);
            let mut p = W::new(128);
            fill(&mut p);
            w.0[XEN_DOMCTL_PAYLOAD_OFFSET..].copy_from_slice(&p.0);
            Hypercall::Domctl(w.0)
        };
        match *self {
            PtOp::MemoryMapping { gfn, mfn, nr, add } => domctl(XEN_DOMCTL_MEMORY_MAPPING, &|p| {
                p.u64(0, gfn)
                    .u64(8, mfn)
                    .u64(16, nr)
                    .u32(24, u32::from(add));
            }),
            PtOp::IoportMapping {
                gport,
                mport,
                nr,
                add,
            } => domctl(XEN_DOMCTL_IOPORT_MAPPING, &|p| {
                p.u32(0, gport)
                    .u32(4, mport)
                    .u32(8, nr)
                    .u32(12, u32::from(add));
            }),
            PtOp::IomemPermission { mfn, nr, allow } => domctl(XEN_DOMCTL_IOMEM_PERMISSION, &|p| {
                p.u64(0, mfn).u64(8, nr).u8(16, u8::from(allow));
            }),
            PtOp::IoportPermission { port, nr, allow } => {
                domctl(XEN_DOMCTL_IOPORT_PERMISSION, &|p| {
                    p.u32(0, port).u32(4, nr).u8(8, u8::from(allow));
                })
            }
            PtOp::IrqPermission { pirq, allow } => domctl(XEN_DOMCTL_IRQ_PERMISSION, &|p| {
                p.u32(0, pirq).u8(4, u8::from(allow));
            }),
            PtOp::AssignDevice { sbdf } => domctl(XEN_DOMCTL_ASSIGN_DEVICE, &|p| {
                p.u32(0, XEN_DOMCTL_DEV_PCI).u32(8, sbdf);
            }),
            PtOp::DeassignDevice { sbdf, from_dom_io } => {
                let mut h = domctl(XEN_DOMCTL_DEASSIGN_DEVICE, &|p| {
                    p.u32(0, XEN_DOMCTL_DEV_PCI).u32(8, sbdf);
                });
                if from_dom_io {
                    if let Hypercall::Domctl(b) = &mut h {
                        b[8..10].copy_from_slice(&DOMID_IO.to_le_bytes());
                    }
                }
                h
            }
            PtOp::TestAssignDevice { sbdf } => domctl(XEN_DOMCTL_TEST_ASSIGN_DEVICE, &|p| {
                p.u32(0, XEN_DOMCTL_DEV_PCI).u32(8, sbdf);
            }),
            PtOp::GetDomainInfo => domctl(XEN_DOMCTL_GETDOMAININFO, &|_| {}),
            PtOp::PrepareMsix { sbdf } | PtOp::ReleaseMsix { sbdf } => {
                let mut w = W::new(4);
                w.u16(0, (sbdf >> 16) as u16)
                    .u8(2, (sbdf >> 8) as u8)
                    .u8(3, sbdf as u8);
                Hypercall::Physdev {
                    cmd: if matches!(self, PtOp::PrepareMsix { .. }) {
                        PHYSDEVOP_PREPARE_MSIX
                    } else {
                        PHYSDEVOP_RELEASE_MSIX
                    },
                    arg: w.0,
                }
            }
            // Bind and unbind carry the same xen_domctl_bind_pt_irq; only the command differs.
            PtOp::BindPtIrqMsi {
                pirq,
                gvec,
                gflags,
                gtable,
            }
            | PtOp::UnbindPtIrqMsi {
                pirq,
                gvec,
                gflags,
                gtable,
            } => domctl(
                if matches!(self, PtOp::BindPtIrqMsi { .. }) {
                    XEN_DOMCTL_BIND_PT_IRQ
                } else {
                    XEN_DOMCTL_UNBIND_PT_IRQ
                },
                &|p| {
                    p.u32(0, pirq)
                        .u32(4, PT_IRQ_TYPE_MSI)
                        .u8(8, gvec)
                        .u32(12, gflags)
                        .u64(16, gtable);
                },
            ),
            PtOp::MapPirqMsi(m) => {
                let (sbdf, entry, table_base, nvec) = (m.sbdf, m.entry, m.table_base, m.nvec);
                let (bus, devfn) = pirq_bus_devfn(sbdf);
                let multi = nvec > 1;
                let mut w = W::new(std::mem::size_of::<PhysdevMapPirq>());
                w.u16(0, domid)
                    .u32(
                        4,
                        (if multi {
                            MAP_PIRQ_TYPE_MULTI_MSI
                        } else {
                            MAP_PIRQ_TYPE_MSI_SEG
                        }) as u32,
                    )
                    .u32(8, (-1i32) as u32)
                    .u32(12, (-1i32) as u32)
                    .u32(16, bus as u32)
                    .u32(20, devfn as u32)
                    .u32(24, if multi { nvec } else { entry })
                    .u64(32, table_base);
                Hypercall::Physdev {
                    cmd: PHYSDEVOP_MAP_PIRQ,
                    arg: w.0,
                }
            }
            PtOp::UnmapPirq { pirq } => {
                let mut w = W::new(std::mem::size_of::<PhysdevUnmapPirq>());
                w.u16(0, domid).u32(4, pirq);
                Hypercall::Physdev {
                    cmd: PHYSDEVOP_UNMAP_PIRQ,
                    arg: w.0,
                }
            }
        }
    }

    /// The pirq map_pirq returned, read from the argument after the hypercall.
    pub fn read_pirq(arg: &[u8]) -> Option<u32> {
        arg.get(12..16)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The value of a successful call, from the hypercall's non-negative return value `rc`
    /// and the argument buffer after the call (`out`, the bytes [`PtOp::encode_4_17`] made):
    /// - `map_pirq_msi`: the pirq Xen allocated;
    /// - `get_domain_info`: `max_pages`, or `Err` if Xen answered for another domain or the
    ///   domain is dying (`XEN_DOMINF_dying`);
    /// - `memory_mapping`: `rc`, which is the number of frames done when it is positive
    ///   (`map_mmio_regions` stops after 64 iterations, xen/arch/x86/mm/p2m.c:1670-1738 in 4.17;
    ///   `return i == nr ? 0 : i ?: ret`), 0 when all were done;
    /// - everything else: `rc` (0).
    pub fn decode_result(&self, domid: DomId, rc: u64, out: &[u8]) -> Result<u64, String> {
        let word = |o: usize| -> Option<u64> {
            out.get(o..o + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        match self {
            PtOp::MapPirqMsi(..) => Self::read_pirq(out)
                .map(u64::from)
                .ok_or_else(|| "map_pirq: short argument buffer".into()),
            PtOp::GetDomainInfo => {
                let p = XEN_DOMCTL_PAYLOAD_OFFSET;
                let echoed = out.get(p..p + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
                if echoed != Some(domid) {
                    return Err(format!(
                        "getdomaininfo answered for domain {echoed:?}, not {domid}: the domain is gone"
                    ));
                }
                let flags = out
                    .get(p + 4..p + 8)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if flags & XEN_DOMINF_DYING != 0 {
                    // Being destroyed: its p2m and pirqs are going, unmaps fail with EINVAL.
                    return Err(format!("domain {domid} is dying"));
                }
                word(p + 16).ok_or_else(|| "getdomaininfo: short buffer".into())
            }
            _ => Ok(rc),
        }
    }
}

/// `gflags` for bind_pt_irq from the guest's MSI address and data, as Xen defines them
/// (XEN_DOMCTL_VMSI_X86_*; QEMU's `msi_gflags`): destination id, redirection hint, destination
/// mode, delivery mode, trigger mode, and whether the vector is unmasked.
pub fn msi_gflags(addr: u64, data: u32, unmasked: bool) -> u32 {
    let dest = ((addr >> 12) & 0xFF) as u32;
    let rh = ((addr >> 3) & 1) as u32;
    let dm = ((addr >> 2) & 1) as u32;
    let deliv = (data >> 8) & 7;
    let trig = (data >> 15) & 1;
    (dest & XEN_DOMCTL_VMSI_X86_DEST_ID_MASK)
        | (rh << 8)
        | (dm << 9)
        | (deliv << 12)
        | (trig << 15)
        | if unmasked {
            XEN_DOMCTL_VMSI_X86_UNMASKED
        } else {
            0
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domctl_envelope_and_payload_offsets() {
        let Hypercall::Domctl(b) = (PtOp::MemoryMapping {
            gfn: 0xF1000,
            mfn: 0xE0000,
            nr: 16,
            add: true,
        })
        .encode_4_17(7) else {
            panic!()
        };
        assert_eq!(b.len(), 144);
        assert_eq!(&b[0..4], &XEN_DOMCTL_MEMORY_MAPPING.to_le_bytes());
        assert_eq!(&b[4..8], &0x15u32.to_le_bytes());
        assert_eq!(&b[8..10], &7u16.to_le_bytes());
        assert_eq!(&b[16..24], &0xF1000u64.to_le_bytes());
        assert_eq!(&b[40..44], &1u32.to_le_bytes());
    }

    #[test]
    fn map_pirq_puts_the_segment_in_the_high_half_of_bus() {
        let Hypercall::Physdev { cmd, arg } = (PtOp::MapPirqMsi(MsiMap {
            sbdf: 0x0001_0310,
            entry: 5,
            table_base: 0xFEB0_0000,
            nvec: 1,
        }))
        .encode_4_17(3) else {
            panic!()
        };
        assert_eq!(cmd, PHYSDEVOP_MAP_PIRQ);
        assert_eq!(arg.len(), 40);
        assert_eq!(&arg[16..20], &0x0001_0003u32.to_le_bytes());
        assert_eq!(&arg[20..24], &0x10u32.to_le_bytes());
        assert_eq!(&arg[24..28], &5u32.to_le_bytes());
    }

    #[test]
    fn op_names_are_the_serialized_ones() {
        let all = [
            PtOp::MemoryMapping {
                gfn: 0,
                mfn: 0,
                nr: 1,
                add: true,
            },
            PtOp::IoportMapping {
                gport: 0,
                mport: 0,
                nr: 1,
                add: true,
            },
            PtOp::IomemPermission {
                mfn: 0,
                nr: 1,
                allow: true,
            },
            PtOp::IoportPermission {
                port: 0,
                nr: 1,
                allow: true,
            },
            PtOp::IrqPermission {
                pirq: 0,
                allow: true,
            },
            PtOp::AssignDevice { sbdf: 0 },
            PtOp::DeassignDevice {
                sbdf: 0,
                from_dom_io: false,
            },
            PtOp::TestAssignDevice { sbdf: 0 },
            PtOp::GetDomainInfo,
            PtOp::PrepareMsix { sbdf: 0 },
            PtOp::ReleaseMsix { sbdf: 0 },
            PtOp::MapPirqMsi(MsiMap {
                sbdf: 0,
                entry: 0,
                table_base: 0,
                nvec: 1,
            }),
            PtOp::UnmapPirq { pirq: 0 },
            PtOp::BindPtIrqMsi {
                pirq: 0,
                gvec: 0,
                gflags: 0,
                gtable: 0,
            },
            PtOp::UnbindPtIrqMsi {
                pirq: 0,
                gvec: 0,
                gflags: 0,
                gtable: 0,
            },
        ];
        let names: Vec<String> = all
            .iter()
            .map(|o| {
                serde_json::to_value(o).unwrap()["op"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(names, PT_OP_NAMES);
    }

    #[test]
    fn gflags_follow_the_vmsi_masks() {
        // dest 3, logical, lowest priority, level, unmasked.
        let g = msi_gflags(0xFEE0_3004, 0x8100 | 0x31, true);
        assert_eq!(g & XEN_DOMCTL_VMSI_X86_DEST_ID_MASK, 3);
        assert_ne!(g & XEN_DOMCTL_VMSI_X86_DM_MASK, 0);
        assert_eq!((g & XEN_DOMCTL_VMSI_X86_DELIV_MASK) >> 12, 1);
        assert_ne!(g & XEN_DOMCTL_VMSI_X86_TRIG_MASK, 0);
        assert_ne!(g & XEN_DOMCTL_VMSI_X86_UNMASKED, 0);
    }
}
