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

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule,
};
use tracing::{info, warn};

use xen_abi::*;

/// The user whose uid plus the domid is the default per-guest uid, and whose gid is the
/// default gid: the name libxl uses for `dm_restrict` (Xen 4.17
/// tools/libs/light/libxl_internal.h:4795, `LIBXL_QEMU_USER_RANGE_BASE`; looked up at
/// tools/libs/light/libxl_dm.c:191, uid = its uid + domid at :201, gid = its gid at :220-221).
pub const RANGE_BASE_USER: &str = "xen-qemuuser-range-base";

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

/// Who the process becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    /// uid (real, effective, saved).
    pub uid: u32,
    /// gid (real, effective, saved); no supplementary groups.
    pub gid: u32,
}

/// The `--user` argument: `NAME` or `UID[:GID]`, or the default scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSpec {
    /// `xen-qemuuser-range-base`'s uid + domid, its gid.
    RangeBase,
    /// A user name (its uid and primary gid); `:GID` may follow.
    Name(String, Option<u32>),
    /// A numeric uid; the gid is `GID`, else the uid's primary gid if it has a passwd entry,
    /// else equal to the uid.
    Numeric(u32, Option<u32>),
}

impl std::str::FromStr for UserSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (u, g) = match s.split_once(':') {
            Some((u, g)) => (
                u,
                Some(
                    g.parse::<u32>()
                        .map_err(|_| format!("{s:?}: the GID after ':' must be a number"))?,
                ),
            ),
            None => (s, None),
        };
        if u.is_empty() {
            return Err("empty user".into());
        }
        Ok(match u.parse::<u32>() {
            Ok(uid) => UserSpec::Numeric(uid, g),
            Err(_) => UserSpec::Name(u.to_string(), g),
        })
    }
}

/// What the per-guest user resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Switch to these ids.
    Switch(Ids),
    /// Keep uid 0 (all capabilities are still dropped): only on the sim transport when the
    /// default scheme's user does not exist; the reason is logged.
    KeepRoot(String),
}

/// The base uid Xen's documentation suggests for [`RANGE_BASE_USER`]
/// (docs/features/qemu-deprivilege.pandoc:48-51 in Xen 4.17: "adduser --system --uid 131072
/// --group --no-create-home xen-qemuuser-range-base"; 2^17, with the 32752 uids after it free
/// for the domids).
pub const SUGGESTED_BASE_UID: u32 = 131072;

fn no_range_base_user() -> String {
    format!(
        "the per-guest user cannot be determined: user {RANGE_BASE_USER} does not exist and no --user was given. \
         Create it as Xen's dm_restrict expects (each guest's device models run as its uid + the domid, with its gid; \
         keep the {SUGGESTED_BASE_UID}..{SUGGESTED_BASE_UID}+32752 uids otherwise unused), e.g. \
         `adduser --system --uid {SUGGESTED_BASE_UID} --group --no-create-home {RANGE_BASE_USER}` \
         (or `groupadd -r -g {SUGGESTED_BASE_UID} {RANGE_BASE_USER} && useradd -r -M -u {SUGGESTED_BASE_UID} -g {SUGGESTED_BASE_UID} -d /nonexistent -s /usr/sbin/nologin {RANGE_BASE_USER}`), \
         or pass --user NAME|UID[:GID], or --no-sandbox"
    )
}

