//! What the broker lets the worker do: every request is checked against what the
//! configuration assigned, before anything is executed.
//!
//! The facts checked against are taken from the bridge's own view of each function, built
//! before the split ([`AssignedFunction::of`]): the host BARs the backend reported, the MSI /
//! MSI-X capabilities the capability walk found, and the function's register [`Layout`] built
//! from the const register tables ([`crate::header`], [`crate::caps`], [`crate::msi`],
//! [`crate::msix`]). There is no second register table here.

use std::collections::BTreeMap;

use xen_abi::passthrough::PtOp;
use xen_abi::DomId;

use super::proto::{Request, SysfsOp};
use crate::backend::{BarInfo, BarKind};
use crate::bars::PAGE_SIZE;
use crate::config::Windows;
use crate::config_space::Layout;
use crate::function::PassthroughFunction;
use crate::msix::MsixInfo;
use crate::topology::PciAddress;
use crate::{header, msi, msix};

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(msg.into()))
}

/// One assigned host function as the broker knows it.
#[derive(Clone, Debug)]
pub struct AssignedFunction {
    /// The host function.
    pub host: PciAddress,
    /// BARs 0..=5 as the host kernel assigned them, and the expansion ROM at index 6.
    pub bars: [Option<BarInfo>; 7],
    /// The MSI-X capability.
    pub msix: Option<MsixInfo>,
    /// The MSI capability: its config offset and how many vectors the device can do.
    pub msi: Option<(u16, u32)>,
    /// The register layout built from the const tables (what passes through).
    pub layout: Layout,
}

impl AssignedFunction {
    /// The broker's view of a function the bridge built.
    pub fn of(f: &PassthroughFunction) -> Self {
        let mut bars = [None; 7];
        for (i, b) in bars.iter_mut().enumerate().take(6) {
            *b = f.bars().bar(i).map(|v| v.host);
        }
        bars[6] = f.bars().rom().map(|v| v.host);
        let layout = f.layout().clone();
        let msi = f.caps().msi.map(|cap| {
            // Multiple Message Capable, as the layout read it from the device (msi.rs
            // `msi_control` initialises QMASK from the device): 2^n vectors.
            let ctl = layout
                .find(cap + 2)
                .map_or(0, |i| layout.reg(i).virt as u16);
            (cap, 1u32 << ((ctl & msi::FLAGS_QMASK) >> 1).min(5))
        });
        AssignedFunction {
            host: f.host_address(),
            bars,
            msix: f.caps().msix,
            msi,
            layout,
        }
    }

    /// The host bits of config byte `off` the bridge itself writes although the table
    /// emulates them for the guest: Interrupt Disable (the bridge owns INTx, [`crate::intx`],
    /// `set_interrupt_disable`), MSI Enable and MSI-X Enable / Function Mask (written after
    /// the binding succeeded, and cleared by the lifecycle, [`crate::lifecycle`]).
    fn bridge_owned(&self, off: u16) -> u8 {
        let mut words: Vec<(u16, u16)> = vec![(header::COMMAND, header::CMD_INTX_DISABLE)];
        if let Some((cap, _)) = self.msi {
            words.push((cap + 2, msi::FLAGS_ENABLE));
        }
        if let Some(m) = self.msix {
            words.push((m.cap + 2, msix::FLAGS_ENABLE | msix::FLAGS_MASKALL));
        }
        words
            .iter()
            .filter(|(o, _)| off == *o || off == *o + 1)
            .map(|&(o, bits)| (bits >> (8 * (off - o))) as u8)
            .fold(0, |a, b| a | b)
    }

    /// The BAR (0..=5) whose whole page frames hold `[mfn, mfn + nr)`, for memory BARs of
    /// at least a page (the bridge never maps a sub-page BAR: its frame may hold another
    /// function's registers).
    fn mem_bar_of(&self, mfn: u64, nr: u64) -> Option<(usize, BarInfo)> {
        let end = mfn.checked_add(nr)?;
        (0..6).find_map(|i| {
            let b = self.bars[i]?;
            if !b.is_mem() || b.size < PAGE_SIZE || !b.host_addr.is_multiple_of(PAGE_SIZE) {
                return None;
            }
            let first = b.host_addr / PAGE_SIZE;
            let last = (b.host_addr.checked_add(b.size)? - 1) / PAGE_SIZE;
            (mfn >= first && end - 1 <= last).then_some((i, b))
        })
    }

