//! xen-sim: the simulated hypervisor, as a server for device models (`serve`) or as a
//! self-contained demonstration with a scripted guest (`demo`).

mod demo;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xen-sim",
    version,
    about = "A simulated Xen hypervisor speaking the real ioreq protocol",
    long_about = "xen-sim plays Xen's side of the ioreq-server protocol (ioreq pages, event channels, DM ops, \
                  CF8/CFC decoding, server selection, the null handler) for device-model processes started \
                  with `--transport sim`, so they can be run and tested on a machine without Xen."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, global = true, env = "PVH_DM_LOG", default_value = "warn")]
    log: String,
}

#[derive(Subcommand)]
enum Cmd {
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ioreq_server::cli::init_logging(&cli.log);
    match cli.cmd {
        Cmd::Demo {
            json,
            bin_dir,
            keep,
        } => {
            let report = demo::run(bin_dir, keep)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                demo::print_human(&report);
            }
            Ok(())
        }
        Cmd::Serve {
            socket,
            domid,
            vcpus,
            ram_mib,
            no_iommu,
            destroy_on_poweroff,
        } => {
            let sim = xen_sim::Sim::start(xen_sim::SimOptions {
                socket,
                ioreq_timeout: Duration::from_secs(5),
            })?;
            sim.create_domain_with(
                domid,
                &xen_sim::DomainConfig {
                    vcpus,
                    ram_mib,
                    iommu: !no_iommu,
                    destroy_on_poweroff,
                },
            )?;
            let sigs = ioreq_server::signals::signalfd()?;
            eprintln!(
                "xen-sim: domain {domid} ({vcpus} vCPUs, {ram_mib} MiB) at {}; Ctrl-C to stop",
                sim.socket().display()
            );
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&sigs),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
            sim.stop();
            println!("{}", serde_json::to_string_pretty(&sim.report(domid))?);
            Ok(())
        }
    }
}
