//! `scripts/bench`: performance of the ioreq path, as ratios against a floor measured in the
//! same run (the machines are shared and noisy). Prints one JSON object.
//!
//! - `roundtrip_ns`: a 4-byte PIO read from a simulated vCPU, through xen-sim, to a
//!   device-model process and back (pm-trap's PM1a status/enable register);
//! - `floor_ns`: a raw eventfd ping-pong between two processes, the least any cross-process
//!   round trip can cost here;
//! - `dispatch_ns_p50`: one in-process dispatch of an emulated register read (decode,
//!   range lookup, device read), no I/O;
//! - `rss_kib`, `startup_ms`, `idle_wakeups_per_min` of a device-model process.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use ioreq_server::abi::*;
use ioreq_server::device::{Actions, Device, Space};
use ioreq_server::server::dispatch::Dispatcher;
use ioreq_server::server::ranges::RangeTable;
use ioreq_server::transport::sim::SimTransport;
use nix::sys::eventfd::{EfdFlags, EventFd};
use serde_json::json;
use tests::scratch::{Scratch, PORT_BASE};
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
    /// Internal: run as the ping-pong child (eventfds on stdin and stdout).
    #[arg(long, hide = true)]
    pingpong_child: bool,
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
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
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

    // Idle: no wakeups, RSS.
    let switches = |pid| {
        proc_status(pid, "voluntary_ctxt_switches:")
            + proc_status(pid, "nonvoluntary_ctxt_switches:")
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

    let out = json!({
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
    println!("{out}");
    let _ = h.stop_all();
    Ok(())
}
