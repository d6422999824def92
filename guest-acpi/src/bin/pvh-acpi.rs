//! `pvh-acpi`: write the guest's ACPI fragment (ssdt.aml, apic.aml, mcfg.aml) for one guest
//! config. Put the files under `kernel/firmware/acpi/` of an uncompressed cpio placed before the
//! guest's initrd (Linux `CONFIG_ACPI_TABLE_UPGRADE`).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Generate the guest ACPI tables (SSDT with \_Sx and the PCI root, MADT with the IOAPIC,
/// MCFG) from the per-guest TOML config the device models read.
#[derive(Parser)]
#[command(name = "pvh-acpi", version)]
struct Cli {
    /// The guest's config file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Output directory (created if missing).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: PathBuf,
    /// vCPUs libxl lists in its MADT (the guest's `maxvcpus`); default: the config's `vcpus`,
    /// else 1.
    #[arg(long)]
    vcpus: Option<u32>,
    /// Accepted for symmetry with the device models (the tables do not depend on it).
    #[arg(long)]
    domid: Option<u16>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = cli.domid;
    let tables = guest_acpi::generate_from_file(&cli.config, cli.vcpus)
        .with_context(|| format!("generating ACPI tables from {}", cli.config.display()))?;
    for w in &tables.warnings {
        eprintln!("pvh-acpi: warning: {w}");
    }
    for path in tables.write_dir(&cli.out)? {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("{} ({len} bytes)", path.display());
    }
    Ok(())
}
