//! DM ops as data, and their byte encoding in `struct xen_dm_op`.
//!
//! The same 32-byte buffer goes to Xen (through `IOCTL_PRIVCMD_DM_OP`) and to xen-sim (over its
//! socket), so xen-sim decodes exactly the bytes a real hypervisor would see. The encodings are
//! compared byte for byte with Debian's libxendevicemodel in `tests/tests/abi_wire.rs`.

use serde::{Deserialize, Serialize};

use crate::*;

/// The address space of an access, matching Xen's `XEN_DMOP_IO_RANGE_*` range types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Space {
    /// x86 I/O ports (`XEN_DMOP_IO_RANGE_PORT`, ioreq type PIO).
    Port,
    /// Guest-physical MMIO (`XEN_DMOP_IO_RANGE_MEMORY`, ioreq type COPY).
    Memory,
    /// PCI configuration space by SBDF (`XEN_DMOP_IO_RANGE_PCI`, ioreq type PCI_CONFIG).
    /// Range bounds are SBDF values; an access address is `SBDF << 32 | register`.
    PciConfig,
}

impl Space {
    /// The `XEN_DMOP_IO_RANGE_*` number of this space (xen/include/public/hvm/dm_op.h).
    pub fn dmop_type(self) -> u32 {
        match self {
            Space::Port => crate::XEN_DMOP_IO_RANGE_PORT,
            Space::Memory => crate::XEN_DMOP_IO_RANGE_MEMORY,
            Space::PciConfig => crate::XEN_DMOP_IO_RANGE_PCI,
        }
    }
}

/// The arguments of [`DmOp::MapIoRange`] and [`DmOp::UnmapIoRange`]
/// (`struct xen_dm_op_ioreq_server_range`): server `id`'s range `start..=end` of `space`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoRange {
    /// The ioreq server.
    pub id: IoservId,
    /// Port, memory or PCI config (`XEN_DMOP_IO_RANGE_*`).
    pub space: Space,
    /// First address (an SBDF for PCI config).
    pub start: u64,
    /// Last address, inclusive.
    pub end: u64,
}

/// One DM op with its input arguments (field names are dm_op.h's own).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DmOp {
    /// `XEN_DMOP_create_ioreq_server`.
    CreateIoreqServer { handle_bufioreq: u8 },
    /// `XEN_DMOP_get_ioreq_server_info`.
    GetIoreqServerInfo { id: IoservId, flags: u16 },
    /// `XEN_DMOP_map_io_range_to_ioreq_server`.
    MapIoRange(IoRange),
    /// `XEN_DMOP_unmap_io_range_from_ioreq_server`.
    UnmapIoRange(IoRange),
    /// `XEN_DMOP_set_ioreq_server_state`.
    SetIoreqServerState { id: IoservId, enabled: bool },
    /// `XEN_DMOP_destroy_ioreq_server`.
    DestroyIoreqServer { id: IoservId },
    /// `XEN_DMOP_set_pci_intx_level`.
    SetPciIntxLevel {
        domain: u16,
        bus: u8,
        device: u8,
        intx: u8,
        level: u8,
    },
    /// `XEN_DMOP_set_isa_irq_level`.
    SetIsaIrqLevel { isa_irq: u8, level: u8 },
    /// `XEN_DMOP_inject_msi`.
    InjectMsi { addr: u64, data: u32 },
    /// `XEN_DMOP_remote_shutdown`.
    RemoteShutdown { reason: u32 },
    /// `XEN_DMOP_nr_vcpus`.
    NrVcpus,
}

/// What a DM op returned besides its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmOpOutput {
    /// create_ioreq_server: the new server id.
    pub id: Option<IoservId>,
    /// get_ioreq_server_info: the buffered-ioreq event channel (0 without buffering).
    pub bufioreq_port: Option<EvtchnPort>,
    /// nr_vcpus.
    pub vcpus: Option<u32>,
}

