//! Deprivileging a device-model process once its setup is done: rlimits, an empty root, the
//! per-guest uid/gid, no capabilities, `PR_SET_NO_NEW_PRIVS`, and a seccomp allow-list of the
//! system calls the serving loop makes (anything else kills the process with SIGSYS).
//!
//! [`apply`] runs between `Server::setup` and `Server::run`, in this order (as root):
//!
//! 1. rlimits: `RLIMIT_CORE` 0 (a guest-triggered crash writes no core with guest memory in it),
//!    `RLIMIT_NOFILE` bounded to the descriptors open now plus headroom, `RLIMIT_AS` bounded;
//! 2. the *unlinker* (below) is forked, while this process can still reach its socket paths;
//! 3. `chroot` to an empty, root-owned directory of mode 0000 and `chdir("/")`: after the uid
//!    drop no path resolves at all. A chroot rather than a mount namespace: once the uid is
//!    not 0 and no capability is left (no `CAP_SYS_CHROOT`), a chroot cannot be left, it needs
//!    no mount and no namespace support, and it is what Xen's `dm_restrict` does for QEMU
//!    (tools/libs/light/libxl_dm.c:1744-1782 in Xen 4.17: `XEN_RUN_DIR/qemu-root-DOMID`,
//!    created mode 0000). The process keeps no directory descriptor, so nothing leads out;
//! 4. `setgroups([])`, `setresgid`, `setresuid` to the per-guest ids ([`UserSpec`]);
//! 5. `PR_SET_PDEATHSIG` again when `--exit-with-parent` asked for it: the kernel clears the
//!    parent-death signal when the credentials change (kernel/cred.c, `commit_creds`);
//! 6. a check that no capability is left (`capget`: effective, permitted, inheritable all 0;
//!    when the uid stays 0 they are cleared with `capset` first);
//! 7. `PR_SET_NO_NEW_PRIVS`;
//! 8. the seccomp filters ([`serving_filters`]), on every thread (`SECCOMP_FILTER_FLAG_TSYNC`).
//!
//! **The unlinker.** At teardown the server removes its control socket (and the ioapic its
//! irq_line socket), but after the chroot and the uid drop their paths do not resolve, and the
//! directories they sit in (pvh-dm's `RUN/DOMID/`, next to its state file) must not become
//! writable by the guest's uid. So [`apply`] forks a tiny helper first that stays root outside
//! the chroot and does one thing: it blocks in `read()` on a pipe from this process; when
//! [`Sandbox::finish`] (the clean end, after teardown) writes a byte it unlinks exactly the
//! paths it was given and exits, and the process waits for it, so the sockets are gone when the
//! process is. When the process dies without its teardown (SIGKILL, SIGSYS, an abort) the pipe
//! just closes and the helper exits *without* unlinking, so a launcher still sees the socket an
//! untorn process left (pvh-dm decides a bridge reclaim on that). The helper closes every other
//! descriptor, blocks SIGTERM/SIGINT (inherited from the server's signalfd mask), sits in a
//! process group of its own (a group kill of the device models finds only them), and runs under
//! its own seccomp filter: `read`, `unlink`, `exit`, `exit_group`.

mod caps;
mod proc_status;
mod seccomp;
mod unlinker;
mod user;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use seccompiler::BpfProgram;
use tracing::{info, warn};

pub use proc_status::ProcStatus;
pub use seccomp::{
    allowed_syscalls, apply_broker_filter, apply_serving_filter, broker_allowed_syscalls,
    serving_filters, BROKER_IOCTLS, NOSYS_CALLS, REFUSED_LOOKUPS, SERVING_IOCTLS,
};
pub use user::{resolve_user, Identity, Ids, UserSpec, RANGE_BASE_USER, SUGGESTED_BASE_UID};

use caps::{capabilities, clear_capabilities};
use unlinker::Unlinker;

/// Default empty root directory (shared by every device model; it must stay empty).
pub const DEFAULT_ROOT: &str = "/run/pvh-dm-root";

/// Default `RLIMIT_AS`, MiB: the serving loop maps single guest pages and a few resource
/// frames; threads' stacks and malloc arenas are the rest.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 1024;

