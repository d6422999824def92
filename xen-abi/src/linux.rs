//! Linux's Xen driver interfaces (include/uapi/xen/privcmd.h, evtchn.h): the ioctls a
//! device model reaches the hypervisor and its event channels through.

#![allow(missing_docs)] // names are Linux's own; each block names the header it comes from

use std::mem::size_of;

use crate::DomId;

// ---------------------------------------------------------------------------------------------
// linux include/uapi/xen/privcmd.h
// ---------------------------------------------------------------------------------------------

/// `_IOC(dir, type, nr, size)` on x86_64.
pub const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}
const IOC_NONE: u64 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivcmdHypercall {
    pub op: u64,
    pub arg: [u64; 5],
}
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivcmdDmOpBuf {
    pub uptr: *mut libc::c_void,
    pub size: usize,
}
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivcmdDmOp {
    pub dom: DomId,
    pub num: u16,
    pub ubufs: *const PrivcmdDmOpBuf,
}
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivcmdMmapbatchV2 {
    pub num: u32,
    pub dom: DomId,
    pub addr: u64,
    pub arr: *const u64,
    pub err: *mut i32,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivcmdMmapResource {
    pub dom: DomId,
    pub type_: u32,
    pub id: u32,
    pub idx: u32,
    pub num: u64,
    pub addr: u64,
}

pub const IOCTL_PRIVCMD_HYPERCALL: u64 = ioc(IOC_NONE, b'P', 0, size_of::<PrivcmdHypercall>());
pub const IOCTL_PRIVCMD_MMAPBATCH_V2: u64 = ioc(IOC_NONE, b'P', 4, size_of::<PrivcmdMmapbatchV2>());
pub const IOCTL_PRIVCMD_DM_OP: u64 = ioc(IOC_NONE, b'P', 5, size_of::<PrivcmdDmOp>());
pub const IOCTL_PRIVCMD_RESTRICT: u64 = ioc(IOC_NONE, b'P', 6, size_of::<DomId>());
pub const IOCTL_PRIVCMD_MMAP_RESOURCE: u64 =
    ioc(IOC_NONE, b'P', 7, size_of::<PrivcmdMmapResource>());

// ---------------------------------------------------------------------------------------------
// linux include/uapi/xen/evtchn.h
// ---------------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoctlEvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}
/// The argument of `IOCTL_EVTCHN_BIND_UNBOUND_PORT` (the xen transport's waker loopback).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoctlEvtchnBindUnboundPort {
    pub remote_domain: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoctlEvtchnUnbind {
    pub port: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoctlEvtchnNotify {
    pub port: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoctlEvtchnRestrictDomid {
    pub domid: DomId,
}

pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 =
    ioc(IOC_NONE, b'E', 1, size_of::<IoctlEvtchnBindInterdomain>());
/// `_IOC(_IOC_NONE, 'E', 2, 4)` = 0x00044502 (xen-abi.md section 6).
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u64 =
    ioc(IOC_NONE, b'E', 2, size_of::<IoctlEvtchnBindUnboundPort>());
pub const IOCTL_EVTCHN_UNBIND: u64 = ioc(IOC_NONE, b'E', 3, size_of::<IoctlEvtchnUnbind>());
pub const IOCTL_EVTCHN_NOTIFY: u64 = ioc(IOC_NONE, b'E', 4, size_of::<IoctlEvtchnNotify>());
pub const IOCTL_EVTCHN_RESET: u64 = ioc(IOC_NONE, b'E', 5, 0);
pub const IOCTL_EVTCHN_RESTRICT_DOMID: u64 =
    ioc(IOC_NONE, b'E', 6, size_of::<IoctlEvtchnRestrictDomid>());
