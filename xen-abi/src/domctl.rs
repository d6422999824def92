//! Passthrough's hypervisor interface (xen/include/public/domctl.h, physdev.h, version.h).

#![allow(missing_docs)] // names are Xen's own; each block names the header it comes from

use crate::DomId;

// ---------------------------------------------------------------------------------------------
// xen/include/public/domctl.h, physdev.h, version.h — passthrough. domctl is version-locked:
// these layouts are Xen 4.17's (XEN_DOMCTL_INTERFACE_VERSION 0x15), checked against Debian's
// libxen-dev 4.17 by the layout test. Other releases are refused at run time.
// ---------------------------------------------------------------------------------------------

pub const __HYPERVISOR_XEN_VERSION: u64 = 17;
/// `XENVER_version`: returns `major << 16 | minor`.
pub const XENVER_VERSION: u64 = 0;

/// The domctl interface version of Xen 4.17.
pub const XEN_DOMCTL_INTERFACE_VERSION_4_17: u32 = 0x15;

pub const XEN_DOMCTL_GETDOMAININFO: u32 = 5;
/// `XEN_DOMINF_dying` in `xen_domctl_getdomaininfo.flags`: the domain is being destroyed.
pub const XEN_DOMINF_DYING: u32 = 1;
pub const XEN_DOMCTL_IRQ_PERMISSION: u32 = 19;
pub const XEN_DOMCTL_IOMEM_PERMISSION: u32 = 20;
pub const XEN_DOMCTL_IOPORT_PERMISSION: u32 = 21;
pub const XEN_DOMCTL_ASSIGN_DEVICE: u32 = 37;
pub const XEN_DOMCTL_BIND_PT_IRQ: u32 = 38;
pub const XEN_DOMCTL_MEMORY_MAPPING: u32 = 39;
pub const XEN_DOMCTL_IOPORT_MAPPING: u32 = 40;
pub const XEN_DOMCTL_TEST_ASSIGN_DEVICE: u32 = 45;
pub const XEN_DOMCTL_DEASSIGN_DEVICE: u32 = 47;
pub const XEN_DOMCTL_UNBIND_PT_IRQ: u32 = 48;
pub const XEN_DOMCTL_DEV_PCI: u32 = 0;

/// `enum pt_irq_type`: PT_IRQ_TYPE_PCI 0, ISA 1, MSI 2.
pub const PT_IRQ_TYPE_PCI: u32 = 0;
pub const PT_IRQ_TYPE_MSI: u32 = 2;

/// `gflags` of bind_pt_irq for MSI (XEN_DOMCTL_VMSI_X86_*).
pub const XEN_DOMCTL_VMSI_X86_DEST_ID_MASK: u32 = 0x0000FF;
pub const XEN_DOMCTL_VMSI_X86_RH_MASK: u32 = 0x000100;
pub const XEN_DOMCTL_VMSI_X86_DM_MASK: u32 = 0x000200;
pub const XEN_DOMCTL_VMSI_X86_DELIV_MASK: u32 = 0x007000;
pub const XEN_DOMCTL_VMSI_X86_TRIG_MASK: u32 = 0x008000;
pub const XEN_DOMCTL_VMSI_X86_UNMASKED: u32 = 0x010000;

pub const PHYSDEVOP_MAP_PIRQ: u64 = 13;
pub const PHYSDEVOP_UNMAP_PIRQ: u64 = 14;
pub const PHYSDEVOP_PREPARE_MSIX: u64 = 30;
pub const PHYSDEVOP_RELEASE_MSIX: u64 = 31;
pub const MAP_PIRQ_TYPE_MSI: i32 = 0;
pub const MAP_PIRQ_TYPE_GSI: i32 = 1;
pub const MAP_PIRQ_TYPE_MSI_SEG: i32 = 3;
pub const MAP_PIRQ_TYPE_MULTI_MSI: i32 = 4;

/// `struct xen_domctl`: the envelope; `u` is a 128-byte union (its `pad[128]` member).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XenDomctl {
    pub cmd: u32,
    pub interface_version: u32,
    pub domain: DomId,
    pub _pad: [u16; 3],
    pub u: [u64; 16],
}
/// Offset of the union inside [`XenDomctl`].
pub const XEN_DOMCTL_PAYLOAD_OFFSET: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDomctlMemoryMapping {
    pub first_gfn: u64,
    pub first_mfn: u64,
    pub nr_mfns: u64,
    pub add_mapping: u32,
    pub padding: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDomctlIoportMapping {
    pub first_gport: u32,
    pub first_mport: u32,
    pub nr_ports: u32,
    pub add_mapping: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDomctlIomemPermission {
    pub first_mfn: u64,
    pub nr_mfns: u64,
    pub allow_access: u8,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDomctlIoportPermission {
    pub first_port: u32,
    pub nr_ports: u32,
    pub allow_access: u8,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDomctlIrqPermission {
    pub pirq: u32,
    pub allow_access: u8,
    pub pad: [u8; 3],
}
/// `struct xen_domctl_assign_device`. `u` is a 16-byte union (because of its device-tree
/// member); a PCI device's `u.pci.machine_sbdf` is its first word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDomctlAssignDevice {
    pub dev: u32,
    pub flags: u32,
    pub u: [u64; 2],
}
/// Offset of `u.pci.machine_sbdf` inside [`XenDomctlAssignDevice`].
pub const XEN_DOMCTL_ASSIGN_DEVICE_SBDF_OFFSET: usize = 8;
/// `struct xen_domctl_bind_pt_irq` with the MSI member of its union (`u.msi`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDomctlBindPtIrq {
    pub machine_irq: u32,
    pub irq_type: u32,
    pub gvec: u8,
    pub gflags: u32,
    pub gtable: u64,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PhysdevMapPirq {
    pub domid: DomId,
    pub type_: i32,
    pub index: i32,
    pub pirq: i32,
    /// Bus; the segment in the high 16 bits for MSI_SEG and MULTI_MSI.
    pub bus: i32,
    pub devfn: i32,
    pub entry_nr: i32,
    pub table_base: u64,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PhysdevUnmapPirq {
    pub domid: DomId,
    pub pirq: i32,
}
