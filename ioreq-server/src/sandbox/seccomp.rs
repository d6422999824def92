//! The seccomp programs: the serving loop's allow-list (with its argument checks), the
//! refused path lookups, and the helpers that compile a rule table into BPF.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule,
};

use super::{sys, SandboxError};
use xen_abi::*;

fn target_arch() -> Result<seccompiler::TargetArch, SandboxError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Seccomp(e.to_string()))
}

pub(super) fn compile(
    rules: Vec<(i64, Vec<SeccompRule>)>,
    what: &str,
) -> Result<BpfProgram, SandboxError> {
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

/// One rule: all of `conds` hold.
fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conds).map_err(|e| SandboxError::Seccomp(e.to_string()))
}

/// One rule per value: argument `arg` equal to any of `values`.
fn any_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SandboxError> {
    values
        .iter()
        .map(|v| rule(vec![cond(arg, Len::Dword, Op::Eq, *v)?]))
        .collect()
}

/// One rule: argument `arg` has none of the bits of `mask`.
fn none_of(arg: u8, mask: u64) -> Result<Vec<SeccompRule>, SandboxError> {
    Ok(vec![rule(vec![cond(
        arg,
        Len::Dword,
        Op::MaskedEq(mask),
        0,
    )?])?])
}

/// One rule: argument `arg` has all of the bits of `mask`.
fn all_of(arg: u8, len: Len, mask: u64) -> Result<Vec<SeccompRule>, SandboxError> {
    Ok(vec![rule(vec![cond(arg, len, Op::MaskedEq(mask), mask)?])?])
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

/// The allow-list's rows: `(name, (number, argument rules), why)`.
type Named = Vec<(&'static str, (i64, Vec<SeccompRule>), &'static str)>;

/// One row of the allow-list: `allow!(SYS_x, why)` lets every call of `x` through,
/// `allow!(SYS_x if RULES, why)` only those that match one of RULES. The row's name is the
/// number's without `SYS_`.
macro_rules! allow {
    ($nr:ident, $why:expr) => {
        allow!($nr if Vec::new(), $why)
    };
    ($nr:ident if $rules:expr, $why:expr) => {
        (&stringify!($nr)[4..], ($nr, $rules), $why)
    };
}

/// What every filtered process of the project needs whatever it serves: memory, threads,
/// time, signals, its sockets' messages, logging, the end.
fn process_rules_named() -> Result<Named, SandboxError> {
    use libc::*;
    let fd_flags = [F_GETFL, F_SETFL, F_GETFD, F_SETFD].map(|c| c as u64);
    #[rustfmt::skip]
    let v: Named = vec![
        // Event channels (evtchn read/write, eventfds on sim), signalfd, sockets' lines,
        // stderr logging.
        allow!(SYS_read,            "evtchn/eventfd/signalfd/socket reads"),
        allow!(SYS_write,           "evtchn unmask, eventfd notify, replies, stderr"),
        allow!(SYS_close,           "closing clients and passed descriptors"),
        // Guest pages (data_is_ptr) and frames: privcmd VMAs on Xen, memfd pages on sim;
        // allocation. Never executable.
        allow!(SYS_mmap if none_of(2, PROT_EXEC as u64)?,
                                    "privcmd/memfd pages, allocation (no PROT_EXEC)"),
        allow!(SYS_mprotect if none_of(2, PROT_EXEC as u64)?,
                                    "thread stack guard (no PROT_EXEC)"),
        allow!(SYS_munmap,          "unmapping pages, allocation"),
        allow!(SYS_mremap,          "allocation (realloc)"),
        allow!(SYS_madvise,         "allocation, thread exit"),
        allow!(SYS_brk,             "allocation"),
        allow!(SYS_poll,            "an INTx source's resample check (irq_line ack_resample), the bridge's broker and worker"),
        allow!(SYS_ppoll,           "as poll"),
        // Unix sockets: control and irq_line clients, xen-sim's socket, the broker's pair.
        allow!(SYS_recvmsg,         "irq_line frames + fds, xen-sim replies + fds, broker requests"),
        allow!(SYS_sendmsg,         "irq_line frames, xen-sim requests, broker replies"),
        allow!(SYS_recvfrom,        "socket reads (std's read on a socket)"),
        allow!(SYS_sendto,          "socket writes"),
        allow!(SYS_fcntl if any_of(1, &fd_flags)?,
                                    "F_GETFL/F_SETFL/F_GETFD/F_SETFD"),
        // Time, identity.
        allow!(SYS_clock_gettime,   "Instant/SystemTime (vDSO fallback)"),
        allow!(SYS_clock_nanosleep, "sleeping"),
        allow!(SYS_nanosleep,       "sleeping"),
        allow!(SYS_getpid,          "abort()"),
        allow!(SYS_gettid,          "abort(), threads"),
        allow!(SYS_getrandom,       "HashMap keys"),
        allow!(SYS_getcwd,          "printing a backtrace (\"/\" in the empty root)"),
        // Threads (the loop may start a waker thread after the filter is in).
        allow!(SYS_clone if all_of(0, Len::Qword, CLONE_THREAD as u64)?,
                                    "threads only (CLONE_THREAD)"),
        // clone3's flags sit in a struct a filter cannot read, so its answer is ENOSYS
        // ([`NOSYS_CALLS`]); glibc's pthread_create then falls back to clone, checked above.
        allow!(SYS_clone3,          "answered ENOSYS by its own program (NOSYS_CALLS)"),
        allow!(SYS_futex,           "locks, joins"),
        allow!(SYS_set_robust_list, "new threads"),
        allow!(SYS_rseq,            "new threads"),
        allow!(SYS_sigaltstack,     "std's stack-overflow handler per thread"),
        allow!(SYS_sched_yield,     "spinning locks"),
        allow!(SYS_sched_getaffinity,
                                    "glibc's malloc sizing its arenas in a new thread"),
        allow!(SYS_prctl if any_of(0, &[PR_SET_NAME as u64])?,
                                    "PR_SET_NAME (thread names) only"),
        // Signals and the end.
        allow!(SYS_rt_sigprocmask,  "thread creation, abort()"),
        allow!(SYS_rt_sigaction,    "abort()"),
        allow!(SYS_rt_sigreturn,    "returning from a handler"),
        allow!(SYS_tgkill if any_of(2, &[SIGABRT as u64])?,
                                    "abort() only (SIGABRT)"),
        allow!(SYS_restart_syscall, "restarted waits"),
        allow!(SYS_wait4,           "reaping the unlinker, the broker's worker"),
        allow!(SYS_exit,            "thread exit"),
        allow!(SYS_exit_group,      "process exit"),
    ];
    Ok(v)
}

/// A process's own rows with [`process_rules_named`]'s, sorted by name.
fn with_process_rules(mut own: Named) -> Result<Named, SandboxError> {
    own.extend(process_rules_named()?);
    own.sort_by_key(|(n, _, _)| *n);
    Ok(own)
}

fn serving_rules_named() -> Result<Named, SandboxError> {
    use libc::*;
    // getsockopt: the peer's credentials and groups, for socket access, and nothing else.
    let peer_identity = |opt: c_int| {
        rule(vec![
            cond(1, Len::Dword, Op::Eq, SOL_SOCKET as u64)?,
            cond(2, Len::Dword, Op::Eq, opt as u64)?,
        ])
    };
    let peer_identity = vec![
        peer_identity(SO_PEERCRED)?,
        peer_identity(crate::socket_access::SO_PEERGROUPS)?,
    ];
    // The serving loop's own rows, then what every process needs.
    #[rustfmt::skip]
    let v: Named = vec![
        // privcmd and evtchn requests (only these numbers).
        allow!(SYS_ioctl if any_of(1, &SERVING_IOCTLS)?,
               "privcmd DM_OP/MMAPBATCH_V2/MMAP_RESOURCE, evtchn NOTIFY/UNBIND/RESET, FIONBIO"),
        // The event loop.
        allow!(SYS_epoll_ctl,       "(de)registering descriptors"),
        allow!(SYS_epoll_wait,      "the loop's wait"),
        allow!(SYS_epoll_pwait,     "the loop's wait"),
        allow!(SYS_timerfd_settime, "arming the retry timer"),
        // Control and irq_line connections, and who is at the other end.
        allow!(SYS_accept4,         "control/irq_line connections"),
        allow!(SYS_getsockopt if peer_identity,
                                    "SO_PEERCRED and SO_PEERGROUPS only (socket access)"),
        allow!(SYS_geteuid,         "SO_PEERCRED check"),
        allow!(SYS_getuid,          "identity"),
        allow!(SYS_unlink,          "teardown's remove_file (fails harmlessly in the root)"),
        allow!(SYS_unlinkat,        "teardown's remove_file"),
    ];
    with_process_rules(v)
}

/// The ioctl requests the bridge's broker issues at run time: passthrough hypercalls on its
/// unrestricted privcmd handle, and a VFIO function's INTx unmask and reset (linux/vfio.h:
/// `VFIO_DEVICE_SET_IRQS` = `_IO(VFIO_TYPE, VFIO_BASE + 10)`, `VFIO_DEVICE_RESET` = `+ 11`,
/// with `VFIO_TYPE` ';' and `VFIO_BASE` 100).
pub const BROKER_IOCTLS: [u64; 3] = [IOCTL_PRIVCMD_HYPERCALL, 0x3B6E, 0x3B6F];

/// The broker's rows: what it does for the worker and at hand-back, on top of what every
/// process needs. It stays root (sysfs `enable` checks CAP_SYS_ADMIN on each write, and it
/// opens `reset`, `driver/unbind` and `drivers_probe` by path when it needs them), so the
/// filter is what narrows it: no exec, no new process, no socket, no ptrace, no mount, no
/// module, no signal but SIGTERM to its own worker.
fn broker_rules_named(worker: libc::pid_t) -> Result<Named, SandboxError> {
    use libc::*;
    let to_worker = vec![rule(vec![
        cond(0, Len::Dword, Op::Eq, worker as u32 as u64)?,
        cond(1, Len::Dword, Op::Eq, SIGTERM as u64)?,
    ])?];
    #[rustfmt::skip]
    let v: Named = vec![
        allow!(SYS_ioctl if any_of(1, &BROKER_IOCTLS)?,
               "privcmd HYPERCALL (passthrough domctls, physdev ops), VFIO SET_IRQS/RESET"),
        // The host functions' sysfs files (config, resourceN, enable, reset, driver/unbind,
        // drivers_probe), /dev/uioN, the hypercall buffer.
        allow!(SYS_openat,          "sysfs files by path, /dev/xen/hypercall on first use"),
        allow!(SYS_pread64,         "config space, I/O BARs"),
        allow!(SYS_pwrite64,        "config space, I/O BARs"),
        allow!(SYS_lseek,           "file reads"),
        allow!(SYS_fstat,           "file reads (size hint)"),
        allow!(SYS_statx,           "file reads (size hint)"),
        allow!(SYS_newfstatat,      "file reads (size hint)"),
        allow!(SYS_readlink,        "a function's driver link"),
        allow!(SYS_readlinkat,      "a function's driver link"),
        allow!(SYS_getdents64,      "a function's uio directory"),
        allow!(SYS_mlock,           "the hypercall buffer where /dev/xen/hypercall is missing"),
        // The snapshot backend (xen-sim's host device), which the broker runs as it runs
        // sysfs: its config mirror, and the socket that hands a test its INTx eventfd.
        allow!(SYS_rename,          "the snapshot backend's config mirror: a temp file renamed over it"),
        allow!(SYS_accept4,         "the snapshot backend's INTx eventfd socket"),
        allow!(SYS_kill if to_worker,
                                    "SIGTERM to its own worker only"),
    ];
    with_process_rules(v)
}

/// The broker's allow-list, by system call (see [`apply_broker_filter`]).
pub fn broker_allowed_syscalls(worker: libc::pid_t) -> Vec<(&'static str, &'static str)> {
    broker_rules_named(worker)
        .map(|v| v.into_iter().map(|(n, _, why)| (n, why)).collect())
        .unwrap_or_default()
}

/// Install the broker's allow-list on every thread of the calling process (the bridge's
/// privileged broker, once its worker runs), with `PR_SET_NO_NEW_PRIVS`: anything else kills
/// the process (SIGSYS), which its supervisor reports, and the worker then ends with it
/// (`--exit-with-parent`). `worker`: the only process it may signal, and only with SIGTERM.
pub fn apply_broker_filter(worker: libc::pid_t) -> Result<(), SandboxError> {
    let rules = broker_rules_named(worker)?
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    let programs = [
        errno_program(&NOSYS_CALLS, libc::ENOSYS, "ENOSYS filter")?,
        compile(rules, "broker filter")?,
    ];
    nix::sys::prctl::set_no_new_privs().map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    for f in &programs {
        seccompiler::apply_filter_all_threads(f)
            .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
    }
    Ok(())
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

/// System calls answered ENOSYS without being made: `clone3`, whose flags (a new process or
/// a thread) are in a struct behind a pointer that a seccomp filter cannot read. glibc's
/// `pthread_create` falls back to `clone` on ENOSYS, whose flags the allow-lists check
/// (`CLONE_THREAD` only), so threads still start and no new process does (Firecracker answers
/// clone3 the same way).
pub const NOSYS_CALLS: [(&str, i64); 1] = [("clone3", libc::SYS_clone3)];

/// A program that answers `calls` with `errno` and allows everything else; installed beside
/// an allow-list, the stricter answer wins (seccomp(2), "the return value ... with the
/// highest precedence").
fn errno_program(
    calls: &[(&str, i64)],
    errno: i32,
    what: &str,
) -> Result<BpfProgram, SandboxError> {
    let f = SeccompFilter::new(
        calls.iter().map(|(_, n)| (*n, Vec::new())).collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        target_arch()?,
    )
    .map_err(|e| SandboxError::Seccomp(format!("{what}: {e}")))?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Seccomp(format!("{what}: {e}")))
}

/// The seccomp programs a serving device model runs under, in the order they are installed;
/// the last is the allow-list ([`allowed_syscalls`], each with its argument checks, plus
/// [`REFUSED_LOOKUPS`]), and anything it does not list kills the process (SIGSYS). The first
/// answers [`REFUSED_LOOKUPS`] with EACCES, so those lookups fail instead of being made or
/// killing a process that is only printing its error; the second answers [`NOSYS_CALLS`] with
/// ENOSYS. The kernel runs all three and the stricter answer wins.
pub fn serving_filters() -> Result<[BpfProgram; 3], SandboxError> {
    let mut allow: Vec<(i64, Vec<SeccompRule>)> = serving_rules_named()?
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    allow.extend(REFUSED_LOOKUPS.iter().map(|(_, n)| (*n, Vec::new())));
    let allow = compile(allow, "serving filter")?;
    let refuse = errno_program(&REFUSED_LOOKUPS, libc::EACCES, "lookup filter")?;
    let nosys = errno_program(&NOSYS_CALLS, libc::ENOSYS, "ENOSYS filter")?;
    // In this order: seccompiler sets PR_SET_NO_NEW_PRIVS before each program, which the
    // allow-list does not allow once it is in.
    Ok([refuse, nosys, allow])
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
