//! The supervisor's reaper: what cleans up when the supervising `pvh-dm create` itself dies
//! (SIGKILL, a crash), so that its device models do not serve an unsupervised guest forever.
//!
//! As soon as the domain's id is known (before any device model starts), the supervisor
//! starts `pvh-dm reap` — the same executable, a hidden subcommand — in a process group of its
//! own (a terminal's ^C or a `kill -- -PGID` of the launcher's group does not reach it), with
//! stdin the read end of a pipe whose write end only the supervisor holds (close-on-exec, so
//! no device model or `xl` inherits it). The reaper blocks in `read()` on it: no polling, no
//! wakeup while the guest runs.
//!
//! - Every normal end of the supervisor (each exit code, a create rolled back included) writes
//!   [`DONE`] once its own cleanup is finished; the reaper then exits 0 having done nothing.
//! - End of file without [`DONE`]: the supervisor died. The reaper stops the device models
//!   recorded in `state.json` (SIGTERM, SIGKILL after the stop timeout; they normally exit
//!   already through PR_SET_PDEATHSIG, `--exit-with-parent`, and the bridge hands its devices
//!   back), destroys the domain if it still exists, runs `pci-host-bridge reclaim` if the
//!   bridge ended without its teardown, removes `RUN/DOMID/`, records the end in
//!   `RUN/ended/NAME.json` (`"end": "supervisor_died"`) and logs one line saying so.
//!
//! The device models are stopped before the domain is destroyed (the supervisor destroys
//! first when a device model has died): they are running or already tearing down on their
//! SIGTERM, and a bridge handing a function back to dom0 while Xen destroys the domain under
//! it could leave the function quarantined.
//!
//! The reaper ignores SIGHUP, SIGINT and SIGTERM (they are blocked): its only job is to
//! outlive the supervisor, and it exits by itself once the supervisor has ended. Under systemd
//! it is in the unit's cgroup: after the supervisor died, the unit's stop SIGTERMs everything
//! left, the reaper carries on, and `ExecStopPost=pvh-dm destroy` finds nothing left to do.

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use tracing::{debug, error, info, warn};

use crate::cli::ReapArgs;
use crate::dm;
use crate::exit;
use crate::runtime::{self, State};
use crate::xl::{DomainState, Xl};

/// The byte the supervisor writes when it ends normally.
pub const DONE: u8 = b'd';

/// The supervisor's handle on its reaper.
pub struct Reaper {
    child: Child,
    tell: Option<std::io::PipeWriter>,
}

impl Reaper {
    /// Start `pvh-dm reap` for the guest in `a` (see the module's description).
    pub fn spawn(run: &Path, xl: &Xl, log: &str, a: &ReapArgs) -> std::io::Result<Reaper> {
        let (read, tell) = std::io::pipe()?;
        let mut c = Command::new(std::env::current_exe()?);
        ioreq_server::signals::with_default_signals(&mut c);
        c.arg("--run-dir")
            .arg(run)
            .arg("--xl")
            .arg(&xl.bin)
            .arg("--log")
            .arg(log)
            .arg("reap")
            .arg("--domid")
            .arg(a.domid.to_string())
            .arg("--supervisor")
            .arg(a.supervisor.to_string())
            .arg("--name")
            .arg(&a.name)
            .arg("--staging")
            .arg(&a.staging)
            .arg("--dm-stop-timeout")
            .arg(a.dm_stop_timeout.to_string())
            .stdin(read)
            // stdout is the domid's channel; stderr is shared (the journal under systemd).
            .stdout(Stdio::null())
            .env_remove("NOTIFY_SOCKET")
            .process_group(0);
        let child = c.spawn()?;
        // `c` held our copy of the read end: closed here, so only the reaper has it.
        drop(c);
        info!(
            pid = child.id(),
            "reaper started: it cleans up if this supervisor dies"
        );
        Ok(Reaper {
            child,
            tell: Some(tell),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (it should not before [`Reaper::done`]); reaps it then.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The supervisor ends normally: tell the reaper, which exits 0, and reap it.
    pub fn done(mut self) {
        let pid = self.child.id();
        if let Some(mut w) = self.tell.take() {
            if let Err(e) = w.write_all(&[DONE]) {
                warn!("telling the reaper (pid {pid}) that the supervisor ends: {e}");
            }
        }
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    let how = crate::describe_status(st);
                    if st.success() {
                        info!("reaper (pid {pid}) {how}");
                    } else {
                        warn!("reaper (pid {pid}) {how}");
                    }
                    return;
                }
                Ok(None) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    warn!(
                        "reaper (pid {pid}) still runs 5 s after it was told the supervisor ends"
                    );
                    return;
                }
                Err(e) => {
                    warn!("waiting for the reaper (pid {pid}): {e}");
                    return;
                }
            }
        }
    }
}

