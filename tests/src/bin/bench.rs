//! `scripts/bench`: performance of the ioreq path, as ratios against a floor measured in the
//! same run (the machines are shared and noisy). Prints one JSON object.
//!
//! - `roundtrip_ns`: a 4-byte PIO read from a simulated vCPU, through xen-sim, to a
//!   device-model process and back (pm-trap's PM1a status/enable register);
//! - `floor_ns`: a raw eventfd ping-pong between two processes, the least any cross-process
//!   round trip can cost here;
//! - `dispatch_ns_p50`: one in-process dispatch of an emulated register read (decode,
//!   range lookup, device read), no I/O;
//! - `rss_kib`, `startup_ms`, `idle_wakeups_per_min` of a device-model process (all its threads);
//! - scale (`--guests N`, 64 by default, 0 to skip): N guests against ONE xen-sim, each with
//!   its three device-model processes (pm-trap, ioapic, pci-host-bridge without
//!   passed-through functions; `--with-function`: one snapshot-backed function each,
//!   `passed_through_functions`), all serving. `guests_n`, `processes` (3N) and
//!   `processes_running` (still alive when measured); `start_all_ms`, from starting the
//!   first process until every one answers `{"cmd":"status"}` on its control socket, and
//!   `start_all_floor_ms`, starting and reaping as many processes that exit at once (this
//!   binary), with `start_all_ratio` between them; `guests_served`, guests whose three device
//!   models each answered an ioreq from the guest's vCPU through xen-sim (checked before
//!   measuring memory); `pss_total_kib` / `rss_total_kib`, the sums over all device-model
//!   processes of /proc/PID/smaps_rollup Pss / Rss, and `pss_per_guest_kib`, per model
//!   `pss_per_process_kib`. PSS divides every shared page among the processes mapping it,
//!   so the shared text of the 3N processes is counted once in the sum, by construction; RSS
//!   counts it in every process. `pss_goal_met`: the goal of 256 guests in 1 GiB of
//!   PSS, i.e. `pss_per_guest_kib` ≤ 4096 (with N < 256 conservative: shared pages are then
//!   divided among fewer processes). `xen_sim_threads` / `xen_sim_fds`: threads and open
//!   files of this process, which hosts xen-sim (a thread and a socket per device model),
//!   while the fleet serves; `rlimit_nofile`, its open-files limit (raised to the hard one).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use ioreq_server::device::{Actions, Device, Space};
use ioreq_server::server::dispatch::Dispatcher;
use ioreq_server::server::ranges::RangeTable;
use ioreq_server::transport::sim::SimTransport;
use nix::sys::eventfd::{EfdFlags, EventFd};
use serde_json::json;
use tests::scratch::{Scratch, PORT_BASE};
use xen_abi::*;
use xen_sim::launch::Harness;

#[derive(Parser)]
#[command(about = "ioreq-path benchmark; prints one JSON object")]
struct Args {
    /// Round trips measured (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 20000)]
    iterations: usize,
    /// Seconds of idleness over which wakeups are counted.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Guests for the scale figures (three device-model processes each, one xen-sim); 0
    /// skips them.
    #[arg(long, default_value_t = 64)]
    guests: u16,
    /// In the scale figures, pass one snapshot-backed function through to each guest
    /// (pci-host-bridge's testdata/real/virtio-net-1af4-1041.json).
    #[arg(long)]
    with_function: bool,
    /// Internal: run as the ping-pong child (eventfds on stdin and stdout).
    #[arg(long, hide = true)]
    pingpong_child: bool,
    /// Internal: exit at once (the floor of `start_all_ms`).
    #[arg(long, hide = true)]
    noop_child: bool,
}

/// The goal: 256 guests × 3 device models in 1 GiB of PSS.
const PSS_GOAL_GUESTS: u64 = 256;
const PSS_GOAL_KIB: u64 = 1 << 20;

