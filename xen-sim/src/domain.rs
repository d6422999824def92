//! One simulated domain: its ioreq servers, event channels, guest RAM, and the record of
//! everything the device models asked the hypervisor to do.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};

use ioreq_server::shared::{memfd, BufferedPage, IoreqPage, Mapping};
use nix::sys::eventfd::{EfdFlags, EventFd};
use serde::Serialize;
use xen_abi::dmop::Space;
use xen_abi::dmop::{DmOp, DmOpOutput};
use xen_abi::*;

/// An MSI as the guest's local APIC sees it (Xen's decoding of inject_msi, xen-abi.md 2.4).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DecodedMsi {
    /// Vector (data bits 7:0).
    pub vector: u8,
    /// Destination APIC id (address bits 19:12).
    pub dest: u8,
    /// Destination mode: "physical" or "logical" (address bit 2).
    pub dest_mode: &'static str,
    /// Delivery mode (data bits 10:8): "fixed", "lowest", "smi", "nmi", "init", "extint".
    pub delivery_mode: &'static str,
    /// "edge" or "level" (data bit 15).
    pub trigger: &'static str,
}

impl DecodedMsi {
    /// Decode as Xen does.
    pub fn decode(addr: u64, data: u32) -> DecodedMsi {
        DecodedMsi {
            vector: (data & 0xFF) as u8,
            dest: ((addr >> 12) & 0xFF) as u8,
            dest_mode: if addr & (1 << 2) != 0 {
                "logical"
            } else {
                "physical"
            },
            delivery_mode: match (data >> 8) & 7 {
                0 => "fixed",
                1 => "lowest",
                2 => "smi",
                4 => "nmi",
                5 => "init",
                7 => "extint",
                _ => "reserved",
            },
            trigger: if data & (1 << 15) != 0 {
                "level"
            } else {
                "edge"
            },
        }
    }
}

/// An event channel between a guest-side port and a device model.
pub(crate) struct Channel {
    pub to_dm: OwnedFd,
    pub to_xen: OwnedFd,
    pub local: Option<u32>,
    pub pending: bool,
}

impl Channel {
    fn new() -> std::io::Result<Self> {
        // to_dm is non-blocking (the device model polls it); to_xen is blocking: a waiting
        // vCPU sleeps in one read() on it, woken by the device model's notify or by the
        // sim's watchdog when its deadline passes.
        let mk = |flags: EfdFlags| -> std::io::Result<OwnedFd> {
            Ok(EventFd::from_value_and_flags(0, flags | EfdFlags::EFD_CLOEXEC)?.into())
        };
        Ok(Channel {
            to_dm: mk(EfdFlags::EFD_NONBLOCK)?,
            to_xen: mk(EfdFlags::empty())?,
            local: None,
            pending: false,
        })
    }

    /// Signal the device model (or remember it until the port is bound).
    pub fn signal(&mut self) {
        if self.local.is_some() {
            let _ = nix::unistd::write(&self.to_dm, &1u64.to_ne_bytes());
        } else {
            self.pending = true;
        }
    }
}

pub(crate) struct IoServer {
    pub emulator: u64,
    pub bufioreq: u8,
    pub enabled: bool,
    pub ranges: [Vec<(u64, u64)>; 3],
    pub frames: OwnedFd,
    pub ioreq: IoreqPage,
    pub buffered: BufferedPage,
    pub vcpu_ports: Vec<u32>,
    pub buf_port: Option<u32>,
}

/// Everything the sim recorded about a domain, for tests and the demo.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DomainReport {
    /// `SHUTDOWN_*` name, once the guest was shut down.
    pub shutdown_reason: Option<String>,
    /// Xen's message if the guest was crashed.
    pub crashed: Option<String>,
    /// Requests sent to device models, by type.
    pub ioreqs_by_type: BTreeMap<String, u64>,
    /// Accesses completed by the null handler (no server claimed them).
    pub unclaimed: u64,
    /// Accesses that hit a mapped BAR (no ioreq).
    pub p2m_accesses: u64,
    /// MSIs injected.
    pub msis: Vec<DecodedMsi>,
    /// Every DM op and domctl, in order (`{"op": ..., args}` plus `"rc"`).
    pub dm_ops: Vec<serde_json::Value>,
    /// vCPUs whose request was never answered: `{vcpu, server, addr, type}`.
    pub stuck: Vec<serde_json::Value>,
    /// The domain was destroyed (its devices deassigned, to dom_io under quarantine).
    pub destroyed: bool,
    /// Interrupts raised by passed-through functions (`Sim::device_interrupt`):
    /// `{sbdf, entry, delivered, why}`.
    pub device_interrupts: Vec<serde_json::Value>,
    /// Guest MMIO accesses Xen's msixtbl handler completed itself (never an ioreq).
    pub msixtbl_accesses: u64,
    /// Guest port accesses to ports passed through with ioport_mapping (done by Xen).
    pub ioport_passthrough_accesses: u64,
}

