//! The command line of the `pvh-acpi` binary, here so that its manual page can be generated
//! from the same definitions (`man` crate); the binary parses [`Cli`].

use std::path::PathBuf;

use clap::Parser;

/// Generate the guest ACPI tables (SSDT with \_Sx and the PCI root, MADT with the IOAPIC,
/// MCFG) from the per-guest TOML config the device models read.
#[derive(Parser)]
#[command(name = "pvh-acpi", version)]
pub struct Cli {
    /// The guest's config file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Output directory (created if missing).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// vCPUs libxl lists in its MADT (the guest's `maxvcpus`); default: the config's `vcpus`,
    /// else 1.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Accepted for symmetry with the device models (the tables do not depend on it).
    #[arg(long)]
    pub domid: Option<u16>,
}

/// The `clap` command the binary parses (for manual pages and completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
