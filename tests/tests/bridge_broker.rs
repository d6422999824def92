//! pci-host-bridge with a passed-through function runs as two processes behind xen-sim: the
//! broker (the pid its launcher started, which keeps the privileged handles) and the worker
//! that serves (its child, deprivileged). SIGTERM to the broker hands the function back and
//! exits 0; a killed worker is handed back by the broker, which exits non-zero; a killed
//! broker takes the worker with it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tests::harness::bin_path;
use xen_sim::launch::Harness;
use xen_sim::{DomainConfig, HostPciDevice, Owner};

const VF: u32 = 0x0312;

/// xen-sim with the VF of sriov-nic-vf.json, and the bridge serving it; (harness, broker pid).
fn bridge() -> (Harness, u32) {
    let snapshot = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pci-host-bridge/testdata/sriov-nic-vf.json");
    let mut h = Harness::with_domain(1, &DomainConfig::default(), Duration::from_secs(5)).unwrap();
    // The VF as Xen sees it.
    h.sim.add_host_device(HostPciDevice::sriov_nic_vf());
    let cfg = h.write_config(&format!(
        "[pci]\n\n[[pci.device]]\nhost = \"0000:03:02.2\"\nslot = 3\nbackend = \"snapshot\"\nsnapshot = \"{}\"\n",
        snapshot.display()
    ));
    let pid = h.spawn(&bin_path("pci-host-bridge"), &cfg, &[]);
    assert!(h.wait_ready(&["pci-host-bridge"]), "bridge did not come up");
    assert_eq!(h.sim.host_device_owner(VF), Owner::Domain(1));
    (h, pid)
}

/// The guest places BAR0 and turns memory decode on: the bridge maps it (through the broker).
fn map_bar0(h: &Harness) {
    let mut v = h.sim.vcpu(1, 0);
    let ecam = |reg: u64| 0xF000_0000 + (3 << 15) + reg;
    v.mmio_write(ecam(0x10), 4, 0xF100_0000).unwrap();
    v.mmio_write(ecam(0x14), 4, 0).unwrap();
    v.mmio_write(ecam(4), 2, 2).unwrap();
    let mapped = h
        .sim
        .report(1)
        .dm_ops
        .iter()
        .any(|o| o["op"] == "memory_mapping" && o["add"] == true && o["rc"] == 0);
    assert!(mapped, "decode on maps BAR0");
}

fn proc_field(pid: u32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// The broker's child that serves (`--broker-worker` on its command line).
fn worker_of(broker: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if proc_field(pid, "PPid").as_deref() != Some(&broker.to_string()) {
                continue;
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd.split(|&b| b == 0).any(|a| a == b"--broker-worker") {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no worker under broker {broker}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match proc_field(pid, "State") {
            None => return true,
            Some(s) if s.starts_with('Z') => return true,
            _ => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_worker_serves_deprivileged_and_sigterm_to_the_broker_hands_back() {
    let (mut h, broker) = bridge();
    let worker = worker_of(broker);
    // The worker: no_new_privs and the seccomp filter. The broker keeps its uid (it needs
    // root's sysfs files and CAP_SYS_ADMIN) under a filter of its own, and the whole session
    // below (serving, SIGTERM, the hand-back) runs under it.
    assert_eq!(proc_field(worker, "NoNewPrivs").as_deref(), Some("1"));
    assert_eq!(proc_field(worker, "Seccomp").as_deref(), Some("2"));
    assert_eq!(proc_field(broker, "NoNewPrivs").as_deref(), Some("1"));
    assert_eq!(proc_field(broker, "Seccomp").as_deref(), Some("2"));
    map_bar0(&h);
    let codes = h.stop_all();
    assert_eq!(codes, vec![Some(0)], "SIGTERM to the broker: a clean end");
    assert!(gone(worker, Duration::from_secs(5)));
    assert_eq!(h.sim.host_device_owner(VF), Owner::Hardware);
    let r = h.sim.report(1);
    let unmapped = r
        .dm_ops
        .iter()
        .any(|o| o["op"] == "memory_mapping" && o["add"] == false && o["rc"] == 0);
    assert!(unmapped, "the worker's teardown unmapped BAR0");
}

#[test]
fn a_killed_worker_is_handed_back_by_the_broker() {
    let (mut h, broker) = bridge();
    let worker = worker_of(broker);
    map_bar0(&h);
    let before = h.sim.report(1).dm_ops.len();
    h.kill(worker);
    let code = h.wait_exit(broker, Duration::from_secs(10));
    assert!(
        matches!(code, Some(c) if c != 0),
        "the broker reports its worker's death: {code:?}"
    );
    assert_eq!(h.sim.host_device_owner(VF), Owner::Hardware);
    let r = h.sim.report(1);
    let after: Vec<&str> = r.dm_ops[before..]
        .iter()
        .filter(|o| o["rc"] == 0)
        .filter_map(|o| o["op"].as_str())
        .collect();
    for op in [
        "memory_mapping",
        "release_msix",
        "deassign_device",
        "iomem_permission",
    ] {
        assert!(
            after.contains(&op),
            "the broker's hand-back: {op} missing in {after:?}"
        );
    }
}

#[test]
fn a_killed_broker_takes_the_worker_with_it() {
    let (mut h, broker) = bridge();
    let worker = worker_of(broker);
    h.kill(broker);
    assert_eq!(h.wait_exit(broker, Duration::from_secs(5)), None);
    assert!(
        gone(worker, Duration::from_secs(10)),
        "the worker outlived its broker"
    );
}