/// Resolve `spec` for guest `domid`. `sim` says whether the transport is xen-sim: there a
/// missing `xen-qemuuser-range-base` keeps uid 0 (with everything else of the sandbox) instead
/// of failing, so that a fresh machine runs the simulated guests; on Xen it is an error.
/// Reads the user database: call before the sandbox is applied (and before setup, so that a
/// bad `--user` changes nothing in Xen).
pub fn resolve_user(spec: &UserSpec, domid: DomId, sim: bool) -> Result<Identity, SandboxError> {
    use nix::unistd::{Uid, User};
    let lookup = |what: &str, r: nix::Result<Option<User>>| {
        r.map_err(|e| SandboxError::User(format!("looking up {what}: {e}")))
    };
    Ok(Identity::Switch(match spec {
        UserSpec::RangeBase => match lookup(RANGE_BASE_USER, User::from_name(RANGE_BASE_USER))? {
            Some(base) => {
                let uid = base
                    .uid
                    .as_raw()
                    .checked_add(u32::from(domid))
                    .ok_or_else(|| SandboxError::User("uid overflow".into()))?;
                // libxl refuses a uid that belongs to another user (libxl_dm.c:202-216).
                if let Some(other) =
                    lookup(&format!("uid {uid}"), User::from_uid(Uid::from_raw(uid)))?
                {
                    if other.name != RANGE_BASE_USER {
                        return Err(SandboxError::User(format!(
                            "wanted uid {uid} ({RANGE_BASE_USER} + {domid}) but that is user {}",
                            other.name
                        )));
                    }
                }
                Ids {
                    uid,
                    gid: base.gid.as_raw(),
                }
            }
            None if sim => return Ok(Identity::KeepRoot(no_range_base_user())),
            None => return Err(SandboxError::User(no_range_base_user())),
        },
        UserSpec::Name(n, g) => {
            let u = lookup(n, User::from_name(n))?.ok_or_else(|| {
                SandboxError::User(format!("--user {n}: no such user in the user database"))
            })?;
            Ids {
                uid: u.uid.as_raw(),
                gid: g.unwrap_or(u.gid.as_raw()),
            }
        }
        UserSpec::Numeric(uid, g) => {
            let gid = match g {
                Some(g) => *g,
                None => lookup(&format!("uid {uid}"), User::from_uid(Uid::from_raw(*uid)))?
                    .map(|u| u.gid.as_raw())
                    .unwrap_or(*uid),
            };
            Ids { uid: *uid, gid }
        }
    }))
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
    filters: [BpfProgram; 2],
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

/// The fields of `/proc/PID/status` the sandbox is judged by.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcStatus {
    /// Effective uid (second field of `Uid:`).
    pub uid: Option<u32>,
    /// `NoNewPrivs:`.
    pub no_new_privs: Option<u32>,
    /// `Seccomp:` (0 none, 1 strict, 2 filter).
    pub seccomp: Option<u32>,
    /// `CapEff:`.
    pub cap_eff: Option<u64>,
    /// `VmSize:` in KiB.
    #[serde(skip)]
    pub vm_size_kib: Option<u64>,
}

impl ProcStatus {
    /// Parse the text of a `/proc/PID/status` file.
    pub fn parse(text: &str) -> ProcStatus {
        let mut s = ProcStatus::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let mut f = v.split_whitespace();
            match k {
                "Uid" => s.uid = f.nth(1).and_then(|x| x.parse().ok()),
                "NoNewPrivs" => s.no_new_privs = f.next().and_then(|x| x.parse().ok()),
                "Seccomp" => s.seccomp = f.next().and_then(|x| x.parse().ok()),
                "CapEff" => s.cap_eff = f.next().and_then(|x| u64::from_str_radix(x, 16).ok()),
                "VmSize" => s.vm_size_kib = f.next().and_then(|x| x.parse().ok()),
                _ => {}
            }
        }
        s
    }

    /// Read `/proc/PID/status`.
    pub fn read(pid: u32) -> std::io::Result<ProcStatus> {
        Ok(Self::parse(&std::fs::read_to_string(format!(
            "/proc/{pid}/status"
        ))?))
    }
}

// capget/capset (capabilities(7)); version 3: two 32-bit words per set.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// effective, permitted, inheritable (64 bits each).
fn capabilities() -> Result<[u64; 3], SandboxError> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget writes two CapData structs (version 3) into `d`, which has room for them;
    // `h` is a valid header for this thread (pid 0).
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) };
    if r != 0 {
        return Err(SandboxError::Sys(
            "capget".into(),
            std::io::Error::last_os_error(),
        ));
    }
    let w = |f: fn(&CapData) -> u32| u64::from(f(&d[0])) | (u64::from(f(&d[1])) << 32);
    Ok([w(|c| c.effective), w(|c| c.permitted), w(|c| c.inheritable)])
}

fn clear_capabilities() -> Result<(), SandboxError> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let d = [CapData::default(); 2];
    // SAFETY: capset reads two CapData structs (version 3) from `d`; `h` names this thread.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) };
    if r != 0 {
        return Err(SandboxError::Sys(
            "capset (clear all)".into(),
            std::io::Error::last_os_error(),
        ));
    }
    // No ambient capabilities either (PR_CAP_AMBIENT_CLEAR_ALL).
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Ok(())
}

fn target_arch() -> Result<seccompiler::TargetArch, SandboxError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Seccomp(e.to_string()))
}

