//! pci-host-bridge as its own process behind xen-sim, passing through snapshot-backed
//! functions (pci-host-bridge/testdata): a guest that enumerates, places BARs and programs
//! MSI / MSI-X the way Linux does, checked against the sim's record of every hypercall
//! (`dm_ops`); and INTx through the ioapic process.
//!
//! - (a) an SR-IOV VF derived from its PF's SR-IOV capability, with no ioapic process: IDs,
//!   BARs, the assignment lifecycle at start (test_assign, prepare_msix, assign, permissions),
//!   MSI-X bound lazily entry by entry with the guest's Enable written through to the device,
//!   a latched message applied at the unmask, masks left to Xen's msixtbl, disable, and the
//!   hand-back at SIGTERM (unmap, unbind, release_msix, deassign from the guest and from
//!   DOMID_IO, revoke);
//! - (b) multi-message MSI (MME = 2 -> nvec 4) on the PF;
//! - (c) INTx of the PF: the test plays the host interrupt through the snapshot's eventfd, the
//!   bridge drives the IOAPIC pin, the guest EOIs, the bridge unmasks INTx at the device; and
//!   INTx forced off while MSI is enabled.
//! - (d) two functions behind one bridge: every BAR mapping of both handed back at SIGTERM.
//!
//! This file holds the harness and the guest's helpers (Linux's capability walk and BAR
//! placement, the bridge's status); (a) is in `vf_msix`, (b) and (c) in `pf_interrupts`, (d)
//! in `hand_back`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tests::harness::{bin_path, Harness};
use xen_abi::passthrough::msi_gflags;
use xen_sim::Vcpu;

mod hand_back;
mod pf_interrupts;
mod vf_msix;

const DOMID: u16 = 1;
const ECAM: u64 = 0xF000_0000;
const IOAPIC: u64 = 0xFEC0_0000;
/// The VF: host 0000:03:02.2 (VF 2 of the PF at 0000:03:00.0), guest slot 3.
const VF_SBDF: u64 = 0x0312;
const VF_SLOT: u8 = 3;
/// The PF: host 0000:03:00.0, guest slot 2.
const PF_SBDF: u64 = 0x0300;
const PF_SLOT: u8 = 2;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pci-host-bridge/testdata")
        .join(name)
}

fn device(host: &str, slot: u8, file: &str, extra: &str) -> String {
    format!(
        "[[pci.device]]\nhost = \"{host}\"\nslot = {slot}\nbackend = \"snapshot\"\nsnapshot = \"{}\"\n{extra}\n",
        testdata(file).display()
    )
}

/// Start the bridge (and the ioapic first when `ioapic` is set).
fn start(devices: &str, ioapic: bool) -> Harness {
    let mut h = Harness::new(DOMID, 1, Duration::from_secs(5));
    let ioapic_section = if ioapic {
        format!(
            "[ioapic]\nsocket = \"{}\"\n\n",
            h.dir.join("ioapic.sock").display()
        )
    } else {
        String::new()
    };
    let cfg = h.write_config(&format!("{ioapic_section}[pci]\n\n{devices}"));
    if ioapic {
        h.spawn(&bin_path("ioapic"), &cfg, &[]);
        assert!(h.wait_ready(&["ioapic"]), "ioapic did not come up");
    }
    h.spawn(&bin_path("pci-host-bridge"), &cfg, &[]);
    assert!(
        h.wait_ready(&["pci-host-bridge"]),
        "pci-host-bridge did not come up"
    );
    h
}

fn dm_ops(h: &Harness) -> Vec<Value> {
    h.sim.report(DOMID).dm_ops
}

fn ops_named(ops: &[Value], name: &str) -> Vec<Value> {
    ops.iter().filter(|o| o["op"] == name).cloned().collect()
}

/// The passthrough ops (not ioreq-server setup DM ops) from index `from` on.
fn pt_ops_since(h: &Harness, from: usize) -> Vec<Value> {
    dm_ops(h)
        .into_iter()
        .skip(from)
        .filter(|o| xen_abi::passthrough::is_passthrough_op(o["op"].as_str().unwrap_or("")))
        .collect()
}

fn names(ops: &[Value]) -> Vec<String> {
    ops.iter()
        .map(|o| o["op"].as_str().unwrap_or("").to_string())
        .collect()
}

