//! ioapic: an IOAPIC for one PVH guest, as an ioreq server. Pins come from other processes
//! (e.g. pci-host-bridge for a passed-through INTx) over the irq_line socket; deliveries go to
//! the guest as MSIs through XEN_DMOP_inject_msi.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ioapic::{IoapicConfig, IoapicDevice, Snapshot};
use ioreq_server::cli::{init_logging, serve, CommonArgs};
use ioreq_server::server::ServerOptions;

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
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Start from a snapshot (JSON, as returned by the control socket's `snapshot`), e.g. on
    /// the destination of a live migration.
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    init_logging(&a.common.log);
    let cfg = a.common.load()?;
    let ic: IoapicConfig = cfg.section("ioapic")?;
    ic.validate()?;
    let mut dev = IoapicDevice::new(&ic)?;
    if let Some(f) = &a.restore {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let snap: Snapshot = serde_json::from_str(&text)
            .with_context(|| format!("parsing snapshot {}", f.display()))?;
        dev.restore(snap)
            .with_context(|| format!("restoring {}", f.display()))?;
        tracing::info!(file = %f.display(), "state restored");
    }
    // The ioapic needs nothing but DM ops (inject_msi) after setup.
    serve(
        &a.common,
        &cfg,
        vec![Box::new(dev)],
        ServerOptions {
            name: "ioapic".into(),
            restrict: true,
            ..Default::default()
        },
    )
}
