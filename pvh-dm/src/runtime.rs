//! The runtime directory: every piece of state pvh-dm keeps about a guest, so that `status`,
//! `destroy`, a restarted launcher and a test script all see the same thing.
//!
//! ```text
//! RUN/                         (--run-dir, default /run/pvh-dm; the device models' default
//!                               [control] dir too, so their sockets sit next to the state)
//!   .create-NAME-PID/          staging while `create` runs, before the domid is known
//!   DOMID/
//!     state.json               [`State`]: phase, supervisor and reaper pids, device models
//!                              and their pids
//!     xl.cfg                   the derived xl config (ramdisk replaced)
//!     acpi/*.aml               the guest's ACPI fragment
//!     initrd.cpio              the tables cpio + the original ramdisk (removed once the
//!                              domain is built)
//!     NAME.log                 a device model's stderr (with --detach or --dm-log-files)
//!     pm-trap.sock ...         the device models' control sockets
//!   ended/NAME.json            how the last run of guest NAME ended (exit code, reason,
//!                              message, device models' ends); kept after DOMID/ is removed
//! ```

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default runtime directory.
pub const DEFAULT_RUN_DIR: &str = "/run/pvh-dm";
/// The state file's name.
pub const STATE_FILE: &str = "state.json";

/// Where a guest is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Domain created paused; device models starting.
    Starting,
    /// Unpaused.
    Running,
    /// Being stopped (shutdown requested, domain gone, or a device model died).
    Stopping,
}

/// One device model as started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmRecord {
    /// Process name (`pm-trap`, `ioapic`, `pci-host-bridge`).
    pub name: String,
    /// Binary.
    pub binary: PathBuf,
    /// Pid.
    pub pid: u32,
    /// Control socket.
    pub socket: PathBuf,
    /// Log file, when not inherited.
    pub log: Option<PathBuf>,
}

/// `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Domain id.
    pub domid: u32,
    /// Guest name (xl's `name`).
    pub name: String,
    /// The operator's xl config.
    pub xl_config: PathBuf,
    /// The guest TOML.
    pub dm_config: PathBuf,
    /// Phase.
    pub phase: Phase,
    /// The supervising pvh-dm's pid (`None` with --detach).
    pub supervisor: Option<u32>,
    /// The supervisor's reaper (`pvh-dm reap`), which cleans up if the supervisor dies.
    #[serde(default)]
    pub reaper: Option<u32>,
    /// Seconds since the epoch when the domain was created.
    pub created: u64,
    /// Device models in start order.
    pub device_models: Vec<DmRecord>,
    /// Host functions passed through.
    pub devices: Vec<String>,
    /// Whether the domain was created with an IOMMU context.
    pub passthrough: bool,
}

/// Where the outcome of a guest's last run is kept: `RUN/ended/NAME.json`.
pub fn ended_path(run: &Path, name: &str) -> PathBuf {
    run.join("ended").join(format!("{name}.json"))
}

/// Record how a guest's run ended (one JSON object per guest name, the latest run), for
/// scripts and `ExecStopPost`; failures to write are logged only.
pub fn record_end(run: &Path, name: &str, v: &serde_json::Value) {
    let p = ended_path(run, name);
    let r = std::fs::create_dir_all(p.parent().expect("has a parent"))
        .and_then(|()| std::fs::write(&p, format!("{v}\n")));
    if let Err(e) = r {
        tracing::warn!("recording the outcome in {}: {e}", p.display());
    }
}

/// The guest directory of `domid`.
pub fn guest_dir(run: &Path, domid: u32) -> PathBuf {
    run.join(domid.to_string())
}

impl State {
    /// Write `dir/state.json` atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(".state.json.tmp");
        let mut s = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        s.push('\n');
        std::fs::write(&tmp, s)?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
    }

    /// Read `dir/state.json`.
    pub fn load(dir: &Path) -> io::Result<State> {
        let s = std::fs::read_to_string(dir.join(STATE_FILE))?;
        serde_json::from_str(&s).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", dir.join(STATE_FILE).display()),
            )
        })
    }
}

/// Every guest directory under `run` with a readable state, by domid.
pub fn list(run: &Path) -> Vec<(PathBuf, io::Result<State>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(run) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let dir = e.path();
        if !dir.join(STATE_FILE).exists() {
            continue;
        }
        let st = State::load(&dir);
        out.push((dir, st));
    }
    out.sort_by_key(|(d, _)| {
        d.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    out
}

/// [`list`] plus the staging dirs of creates still running (`.create-NAME-PID/` with a
/// `state.json` and a live PID): the guests whose devices and sockets are taken.
pub fn list_with_staging(run: &Path) -> Vec<(PathBuf, io::Result<State>)> {
    let mut out = list(run);
    let Ok(rd) = std::fs::read_dir(run) else {
        return out;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(".create-") else {
            continue;
        };
        let live = rest
            .rsplit('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p != std::process::id() && pid_alive(p));
        if live && e.path().join(STATE_FILE).exists() {
            out.push((e.path(), State::load(&e.path())));
        }
    }
    out
}

/// The create lock (an flock on the runtime directory itself): held from validation until
/// the guest's claim on its devices and sockets is on disk, so that two creates (several
/// units at boot) cannot both take the same device.
pub fn create_lock(run: &Path) -> io::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(run)?;
    let f = std::fs::File::open(run)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io::Error::from(e))
}

/// Whether process `pid` exists (signal 0).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Whether `pid` has exited but not been reaped yet (state `Z` in `/proc/PID/stat`): an
/// orphaned device model waits so for init to reap it.
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Whether `pid` is still the device model `rec` (its command line names the binary and
/// `--domid DOMID`), so that a recycled pid is never signalled.
pub fn is_same_dm(rec: &DmRecord, domid: u32) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{}/cmdline", rec.pid)) else {
        return false;
    };
    let args: Vec<String> = cmd
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let bin_ok = args.first().is_some_and(|a0| {
        Path::new(a0).file_name() == rec.binary.file_name() || Path::new(a0) == rec.binary
    });
    let domid_ok = args
        .windows(2)
        .any(|w| w[0] == "--domid" && w[1] == domid.to_string());
    bin_ok && domid_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_list() {
        let run = std::env::temp_dir().join(format!("pvh-dm-rt-{}", std::process::id()));
        let dir = guest_dir(&run, 7);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(run.join(".create-x-1")).unwrap();
        let s = State {
            domid: 7,
            name: "g".into(),
            xl_config: "/etc/xen/g.cfg".into(),
            dm_config: "/etc/xen/g.toml".into(),
            phase: Phase::Running,
            supervisor: Some(1),
            reaper: None,
            created: 0,
            device_models: vec![DmRecord {
                name: "pm-trap".into(),
                binary: "/usr/local/bin/pm-trap".into(),
                pid: 12,
                socket: "/run/pvh-dm/7/pm-trap.sock".into(),
                log: None,
            }],
            devices: vec![],
            passthrough: false,
        };
        s.save(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), s);
        let l = list(&run);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].1.as_ref().unwrap().domid, 7);
        assert!(pid_alive(std::process::id()));
        std::fs::remove_dir_all(&run).unwrap();
    }
}