fn compile(rules: Vec<(i64, Vec<SeccompRule>)>, what: &str) -> Result<BpfProgram, SandboxError> {
    let f = SeccompFilter::new(
        rules.into_iter().collect(),
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        target_arch()?,
    )
    .map_err(|e| SandboxError::Seccomp(format!("{what}: {e}")))?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Seccomp(format!("{what}: {e}")))
}

fn cond(arg: u8, len: Len, op: Op, v: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, len, op, v).map_err(|e| SandboxError::Seccomp(e.to_string()))
}

/// One rule per value: argument `arg` equal to any of `values`.
fn any_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SandboxError> {
    values
        .iter()
        .map(|v| {
            SeccompRule::new(vec![cond(arg, Len::Dword, Op::Eq, *v)?])
                .map_err(|e| SandboxError::Seccomp(e.to_string()))
        })
        .collect()
}

/// One rule: argument `arg` has none of the bits of `mask`.
fn none_of(arg: u8, mask: u64) -> Result<Vec<SeccompRule>, SandboxError> {
    Ok(vec![SeccompRule::new(vec![cond(
        arg,
        Len::Dword,
        Op::MaskedEq(mask),
        0,
    )?])
    .map_err(|e| SandboxError::Seccomp(e.to_string()))?])
}

/// The ioctl requests the serving loop issues: DM ops, `data_is_ptr` guest pages and
/// resource frames on privcmd; notify, unbind and reset on evtchn; FIONBIO (std's
/// `set_nonblocking`, on an accepted irq_line connection).
pub const SERVING_IOCTLS: [u64; 7] = [
    IOCTL_PRIVCMD_DM_OP,
    IOCTL_PRIVCMD_MMAPBATCH_V2,
    IOCTL_PRIVCMD_MMAP_RESOURCE,
    IOCTL_EVTCHN_NOTIFY,
    IOCTL_EVTCHN_UNBIND,
    IOCTL_EVTCHN_RESET,
    libc::FIONBIO,
];

/// The serving loop's allow-list, by system call: the names, for the report and the docs.
pub fn allowed_syscalls() -> Vec<(&'static str, &'static str)> {
    serving_rules_named()
        .map(|v| v.into_iter().map(|(n, _, why)| (n, why)).collect())
        .unwrap_or_default()
}

type Named = Vec<(&'static str, (i64, Vec<SeccompRule>), &'static str)>;

