//! The command line of the `ioapic` binary, here so that its manual page can be generated
//! from the same definitions (`man` crate); the binary parses [`Cli`].

use std::path::PathBuf;

use clap::Parser;
use ioreq_server::cli::CommonArgs;

/// The command line of `ioapic`.
#[derive(Parser)]
#[command(
    name = "ioapic",
    version,
    about = "An IOAPIC for a Xen PVH guest that delivers its pins as MSIs",
    long_about = "Emulates one IOAPIC (IOREGSEL/IOWIN/EOI, redirection table, Remote IRR) in an MMIO window \
                  ([ioapic] base, default 0xFEC00000). Level-triggered pins are injected as edge MSIs so that \
                  the guest EOIs the IOAPIC explicitly (Xen forwards no LAPIC EOI to device models). Interrupt \
                  sources connect to [ioapic] socket with the irq_line protocol. The control socket answers \
                  status, snapshot and restore. A guest with no INTx device needs no ioapic."
)]
pub struct Cli {
    /// What every device-model process takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Start from a snapshot (JSON, as returned by the control socket's `snapshot`), e.g. on
    /// the destination of a live migration.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
}

/// The `clap` command the binary parses (for manual pages and completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
