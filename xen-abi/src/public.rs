//! Xen's public headers (xen.h, hvm/ioreq.h, hvm/hvm_op.h, hvm/dm_op.h, sched.h, memory.h):
//! the stable ABI between a device model and the hypervisor.

#![allow(missing_docs)] // names are Xen's own; each block names the header it comes from

use std::mem::size_of;

// ---------------------------------------------------------------------------------------------
// xen/include/public/xen.h
// ---------------------------------------------------------------------------------------------

/// `domid_t`.
pub type DomId = u16;
/// `ioservid_t` (xen/include/public/hvm/dm_op.h).
pub type IoservId = u16;
/// `evtchn_port_t`.
pub type EvtchnPort = u32;

pub const __HYPERVISOR_MEMORY_OP: u64 = 12;
pub const __HYPERVISOR_SCHED_OP: u64 = 29;
pub const __HYPERVISOR_PHYSDEV_OP: u64 = 33;
pub const __HYPERVISOR_DOMCTL: u64 = 36;
pub const __HYPERVISOR_DM_OP: u64 = 41;
pub const DOMID_SELF: DomId = 0x7FF0;
/// Xen's I/O domain, which also holds quarantined PCI devices (xen/include/public/xen.h).
pub const DOMID_IO: DomId = 0x7FF1;
pub const DOMID_INVALID: DomId = 0x7FF4;

/// Page size of the shared ioreq frames.
pub const XEN_PAGE_SIZE: usize = 4096;

// ---------------------------------------------------------------------------------------------
// xen/include/public/hvm/ioreq.h
// ---------------------------------------------------------------------------------------------

pub const IOREQ_READ: u8 = 1;
pub const IOREQ_WRITE: u8 = 0;

pub const STATE_IOREQ_NONE: u8 = 0;
pub const STATE_IOREQ_READY: u8 = 1;
pub const STATE_IOREQ_INPROCESS: u8 = 2;
pub const STATE_IORESP_READY: u8 = 3;

pub const IOREQ_TYPE_PIO: u8 = 0;
pub const IOREQ_TYPE_COPY: u8 = 1;
pub const IOREQ_TYPE_PCI_CONFIG: u8 = 2;
pub const IOREQ_TYPE_TIMEOFFSET: u8 = 7;
pub const IOREQ_TYPE_INVALIDATE: u8 = 8;

/// `struct ioreq` (ioreq_t): one per vCPU in the shared ioreq page, 32 bytes.
///
/// Byte 30 holds the C bitfields `state:4, data_is_ptr:1, dir:1, df:1, _pad1:1` (gcc packs them
/// LSB first); use the accessors instead of shifting by hand.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ioreq {
    pub addr: u64,
    pub data: u64,
    pub count: u32,
    pub size: u32,
    pub vp_eport: u32,
    pub _pad0: u16,
    /// state:4 | data_is_ptr:1 | dir:1 | df:1 | pad:1
    pub flags: u8,
    pub type_: u8,
}

/// Byte offset of the bitfield byte (state, data_is_ptr, dir, df) inside [`Ioreq`].
pub const IOREQ_FLAGS_OFFSET: usize = 30;
const IOREQ_STATE_MASK: u8 = 0x0F;
const IOREQ_DATA_IS_PTR: u8 = 1 << 4;
const IOREQ_DIR: u8 = 1 << 5;
const IOREQ_DF: u8 = 1 << 6;

