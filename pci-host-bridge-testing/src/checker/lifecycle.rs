//! Start and stop: the order of the lifecycle's hypercalls and device events, and nothing of
//! the guest left in Xen after a stop.

use std::collections::BTreeMap;

use ioreq_server::device::{Actions, Device};
use xen_abi::passthrough::PtOp;

use pci_host_bridge::backend::snapshot::DeviceEventKind;
use pci_host_bridge::backend::{BarInfo, BarKind};
use pci_host_bridge::bars::PAGE_SIZE;
use pci_host_bridge::bridge::PciHostBridge;
use pci_host_bridge::topology::PciAddress;

use super::Checker;
use crate::xen_like::LoggedOp;

fn ops_of(log: &[LoggedOp]) -> Vec<PtOp> {
    log.iter().map(|l| l.op.clone()).collect()
}

impl Checker {
    /// Check the start the bridge just made (the calls from log index `from` on): for each
    /// function, test_assign, decode on, prepare_msix (with MSI-X), reset, the host's Function
    /// Mask clear, assign and permissions for every BAR, in that order. `skip` lists guest
    /// addresses not to check (functions a failed start did not reach).
    pub fn check_start(
        &self,
        bridge: &PciHostBridge,
        from: usize,
        skip: &[PciAddress],
    ) -> Result<(), String> {
        self.take_violations()?;
        let x = self.xen();
        let log = &x.log[from.min(x.log.len())..];
        let seq_of = |pred: &dyn Fn(&PtOp) -> bool| log.iter().find(|l| pred(&l.op)).map(|l| l.seq);
        let info = seq_of(&|o| matches!(o, PtOp::GetDomainInfo));
        for (a, fc) in &self.funcs {
            if skip.contains(a) {
                continue;
            }
            let f = bridge.function(*a).ok_or("function vanished")?;
            let sbdf = f.host_address().sbdf();
            let test = seq_of(&|o| *o == PtOp::TestAssignDevice { sbdf });
            let assign = seq_of(&|o| *o == PtOp::AssignDevice { sbdf });
            let prepare = seq_of(&|o| *o == PtOp::PrepareMsix { sbdf });
            let ev = fc.handle.events();
            let dev = |k: &DeviceEventKind| ev.iter().find(|e| e.kind == *k).map(|e| e.seq);
            let decode = dev(&DeviceEventKind::EnableDecode);
            let reset = dev(&DeviceEventKind::Reset);
            let (Some(test), Some(assign), Some(decode)) = (test, assign, decode) else {
                return Err(format!(
                    "{a}: start without test_assign ({test:?}), assign ({assign:?}) or decode on ({decode:?})"
                ));
            };
            if info.is_none_or(|i| i > test) {
                return Err(format!(
                    "{a}: the guest's RAM was not checked before assigning"
                ));
            }
            if !(test < decode && decode < assign) {
                return Err(format!(
                    "{a}: order test_assign {test} < decode on {decode} < assign {assign} broken"
                ));
            }
            if let Some(r) = reset {
                if !(decode < r && r < assign) {
                    return Err(format!(
                        "{a}: reset at {r}, not between decode on and assign"
                    ));
                }
                if prepare.is_some_and(|p| p > r) {
                    return Err(format!("{a}: prepare_msix after the reset"));
                }
            }
            if let Some(rm) = fc.raw.msix {
                let Some(p) = prepare else {
                    return Err(format!("{a}: MSI-X function assigned without prepare_msix"));
                };
                if !(decode < p && p < assign) {
                    return Err(format!(
                        "{a}: prepare_msix not between decode on and assign"
                    ));
                }
                let cfg = fc.handle.config();
                let ctl = u16::from_le_bytes([
                    cfg[usize::from(rm.cap) + 2],
                    cfg[usize::from(rm.cap) + 3],
                ]);
                if ctl & 0x4000 != 0 {
                    return Err(format!(
                        "{a}: the host's Function Mask is still set (assign_device refuses that)"
                    ));
                }
                let clear = ev.iter().find(|e| {
                    matches!(&e.kind, DeviceEventKind::ConfigWrite { offset, data } if *offset == rm.cap + 2 && data.len() == 2)
                });
                if let Some(c) = clear {
                    if c.seq > assign {
                        return Err(format!("{a}: Function Mask cleared after assign"));
                    }
                }
            } else if prepare.is_some() {
                return Err(format!("{a}: prepare_msix without MSI-X"));
            }
            if !x.assigned.contains(&sbdf) {
                return Err(format!("{a}: not assigned after start"));
            }
            for i in 0..6 {
                let Some(b) = f.device().bar(i) else { continue };
                let ok = if b.kind == BarKind::Io {
                    x.ioports.covers(b.host_addr, b.size)
                } else {
                    let first = b.host_addr / PAGE_SIZE;
                    x.iomem
                        .covers(first, (b.host_addr + b.size - 1) / PAGE_SIZE + 1 - first)
                };
                if !ok {
                    return Err(format!("{a}: BAR {i} ({b:x?}) not permitted to the guest"));
                }
            }
            // Permissions of this function's BARs after its assignment.
            let bars: Vec<BarInfo> = (0..6).filter_map(|i| f.device().bar(i)).collect();
            let perm = log
                .iter()
                .filter(|l| match l.op {
                    PtOp::IomemPermission {
                        mfn, allow: true, ..
                    } => bars
                        .iter()
                        .any(|b| b.kind != BarKind::Io && mfn == b.host_addr / PAGE_SIZE),
                    PtOp::IoportPermission {
                        port, allow: true, ..
                    } => bars
                        .iter()
                        .any(|b| b.kind == BarKind::Io && u64::from(port) == b.host_addr),
                    _ => false,
                })
                .map(|l| l.seq)
                .min();
            if perm.is_some_and(|p| p < assign) {
                return Err(format!("{a}: permissions granted before the assignment"));
            }
        }
        Ok(())
    }

