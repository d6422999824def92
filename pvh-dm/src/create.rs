//! `pvh-dm create`: the steps from a validated plan to a running guest, each undone on any
//! later failure, then the supervisor.
//!
//! Steps (the name in brackets is what a failure message says):
//! 1. [prepare runtime files] staging dir `RUN/.create-NAME-PID/`: the tables, the initrd
//!    (tables cpio + the original ramdisk), the derived xl config.
//! 2. [xl create] `xl create -p [-e] xl.cfg`, through the IOMMU wrapper with passthrough.
//!    `-e` (no xl monitor process) while pvh-dm supervises: the domain then stays in its
//!    shut-down state until pvh-dm has read the reason and destroys it.
//! 3. [find the domid] `xl domid NAME`.
//! 4. [runtime dir] staging renamed to `RUN/DOMID/`, `state.json` written.
//! 5. [start DM] for each device model in order: start, wait for its control socket.
//! 6. [watch @releaseDomain] (supervised only), before the guest runs.
//! 7. [xl unpause].
//!
//! Undo, in reverse: device models SIGTERMed (SIGKILL after --dm-stop-timeout) and reaped,
//! `xl destroy`, runtime files removed.

use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tracing::{error, info, warn};

use crate::dm::{self, RunningDm};
use crate::exit;
use crate::plan::{self, Plan};
use crate::reap::Reaper;
use crate::runtime::{self, Phase, State};
use crate::xenstore::Xenstore;
use crate::xl::{DomainState, ShutdownReason, Xl};
use crate::xlcfg::Value;

/// What scripts/xen-rig/cdf-iommu.c prints when it gave the domain an IOMMU context.
pub const CDF_IOMMU_LINE: &str = "added XEN_DOMCTL_CDF_iommu";

/// Remove staging dirs (`.create-NAME-PID`) of create runs that died.
fn clear_dead_staging(run: &Path) {
    let Ok(rd) = std::fs::read_dir(run) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(".create-") else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| p != std::process::id() && !runtime::pid_alive(p)) {
            warn!(dir = %e.path().display(), "removing the staging dir of a create that died");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

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
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// What has been done so far, to undo.
struct Rollback<'a> {
    xl: &'a Xl,
    stop_timeout: Duration,
    created_name: Option<String>,
    domid: Option<u32>,
    dms: Vec<RunningDm>,
    dirs: Vec<PathBuf>,
    extra_files: Vec<PathBuf>,
    /// Supervised: told [`crate::reap::DONE`] once the undo is finished.
    reaper: Option<Reaper>,
}

impl Rollback<'_> {
    fn undo(&mut self) -> Vec<String> {
        let mut done = Vec::new();
        if !self.dms.is_empty() {
            let r = dm::stop_all(&mut self.dms, self.stop_timeout);
            done.push(format!("device models stopped ({})", r.join(", ")));
            self.dms.clear();
        }
        let target = self
            .domid
            .map(|d| d.to_string())
            .or_else(|| self.created_name.clone());
        if let Some(t) = target {
            match self.xl.destroy(&t) {
                Ok(()) => done.push(format!("domain {t} destroyed")),
                Err(e) => done.push(format!("`xl destroy {t}` FAILED: {e}")),
            }
        }
        for f in self.extra_files.drain(..) {
            let _ = std::fs::remove_file(&f);
            // The device models' [control] dir/DOMID, if it is not ours and now empty.
            if let Some(d) = f.parent() {
                let _ = std::fs::remove_dir(d);
            }
        }
        for d in self.dirs.drain(..).rev() {
            if d.exists() {
                match std::fs::remove_dir_all(&d) {
                    Ok(()) => done.push(format!("{} removed", d.display())),
                    Err(e) => done.push(format!("removing {} FAILED: {e}", d.display())),
                }
            }
        }
        done
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Write the tables, the initrd and the derived xl config into `dir`; returns the config.
fn prepare_files(plan: &Plan, dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = plan.xl.text().to_string();
    if let Some(t) = &plan.tables {
        let acpi = dir.join("acpi");
        let files = t.write_dir(&acpi)?;
        let initrd = dir.join("initrd.cpio");
        let out = std::fs::File::create(&initrd)
            .with_context(|| format!("creating {}", initrd.display()))?;
        let mut w = crate::cpio::Writer::new(std::io::BufWriter::new(out));
        w.dir("kernel")?;
        w.dir("kernel/firmware")?;
        w.dir("kernel/firmware/acpi")?;
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy();
            let bytes = std::fs::read(f)?;
            w.file(&format!("kernel/firmware/acpi/{name}"), &bytes)?;
        }
        let (mut out, len) = w.finish()?;
        let ramdisk = plan.ramdisk.as_ref().expect("checked by the plan");
        let mut r = std::fs::File::open(ramdisk)
            .with_context(|| format!("opening ramdisk {}", ramdisk.display()))?;
        let n = std::io::copy(&mut r, &mut out).with_context(|| {
            format!(
                "copying ramdisk {} into {}",
                ramdisk.display(),
                initrd.display()
            )
        })?;
        out.flush()?;
        info!(tables = files.len(), cpio_bytes = len, ramdisk_bytes = n, initrd = %initrd.display(), "ACPI tables in front of the ramdisk");
        // xl reads the ramdisk at create time, from the staging dir.
        text = plan.xl.with_setting(
            "ramdisk",
            &Value::Str(initrd.to_string_lossy().into_owned()),
        );
    }
    let cfg = dir.join("xl.cfg");
    let header = format!(
        "# Derived by pvh-dm from {} ({}).\n",
        plan.xl_path.display(),
        if plan.tables.is_some() {
            "ramdisk: ACPI tables + the original ramdisk"
        } else {
            "unchanged: no ACPI table upgrade"
        }
    );
    std::fs::write(&cfg, header + &text).with_context(|| format!("writing {}", cfg.display()))?;
    Ok(cfg)
}

