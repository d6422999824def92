//! pci-host-bridge: a minimal PCI host bridge with passed-through functions for one PVH
//! guest, as an ioreq server; and `list`, the host's PCI functions as a PF/VF tree.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use ioreq_server::cli::{init_logging, serve, serve_sandboxed};
use ioreq_server::config::GuestConfig;
use ioreq_server::server::ServerOptions;
use pci_host_bridge::cli::{Cli, Cmd, RunArgs};
use pci_host_bridge::list::{list_host_functions, render_tree};
use pci_host_bridge::pci_ids::PciIds;
use pci_host_bridge::{PciConfig, PciHostBridge};
use serde::Deserialize;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::List {
            json,
            config,
            sysfs,
        }) => {
            init_logging("warn");
            let configured = match config {
                Some(p) => GuestConfig::load(&p)?
                    .section::<PciConfig>("pci")?
                    .devices
                    .iter()
                    .map(|d| d.host)
                    .collect(),
                None => Vec::new(),
            };
            let ids = PciIds::load_default();
            let list = list_host_functions(&sysfs, Some(&ids), &configured)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", render_tree(&list));
            }
            Ok(())
        }
        Some(Cmd::Run(r)) => run(r),
        Some(Cmd::Reclaim(r)) => reclaim(r),
        None => run(cli.run),
    }
}

/// The one key of the `[ioapic]` section this process reads (the section belongs to the
/// ioapic process; other keys are ignored here).
#[derive(Default, Deserialize)]
struct IoapicSocket {
    socket: Option<PathBuf>,
}

/// How long to wait for the IOAPIC's socket to appear (the toolstack may start the device
/// models together).
const IOAPIC_WAIT: Duration = Duration::from_secs(10);

/// Register the INTx-forwarding functions on the IOAPIC, retrying while its socket is not
/// there yet.
fn connect_intx(dev: &mut PciHostBridge, socket: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + IOAPIC_WAIT;
    loop {
        match dev.connect_intx(socket) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline && !socket.exists() => {
                tracing::debug!("waiting for the IOAPIC socket: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn reclaim(r: RunArgs) -> anyhow::Result<()> {
    init_logging(&r.common.log);
    let cfg = r.common.load()?;
    let pci: PciConfig = cfg.section("pci")?;
    if pci.devices.is_empty() {
        anyhow::bail!("the config passes no function through: nothing to reclaim");
    }
    let mut dev = PciHostBridge::from_config(&pci)?;
    dev.set_executor(ioreq_server::cli::passthrough_executor(
        &cfg,
        "pci-host-bridge",
    )?);
    dev.reclaim()?;
    Ok(())
}

fn run(r: RunArgs) -> anyhow::Result<()> {
    init_logging(&r.common.log);
    let cfg = r.common.load()?;
    let pci: PciConfig = cfg.section("pci")?;
    let passthrough = !pci.devices.is_empty();
    let mut dev = PciHostBridge::from_config(&pci)?;
    if dev.needs_ioapic() {
        // [pci] ioapic_socket, else [ioapic] socket: the crates stay independent, this
        // binary reads both sections of the one guest config.
        let socket = match &pci.ioapic_socket {
            Some(p) => p.clone(),
            None => cfg
                .section::<IoapicSocket>("ioapic")?
                .socket
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "a [[pci.device]] forwards INTx (intx = ...) but neither [pci] ioapic_socket nor [ioapic] socket is set"
                    )
                })?,
        };
        connect_intx(&mut dev, &socket)?;
    }
    // Passthrough hypercalls (domctls, physdev ops) go through an executor on a hypervisor
    // handle of its own, which stays unrestricted (the kernel refuses IOCTL_PRIVCMD_HYPERCALL
    // on a restricted privcmd); the serving transport needs only DM ops and is restricted.
    if passthrough {
        dev.set_executor(ioreq_server::cli::passthrough_executor(
            &cfg,
            "pci-host-bridge",
        )?);
    }
    let opts = ServerOptions {
        name: "pci-host-bridge".into(),
        restrict: true,
        ..Default::default()
    };
    if passthrough {
        // Passthrough needs unrestricted hypercalls while serving (memory_mapping on decode,
        // map_pirq/bind_pt_irq on MSI-X unmask): not deprivileged until the broker split.
        tracing::info!(
            "passthrough: this process is not deprivileged (it issues domctls while serving)"
        );
        serve(&r.common, &cfg, vec![Box::new(dev)], opts)
    } else {
        // Only the host bridge: nothing but DM ops after setup, so deprivileged.
        serve_sandboxed(&r.common, &cfg, vec![Box::new(dev)], opts, Vec::new())
    }
}
