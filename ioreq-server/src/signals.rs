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
