//! The ioapic as its own process behind xen-sim, with an interrupt source in another process
//! (this test) on the irq_line socket, programmed the way Linux programs a PCI INTx pin
//! (level, active-low).

use std::time::Duration;

use irq_line::IrqLine;
use serde_json::Value;
use tests::harness::{bin_path, Harness};
use xen_sim::Vcpu;

const BASE: u64 = 0xFEC0_0000;
const PIN: u8 = 11;
const VECTOR: u64 = 0x41;
const DEST: u64 = 3;

fn start(version: &str) -> (Harness, IrqLine) {
    let mut h = Harness::new(1, 1, Duration::from_secs(5));
    let sock = h.dir.join("ioapic.sock");
    let cfg = h.write_config(&format!(
        "[ioapic]\nversion = {version}\nsocket = \"{}\"\n",
        sock.display()
    ));
    h.spawn(&bin_path("ioapic"), &cfg, &[]);
    assert!(h.wait_ready(&["ioapic"]), "ioapic did not come up");
    let line = IrqLine::connect(&sock, PIN).expect("connect irq source");
    (h, line)
}

fn write_reg(v: &mut Vcpu, reg: u64, val: u64) {
    v.mmio_write(BASE, 4, reg).unwrap();
    v.mmio_write(BASE + 0x10, 4, val).unwrap();
}

fn read_reg(v: &mut Vcpu, reg: u64) -> u64 {
    v.mmio_write(BASE, 4, reg).unwrap();
    v.mmio_read(BASE + 0x10, 4).unwrap()
}

/// Linux's level, active-low RTE for PIN (fixed delivery, physical destination).
fn rte_low(masked: bool) -> u64 {
    VECTOR | 1 << 13 | 1 << 15 | u64::from(masked) << 16
}

fn program(v: &mut Vcpu, masked: bool) {
    write_reg(v, 0x11 + 2 * u64::from(PIN), DEST << 24);
    write_reg(v, 0x10 + 2 * u64::from(PIN), rte_low(masked));
}

fn msis(h: &Harness) -> Vec<Value> {
    serde_json::to_value(h.sim.report(1).msis)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn wait_msis(h: &Harness, n: usize) -> bool {
    h.sim
        .wait_for(1, Duration::from_secs(5), |d| d.report().msis.len() >= n)
}

/// Nothing more arrives within a grace period.
fn stays(h: &Harness, n: usize) {
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(msis(h).len(), n, "unexpected MSI: {:?}", msis(h));
}

fn check_msi(m: &Value) {
    assert_eq!(m["vector"], VECTOR);
    assert_eq!(m["dest"], DEST);
    assert_eq!(
        m["trigger"], "edge",
        "level RTEs are delivered as edge MSIs"
    );
    assert_eq!(m["delivery_mode"], "fixed");
}

#[test]
fn level_pin_with_the_eoi_register() {
    let (h, mut line) = start("0x20");
    let mut v = h.sim.vcpu(1, 0);
    let ver = read_reg(&mut v, 1);
    assert_eq!(ver & 0xFF, 0x20);
    assert_eq!((ver >> 16) & 0xFF, 23, "24 pins by default");
    program(&mut v, false);
    line.assert().unwrap();
    assert!(wait_msis(&h, 1));
    check_msi(&msis(&h)[0]);
    // Remote IRR is set; the line stays asserted: no second MSI.
    assert_ne!(
        read_reg(&mut v, 0x10 + 2 * u64::from(PIN)) & 1 << 14,
        0,
        "Remote IRR set"
    );
    line.assert().unwrap();
    stays(&h, 1);
    // The guest EOIs the IOAPIC: resample fires; the device still needs service.
    v.mmio_write(BASE + 0x40, 4, VECTOR).unwrap();
    assert!(
        line.wait_resample(Some(Duration::from_secs(5))).unwrap(),
        "resample after EOI"
    );
    line.assert().unwrap();
    assert!(wait_msis(&h, 2));
    check_msi(&msis(&h)[1]);
    // The device is quiet now: EOI, resample, the source leaves the line low: no MSI.
    v.mmio_write(BASE + 0x40, 4, VECTOR).unwrap();
    assert!(line.wait_resample(Some(Duration::from_secs(5))).unwrap());
    line.deassert().unwrap();
    stays(&h, 2);
    assert_eq!(
        read_reg(&mut v, 0x10 + 2 * u64::from(PIN)) & 1 << 14,
        0,
        "Remote IRR clear"
    );
}

#[test]
fn level_pin_with_the_0x11_edge_toggle() {
    let (h, mut line) = start("0x11");
    let mut v = h.sim.vcpu(1, 0);
    assert_eq!(read_reg(&mut v, 1) & 0xFF, 0x11);
    program(&mut v, false);
    line.assert().unwrap();
    assert!(wait_msis(&h, 1));
    // On 0x11 the EOI register does not exist: writing it changes nothing.
    v.mmio_write(BASE + 0x40, 4, VECTOR).unwrap();
    stays(&h, 1);
    // Linux's io_apic_eoi for 0x11: mask and switch to edge, then back to level, unmasked.
    let r = 0x10 + 2 * u64::from(PIN);
    write_reg(&mut v, r, (rte_low(true)) & !(1 << 15));
    write_reg(&mut v, r, rte_low(false));
    assert!(
        line.wait_resample(Some(Duration::from_secs(5))).unwrap(),
        "resample after the toggle"
    );
    line.assert().unwrap();
    assert!(wait_msis(&h, 2));
    check_msi(&msis(&h)[1]);
}

#[test]
fn masked_pin_delivers_on_unmask_and_snapshot_restores() {
    let (h, mut line) = start("0x20");
    let mut v = h.sim.vcpu(1, 0);
    program(&mut v, true);
    line.assert().unwrap();
    stays(&h, 0);
    // Unmasking an asserted level pin delivers.
    write_reg(&mut v, 0x10 + 2 * u64::from(PIN), rte_low(false));
    assert!(wait_msis(&h, 1));
    check_msi(&msis(&h)[0]);
    // The control socket's snapshot carries the programmed entry and Remote IRR.
    let sock = h.control_socket("ioapic");
    let snap =
        ioreq_server::control::request(&sock, &serde_json::json!({"cmd": "snapshot"})).unwrap();
    assert_eq!(snap["ok"], true, "{snap}");
    let entry = snap["result"]["entries"][usize::from(PIN)]
        .as_u64()
        .unwrap();
    assert_eq!(entry & 0xFF, VECTOR);
    assert_ne!(entry & 1 << 14, 0);
    let r = ioreq_server::control::request(
        &sock,
        &serde_json::json!({"cmd": "restore", "snapshot": snap["result"]}),
    )
    .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let bad = ioreq_server::control::request(
        &sock,
        &serde_json::json!({"cmd": "restore", "snapshot": {"format": 99}}),
    )
    .unwrap();
    assert_eq!(bad["ok"], false);
}
