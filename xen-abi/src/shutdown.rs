//! Why a domain shut down: Xen's `SHUTDOWN_*` codes (xen/include/public/sched.h) as one type,
//! for the device that asks for a shutdown and for the supervisor that reads it back.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::public::{
    SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT, SHUTDOWN_SOFT_RESET, SHUTDOWN_SUSPEND,
    SHUTDOWN_WATCHDOG,
};

/// A shutdown reason (xen/include/public/sched.h `SHUTDOWN_*`; libxl's `libxl_shutdown_reason`).
///
/// A device model asks only for the first four; Xen itself may report the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff` (0): the guest asked to be powered off (ACPI S5, or S4).
    Poweroff,
    /// `SHUTDOWN_reboot` (1): the guest asked for a reset.
    Reboot,
    /// `SHUTDOWN_suspend` (2): ACPI S3, only where the configuration allows it.
    Suspend,
    /// `SHUTDOWN_crash` (3).
    Crash,
    /// `SHUTDOWN_watchdog` (4): Xen's watchdog fired.
    Watchdog,
    /// `SHUTDOWN_soft_reset` (5).
    SoftReset,
    /// A code this crate does not name.
    Other(u32),
}

impl ShutdownReason {
    /// The reason for a `SHUTDOWN_*` number.
    pub fn from_code(code: u32) -> Self {
        match code {
            SHUTDOWN_POWEROFF => ShutdownReason::Poweroff,
            SHUTDOWN_REBOOT => ShutdownReason::Reboot,
            SHUTDOWN_SUSPEND => ShutdownReason::Suspend,
            SHUTDOWN_CRASH => ShutdownReason::Crash,
            SHUTDOWN_WATCHDOG => ShutdownReason::Watchdog,
            SHUTDOWN_SOFT_RESET => ShutdownReason::SoftReset,
            c => ShutdownReason::Other(c),
        }
    }

    /// The `SHUTDOWN_*` number.
    pub fn code(self) -> u32 {
        match self {
            ShutdownReason::Poweroff => SHUTDOWN_POWEROFF,
            ShutdownReason::Reboot => SHUTDOWN_REBOOT,
            ShutdownReason::Suspend => SHUTDOWN_SUSPEND,
            ShutdownReason::Crash => SHUTDOWN_CRASH,
            ShutdownReason::Watchdog => SHUTDOWN_WATCHDOG,
            ShutdownReason::SoftReset => SHUTDOWN_SOFT_RESET,
            ShutdownReason::Other(c) => c,
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Poweroff => write!(f, "poweroff"),
            ShutdownReason::Reboot => write!(f, "reboot"),
            ShutdownReason::Suspend => write!(f, "suspend"),
            ShutdownReason::Crash => write!(f, "crash"),
            ShutdownReason::Watchdog => write!(f, "watchdog"),
            ShutdownReason::SoftReset => write!(f, "soft_reset"),
            ShutdownReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in 0..8 {
            assert_eq!(ShutdownReason::from_code(c).code(), c);
        }
        assert_eq!(ShutdownReason::from_code(7), ShutdownReason::Other(7));
        assert_eq!(ShutdownReason::from_code(3), ShutdownReason::Crash);
    }
}
