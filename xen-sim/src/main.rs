//! xen-sim: the simulated hypervisor, as a server for device models (`serve`) or as a
//! self-contained demonstration with a scripted guest (`demo`).

mod demo;

use std::time::Duration;

use clap::Parser;
use xen_sim::cli::{Cli, Cmd};

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