/// A buffer that does not decode as a DM op.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the op needs (Xen: -EFAULT).
    #[error("dm_op buffer of {0} bytes is too short")]
    Short(usize),
    /// An op number this project does not speak (Xen: -EOPNOTSUPP).
    #[error("unknown or unsupported dm_op {0}")]
    Unknown(u32),
    /// A range type that is not PORT/MEMORY/PCI (Xen: -EINVAL).
    #[error("bad io range type {0}")]
    BadRangeType(u32),
    /// A padding field is not zero (Xen: -EINVAL).
    #[error("non-zero padding in dm_op {0}")]
    Padding(u32),
}

fn space_from_type(t: u32) -> Result<Space, DecodeError> {
    match t {
        XEN_DMOP_IO_RANGE_PORT => Ok(Space::Port),
        XEN_DMOP_IO_RANGE_MEMORY => Ok(Space::Memory),
        XEN_DMOP_IO_RANGE_PCI => Ok(Space::PciConfig),
        other => Err(DecodeError::BadRangeType(other)),
    }
}

impl DmOp {
    /// The `XEN_DMOP_*` number.
    pub fn number(&self) -> u32 {
        match self {
            DmOp::CreateIoreqServer { .. } => XEN_DMOP_CREATE_IOREQ_SERVER,
            DmOp::GetIoreqServerInfo { .. } => XEN_DMOP_GET_IOREQ_SERVER_INFO,
            DmOp::MapIoRange(..) => XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER,
            DmOp::UnmapIoRange(..) => XEN_DMOP_UNMAP_IO_RANGE_FROM_IOREQ_SERVER,
            DmOp::SetIoreqServerState { .. } => XEN_DMOP_SET_IOREQ_SERVER_STATE,
            DmOp::DestroyIoreqServer { .. } => XEN_DMOP_DESTROY_IOREQ_SERVER,
            DmOp::SetPciIntxLevel { .. } => XEN_DMOP_SET_PCI_INTX_LEVEL,
            DmOp::SetIsaIrqLevel { .. } => XEN_DMOP_SET_ISA_IRQ_LEVEL,
            DmOp::InjectMsi { .. } => XEN_DMOP_INJECT_MSI,
            DmOp::RemoteShutdown { .. } => XEN_DMOP_REMOTE_SHUTDOWN,
            DmOp::NrVcpus => XEN_DMOP_NR_VCPUS,
        }
    }

    /// The `struct xen_dm_op` bytes, exactly as libxendevicemodel builds them (zeroed, then op
    /// and payload fields filled in).
    pub fn encode(&self) -> [u8; XEN_DM_OP_SIZE] {
        let mut b = [0u8; XEN_DM_OP_SIZE];
        b[0..4].copy_from_slice(&self.number().to_le_bytes());
        let mut w = PayloadWriter(&mut b[XEN_DM_OP_PAYLOAD_OFFSET..]);
        match *self {
            DmOp::CreateIoreqServer { handle_bufioreq } => w.u8(0, handle_bufioreq),
            DmOp::GetIoreqServerInfo { id, flags } => {
                w.u16(0, id);
                w.u16(2, flags);
            }
            DmOp::MapIoRange(r) | DmOp::UnmapIoRange(r) => {
                w.u16(0, r.id);
                w.u32(4, r.space.dmop_type());
                w.u64(8, r.start);
                w.u64(16, r.end);
            }
            DmOp::SetIoreqServerState { id, enabled } => {
                w.u16(0, id);
                w.u8(2, u8::from(enabled));
            }
            DmOp::DestroyIoreqServer { id } => w.u16(0, id),
            DmOp::SetPciIntxLevel {
                domain,
                bus,
                device,
                intx,
                level,
            } => {
                w.u16(0, domain);
                w.u8(2, bus);
                w.u8(3, device);
                w.u8(4, intx);
                w.u8(5, level);
            }
            DmOp::SetIsaIrqLevel { isa_irq, level } => {
                w.u8(0, isa_irq);
                w.u8(1, level);
            }
            DmOp::InjectMsi { addr, data } => {
                w.u32(0, data);
                w.u64(8, addr);
            }
            DmOp::RemoteShutdown { reason } => w.u32(0, reason),
            DmOp::NrVcpus => {}
        }
        b
    }

