//! pm-trap as its own process behind xen-sim, driven the way Linux's ACPICA drives PM1.
//! Register layouts come from `pm-trap inspect` on real machines' tables.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tests::harness::{bin_path, Harness};
use xen_abi::*;
use xen_sim::{GuestError, Vcpu};

use common::json_of;

const SLP_EN: u64 = 1 << 13;
const WAK_STS: u64 = 1 << 15;

fn tables(id: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/acpi")
        .join(id)
}

fn inspect(id: &str) -> Value {
    json_of(
        std::process::Command::new(bin_path("pm-trap"))
            .args(["inspect", "--json", "--acpi-dir"])
            .arg(tables(id)),
    )
}

fn port(v: &Value) -> Option<u16> {
    (v["space"] == "io").then(|| v["addr"].as_u64().unwrap() as u16)
}

/// Start pm-trap with `section` (and extra args), one vCPU.
fn start(section: &str, extra: &[&str]) -> (Harness, u32) {
    let mut h = Harness::new(1, 1, Duration::from_secs(5));
    let cfg = h.write_config(section);
    let pid = h.spawn(&bin_path("pm-trap"), &cfg, extra);
    assert!(h.wait_ready(&["pm-trap"]), "pm-trap did not come up");
    (h, pid)
}

fn shutdowns(h: &Harness) -> Vec<Value> {
    h.sim
        .report(1)
        .dm_ops
        .into_iter()
        .filter(|o| o["op"] == "remote_shutdown")
        .collect()
}

/// Write that tolerates the domain going away on this very write.
fn last_write(v: &mut Vcpu, port: u16, size: u32, val: u64) {
    match v.pio_write(port, size, val) {
        Ok(()) | Err(GuestError::ShutDown) => {}
        Err(e) => panic!("{e}"),
    }
}

/// ACPICA's AcpiHwLegacySleep: clear WAK_STS, read PM1 control, write SLP_TYP to PM1a and
/// PM1b, then SLP_TYP|SLP_EN to PM1a and PM1b.
fn acpica_sleep(v: &mut Vcpu, info: &Value, typ: [u64; 2]) {
    let evt_a = port(&info["pm1a_evt"]).unwrap();
    v.pio_write(evt_a, 2, WAK_STS).unwrap();
    if let Some(evt_b) = info["pm1b_evt"]
        .as_object()
        .and_then(|_| port(&info["pm1b_evt"]))
    {
        v.pio_write(evt_b, 2, WAK_STS).unwrap();
    }
    let cnt_a = port(&info["pm1a_cnt"]).unwrap();
    let cnt_b = info["pm1b_cnt"]
        .as_object()
        .and_then(|_| port(&info["pm1b_cnt"]));
    let mut ctl = v.pio_read(cnt_a, 2).unwrap();
    if let Some(b) = cnt_b {
        ctl |= v.pio_read(b, 2).unwrap();
    }
    assert_eq!(ctl & 1, 1, "SCI_EN reads set");
    assert_eq!(ctl & SLP_EN, 0, "SLP_EN reads 0");
    let ctl = ctl & !(7 << 10) & !SLP_EN;
    let (a, b) = (ctl | typ[0] << 10, ctl | typ[1] << 10);
    v.pio_write(cnt_a, 2, a).unwrap();
    if let Some(p) = cnt_b {
        v.pio_write(p, 2, b).unwrap();
    }
    match cnt_b {
        Some(p) => {
            v.pio_write(cnt_a, 2, a | SLP_EN).unwrap();
            last_write(v, p, 2, b | SLP_EN);
        }
        None => last_write(v, cnt_a, 2, a | SLP_EN),
    }
}

fn sleep_values(info: &Value, s: &str) -> [u64; 2] {
    let a = info["sleep"][s].as_array().expect("static \\_Sx");
    [a[0].as_u64().unwrap(), a[1].as_u64().unwrap()]
}

