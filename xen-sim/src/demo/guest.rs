//! The demo's scripted guest: what Linux does at boot and shutdown, step by step, on one
//! vCPU (bus-0 enumeration through CF8/CFC, the VF's BARs and MSI-X through ECAM, the IOAPIC
//! and one INTx interrupt, ACPI S5 on PM1a).
//!
//! Apart from `mod.rs` (starting the device models, the report, its printing) because these
//! steps are the guest's side only: each one is a sequence of accesses and the log lines that
//! say what the guest saw.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use xen_sim::launch::Harness;
use xen_sim::Vcpu;

use super::{DOMID, ECAM_BASE, IOAPIC_BASE, MMIO_BASE, PM1A_CNT, PM1A_EVT, S5, VF};

/// Linux's bus-0 scan: vendor ID of every slot (function 0; functions 1-7 when the header
/// type says multi-function), then class and header type of what answers.
pub(super) fn enumerate_pci(v: &mut Vcpu, log: &mut Vec<String>) -> anyhow::Result<Vec<Value>> {
    let mut found = Vec::new();
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let id = v.pci_cf8_read((0, dev, func), 0, 4)?;
            if id & 0xFFFF == 0xFFFF {
                if func == 0 {
                    break;
                }
                continue;
            }
            let class = v.pci_cf8_read((0, dev, func), 8, 4)? >> 8;
            let header = v.pci_cf8_read((0, dev, func), 0x0E, 1)?;
            let bdf = format!("00:{dev:02x}.{func}");
            log.push(format!(
                "pci {bdf}: {:04x}:{:04x} class {class:06x}",
                id & 0xFFFF,
                id >> 16
            ));
            found.push(json!({"bdf": bdf, "vendor": format!("{:04x}", id & 0xFFFF), "device": format!("{:04x}", id >> 16), "class": format!("{class:06x}")}));
            if func == 0 && header & 0x80 == 0 {
                break;
            }
        }
    }
    Ok(found)
}

fn cfg_rd(v: &mut Vcpu, slot: u8, reg: u16, size: u32) -> anyhow::Result<u64> {
    Ok(v.pci_cf8_read((0, slot, 0), reg, size)?)
}

fn cfg_wr(v: &mut Vcpu, slot: u8, reg: u16, size: u32, val: u64) -> anyhow::Result<()> {
    Ok(v.pci_cf8_write((0, slot, 0), reg, size, val)?)
}

/// The ECAM address of a register of a function on bus 0 (Linux uses MMCONFIG once the MCFG
/// table names it).
fn ecam(slot: u8, reg: u16) -> u64 {
    ECAM_BASE + (u64::from(slot) << 15) + u64::from(reg)
}

/// Linux's capability-list walk (`pci_find_capability`).
fn find_cap(v: &mut Vcpu, slot: u8, id: u64) -> anyhow::Result<Option<u16>> {
    let mut p = cfg_rd(v, slot, 0x34, 1)? as u16 & 0xFC;
    for _ in 0..48 {
        if p < 0x40 {
            break;
        }
        let hdr = cfg_rd(v, slot, p, 2)?;
        if hdr & 0xFF == id {
            return Ok(Some(p));
        }
        p = (hdr >> 8) as u16 & 0xFC;
    }
    Ok(None)
}

/// The passthrough hypercalls the sim recorded from index `from` on, as `name(args)` lines.
fn pt_ops_since(h: &Harness, from: usize) -> Vec<Value> {
    h.sim
        .report(DOMID)
        .dm_ops
        .into_iter()
        .skip(from)
        .filter(|o| xen_abi::passthrough::is_passthrough_op(o["op"].as_str().unwrap_or("")))
        .collect()
}