impl Ioreq {
    /// A request for one item (`count` 1) of `size` bytes at `addr`, direction `dir`, state
    /// `STATE_IOREQ_NONE`, other flags clear: a guest's plain access, as the simulated guest
    /// issues it and as the server unpacks a buffered ioreq.
    pub fn single(type_: u8, addr: u64, size: u32, dir: u8, data: u64) -> Ioreq {
        let mut r = Ioreq {
            addr,
            data,
            size,
            count: 1,
            type_,
            ..Default::default()
        };
        r.set_dir(dir);
        r
    }
    pub fn state(&self) -> u8 {
        self.flags & IOREQ_STATE_MASK
    }
    pub fn set_state(&mut self, s: u8) {
        self.flags = (self.flags & !IOREQ_STATE_MASK) | (s & IOREQ_STATE_MASK);
    }
    pub fn data_is_ptr(&self) -> bool {
        self.flags & IOREQ_DATA_IS_PTR != 0
    }
    pub fn set_data_is_ptr(&mut self, v: bool) {
        self.set_bit(IOREQ_DATA_IS_PTR, v)
    }
    /// `dir`: [`IOREQ_READ`] or [`IOREQ_WRITE`].
    pub fn dir(&self) -> u8 {
        u8::from(self.flags & IOREQ_DIR != 0)
    }
    pub fn set_dir(&mut self, dir: u8) {
        self.set_bit(IOREQ_DIR, dir == IOREQ_READ)
    }
    pub fn is_read(&self) -> bool {
        self.dir() == IOREQ_READ
    }
    /// Direction flag: items at decreasing addresses.
    pub fn df(&self) -> bool {
        self.flags & IOREQ_DF != 0
    }
    pub fn set_df(&mut self, v: bool) {
        self.set_bit(IOREQ_DF, v)
    }
    fn set_bit(&mut self, bit: u8, v: bool) {
        if v {
            self.flags |= bit
        } else {
            self.flags &= !bit
        }
    }
    /// The 32 bytes as they lie in the shared page.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.data.to_le_bytes());
        b[16..20].copy_from_slice(&self.count.to_le_bytes());
        b[20..24].copy_from_slice(&self.size.to_le_bytes());
        b[24..28].copy_from_slice(&self.vp_eport.to_le_bytes());
        b[28..30].copy_from_slice(&self._pad0.to_le_bytes());
        b[30] = self.flags;
        b[31] = self.type_;
        b
    }
    /// Parse the 32 bytes of a slot.
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        Ioreq {
            addr: le64(&b[0..8]),
            data: le64(&b[8..16]),
            count: le32(&b[16..20]),
            size: le32(&b[20..24]),
            vp_eport: le32(&b[24..28]),
            _pad0: u16::from_le_bytes([b[28], b[29]]),
            flags: b[30],
            type_: b[31],
        }
    }
}

/// Number of slots in the buffered ring (`IOREQ_BUFFER_SLOT_NUM`).
pub const IOREQ_BUFFER_SLOT_NUM: u32 = 511;

/// `buf_ioreq_t`: 8 bytes. Word 0 = type:8 | pad:1 | dir:1 | size:2 | addr:20; word 1 = data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufIoreq {
    pub word0: u32,
    pub data: u32,
}

impl BufIoreq {
    pub fn type_(&self) -> u8 {
        (self.word0 & 0xFF) as u8
    }
    pub fn dir(&self) -> u8 {
        ((self.word0 >> 9) & 1) as u8
    }
    /// Access size in bytes (the field holds log2 of it).
    pub fn size_bytes(&self) -> u32 {
        1 << ((self.word0 >> 10) & 3)
    }
    pub fn addr(&self) -> u32 {
        self.word0 >> 12
    }
    /// Build a slot (used by xen-sim, which plays Xen's side of the ring).
    pub fn new(type_: u8, dir: u8, size_log2: u32, addr: u32, data: u32) -> Self {
        BufIoreq {
            word0: u32::from(type_)
                | (u32::from(dir & 1) << 9)
                | ((size_log2 & 3) << 10)
                | ((addr & 0xF_FFFF) << 12),
            data,
        }
    }
}

/// `struct buffered_iopage`: read_pointer @0, write_pointer @4, `buf_ioreq[511]` @8. 4096 bytes.
#[repr(C)]
pub struct BufferedIopage {
    pub read_pointer: u32,
    pub write_pointer: u32,
    pub buf_ioreq: [BufIoreq; IOREQ_BUFFER_SLOT_NUM as usize],
}
pub const BUFFERED_READ_POINTER_OFFSET: usize = 0;
pub const BUFFERED_WRITE_POINTER_OFFSET: usize = 4;
pub const BUFFERED_SLOTS_OFFSET: usize = 8;