fn cfg_rd(v: &mut Vcpu, slot: u8, reg: u16, size: u32) -> u64 {
    v.pci_cf8_read((0, slot, 0), reg, size).unwrap()
}

fn cfg_wr(v: &mut Vcpu, slot: u8, reg: u16, size: u32, val: u64) {
    v.pci_cf8_write((0, slot, 0), reg, size, val).unwrap()
}

fn ecam(slot: u8, reg: u16) -> u64 {
    ECAM + (u64::from(slot) << 15) + u64::from(reg)
}

/// Linux's capability walk.
fn find_cap(v: &mut Vcpu, slot: u8, id: u64) -> Option<u16> {
    let mut p = cfg_rd(v, slot, 0x34, 1) as u16 & 0xFC;
    for _ in 0..48 {
        if p < 0x40 {
            return None;
        }
        let hdr = cfg_rd(v, slot, p, 2);
        if hdr & 0xFF == id {
            return Some(p);
        }
        p = (hdr >> 8) as u16 & 0xFC;
    }
    None
}

/// Linux's BAR sizing of all six BARs (through ECAM): `(bar, size, is64)` of each memory BAR.
fn size_bars(v: &mut Vcpu, slot: u8) -> Vec<(u16, u64, bool)> {
    let mut out = Vec::new();
    let mut i = 0u16;
    while i < 6 {
        let reg = 0x10 + 4 * i;
        let lo = v.mmio_read(ecam(slot, reg), 4).unwrap();
        v.mmio_write(ecam(slot, reg), 4, 0xFFFF_FFFF).unwrap();
        let mask = v.mmio_read(ecam(slot, reg), 4).unwrap();
        v.mmio_write(ecam(slot, reg), 4, lo).unwrap();
        let is64 = mask & 0x7 == 0x4;
        let mut size_mask = mask & !0xF;
        if is64 {
            let r2 = reg + 4;
            let hi = v.mmio_read(ecam(slot, r2), 4).unwrap();
            v.mmio_write(ecam(slot, r2), 4, 0xFFFF_FFFF).unwrap();
            let m2 = v.mmio_read(ecam(slot, r2), 4).unwrap();
            v.mmio_write(ecam(slot, r2), 4, hi).unwrap();
            size_mask |= m2 << 32;
        } else if size_mask != 0 {
            size_mask |= 0xFFFF_FFFF_0000_0000;
        }
        if mask & 1 == 0 && size_mask != 0 {
            out.push((i, (!size_mask).wrapping_add(1), is64));
        }
        i += if is64 { 2 } else { 1 };
    }
    out
}

/// Place each memory BAR at its natural alignment from 0xF100_0000 on and enable memory
/// decode and bus mastering; returns the guest addresses by BAR.
fn place_bars(v: &mut Vcpu, slot: u8) -> Vec<(u16, u64)> {
    let mut next = 0xF100_0000u64;
    let mut placed = Vec::new();
    for (bar, size, is64) in size_bars(v, slot) {
        next = next.div_ceil(size) * size;
        cfg_wr(v, slot, 0x10 + 4 * bar, 4, next & 0xFFFF_FFFF);
        if is64 {
            cfg_wr(v, slot, 0x14 + 4 * bar, 4, next >> 32);
        }
        placed.push((bar, next));
        next += size;
    }
    cfg_wr(v, slot, 4, 2, 0x0006);
    placed
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn bridge_status(h: &Harness) -> Value {
    let r = ioreq_server::control::request(
        &h.control_socket("pci-host-bridge"),
        &serde_json::json!({"cmd": "status"}),
    )
    .expect("status");
    r["status"]["devices"][0]["state"]["functions"][0].clone()
}

/// The snapshot's recorded writes of MSI-X Message Control (at `cap + 2`), as values; any
/// other write to the capability fails the test (Xen refuses them from dom0).
fn msix_control_writes(h: &Harness, cap: u16) -> Vec<u64> {
    bridge_status(h)["backend"]["last_config_writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            let o = w["offset"].as_u64().unwrap();
            o >= u64::from(cap) && o < u64::from(cap) + 12
        })
        .map(|w| {
            assert_eq!(w["offset"], u64::from(cap) + 2, "{w}");
            let d = w["data"].as_array().unwrap();
            assert_eq!(d.len(), 2, "a 16-bit write: {w}");
            d[0].as_u64().unwrap() | d[1].as_u64().unwrap() << 8
        })
        .collect()
}