    /// Stop the bridge ([`Device::stop`]) and check the hand-back (see the crate docs):
    /// nothing left in Xen, the device's Bus Master and MSI / MSI-X Enable off, and the order
    /// of the steps. Stopping again makes no call.
    pub fn stop_and_check(&mut self, bridge: &mut PciHostBridge) -> Result<(), String> {
        let from = self.xen().log.len();
        let ev_from: BTreeMap<PciAddress, usize> = self
            .funcs
            .iter()
            .map(|(a, f)| (*a, f.handle.events().len()))
            .collect();
        let bme_before: BTreeMap<PciAddress, bool> = self
            .funcs
            .iter()
            .map(|(a, f)| (*a, f.handle.config_bytes(4, 1)[0] & 4 != 0))
            .collect();
        let mut actions = Actions::new();
        bridge.stop(&mut actions);
        self.take_violations()?;
        let x = self.xen();
        let left = x.leftovers();
        if !left.is_empty() {
            return Err(format!("after stop, left in Xen: {left:?}"));
        }
        // The stop's calls, read in place (nothing below calls into the fake Xen).
        let log = &x.log[from..];
        // The first call of each kind that the order checks below look for, by host function
        // (one pass over the log instead of a search per function and kind).
        let mut firsts: BTreeMap<(u32, u8), u64> = BTreeMap::new();
        for l in log {
            let key = match l.op {
                PtOp::ReleaseMsix { sbdf } => (sbdf, 0),
                PtOp::DeassignDevice {
                    sbdf,
                    from_dom_io: false,
                } => (sbdf, 1),
                PtOp::DeassignDevice {
                    sbdf,
                    from_dom_io: true,
                } => (sbdf, 2),
                _ => continue,
            };
            firsts.entry(key).or_insert(l.seq);
        }
        for (a, fc) in &self.funcs {
            let Some(f) = bridge.function(*a) else {
                continue;
            };
            let sbdf = f.host_address().sbdf();
            let cfg = fc.handle.config();
            let cmd = u16::from_le_bytes([cfg[4], cfg[5]]);
            if cmd & 4 != 0 {
                return Err(format!("{a}: Bus Master still on after stop"));
            }
            if let Some((c, _)) = fc.raw.msi {
                if cfg[usize::from(c) + 2] & 1 != 0 {
                    return Err(format!("{a}: the device's MSI Enable is still on"));
                }
            }
            if let Some(m) = fc.raw.msix {
                if cfg[usize::from(m.cap) + 3] & 0xC0 != 0 {
                    return Err(format!(
                        "{a}: the device's MSI-X Enable / Function Mask still on"
                    ));
                }
            }
            let ev = fc.handle.events_from(ev_from.get(a).copied().unwrap_or(0));
            let bme_off = ev.iter().find_map(|e| match &e.kind {
                DeviceEventKind::ConfigWrite { offset: 4, data } if data[0] & 4 == 0 => Some(e.seq),
                _ => None,
            });
            let reset = ev
                .iter()
                .find(|e| e.kind == DeviceEventKind::Reset)
                .map(|e| e.seq);
            let decode_off = ev
                .iter()
                .find(|e| e.kind == DeviceEventKind::DisableDecode)
                .map(|e| e.seq);
            // The function's host BARs (and ROM), looked up once instead of per call.
            let mem: Vec<(u64, u64)> = (0..6)
                .filter_map(|i| f.device().bar(i))
                .chain(f.device().rom())
                .filter(|b| b.kind != BarKind::Io)
                .map(|b| (b.host_addr, b.host_addr + b.size))
                .collect();
            let io: Vec<(u64, u64)> = (0..6)
                .filter_map(|i| f.device().bar(i))
                .filter(|b| b.kind == BarKind::Io)
                .map(|b| (b.host_addr, b.host_addr + b.size))
                .collect();
            let mine = |l: &&LoggedOp| match l.op {
                PtOp::MemoryMapping { mfn, nr, .. } => mem
                    .iter()
                    .any(|&(lo, hi)| mfn * PAGE_SIZE >= lo && (mfn + nr) * PAGE_SIZE <= hi),
                PtOp::IoportMapping { mport, .. } => io
                    .iter()
                    .any(|&(lo, hi)| u64::from(mport) >= lo && u64::from(mport) < hi),
                PtOp::UnbindPtIrqMsi { .. } | PtOp::UnmapPirq { .. } => {
                    l.pirq.is_some_and(|b| b.sbdf == sbdf)
                }
                _ => false,
            };
            let teardown: Vec<&LoggedOp> = log.iter().filter(mine).collect();
            let last_teardown = teardown.iter().map(|l| l.seq).max();
            let first_unmap = teardown
                .iter()
                .filter(|l| {
                    matches!(
                        l.op,
                        PtOp::MemoryMapping { .. } | PtOp::IoportMapping { .. }
                    )
                })
                .map(|l| l.seq)
                .min();
            if bme_before.get(a).copied().unwrap_or(false) {
                match (bme_off, first_unmap) {
                    (Some(b), Some(u)) if b < u => {}
                    (Some(_), None) => {}
                    _ => {
                        return Err(format!(
                            "{a}: Bus Master not turned off before the first unmap ({bme_off:?} vs {first_unmap:?})"
                        ))
                    }
                }
            }
            let release = firsts.get(&(sbdf, 0)).copied();
            let deassign = firsts.get(&(sbdf, 1)).copied();
            let dom_io = firsts.get(&(sbdf, 2)).copied();
            let Some(deassign) = deassign else {
                return Err(format!("{a}: no deassign at stop"));
            };
            if dom_io.is_none_or(|d| d < deassign) {
                return Err(format!(
                    "{a}: not taken back from DOMID_IO after the deassign"
                ));
            }
            if let Some(r) = reset {
                if last_teardown.is_some_and(|t| t > r) {
                    return Err(format!("{a}: unmaps or unbinds after the reset"));
                }
                if r > deassign {
                    return Err(format!("{a}: reset after the deassign (the guest's DMA state reaches dom0's IOMMU context)"));
                }
            } else {
                return Err(format!("{a}: no reset at stop"));
            }
            if fc.raw.msix.is_some() {
                let Some(rel) = release else {
                    return Err(format!("{a}: no release_msix at stop"));
                };
                if reset.is_some_and(|r| rel < r) || rel > deassign {
                    return Err(format!("{a}: release_msix not between reset and deassign"));
                }
            }
            if decode_off.is_none_or(|d| d < deassign) {
                return Err(format!(
                    "{a}: host decode not turned off after the deassign"
                ));
            }
        }
        drop(x);
        // A second stop does nothing (but ask whether the guest is alive).
        let n = self.xen().log.len();
        bridge.stop(&mut actions);
        let again = ops_of(&self.xen().log[n..]);
        if again.iter().any(|o| *o != PtOp::GetDomainInfo) {
            return Err(format!("a second stop made calls: {again:?}"));
        }
        self.sync_logs();
        Ok(())
    }
}