/// Descriptors allowed beyond those open when the sandbox is applied (control clients,
/// irq_line sources with their eventfds, descriptors passed by xen-sim).
pub const DEFAULT_FILE_HEADROOM: u64 = 128;

/// Why the sandbox could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The per-guest user cannot be determined.
    #[error("{0}")]
    User(String),
    /// A system call failed.
    #[error("sandbox: {0}: {1}")]
    Sys(String, std::io::Error),
    /// The seccomp filter could not be built or installed.
    #[error("sandbox: seccomp: {0}")]
    Seccomp(String),
    /// A check after deprivileging failed.
    #[error("sandbox: {0}")]
    Check(String),
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> SandboxError {
    let what = what.into();
    move |e| SandboxError::Sys(what, std::io::Error::from(e))
}

/// What [`apply`] does.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The process's name (logs, the unlinker's name).
    pub name: String,
    /// Who to become (from [`resolve_user`]).
    pub identity: Identity,
    /// The empty directory to chroot to (created mode 0000 if missing).
    pub root: PathBuf,
    /// `RLIMIT_NOFILE`; `None`: the descriptors open now + `file_headroom`.
    pub max_files: Option<u64>,
    /// What the process may open while serving ([`DEFAULT_FILE_HEADROOM`] unless it has more
    /// clients, like the ioapic's interrupt sources).
    pub file_headroom: u64,
    /// `RLIMIT_AS` in MiB.
    pub max_memory_mib: u64,
    /// Files to remove at the clean end ([`Sandbox::finish`]): the control socket, the
    /// ioapic's irq_line socket.
    pub unlink_at_exit: Vec<PathBuf>,
    /// Re-arm `PR_SET_PDEATHSIG` for this parent after the uid change.
    pub exit_with_parent: Option<u32>,
}

/// A sandbox being applied: [`Sandbox::prepare`] (rlimits, the unlinker), then
/// [`Sandbox::enter`] (root, ids, capabilities, no_new_privs, seccomp); [`Sandbox::finish`]
/// after the server's teardown. Two steps so that a failure in the second still leaves the
/// unlinker to remove the sockets once the caller tore the server down.
#[derive(Debug)]
pub struct Sandbox {
    unlinker: Option<Unlinker>,
    filters: [BpfProgram; 3],
    nofile: u64,
}

