//! The command line of the `pm-trap` binary, here so that its manual page can be generated
//! from the same definitions (`man` crate); the binary parses [`Cli`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ioreq_server::cli::{CommonArgs, RunOrSubcommand};

/// The command line of `pm-trap`.
#[derive(Parser)]
#[command(
    name = "pm-trap",
    version,
    about = "Trap ACPI PM1a/PM1b control and the reset register so a guest's native S5 power-off and reset work",
    long_about = "Serves the guest's PM1 event/control blocks and reset register as an ioreq server. \
                  On SLP_TYP|SLP_EN matching \\_S5 (or \\_S4) it asks the hypervisor to power the guest off; \
                  \\_S3 suspends only when allowed in the config; the reset value on the reset register reboots.\n\n\
                  Two modes ([pm_trap] mode): \"guest\" takes ports and sleep values from the config (defaults: \
                  Xen's PVH FADT, PM1a_EVT 0xB000, PM1a_CNT 0xB004, reset 0xCF9=6); \"hardware-domain\" reads \
                  everything from the host's ACPI tables (--host-acpi, default /sys/firmware/acpi/tables)."
)]
pub struct Cli {
    /// `run`, [`Cmd`], or `run`'s arguments alone.
    #[command(flatten)]
    pub args: RunOrSubcommand<Cmd, RunArgs>,
}

/// Subcommands besides `run`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Read FADT, DSDT and SSDTs of a directory and print the PM1 blocks, the reset register
    /// and the \_S3/\_S4/\_S5 values pm-trap would use.
    Inspect {
        /// Directory of tables: sysfs names (FACP, DSDT, SSDT1, ...) or acpixtract names
        /// (facp.dat, dsdt.dat, ssdt*.dat).
        #[arg(long, default_value = "/sys/firmware/acpi/tables")]
        acpi_dir: PathBuf,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
        /// Log filter (checksum mismatches are warnings).
        #[arg(long, env = "PVH_DM_LOG", default_value = "warn")]
        log: String,
    },
}

/// Arguments of `run`.
#[derive(Args)]
pub struct RunArgs {
    /// What every device-model process takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Hardware-domain mode: take everything from the host's ACPI tables in DIR (overrides
    /// the config's mode and acpi_dir).
    #[arg(long, value_name = "DIR")]
    pub host_acpi: Option<PathBuf>,
}

/// The `clap` command the binary parses (for manual pages and completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