    /// Whether `[mfn, mfn + nr)` lies in the frames covering one memory BAR (0..=5), sub-page
    /// BARs included (what [`crate::lifecycle`] grants permission for).
    fn covers_frames(&self, mfn: u64, nr: u64) -> bool {
        let Some(end) = mfn.checked_add(nr) else {
            return false;
        };
        (0..6).any(|i| {
            let Some(b) = self.bars[i].filter(|b| b.is_mem()) else {
                return false;
            };
            let Some(bend) = b.host_addr.checked_add(b.size) else {
                return false;
            };
            mfn >= b.host_addr / PAGE_SIZE && end - 1 <= (bend - 1) / PAGE_SIZE
        })
    }

    /// Whether host ports `[port, port + nr)` lie inside one I/O BAR.
    fn covers_ports(&self, port: u32, nr: u32) -> bool {
        let (port, nr) = (u64::from(port), u64::from(nr));
        (0..6).any(|i| {
            self.bars[i].is_some_and(|b| {
                b.kind == BarKind::Io && port >= b.host_addr && port + nr <= b.host_addr + b.size
            })
        })
    }
}

/// A block of pirqs the broker mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PirqBlock {
    sbdf: u32,
    entry: u32,
    nvec: u32,
    msix: bool,
}

/// The checks (see the module docs), and the little state they need: the pirqs Xen
/// allocated through this broker.
#[derive(Clone, Debug)]
pub struct BrokerPolicy {
    domid: DomId,
    windows: Windows,
    functions: Vec<AssignedFunction>,
    pirqs: BTreeMap<u32, PirqBlock>,
}

impl BrokerPolicy {
    /// The policy for guest `domid` with BAR windows `windows` and these functions.
    pub fn new(domid: DomId, windows: Windows, functions: Vec<AssignedFunction>) -> Self {
        BrokerPolicy {
            domid,
            windows,
            functions,
            pirqs: BTreeMap::new(),
        }
    }

    /// The guest.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The assigned functions.
    pub fn functions(&self) -> &[AssignedFunction] {
        &self.functions
    }

    fn function(&self, sbdf: u32) -> Result<&AssignedFunction, Refusal> {
        match self.functions.iter().find(|f| f.host.sbdf() == sbdf) {
            Some(f) => Ok(f),
            None => refuse(format!(
                "{} is not a function assigned to this guest",
                PciAddress::from_sbdf(sbdf)
            )),
        }
    }

    fn pirq_block(&self, pirq: u32) -> Result<(u32, PirqBlock), Refusal> {
        match self.pirqs.range(..=pirq).next_back() {
            Some((&base, &b)) if pirq < base + b.nvec => Ok((base, b)),
            _ => refuse(format!(
                "pirq {pirq} was not mapped for this guest's functions"
            )),
        }
    }

