//! pm-trap: the ACPI PM1a/PM1b event and control registers, the reset register and the
//! hardware-reduced sleep registers of a Xen guest (or of the hardware domain), emulated as a
//! chipset does, so that ACPI S5 power-off, S4, reboot (and S3 where allowed) work through the
//! guest's native ACPI code and become `XEN_DMOP_remote_shutdown` requests.
//!
//! - [`acpi`]: the ACPI reader (FADT of every revision, an AML namespace walker for \_S3/\_S4/\_S5);
//!   [`acpi::inspect_dir`] is the entry point, [`acpi::AcpiInfo`] the result.
//! - [`cli`]: the binary's command line.
//! - [`config`]: the `[pm_trap]` TOML section ([`PmTrapConfig`]) and the resolved register
//!   layout ([`TrapSetup`]); [`from_acpi`] builds the hardware-domain layout.
//! - [`device`]: [`PmTrap`], the [`ioreq_server::device::Device`] implementation.
//! - [`regs`]: the register bit fields, as data, with their ACPI spec sections.
//!
//! ```no_run
//! use pm_trap::{PmTrap, PmTrapConfig};
//! let cfg = PmTrapConfig::from_guest_toml("domid = 5\n[pm_trap]\nmode = \"guest\"\n")?;
//! let device = PmTrap::new(cfg.setup()?)?;
//! # Ok::<(), pm_trap::ConfigError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod cli;
pub mod config;
pub mod device;
pub mod regs;

pub use acpi::{inspect_dir, AcpiError, AcpiInfo};
pub use config::{
    from_acpi, ConfigError, Mode, PmTrapConfig, TrapSetup, GUEST_S3, GUEST_S4, GUEST_S5,
};
pub use device::{PmTrap, SleepState};