#[test]
fn hp_dc7800_s5_with_pm1b_powers_off_once() {
    let m = "80DC1538C4FA";
    let info = inspect(m);
    // The facts about this machine, as a check on the reader.
    assert_eq!(
        (port(&info["pm1a_cnt"]), port(&info["pm1b_cnt"])),
        (Some(0xF804), Some(0x460))
    );
    assert_eq!(sleep_values(&info, "S5"), [0, 7]);
    let (h, _) = start("", &["--host-acpi", tables(m).to_str().unwrap()]);
    let mut v = h.sim.vcpu(1, 0);
    acpica_sleep(&mut v, &info, sleep_values(&info, "S5"));
    let s = shutdowns(&h);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["reason"], SHUTDOWN_POWEROFF);
    assert_eq!(h.sim.report(1).shutdown_reason.as_deref(), Some("poweroff"));
}

#[test]
fn pm1a_only_machine_s5_and_byte_wise_high_byte_write() {
    let m = "02510C38EA0D";
    let info = inspect(m);
    assert!(info["pm1b_cnt"].is_null());
    let (h, _) = start("", &["--host-acpi", tables(m).to_str().unwrap()]);
    let mut v = h.sim.vcpu(1, 0);
    let cnt = port(&info["pm1a_cnt"]).unwrap();
    let [a, _] = sleep_values(&info, "S5");
    // Byte-wise: SLP_TYP and SLP_EN live in the high byte; the low byte is left alone.
    v.pio_write(cnt + 1, 1, a << 2).unwrap();
    assert!(shutdowns(&h).is_empty(), "SLP_TYP alone must not act");
    assert_eq!(
        v.pio_read(cnt, 2).unwrap() >> 10 & 7,
        a,
        "SLP_TYP reads back"
    );
    last_write(&mut v, cnt + 1, 1, (a << 2) | (SLP_EN >> 8));
    let s = shutdowns(&h);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["reason"], SHUTDOWN_POWEROFF);
}

#[test]
fn reset_register_reboots() {
    let (h, _) = start("[pm_trap]\nmode = \"guest\"\n", &[]);
    let mut v = h.sim.vcpu(1, 0);
    v.pio_write(0xCF9, 1, 2).unwrap(); // not the reset value: nothing happens
    assert!(shutdowns(&h).is_empty());
    last_write(&mut v, 0xCF9, 1, 6);
    let s = shutdowns(&h);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["reason"], SHUTDOWN_REBOOT);
}

#[test]
fn hw_reduced_sleep_control_register() {
    let m = "259F9FDD46E2";
    let info = inspect(m);
    assert_eq!(info["hw_reduced"], true);
    let ctl = port(&info["sleep_control"]).unwrap();
    let (h, _) = start("", &["--host-acpi", tables(m).to_str().unwrap()]);
    let mut v = h.sim.vcpu(1, 0);
    let [a, _] = sleep_values(&info, "S5");
    // SLEEP_CONTROL_REG: SLP_TYPx bits 2-4, SLP_EN bit 5.
    v.pio_write(ctl, 1, a << 2).unwrap();
    assert!(shutdowns(&h).is_empty());
    last_write(&mut v, ctl, 1, (a << 2) | (1 << 5));
    let s = shutdowns(&h);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["reason"], SHUTDOWN_POWEROFF);
}

#[test]
fn repeated_slp_en_and_refused_s3_make_exactly_one_poweroff() {
    let (h, _) = start(
        "[pm_trap]\nmode = \"guest\"\ns3 = [5, 0]\ns5 = [7, 0]\n",
        &[],
    );
    let mut v = h.sim.vcpu(1, 0);
    // S3 is not allowed by this config: warned and ignored, the guest keeps running.
    v.pio_write(0xB004, 2, 5 << 10 | SLP_EN | 1).unwrap();
    assert!(shutdowns(&h).is_empty());
    assert!(v.pio_read(0xB000, 4).is_ok(), "guest still runs");
    last_write(&mut v, 0xB004, 2, 7 << 10 | SLP_EN | 1);
    assert_eq!(shutdowns(&h).len(), 1);
}