fn serving_rules_named() -> Result<Named, SandboxError> {
    use libc::*;
    let plain = |n: c_long| (n, Vec::new());
    let mut v: Named = vec![
        // Event channels (evtchn read/write, eventfds on sim), signalfd, control clients'
        // lines, stderr logging.
        (
            "read",
            plain(SYS_read),
            "evtchn/eventfd/signalfd/control reads",
        ),
        (
            "write",
            plain(SYS_write),
            "evtchn unmask, eventfd notify, control replies, stderr",
        ),
        (
            "close",
            plain(SYS_close),
            "closing clients and passed descriptors",
        ),
        // privcmd and evtchn requests (only these numbers).
        (
            "ioctl",
            (SYS_ioctl, any_of(1, &SERVING_IOCTLS)?),
            "privcmd DM_OP/MMAPBATCH_V2/MMAP_RESOURCE, evtchn NOTIFY/UNBIND/RESET, FIONBIO",
        ),
        // Guest pages (data_is_ptr) and frames: privcmd VMAs on Xen, memfd pages on sim;
        // allocation. Never executable.
        (
            "mmap",
            (SYS_mmap, none_of(2, PROT_EXEC as u64)?),
            "privcmd/memfd pages, allocation (no PROT_EXEC)",
        ),
        (
            "mprotect",
            (SYS_mprotect, none_of(2, PROT_EXEC as u64)?),
            "thread stack guard (no PROT_EXEC)",
        ),
        ("munmap", plain(SYS_munmap), "unmapping pages, allocation"),
        ("mremap", plain(SYS_mremap), "allocation (realloc)"),
        ("madvise", plain(SYS_madvise), "allocation, thread exit"),
        ("brk", plain(SYS_brk), "allocation"),
        // The event loop.
        (
            "poll",
            plain(SYS_poll),
            "an INTx source's resample check (irq_line ack_resample), the bridge worker",
        ),
        ("ppoll", plain(SYS_ppoll), "as poll"),
        (
            "epoll_ctl",
            plain(SYS_epoll_ctl),
            "(de)registering descriptors",
        ),
        ("epoll_wait", plain(SYS_epoll_wait), "the loop's wait"),
        ("epoll_pwait", plain(SYS_epoll_pwait), "the loop's wait"),
        (
            "timerfd_settime",
            plain(SYS_timerfd_settime),
            "arming the retry timer",
        ),
        // Unix sockets: control and irq_line clients, xen-sim's socket.
        (
            "accept4",
            plain(SYS_accept4),
            "control/irq_line connections",
        ),
        (
            "getsockopt",
            (
                SYS_getsockopt,
                vec![
                    SeccompRule::new(vec![
                        cond(1, Len::Dword, Op::Eq, SOL_SOCKET as u64)?,
                        cond(2, Len::Dword, Op::Eq, SO_PEERCRED as u64)?,
                    ])
                    .map_err(|e| SandboxError::Seccomp(e.to_string()))?,
                    SeccompRule::new(vec![
                        cond(1, Len::Dword, Op::Eq, SOL_SOCKET as u64)?,
                        cond(
                            2,
                            Len::Dword,
                            Op::Eq,
                            crate::socket_access::SO_PEERGROUPS as u64,
                        )?,
                    ])
                    .map_err(|e| SandboxError::Seccomp(e.to_string()))?,
                ],
            ),
            "SO_PEERCRED and SO_PEERGROUPS only (socket access)",
        ),
        (
            "recvmsg",
            plain(SYS_recvmsg),
            "irq_line frames + fds, xen-sim replies + fds",
        ),
        (
            "sendmsg",
            plain(SYS_sendmsg),
            "irq_line frames, xen-sim requests",
        ),
        (
            "recvfrom",
            plain(SYS_recvfrom),
            "socket reads (std's read on a socket)",
        ),
        ("sendto", plain(SYS_sendto), "socket writes"),
        (
            "fcntl",
            (
                SYS_fcntl,
                any_of(
                    1,
                    &[
                        F_GETFL as u64,
                        F_SETFL as u64,
                        F_GETFD as u64,
                        F_SETFD as u64,
                    ],
                )?,
            ),
            "F_GETFL/F_SETFL/F_GETFD/F_SETFD",
        ),
        // Time, identity.
        (
            "clock_gettime",
            plain(SYS_clock_gettime),
            "Instant/SystemTime (vDSO fallback)",
        ),
        ("clock_nanosleep", plain(SYS_clock_nanosleep), "sleeping"),
        ("nanosleep", plain(SYS_nanosleep), "sleeping"),
        ("geteuid", plain(SYS_geteuid), "SO_PEERCRED check"),
        ("getuid", plain(SYS_getuid), "identity"),
        ("getpid", plain(SYS_getpid), "abort()"),
        ("gettid", plain(SYS_gettid), "abort(), threads"),
        ("getrandom", plain(SYS_getrandom), "HashMap keys"),
        (
            "getcwd",
            plain(SYS_getcwd),
            "printing a backtrace (\"/\" in the empty root)",
        ),
        // Threads (the loop may start a waker thread after the filter is in).
        (
            "clone",
            (
                SYS_clone,
                vec![SeccompRule::new(vec![cond(
                    0,
                    Len::Qword,
                    Op::MaskedEq(CLONE_THREAD as u64),
                    CLONE_THREAD as u64,
                )?])
                .map_err(|e| SandboxError::Seccomp(e.to_string()))?],
            ),
            "threads only (CLONE_THREAD)",
        ),
        (
            "clone3",
            plain(SYS_clone3),
            "threads (glibc's pthread_create)",
        ),
        ("futex", plain(SYS_futex), "locks, joins"),
        ("set_robust_list", plain(SYS_set_robust_list), "new threads"),
        ("rseq", plain(SYS_rseq), "new threads"),
        (
            "sigaltstack",
            plain(SYS_sigaltstack),
            "std's stack-overflow handler per thread",
        ),
        ("sched_yield", plain(SYS_sched_yield), "spinning locks"),
        (
            "sched_getaffinity",
            plain(SYS_sched_getaffinity),
            "glibc's malloc sizing its arenas in a new thread",
        ),
        (
            "prctl",
            (SYS_prctl, any_of(0, &[PR_SET_NAME as u64])?),
            "PR_SET_NAME (thread names) only",
        ),
        // Signals and the end.
        (
            "rt_sigprocmask",
            plain(SYS_rt_sigprocmask),
            "thread creation, abort()",
        ),
        ("rt_sigaction", plain(SYS_rt_sigaction), "abort()"),
        (
            "rt_sigreturn",
            plain(SYS_rt_sigreturn),
            "returning from a handler",
        ),
        (
            "tgkill",
            (SYS_tgkill, any_of(2, &[SIGABRT as u64])?),
            "abort() only (SIGABRT)",
        ),
        (
            "restart_syscall",
            plain(SYS_restart_syscall),
            "restarted waits",
        ),
        ("wait4", plain(SYS_wait4), "reaping the unlinker"),
        (
            "unlink",
            plain(SYS_unlink),
            "teardown's remove_file (fails harmlessly in the root)",
        ),
        ("unlinkat", plain(SYS_unlinkat), "teardown's remove_file"),
        ("exit", plain(SYS_exit), "thread exit"),
        ("exit_group", plain(SYS_exit_group), "process exit"),
    ];
    v.sort_by_key(|(n, _, _)| *n);
    Ok(v)
}

