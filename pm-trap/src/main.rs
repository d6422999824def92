//! pm-trap: the ACPI PM1a/PM1b (and reset register) trap for one guest, as an ioreq server;
//! and `inspect`, the ACPI reader on a directory of tables.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ioreq_server::cli::{init_logging, serve, CommonArgs};
use ioreq_server::server::ServerOptions;
use pm_trap::{inspect_dir, Mode, PmTrap, PmTrapConfig};

#[derive(Parser)]
#[command(
    name = "pm-trap",
    version,
    about = "Trap ACPI PM1a/PM1b control and the reset register so a guest's native S5 power-off and reset work",
    long_about = "Serves the guest's PM1 event/control blocks and reset register as an ioreq server. \
                  On SLP_TYP|SLP_EN matching \\_S5 (or \\_S4) it asks the hypervisor to power the guest off; \
                  \\_S3 suspends only when allowed in the config; the reset value on the reset register reboots.\n\n\
                  Two modes ([pm_trap] mode): \"guest\" takes ports and sleep values from the config (defaults: \
                  Xen's PVH FADT, PM1a_EVT 0xB000, PM1a_CNT 0xB004, reset 0xCF9=6); \"hardware-domain\" reads \
                  everything from the host's ACPI tables (--host-acpi, default /sys/firmware/acpi/tables).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the guest (the default when no subcommand is given).
    Run(RunArgs),
    /// Read FADT, DSDT and SSDTs of a directory and print the PM1 blocks, the reset register
    /// and the \_S3/\_S4/\_S5 values pm-trap would use.
    Inspect {
        /// Directory of tables: sysfs names (FACP, DSDT, SSDT1, ...) or acpixtract names
        /// (facp.dat, dsdt.dat, ssdt*.dat).
        #[arg(long, default_value = "/sys/firmware/acpi/tables")]
        acpi_dir: PathBuf,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
        /// Log filter (checksum mismatches are warnings).
        #[arg(long, env = "PVH_DM_LOG", default_value = "warn")]
        log: String,
    },
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Hardware-domain mode: take everything from the host's ACPI tables in DIR (overrides
    /// the config's mode and acpi_dir).
    #[arg(long, value_name = "DIR")]
    host_acpi: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match (cli.cmd, cli.run) {
        (
            Some(Cmd::Inspect {
                acpi_dir,
                json,
                log,
            }),
            _,
        ) => {
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
        (Some(Cmd::Run(r)), _) | (None, r) => run(r),
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
    // pm-trap needs nothing but DM ops after setup: restrict its handles to the guest.
    serve(
        &r.common,
        &cfg,
        vec![Box::new(dev)],
        ServerOptions {
            name: "pm-trap".into(),
            restrict: true,
            ..Default::default()
        },
    )
}
