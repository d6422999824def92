//! pvh-dm as a library: the pieces of the launcher (xl config parser, newc cpio writer,
//! xenstore client, validation, create with rollback, supervision), so that the integration
//! tests and other tools can use them. The binary is `src/main.rs`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
pub mod cpio;
pub mod create;
pub mod dm;
pub mod doctor;
pub mod kernel;
pub mod notify;
pub mod ops;
pub mod plan;
pub mod reap;
pub mod runtime;
pub mod xenstore;
pub mod xl;
pub mod xlcfg;

/// Exit codes (documented in `pvh-dm create --help` and the README).
pub mod exit {
    use crate::xl::ShutdownReason;

    /// The guest powered off (also after a stop request it obeyed); a subcommand succeeded.
    pub const OK: i32 = 0;
    /// Any other error (bad arguments to a subcommand, I/O, no such guest).
    pub const ERROR: i32 = 1;
    /// Command-line syntax (clap).
    pub const USAGE: i32 = 2;
    /// Validation refused the guest; nothing was changed.
    pub const REFUSED: i32 = 3;
    /// A create step failed; every earlier step was undone.
    pub const SETUP_FAILED: i32 = 4;
    /// The guest asked for a reboot.
    pub const REBOOT: i32 = 10;
    /// The guest crashed.
    pub const CRASH: i32 = 11;
    /// Xen's watchdog fired.
    pub const WATCHDOG: i32 = 12;
    /// Suspend, soft reset or another reason code.
    pub const OTHER_REASON: i32 = 13;
    /// The domain disappeared without a shutdown reason (destroyed from outside).
    pub const GONE: i32 = 14;
    /// A stop request (SIGTERM) was not obeyed in time: the domain was destroyed.
    pub const FORCED: i32 = 15;
    /// A device model died: the domain was destroyed.
    pub const DM_DIED: i32 = 20;
    /// The xenstore connection was lost: the supervisor can no longer see the domain's end,
    /// so it destroyed the domain and stopped the device models.
    pub const LOST_XENSTORE: i32 = 21;

    /// The exit code for a shutdown reason.
    pub fn for_reason(r: ShutdownReason) -> i32 {
        match r {
            ShutdownReason::Poweroff => OK,
            ShutdownReason::Reboot => REBOOT,
            ShutdownReason::Crash => CRASH,
            ShutdownReason::Watchdog => WATCHDOG,
            _ => OTHER_REASON,
        }
    }
}

/// "exited with status N" / "was killed by signal SIGKILL".
pub fn describe_status(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = st.code() {
        format!("exited with status {c}")
    } else if let Some(s) = st.signal() {
        match nix::sys::signal::Signal::try_from(s) {
            Ok(sig @ nix::sys::signal::Signal::SIGSYS) => format!(
                "was killed by signal {sig} (a system call outside its seccomp allow-list; the \
                 kernel's audit log names it)"
            ),
            Ok(sig) => format!("was killed by signal {sig}"),
            Err(_) => format!("was killed by signal {s}"),
        }
    } else {
        format!("ended ({st})")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn describe_status_names_the_signal_and_explains_sigsys() {
        let st = |raw| super::describe_status(std::process::ExitStatus::from_raw(raw));
        assert_eq!(st(3 << 8), "exited with status 3");
        assert_eq!(st(9), "was killed by signal SIGKILL");
        let sys = st(nix::sys::signal::Signal::SIGSYS as i32);
        assert!(
            sys.starts_with("was killed by signal SIGSYS") && sys.contains("seccomp"),
            "{sys}"
        );
    }
}