pub(crate) struct Domain {
    pub domid: u16,
    pub vcpus: u32,
    pub ram: OwnedFd,
    pub ram_size: u64,
    pub ram_map: Mapping,
    pub servers: BTreeMap<u16, IoServer>,
    pub channels: HashMap<u32, Channel>,
    next_remote_port: u32,
    next_local_port: u32,
    pub cf8: u32,
    pub amd_ext_cfg: bool,
    /// The p2m's direct-MMIO entries (`p2m_mmio_direct`): gfn -> mfn, one per 4K frame.
    pub p2m: BTreeMap<u64, u64>,
    /// Gfns where a 2M entry starts (mapped in one iteration, p2m.c:1642-1668).
    pub p2m_superpages: std::collections::BTreeSet<u64>,
    pub ioport_map: Vec<(u32, u32, u32)>,
    pub report: DomainReport,
    pub shut_down: bool,
    /// (op number, remaining failures, errno) for fault injection.
    pub fail_next: Vec<(u32, u32, i32)>,
    /// Created with `XEN_DOMCTL_CDF_iommu` (an IOMMU context).
    pub iommu: bool,
    /// `on_poweroff = "destroy"`: a poweroff destroys the domain.
    pub destroy_on_poweroff: bool,
    /// Set by a poweroff when the domain is to be destroyed (done by the hypervisor, which
    /// holds the host's device table).
    pub pending_destroy: bool,
    /// Destroyed: every domctl, physdev op and DM op on it fails with ESRCH.
    pub dead: bool,
    /// Host frames the domain may map (`iomem_caps`), inclusive ranges.
    pub iomem: Vec<(u64, u64)>,
    /// Mapped pirqs.
    pub pirqs: BTreeMap<u32, crate::passthrough::Pirq>,
    /// Multi-message blocks: first pirq -> vectors.
    pub pirq_blocks: BTreeMap<u32, u32>,
    pub(crate) next_pirq: u32,
    /// `hvm_irq_dpci` allocated (by the first bind_pt_irq).
    pub dpci: bool,
    /// `msixtbl_initialised()`: set by assigning an MSI-X capable function.
    pub msixtbl_on: bool,
    /// `d->arch.hvm.msixtbl_list`.
    pub msixtbl: Vec<crate::passthrough::MsixTblEntry>,
    /// Per-vCPU MSI-X completion state (`hvm_io.msix_*`).
    pub vcpu_io: Vec<crate::passthrough::VcpuIo>,
    /// Extra fields for the record of the op being handled (Xen's WARNs, notes).
    pub notes: serde_json::Map<String, serde_json::Value>,
}

fn neg(e: i32) -> i32 {
    -e
}

impl Domain {
    pub fn new(domid: u16, vcpus: u32, ram_size: u64) -> std::io::Result<Self> {
        let ram = memfd(&format!("xen-sim-d{domid}-ram"), ram_size)?;
        let ram_map = Mapping::map_fd(ram.as_fd(), 0, ram_size as usize)?;
        Ok(Domain {
            domid,
            vcpus,
            ram,
            ram_size,
            ram_map,
            servers: BTreeMap::new(),
            channels: HashMap::new(),
            next_remote_port: 10,
            next_local_port: 100,
            cf8: 0,
            amd_ext_cfg: false,
            p2m: BTreeMap::new(),
            p2m_superpages: Default::default(),
            ioport_map: Vec::new(),
            report: DomainReport::default(),
            shut_down: false,
            fail_next: Vec::new(),
            iommu: true,
            destroy_on_poweroff: false,
            pending_destroy: false,
            dead: false,
            iomem: Vec::new(),
            pirqs: BTreeMap::new(),
            pirq_blocks: BTreeMap::new(),
            next_pirq: 64,
            dpci: false,
            msixtbl_on: false,
            msixtbl: Vec::new(),
            vcpu_io: vec![Default::default(); vcpus as usize],
            notes: Default::default(),
        })
    }

