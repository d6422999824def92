//! Starting, waiting for and stopping the device-model processes.
//!
//! Each is started as `BINARY --config GUEST.toml --domid N` (its stdin /dev/null, its stderr
//! inherited or sent to a log file) and counts as up once its control socket answers
//! `{"cmd":"status"}` with `"ok": true`. Stopping is SIGTERM (the device models tear their
//! ioreq server down and the bridge hands its devices back), then SIGKILL after a timeout, and
//! always a reap.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::runtime::DmRecord;

/// The device models, in the order they start (the bridge connects to the ioapic's pin
/// socket, so the ioapic comes first); they stop in the reverse order.
pub const ALL: [&str; 3] = ["ioapic", "pm-trap", "pci-host-bridge"];

/// What went wrong with a device model.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// The binary is nowhere to be found.
    #[error("device model {name}: no executable {name} in {searched}")]
    NotFound {
        /// Name.
        name: String,
        /// Where pvh-dm looked.
        searched: String,
    },
    /// It could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// Binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited before it answered on its control socket.
    #[error("{name} (pid {pid}) {status} before answering on {socket}{log}")]
    Died {
        /// Name.
        name: String,
        /// Pid.
        pid: u32,
        /// How it ended.
        status: String,
        /// Its control socket.
        socket: PathBuf,
        /// The end of its log, if it has one.
        log: String,
    },
    /// It did not answer in time.
    #[error("{name} (pid {pid}) did not answer {{\"cmd\":\"status\"}} on {socket} within {secs} s{last}")]
    Timeout {
        /// Name.
        name: String,
        /// Pid.
        pid: u32,
        /// Its control socket.
        socket: PathBuf,
        /// The timeout.
        secs: u64,
        /// The last error seen.
        last: String,
    },
}

/// Find device model `name`: in `dir` if given; else next to pvh-dm's own executable; else in
/// `$PATH`.
pub fn find_binary(name: &str, dir: Option<&Path>) -> Result<PathBuf, DmError> {
    let mut searched = Vec::new();
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(d) = dir {
        let p = d.join(name);
        if is_exec(&p) {
            return Ok(p);
        }
        return Err(DmError::NotFound {
            name: name.into(),
            searched: format!("--dm-dir {}", d.display()),
        });
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let p = d.join(name);
        if is_exec(&p) {
            return Ok(p);
        }
        searched.push(d.display().to_string());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if is_exec(&p) {
                return Ok(p);
            }
        }
        searched.push("$PATH".into());
    }
    Err(DmError::NotFound {
        name: name.into(),
        searched: searched.join(" and "),
    })
}

/// A started device model.
pub struct RunningDm {
    /// Its record (for state.json).
    pub rec: DmRecord,
    child: Child,
    /// Its exit status once reaped.
    pub exited: Option<ExitStatus>,
}

/// "exited with status N" / "was killed by signal SIGKILL".
pub fn describe(st: ExitStatus) -> String {
    crate::describe_status(st)
}

fn log_tail(log: Option<&Path>) -> String {
    let Some(p) = log else { return String::new() };
    let Ok(s) = std::fs::read_to_string(p) else {
        return String::new();
    };
    let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    if v.is_empty() {
        return String::new();
    }
    format!(
        "; its log {} ends: {}",
        p.display(),
        v[v.len().saturating_sub(3)..].join(" | ")
    )
}

impl RunningDm {
    /// Start `binary --config CONFIG --domid DOMID [--exit-with-parent PID]`; stderr to `log`
    /// if given. With `exit_with_parent` (our own pid, when supervising) the device model
    /// asks for SIGTERM when we die (PR_SET_PDEATHSIG), so a SIGKILLed launcher does not
    /// leave it serving an unsupervised guest. Must be called from the thread that stays
    /// (the signal follows the death of the thread that spawned it): pvh-dm's main thread.
    pub fn spawn(
        name: &str,
        binary: &Path,
        config: &Path,
        domid: u32,
        socket: PathBuf,
        log: Option<PathBuf>,
        exit_with_parent: Option<u32>,
    ) -> Result<RunningDm, DmError> {
        let mut c = Command::new(binary);
        ioreq_server::signals::with_default_signals(&mut c);
        let mut args: Vec<OsString> = vec![
            "--config".into(),
            config.into(),
            "--domid".into(),
            domid.to_string().into(),
        ];
        if let Some(pid) = exit_with_parent {
            args.push("--exit-with-parent".into());
            args.push(pid.to_string().into());
        }
        // Only pvh-dm talks to systemd (NotifyAccess=main).
        c.args(&args)
            .stdin(Stdio::null())
            .env_remove("NOTIFY_SOCKET");
        if let Some(l) = &log {
            let f = std::fs::File::create(l).map_err(|source| DmError::Spawn {
                binary: binary.into(),
                source,
            })?;
            let f2 = f.try_clone().map_err(|source| DmError::Spawn {
                binary: binary.into(),
                source,
            })?;
            c.stdout(f).stderr(f2);
        } else {
            c.stdout(Stdio::null());
        }
        let child = c.spawn().map_err(|source| DmError::Spawn {
            binary: binary.into(),
            source,
        })?;
        tracing::info!(dm = name, pid = child.id(), binary = %binary.display(), "device model started");
        Ok(RunningDm {
            rec: DmRecord {
                name: name.into(),
                binary: binary.into(),
                pid: child.id(),
                socket,
                log,
            },
            child,
            exited: None,
        })
    }

