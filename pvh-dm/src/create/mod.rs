//! `pvh-dm create`: the steps from a validated plan to a running guest, each undone on any
//! later failure, then the supervisor.
//!
//! Steps (the name in brackets is what a failure message says):
//! 1. `[prepare runtime files]` staging dir `RUN/.create-NAME-PID/`: the tables, the initrd
//!    (tables cpio + the original ramdisk), the derived xl config.
//! 2. `[xl create]` `xl create -p [-e] xl.cfg`, through the IOMMU wrapper with passthrough.
//!    `-e` (no xl monitor process) while pvh-dm supervises: the domain then stays in its
//!    shut-down state until pvh-dm has read the reason and destroys it.
//! 3. `[find the domid]` `xl domid NAME`.
//! 4. `[runtime dir]` staging renamed to `RUN/DOMID/`, `state.json` written.
//! 5. `[start DM]` for each device model in order: start, wait for its control socket.
//! 6. `[watch @releaseDomain]` (supervised only), before the guest runs.
//! 7. `[xl unpause]`.
//!
//! Undo, in reverse: device models SIGTERMed (SIGKILL after --dm-stop-timeout) and reaped,
//! `xl destroy`, runtime files removed.
//!
//! This file runs the steps; `files` prepares and clears runtime files, `rollback` is the undo,
//! `supervise` the supervisor.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tracing::{info, warn};

use crate::dm::{self, RunningDm};
use crate::exit;
use crate::plan;
use crate::reap::Reaper;
use crate::runtime::{self, Phase, State};
use crate::xenstore::Xenstore;
use crate::xl::Xl;

mod files;
mod rollback;
mod supervise;

use files::{clear_dead_staging, clear_stale, now_secs, prepare_files};
use rollback::{setup_failed, Rollback};
use supervise::{path_token, Supervisor};

/// What scripts/xen-rig/cdf-iommu.c prints when it gave the domain an IOMMU context.
pub const CDF_IOMMU_LINE: &str = "added XEN_DOMCTL_CDF_iommu";

/// How `create` runs (beyond the plan's inputs).
#[derive(Clone, Debug)]
pub struct RunOpts {
    /// `xl`.
    pub xl: Xl,
    /// Exit after printing the domid.
    pub detach: bool,
    /// Validate and write nothing.
    pub dry_run: bool,
    /// How long a device model may take to answer `status`.
    pub dm_timeout: Duration,
    /// How long a device model may take to exit after SIGTERM.
    pub dm_stop_timeout: Duration,
    /// How long the guest may take to shut down after the power button and the xenstore request.
    pub shutdown_timeout: Duration,
    /// Device-model stderr to `RUN/DOMID/NAME.log` (always with --detach).
    pub dm_log_files: bool,
    /// xenstore path override.
    pub xenstore: Option<PathBuf>,
    /// The log filter (passed on to the reaper).
    pub log: String,
}