    /// Decode a `struct xen_dm_op` buffer as Xen does (xen/arch/x86/hvm/dm.c): the op number,
    /// then the payload, with padding that must be zero.
    pub fn decode(b: &[u8]) -> Result<DmOp, DecodeError> {
        if b.len() < XEN_DM_OP_PAYLOAD_OFFSET {
            return Err(DecodeError::Short(b.len()));
        }
        let op = rd32(b, 0);
        let need = XEN_DM_OP_PAYLOAD_OFFSET
            + match op {
                XEN_DMOP_CREATE_IOREQ_SERVER => 6,
                XEN_DMOP_GET_IOREQ_SERVER_INFO => 24,
                XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER
                | XEN_DMOP_UNMAP_IO_RANGE_FROM_IOREQ_SERVER => 24,
                XEN_DMOP_SET_IOREQ_SERVER_STATE | XEN_DMOP_DESTROY_IOREQ_SERVER => 4,
                XEN_DMOP_SET_PCI_INTX_LEVEL => 6,
                XEN_DMOP_SET_ISA_IRQ_LEVEL => 2,
                XEN_DMOP_INJECT_MSI => 16,
                XEN_DMOP_REMOTE_SHUTDOWN | XEN_DMOP_NR_VCPUS => 4,
                other => return Err(DecodeError::Unknown(other)),
            };
        if b.len() < need {
            return Err(DecodeError::Short(b.len()));
        }
        let p = &b[XEN_DM_OP_PAYLOAD_OFFSET..];
        let pad_zero = |cond: bool| {
            if cond {
                Ok(())
            } else {
                Err(DecodeError::Padding(op))
            }
        };
        Ok(match op {
            XEN_DMOP_CREATE_IOREQ_SERVER => {
                pad_zero(p[1..4] == [0, 0, 0])?;
                DmOp::CreateIoreqServer {
                    handle_bufioreq: p[0],
                }
            }
            XEN_DMOP_GET_IOREQ_SERVER_INFO => DmOp::GetIoreqServerInfo {
                id: rd16(p, 0),
                flags: rd16(p, 2),
            },
            XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER | XEN_DMOP_UNMAP_IO_RANGE_FROM_IOREQ_SERVER => {
                pad_zero(rd16(p, 2) == 0)?;
                let range = IoRange {
                    id: rd16(p, 0),
                    space: space_from_type(rd32(p, 4))?,
                    start: rd64(p, 8),
                    end: rd64(p, 16),
                };
                if op == XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER {
                    DmOp::MapIoRange(range)
                } else {
                    DmOp::UnmapIoRange(range)
                }
            }
            XEN_DMOP_SET_IOREQ_SERVER_STATE => {
                pad_zero(p[3] == 0)?;
                DmOp::SetIoreqServerState {
                    id: rd16(p, 0),
                    enabled: p[2] != 0,
                }
            }
            XEN_DMOP_DESTROY_IOREQ_SERVER => {
                pad_zero(rd16(p, 2) == 0)?;
                DmOp::DestroyIoreqServer { id: rd16(p, 0) }
            }
            XEN_DMOP_SET_PCI_INTX_LEVEL => DmOp::SetPciIntxLevel {
                domain: rd16(p, 0),
                bus: p[2],
                device: p[3],
                intx: p[4],
                level: p[5],
            },
            XEN_DMOP_SET_ISA_IRQ_LEVEL => DmOp::SetIsaIrqLevel {
                isa_irq: p[0],
                level: p[1],
            },
            XEN_DMOP_INJECT_MSI => {
                pad_zero(rd32(p, 4) == 0)?;
                DmOp::InjectMsi {
                    data: rd32(p, 0),
                    addr: rd64(p, 8),
                }
            }
            XEN_DMOP_REMOTE_SHUTDOWN => DmOp::RemoteShutdown { reason: rd32(p, 0) },
            XEN_DMOP_NR_VCPUS => DmOp::NrVcpus,
            _ => unreachable!("filtered above"),
        })
    }