/// Path lookups a failing process may still attempt (std's backtrace printing reads
/// /proc/self/exe and the binary when RUST_BACKTRACE is set): answered EACCES without being
/// made, by [`serving_filters`]'s first program. Nothing resolves in the empty root anyway.
pub const REFUSED_LOOKUPS: [(&str, i64); 5] = [
    ("openat", libc::SYS_openat),
    ("open", libc::SYS_open),
    ("readlink", libc::SYS_readlink),
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
];

/// The seccomp programs a serving device model runs under, in the order they are installed.
/// The second is the allow-list ([`allowed_syscalls`], each with its argument checks, plus
/// [`REFUSED_LOOKUPS`]); anything else kills the process (SIGSYS). The first answers
/// [`REFUSED_LOOKUPS`] with EACCES and allows the rest; the kernel runs both and the stricter answer wins (seccomp(2), "the
/// return value ... with the highest precedence"), so those lookups fail instead of being made
/// or killing a process that is only printing its error.
pub fn serving_filters() -> Result<[BpfProgram; 2], SandboxError> {
    let mut allow: Vec<(i64, Vec<SeccompRule>)> = serving_rules_named()?
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    allow.extend(REFUSED_LOOKUPS.iter().map(|(_, n)| (*n, Vec::new())));
    let allow = compile(allow, "serving filter")?;
    let refuse = SeccompFilter::new(
        REFUSED_LOOKUPS
            .iter()
            .map(|(_, n)| (*n, Vec::new()))
            .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        target_arch()?,
    )
    .map_err(|e| SandboxError::Seccomp(format!("lookup filter: {e}")))?;
    let refuse: BpfProgram = refuse.try_into().map_err(|e: seccompiler::BackendError| {
        SandboxError::Seccomp(format!("lookup filter: {e}"))
    })?;
    // In this order: seccompiler sets PR_SET_NO_NEW_PRIVS before each program, which the
    // allow-list does not allow once it is in.
    Ok([refuse, allow])
}

/// Install [`serving_filters`] on every thread of the calling process, with
/// `PR_SET_NO_NEW_PRIVS` (seccomp(2) requires it or CAP_SYS_ADMIN).
pub fn apply_serving_filter() -> Result<(), SandboxError> {
    let fs = serving_filters()?;
    nix::sys::prctl::set_no_new_privs().map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    for f in &fs {
        seccompiler::apply_filter_all_threads(f)
            .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
    }
    Ok(())
}

fn unlinker_filter() -> Result<BpfProgram, SandboxError> {
    let p = |n: libc::c_long| (n, Vec::new());
    compile(
        vec![
            p(libc::SYS_read),
            p(libc::SYS_unlink),
            p(libc::SYS_exit),
            p(libc::SYS_exit_group),
            p(libc::SYS_restart_syscall),
        ],
        "unlinker filter",
    )
}

/// The root helper that removes the socket paths at the clean end (module documentation).
#[derive(Debug)]
struct Unlinker {
    pid: libc::pid_t,
    tx: OwnedFd,
}