    fn new_channel(&mut self) -> std::io::Result<u32> {
        let p = self.next_remote_port;
        self.next_remote_port += 1;
        self.channels.insert(p, Channel::new()?);
        Ok(p)
    }

    pub fn record(&mut self, mut v: serde_json::Value, rc: i32) {
        if let Some(o) = v.as_object_mut() {
            o.insert("rc".into(), rc.into());
        }
        self.report.dm_ops.push(v);
    }

    fn server_of(&mut self, id: u16, conn: u64) -> Result<&mut IoServer, i32> {
        let s = self.servers.get_mut(&id).ok_or(neg(libc::ENOENT))?;
        if s.emulator != conn {
            return Err(neg(libc::EPERM));
        }
        Ok(s)
    }

    /// Xen's handling of one DM op from connection `conn`.
    pub fn dm_op(&mut self, op: &DmOp, conn: u64) -> Result<DmOpOutput, i32> {
        if let Some(f) = self
            .fail_next
            .iter_mut()
            .find(|f| f.0 == op.number() && f.1 > 0)
        {
            f.1 -= 1;
            return Err(neg(f.2));
        }
        // A destroyed domain is gone: `rcu_lock_remote_domain_by_id` fails
        // (xen/arch/x86/hvm/dm.c:365, -ESRCH).
        if self.dead {
            return Err(neg(libc::ESRCH));
        }
        match *op {
            DmOp::NrVcpus => Ok(DmOpOutput {
                vcpus: Some(self.vcpus),
                ..Default::default()
            }),
            DmOp::CreateIoreqServer { handle_bufioreq } => {
                if handle_bufioreq > HVM_IOREQSRV_BUFIOREQ_ATOMIC {
                    return Err(neg(libc::EINVAL));
                }
                let id = (0..MAX_NR_IOREQ_SERVERS as u16)
                    .find(|i| !self.servers.contains_key(i))
                    .ok_or(neg(libc::ENOSPC))?;
                let io = |e: std::io::Error| {
                    tracing::error!("sim: cannot allocate server frames: {e}");
                    neg(libc::ENOMEM)
                };
                let frames = memfd(
                    &format!("xen-sim-d{}-s{id}", self.domid),
                    2 * XEN_PAGE_SIZE as u64,
                )
                .map_err(io)?;
                let buffered = BufferedPage::new(
                    Mapping::map_fd(frames.as_fd(), 0, XEN_PAGE_SIZE).map_err(io)?,
                )
                .map_err(io)?;
                let ioreq = IoreqPage::new(
                    Mapping::map_fd(frames.as_fd(), XEN_PAGE_SIZE as u64, XEN_PAGE_SIZE)
                        .map_err(io)?,
                    self.vcpus,
                )
                .map_err(io)?;
                let mut vcpu_ports = Vec::new();
                for _ in 0..self.vcpus {
                    vcpu_ports.push(self.new_channel().map_err(io)?);
                }
                let buf_port = if handle_bufioreq != HVM_IOREQSRV_BUFIOREQ_OFF {
                    Some(self.new_channel().map_err(io)?)
                } else {
                    None
                };
                self.servers.insert(
                    id,
                    IoServer {
                        emulator: conn,
                        bufioreq: handle_bufioreq,
                        enabled: false,
                        ranges: Default::default(),
                        frames,
                        ioreq,
                        buffered,
                        vcpu_ports,
                        buf_port,
                    },
                );
                Ok(DmOpOutput {
                    id: Some(id),
                    ..Default::default()
                })
            }
            DmOp::GetIoreqServerInfo { id, flags } => {
                let s = self.server_of(id, conn)?;
                if flags & XEN_DMOP_NO_GFNS == 0 {
                    // The legacy gfn path (pages mapped into the guest) is not simulated.
                    return Err(neg(libc::EOPNOTSUPP));
                }
                Ok(DmOpOutput {
                    bufioreq_port: Some(s.buf_port.unwrap_or(0)),
                    ..Default::default()
                })
            }
            DmOp::MapIoRange(range) | DmOp::UnmapIoRange(range) => {
                let s = self.server_of(range.id, conn)?;
                let r = &mut s.ranges[space_idx(range.space)];
                if matches!(op, DmOp::MapIoRange(..)) {
                    map_range(r, range.start, range.end)?;
                } else {
                    unmap_range(r, range.start, range.end)?;
                }
                Ok(DmOpOutput::default())
            }
            DmOp::SetIoreqServerState { id, enabled } => {
                let s = self.server_of(id, conn)?;
                s.enabled = enabled;
                if enabled {
                    for (v, p) in s.vcpu_ports.iter().enumerate() {
                        s.ioreq.set_vp_eport(v as u32, *p);
                    }
                }
                Ok(DmOpOutput::default())
            }
            DmOp::DestroyIoreqServer { id } => {
                self.server_of(id, conn)?;
                let s = self.servers.remove(&id).expect("checked");
                for p in s.vcpu_ports.iter().chain(s.buf_port.iter()) {
                    self.channels.remove(p);
                }
                Ok(DmOpOutput::default())
            }
            DmOp::InjectMsi { addr, data } => {
                let m = DecodedMsi::decode(addr, data);
                tracing::info!(
                    domid = self.domid,
                    vector = m.vector,
                    dest = m.dest,
                    trigger = m.trigger,
                    "sim: MSI injected"
                );
                self.report.msis.push(m);
                Ok(DmOpOutput::default())
            }
            DmOp::RemoteShutdown { reason } => {
                let name = match reason {
                    SHUTDOWN_POWEROFF => "poweroff",
                    SHUTDOWN_REBOOT => "reboot",
                    SHUTDOWN_SUSPEND => "suspend",
                    SHUTDOWN_CRASH => "crash",
                    SHUTDOWN_WATCHDOG => "watchdog",
                    SHUTDOWN_SOFT_RESET => "soft_reset",
                    _ => return Err(neg(libc::EINVAL)),
                };
                tracing::info!(domid = self.domid, reason = name, "sim: domain shut down");
                if self.report.shutdown_reason.is_none() {
                    self.report.shutdown_reason = Some(name.into());
                }
                self.shut_down = true;
                // The toolstack's on_poweroff = "destroy" (xl's default): the domain is
                // destroyed, which the hypervisor does once this op is answered.
                if reason == SHUTDOWN_POWEROFF && self.destroy_on_poweroff {
                    self.pending_destroy = true;
                }
                Ok(DmOpOutput::default())
            }
            // A PVH domU has no emulated PIC/IOAPIC behind these (xen-abi.md 2.4): accepted and
            // recorded, with no effect, as on a release build of Xen.
            DmOp::SetPciIntxLevel { .. } | DmOp::SetIsaIrqLevel { .. } => Ok(DmOpOutput::default()),
        }
    }

