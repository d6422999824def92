//! pci-host-bridge as its own process behind xen-sim: a guest enumerates it the way Linux
//! does (pci_read_bases: decode off, all-ones, read back, restore; 64-bit BARs; the ROM; the
//! capability walks, extended ones through ECAM), places the BARs and enables decode. The sim
//! records the BAR mappings with the MSI-X pages held back, and an access inside a mapped BAR
//! produces no ioreq. Expectations come from the snapshot file (the device), not from here.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tests::harness::{bin_path, Harness};
use xen_sim::Vcpu;

const SLOT: u8 = 3;
const ECAM: u64 = 0xF000_0000;
const CMD_IO: u64 = 1;
const CMD_MEM: u64 = 2;

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pci-host-bridge/testdata/intel-82599-like-pf.json")
}

fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap(),
        v => v.as_u64().unwrap(),
    }
}

fn cfg_read(v: &mut Vcpu, reg: u16, size: u32) -> u64 {
    v.pci_cf8_read((0, SLOT, 0), reg, size).unwrap()
}
fn cfg_write(v: &mut Vcpu, reg: u16, size: u32, val: u64) {
    v.pci_cf8_write((0, SLOT, 0), reg, size, val).unwrap()
}
fn ecam(reg: u64) -> u64 {
    ECAM + (u64::from(SLOT) << 15) + reg
}

/// Linux's __pci_read_base for BAR `i`: returns (is_io, is_64, size, raw low bits).
fn size_bar(v: &mut Vcpu, i: u16) -> (bool, bool, u64) {
    let reg = 0x10 + 4 * i;
    let orig = cfg_read(v, reg, 4);
    cfg_write(v, reg, 4, 0xFFFF_FFFF);
    let lo = cfg_read(v, reg, 4);
    cfg_write(v, reg, 4, orig);
    let io = orig & 1 == 1;
    let is64 = !io && (orig >> 1) & 3 == 2;
    let mut mask = if io { lo & !3 & 0xFFFF } else { lo & !0xF };
    if is64 {
        let orig_hi = cfg_read(v, reg + 4, 4);
        cfg_write(v, reg + 4, 4, 0xFFFF_FFFF);
        let hi = cfg_read(v, reg + 4, 4);
        cfg_write(v, reg + 4, 4, orig_hi);
        mask |= hi << 32;
        let size = (!mask).wrapping_add(1);
        return (io, is64, size);
    }
    let size = if mask == 0 {
        0
    } else if io {
        (!mask & 0xFFFF) + 1
    } else {
        (!mask & 0xFFFF_FFFF) + 1
    };
    (io, is64, size)
}