/// Legacy ACPI PM1 ports selected by HVM_PARAM_ACPI_IOPORTS_LOCATION = 1 (ioreq.h `ACPI_PM1A_*_V1`).
pub const ACPI_PM1A_EVT_BLK_ADDRESS_V1: u16 = 0xB000;
pub const ACPI_PM1A_CNT_BLK_ADDRESS_V1: u16 = 0xB004;

// ---------------------------------------------------------------------------------------------
// xen/include/public/hvm/hvm_op.h (visible with __XEN_TOOLS__)
// ---------------------------------------------------------------------------------------------

pub const HVM_IOREQSRV_BUFIOREQ_OFF: u8 = 0;
pub const HVM_IOREQSRV_BUFIOREQ_LEGACY: u8 = 1;
pub const HVM_IOREQSRV_BUFIOREQ_ATOMIC: u8 = 2;

// ---------------------------------------------------------------------------------------------
// xen/include/public/hvm/dm_op.h (visible with __XEN_TOOLS__)
// ---------------------------------------------------------------------------------------------

pub const XEN_DMOP_CREATE_IOREQ_SERVER: u32 = 1;
pub const XEN_DMOP_GET_IOREQ_SERVER_INFO: u32 = 2;
pub const XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER: u32 = 3;
pub const XEN_DMOP_UNMAP_IO_RANGE_FROM_IOREQ_SERVER: u32 = 4;
pub const XEN_DMOP_SET_IOREQ_SERVER_STATE: u32 = 5;
pub const XEN_DMOP_DESTROY_IOREQ_SERVER: u32 = 6;
pub const XEN_DMOP_SET_PCI_INTX_LEVEL: u32 = 8;
pub const XEN_DMOP_SET_ISA_IRQ_LEVEL: u32 = 9;
pub const XEN_DMOP_INJECT_MSI: u32 = 14;
pub const XEN_DMOP_REMOTE_SHUTDOWN: u32 = 16;
pub const XEN_DMOP_NR_VCPUS: u32 = 20;

pub const XEN_DMOP_IO_RANGE_PORT: u32 = 0;
pub const XEN_DMOP_IO_RANGE_MEMORY: u32 = 1;
pub const XEN_DMOP_IO_RANGE_PCI: u32 = 2;

/// `XEN_DMOP_no_gfns`: flag of get_ioreq_server_info when the pages are acquired as a resource.
pub const XEN_DMOP_NO_GFNS: u16 = 1;

/// `XEN_DMOP_PCI_SBDF(s, b, d, f)`.
pub const fn pci_sbdf(seg: u16, bus: u8, dev: u8, func: u8) -> u32 {
    ((seg as u32) << 16) | ((bus as u32) << 8) | (((dev & 0x1F) as u32) << 3) | ((func & 7) as u32)
}