/// What Linux does with the passed-through VF: size its BARs (all-ones probes through ECAM),
/// place them in the MMIO window, enable memory decode and bus mastering, then bring up MSI-X
/// (`msix_capability_init`): enable with the function masked, mask and program every entry,
/// clear the function mask, and unmask the entries the driver requests, one by one.
pub(super) fn vf_msix(h: &Harness, v: &mut Vcpu, log: &mut Vec<String>) -> anyhow::Result<()> {
    let s = VF.slot;
    let mut next = MMIO_BASE;
    let mut placed = Vec::new();
    let mut i = 0u16;
    while i < 6 {
        let reg = 0x10 + 4 * i;
        v.mmio_write(ecam(s, reg), 4, 0xFFFF_FFFF)?;
        let lo = v.mmio_read(ecam(s, reg), 4)?;
        let is64 = lo & 0x7 == 0x4;
        let mut mask = (lo & !0xF) | 0xFFFF_FFFF_0000_0000;
        if is64 {
            v.mmio_write(ecam(s, reg + 4), 4, 0xFFFF_FFFF)?;
            mask = (mask & 0xFFFF_FFFF) | v.mmio_read(ecam(s, reg + 4), 4)? << 32;
        }
        if lo & 1 == 0 && lo & !0xF != 0 {
            let size = (!mask).wrapping_add(1);
            next = next.div_ceil(size) * size;
            v.mmio_write(ecam(s, reg), 4, next & 0xFFFF_FFFF)?;
            if is64 {
                v.mmio_write(ecam(s, reg + 4), 4, next >> 32)?;
            }
            placed.push((i, next, size));
            next += size;
        } else {
            v.mmio_write(ecam(s, reg), 4, 0)?;
        }
        i += if is64 { 2 } else { 1 };
    }
    let mark = h.sim.report(DOMID).dm_ops.len();
    cfg_wr(v, s, 4, 2, 0x0006)?;
    for (bar, addr, size) in &placed {
        log.push(format!(
            "pci 00:{s:02x}.0: BAR{bar} {} KiB at {addr:#x}",
            size >> 10
        ));
    }
    let maps = pt_ops_since(h, mark);
    log.push(format!(
        "pci 00:{s:02x}.0: memory decode on -> {} memory_mapping ops ({} pages; the MSI-X table and PBA pages stay trapped)",
        maps.len(),
        maps.iter().filter_map(|m| m["nr"].as_u64()).sum::<u64>()
    ));
    let cap = find_cap(v, s, 0x11)?.context("the VF has no MSI-X capability")?;
    let entries = (cfg_rd(v, s, cap + 2, 2)? & 0x7FF) + 1;
    let tbl = cfg_rd(v, s, cap + 4, 4)?;
    let table = placed
        .iter()
        .find(|p| u64::from(p.0) == tbl & 7)
        .context("MSI-X table BAR not placed")?
        .1
        + (tbl & !7);
    cfg_wr(v, s, cap + 2, 2, 0xC000)?;
    for e in 0..entries {
        v.mmio_write(table + 16 * e + 12, 4, 1)?;
    }
    for e in 0..entries {
        v.mmio_write(table + 16 * e, 4, 0xFEE0_0000)?;
        v.mmio_write(table + 16 * e + 4, 4, 0)?;
        v.mmio_write(table + 16 * e + 8, 4, VF.first_vector + e)?;
    }
    cfg_wr(v, s, cap + 2, 2, 0x8000)?;
    log.push(format!(
        "msi-x 00:{s:02x}.0: {entries} entries programmed masked at {table:#x}, enabled, function mask cleared"
    ));
    for e in 0..VF.vectors {
        let m = h.sim.report(DOMID).dm_ops.len();
        v.mmio_write(table + 16 * e + 12, 4, 0)?;
        let ops = pt_ops_since(h, m);
        let pirq = ops
            .iter()
            .find(|o| o["op"] == "map_pirq_msi")
            .map(|o| o["pirq"].clone())
            .unwrap_or(Value::Null);
        let ok = ops.iter().all(|o| o["rc"] == 0);
        if ok && ops.len() == 2 {
            log.push(format!(
                "msi-x 00:{s:02x}.0: entry {e} unmasked -> map_pirq_msi (pirq {pirq}) + bind_pt_irq_msi vector {:#x}",
                VF.first_vector + e
            ));
        } else {
            log.push(format!(
                "msi-x 00:{s:02x}.0: entry {e} unmasked -> {} (Xen refused: {})",
                ops.iter()
                    .map(|o| format!("{}(rc {})", o["op"].as_str().unwrap_or("?"), o["rc"]))
                    .collect::<Vec<_>>()
                    .join(" + "),
                if ops.is_empty() {
                    "nothing issued".to_string()
                } else {
                    "see dm_ops".to_string()
                }
            ));
        }
        // The VF raises the entry: Xen delivers it only if the device model set MSI-X Enable
        // on the physical function (the sim sees it only through a config_file).
        let d = h.sim.device_interrupt(VF.sbdf, e as u32);
        log.push(format!(
            "msi-x 00:{s:02x}.0: the VF raises entry {e} -> {}",
            match d {
                Ok(()) => "delivered".to_string(),
                Err(why) => format!("not delivered: {why}"),
            }
        ));
    }
    log.push(format!(
        "msi-x 00:{s:02x}.0: entries {}-{} stay masked: not bound",
        VF.vectors,
        entries - 1
    ));
    Ok(())
}

