//! Many guests against one xen-sim: N domains, each with its three device-model processes
//! (pm-trap, ioapic, pci-host-bridge without passed-through functions), for the scale figures
//! of `scripts/bench`. Every process is started in one process group, killed when the
//! [`Fleet`] is dropped (on error and on panic too) and, by a guard process, when this
//! process dies any other way (a signal, even SIGKILL).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use xen_sim::{DomainConfig, Sim, SimOptions};

/// The device models of each guest, by binary name (the ioapic before the bridge, which
/// connects to its pin socket).
pub const MODELS: [&str; 3] = ["pm-trap", "ioapic", "pci-host-bridge"];

/// pm-trap's PM1a_EVT block (the guest config's default).
pub const PM1A_EVT: u16 = 0xB000;
/// The IOAPIC's MMIO base.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;

/// The guest slot of the passed-through function of [`Fleet::with_function`].
pub const FUNCTION_SLOT: u8 = 2;

/// The host function guest `domid` gets: 0000:BB:DD.F with BB = 0x40 + domid / 256 and
/// DD.F = domid % 256 (one function each: Xen assigns a function to one domain only).
pub fn host_function(domid: u16) -> String {
    let bus = 0x40 + (domid >> 8);
    let devfn = domid & 0xFF;
    format!("0000:{bus:02x}:{:02x}.{}", devfn >> 3, devfn & 7)
}

/// One device-model process.
pub struct Process {
    /// Its guest.
    pub domid: u16,
    /// Its binary name (one of [`MODELS`]).
    pub model: &'static str,
    /// Its pid.
    pub pid: u32,
}

/// N guests on one xen-sim and their device-model processes.
pub struct Fleet {
    /// The hypervisor (in this process).
    pub sim: Sim,
    /// Scratch directory: the sim socket, configs, control sockets, IOAPIC pin sockets.
    pub dir: PathBuf,
    /// The guests' domain ids (1..=N).
    pub domids: Vec<u16>,
    /// Every process started, in start order.
    pub procs: Vec<Process>,
    children: Vec<Child>,
    pgid: Option<Pid>,
    guard: Option<(Child, OwnedFd)>,
    function: bool,
}

/// Start a guard for process group `pgid`: a shell in its own process group (out of reach of
/// the terminal's signals) that waits for end-of-file on a pipe whose only writer is this
/// process, then kills the group and removes `dir` (if given). Returns the guard and the pipe's write end (close-on-exec,
/// so no child inherits it): dropping it, or this process dying, fires the guard.
fn guard(pgid: Pid, dir: Option<&Path>) -> std::io::Result<(Child, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = Command::new("/bin/sh");
    // dash's kill takes no `--`.
    cmd.args([
        "-c",
        "read _ || true; kill -9 -\"$0\" 2>/dev/null; [ -z \"$1\" ] || rm -rf \"$1\"",
        &pgid.to_string(),
    ])
    .arg(dir.map(Path::as_os_str).unwrap_or_default())
    .stdin(Stdio::from(r))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = spawn_in_group(&mut cmd, None)?;
    Ok((child, w))
}

/// Spawn `cmd` into process group `pgid` (a new group led by the child if None). No
/// `pre_exec` hook (a parent-death signal would need one): it would make std fork instead of
/// posix_spawn (vfork), and forking this process, which holds xen-sim's thread per device
/// model, costs milliseconds per child at hundreds of them.
pub fn spawn_in_group(cmd: &mut Command, pgid: Option<Pid>) -> std::io::Result<Child> {
    cmd.process_group(pgid.map_or(0, Pid::as_raw));
    cmd.spawn()
}

impl Fleet {
    /// Start xen-sim with domains 1..=`guests` (1 vCPU, 16 MiB each) and write each guest's
    /// config; no process runs yet.
    pub fn new(guests: u16) -> std::io::Result<Fleet> {
        Self::with_function(guests, None)
    }