impl Sandbox {
    /// Steps 1 and 2: the rlimits, the filter compiled, the unlinker forked (as root, for the
    /// paths of `p.unlink_at_exit` that exist).
    pub fn prepare(p: &Policy) -> Result<Sandbox, SandboxError> {
        let open = open_fds()?;
        let nofile = p.max_files.unwrap_or(open + p.file_headroom);
        if nofile < open {
            return Err(SandboxError::Check(format!(
                "--max-files {nofile} is below the {open} descriptors already open"
            )));
        }
        let mem = p.max_memory_mib.saturating_mul(1 << 20);
        let vm = vm_size()?;
        if vm >= mem {
            return Err(SandboxError::Check(format!(
                "--max-memory {} MiB is below the {} MiB of address space already in use",
                p.max_memory_mib,
                vm >> 20
            )));
        }
        use nix::sys::resource::{setrlimit, Resource};
        setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(sys("setrlimit(RLIMIT_CORE)"))?;
        setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile)
            .map_err(sys("setrlimit(RLIMIT_NOFILE)"))?;
        setrlimit(Resource::RLIMIT_AS, mem, mem).map_err(sys("setrlimit(RLIMIT_AS)"))?;
        // The filters are built now, while allocation and files are unrestricted.
        let filters = serving_filters()?;
        let mut unlinker = None;
        if nix::unistd::geteuid().is_root() {
            let paths: Vec<&PathBuf> = p.unlink_at_exit.iter().filter(|x| x.exists()).collect();
            if !paths.is_empty() {
                unlinker = Some(Unlinker::spawn(&paths, &p.name, nofile)?);
            }
        }
        Ok(Sandbox {
            unlinker,
            filters,
            nofile,
        })
    }

    /// Steps 3 to 8. Not root: only `PR_SET_NO_NEW_PRIVS` and seccomp (said on an info line).
    pub fn enter(&mut self, p: &Policy) -> Result<(), SandboxError> {
        let root = nix::unistd::geteuid().is_root();
        let mut ids = None;
        if root {
            // 3. The empty root.
            prepare_root(&p.root)?;
            nix::unistd::chroot(&p.root).map_err(sys(format!("chroot {}", p.root.display())))?;
            nix::unistd::chdir("/").map_err(sys("chdir /"))?;
            // 4. The per-guest ids.
            match &p.identity {
                Identity::Switch(i) => {
                    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
                    setgroups(&[]).map_err(sys("setgroups([])"))?;
                    let g = Gid::from_raw(i.gid);
                    setresgid(g, g, g).map_err(sys(format!("setresgid({})", i.gid)))?;
                    let u = Uid::from_raw(i.uid);
                    setresuid(u, u, u).map_err(sys(format!("setresuid({})", i.uid)))?;
                    ids = Some(*i);
                }
                Identity::KeepRoot(why) => {
                    warn!("{why}; on the sim transport uid 0 is kept, without any capability");
                    clear_capabilities()?;
                }
            }
            // 5. The parent-death signal does not survive a credential change.
            if let Some(pid) = p.exit_with_parent {
                crate::cli::exit_with_parent(pid)
                    .map_err(|e| SandboxError::Check(format!("{e:#}")))?;
            }
            // 6. Nothing left.
            let caps = capabilities()?;
            if caps != [0; 3] {
                return Err(SandboxError::Check(format!(
                    "capabilities remain after the uid change (effective {:#x}, permitted {:#x}, inheritable {:#x})",
                    caps[0], caps[1], caps[2]
                )));
            }
        } else {
            info!(
                "not root: the uid, gid and root directory stay as they are (rlimits, no_new_privs and seccomp still apply)"
            );
        }
        // 7, 8.
        nix::sys::prctl::set_no_new_privs().map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))?;
        for f in &self.filters {
            seccompiler::apply_filter_all_threads(f)
                .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
        }
        info!(
            uid = ids.map(|i| i.uid),
            gid = ids.map(|i| i.gid),
            root = %if root { p.root.display().to_string() } else { "unchanged".into() },
            max_files = self.nofile,
            max_memory_mib = p.max_memory_mib,
            "sandbox applied: no capabilities, no_new_privs, seccomp allow-list"
        );
        Ok(())
    }

    /// The clean end, after the server's teardown: have the unlinker remove the socket paths
    /// and wait until it did.
    pub fn finish(mut self) {
        if let Some(u) = self.unlinker.take() {
            u.finish();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Reached on an unwinding panic, after the server's own Drop tore it down.
        if let Some(u) = self.unlinker.take() {
            u.finish();
        }
    }
}

/// [`Sandbox::prepare`] then [`Sandbox::enter`], for a process with nothing to tear down
/// in between.
pub fn apply(p: &Policy) -> Result<Sandbox, SandboxError> {
    let mut s = Sandbox::prepare(p)?;
    s.enter(p)?;
    Ok(s)
}

/// Create `dir` mode 0000 if missing; check that it is a root-owned directory nobody else
/// can write and that it is empty.
fn prepare_root(dir: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o000))
            .map_err(|e| SandboxError::Sys(format!("chmod 0 {}", dir.display()), e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(SandboxError::Sys(format!("mkdir {}", dir.display()), e)),
    }
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| SandboxError::Sys(format!("stat {}", dir.display()), e))?;
    if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(SandboxError::Check(format!(
            "{} must be a directory owned by root that only root may write (it is mode {:o}, uid {})",
            dir.display(),
            m.mode() & 0o7777,
            m.uid()
        )));
    }
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| SandboxError::Sys(format!("reading {}", dir.display()), e))?;
    if entries.next().is_some() {
        return Err(SandboxError::Check(format!(
            "{} is the device models' empty root but it is not empty",
            dir.display()
        )));
    }
    Ok(())
}

fn open_fds() -> Result<u64, SandboxError> {
    // The highest open descriptor + 1 (RLIMIT_NOFILE bounds the numbers, not the count).
    let max = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| SandboxError::Sys("reading /proc/self/fd".into(), e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(2);
    Ok(max + 1)
}

fn vm_size() -> Result<u64, SandboxError> {
    let s = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SandboxError::Sys("reading /proc/self/status".into(), e))?;
    Ok(ProcStatus::parse(&s).vm_size_kib.unwrap_or(0) << 10)
}