impl Unlinker {
    fn spawn(paths: &[&PathBuf], name: &str, max_fd: u64) -> Result<Unlinker, SandboxError> {
        let cpaths: Vec<CString> = paths
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| SandboxError::Check("a socket path contains NUL".into()))?;
        // "unlink-NAME", cut to the 15 bytes of a comm (prctl(2) PR_SET_NAME): the prefix
        // survives the cut, so `ps` and the rig tell the helper from its process even for
        // pci-host-bridge, whose name alone fills the 15 bytes.
        let comm: Vec<u8> = format!("unlink-{name}").bytes().take(15).collect();
        let comm = CString::new(comm).unwrap_or_default();
        let filter = unlinker_filter()?;
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
        let max_fd = i32::try_from(max_fd).unwrap_or(i32::MAX);
        // SAFETY: fork in a process that may have other threads: the child only makes the
        // async-signal-safe system calls of `unlinker_child` (close, prctl, setpgid, seccomp, read,
        // unlink, _exit) on data prepared before the fork, and never returns.
        match unsafe { libc::fork() } {
            -1 => Err(SandboxError::Sys(
                "fork (the unlinker)".into(),
                std::io::Error::last_os_error(),
            )),
            0 => unlinker_child(rx.as_raw_fd(), &cpaths, &filter, max_fd, &comm),
            pid => {
                drop(rx);
                Ok(Unlinker { pid, tx })
            }
        }
    }

    fn finish(self) {
        let _ = nix::unistd::write(&self.tx, &[1]);
        drop(self.tx);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }
}

fn unlinker_child(
    rx: i32,
    paths: &[CString],
    filter: &BpfProgram,
    max_fd: i32,
    comm: &CString,
) -> ! {
    // SAFETY: runs in the forked child only: raw system calls on descriptors and buffers that
    // were prepared before the fork; no allocation, no lock.
    unsafe {
        for fd in 0..max_fd {
            if fd != rx {
                libc::close(fd);
            }
        }
        libc::prctl(libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0);
        // A process group of its own: a supervisor that kills the device model's group
        // (SIGKILL) must find the group empty once the device model is gone, not a zombie
        // helper waiting for init to reap it. The helper ends by itself when the pipe closes.
        libc::setpgid(0, 0);
        if seccompiler::apply_filter(filter).is_err() {
            libc::_exit(1);
        }
        let mut b = [0u8; 1];
        loop {
            let n = libc::read(rx, b.as_mut_ptr().cast(), 1);
            if n == 1 {
                for p in paths {
                    libc::unlink(p.as_ptr());
                }
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break;
        }
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_specs_parse() {
        assert_eq!("1000".parse(), Ok(UserSpec::Numeric(1000, None)));
        assert_eq!("1000:5".parse(), Ok(UserSpec::Numeric(1000, Some(5))));
        assert_eq!("qemu".parse(), Ok(UserSpec::Name("qemu".into(), None)));
        assert!("qemu:x".parse::<UserSpec>().is_err());
        assert!(":5".parse::<UserSpec>().is_err());
    }

    #[test]
    fn numeric_user_without_passwd_entry_gets_its_own_gid() {
        let id = resolve_user(&UserSpec::Numeric(3_999_999, None), 1, false).unwrap();
        assert_eq!(
            id,
            Identity::Switch(Ids {
                uid: 3_999_999,
                gid: 3_999_999
            })
        );
    }

    #[test]
    fn missing_range_base_is_an_error_on_xen_naming_the_user() {
        if nix::unistd::User::from_name(RANGE_BASE_USER)
            .ok()
            .flatten()
            .is_some()
        {
            return; // this machine has it; the error path is not reachable here
        }
        let e = resolve_user(&UserSpec::RangeBase, 3, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(RANGE_BASE_USER) && e.contains("useradd"), "{e}");
        assert!(matches!(
            resolve_user(&UserSpec::RangeBase, 3, true),
            Ok(Identity::KeepRoot(_))
        ));
    }

    #[test]
    fn status_fields_parse() {
        let s = ProcStatus::parse(
            "Name:\tx\nUid:\t0\t4242\t4242\t4242\nNoNewPrivs:\t1\nSeccomp:\t2\nCapEff:\t0000000000000000\nVmSize:\t  1234 kB\n",
        );
        assert_eq!(s.uid, Some(4242));
        assert_eq!(s.no_new_privs, Some(1));
        assert_eq!(s.seccomp, Some(2));
        assert_eq!(s.cap_eff, Some(0));
        assert_eq!(s.vm_size_kib, Some(1234));
    }

    #[test]
    fn filters_compile() {
        assert!(serving_filters().unwrap()[1].len() > 50);
        unlinker_filter().unwrap();
        assert!(allowed_syscalls().iter().any(|(n, _)| *n == "ioctl"));
        assert!(!allowed_syscalls().iter().any(|(n, _)| *n == "execve"));
    }
}
