//! The command line of the `xen-sim` binary, here so that its manual page can be generated
//! from the same definitions (`man` crate); the binary parses [`Cli`].
// The doc comments are also the options' help text, which clap shows as written: a TOML
// section like `[sim]` there stays unescaped and is no link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The command line of `xen-sim`.
#[derive(Parser)]
#[command(
    name = "xen-sim",
    version,
    about = "A simulated Xen hypervisor speaking the real ioreq protocol",
    long_about = "xen-sim plays Xen's side of the ioreq-server protocol (ioreq pages, event channels, DM ops, \
                  CF8/CFC decoding, server selection, the null handler) for device-model processes started \
                  with `--transport sim`, so they can be run and tested on a machine without Xen."
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub cmd: Cmd,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, global = true, env = "PVH_DM_LOG", default_value = "warn")]
    pub log: String,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Start xen-sim, each device model as its own process, and a scripted guest that
    /// enumerates PCI, takes an INTx interrupt through the IOAPIC and powers off through ACPI;
    /// then print what happened.
    Demo {
        /// Print one JSON object instead of a human-readable summary.
        #[arg(long)]
        json: bool,
        /// Directory holding the device-model binaries (default: next to xen-sim).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Keep the scratch directory (configs, sockets) for inspection.
        #[arg(long)]
        keep: bool,
    },
    /// Run a simulated domain and serve device models until SIGINT/SIGTERM, then print its
    /// report (DM ops, MSIs, shutdown reason) as JSON. No guest runs: use it to bring device
    /// models up by hand.
    Serve {
        /// Socket for device models (their config's [sim] socket).
        #[arg(long, default_value = "/run/xen-sim/sim.sock")]
        socket: PathBuf,
        /// Domain id to create.
        #[arg(long, default_value_t = 1)]
        domid: u16,
        /// vCPUs of the domain.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 64)]
        ram_mib: u64,
        /// Create the domain without an IOMMU context (no XEN_DOMCTL_CDF_iommu, as libxl
        /// makes every PVH guest): assign_device then fails with EOPNOTSUPP.
        #[arg(long)]
        no_iommu: bool,
        /// Destroy the domain when the guest powers off (xl's on_poweroff = "destroy"); its
        /// passed-through functions then go to Xen's quarantine (dom_io).
        #[arg(long)]
        destroy_on_poweroff: bool,
    },
}

/// The `clap` command the binary parses (for manual pages and completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