/// The floor of `start_all_ms`: start `n` processes that exit at once (this binary, started
/// as the device models are, in one process group) and reap them all; milliseconds.
fn spawn_floor(n: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut children = Vec::with_capacity(n);
    let mut pgid = None;
    for _ in 0..n {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--noop-child").stdin(std::process::Stdio::null());
        let c = tests::fleet::spawn_in_group(&mut cmd, pgid)?;
        pgid.get_or_insert(nix::unistd::Pid::from_raw(c.id() as i32));
        children.push(c);
    }
    for c in &mut children {
        c.wait()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// N guests against one xen-sim: the scale figures (keys listed in the module doc).
fn scale(
    bin_dir: &std::path::Path,
    guests: u16,
    with_function: bool,
) -> anyhow::Result<serde_json::Value> {
    let nofile = tests::fleet::raise_nofile();
    let nproc = 3 * usize::from(guests);

    let floor_before = spawn_floor(nproc)?;
    let snapshot = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pci-host-bridge/testdata/real/virtio-net-1af4-1041.json");
    anyhow::ensure!(
        !with_function || snapshot.exists(),
        "{} missing",
        snapshot.display()
    );
    let mut fleet =
        tests::fleet::Fleet::with_function(guests, with_function.then_some(snapshot.as_path()))?;
    let t = Instant::now();
    fleet.spawn_all(bin_dir)?;
    anyhow::ensure!(
        fleet.wait_all_serving(Duration::from_secs(120)),
        "not every device model came up within 120 s; rerun with PVH_DM_LOG=info"
    );
    let start_all_ms = t.elapsed().as_secs_f64() * 1000.0;
    let served = fleet
        .domids
        .iter()
        .filter(|&&d| fleet.guest_served(d))
        .count();

    // PSS divides each shared page among the processes that map it: summed over all the
    // device-model processes, their shared text and libraries are counted once.
    let mut pss_total = 0;
    let mut rss_total = 0;
    let mut by_model = serde_json::Map::new();
    for m in tests::fleet::MODELS {
        let pids: Vec<u32> = fleet
            .procs
            .iter()
            .filter(|p| p.model == m)
            .map(|p| p.pid)
            .collect();
        let pss: u64 = pids
            .iter()
            .map(|&p| tests::fleet::smaps_rollup_kib(p, "Pss"))
            .sum();
        pss_total += pss;
        rss_total += pids
            .iter()
            .map(|&p| tests::fleet::smaps_rollup_kib(p, "Rss"))
            .sum::<u64>();
        by_model.insert(m.into(), json!(pss / pids.len().max(1) as u64));
    }
    let running = fleet.running();
    let sim_threads = proc_status(std::process::id(), "Threads:");
    let sim_fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    fleet.kill_all();
    drop(fleet);
    // The machine is shared: the floor is taken before and after, the lesser kept.
    let floor_ms = floor_before.min(spawn_floor(nproc)?);
    let pss_per_guest = pss_total / u64::from(guests);
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "guests_n": guests,
        "passed_through_functions": if with_function { guests } else { 0 },
        "processes": nproc,
        "processes_running": running,
        "guests_served": served,
        "start_all_ms": round2(start_all_ms),
        "start_all_floor_ms": round2(floor_ms),
        "start_all_ratio": round2(start_all_ms / floor_ms),
        "pss_total_kib": pss_total,
        "rss_total_kib": rss_total,
        "pss_per_guest_kib": pss_per_guest,
        "pss_per_process_kib": by_model,
        "pss_goal_met": pss_per_guest * PSS_GOAL_GUESTS <= PSS_GOAL_KIB,
        "xen_sim_threads": sim_threads,
        "xen_sim_fds": sim_fds,
        "rlimit_nofile": nofile,
    }))
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn stats(mut v: Vec<u64>) -> serde_json::Value {
    json!({"p50": percentile(&mut v, 0.5), "p99": percentile(&mut v, 0.99)})
}

