//! `pvh-dm`: the toolstack launcher for Xen PVH guests served by this project's device models
//! (pm-trap, ioapic, pci-host-bridge). See the crate's README and `pvh-dm --help`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::time::Duration;

use clap::Parser;
use pvh_dm::cli::{Cli, Cmd};
use pvh_dm::{create, doctor, exit, ops, plan, reap, xl};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    ioreq_server::cli::init_logging(&cli.global.log);
    let g = cli.global;
    let xl = xl::Xl::new(g.xl.clone());
    let code = match cli.cmd {
        Cmd::Create(c) => {
            let opts = plan::Options {
                xl_config: c.xl_config,
                dm_config: c.dm_config,
                sysfs: g.sysfs.clone(),
                run_dir: g.run_dir.clone(),
                dm_dir: c.dm_dir,
                iommu_wrapper: c.iommu_wrapper,
                no_acpi_upgrade: c.no_acpi_upgrade,
                unbind_dom0_drivers: c.unbind_dom0_drivers,
                skip_iommu_check: c.skip_iommu_check,
            };
            let ro = create::RunOpts {
                xl,
                detach: c.detach,
                dry_run: c.dry_run,
                dm_timeout: Duration::from_secs(c.dm_timeout),
                dm_stop_timeout: Duration::from_secs(c.dm_stop_timeout),
                shutdown_timeout: Duration::from_secs(c.shutdown_timeout),
                dm_log_files: c.dm_log_files,
                xenstore: c.xenstore,
                log: g.log.clone(),
            };
            create::run(&opts, &ro, &g.run_dir)
        }
        Cmd::Status { domid, json } => ops::status(&g.run_dir, domid, json),
        Cmd::Shutdown { target, timeout } => {
            ops::shutdown(&g.run_dir, &xl, &target, Duration::from_secs(timeout))
        }
        Cmd::Destroy { target } => ops::destroy(&g.run_dir, &xl, &target),
        Cmd::Doctor {
            configs,
            dm_dir,
            iommu_wrapper,
        } => doctor::run(&doctor::Opts {
            xl,
            sysfs: g.sysfs.clone(),
            run_dir: g.run_dir.clone(),
            configs,
            dm_dir,
            iommu_wrapper,
        }),
        Cmd::InstallUnit { dir, print } => ops::install_unit(&dir, print),
        Cmd::Reap(a) => reap::run(&g.run_dir, &xl, &a),
    };
    std::process::exit(code);
}
