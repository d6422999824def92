//! Layout conformance of `xen_abi` with Debian's real headers.
//!
//! `tests/c/abi_layout.c` is compiled with the system C compiler against libxen-dev (Xen's
//! public headers) and linux-libc-dev (the Linux uapi `<xen/privcmd.h>`, `<xen/evtchn.h>`), and
//! once more against libxen-dev's own copies (`<xen/sys/privcmd.h>`, `<xen/sys/evtchn.h>`). It
//! prints sizes, alignments, field offsets/sizes, bit-field bytes and constants as `key value`
//! lines; this test compares every one of them with the Rust side and fails if:
//! - a Rust value differs from the C value (all mismatches are listed);
//! - xen-abi (`public.rs`, `linux.rs`, `domctl.rs`) gains a `pub const`/`pub const fn`/
//!   `pub struct`/`pub type` this test does not compare, or a struct gains a field (the field lists below are checked exhaustively at
//!   compile time);
//! - the C program prints something no Rust item was compared with;
//! - the two privcmd/evtchn header copies disagree;
//! - the compiler or a header is missing (the message names the apt package).
//!
//! This file is a table: what the Rust side declares (structs with every field, types,
//! constants, const-fn samples, encoder layouts), each next to the C key the probe prints for
//! it; building and running the probe, the comparison and the two tests are in `check.rs`.
#![forbid(unsafe_code)]

// Shared with the other ABI test; kept out of the `tests` library so this file does not
// depend on tests/src/lib.rs.
#[path = "../../src/cc.rs"]
mod cc;

mod check;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

use xen_abi::passthrough::{Hypercall, PtOp};
use xen_abi::*;

/// The Rust sources under test (the xen-abi crate's root modules, re-exported at its root), to
/// find items this test does not know about.
const ABI_RS: [(&str, &str); 3] = [
    ("public", include_str!("../../../xen-abi/src/public.rs")),
    ("linux", include_str!("../../../xen-abi/src/linux.rs")),
    ("domctl", include_str!("../../../xen-abi/src/domctl.rs")),
];
/// xen-abi's lib.rs: every private module it declares (and re-exports) must be in [`ABI_RS`].
const ABI_LIB_RS: &str = include_str!("../../../xen-abi/src/lib.rs");

// -------------------------------------------------------------------------------------------
// What the Rust side declares
// -------------------------------------------------------------------------------------------

struct RustField {
    name: &'static str,
    /// The C member (or, for a byte holding bit-fields, the `{...}` group the probe prints).
    c: &'static str,
    offset: usize,
    size: usize,
}