#[test]
fn pm1b_halves_act_once_even_when_pm1a_repeats_slp_en() {
    let m = "80DC1538C4FA";
    let info = inspect(m);
    let (h, _) = start("", &["--host-acpi", tables(m).to_str().unwrap()]);
    let mut v = h.sim.vcpu(1, 0);
    let [a, b] = sleep_values(&info, "S5");
    let (ca, cb) = (
        port(&info["pm1a_cnt"]).unwrap(),
        port(&info["pm1b_cnt"]).unwrap(),
    );
    v.pio_write(ca, 2, a << 10 | SLP_EN).unwrap();
    v.pio_write(ca, 2, a << 10 | SLP_EN).unwrap();
    assert!(shutdowns(&h).is_empty(), "half a request must not act");
    last_write(&mut v, cb, 2, b << 10 | SLP_EN);
    assert_eq!(shutdowns(&h).len(), 1);
}

#[test]
fn a_failing_shutdown_is_retried_until_delivered() {
    let (h, pid) = start("[pm_trap]\nmode = \"guest\"\n", &[]);
    h.sim
        .fail_next_dm_ops(1, XEN_DMOP_REMOTE_SHUTDOWN, 3, libc::EAGAIN);
    let mut v = h.sim.vcpu(1, 0);
    let s5 = u64::from(pm_trap_s5()[0]);
    v.pio_write(0xB004, 2, s5 << 10 | SLP_EN).unwrap();
    assert!(h
        .sim
        .wait_for(1, Duration::from_secs(10), |d| d.shut_down()));
    let s = shutdowns(&h);
    let rcs: Vec<i64> = s.iter().map(|o| o["rc"].as_i64().unwrap()).collect();
    assert_eq!(
        rcs,
        vec![-i64::from(libc::EAGAIN); 3]
            .into_iter()
            .chain([0])
            .collect::<Vec<_>>()
    );
    let _ = pid;
}

#[test]
fn an_undeliverable_shutdown_makes_the_process_exit_nonzero() {
    let (mut h, pid) = start("[pm_trap]\nmode = \"guest\"\n", &[]);
    h.sim
        .fail_next_dm_ops(1, XEN_DMOP_REMOTE_SHUTDOWN, 1000, libc::EIO);
    let mut v = h.sim.vcpu(1, 0);
    v.pio_write(0xB004, 2, u64::from(pm_trap_s5()[0]) << 10 | SLP_EN)
        .unwrap();
    let code = h.wait_exit(pid, Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
}

#[test]
fn bad_sizes_and_addresses_are_answered() {
    let (h, _) = start("[pm_trap]\nmode = \"guest\"\n", &[]);
    let mut v = h.sim.vcpu(1, 0);
    // A 4-byte access across PM1a_CNT's end is not inside one range: Xen's null handler.
    assert_eq!(v.pio_read(0xB005, 4).unwrap(), 0xFFFF_FFFF);
    // Odd sizes handed straight to the server are answered all-ones.
    for size in [0u32, 3, 5, 8] {
        let mut r = Ioreq {
            addr: 0xB004,
            size,
            count: 1,
            type_: IOREQ_TYPE_PIO,
            ..Default::default()
        };
        r.set_dir(IOREQ_READ);
        let want = ioreq_server::server::dispatch::size_mask(size);
        assert_eq!(v.submit_to_server(0, r).unwrap(), want, "size {size}");
    }
    // Every byte of the blocks at every size reads without harm, and the guest still runs.
    for p in 0xB000u16..0xB006 {
        for size in [1, 2, 4] {
            let _ = v.pio_read(p, size).unwrap();
        }
    }
    // PM1 status is write-1-to-clear; enable is read/write.
    v.pio_write(0xB002, 2, 0x0120).unwrap();
    assert_eq!(v.pio_read(0xB002, 2).unwrap(), 0x0120);
    assert!(shutdowns(&h).is_empty());
}

/// The guest-mode \_S5 default pm-trap uses (the value the guest ACPI fragment declares).
fn pm_trap_s5() -> [u8; 2] {
    pm_trap::GUEST_S5
}
