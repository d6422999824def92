//! `pvh-acpi`: write the guest's ACPI fragment (ssdt.aml, apic.aml, mcfg.aml) for one guest
//! config. Put the files under `kernel/firmware/acpi/` of an uncompressed cpio placed before the
//! guest's initrd (Linux `CONFIG_ACPI_TABLE_UPGRADE`).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use pvh_acpi::cli::Cli;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = cli.domid;
    let tables = pvh_acpi::generate_from_file(&cli.config, cli.vcpus)
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