/// The signals pvh-dm handles through a signalfd.
pub fn signal_fd() -> nix::Result<SignalFd> {
    use Signal::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
    let set: SigSet = [SIGCHLD, SIGTERM, SIGINT, SIGHUP].into_iter().collect();
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

fn pending_stop(sig: &SignalFd) -> Option<Signal> {
    while let Ok(Some(si)) = sig.read_signal() {
        let s = Signal::try_from(si.ssi_signo as i32).ok();
        if matches!(s, Some(Signal::SIGTERM | Signal::SIGINT)) {
            return s;
        }
    }
    None
}

/// Run `create`; returns the process exit code.
pub fn run(opts: &plan::Options, ro: &RunOpts, run_dir: &Path) -> i32 {
    // Held until this guest's claim (the staging state.json) is on disk.
    let lock = if ro.dry_run {
        None
    } else {
        match runtime::create_lock(run_dir) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "pvh-dm: cannot take the create lock on {}: {e}",
                    run_dir.display()
                );
                return exit::ERROR;
            }
        }
    };
    let plan = match plan::build(opts) {
        Ok(p) => p,
        Err(r) => {
            eprintln!("pvh-dm: refused (nothing changed): {r}");
            return exit::REFUSED;
        }
    };
    for w in &plan.warnings {
        warn!("{w}");
    }
    let sig = match signal_fd() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pvh-dm: cannot set up the signalfd: {e}");
            return exit::ERROR;
        }
    };
    let mut xs = None;
    if !ro.detach && !ro.dry_run {
        match Xenstore::open(ro.xenstore.as_deref()) {
            Ok(x) => xs = Some(x),
            Err(e) => {
                eprintln!(
                    "pvh-dm: refused (nothing changed): supervision watches xenstore's @releaseDomain: {e} \
                     (or run with --detach)"
                );
                return exit::REFUSED;
            }
        }
    }
    if let Err(r) = plan::check_name_free(&ro.xl, &plan.name) {
        eprintln!("pvh-dm: refused (nothing changed): {r}");
        return exit::REFUSED;
    }
    if plan.iommu_wrapper.is_some() && !opts.skip_iommu_check {
        if let Err(r) = plan::check_iommu(&ro.xl) {
            eprintln!("pvh-dm: refused (nothing changed): {r}");
            return exit::REFUSED;
        }
    }
    if ro.dry_run {
        println!(
            "guest {}: type pvh, {} MiB, device models: {}; passthrough: {}; ACPI tables: {}",
            plan.name,
            plan.memory_bytes >> 20,
            plan.dms
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
            if plan.devices.is_empty() {
                "none".into()
            } else {
                plan.devices.join(", ")
            },
            match &plan.tables {
                Some(t) => format!(
                    "ssdt{}{} in front of {}",
                    if t.madt.is_some() { ", apic" } else { "" },
                    if t.mcfg.is_some() { ", mcfg" } else { "" },
                    plan.ramdisk
                        .as_ref()
                        .map_or(String::new(), |r| r.display().to_string())
                ),
                None => "not delivered (--no-acpi-upgrade)".into(),
            }
        );
        return exit::OK;
    }

    let mut rb = Rollback {
        xl: &ro.xl,
        stop_timeout: ro.dm_stop_timeout,
        created_name: None,
        domid: None,
        dms: Vec::new(),
        dirs: Vec::new(),
        extra_files: Vec::new(),
        reaper: None,
    };
    macro_rules! step {
        ($name:expr, $e:expr) => {
            match $e {
                Ok(v) => {
                    if let Some(s) = pending_stop(&sig) {
                        let what = format!("create interrupted by {s} after step '{}'", $name);
                        return setup_failed(&mut rb, run_dir, &plan.name, &what);
                    }
                    v
                }
                Err(e) => {
                    let what = format!(
                        "create failed at step '{}': {:#}",
                        $name,
                        anyhow::Error::from(e)
                    );
                    return setup_failed(&mut rb, run_dir, &plan.name, &what);
                }
            }
        };
    }

    // 1. Files.
    clear_dead_staging(run_dir);
    let staging = run_dir.join(format!(".create-{}-{}", plan.name, std::process::id()));
    rb.dirs.push(staging.clone());
    let cfg = step!("prepare runtime files", prepare_files(&plan, &staging));
    let mut state = State {
        domid: 0,
        name: plan.name.clone(),
        xl_config: std::fs::canonicalize(&plan.xl_path).unwrap_or(plan.xl_path.clone()),
        dm_config: std::fs::canonicalize(&plan.dm_config).unwrap_or(plan.dm_config.clone()),
        phase: Phase::Starting,
        supervisor: (!ro.detach).then(std::process::id),
        reaper: None,
        created: now_secs(),
        device_models: Vec::new(),
        devices: plan.devices.clone(),
        passthrough: plan.iommu_wrapper.is_some(),
    };
    // The claim on the devices and the ioapic socket; other creates now see it.
    step!("prepare runtime files", state.save(&staging));
    drop(lock);

    // 2-3. The domain.
    let t0 = Instant::now();
    let xl_log = step!(
        "xl create",
        ro.xl
            .create_paused(&cfg, !ro.detach, plan.iommu_wrapper.as_deref())
    );
    rb.created_name = Some(plan.name.clone());
    for l in xl_log.lines().filter(|l| !l.trim().is_empty()) {
        info!("xl create: {l}");
    }
    if let (Some(w), false) = (&plan.iommu_wrapper, opts.skip_iommu_check) {
        step!(
            "xl create",
            if xl_log.contains(CDF_IOMMU_LINE) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "the IOMMU wrapper {} did not say {CDF_IOMMU_LINE:?} on xl's stderr: the domain has no IOMMU \
                     context and Xen would refuse to assign its devices",
                    w.display()
                ))
            }
        );
    }
    let domid = step!("find the domid", ro.xl.domid(&plan.name));
    rb.domid = Some(domid);
    info!(domid, name = %plan.name, secs = t0.elapsed().as_secs_f32(), "domain created paused");

    // Supervised: from here on, if this process dies, its reaper cleans up.
    if !ro.detach {
        let args = crate::cli::ReapArgs {
            domid,
            supervisor: std::process::id(),
            name: plan.name.clone(),
            staging: staging.clone(),
            dm_stop_timeout: ro.dm_stop_timeout.as_secs(),
        };
        let r = step!(
            "start the reaper",
            Reaper::spawn(run_dir, &ro.xl, &ro.log, &args)
        );
        state.reaper = Some(r.pid());
        rb.reaper = Some(r);
    }

    // 4. Runtime dir.
    let dir = runtime::guest_dir(run_dir, domid);
    state.domid = domid;
    state.created = now_secs();
    step!("runtime dir", {
        clear_stale(&dir, domid, ro.dm_stop_timeout);
        std::fs::rename(&staging, &dir)
            .map_err(|e| {
                anyhow::anyhow!("renaming {} to {}: {e}", staging.display(), dir.display())
            })
            .and_then(|()| {
                rb.dirs.clear();
                rb.dirs.push(dir.clone());
                // The domain is built: the initrd copy is no longer read.
                let _ = std::fs::remove_file(dir.join("initrd.cpio"));
                state.save(&dir).map_err(anyhow::Error::from)
            })
    });

    // 5. Device models.
    let mut guest = plan.guest.clone();
    guest.domid = domid as u16;
    let log_files = ro.detach || ro.dm_log_files;
    for d in &plan.dms {
        let socket = guest.control_socket(d.name);
        if socket.parent() != Some(dir.as_path()) {
            rb.extra_files.push(socket.clone());
        }
        let log = log_files.then(|| dir.join(format!("{}.log", d.name)));
        let t = Instant::now();
        // Supervised, a device model exits with us (PR_SET_PDEATHSIG).
        let started = step!(
            format!("start {}", d.name),
            RunningDm::spawn(
                d.name,
                &d.binary,
                &plan.dm_config,
                domid,
                socket,
                log,
                (!ro.detach).then(std::process::id),
            )
        );
        rb.dms.push(started);
        // Recorded before it is waited for, so that the reaper knows every started one.
        state.device_models = rb.dms.iter().map(|d| d.rec.clone()).collect();
        step!("runtime dir", state.save(&dir));
        let st = step!(
            format!("start {}", d.name),
            rb.dms.last_mut().unwrap().wait_ready(domid, ro.dm_timeout)
        );
        info!(dm = d.name, secs = t.elapsed().as_secs_f32(), vcpus = %st["status"]["vcpus"], "device model up");
    }

    // 6-7.
    let token = format!("pvh-dm-{domid}");
    if let Some(x) = xs.as_mut() {
        step!("watch @releaseDomain", x.watch("@releaseDomain", &token));
        // `xl destroy` from outside removes the domain's xenstore directory before it asks
        // Xen to destroy the domain (tools/libs/light/libxl_domain.c devices_destroy_cb, 4.17:
        // xs_rm of /local/domain/N, then the destroyer child's xc_domain_destroy), and Xen
        // fires @releaseDomain only once the domain is dead (xen/common/domain.c domain_kill:
        // send_global_virq(VIRQ_DOM_EXC) after DOMDYING_dead). On the rig that destruction
        // did not finish while the device models still ran, so the directory's removal is the
        // signal to stop them.
        step!(
            "watch the domain's xenstore directory",
            x.watch(&format!("/local/domain/{domid}"), &path_token(&token))
        );
    }
    // A device model that died after it answered (its SIGCHLD was read while setting up).
    let dead = rb.dms.iter_mut().find_map(|d| {
        d.try_reap()
            .map(|st| format!("{} (pid {}) {}", d.rec.name, d.rec.pid, dm::describe(st)))
    });
    step!(
        "check device models",
        match dead {
            Some(w) => Err(anyhow::anyhow!("device model {w} after it came up")),
            None => Ok(()),
        }
    );
    step!("xl unpause", ro.xl.unpause(domid));
    state.phase = Phase::Running;
    if ro.detach {
        state.supervisor = None;
    }
    let _ = state.save(&dir);
    println!("{domid}");
    let _ = std::io::stdout().flush();
    info!(domid, name = %plan.name, "guest running");
    crate::notify::notify(&format!(
        "READY=1\nSTATUS=guest {} running as domid {domid}",
        plan.name
    ));

    if ro.detach {
        // The device models run on without us; their pids are in state.json.
        std::mem::forget(std::mem::take(&mut rb.dms));
        return exit::OK;
    }
    let dms = std::mem::take(&mut rb.dms);
    Supervisor {
        xl: &ro.xl,
        domid,
        name: plan.name.clone(),
        dir,
        state,
        dms,
        extra_files: std::mem::take(&mut rb.extra_files),
        stop_timeout: ro.dm_stop_timeout,
        shutdown_timeout: ro.shutdown_timeout,
        token,
        reaper: rb.reaper.take(),
    }
    .run(&sig, xs.as_mut().expect("opened when supervising"))
}