/// `pvh-dm reap`: wait for the supervisor to end; clean up if it died. Returns the exit code.
pub fn run(run: &Path, xl: &Xl, a: &ReapArgs) -> i32 {
    use Signal::{SIGHUP, SIGINT, SIGTERM, SIGTTOU};
    let set: SigSet = [SIGHUP, SIGINT, SIGTERM, SIGTTOU].into_iter().collect();
    if let Err(e) = set.thread_block() {
        warn!("reaper: blocking SIGHUP/SIGINT/SIGTERM: {e}");
    }
    let mut b = [0u8; 1];
    let got = loop {
        match std::io::stdin().lock().read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r,
        }
    };
    match got {
        Ok(1) if b[0] == DONE => {
            debug!(
                domid = a.domid,
                "the supervisor ended normally: nothing to do"
            );
            return exit::OK;
        }
        Ok(_) => {}
        Err(e) => warn!("reaper: reading the supervisor's pipe: {e}"),
    }
    // End of file: the supervisor's end of the pipe is closed, i.e. it exited (or is exiting:
    // wait until it is no longer our parent, so that it is not cleaned up under its feet).
    let start = Instant::now();
    while nix::unistd::getppid().as_raw() as u32 == a.supervisor
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    after_supervisor_died(run, xl, a)
}

/// The state the supervisor last wrote: `RUN/DOMID/state.json` if it is this supervisor's,
/// else the staging dir's (it died before the rename).
fn find_state(run: &Path, a: &ReapArgs) -> Option<(PathBuf, State)> {
    [runtime::guest_dir(run, a.domid), a.staging.clone()]
        .into_iter()
        .find_map(|d| {
            State::load(&d)
                .ok()
                .filter(|s| s.supervisor == Some(a.supervisor) && s.name == a.name)
                .map(|s| (d, s))
        })
}

fn after_supervisor_died(run: &Path, xl: &Xl, a: &ReapArgs) -> i32 {
    let domid = a.domid;
    let mut code = exit::OK;
    let found = find_state(run, a);
    // 1. The device models.
    let mut stopped = Vec::new();
    let mut bridge_torn_down = true;
    if let Some((dir, st)) = &found {
        let ends = dm::stop_recorded(dir, st, Duration::from_secs(a.dm_stop_timeout));
        for e in &ends {
            info!(dm = %e.rec.name, pid = e.rec.pid, "device model: {}", e.how);
            stopped.push(format!("{} (pid {}: {})", e.rec.name, e.rec.pid, e.how));
        }
        bridge_torn_down = !dm::bridge_needs_reclaim(st, &ends);
    }
    // 2. The domain.
    let domain = match xl.state(domid) {
        Ok(DomainState::Gone) => "the domain was gone already".to_string(),
        _ => match xl.destroy(&domid.to_string()) {
            Ok(()) => "destroyed the domain".to_string(),
            Err(e) => {
                code = exit::ERROR;
                format!("`xl destroy {domid}` FAILED: {e}")
            }
        },
    };
    // 3. The bridge's functions, if it could not hand them back itself.
    let devices = found
        .as_ref()
        .map(|(_, s)| s.devices.clone())
        .unwrap_or_default();
    let reclaim = if devices.is_empty() {
        "no functions passed through".to_string()
    } else if bridge_torn_down {
        format!("pci-host-bridge handed back {} itself", devices.join(", "))
    } else {
        match found.as_ref().and_then(|(_, s)| dm::reclaim(s)) {
            Some(Ok(())) => format!("reclaimed {}", devices.join(", ")),
            Some(Err(e)) => {
                code = exit::ERROR;
                format!("reclaiming {} FAILED: {e}", devices.join(", "))
            }
            None => format!(
                "{} not reclaimed: no pci-host-bridge recorded",
                devices.join(", ")
            ),
        }
    };
    // 4. The runtime files.
    let mut removed = Vec::new();
    for d in [runtime::guest_dir(run, domid), a.staging.clone()] {
        let ours = found.as_ref().is_some_and(|(f, _)| *f == d) || d == a.staging;
        if ours && d.exists() {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => removed.push(d.display().to_string()),
                Err(e) => {
                    code = exit::ERROR;
                    removed.push(format!("removing {} FAILED: {e}", d.display()));
                }
            }
        }
    }
    let msg = format!(
        "supervisor pid {} of domain {domid} ({}) died; {domain}, stopped {}, {reclaim}, removed {}",
        a.supervisor,
        a.name,
        if stopped.is_empty() {
            "no device models (none recorded)".to_string()
        } else {
            stopped.join(", ")
        },
        if removed.is_empty() {
            "nothing".to_string()
        } else {
            removed.join(", ")
        }
    );
    error!("{msg}");
    runtime::record_end(
        run,
        &a.name,
        &serde_json::json!({
            "name": a.name,
            "domid": domid,
            "exit_code": null,
            "end": "supervisor_died",
            "supervisor": a.supervisor,
            "reaper": std::process::id(),
            "message": msg,
            "device_models": stopped,
        }),
    );
    code
}