    /// Bind a local port to guest port `remote`; returns (local port, to_dm, to_xen).
    pub fn bind(&mut self, remote: u32) -> Result<(u32, &Channel), i32> {
        let local = self.next_local_port;
        let ch = self.channels.get_mut(&remote).ok_or(neg(libc::EINVAL))?;
        if ch.local.is_some() {
            return Err(neg(libc::EBUSY));
        }
        ch.local = Some(local);
        if std::mem::take(&mut ch.pending) {
            ch.signal();
        }
        self.next_local_port += 1;
        Ok((local, &self.channels[&remote]))
    }

    pub fn unbind(&mut self, local: u32) -> Result<(), i32> {
        let ch = self
            .channels
            .values_mut()
            .find(|c| c.local == Some(local))
            .ok_or(neg(libc::ENOTCONN))?;
        ch.local = None;
        Ok(())
    }

    /// Xen's `ioreq_server_select`: ids counted down, first enabled server whose rangeset
    /// holds the access wins.
    pub fn select(&self, space: Space, first: u64, last: u64) -> Option<u16> {
        self.servers
            .iter()
            .rev()
            .filter(|(_, s)| s.enabled)
            .find(|(_, s)| {
                s.ranges[space_idx(space)]
                    .iter()
                    .any(|&(a, b)| a <= first && last <= b)
            })
            .map(|(id, _)| *id)
    }
}

/// Xen's `XEN_DMOP_map_io_range_to_ioreq_server` on a server's ranges of one space: a new
/// range may not overlap one it has, and a server holds at most `MAX_NR_IO_RANGES`.
fn map_range(r: &mut Vec<(u64, u64)>, start: u64, end: u64) -> Result<(), i32> {
    if start > end {
        return Err(neg(libc::EINVAL));
    }
    if r.iter().any(|&(a, b)| a <= end && start <= b) {
        return Err(neg(libc::EEXIST));
    }
    if r.len() >= MAX_NR_IO_RANGES {
        return Err(neg(libc::ENOSPC));
    }
    r.push((start, end));
    Ok(())
}