    /// Check a request. A config write is checked further, against the device's current
    /// value, by [`BrokerPolicy::check_config_write`].
    pub fn check(&self, req: &Request) -> Result<(), Refusal> {
        match req {
            Request::Hypercall { domid, op } => {
                if *domid != self.domid {
                    return refuse(format!(
                        "domain {domid}: this broker serves domain {} only",
                        self.domid
                    ));
                }
                self.check_op(op)
            }
            Request::ConfigRead { sbdf, offset, len } => {
                let f = self.function(*sbdf)?;
                let end = usize::from(*offset) + usize::from(*len);
                if *len == 0 || end > f.layout.config_len() {
                    return refuse(format!(
                        "config read of {len} bytes at {offset:#x}: outside config space"
                    ));
                }
                Ok(())
            }
            Request::ConfigWrite { sbdf, offset, data } => {
                let f = self.function(*sbdf)?;
                let n = data.len();
                if !matches!(n, 1 | 2 | 4)
                    || usize::from(*offset) % n != 0
                    || usize::from(*offset) + n > f.layout.config_len()
                {
                    return refuse(format!(
                        "config write of {n} bytes at {offset:#x}: not one aligned 1, 2 or 4 byte access inside config space"
                    ));
                }
                Ok(())
            }
            Request::BarRead {
                sbdf,
                bar,
                offset,
                len,
            } => self.check_bar_access(*sbdf, *bar, *offset, usize::from(*len), false),
            Request::BarWrite {
                sbdf,
                bar,
                offset,
                data,
            } => self.check_bar_access(*sbdf, *bar, *offset, data.len(), true),
            Request::Sysfs { sbdf, op } => {
                self.function(*sbdf)?;
                let _: SysfsOp = *op;
                Ok(())
            }
            Request::Facts { sbdf }
            | Request::IntxFd { sbdf }
            | Request::IntxAck { sbdf }
            | Request::Status { sbdf } => self.function(*sbdf).map(|_| ()),
        }
    }

