//! `xen-sim demo`: the main job on the embedded default. xen-sim runs in this process; each
//! device model runs as its own process on the `sim` transport, configured by one guest
//! config; a scripted guest does what Linux does (enumerate PCI through CF8/CFC, size and
//! place the BARs of a passed-through SR-IOV VF, enable decode and program its MSI-X, read the
//! IOAPIC, take an INTx interrupt, power off through ACPI PM1a_CNT) and the sim's record of
//! every ioreq, DM op, passthrough hypercall and MSI is printed.
//!
//! This file starts the device models and builds and prints the report; the scripted guest's
//! steps are `guest.rs`'s, split off because they are the guest's side only.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use ioreq_server::sandbox::ProcStatus;
use serde_json::{json, Value};
use xen_sim::launch::Harness;

mod guest;

use guest::{enumerate_pci, ioapic, power_off, vf_msix};

const DOMID: u16 = 1;
/// The \_S5 value the guest's ACPI fragment declares and pm-trap is configured with.
const S5: [u8; 2] = [7, 0];
const PM1A_EVT: u16 = 0xB000;
const PM1A_CNT: u16 = 0xB004;
const IOAPIC_BASE: u64 = 0xFEC0_0000;

/// The uid and gid the deprivileged device models run as when the demo runs as root
/// (`nobody`/`nogroup` on Debian; no passwd entry is needed for a numeric --user).
const DEMO_UID: u32 = 65534;

/// The device models the demo runs, by binary name.
const PROCESSES: [&str; 3] = ["pm-trap", "ioapic", "pci-host-bridge"];

fn bin_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("xen-sim has no directory")?
            .to_path_buf(),
    };
    for p in PROCESSES {
        if !dir.join(p).exists() {
            bail!("{} is missing: build the workspace first (cargo build --release), or pass --bin-dir", dir.join(p).display());
        }
    }
    Ok(dir)
}

/// A snapshot of a real device's config space (a virtio-net function with MSI-X, taken
/// read-only from sysfs) that the demo passes through at slot 2.
const DEMO_DEVICE: &str = "real/virtio-net-1af4-1041.json";
/// The SR-IOV VF the demo passes through: a raw VF config space whose IDs and BARs come
/// from its PF's SR-IOV capability (sriov-nic-pf.json next to it).
struct DemoVf {
    /// Its snapshot, under the snapshot directory.
    snapshot: &'static str,
    /// Its host sbdf (segment 0, `bus << 8 | device << 3 | function`), as Xen names it.
    sbdf: u32,
    /// The guest slot it sits at.
    slot: u8,
    /// MSI-X entries the guest's driver unmasks (the VF has 5; the others stay masked, unbound).
    vectors: u64,
    /// The vector of the first of them; the others follow.
    first_vector: u64,
}

impl DemoVf {
    /// The host address in the config's `DDDD:BB:DD.F` form, from [`DemoVf::sbdf`].
    fn host(&self) -> String {
        let (bus, devfn) = (self.sbdf >> 8, self.sbdf & 0xFF);
        format!("0000:{bus:02x}:{:02x}.{}", devfn >> 3, devfn & 7)
    }
}

/// The demo's VF: host 0000:03:02.2, at guest slot 3.
const VF: DemoVf = DemoVf {
    snapshot: "sriov-nic-vf.json",
    sbdf: 0x0312,
    slot: 3,
    vectors: 3,
    first_vector: 0x41,
};
const ECAM_BASE: u64 = 0xF000_0000;

const MMIO_BASE: u64 = 0xF100_0000;