#[test]
fn linux_style_enumeration_placement_and_decode() {
    let snap: Value =
        serde_json::from_str(&std::fs::read_to_string(snapshot_path()).unwrap()).unwrap();
    let mut h = Harness::new(1, 1, Duration::from_secs(5));
    let cfg = h.write_config(&format!(
        "[pci]\n\n[[pci.device]]\nhost = \"0000:05:00.0\"\nslot = {SLOT}\nbackend = \"snapshot\"\nsnapshot = \"{}\"\n",
        snapshot_path().display()
    ));
    h.spawn(&bin_path("pci-host-bridge"), &cfg, &[]);
    assert!(h.wait_ready(&["pci-host-bridge"]));
    let mut v = h.sim.vcpu(1, 0);

    // The host bridge at 00:00.0 and our function; an empty slot reads all-ones.
    assert_eq!(v.pci_cf8_read((0, 0, 0), 0, 4).unwrap(), 0x0008_1b36);
    assert_eq!(
        v.pci_cf8_read((0, 0, 0), 0x0A, 2).unwrap(),
        0x0600,
        "host bridge class"
    );
    assert_eq!(v.pci_cf8_read((0, 7, 0), 0, 4).unwrap(), 0xFFFF_FFFF);
    let id = cfg_read(&mut v, 0, 4);
    assert_ne!(id & 0xFFFF, 0xFFFF);
    // ECAM and CF8 agree.
    assert_eq!(v.mmio_read(ecam(0), 4).unwrap(), id);

    // pci_read_bases with decode off.
    let cmd = cfg_read(&mut v, 4, 2);
    cfg_write(&mut v, 4, 2, cmd & !(CMD_IO | CMD_MEM));
    let bars: Vec<Value> = snap["bars"].as_array().unwrap().clone();
    for b in &bars {
        let i = b["index"].as_u64().unwrap() as u16;
        let (io, is64, size) = size_bar(&mut v, i);
        assert_eq!(size, num(&b["size"]), "BAR{i} size");
        assert_eq!(io, b["kind"] == "io", "BAR{i} kind");
        assert_eq!(is64, b["kind"] == "mem64", "BAR{i} width");
    }
    // The ROM: all-ones except the enable bit, read back, restore.
    let rom = cfg_read(&mut v, 0x30, 4);
    cfg_write(&mut v, 0x30, 4, 0xFFFF_F800);
    let rom_mask = cfg_read(&mut v, 0x30, 4) & 0xFFFF_F800;
    cfg_write(&mut v, 0x30, 4, rom);
    assert_eq!(
        (!rom_mask & 0xFFFF_FFFF) + 1,
        num(&snap["rom"]["size"]),
        "ROM size"
    );

    // Capability walk: exposed ones only; VPD hidden.
    assert_ne!(cfg_read(&mut v, 6, 2) & 0x10, 0, "capability list bit");
    let mut caps = Vec::new();
    let mut p = cfg_read(&mut v, 0x34, 1) & 0xFC;
    let mut msix = None;
    while p != 0 && caps.len() < 48 {
        let id = cfg_read(&mut v, p as u16, 1);
        if id == 0x11 {
            msix = Some(p as u16);
        }
        caps.push(id);
        p = cfg_read(&mut v, p as u16 + 1, 1) & 0xFC;
    }
    for id in [0x01, 0x05, 0x10, 0x11] {
        assert!(caps.contains(&id), "capability {id:#x} exposed: {caps:x?}");
    }
    assert!(!caps.contains(&0x03), "VPD hidden: {caps:x?}");
    // Extended capabilities through ECAM: SR-IOV, ARI and AER hidden.
    let mut ext = Vec::new();
    let mut p = 0x100u64;
    while p != 0 && ext.len() < 48 {
        let hdr = v.mmio_read(ecam(p), 4).unwrap();
        if hdr == 0 || hdr == 0xFFFF_FFFF {
            break;
        }
        ext.push(hdr & 0xFFFF);
        p = (hdr >> 20) & 0xFFC;
    }
    for hidden in [0x0001, 0x000E, 0x0010] {
        assert!(
            !ext.contains(&hidden),
            "extended capability {hidden:#x} must be hidden: {ext:x?}"
        );
    }

    // MSI-X table and PBA location, as the guest sees them.
    let msix = msix.expect("MSI-X exposed");
    let table = cfg_read(&mut v, msix + 4, 4);
    let pba = cfg_read(&mut v, msix + 8, 4);
    let entries = (cfg_read(&mut v, msix + 2, 2) & 0x7FF) + 1;

    // Place the BARs in the guest's MMIO / I/O windows (the [pci] defaults) and enable decode.
    let mut gaddr = std::collections::HashMap::new();
    let mut next_mem = 0xF100_0000u64;
    for b in &bars {
        let i = b["index"].as_u64().unwrap() as u16;
        let size = num(&b["size"]);
        if b["kind"] == "io" {
            cfg_write(&mut v, 0x10 + 4 * i, 4, 0xC000);
            gaddr.insert(i, 0xC000u64);
        } else {
            next_mem = next_mem.div_ceil(size) * size;
            cfg_write(&mut v, 0x10 + 4 * i, 4, next_mem & 0xFFFF_FFF0);
            if b["kind"] == "mem64" {
                cfg_write(&mut v, 0x14 + 4 * i, 4, next_mem >> 32);
            }
            gaddr.insert(i, next_mem);
            next_mem += size;
        }
    }
    let before = h.sim.report(1).dm_ops.len();
    cfg_write(&mut v, 4, 2, cmd | CMD_IO | CMD_MEM);
    let ops: Vec<Value> = h.sim.report(1).dm_ops[before..].to_vec();
    let maps: Vec<&Value> = ops
        .iter()
        .filter(|o| o["op"] == "memory_mapping" && o["add"] == true)
        .collect();
    assert!(!maps.is_empty(), "decode on maps BARs: {ops:?}");
    // Xen (and xen-sim) map at most 64 frames per call and return how many they did
    // (p2m.c:1670-1738; the sim records that positive count as `value`, 0 or absent meaning
    // all of `nr`); the bridge asks again for the rest. Nothing is refused.
    let done = |m: &Value| {
        assert_eq!(m["rc"], 0, "memory_mapping refused: {m}");
        match m.get("value").and_then(Value::as_u64) {
            Some(k) if k > 0 => k,
            _ => m["nr"].as_u64().unwrap(),
        }
    };
    // Every guest frame of every memory BAR is mapped exactly once, except the pages that hold
    // the MSI-X table or PBA, which stay trapped.
    let page = |a: u64| a >> 12;
    let mut held_back = std::collections::HashSet::new();
    for (reg, len) in [(table, entries * 16), (pba, entries.div_ceil(64) * 8)] {
        let bir = (reg & 7) as u16;
        let start = gaddr[&bir] + (reg & !7);
        for p in page(start)..=page(start + len - 1) {
            held_back.insert(p);
        }
    }
    // guest frame -> (times mapped, host frame)
    let mut mapped = std::collections::HashMap::new();
    for m in &maps {
        let (g0, m0) = (m["gfn"].as_u64().unwrap(), m["mfn"].as_u64().unwrap());
        for f in 0..done(m) {
            let e = mapped.entry(g0 + f).or_insert((0, m0 + f));
            e.0 += 1;
            assert_eq!(e.1, m0 + f, "frame {:#x} mapped to two host frames", g0 + f);
        }
    }
    for b in bars.iter().filter(|b| b["kind"] != "io") {
        let i = b["index"].as_u64().unwrap() as u16;
        let host = num(&b["host_addr"]);
        for f in 0..num(&b["size"]) / 4096 {
            let g = page(gaddr[&i]) + f;
            if held_back.contains(&g) {
                assert!(
                    !mapped.contains_key(&g),
                    "MSI-X page {g:#x} must stay trapped"
                );
            } else {
                assert_eq!(
                    mapped.get(&g),
                    Some(&(1, page(host) + f)),
                    "BAR{i} frame {g:#x} mapped once, to its host frame"
                );
            }
        }
    }
    assert!(
        ops.iter()
            .any(|o| o["op"] == "ioport_mapping" && o["add"] == true && o["gport"] == 0xC000),
        "I/O BAR mapped: {ops:?}"
    );

    // An access inside a mapped BAR produces no ioreq; one to the MSI-X table does.
    let mmio_before = h
        .sim
        .report(1)
        .ioreqs_by_type
        .get("MMIO")
        .copied()
        .unwrap_or(0);
    let p2m_before = h.sim.report(1).p2m_accesses;
    v.mmio_read(gaddr[&0] + 0x100, 4).unwrap();
    let r = h.sim.report(1);
    assert_eq!(
        r.ioreqs_by_type.get("MMIO").copied().unwrap_or(0),
        mmio_before,
        "no ioreq for a mapped BAR"
    );
    assert_eq!(r.p2m_accesses, p2m_before + 1);
    let bir = (table & 7) as u16;
    let ctrl = v.mmio_read(gaddr[&bir] + (table & !7) + 12, 4).unwrap();
    assert_eq!(ctrl & 1, 1, "MSI-X entries start masked");
    assert_eq!(
        h.sim
            .report(1)
            .ioreqs_by_type
            .get("MMIO")
            .copied()
            .unwrap_or(0),
        mmio_before + 1
    );

    // Decode off unmaps what was mapped.
    let before = h.sim.report(1).dm_ops.len();
    cfg_write(&mut v, 4, 2, cmd & !(CMD_IO | CMD_MEM));
    let ops: Vec<Value> = h.sim.report(1).dm_ops[before..].to_vec();
    let unmaps = ops
        .iter()
        .filter(|o| o["op"] == "memory_mapping" && o["add"] == false)
        .count();
    assert_eq!(unmaps, maps.len(), "{ops:?}");
    let r = h.sim.report(1);
    eprintln!(
        "ioreqs {:?}, p2m accesses {}, maps {}, caps {caps:x?}, ext {ext:x?}",
        r.ioreqs_by_type,
        r.p2m_accesses,
        maps.len()
    );
    assert_eq!(h.stop_all(), vec![Some(0)]);
}
