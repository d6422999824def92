//! pm-trap: the ACPI PM1a/PM1b (and reset register) trap for one guest, as an ioreq server;
//! and `inspect`, the ACPI reader on a directory of tables.

use anyhow::Context;
use clap::Parser;
use ioreq_server::cli::{init_logging, serve_sandboxed};
use ioreq_server::server::ServerOptions;
use pm_trap::cli::{Cli, Cmd, RunArgs};
use pm_trap::{inspect_dir, Mode, PmTrap, PmTrapConfig};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.args.action() {
        Err(Cmd::Inspect {
            acpi_dir,
            json,
            log,
        }) => {
            init_logging(&log);
            let info = inspect_dir(&acpi_dir)
                .with_context(|| format!("reading ACPI tables in {}", acpi_dir.display()))?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                print!("{info}");
            }
            Ok(())
        }
        Ok(r) => run(r),
    }
}

fn run(r: RunArgs) -> anyhow::Result<()> {
    init_logging(&r.common.log);
    let cfg = r.common.load()?;
    let mut pm: PmTrapConfig = cfg.section("pm_trap")?;
    if let Some(dir) = r.host_acpi {
        pm.mode = Mode::HardwareDomain;
        pm.acpi_dir = Some(dir);
    }
    let setup = pm.setup()?;
    tracing::info!(mode = ?pm.mode, sleep = ?setup.sleep, "pm-trap layout resolved");
    let dev = PmTrap::new(setup)?;
    // pm-trap needs nothing but DM ops after setup: restrict its handles to the guest, then
    // deprivilege (per-guest uid, empty root, seccomp).
    serve_sandboxed(
        &r.common,
        &cfg,
        vec![Box::new(dev)],
        ServerOptions::named("pm-trap"),
        Vec::new(),
    )
}
