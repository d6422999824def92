//! ioapic: an IOAPIC for one PVH guest, as an ioreq server. Pins come from other processes
//! (e.g. pci-host-bridge for a passed-through INTx) over the irq_line socket; deliveries go to
//! the guest as MSIs through XEN_DMOP_inject_msi.

use anyhow::Context;
use clap::Parser;
use ioapic::cli::Cli;
use ioapic::{IoapicConfig, IoapicDevice, Snapshot};
use ioreq_server::cli::{init_logging, serve_sandboxed};
use ioreq_server::server::ServerOptions;

fn main() -> anyhow::Result<()> {
    let mut a = Cli::parse();
    init_logging(&a.common.log);
    let cfg = a.common.load()?;
    let ic: IoapicConfig = cfg.section("ioapic")?;
    ic.validate()?;
    let mut dev = IoapicDevice::with_access(&ic, cfg.socket_access()?)?;
    if let Some(f) = &a.restore {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let snap: Snapshot = serde_json::from_str(&text)
            .with_context(|| format!("parsing snapshot {}", f.display()))?;
        dev.restore(snap)
            .with_context(|| format!("restoring {}", f.display()))?;
        tracing::info!(file = %f.display(), "state restored");
    }
    // Each interrupt source holds a connection, a trigger and a resample eventfd: the
    // descriptor limit after setup leaves room for as many sources as the socket accepts.
    if ic.socket.is_some() {
        a.common.file_headroom =
            3 * irq_line::DEFAULT_MAX_SOURCES as u64 + ioreq_server::sandbox::DEFAULT_FILE_HEADROOM;
    }
    // The ioapic needs nothing but DM ops (inject_msi) after setup: restricted handles, then
    // deprivileged. Its irq_line socket is removed at the clean end by the sandbox's
    // unlinker (the path is out of reach after the chroot).
    serve_sandboxed(
        &a.common,
        &cfg,
        vec![Box::new(dev)],
        ServerOptions::named("ioapic"),
        ic.socket.clone().into_iter().collect(),
    )
}