/// Limits Xen enforces (xen/include/xen/sched.h `MAX_NR_IOREQ_SERVERS`, xen/include/xen/ioreq.h
/// `MAX_NR_IO_RANGES`).
pub const MAX_NR_IOREQ_SERVERS: usize = 8;
pub const MAX_NR_IO_RANGES: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpCreateIoreqServer {
    pub handle_bufioreq: u8,
    pub pad: [u8; 3],
    pub id: IoservId,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpGetIoreqServerInfo {
    pub id: IoservId,
    pub flags: u16,
    pub bufioreq_port: EvtchnPort,
    pub ioreq_gfn: u64,
    pub bufioreq_gfn: u64,
}
/// Payload of both map_io_range_to_ioreq_server and unmap_io_range_from_ioreq_server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpIoreqServerRange {
    pub id: IoservId,
    pub pad: u16,
    pub type_: u32,
    pub start: u64,
    pub end: u64,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpSetIoreqServerState {
    pub id: IoservId,
    pub enabled: u8,
    pub pad: u8,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpDestroyIoreqServer {
    pub id: IoservId,
    pub pad: u16,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpSetPciIntxLevel {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub intx: u8,
    pub level: u8,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpSetIsaIrqLevel {
    pub isa_irq: u8,
    pub level: u8,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpInjectMsi {
    pub data: u32,
    pub pad: u32,
    pub addr: u64,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpRemoteShutdown {
    pub reason: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpNrVcpus {
    pub vcpus: u32,
}

/// `struct xen_dm_op`: op @0, pad @4, union u @8. The union is 24 bytes (its largest members).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOp {
    pub op: u32,
    pub pad: u32,
    pub u: [u64; 3],
}
/// Offset of the payload union inside [`XenDmOp`].
pub const XEN_DM_OP_PAYLOAD_OFFSET: usize = 8;
/// `sizeof(struct xen_dm_op)`: what libxendevicemodel passes as the buffer size.
pub const XEN_DM_OP_SIZE: usize = size_of::<XenDmOp>();

/// `xen_dm_op_buf_t`: a guest handle and a size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOpBuf {
    pub h: u64,
    pub size: u64,
}

// ---------------------------------------------------------------------------------------------
// xen/include/public/sched.h
// ---------------------------------------------------------------------------------------------

pub const SHUTDOWN_POWEROFF: u32 = 0;
pub const SHUTDOWN_REBOOT: u32 = 1;
pub const SHUTDOWN_SUSPEND: u32 = 2;
pub const SHUTDOWN_CRASH: u32 = 3;
pub const SHUTDOWN_WATCHDOG: u32 = 4;
pub const SHUTDOWN_SOFT_RESET: u32 = 5;

// ---------------------------------------------------------------------------------------------
// xen/include/public/memory.h
// ---------------------------------------------------------------------------------------------

pub const XENMEM_ACQUIRE_RESOURCE: u32 = 28;
pub const XENMEM_RESOURCE_IOREQ_SERVER: u32 = 0;
pub const XENMEM_RESOURCE_GRANT_TABLE: u32 = 1;
/// `XENMEM_resource_ioreq_server_frame_bufioreq`.
pub const XENMEM_RESOURCE_IOREQ_SERVER_FRAME_BUFIOREQ: u64 = 0;
/// `XENMEM_resource_ioreq_server_frame_ioreq(n)` = 1 + n.
pub const fn xenmem_resource_ioreq_server_frame_ioreq(n: u64) -> u64 {
    1 + n
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioreq_bitfields_match_gcc_packing() {
        // xen-abi.md 1.2: state=0xF -> 0x0F, data_is_ptr -> 0x10, dir -> 0x20, df -> 0x40.
        let mut r = Ioreq::default();
        r.set_state(0xF);
        assert_eq!(r.flags, 0x0F);
        r.set_data_is_ptr(true);
        assert_eq!(r.flags, 0x1F);
        r.set_dir(IOREQ_READ);
        assert_eq!(r.flags, 0x3F);
        r.set_df(true);
        assert_eq!(r.flags, 0x7F);
        r.set_state(STATE_IORESP_READY);
        assert_eq!(r.state(), 3);
        assert!(r.df() && r.is_read() && r.data_is_ptr());
        let r2 = Ioreq::from_bytes(&r.to_bytes());
        assert_eq!(r, r2);
    }

    #[test]
    fn buf_ioreq_roundtrip() {
        let b = BufIoreq::new(IOREQ_TYPE_PIO, IOREQ_WRITE, 2, 0xB004, 0x1234);
        assert_eq!(b.type_(), IOREQ_TYPE_PIO);
        assert_eq!(b.size_bytes(), 4);
        assert_eq!(b.addr(), 0xB004);
        assert_eq!(b.dir(), IOREQ_WRITE);
    }
}