/// Xen's `XEN_DMOP_unmap_io_range_from_ioreq_server`: the range must be contained in what is
/// registered; it is removed (a part of a registered range splits it).
fn unmap_range(r: &mut Vec<(u64, u64)>, start: u64, end: u64) -> Result<(), i32> {
    let Some(i) = r.iter().position(|&(a, b)| a <= start && end <= b) else {
        return Err(neg(libc::ENOENT));
    };
    let (a, b) = r.remove(i);
    if a < start {
        r.push((a, start - 1));
    }
    if end < b {
        r.push((end + 1, b));
    }
    Ok(())
}

pub(crate) fn space_idx(s: Space) -> usize {
    match s {
        Space::Port => 0,
        Space::Memory => 1,
        Space::PciConfig => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::dmop::IoRange;

    #[test]
    fn msi_decoding_matches_xen() {
        let m = DecodedMsi::decode(0xFEE0_3004, 0x0000_8131);
        assert_eq!(
            (m.vector, m.dest, m.dest_mode, m.delivery_mode, m.trigger),
            (0x31, 3, "logical", "lowest", "level")
        );
    }

    #[test]
    fn range_rules_and_limits_are_xens() {
        let mut d = Domain::new(1, 2, 1 << 20).unwrap();
        let id = d
            .dm_op(&DmOp::CreateIoreqServer { handle_bufioreq: 0 }, 7)
            .unwrap()
            .id
            .unwrap();
        let map = |d: &mut Domain, s, e, conn| {
            d.dm_op(
                &DmOp::MapIoRange(IoRange {
                    id,
                    space: Space::Port,
                    start: s,
                    end: e,
                }),
                conn,
            )
        };
        assert!(map(&mut d, 0x10, 0x1F, 7).is_ok());
        assert_eq!(map(&mut d, 0x18, 0x20, 7), Err(-libc::EEXIST));
        assert_eq!(map(&mut d, 0x30, 0x31, 8), Err(-libc::EPERM));
        assert_eq!(map(&mut d, 0x31, 0x30, 7), Err(-libc::EINVAL));
        for i in 1..MAX_NR_IO_RANGES as u64 {
            map(&mut d, 0x1000 + i * 2, 0x1000 + i * 2, 7).unwrap();
        }
        assert_eq!(map(&mut d, 0x9000, 0x9000, 7), Err(-libc::ENOSPC));
        for _ in 1..MAX_NR_IOREQ_SERVERS {
            d.dm_op(&DmOp::CreateIoreqServer { handle_bufioreq: 0 }, 7)
                .unwrap();
        }
        assert_eq!(
            d.dm_op(&DmOp::CreateIoreqServer { handle_bufioreq: 0 }, 7),
            Err(-libc::ENOSPC)
        );
        assert_eq!(
            d.dm_op(&DmOp::CreateIoreqServer { handle_bufioreq: 3 }, 7),
            Err(-libc::EINVAL)
        );
        assert_eq!(
            d.dm_op(
                &DmOp::UnmapIoRange(IoRange {
                    id,
                    space: Space::Port,
                    start: 0x40,
                    end: 0x40
                }),
                7
            ),
            Err(-libc::ENOENT)
        );
    }

    #[test]
    fn selection_counts_ids_down_and_skips_disabled() {
        let mut d = Domain::new(1, 1, 1 << 20).unwrap();
        for conn in [1, 2] {
            let id = d
                .dm_op(&DmOp::CreateIoreqServer { handle_bufioreq: 0 }, conn)
                .unwrap()
                .id
                .unwrap();
            d.dm_op(
                &DmOp::MapIoRange(IoRange {
                    id,
                    space: Space::Port,
                    start: 0x60,
                    end: 0x6F,
                }),
                conn,
            )
            .unwrap();
        }
        assert_eq!(d.select(Space::Port, 0x60, 0x63), None);
        d.dm_op(
            &DmOp::SetIoreqServerState {
                id: 0,
                enabled: true,
            },
            1,
        )
        .unwrap();
        assert_eq!(d.select(Space::Port, 0x60, 0x63), Some(0));
        d.dm_op(
            &DmOp::SetIoreqServerState {
                id: 1,
                enabled: true,
            },
            2,
        )
        .unwrap();
        assert_eq!(d.select(Space::Port, 0x60, 0x63), Some(1));
        assert_eq!(d.select(Space::Port, 0x6E, 0x71), None);
    }
}