    fn check_bar_access(
        &self,
        sbdf: u32,
        bar: u8,
        offset: u64,
        len: usize,
        write: bool,
    ) -> Result<(), Refusal> {
        let f = self.function(sbdf)?;
        let Some(b) = f.bars.get(usize::from(bar)).copied().flatten() else {
            return refuse(format!("BAR {bar}: the function has none"));
        };
        let len = len as u64;
        // Of the guest's own width at the guest's offset, unaligned ones too: the bridge
        // forwards guest accesses as they come ([`crate::backend::HostDevice::read_bar`]).
        if !matches!(len, 1 | 2 | 4 | 8) || offset.checked_add(len).is_none_or(|e| e > b.size) {
            return refuse(format!(
                "BAR {bar} access of {len} bytes at {offset:#x}: not one 1/2/4/8-byte access inside the BAR"
            ));
        }
        // Xen keeps the host's MSI-X table and PBA read-only for everyone but itself
        // (`msix_capability_init` adds them to `mmio_ro_ranges`, xen/arch/x86/msi.c:941-946
        // in 4.17); the guest's table is the bridge's emulation.
        if write && bar == 6 {
            return refuse("expansion ROM write: the bridge never writes the ROM");
        }
        if write {
            if let Some(m) = f.msix {
                for (mb, moff, mlen) in [
                    (m.table_bar, m.table_offset, m.table_len()),
                    (m.pba_bar, m.pba_offset, m.pba_len()),
                ] {
                    if mb == bar && offset < moff + mlen && moff < offset + len {
                        return refuse(format!(
                            "BAR {bar} write at {offset:#x}: the host's MSI-X table and PBA belong to Xen"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_op(&self, op: &PtOp) -> Result<(), Refusal> {
        match *op {
            PtOp::MemoryMapping { gfn, mfn, nr, .. } => {
                if nr == 0 {
                    return refuse("memory_mapping of 0 frames");
                }
                let Some((f, bar, b)) = self
                    .functions
                    .iter()
                    .find_map(|f| f.mem_bar_of(mfn, nr).map(|(i, b)| (f, i, b)))
                else {
                    return refuse(format!(
                        "memory_mapping of host frames {mfn:#x}+{nr:#x}: not inside one page-sized memory BAR of an assigned function"
                    ));
                };
                if let Some(m) = f.msix {
                    let rel = mfn - b.host_addr / PAGE_SIZE;
                    for (a, z) in m.trapped_pages(bar as u8) {
                        if rel <= z && a < rel + nr {
                            return refuse(format!(
                                "memory_mapping of host frames {mfn:#x}+{nr:#x}: covers the MSI-X table or PBA of {} (BAR {bar} pages {a}..={z})",
                                f.host
                            ));
                        }
                    }
                }
                let in_window = gfn
                    .checked_mul(PAGE_SIZE)
                    .zip(nr.checked_mul(PAGE_SIZE))
                    .is_some_and(|(a, l)| self.windows.contains_mmio(a, l));
                if !in_window {
                    return refuse(format!(
                        "memory_mapping to guest frames {gfn:#x}+{nr:#x}: outside the configured BAR windows"
                    ));
                }
                Ok(())
            }
            PtOp::IoportMapping {
                gport, mport, nr, ..
            } => {
                if nr == 0 || !self.functions.iter().any(|f| f.covers_ports(mport, nr)) {
                    return refuse(format!(
                        "ioport_mapping of host ports {mport:#x}+{nr:#x}: not inside an I/O BAR of an assigned function"
                    ));
                }
                if !self.windows.contains_io(u64::from(gport), u64::from(nr)) {
                    return refuse(format!(
                        "ioport_mapping to guest ports {gport:#x}+{nr:#x}: outside the configured I/O window"
                    ));
                }
                Ok(())
            }
            PtOp::IomemPermission { mfn, nr, .. } => {
                if nr == 0 || !self.functions.iter().any(|f| f.covers_frames(mfn, nr)) {
                    return refuse(format!(
                        "iomem_permission of frames {mfn:#x}+{nr:#x}: not the frames of a memory BAR of an assigned function"
                    ));
                }
                Ok(())
            }
            PtOp::IoportPermission { port, nr, .. } => {
                if nr == 0 || !self.functions.iter().any(|f| f.covers_ports(port, nr)) {
                    return refuse(format!(
                        "ioport_permission of ports {port:#x}+{nr:#x}: not an I/O BAR of an assigned function"
                    ));
                }
                Ok(())
            }
            // map_pirq itself grants the guest access to the irq it maps (`map_domain_pirq`,
            // xen/arch/x86/irq.c:2206-2208 in 4.17: `irq_permit_access(d, irq)`).
            PtOp::IrqPermission { pirq, .. } => refuse(format!(
                "irq_permission (pirq {pirq}): the bridge never asks for it (map_pirq grants the guest its pirqs)"
            )),
            PtOp::AssignDevice { sbdf }
            | PtOp::DeassignDevice { sbdf, .. }
            | PtOp::TestAssignDevice { sbdf } => self.function(sbdf).map(|_| ()),
            PtOp::PrepareMsix { sbdf } | PtOp::ReleaseMsix { sbdf } => {
                if self.function(sbdf)?.msix.is_none() {
                    return refuse(format!(
                        "{}: prepare/release_msix for a function without MSI-X",
                        PciAddress::from_sbdf(sbdf)
                    ));
                }
                Ok(())
            }
            PtOp::GetDomainInfo => Ok(()),
            PtOp::MapPirqMsi(m) => {
                let (sbdf, entry, table_base, nvec) = (m.sbdf, m.entry, m.table_base, m.nvec);
                let f = self.function(sbdf)?;
                if self
                    .pirqs
                    .values()
                    .any(|b| b.sbdf == sbdf && b.entry == entry)
                {
                    return refuse(format!(
                        "map_pirq for {} entry {entry}: already mapped (unmap it first)",
                        f.host
                    ));
                }
                if table_base != 0 {
                    let Some(m) = f.msix else {
                        return refuse(format!("map_pirq MSI-X for {}: it has no MSI-X", f.host));
                    };
                    // Xen compares table_base with the bare BAR address it reads and adds
                    // the table offset itself (`msix_capability_init`, xen/arch/x86/msi.c:
                    // 847-848 in 4.17: `WARN_ON(msi && msi->table_base != table_paddr)`).
                    let base = f.bars[usize::from(m.table_bar)].map(|b| b.host_addr);
                    if Some(table_base) != base {
                        return refuse(format!(
                            "map_pirq MSI-X for {}: table_base {table_base:#x} is not the host address of BAR {} ({base:#x?})",
                            f.host, m.table_bar
                        ));
                    }
                    if entry >= u32::from(m.entries) || nvec != 1 {
                        return refuse(format!(
                            "map_pirq MSI-X for {}: entry {entry} (nvec {nvec}) outside its {} entries",
                            f.host, m.entries
                        ));
                    }
                } else {
                    let Some((_, max)) = f.msi else {
                        return refuse(format!("map_pirq MSI for {}: it has no MSI", f.host));
                    };
                    if entry != 0 || nvec == 0 || !nvec.is_power_of_two() || nvec > max {
                        return refuse(format!(
                            "map_pirq MSI for {}: entry {entry}, {nvec} vectors (the device has {max})",
                            f.host
                        ));
                    }
                }
                Ok(())
            }
            PtOp::UnmapPirq { pirq } => {
                let (base, _) = self.pirq_block(pirq)?;
                if base != pirq {
                    return refuse(format!(
                        "unmap_pirq {pirq}: not the first pirq of its block ({base})"
                    ));
                }
                Ok(())
            }
            PtOp::BindPtIrqMsi { pirq, gtable, .. } | PtOp::UnbindPtIrqMsi { pirq, gtable, .. } => {
                let (_, b) = self.pirq_block(pirq)?;
                if b.msix {
                    let f = self.function(b.sbdf)?;
                    let len = f.msix.map_or(0, |m| m.table_len());
                    if !self.windows.contains_mmio(gtable, len) {
                        return refuse(format!(
                            "bind_pt_irq pirq {pirq}: guest MSI-X table {gtable:#x} outside the BAR windows"
                        ));
                    }
                } else if gtable != 0 {
                    return refuse(format!("bind_pt_irq pirq {pirq}: an MSI vector with a gtable"));
                }
                Ok(())
            }
        }
    }

    /// Check a config write against the device's `current` bytes at the same offset (read
    /// by the broker just before): every bit it changes must be one the function's layout
    /// passes through or one the bridge owns in the host ([`AssignedFunction`]); a W1C bit
    /// may be written 1 only where it passes through; and the write must touch at least
    /// one such bit (no writes, not even unchanged ones, to registers that are all virtual).
    pub fn check_config_write(
        &self,
        sbdf: u32,
        offset: u16,
        data: &[u8],
        current: &[u8],
    ) -> Result<(), Refusal> {
        let f = self.function(sbdf)?;
        if current.len() != data.len() {
            return refuse("config write: current value of another length");
        }
        let mut touches = false;
        for (k, (&new, &cur)) in data.iter().zip(current).enumerate() {
            let off = offset + k as u16;
            let r = f.layout.rule(usize::from(off));
            let allowed = r.pass | f.bridge_owned(off);
            touches |= allowed != 0;
            let changed = (new ^ cur) & !r.w1c;
            if changed & !allowed != 0 || new & r.w1c & !r.pass != 0 {
                return refuse(format!(
                    "config write {new:#04x} to byte {off:#x} of {} (now {cur:#04x}): changes bits the bridge does not pass through (pass {:#04x}, bridge {:#04x})",
                    f.host,
                    r.pass,
                    f.bridge_owned(off)
                ));
            }
        }
        if !touches {
            return refuse(format!(
                "config write at {offset:#x} of {}: a register nothing of which passes through",
                f.host
            ));
        }
        Ok(())
    }

    /// The first pirq of every block mapped through the broker and not unmapped.
    pub fn mapped_pirqs(&self) -> Vec<u32> {
        self.pirqs.keys().copied().collect()
    }

    /// Record what a successful hypercall changed (the pirqs Xen allocated or freed).
    pub fn note_success(&mut self, op: &PtOp, value: u64) {
        match *op {
            PtOp::MapPirqMsi(m) => {
                let (sbdf, entry, table_base, nvec) = (m.sbdf, m.entry, m.table_base, m.nvec);
                if let Ok(pirq) = u32::try_from(value) {
                    self.pirqs.insert(
                        pirq,
                        PirqBlock {
                            sbdf,
                            entry,
                            nvec: nvec.max(1),
                            msix: table_base != 0,
                        },
                    );
                }
            }
            PtOp::UnmapPirq { pirq } => {
                self.pirqs.remove(&pirq);
            }
            _ => {}
        }
    }
}