fn snapshot_path(bin: &std::path::Path, name: &str) -> anyhow::Result<PathBuf> {
    // Installed next to the binaries, or in the source tree (target/{debug,release}/..).
    let candidates = [
        bin.join("pci-snapshots").join(name),
        bin.join("../../pci-host-bridge/testdata").join(name),
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../pci-host-bridge/testdata")
            .join(name),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .with_context(|| format!("cannot find the demo device snapshot {name}"))
}

fn config(h: &Harness, snapshot: &std::path::Path, vf: &std::path::Path) -> String {
    format!(
        r#"[pm_trap]
mode = "guest"
s5 = [{s5a}, {s5b}]

[ioapic]
base = {IOAPIC_BASE:#x}
socket = "{ioapic_sock}"

[pci]

[[pci.device]]
host = "0000:00:03.0"
slot = 2
backend = "snapshot"
snapshot = "{snapshot}"

[[pci.device]]
host = "{vf_host}"
slot = {vf_slot}
backend = "snapshot"
snapshot = "{vf}"
config_mirror = "{mirror}"
"#,
        s5a = S5[0],
        s5b = S5[1],
        ioapic_sock = h.dir.join("ioapic.sock").display(),
        snapshot = snapshot.display(),
        vf = vf.display(),
        vf_host = VF.host(),
        vf_slot = VF.slot,
        mirror = vf_config_mirror(h).display(),
    )
}

/// Where the VF's snapshot backend mirrors its config space, for the sim to read the
/// physical function's MSI-X Enable as Xen would.
fn vf_config_mirror(h: &Harness) -> PathBuf {
    h.dir.join("vf-config.bin")
}

/// Run the demo and return its report.
pub fn run(bin: Option<PathBuf>, keep: bool) -> anyhow::Result<Value> {
    let bin = bin_dir(bin)?;
    // The guest that gets devices passed through has an IOMMU context (the rig forces
    // XEN_DOMCTL_CDF_iommu) and is destroyed when it powers off (xl's on_poweroff default).
    let mut h = Harness::with_domain(
        DOMID,
        &xen_sim::DomainConfig {
            vcpus: 1,
            ram_mib: 16,
            iommu: true,
            destroy_on_poweroff: true,
        },
        Duration::from_secs(5),
    )
    .context("starting xen-sim")?;
    // What Xen reads from the VF itself (read_pci_mem_bar through its PF's SR-IOV capability,
    // the MSI-X capability): the facts of sriov-nic-vf.json and its PF.
    h.sim.add_host_device(xen_sim::HostPciDevice {
        config_file: Some(vf_config_mirror(&h)),
        ..xen_sim::HostPciDevice::sriov_nic_vf()
    });
    if keep {
        h.keep_dir();
    }
    let cfg = h.write_config(&config(
        &h,
        &snapshot_path(&bin, DEMO_DEVICE)?,
        &snapshot_path(&bin, VF.snapshot)?,
    ));
    // As root, the device models that deprivilege after setup switch to an explicit numeric
    // uid (nobody's), so that the demo needs no xen-qemuuser-range-base user on a fresh
    // machine; the bridge, which passes functions through, stays privileged.
    let user = DEMO_UID.to_string() + ":" + &DEMO_UID.to_string();
    let extra: Vec<&str> = if nix::unistd::geteuid().is_root() {
        vec!["--user", &user]
    } else {
        tracing::info!("not root: the device models keep this uid (no --user passed)");
        Vec::new()
    };
    let mut pids = Vec::new();
    for p in PROCESSES {
        pids.push(
            h.try_spawn(&bin.join(p), &cfg, &extra)
                .with_context(|| format!("starting {p}"))?,
        );
    }
    if !h.wait_ready(&PROCESSES) {
        bail!("the device models did not come up; rerun with PVH_DM_LOG=info to see why");
    }
    // Read while they serve: what each process runs as, and the processes they started that
    // serve too (the bridge's worker: a passthrough bridge is a privileged broker, the
    // process started here, and a deprivileged worker it started). The sandbox's unlinker, a
    // child of the deprivileged processes, is not a device model and is not listed.
    let mut serving: Vec<(String, u32, ioreq_server::sandbox::ProcStatus)> = Vec::new();
    for (p, pid) in PROCESSES.iter().zip(&pids) {
        serving.push((
            p.to_string(),
            *pid,
            ProcStatus::read(*pid).unwrap_or_default(),
        ));
        for c in children(*pid) {
            if proc_name(c).as_deref() == Some(p) {
                serving.push((
                    format!("{p}/worker"),
                    c,
                    ProcStatus::read(c).unwrap_or_default(),
                ));
            }
        }
    }
    let mut log = Vec::new();
    let assigned = h
        .sim
        .report(DOMID)
        .dm_ops
        .iter()
        .filter(|o| o["op"] == "assign_device")
        .count();
    log.push(format!(
        "boot: {assigned} functions assigned by pci-host-bridge before the guest runs"
    ));
    let mut v = h.sim.vcpu(DOMID, 0);
    let pci_functions = enumerate_pci(&mut v, &mut log)?;
    vf_msix(&h, &mut v, &mut log)?;
    ioapic(&h, &mut v, &mut log)?;
    power_off(&mut v, &mut log)?;
    let destroyed = h
        .sim
        .wait_for(DOMID, Duration::from_secs(5), |d| d.destroyed());
    log.push(format!(
        "xen: domain {}; the VF is now owned by {:?}",
        if destroyed {
            "destroyed"
        } else {
            "not destroyed"
        },
        h.sim.host_device_owner(VF.sbdf)
    ));
    let codes = h.stop_all();
    let vf_owner = h.sim.host_device_owner(VF.sbdf);
    log.push(format!(
        "after the device models stopped, the VF is owned by {vf_owner:?}{}",
        if vf_owner == xen_sim::Owner::Hardware {
            ""
        } else {
            " (not handed back to dom0)"
        }
    ));
    let r = h.sim.report(DOMID);
    let by_type = |k: &str| r.ioreqs_by_type.get(k).copied().unwrap_or(0);
    Ok(json!({
        "shutdown_reason": r.shutdown_reason,
        "ioreqs_by_type": {"PIO": by_type("PIO"), "MMIO": by_type("MMIO"), "PCI_CONFIG": by_type("PCI_CONFIG")},
        "unclaimed_accesses": r.unclaimed,
        "msis": r.msis.iter().map(|m| json!({"vector": m.vector, "dest": m.dest, "trigger": m.trigger})).collect::<Vec<_>>(),
        "dm_ops": r.dm_ops,
        "pci_functions": pci_functions,
        // exit_code: of the processes started here (a worker's is its broker's to see).
        "processes": serving.iter().map(|(name, pid, st)| json!({
            "name": name,
            "pid": pid,
            "uid": st.uid,
            "no_new_privs": st.no_new_privs,
            "seccomp": st.seccomp,
            "exit_code": pids.iter().position(|p| p == pid).and_then(|i| codes[i]),
        })).collect::<Vec<_>>(),
        "guest_log": log,
        "crashed": r.crashed,
        "stuck_vcpus": r.stuck,
        "destroyed": r.destroyed,
        "vf_owner_at_end": vf_owner,
        "device_interrupts": r.device_interrupts,
        "xen_refusals": r.dm_ops.iter().filter(|o| o["rc"] != 0 || o.get("table_base_warn").is_some()).cloned().collect::<Vec<_>>(),
    }))
}

/// The pids whose parent is `pid` (from /proc/PID/stat's ppid field).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The `Name:` of /proc/PID/status (the executable's name, up to 15 bytes).
fn proc_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Name:").map(|n| n.trim().to_string()))
}

/// A short human-readable account of the report.
pub fn print_human(r: &Value) {
    println!(
        "xen-sim demo: one PVH guest, {} device-model processes",
        PROCESSES.len()
    );
    for l in r["guest_log"].as_array().into_iter().flatten() {
        println!("  guest  {}", l.as_str().unwrap_or(""));
    }
    println!("  ioreqs {}", r["ioreqs_by_type"]);
    for m in r["msis"].as_array().into_iter().flatten() {
        println!(
            "  msi    vector {:#x} -> APIC {} ({})",
            m["vector"].as_u64().unwrap_or(0),
            m["dest"],
            m["trigger"].as_str().unwrap_or("")
        );
    }
    let ops = r["dm_ops"].as_array().cloned().unwrap_or_default();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for o in &ops {
        *counts
            .entry(o["op"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    println!(
        "  dm_ops {} ({})",
        ops.len(),
        counts
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for o in r["xen_refusals"].as_array().into_iter().flatten() {
        println!("  xen    refused or warned: {o}");
    }
    for p in r["processes"].as_array().into_iter().flatten() {
        println!(
            "  proc   {} pid {} uid {} no_new_privs {} seccomp {} exit {}",
            p["name"].as_str().unwrap_or("?"),
            p["pid"],
            p["uid"],
            p["no_new_privs"],
            p["seccomp"],
            p["exit_code"]
                .as_i64()
                .map_or("-".to_string(), |c| c.to_string())
        );
    }
    println!("  shutdown: {}", r["shutdown_reason"]);
}