/// Stop the device models of a stale directory (a previous guest with this domid whose
/// launcher was killed) and remove it.
fn clear_stale(dir: &Path, domid: u32, timeout: Duration) {
    if !dir.exists() {
        return;
    }
    if let Ok(st) = State::load(dir) {
        for e in dm::stop_recorded(dir, &st, timeout) {
            warn!(dm = %e.rec.name, pid = e.rec.pid, "stale device model of an earlier domain {domid}: {}", e.how);
        }
    }
    warn!(dir = %dir.display(), "removing a stale runtime dir of an earlier domain {domid}");
    let _ = std::fs::remove_dir_all(dir);
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

/// Undo, say what failed and what was undone, record it in `RUN/ended/NAME.json`.
fn setup_failed(rb: &mut Rollback<'_>, run: &Path, name: &str, what: &str) -> i32 {
    let domid = rb.domid;
    let undone = rb.undo();
    let undone_text = if undone.is_empty() {
        "nothing to undo".to_string()
    } else {
        undone.join("; ")
    };
    eprintln!("pvh-dm: {what}; undone: {undone_text}");
    runtime::record_end(
        run,
        name,
        &serde_json::json!({
            "name": name,
            "domid": domid,
            "exit_code": exit::SETUP_FAILED,
            "end": "setup_failed",
            "message": what,
            "undone": undone,
        }),
    );
    if let Some(r) = rb.reaper.take() {
        r.done();
    }
    exit::SETUP_FAILED
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

/// The token of the watch on the domain's xenstore directory.
fn path_token(token: &str) -> String {
    format!("{token}-dir")
}

/// Why the supervisor ends.
enum End {
    Reason(ShutdownReason),
    Gone,
    Forced,
    DmDied(String),
    /// The xenstore connection was lost (or poll failed): exit with this code.
    Lost(i32, String),
}

struct Supervisor<'a> {
    xl: &'a Xl,
    domid: u32,
    name: String,
    dir: PathBuf,
    state: State,
    dms: Vec<RunningDm>,
    extra_files: Vec<PathBuf>,
    stop_timeout: Duration,
    shutdown_timeout: Duration,
    token: String,
    reaper: Option<Reaper>,
}

impl Supervisor<'_> {
    fn run(mut self, sig: &SignalFd, xs: &mut Xenstore) -> i32 {
        let mut deadline: Option<Instant> = None;
        let mut requested = false;
        if let Some(why) = self.dead_dm() {
            return self.end(End::DmDied(why));
        }
        // The watch fires once at registration; the first check also covers a domain that
        // went away between unpause and now.
        loop {
            if !xs.has_queued_events() {
                let timeout = match deadline {
                    None => PollTimeout::NONE,
                    Some(d) => {
                        let ms = d.saturating_duration_since(Instant::now()).as_millis();
                        PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                            .unwrap_or(PollTimeout::MAX)
                    }
                };
                let mut fds = [
                    PollFd::new(sig.as_fd(), PollFlags::POLLIN),
                    PollFd::new(xs.fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        return self.end(End::Lost(exit::ERROR, format!("poll: {e}")));
                    }
                }
                let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
                let xs_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
                if sig_ready {
                    while let Ok(Some(si)) = sig.read_signal() {
                        match Signal::try_from(si.ssi_signo as i32) {
                            Ok(Signal::SIGCHLD) => {
                                self.check_reaper();
                                if let Some(why) = self.dead_dm() {
                                    // A device model may exit because the domain went away
                                    // (its event channels die with it): then that is the end.
                                    return match self.xl.state(self.domid) {
                                        Ok(DomainState::Shutdown(r)) => self.end(End::Reason(r)),
                                        Ok(DomainState::Dying | DomainState::Gone) => {
                                            self.end(End::Gone)
                                        }
                                        _ => self.end(End::DmDied(why)),
                                    };
                                }
                            }
                            Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => {
                                if requested {
                                    warn!("second {s}: destroying domain {} now", self.domid);
                                    let _ = self.xl.destroy(&self.domid.to_string());
                                    return self.end(End::Forced);
                                }
                                requested = true;
                                self.state.phase = Phase::Stopping;
                                let _ = self.state.save(&self.dir);
                                crate::notify::notify("STOPPING=1");
                                info!("{s}: asking guest {} (domid {}) to shut down (ACPI power button and xenstore control/shutdown); destroy after {} s",
                                    self.name, self.domid, self.shutdown_timeout.as_secs());
                                dm::press_power_button(self.dms.iter().map(|d| &d.rec));
                                match xs.request_poweroff(self.domid) {
                                    Ok(()) => {
                                        deadline = Some(Instant::now() + self.shutdown_timeout)
                                    }
                                    Err(e) => {
                                        warn!(
                                            "cannot write control/shutdown ({e}): destroying domain {}",
                                            self.domid
                                        );
                                        let _ = self.xl.destroy(&self.domid.to_string());
                                        return self.end(End::Forced);
                                    }
                                }
                            }
                            Ok(s) => info!("{s} ignored"),
                            Err(_) => {}
                        }
                    }
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    warn!(
                        "guest {} did not shut down within {} s of the request: destroying domain {}",
                        self.name,
                        self.shutdown_timeout.as_secs(),
                        self.domid
                    );
                    if let Ok(DomainState::Shutdown(r)) = self.xl.state(self.domid) {
                        return self.end(End::Reason(r));
                    }
                    let _ = self.xl.destroy(&self.domid.to_string());
                    return self.end(End::Forced);
                }
                if !xs_ready {
                    continue;
                }
            }
            match xs.next_event() {
                Ok(ev) if ev.token == path_token(&self.token) => {
                    match xs.read(&format!("/local/domain/{}", self.domid)) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            info!(
                                "domain {}'s xenstore directory is gone: it is being destroyed",
                                self.domid
                            );
                            return self.end(End::Gone);
                        }
                        Err(e) => {
                            return self.end(End::Lost(
                                exit::LOST_XENSTORE,
                                format!("lost the xenstore connection: {e}"),
                            ));
                        }
                    }
                }
                Ok(ev) if ev.token == self.token => match self.xl.state(self.domid) {
                    Ok(DomainState::Alive) => {}
                    Ok(DomainState::Shutdown(r)) => return self.end(End::Reason(r)),
                    Ok(DomainState::Dying | DomainState::Gone) => return self.end(End::Gone),
                    Err(e) => warn!("cannot read domain {}'s state: {e}", self.domid),
                },
                Ok(_) => {}
                Err(e) => {
                    return self.end(End::Lost(
                        exit::LOST_XENSTORE,
                        format!("lost the xenstore connection: {e}"),
                    ));
                }
            }
        }
    }

    fn dead_dm(&mut self) -> Option<String> {
        for d in &mut self.dms {
            if let Some(st) = d.try_reap() {
                return Some(format!(
                    "{} (pid {}) {}",
                    d.rec.name,
                    d.rec.pid,
                    dm::describe(st)
                ));
            }
        }
        None
    }

    /// The reaper should live as long as we do; if it died (someone killed it), say what
    /// that means.
    fn check_reaper(&mut self) {
        if let Some(st) = self.reaper.as_mut().and_then(Reaper::exited) {
            let pid = self.reaper.take().map_or(0, |r| r.pid());
            warn!(
                "the reaper (pid {pid}) {}: if this supervisor dies now, nobody destroys domain {} \
                 (`pvh-dm destroy {}` does)",
                dm::describe(st),
                self.domid,
                self.domid
            );
            self.state.reaper = None;
            let _ = self.state.save(&self.dir);
        }
    }

    fn end(mut self, why: End) -> i32 {
        self.state.phase = Phase::Stopping;
        let _ = self.state.save(&self.dir);
        crate::notify::notify("STOPPING=1");
        let (code, msg) = match &why {
            End::Reason(r) => (
                exit::for_reason(*r),
                format!("guest {} (domid {}) shut down: {r}", self.name, self.domid),
            ),
            End::Gone => (
                exit::GONE,
                format!(
                    "domain {} ({}) was destroyed without a shutdown reason (xl destroy from outside?)",
                    self.domid, self.name
                ),
            ),
            End::Forced => (
                exit::FORCED,
                format!("domain {} ({}) destroyed after a stop request", self.domid, self.name),
            ),
            End::DmDied(w) => (
                exit::DM_DIED,
                format!(
                    "device model {w}: destroying domain {} ({}), whose vCPUs would wait forever on requests nobody serves",
                    self.domid, self.name
                ),
            ),
            // The device models exit with us (--exit-with-parent): the guest cannot be left
            // running without a supervisor.
            End::Lost(code, w) => (
                *code,
                format!(
                    "{w}: the end of domain {} ({}) can no longer be seen; destroying it",
                    self.domid, self.name
                ),
            ),
        };
        if matches!(why, End::DmDied(_) | End::Lost(..)) {
            error!("{msg}");
        } else {
            info!("{msg}");
        }
        let bridge_died = matches!(&why, End::DmDied(w) if w.starts_with("pci-host-bridge "));
        if bridge_died && !self.state.devices.is_empty() {
            error!(
                "pci-host-bridge died without handing back {}: once the domain is destroyed Xen quarantines them \
                 (owner dom_io); `pci-host-bridge reclaim` does the reset, PHYSDEVOP_release_msix and \
                 XEN_DOMCTL_deassign_device from DOMID_IO next",
                self.state.devices.join(", ")
            );
        }
        // The device models stop before `xl destroy`, not after: on the rig (Xen 4.17, a PVH
        // guest with a VF) `xl destroy` did not return while they still ran — the VF was
        // already in DomIO, the domain still listed, a dom0 vCPU busy in the destroy
        // hypercall's continuation for minutes. A domain whose vCPUs may still run (a device
        // model died, or we cannot see its end) is paused first, so that nothing it does
        // meets a half-stopped device model; a shut-down domain runs nothing.
        let destroy = matches!(why, End::Reason(_) | End::DmDied(_) | End::Lost(..));
        if matches!(why, End::DmDied(_) | End::Lost(..)) {
            if let Err(e) = self.xl.pause(self.domid) {
                warn!("xl pause {}: {e}", self.domid);
            }
        }
        let stopped = dm::stop_all(&mut self.dms, self.stop_timeout);
        if destroy {
            if let Err(e) = self.xl.destroy(&self.domid.to_string()) {
                warn!("xl destroy {}: {e}", self.domid);
            }
        }
        if bridge_died && !self.state.devices.is_empty() {
            let _ = dm::reclaim(&self.state);
        }
        for f in &self.extra_files {
            let _ = std::fs::remove_file(f);
            if let Some(d) = f.parent() {
                let _ = std::fs::remove_dir(d);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            warn!("removing {}: {e}", self.dir.display());
        }
        eprintln!(
            "pvh-dm: {msg}; device models stopped ({}); exit {code}",
            stopped.join(", ")
        );
        runtime::record_end(
            self.dir.parent().unwrap_or(Path::new("/")),
            &self.name,
            &serde_json::json!({
                "name": self.name,
                "domid": self.domid,
                "exit_code": code,
                "end": match &why {
                    End::Reason(_) => "shutdown",
                    End::Gone => "destroyed_from_outside",
                    End::Forced => "forced",
                    End::DmDied(_) => "device_model_died",
                    End::Lost(..) => "lost_xenstore",
                },
                "reason": match &why { End::Reason(r) => Some(r.to_string()), _ => None },
                "reason_code": match &why { End::Reason(r) => Some(r.code()), _ => None },
                "message": msg,
                "device_models": stopped,
            }),
        );
        if let Some(r) = self.reaper.take() {
            r.done();
        }
        code
    }
}