fn ioapic_read(v: &mut Vcpu, reg: u32) -> anyhow::Result<u32> {
    v.mmio_write(IOAPIC_BASE, 4, u64::from(reg))?;
    Ok(v.mmio_read(IOAPIC_BASE + 0x10, 4)? as u32)
}

fn ioapic_write(v: &mut Vcpu, reg: u32, val: u32) -> anyhow::Result<()> {
    v.mmio_write(IOAPIC_BASE, 4, u64::from(reg))?;
    Ok(v.mmio_write(IOAPIC_BASE + 0x10, 4, u64::from(val))?)
}

/// The INTx pin the demo's interrupt source drives, and the vector and destination the guest
/// programs for it (as Linux does for a PCI INTx: level, active-low).
const INTX_PIN: u8 = 16;
const INTX_VECTOR: u32 = 0x31;
const INTX_DEST: u32 = 0;

/// Read the IOAPIC's version register as Linux does at boot, program a PCI INTx pin, and take
/// one interrupt from a source on the ioapic's irq_line socket (this process plays the
/// device): assert -> MSI -> the guest's handler EOIs the IOAPIC -> resample -> the device
/// is quiet -> deassert.
pub(super) fn ioapic(h: &Harness, v: &mut Vcpu, log: &mut Vec<String>) -> anyhow::Result<()> {
    let ver = ioapic_read(v, 1)?;
    log.push(format!(
        "ioapic: version {:#04x}, {} pins",
        ver & 0xFF,
        ((ver >> 16) & 0xFF) + 1
    ));
    let rte = 0x10 + 2 * u32::from(INTX_PIN);
    ioapic_write(v, rte + 1, INTX_DEST << 24)?;
    ioapic_write(v, rte, INTX_VECTOR | 1 << 13 | 1 << 15)?;
    let mut line = irq_line::IrqLine::connect(h.dir.join("ioapic.sock"), INTX_PIN)?;
    line.assert()?;
    // This pin's own vector: the VF's MSI-X vectors were delivered before, and an EOI sent
    // before the IOAPIC took the assertion resamples nothing.
    let got = h.sim.wait_for(DOMID, Duration::from_secs(5), |d| {
        d.report()
            .msis
            .iter()
            .any(|m| u32::from(m.vector) == INTX_VECTOR)
    });
    anyhow::ensure!(got, "no MSI arrived for the asserted INTx pin");
    log.push(format!(
        "ioapic: INTx pin {INTX_PIN} asserted -> MSI vector {INTX_VECTOR:#x}"
    ));
    v.mmio_write(IOAPIC_BASE + 0x40, 4, u64::from(INTX_VECTOR))?;
    let resampled = line.wait_resample(Some(Duration::from_secs(5)))?;
    anyhow::ensure!(resampled, "no resample after the guest's EOI");
    line.deassert()?;
    log.push("ioapic: guest EOI -> resample -> source deasserted".into());
    Ok(())
}

/// ACPICA's S5 sequence on PM1a: clear WAK_STS, write SLP_TYP, then SLP_TYP | SLP_EN.
pub(super) fn power_off(v: &mut Vcpu, log: &mut Vec<String>) -> anyhow::Result<()> {
    v.pio_write(PM1A_EVT, 2, 1 << 15)?;
    let cnt = v.pio_read(PM1A_CNT, 2)?;
    let typ = u64::from(S5[0]) << 10;
    let base = cnt & !(7 << 10) & !(1 << 13);
    v.pio_write(PM1A_CNT, 2, base | typ)?;
    log.push(format!(
        "acpi: PM1a_CNT {cnt:#06x} -> SLP_TYP {} | SLP_EN",
        S5[0]
    ));
    match v.pio_write(PM1A_CNT, 2, base | typ | (1 << 13)) {
        Ok(()) | Err(xen_sim::GuestError::ShutDown) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