    /// Reap it if it has exited; returns its status then.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
            }
        }
        self.exited
    }

    /// Wait until its control socket answers `status` for `domid`, it dies, or `timeout`
    /// passes.
    pub fn wait_ready(
        &mut self,
        domid: u32,
        timeout: Duration,
    ) -> Result<serde_json::Value, DmError> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(st) = self.try_reap() {
                return Err(DmError::Died {
                    name: self.rec.name.clone(),
                    pid: self.rec.pid,
                    status: describe(st),
                    socket: self.rec.socket.clone(),
                    log: log_tail(self.rec.log.as_deref()),
                });
            }
            if self.rec.socket.exists() {
                match status(&self.rec.socket) {
                    // Another process answering for another domain (a stale socket our
                    // device model has not replaced yet): not ready.
                    Ok(v) => match v["status"]["domid"].as_u64() {
                        Some(d) if d != u64::from(domid) => {
                            last = format!(
                            "the socket answers for domain {d}, not {domid}: another {} holds it",
                            self.rec.name
                        )
                        }
                        _ => return Ok(v),
                    },
                    Err(e) => last = e,
                }
            }
            if start.elapsed() >= timeout {
                return Err(DmError::Timeout {
                    name: self.rec.name.clone(),
                    pid: self.rec.pid,
                    socket: self.rec.socket.clone(),
                    secs: timeout.as_secs(),
                    last: if last.is_empty() {
                        String::new()
                    } else {
                        format!(" (last: {last})")
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait up to `timeout`, SIGKILL, reap. Returns how it ended.
    pub fn stop(&mut self, timeout: Duration) -> String {
        if let Some(st) = self.try_reap() {
            return format!("had already {}", describe(st));
        }
        let pid = Pid::from_raw(self.rec.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(st) = self.try_reap() {
                return describe(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(dm = %self.rec.name, pid = self.rec.pid, "still running {} s after SIGTERM: SIGKILL", timeout.as_secs());
        let _ = kill(pid, Signal::SIGKILL);
        match self.child.wait() {
            Ok(st) => {
                self.exited = Some(st);
                format!(
                    "did not exit within {} s of SIGTERM: SIGKILLed ({})",
                    timeout.as_secs(),
                    describe(st)
                )
            }
            Err(e) => format!("could not be reaped: {e}"),
        }
    }
}

/// Stop `dms` in reverse start order, logging each; returns `name: how` per process.
pub fn stop_all(dms: &mut [RunningDm], timeout: Duration) -> Vec<String> {
    let mut out = Vec::new();
    for d in dms.iter_mut().rev() {
        let how = d.stop(timeout);
        tracing::info!(dm = %d.rec.name, pid = d.rec.pid, "device model stopped: {how}");
        out.push(format!("{} {how}", d.rec.name));
    }
    out
}

/// Press the guest's fixed power button through pm-trap's `power_button` command (if pm-trap
/// is among `dms`): an OS that watches PM1a_STS powers off through S5. pvh-dm sends it together
/// with the xenstore shutdown request, not instead of it: pm-trap raises no SCI, so a guest
/// that waits for one (Linux) acts on the request its xenbus driver sees instead.
pub fn press_power_button<'a>(dms: impl IntoIterator<Item = &'a DmRecord>) {
    let Some(pm) = dms.into_iter().find(|d| d.name == "pm-trap") else {
        return;
    };
    let cmd = serde_json::json!({"cmd": "power_button"});
    match ioreq_server::control::request(&pm.socket, &cmd) {
        Ok(v) if v.get("ok").and_then(|o| o.as_bool()) == Some(true) => {
            tracing::info!("power button pressed (pm-trap: {v})")
        }
        Ok(v) => tracing::warn!("pm-trap refused the power button: {v}"),
        Err(e) => tracing::warn!("could not press the power button through pm-trap: {e}"),
    }
}

/// Ask a control socket for `status`; `Err` names why not.
pub fn status(socket: &Path) -> Result<serde_json::Value, String> {
    match ioreq_server::control::request(socket, &serde_json::json!({"cmd": "status"})) {
        Ok(v) if v.get("ok").and_then(|o| o.as_bool()) == Some(true) => Ok(v),
        Ok(v) => Err(format!("answered {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// How [`stop_foreign`] ended a device model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The pid was gone already.
    NotRunning,
    /// The pid now belongs to another process (not signalled).
    NotThatDm,
    /// It exited within the timeout after SIGTERM.
    ExitedAfterTerm,
    /// It outlived the timeout and was SIGKILLed.
    Killed,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped::NotRunning => "not running",
            Stopped::NotThatDm => "no longer that device model (not signalled)",
            Stopped::ExitedAfterTerm => "exited after SIGTERM",
            Stopped::Killed => "killed with SIGKILL",
        })
    }
}

/// Stop a device model that is not our child (from state.json, e.g. after the supervisor
/// was killed): SIGTERM, wait for the pid to vanish, SIGKILL. Only if the pid still is that
/// device model.
pub fn stop_foreign(rec: &DmRecord, domid: u32, timeout: Duration) -> Stopped {
    if !crate::runtime::pid_alive(rec.pid) || crate::runtime::is_zombie(rec.pid) {
        return Stopped::NotRunning;
    }
    if !crate::runtime::is_same_dm(rec, domid) {
        return Stopped::NotThatDm;
    }
    let pid = Pid::from_raw(rec.pid as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < timeout {
        if !crate::runtime::pid_alive(rec.pid) || !crate::runtime::is_same_dm(rec, domid) {
            return Stopped::ExitedAfterTerm;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    Stopped::Killed
}

/// How one recorded device model ended under [`stop_recorded`].
#[derive(Clone, Debug)]
pub struct RecordedEnd<'a> {
    /// Its record.
    pub rec: &'a DmRecord,
    /// How it was stopped.
    pub how: Stopped,
    /// Its control socket was still there once it was gone: it ended without its teardown
    /// (which removes the socket last), e.g. SIGKILLed or crashed.
    pub socket_left: bool,
}

/// Stop the device models recorded in `st` (a guest whose supervisor is gone), in reverse
/// start order, with [`stop_foreign`]; then remove each control socket left behind outside
/// `dir` (`[control] dir` elsewhere), with its directory if empty. Returns how each ended.
pub fn stop_recorded<'a>(
    dir: &Path,
    st: &'a crate::runtime::State,
    timeout: Duration,
) -> Vec<RecordedEnd<'a>> {
    let mut out = Vec::new();
    for rec in st.device_models.iter().rev() {
        let how = stop_foreign(rec, st.domid, timeout);
        let socket_left = how == Stopped::Killed || rec.socket.exists();
        if !rec.socket.starts_with(dir) {
            let _ = std::fs::remove_file(&rec.socket);
            if let Some(d) = rec.socket.parent() {
                let _ = std::fs::remove_dir(d);
            }
        }
        out.push(RecordedEnd {
            rec,
            how,
            socket_left,
        });
    }
    out
}

/// Whether `pci-host-bridge reclaim` is wanted after [`stop_recorded`]: the guest passes
/// functions through and its bridge ended without its teardown.
pub fn bridge_needs_reclaim(st: &crate::runtime::State, ends: &[RecordedEnd<'_>]) -> bool {
    !st.devices.is_empty()
        && ends
            .iter()
            .any(|e| e.rec.name == "pci-host-bridge" && e.socket_left)
}

/// `pci-host-bridge reclaim --config TOML --domid N` with the bridge binary recorded in `st`,
/// once the domain is destroyed: dom0's side of the hand-back a dead bridge did not do for the
/// functions Xen now holds in dom_io. `None` if no bridge is recorded; the error names why.
pub fn reclaim(st: &crate::runtime::State) -> Option<Result<(), String>> {
    let rec = st
        .device_models
        .iter()
        .find(|r| r.name == "pci-host-bridge")?;
    let out = ioreq_server::signals::with_default_signals(&mut Command::new(&rec.binary))
        .arg("reclaim")
        .arg("--config")
        .arg(&st.dm_config)
        .arg("--domid")
        .arg(st.domid.to_string())
        .stdin(Stdio::null())
        .output();
    Some(match out {
        Ok(o) if o.status.success() => {
            tracing::info!(
                devices = %st.devices.join(", "),
                "pci-host-bridge reclaim: the functions are back with dom0"
            );
            Ok(())
        }
        Ok(o) => {
            let e = format!(
                "pci-host-bridge reclaim failed ({}): {}",
                describe(o.status),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            tracing::error!("{e}");
            Err(e)
        }
        Err(e) => {
            let e = format!("running {} reclaim: {e}", rec.binary.display());
            tracing::error!("{e}");
            Err(e)
        }
    })
}