struct RustStruct {
    name: &'static str,
    c: &'static str,
    size: usize,
    align: usize,
    fields: Vec<RustField>,
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// One Rust struct and its C counterpart. The destructuring pattern without `..` makes the
/// build fail if the Rust struct gains or loses a field that is not listed here.
macro_rules! rust_struct {
    ($t:ident => $c:literal { $($f:ident => $cf:expr),* $(,)? }) => {{
        #[allow(dead_code)]
        fn every_field_is_listed(v: &$t) {
            let $t { $($f: _),* } = v;
        }
        RustStruct {
            name: stringify!($t),
            c: $c,
            size: size_of::<$t>(),
            align: align_of::<$t>(),
            fields: vec![$(RustField {
                name: stringify!($f),
                c: $cf,
                offset: offset_of!($t, $f),
                size: field_size(|s: &$t| &s.$f),
            }),*],
        }
    }};
}

/// The C group name of the bit-field byte of `struct ioreq` and of word 0 of `buf_ioreq`.
const IOREQ_BITS: &str = "{state,data_is_ptr,dir,df,_pad1}";
const BUF_IOREQ_BITS: &str = "{type,pad,dir,size,addr}";

fn structs() -> Vec<RustStruct> {
    vec![
        // xen/include/public/hvm/ioreq.h
        rust_struct!(Ioreq => "ioreq" {
            addr => "addr", data => "data", count => "count", size => "size",
            vp_eport => "vp_eport", _pad0 => "_pad0", flags => IOREQ_BITS, type_ => "type",
        }),
        rust_struct!(BufIoreq => "buf_ioreq" { word0 => BUF_IOREQ_BITS, data => "data" }),
        rust_struct!(BufferedIopage => "buffered_iopage" {
            read_pointer => "read_pointer", write_pointer => "write_pointer", buf_ioreq => "buf_ioreq",
        }),
        // xen/include/public/hvm/dm_op.h
        rust_struct!(XenDmOpCreateIoreqServer => "xen_dm_op_create_ioreq_server" {
            handle_bufioreq => "handle_bufioreq", pad => "pad", id => "id",
        }),
        rust_struct!(XenDmOpGetIoreqServerInfo => "xen_dm_op_get_ioreq_server_info" {
            id => "id", flags => "flags", bufioreq_port => "bufioreq_port",
            ioreq_gfn => "ioreq_gfn", bufioreq_gfn => "bufioreq_gfn",
        }),
        rust_struct!(XenDmOpIoreqServerRange => "xen_dm_op_ioreq_server_range" {
            id => "id", pad => "pad", type_ => "type", start => "start", end => "end",
        }),
        rust_struct!(XenDmOpSetIoreqServerState => "xen_dm_op_set_ioreq_server_state" {
            id => "id", enabled => "enabled", pad => "pad",
        }),
        rust_struct!(XenDmOpDestroyIoreqServer => "xen_dm_op_destroy_ioreq_server" { id => "id", pad => "pad" }),
        rust_struct!(XenDmOpSetPciIntxLevel => "xen_dm_op_set_pci_intx_level" {
            domain => "domain", bus => "bus", device => "device", intx => "intx", level => "level",
        }),
        rust_struct!(XenDmOpSetIsaIrqLevel => "xen_dm_op_set_isa_irq_level" { isa_irq => "isa_irq", level => "level" }),
        rust_struct!(XenDmOpInjectMsi => "xen_dm_op_inject_msi" { data => "data", pad => "pad", addr => "addr" }),
        rust_struct!(XenDmOpRemoteShutdown => "xen_dm_op_remote_shutdown" { reason => "reason" }),
        rust_struct!(XenDmOpNrVcpus => "xen_dm_op_nr_vcpus" { vcpus => "vcpus" }),
        rust_struct!(XenDmOp => "xen_dm_op" { op => "op", pad => "pad", u => "u" }),
        rust_struct!(XenDmOpBuf => "xen_dm_op_buf" { h => "h", size => "size" }),
        // xen/include/public/domctl.h, physdev.h (Xen 4.17: passthrough)
        rust_struct!(XenDomctl => "xen_domctl" {
            cmd => "cmd", interface_version => "interface_version", domain => "domain", _pad => "_pad", u => "u",
        }),
        rust_struct!(XenDomctlMemoryMapping => "xen_domctl_memory_mapping" {
            first_gfn => "first_gfn", first_mfn => "first_mfn", nr_mfns => "nr_mfns",
            add_mapping => "add_mapping", padding => "padding",
        }),
        rust_struct!(XenDomctlIoportMapping => "xen_domctl_ioport_mapping" {
            first_gport => "first_gport", first_mport => "first_mport", nr_ports => "nr_ports",
            add_mapping => "add_mapping",
        }),
        rust_struct!(XenDomctlIomemPermission => "xen_domctl_iomem_permission" {
            first_mfn => "first_mfn", nr_mfns => "nr_mfns", allow_access => "allow_access",
        }),
        rust_struct!(XenDomctlIoportPermission => "xen_domctl_ioport_permission" {
            first_port => "first_port", nr_ports => "nr_ports", allow_access => "allow_access",
        }),
        rust_struct!(XenDomctlIrqPermission => "xen_domctl_irq_permission" {
            pirq => "pirq", allow_access => "allow_access", pad => "pad",
        }),
        rust_struct!(XenDomctlAssignDevice => "xen_domctl_assign_device" { dev => "dev", flags => "flags", u => "u" }),
        rust_struct!(XenDomctlBindPtIrq => "xen_domctl_bind_pt_irq" {
            machine_irq => "machine_irq", irq_type => "irq_type", gvec => "u.msi.gvec",
            gflags => "u.msi.gflags", gtable => "u.msi.gtable",
        }),
        rust_struct!(PhysdevMapPirq => "physdev_map_pirq" {
            domid => "domid", type_ => "type", index => "index", pirq => "pirq", bus => "bus",
            devfn => "devfn", entry_nr => "entry_nr", table_base => "table_base",
        }),
        rust_struct!(PhysdevUnmapPirq => "physdev_unmap_pirq" { domid => "domid", pirq => "pirq" }),
        // Linux include/uapi/xen/privcmd.h
        rust_struct!(PrivcmdHypercall => "privcmd_hypercall" { op => "op", arg => "arg" }),
        rust_struct!(PrivcmdDmOpBuf => "privcmd_dm_op_buf" { uptr => "uptr", size => "size" }),
        rust_struct!(PrivcmdDmOp => "privcmd_dm_op" { dom => "dom", num => "num", ubufs => "ubufs" }),
        rust_struct!(PrivcmdMmapbatchV2 => "privcmd_mmapbatch_v2" {
            num => "num", dom => "dom", addr => "addr", arr => "arr", err => "err",
        }),
        rust_struct!(PrivcmdMmapResource => "privcmd_mmap_resource" {
            dom => "dom", type_ => "type", id => "id", idx => "idx", num => "num", addr => "addr",
        }),
        // Linux include/uapi/xen/evtchn.h
        rust_struct!(IoctlEvtchnBindInterdomain => "ioctl_evtchn_bind_interdomain" {
            remote_domain => "remote_domain", remote_port => "remote_port",
        }),
        rust_struct!(IoctlEvtchnBindUnboundPort => "ioctl_evtchn_bind_unbound_port" {
            remote_domain => "remote_domain",
        }),
        rust_struct!(IoctlEvtchnUnbind => "ioctl_evtchn_unbind" { port => "port" }),
        rust_struct!(IoctlEvtchnNotify => "ioctl_evtchn_notify" { port => "port" }),
        rust_struct!(IoctlEvtchnRestrictDomid => "ioctl_evtchn_restrict_domid" { domid => "domid" }),
    ]
}

/// `pub type` aliases: (Rust name, size, C key).
fn types() -> Vec<(&'static str, usize, &'static str)> {
    vec![
        ("DomId", size_of::<DomId>(), "sizeof domid_t"),
        ("IoservId", size_of::<IoservId>(), "sizeof ioservid_t"),
        (
            "EvtchnPort",
            size_of::<EvtchnPort>(),
            "sizeof evtchn_port_t",
        ),
    ]
}

/// `pub const` items: (Rust name, value, C key). Most keys are C macros (`const NAME`); the
/// offsets/sizes Rust keeps as constants are compared with the probe's offsetof/sizeof.
macro_rules! consts {
    ($($n:ident => $key:expr),* $(,)?) => { vec![$((stringify!($n), $n as u64, $key)),*] };
}

fn constants() -> Vec<(&'static str, u64, &'static str)> {
    consts![
        // xen.h
        __HYPERVISOR_MEMORY_OP => "const __HYPERVISOR_memory_op",
        __HYPERVISOR_SCHED_OP => "const __HYPERVISOR_sched_op",
        __HYPERVISOR_PHYSDEV_OP => "const __HYPERVISOR_physdev_op",
        __HYPERVISOR_DOMCTL => "const __HYPERVISOR_domctl",
        __HYPERVISOR_DM_OP => "const __HYPERVISOR_dm_op",
        DOMID_SELF => "const DOMID_SELF",
        DOMID_IO => "const DOMID_IO",
        DOMID_INVALID => "const DOMID_INVALID",
        // No public Xen header defines the x86 page size; libxen-dev's xenctrl.h does.
        XEN_PAGE_SIZE => "const XC_PAGE_SIZE",
        // hvm/ioreq.h
        IOREQ_READ => "const IOREQ_READ",
        IOREQ_WRITE => "const IOREQ_WRITE",
        STATE_IOREQ_NONE => "const STATE_IOREQ_NONE",
        STATE_IOREQ_READY => "const STATE_IOREQ_READY",
        STATE_IOREQ_INPROCESS => "const STATE_IOREQ_INPROCESS",
        STATE_IORESP_READY => "const STATE_IORESP_READY",
        IOREQ_TYPE_PIO => "const IOREQ_TYPE_PIO",
        IOREQ_TYPE_COPY => "const IOREQ_TYPE_COPY",
        IOREQ_TYPE_PCI_CONFIG => "const IOREQ_TYPE_PCI_CONFIG",
        IOREQ_TYPE_TIMEOFFSET => "const IOREQ_TYPE_TIMEOFFSET",
        IOREQ_TYPE_INVALIDATE => "const IOREQ_TYPE_INVALIDATE",
        IOREQ_FLAGS_OFFSET => "offset ioreq {state,data_is_ptr,dir,df,_pad1}",
        IOREQ_BUFFER_SLOT_NUM => "const IOREQ_BUFFER_SLOT_NUM",
        BUFFERED_READ_POINTER_OFFSET => "offset buffered_iopage read_pointer",
        BUFFERED_WRITE_POINTER_OFFSET => "offset buffered_iopage write_pointer",
        BUFFERED_SLOTS_OFFSET => "offset buffered_iopage buf_ioreq",
        // domctl.h / physdev.h / xen.h (passthrough, Xen 4.17)
        __HYPERVISOR_XEN_VERSION => "const __HYPERVISOR_xen_version",
        XENVER_VERSION => "const XENVER_version",
        XEN_DOMCTL_INTERFACE_VERSION_4_17 => "const XEN_DOMCTL_INTERFACE_VERSION",
        XEN_DOMCTL_PAYLOAD_OFFSET => "offset xen_domctl u",
        XEN_DOMCTL_ASSIGN_DEVICE_SBDF_OFFSET => "offset xen_domctl_assign_device u.pci.machine_sbdf",
        XEN_DOMCTL_GETDOMAININFO => "const XEN_DOMCTL_getdomaininfo",
        XEN_DOMINF_DYING => "const XEN_DOMINF_dying",
        XEN_DOMCTL_IRQ_PERMISSION => "const XEN_DOMCTL_irq_permission",
        XEN_DOMCTL_IOMEM_PERMISSION => "const XEN_DOMCTL_iomem_permission",
        XEN_DOMCTL_IOPORT_PERMISSION => "const XEN_DOMCTL_ioport_permission",
        XEN_DOMCTL_ASSIGN_DEVICE => "const XEN_DOMCTL_assign_device",
        XEN_DOMCTL_BIND_PT_IRQ => "const XEN_DOMCTL_bind_pt_irq",
        XEN_DOMCTL_MEMORY_MAPPING => "const XEN_DOMCTL_memory_mapping",
        XEN_DOMCTL_IOPORT_MAPPING => "const XEN_DOMCTL_ioport_mapping",
        XEN_DOMCTL_DEASSIGN_DEVICE => "const XEN_DOMCTL_deassign_device",
        XEN_DOMCTL_UNBIND_PT_IRQ => "const XEN_DOMCTL_unbind_pt_irq",
        XEN_DOMCTL_TEST_ASSIGN_DEVICE => "const XEN_DOMCTL_test_assign_device",
        XEN_DOMCTL_DEV_PCI => "const XEN_DOMCTL_DEV_PCI",
        PT_IRQ_TYPE_PCI => "const PT_IRQ_TYPE_PCI",
        PT_IRQ_TYPE_MSI => "const PT_IRQ_TYPE_MSI",
        XEN_DOMCTL_VMSI_X86_DEST_ID_MASK => "const XEN_DOMCTL_VMSI_X86_DEST_ID_MASK",
        XEN_DOMCTL_VMSI_X86_RH_MASK => "const XEN_DOMCTL_VMSI_X86_RH_MASK",
        XEN_DOMCTL_VMSI_X86_DM_MASK => "const XEN_DOMCTL_VMSI_X86_DM_MASK",
        XEN_DOMCTL_VMSI_X86_DELIV_MASK => "const XEN_DOMCTL_VMSI_X86_DELIV_MASK",
        XEN_DOMCTL_VMSI_X86_TRIG_MASK => "const XEN_DOMCTL_VMSI_X86_TRIG_MASK",
        XEN_DOMCTL_VMSI_X86_UNMASKED => "const XEN_DOMCTL_VMSI_X86_UNMASKED",
        PHYSDEVOP_MAP_PIRQ => "const PHYSDEVOP_map_pirq",
        PHYSDEVOP_UNMAP_PIRQ => "const PHYSDEVOP_unmap_pirq",
        PHYSDEVOP_PREPARE_MSIX => "const PHYSDEVOP_prepare_msix",
        PHYSDEVOP_RELEASE_MSIX => "const PHYSDEVOP_release_msix",
        MAP_PIRQ_TYPE_MSI => "const MAP_PIRQ_TYPE_MSI",
        MAP_PIRQ_TYPE_GSI => "const MAP_PIRQ_TYPE_GSI",
        MAP_PIRQ_TYPE_MSI_SEG => "const MAP_PIRQ_TYPE_MSI_SEG",
        MAP_PIRQ_TYPE_MULTI_MSI => "const MAP_PIRQ_TYPE_MULTI_MSI",
        ACPI_PM1A_EVT_BLK_ADDRESS_V1 => "const ACPI_PM1A_EVT_BLK_ADDRESS_V1",
        ACPI_PM1A_CNT_BLK_ADDRESS_V1 => "const ACPI_PM1A_CNT_BLK_ADDRESS_V1",
        // hvm/hvm_op.h
        HVM_IOREQSRV_BUFIOREQ_OFF => "const HVM_IOREQSRV_BUFIOREQ_OFF",
        HVM_IOREQSRV_BUFIOREQ_LEGACY => "const HVM_IOREQSRV_BUFIOREQ_LEGACY",
        HVM_IOREQSRV_BUFIOREQ_ATOMIC => "const HVM_IOREQSRV_BUFIOREQ_ATOMIC",
        // hvm/dm_op.h
        XEN_DMOP_CREATE_IOREQ_SERVER => "const XEN_DMOP_create_ioreq_server",
        XEN_DMOP_GET_IOREQ_SERVER_INFO => "const XEN_DMOP_get_ioreq_server_info",
        XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER => "const XEN_DMOP_map_io_range_to_ioreq_server",
        XEN_DMOP_UNMAP_IO_RANGE_FROM_IOREQ_SERVER => "const XEN_DMOP_unmap_io_range_from_ioreq_server",
        XEN_DMOP_SET_IOREQ_SERVER_STATE => "const XEN_DMOP_set_ioreq_server_state",
        XEN_DMOP_DESTROY_IOREQ_SERVER => "const XEN_DMOP_destroy_ioreq_server",
        XEN_DMOP_SET_PCI_INTX_LEVEL => "const XEN_DMOP_set_pci_intx_level",
        XEN_DMOP_SET_ISA_IRQ_LEVEL => "const XEN_DMOP_set_isa_irq_level",
        XEN_DMOP_INJECT_MSI => "const XEN_DMOP_inject_msi",
        XEN_DMOP_REMOTE_SHUTDOWN => "const XEN_DMOP_remote_shutdown",
        XEN_DMOP_NR_VCPUS => "const XEN_DMOP_nr_vcpus",
        XEN_DMOP_IO_RANGE_PORT => "const XEN_DMOP_IO_RANGE_PORT",
        XEN_DMOP_IO_RANGE_MEMORY => "const XEN_DMOP_IO_RANGE_MEMORY",
        XEN_DMOP_IO_RANGE_PCI => "const XEN_DMOP_IO_RANGE_PCI",
        XEN_DMOP_NO_GFNS => "const XEN_DMOP_no_gfns",
        XEN_DM_OP_PAYLOAD_OFFSET => "offset xen_dm_op u",
        XEN_DM_OP_SIZE => "sizeof xen_dm_op",
        // sched.h
        SHUTDOWN_POWEROFF => "const SHUTDOWN_poweroff",
        SHUTDOWN_REBOOT => "const SHUTDOWN_reboot",
        SHUTDOWN_SUSPEND => "const SHUTDOWN_suspend",
        SHUTDOWN_CRASH => "const SHUTDOWN_crash",
        SHUTDOWN_WATCHDOG => "const SHUTDOWN_watchdog",
        SHUTDOWN_SOFT_RESET => "const SHUTDOWN_soft_reset",
        // memory.h
        XENMEM_ACQUIRE_RESOURCE => "const XENMEM_acquire_resource",
        XENMEM_RESOURCE_IOREQ_SERVER => "const XENMEM_resource_ioreq_server",
        XENMEM_RESOURCE_GRANT_TABLE => "const XENMEM_resource_grant_table",
        XENMEM_RESOURCE_IOREQ_SERVER_FRAME_BUFIOREQ => "const XENMEM_resource_ioreq_server_frame_bufioreq",
        // Linux privcmd.h
        IOCTL_PRIVCMD_HYPERCALL => "const IOCTL_PRIVCMD_HYPERCALL",
        IOCTL_PRIVCMD_MMAPBATCH_V2 => "const IOCTL_PRIVCMD_MMAPBATCH_V2",
        IOCTL_PRIVCMD_DM_OP => "const IOCTL_PRIVCMD_DM_OP",
        IOCTL_PRIVCMD_RESTRICT => "const IOCTL_PRIVCMD_RESTRICT",
        IOCTL_PRIVCMD_MMAP_RESOURCE => "const IOCTL_PRIVCMD_MMAP_RESOURCE",
        // Linux evtchn.h
        IOCTL_EVTCHN_BIND_INTERDOMAIN => "const IOCTL_EVTCHN_BIND_INTERDOMAIN",
        IOCTL_EVTCHN_BIND_UNBOUND_PORT => "const IOCTL_EVTCHN_BIND_UNBOUND_PORT",
        IOCTL_EVTCHN_UNBIND => "const IOCTL_EVTCHN_UNBIND",
        IOCTL_EVTCHN_NOTIFY => "const IOCTL_EVTCHN_NOTIFY",
        IOCTL_EVTCHN_RESET => "const IOCTL_EVTCHN_RESET",
        IOCTL_EVTCHN_RESTRICT_DOMID => "const IOCTL_EVTCHN_RESTRICT_DOMID",
    ]
}

/// Constants the public headers do not define: (Rust name, value, C key, why). Compared only
/// if a future header does print them.
fn skipped_constants() -> Vec<(&'static str, u64, &'static str, &'static str)> {
    vec![
        (
            "MAX_NR_IOREQ_SERVERS",
            MAX_NR_IOREQ_SERVERS as u64,
            "const MAX_NR_IOREQ_SERVERS",
            "hypervisor-internal (xen/include/xen/sched.h), not in Xen's public headers",
        ),
        (
            "MAX_NR_IO_RANGES",
            MAX_NR_IO_RANGES as u64,
            "const MAX_NR_IO_RANGES",
            "hypervisor-internal (xen/include/xen/ioreq.h), not in Xen's public headers",
        ),
    ]
}

/// `pub const fn` items, compared on sample arguments with the C macro: (Rust name, value,
/// C key). The keys are the probe's `SAMPLE(...)` expressions verbatim.
fn const_fn_samples() -> Vec<(&'static str, u64, &'static str)> {
    vec![
        (
            "pci_sbdf",
            pci_sbdf(0, 0, 3, 0) as u64,
            "sample SBDF(0, 0, 3, 0)",
        ),
        (
            "pci_sbdf",
            pci_sbdf(0x1234, 0xab, 0x1f, 7) as u64,
            "sample SBDF(0x1234, 0xab, 0x1f, 7)",
        ),
        (
            "pci_sbdf",
            pci_sbdf(0xffff, 0xff, 0x3f, 0xf) as u64,
            "sample SBDF(0xffff, 0xff, 0x3f, 0xf)",
        ),
        (
            "xenmem_resource_ioreq_server_frame_ioreq",
            xenmem_resource_ioreq_server_frame_ioreq(0),
            "sample XENMEM_resource_ioreq_server_frame_ioreq(0)",
        ),
        (
            "xenmem_resource_ioreq_server_frame_ioreq",
            xenmem_resource_ioreq_server_frame_ioreq(1),
            "sample XENMEM_resource_ioreq_server_frame_ioreq(1)",
        ),
        (
            "xenmem_resource_ioreq_server_frame_ioreq",
            xenmem_resource_ioreq_server_frame_ioreq(7),
            "sample XENMEM_resource_ioreq_server_frame_ioreq(7)",
        ),
        // _IOC_NONE 0, _IOC_WRITE 1, _IOC_READ 2 on x86.
        (
            "ioc",
            ioc(0, b'P', 5, 16),
            "sample _IOC(_IOC_NONE, 'P', 5, 16)",
        ),
        (
            "ioc",
            ioc(1, b'P', 8, 24),
            "sample _IOC(_IOC_WRITE, 'P', 8, 24)",
        ),
        (
            "ioc",
            ioc(2, b'E', 0x7f, 0x3fff),
            "sample _IOC(_IOC_READ, 'E', 0x7f, 0x3fff)",
        ),
        (
            "ioc",
            ioc(3, 0xff, 0xff, 0x3fff),
            "sample _IOC(_IOC_READ | _IOC_WRITE, 0xff, 0xff, 0x3fff)",
        ),
    ]
}

/// Layouts `xen_abi::passthrough` builds or reads as bytes, without a struct in xen-abi:
/// (what, Rust value, C key). The Rust values are found by running the encoder/decoder, so
/// they are what the code does, not a copy of the header.
fn encoder_layouts() -> Vec<(String, u64, &'static str)> {
    let mut v: Vec<(String, u64, &'static str)> = Vec::new();
    // struct physdev_pci_device, as PtOp::PrepareMsix / ReleaseMsix encode it: an sbdf whose
    // seg, bus and devfn bytes are all distinct shows where each lands.
    let sbdf: u32 = 0xA1B2_C3D4;
    for (name, op) in [
        ("PrepareMsix", PtOp::PrepareMsix { sbdf }),
        ("ReleaseMsix", PtOp::ReleaseMsix { sbdf }),
    ] {
        let Hypercall::Physdev { arg, .. } = op.encode_4_17(0) else {
            panic!("{name} is not a physdev op");
        };
        let at = |bytes: &[u8]| {
            arg.windows(bytes.len())
                .position(|w| w == bytes)
                .map_or(u64::MAX, |o| o as u64)
        };
        let what = |f: &str| format!("PtOp::{name} encoding: {f}");
        v.push((what("size"), arg.len() as u64, "sizeof physdev_pci_device"));
        v.push((
            what("offset of seg"),
            at(&[0xB2, 0xA1]),
            "offset physdev_pci_device seg",
        ));
        v.push((what("size of seg"), 2, "fieldsize physdev_pci_device seg"));
        v.push((
            what("offset of bus"),
            at(&[0xC3]),
            "offset physdev_pci_device bus",
        ));
        v.push((what("size of bus"), 1, "fieldsize physdev_pci_device bus"));
        v.push((
            what("offset of devfn"),
            at(&[0xD4]),
            "offset physdev_pci_device devfn",
        ));
        v.push((
            what("size of devfn"),
            1,
            "fieldsize physdev_pci_device devfn",
        ));
    }
    // struct xen_domctl_getdomaininfo, as PtOp::GetDomainInfo's decode_result reads it: the
    // offset whose domid it accepts as the echo, and the one whose u64 it returns.
    let dom: DomId = 0x1234;
    let p = XEN_DOMCTL_PAYLOAD_OFFSET;
    let len = std::mem::size_of::<XenDomctl>();
    let decode = |buf: &[u8]| PtOp::GetDomainInfo.decode_result(dom, 0, buf).ok();
    let domain_at = (0..len - p - 1)
        .find(|&o| {
            let mut b = vec![0u8; len];
            b[p + o..p + o + 2].copy_from_slice(&dom.to_le_bytes());
            decode(&b).is_some()
        })
        .map_or(u64::MAX, |o| o as u64);
    let marker: u64 = 0x8877_6655_4433_2211;
    let max_pages_at = (0..len - p - 7)
        .find(|&o| {
            let mut b = vec![0u8; len];
            b[p + o..p + o + 8].copy_from_slice(&marker.to_le_bytes());
            if let Ok(d) = usize::try_from(domain_at) {
                b[p + d..p + d + 2].copy_from_slice(&dom.to_le_bytes());
            }
            decode(&b) == Some(marker)
        })
        .map_or(u64::MAX, |o| o as u64);
    let what = |f: &str| format!("PtOp::GetDomainInfo.decode_result: {f}");
    v.push((
        what("offset of the echoed domain"),
        domain_at,
        "offset xen_domctl_getdomaininfo domain",
    ));
    v.push((
        what("size of domain (read as u16)"),
        2,
        "fieldsize xen_domctl_getdomaininfo domain",
    ));
    v.push((
        what("offset of max_pages"),
        max_pages_at,
        "offset xen_domctl_getdomaininfo max_pages",
    ));
    v.push((
        what("size of max_pages (read as u64)"),
        8,
        "fieldsize xen_domctl_getdomaininfo max_pages",
    ));
    // Not read by the Rust side yet; the Xen 4.17 layout, so that a reader starts from a
    // checked number.
    for (f, off, size) in [("flags", 4, 4), ("tot_pages", 8, 8)] {
        v.push((
            format!("xen_domctl_getdomaininfo.{f} offset (Xen 4.17, no Rust reader)"),
            off,
            match f {
                "flags" => "offset xen_domctl_getdomaininfo flags",
                _ => "offset xen_domctl_getdomaininfo tot_pages",
            },
        ));
        v.push((
            format!("xen_domctl_getdomaininfo.{f} size (Xen 4.17, no Rust reader)"),
            size,
            match f {
                "flags" => "fieldsize xen_domctl_getdomaininfo flags",
                _ => "fieldsize xen_domctl_getdomaininfo tot_pages",
            },
        ));
    }
    v
}
