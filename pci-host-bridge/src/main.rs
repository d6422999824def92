//! pci-host-bridge: a minimal PCI host bridge with passed-through functions for one PVH
//! guest, as an ioreq server; and `list`, the host's PCI functions as a PF/VF tree.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use ioreq_server::cli::{init_logging, serve_sandboxed};
use ioreq_server::config::GuestConfig;
use ioreq_server::server::ServerOptions;
use pci_host_bridge::cli::{Cli, Cmd, RunArgs};
use pci_host_bridge::list::{list_host_functions, render_tree};
use pci_host_bridge::pci_ids::PciIds;
use pci_host_bridge::{PciConfig, PciHostBridge};
use serde::Deserialize;

mod split;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.args.action() {
        Err(Cmd::List {
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
        Err(Cmd::Reclaim(r)) => reclaim(r),
        Ok(r) => run(r),
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

/// Where the IOAPIC's irq_line socket is: `[pci] ioapic_socket`, else `[ioapic] socket` (the
/// crates stay independent, this binary reads both sections of the one guest config).
fn ioapic_socket(cfg: &GuestConfig, pci: &PciConfig) -> anyhow::Result<PathBuf> {
    match &pci.ioapic_socket {
        Some(p) => Ok(p.clone()),
        None => cfg
            .section::<IoapicSocket>("ioapic")?
            .socket
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "a [[pci.device]] forwards INTx (intx = ...) but neither [pci] ioapic_socket nor [ioapic] socket is set"
                )
            }),
    }
}

fn run(r: RunArgs) -> anyhow::Result<()> {
    init_logging(&r.common.log);
    let cfg = r.common.load()?;
    let pci: PciConfig = cfg.section("pci")?;
    if !pci.devices.is_empty() {
        // Passed-through functions need hypercalls and host accesses while serving: a
        // privileged broker (this process, the one the launcher supervises) and the
        // deprivileged worker that serves ([`split`]).
        return if r.broker_worker {
            split::worker(&r, &cfg, &pci)
        } else {
            split::broker(&r, &cfg, &pci)
        };
    }
    if r.broker_worker {
        anyhow::bail!("--broker-worker: the config passes no function through");
    }
    // Only the host bridge: nothing but DM ops after setup, so deprivileged.
    let dev = PciHostBridge::from_config(&pci)?;
    let opts = ServerOptions::named("pci-host-bridge");
    serve_sandboxed(&r.common, &cfg, vec![Box::new(dev)], opts, Vec::new())
}