    /// Write this op's output fields into an encoded buffer (Xen's copy-back), for xen-sim.
    pub fn write_output(buf: &mut [u8; XEN_DM_OP_SIZE], out: &DmOpOutput) {
        let mut w = PayloadWriter(&mut buf[XEN_DM_OP_PAYLOAD_OFFSET..]);
        if let Some(id) = out.id {
            w.u16(4, id);
        }
        if let Some(port) = out.bufioreq_port {
            w.u32(4, port);
        }
        if let Some(v) = out.vcpus {
            w.u32(0, v);
        }
    }

    /// Read this op's output fields from the buffer after the hypervisor returned.
    pub fn read_output(&self, buf: &[u8; XEN_DM_OP_SIZE]) -> DmOpOutput {
        let p = &buf[XEN_DM_OP_PAYLOAD_OFFSET..];
        match self {
            DmOp::CreateIoreqServer { .. } => DmOpOutput {
                id: Some(rd16(p, 4)),
                ..Default::default()
            },
            DmOp::GetIoreqServerInfo { .. } => DmOpOutput {
                bufioreq_port: Some(rd32(p, 4)),
                ..Default::default()
            },
            DmOp::NrVcpus => DmOpOutput {
                vcpus: Some(rd32(p, 0)),
                ..Default::default()
            },
            _ => DmOpOutput::default(),
        }
    }
}

struct PayloadWriter<'a>(&'a mut [u8]);
impl PayloadWriter<'_> {
    fn u8(&mut self, off: usize, v: u8) {
        self.0[off] = v;
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
}

fn rd16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn rd64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_roundtrips_through_its_encoding() {
        let ops = [
            DmOp::CreateIoreqServer { handle_bufioreq: 2 },
            DmOp::GetIoreqServerInfo {
                id: 3,
                flags: XEN_DMOP_NO_GFNS,
            },
            DmOp::MapIoRange(IoRange {
                id: 1,
                space: Space::Memory,
                start: 0xFEC0_0000,
                end: 0xFEC0_00FF,
            }),
            DmOp::UnmapIoRange(IoRange {
                id: 1,
                space: Space::PciConfig,
                start: 8,
                end: 8,
            }),
            DmOp::SetIoreqServerState {
                id: 7,
                enabled: true,
            },
            DmOp::DestroyIoreqServer { id: 7 },
            DmOp::SetPciIntxLevel {
                domain: 0,
                bus: 0,
                device: 3,
                intx: 1,
                level: 1,
            },
            DmOp::SetIsaIrqLevel {
                isa_irq: 9,
                level: 1,
            },
            DmOp::InjectMsi {
                addr: 0xFEE0_1000,
                data: 0x4031,
            },
            DmOp::RemoteShutdown {
                reason: SHUTDOWN_REBOOT,
            },
            DmOp::NrVcpus,
        ];
        for op in ops {
            assert_eq!(DmOp::decode(&op.encode()).unwrap(), op);
        }
    }

    #[test]
    fn decode_rejects_what_xen_rejects() {
        assert_eq!(DmOp::decode(&[0; 4]), Err(DecodeError::Short(4)));
        let mut b = DmOp::NrVcpus.encode();
        b[0] = 99;
        assert_eq!(DmOp::decode(&b), Err(DecodeError::Unknown(99)));
        let mut b = DmOp::MapIoRange(IoRange {
            id: 0,
            space: Space::Port,
            start: 1,
            end: 2,
        })
        .encode();
        b[12] = 9;
        assert_eq!(DmOp::decode(&b), Err(DecodeError::BadRangeType(9)));
    }
}
