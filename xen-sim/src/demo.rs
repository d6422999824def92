//! `xen-sim demo`: the main job on the embedded default. xen-sim runs in this process; each
//! device model runs as its own process on the `sim` transport, configured by one guest
//! config; a scripted guest does what Linux does (enumerate PCI through CF8/CFC, size and
//! place the BARs of a passed-through SR-IOV VF, enable decode and program its MSI-X, read the
//! IOAPIC, take an INTx interrupt, power off through ACPI PM1a_CNT) and the sim's record of
//! every ioreq, DM op, passthrough hypercall and MSI is printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use ioreq_server::sandbox::ProcStatus;
use serde_json::{json, Value};
use xen_sim::launch::Harness;
use xen_sim::Vcpu;

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
/// An SR-IOV VF (raw VF config space whose IDs and BARs come from its PF's SR-IOV capability,
/// sriov-nic-pf.json next to it) that the demo passes through at slot 3.
const DEMO_VF: &str = "sriov-nic-vf.json";
const VF_HOST: &str = "0000:03:02.2";
const VF_SLOT: u8 = 3;
/// MSI-X entries the guest's driver unmasks (the VF has 5; the others stay masked, unbound).
const VF_VECTORS: u64 = 3;
const VF_FIRST_VECTOR: u64 = 0x41;
/// The VF's host sbdf (0000:03:02.2).
const VF_SBDF: u32 = 0x0312;
const ECAM_BASE: u64 = 0xF000_0000;

/// The demo VF as Xen sees it (from sriov-nic-vf.json's description and its PF): BAR0 at
/// 0x38_0002_0000 (64 KiB), BAR3 at 0x38_0010_8000 (16 KiB); MSI-X with 5 entries, the table
/// at BAR3 + 0, the PBA at BAR3 + 0x2000.
fn demo_vf_facts() -> xen_sim::HostPciDevice {
    let mut bars = [None; 6];
    bars[0] = Some(xen_sim::HostBar {
        base: 0x38_0002_0000,
        size: 0x1_0000,
    });
    bars[3] = Some(xen_sim::HostBar {
        base: 0x38_0010_8000,
        size: 0x4000,
    });
    xen_sim::HostPciDevice {
        sbdf: VF_SBDF,
        bars,
        msix: Some(xen_sim::MsixLayout {
            entries: 5,
            table_bir: 3,
            table_offset: 0,
            pba_bir: 3,
            pba_offset: 0x2000,
        }),
        is_vf: true,
        ..Default::default()
    }
}
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
host = "{VF_HOST}"
slot = {VF_SLOT}
backend = "snapshot"
snapshot = "{vf}"
config_mirror = "{mirror}"
"#,
        s5a = S5[0],
        s5b = S5[1],
        ioapic_sock = h.dir.join("ioapic.sock").display(),
        snapshot = snapshot.display(),
        vf = vf.display(),
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
        ..demo_vf_facts()
    });
    if keep {
        h.keep_dir();
    }
    let cfg = h.write_config(&config(
        &h,
        &snapshot_path(&bin, DEMO_DEVICE)?,
        &snapshot_path(&bin, DEMO_VF)?,
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
        h.sim.host_device_owner(VF_SBDF)
    ));
    let codes = h.stop_all();
    let vf_owner = h.sim.host_device_owner(VF_SBDF);
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

/// Linux's bus-0 scan: vendor ID of every slot (function 0; functions 1-7 when the header
/// type says multi-function), then class and header type of what answers.
fn enumerate_pci(v: &mut Vcpu, log: &mut Vec<String>) -> anyhow::Result<Vec<Value>> {
    let mut found = Vec::new();
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let id = v.pci_cf8_read(0, dev, func, 0, 4)?;
            if id & 0xFFFF == 0xFFFF {
                if func == 0 {
                    break;
                }
                continue;
            }
            let class = v.pci_cf8_read(0, dev, func, 8, 4)? >> 8;
            let header = v.pci_cf8_read(0, dev, func, 0x0E, 1)?;
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
    Ok(v.pci_cf8_read(0, slot, 0, reg, size)?)
}

fn cfg_wr(v: &mut Vcpu, slot: u8, reg: u16, size: u32, val: u64) -> anyhow::Result<()> {
    Ok(v.pci_cf8_write(0, slot, 0, reg, size, val)?)
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
fn vf_msix(h: &Harness, v: &mut Vcpu, log: &mut Vec<String>) -> anyhow::Result<()> {
    let s = VF_SLOT;
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
        v.mmio_write(table + 16 * e + 8, 4, VF_FIRST_VECTOR + e)?;
    }
    cfg_wr(v, s, cap + 2, 2, 0x8000)?;
    log.push(format!(
        "msi-x 00:{s:02x}.0: {entries} entries programmed masked at {table:#x}, enabled, function mask cleared"
    ));
    for e in 0..VF_VECTORS {
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
                VF_FIRST_VECTOR + e
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
        let d = h.sim.device_interrupt(VF_SBDF, e as u32);
        log.push(format!(
            "msi-x 00:{s:02x}.0: the VF raises entry {e} -> {}",
            match d {
                Ok(()) => "delivered".to_string(),
                Err(why) => format!("not delivered: {why}"),
            }
        ));
    }
    log.push(format!(
        "msi-x 00:{s:02x}.0: entries {VF_VECTORS}-{} stay masked: not bound",
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
fn ioapic(h: &Harness, v: &mut Vcpu, log: &mut Vec<String>) -> anyhow::Result<()> {
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
fn power_off(v: &mut Vcpu, log: &mut Vec<String>) -> anyhow::Result<()> {
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
