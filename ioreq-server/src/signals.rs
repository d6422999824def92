//! SIGTERM / SIGINT as a file descriptor in the event loop (so teardown runs in order).

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Block SIGTERM and SIGINT for this thread and return a signalfd delivering them.
/// SIGPIPE is ignored so that a vanished control client cannot kill the process.
pub fn signalfd() -> std::io::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    // SAFETY: SIG_IGN for SIGPIPE installs no Rust handler; always sound.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// Make the child of `cmd` start with no signal blocked and SIGTERM, SIGINT, SIGHUP and
/// SIGCHLD at their default action.
///
/// A process that takes its signals from a signalfd blocks them, and a child inherits the
/// blocked mask and ignored signals across fork and exec (signal(7), "Signal mask and pending
/// signals"); `std::process::Command` does not reset the mask. A child that relies on SIGCHLD
/// then waits forever: on the rig `xl destroy` run by pvh-dm never returned, with its
/// destroyer child a zombie, because libxl learns of that child's exit from a SIGCHLD handler
/// (tools/libs/light/libxl_fork.c, `libxl_sigchld_owner_libxl`).
pub fn with_default_signals(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // The closure runs in the forked child before exec, where only async-signal-safe
    // functions may be called.
    // SAFETY: it calls only sigemptyset, sigprocmask and sigaction (nix's thin wrappers, no
    // allocation), all async-signal-safe (signal-safety(7)); it touches no shared memory.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            for s in [
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGHUP,
                Signal::SIGCHLD,
            ] {
                sigaction(s, &dfl)?;
            }
            Ok(())
        })
    }
}