    /// Like [`Fleet::new`], each guest's bridge also passing through one function backed by
    /// `snapshot` (a config-space snapshot) at slot [`FUNCTION_SLOT`], a distinct host function
    /// per guest ([`host_function`]).
    pub fn with_function(guests: u16, snapshot: Option<&Path>) -> std::io::Result<Fleet> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("pvh-dm-fleet-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let sim = Sim::start(SimOptions {
            socket: dir.join("sim.sock"),
            ioreq_timeout: Duration::from_secs(10),
        })?;
        let mut fleet = Fleet {
            sim,
            dir,
            domids: Vec::new(),
            procs: Vec::new(),
            children: Vec::new(),
            pgid: None,
            guard: None,
            function: false,
        };
        for domid in 1..=guests {
            fleet
                .sim
                .create_domain_with(domid, &DomainConfig::default())?;
            let mut text = fleet.config_text(domid);
            if let Some(snap) = snapshot {
                text += &format!(
                    "\n[[pci.device]]\nhost = \"{}\"\nslot = {FUNCTION_SLOT}\nbackend = \"snapshot\"\nsnapshot = \"{}\"\n",
                    host_function(domid),
                    snap.display()
                );
            }
            fleet.function = snapshot.is_some();
            std::fs::write(fleet.config(domid), text)?;
            fleet.domids.push(domid);
        }
        Ok(fleet)
    }

    fn config(&self, domid: u16) -> PathBuf {
        self.dir.join(format!("guest{domid}.toml"))
    }

    fn config_text(&self, domid: u16) -> String {
        format!(
            "domid = {domid}\ntransport = \"sim\"\n\n[sim]\nsocket = \"{}\"\n\n[control]\ndir = \"{}\"\n\n\
             [pm_trap]\nmode = \"guest\"\n\n[ioapic]\nbase = {IOAPIC_BASE:#x}\nsocket = \"{}\"\n\n[pci]\n",
            self.dir.join("sim.sock").display(),
            self.dir.join("control").display(),
            self.dir.join(format!("ioapic{domid}.sock")).display(),
        )
    }

    /// The control socket of `model` of guest `domid`.
    pub fn control_socket(&self, domid: u16, model: &str) -> PathBuf {
        self.dir
            .join("control")
            .join(domid.to_string())
            .join(format!("{model}.sock"))
    }

    /// Start the three device models of every guest (binaries in `bin_dir`), guest by guest.
    pub fn spawn_all(&mut self, bin_dir: &Path) -> std::io::Result<()> {
        let log = std::env::var("PVH_DM_LOG").unwrap_or_else(|_| "warn".into());
        for domid in self.domids.clone() {
            for model in MODELS {
                let mut cmd = Command::new(bin_dir.join(model));
                cmd.arg("--config")
                    .arg(self.config(domid))
                    .env("PVH_DM_LOG", &log)
                    .stdin(Stdio::null());
                let child = spawn_in_group(&mut cmd, self.pgid)?;
                let pid = child.id();
                if self.pgid.is_none() {
                    let g = Pid::from_raw(pid as i32);
                    self.pgid = Some(g);
                    self.guard = Some(guard(g, Some(&self.dir))?);
                }
                self.children.push(child);
                self.procs.push(Process { domid, model, pid });
            }
        }
        Ok(())
    }

    /// Wait until every process answers `{"cmd":"status"}` on its control socket (bound at
    /// the end of its setup: it is then serving); false if some did not within `timeout`.
    pub fn wait_all_serving(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pending: BTreeSet<(u16, &str)> =
            self.procs.iter().map(|p| (p.domid, p.model)).collect();
        let status = serde_json::json!({"cmd": "status"});
        loop {
            pending.retain(|(d, m)| {
                !ioreq_server::control::request(&self.control_socket(*d, m), &status)
                    .is_ok_and(|r| r["ok"] == true)
            });
            if pending.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Guest `domid` touches each of its device models once through xen-sim's guest API
    /// (a PIO read of pm-trap's PM1a_EVT, an MMIO read of the IOAPIC's version register, a
    /// CF8/CFC read of the host bridge's IDs); true if all three answered (Xen's null handler
    /// would have read all-ones), and the passed-through function's IDs if there is one.
    pub fn guest_served(&self, domid: u16) -> bool {
        let mut v = self.sim.vcpu(domid, 0);
        let pm = v.pio_read(PM1A_EVT, 4);
        let ioapic = v
            .mmio_write(IOAPIC_BASE, 4, 1)
            .and_then(|_| v.mmio_read(IOAPIC_BASE + 0x10, 4));
        let bridge = v
            .pio_write(0xCF8, 4, 0x8000_0000)
            .and_then(|_| v.pio_read(0xCFC, 4));
        let function = if self.function {
            v.pio_write(0xCF8, 4, 0x8000_0000 | u64::from(FUNCTION_SLOT) << 11)
                .and_then(|_| v.pio_read(0xCFC, 4))
        } else {
            Ok(0)
        };
        [pm, ioapic, bridge, function]
            .iter()
            .all(|r| r.as_ref().is_ok_and(|&x| x != 0xFFFF_FFFF))
    }

    /// Kill every process (the whole group) and wait for them.
    pub fn kill_all(&mut self) {
        // The guard first (so it cannot fire once the group's id may be reused), then the group.
        if let Some((mut c, _w)) = self.guard.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(g) = self.pgid.take() {
            let _ = killpg(g, Signal::SIGKILL);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// How many of the started processes are still running.
    pub fn running(&mut self) -> usize {
        self.children
            .iter_mut()
            .map(Child::try_wait)
            .filter(|r| matches!(r, Ok(None)))
            .count()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_all();
        self.sim.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `key:` of /proc/PID/smaps_rollup in KiB (`Pss`, `Rss`), 0 if unreadable.
pub fn smaps_rollup_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find(|l| l.split(':').next() == Some(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit (xen-sim holds a socket, eventfds and
/// memfds per device model and domain); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_kills_the_group_when_its_pipe_closes() {
        let mut a = spawn_in_group(Command::new("sleep").arg("30"), None).unwrap();
        let g = Pid::from_raw(a.id() as i32);
        let mut b = spawn_in_group(Command::new("sleep").arg("30"), Some(g)).unwrap();
        let dir = std::env::temp_dir().join(format!("pvh-dm-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut guard, w) = guard(g, Some(&dir)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            matches!(a.try_wait(), Ok(None)),
            "killed before its pipe closed"
        );
        drop(w); // as if this process had died
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(a.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(b.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(guard.wait().unwrap().success());
        assert!(!dir.exists(), "the guard removes the scratch directory");
    }
}
