//! The command line of the `pci-host-bridge` binary, here so that its manual page can be
//! generated from the same definitions (`man` crate); the binary parses [`Cli`].

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use ioreq_server::cli::{CommonArgs, RunOrSubcommand};

/// The command line of `pci-host-bridge`.
#[derive(Parser)]
#[command(
    name = "pci-host-bridge",
    version,
    about = "A PCI host bridge with passed-through functions for a Xen PVH guest",
    long_about = "Serves a host bridge at 00:00.0 and each [[pci.device]] of the guest config at its slot: \
                  config space through Xen's CF8/CFC decoding (XEN_DMOP_IO_RANGE_PCI) and an ECAM window, \
                  with the registers that are the guest's, the device's or ours kept apart by a table. \
                  BARs are virtual; enabling decode maps them into the guest (MSI-X table and PBA pages stay \
                  trapped). `list` shows the host's PCI functions."
)]
pub struct Cli {
    /// `run`, [`Cmd`], or `run`'s arguments alone.
    #[command(flatten)]
    pub args: RunOrSubcommand<Cmd, RunArgs>,
}

/// Subcommands besides `run`.
#[derive(Subcommand)]
pub enum Cmd {
    /// The host's PCI functions as a tree (PF -> VFs): IDs and names, driver, IOMMU group or
    /// assignability, and which a config already passes through. Read-only.
    List {
        /// Print JSON instead of a tree.
        #[arg(long)]
        json: bool,
        /// Mark the functions this guest config passes through.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// sysfs root (for tests).
        #[arg(long, default_value = "/sys", hide = true)]
        sysfs: PathBuf,
    },
    /// Hand the configured functions back to dom0 after a pci-host-bridge for this guest died
    /// (SIGKILL, a crash) and its domain was destroyed: Xen then holds them quarantined in
    /// dom_io. Does what the bridge's own teardown would have done for a dead guest: Bus Master
    /// off, reset, PHYSDEVOP_release_msix, XEN_DOMCTL_deassign_device from DOMID_IO, decode
    /// off, dom0's driver re-probed. Refuses while the domain exists. `pvh-dm` runs it when it
    /// sees the bridge die.
    Reclaim(RunArgs),
}

/// Arguments of `run` and `reclaim`.
#[derive(Args)]
pub struct RunArgs {
    /// What every device-model process takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Internal: serve as the worker of a pci-host-bridge broker, whose socket is this
    /// process's standard input. A bridge with passed-through functions starts its own
    /// worker so (`pci_host_bridge::broker`); not for use by hand.
    #[arg(long, hide = true)]
    pub broker_worker: bool,
}

/// The `clap` command the binary parses (for manual pages and completions).
pub fn command() -> clap::Command {
    Cli::command()
}