fn read_u64(fd: i32) {
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(fd, &mut b);
}
fn write_u64(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

fn floor(n: usize) -> anyhow::Result<Vec<u64>> {
    let a: OwnedFd = EventFd::from_value_and_flags(0, EfdFlags::empty())?.into();
    let b: OwnedFd = EventFd::from_value_and_flags(0, EfdFlags::empty())?.into();
    // The child gets `a` as its stdin and `b` as its stdout.
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--pingpong-child")
        .stdin(std::process::Stdio::from(a.try_clone()?))
        .stdout(std::process::Stdio::from(b.try_clone()?))
        .spawn()?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        write_u64(&a);
        read_u64(b.as_raw_fd());
        if i >= n / 10 {
            out.push(t.elapsed().as_nanos() as u64);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(out)
}

/// The other end of the floor measurement: read an event on stdin, signal one on stdout.
fn pingpong_child() -> ! {
    loop {
        read_u64(0);
        let _ = nix::unistd::write(std::io::stdout(), &1u64.to_ne_bytes());
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    status_field(&format!("/proc/{pid}/status"), key)
}

/// The number after `key` in a /proc status file, 0 if absent.
fn status_field(path: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.pingpong_child {
        pingpong_child();
    }
    if args.noop_child {
        return Ok(());
    }
    let bin_dir: PathBuf = std::env::current_exe()?
        .parent()
        .expect("dir")
        .to_path_buf();
    let pm_trap = bin_dir.join("pm-trap");
    anyhow::ensure!(
        pm_trap.exists(),
        "{} missing: cargo build --release --workspace",
        pm_trap.display()
    );
    let n = args.iterations;

    // Start-up: exec to serving (control socket answers), median of 5.
    let mut startups = Vec::new();
    for _ in 0..5 {
        let mut h = Harness::try_new(1, 1, Duration::from_secs(5))?;
        let cfg = h.write_config("[pm_trap]\nmode = \"guest\"\n");
        let t = Instant::now();
        h.try_spawn(&pm_trap, &cfg, &[])?;
        anyhow::ensure!(h.wait_ready(&["pm-trap"]), "pm-trap did not start");
        startups.push(t.elapsed().as_micros() as u64);
    }
    let startup_ms = percentile(&mut startups, 0.5) as f64 / 1000.0;

    let mut h = Harness::try_new(1, 1, Duration::from_secs(5))?;
    let cfg = h.write_config("[pm_trap]\nmode = \"guest\"\n");
    let pid = h.try_spawn(&pm_trap, &cfg, &[])?;
    anyhow::ensure!(h.wait_ready(&["pm-trap"]), "pm-trap did not start");

    // Round trips through xen-sim.
    let mut v = h.sim.vcpu(1, 0);
    let mut rt = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        v.pio_read(0xB000, 4)?;
        if i >= n / 10 {
            rt.push(t.elapsed().as_nanos() as u64);
        }
    }
    let fl = floor(n)?;
    let (rt_p50, fl_p50) = (
        percentile(&mut rt.clone(), 0.5),
        percentile(&mut fl.clone(), 0.5),
    );

    // Idle: no wakeups (of any thread: the serving loop's watcher thread counts too), RSS.
    let switches = |pid: u32| -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        tasks
            .iter()
            .map(|t| {
                let path = format!("/proc/{pid}/task/{t}/status");
                status_field(&path, "voluntary_ctxt_switches:")
                    + status_field(&path, "nonvoluntary_ctxt_switches:")
            })
            .sum()
    };
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    let wakeups = switches(pid).saturating_sub(before) as f64 * 60.0 / args.idle_secs as f64;
    let rss = proc_status(pid, "VmRSS:");

    // In-process dispatch of an emulated register read.
    let dispatch = {
        let mut dev = Scratch::new();
        let mut ranges = RangeTable::default();
        for r in dev.ranges() {
            ranges.insert(r, 0)?;
        }
        dev.write(Space::Port, PORT_BASE, 4, 0x1234, &mut Actions::new());
        let mut d = Dispatcher::new(vec![Box::new(dev)], ranges, 1);
        let mut t = SimTransport::connect(h.sim.socket(), 1, "bench")?;
        let mut req = Ioreq {
            addr: PORT_BASE,
            size: 4,
            count: 1,
            type_: IOREQ_TYPE_PIO,
            ..Default::default()
        };
        req.set_dir(IOREQ_READ);
        let mut samples = Vec::new();
        let mut actions = Actions::new();
        for _ in 0..200 {
            let t0 = Instant::now();
            for _ in 0..1000 {
                std::hint::black_box(d.handle(std::hint::black_box(&req), 0, &mut t, &mut actions));
            }
            samples.push(t0.elapsed().as_nanos() as u64 / 1000);
        }
        percentile(&mut samples, 0.5)
    };

    let _ = h.stop_all();
    drop(h);
    let scale = if args.guests > 0 {
        Some(scale(&bin_dir, args.guests, args.with_function)?)
    } else {
        None
    };

    let mut out = json!({
        "roundtrip_ns": stats(rt),
        "floor_ns": stats(fl),
        "ratio_p50": (rt_p50 as f64 / fl_p50 as f64 * 100.0).round() / 100.0,
        "dispatch_ns_p50": dispatch,
        "rss_kib": rss,
        "startup_ms": (startup_ms * 100.0).round() / 100.0,
        "idle_wakeups_per_min": wakeups,
        "iterations": n,
        "device_model": "pm-trap",
    });
    if let (Some(o), Some(serde_json::Value::Object(s))) = (out.as_object_mut(), scale) {
        o.extend(s);
    }
    println!("{out}");
    Ok(())
}
