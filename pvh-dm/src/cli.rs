//! The command line of the `pvh-dm` binary, here so that its manual page can be generated from
//! the same definitions (`man` crate); the binary parses [`Cli`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::runtime;

/// The exit codes, as `create --help` shows them.
pub const EXIT_CODES: &str = "\
Exit codes of `pvh-dm create` (supervised):
   0  the guest powered off (also after a stop request it obeyed)
   1  other error
   2  command-line syntax
   3  refused by validation: nothing was changed, no domain created
   4  a create step failed: every earlier step was undone (device models stopped, domain destroyed, runtime files removed)
  10  the guest asked for a reboot (pvh-dm@.service restarts the unit on this code)
  11  the guest crashed
  12  Xen's watchdog fired
  13  suspend, soft reset or another shutdown reason code
  14  the domain was destroyed from outside (no shutdown reason)
  15  a stop request (SIGTERM) was not obeyed within --shutdown-timeout: domain destroyed
  20  a device model died: the domain was destroyed (the message names the process and its status/signal)
  21  the xenstore connection was lost: the domain's end could no longer be seen, so it was destroyed
      (the device models exit with their launcher and cannot be left running)
With --detach: 0 once the domain runs (its domid on stdout), else 3 or 4.
Every run's outcome (exit code, reason, message, device models' ends) is also written to
RUN/ended/NAME.json; the running guest's state is RUN/DOMID/state.json.";

/// Launch and supervise Xen PVH guests with the project's device models.
#[derive(Parser)]
#[command(
    name = "pvh-dm",
    version,
    about = "Launch and supervise Xen PVH guests with PCI passthrough through small ioreq-server device models",
    long_about = "Launch and supervise Xen PVH guests whose PCI root, IOAPIC and ACPI PM registers are served by \
                  this project's device models (pci-host-bridge, ioapic, pm-trap), each a separate process in dom0.\n\n\
                  `pvh-dm create GUEST.cfg` validates the xl config and the guest TOML against each other and the host, \
                  generates the guest's ACPI tables and hands them to a Linux guest through the initrd table upgrade, \
                  creates the domain paused, starts exactly the device models it needs, unpauses it and supervises it \
                  until it goes away. `status`, `shutdown`, `destroy` act on the guests pvh-dm runs (state in the \
                  runtime directory, default /run/pvh-dm/DOMID/); `doctor` checks the host.",
    after_help = "Logs go to stderr (the journal under systemd); --log or PVH_DM_LOG sets the filter."
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub cmd: Cmd,
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: Global,
}

/// Options every subcommand takes.
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// Runtime directory (state of every guest pvh-dm runs, one subdirectory per domid).
    #[arg(long, global = true, env = "PVH_DM_RUN_DIR", default_value = runtime::DEFAULT_RUN_DIR, value_name = "DIR")]
    pub run_dir: PathBuf,
    /// The xl binary.
    #[arg(
        long,
        global = true,
        env = "PVH_DM_XL",
        default_value = "xl",
        value_name = "PATH"
    )]
    pub xl: PathBuf,
    /// sysfs root (for tests; normally /sys).
    #[arg(
        long,
        global = true,
        env = "PVH_DM_SYSFS",
        default_value = "/sys",
        value_name = "DIR"
    )]
    pub sysfs: PathBuf,
    /// Log filter in RUST_LOG syntax (`debug`, `pvh_dm=debug`).
    #[arg(long, global = true, env = "PVH_DM_LOG", default_value = "info")]
    pub log: String,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Validate, create the guest paused, start its device models, unpause, supervise.
    #[command(
        long_about = "Create a PVH guest from an xl config and the project's guest TOML, then supervise it.\n\n\
        Settings xl has a key for come from the xl config: name, type (must be \"pvh\"), vcpus/maxvcpus, \
        memory/maxmem, kernel, ramdisk, cmdline and everything else xl reads. The device models' settings come \
        from the guest TOML ([pm_trap], [ioapic], [pci], [[pci.device]], [control]): --dm-config FILE, else the xl \
        config's own key `pvh_dm_config = \"FILE\"` (relative to the xl config's directory; xl ignores it), else \
        the xl config's path with .toml for .cfg. An xl `pci = [...]` list is refused: it sends libxl down the \
        pciback/pcifront path.\n\n\
        Validation (nothing is changed when it fails): both files; every [[pci.device]] host function exists in \
        sysfs, is not bound to a dom0 driver other than pciback/pci-stub/vfio-pci/uio_pci_generic and is not used \
        by another pvh-dm guest; guest RAM (libxl fills [0, max(memory, maxmem)) below its 64 MiB PVH hole at 0xFC000000) stays \
        below the lowest PCI window (ECAM default 0xF0000000); the device-model binaries exist; with passthrough, \
        the IOMMU wrapper exists and `xl info` shows hvm_directio.\n\n\
        ACPI tables: the SSDT (\\_S5, PCI root), MADT (IOAPIC) and MCFG are generated from the guest TOML and \
        placed as kernel/firmware/acpi/*.aml in an uncompressed newc cpio in front of the xl config's ramdisk \
        (Linux's CONFIG_ACPI_TABLE_UPGRADE). Only Linux reads tables that way: for another guest OS the toolstack \
        must add the tables itself (see pvh-acpi) and pvh-dm must be run with --no-acpi-upgrade. Without that \
        flag a kernel that is not a Linux bzImage/vmlinux, or a config without ramdisk, is refused.\n\n\
        Device models: pm-trap always; ioapic when the TOML has [ioapic] (required by any device with intx = ...; \
        the MADT then declares the IOAPIC); pci-host-bridge with [pci]. Started in the order ioapic, pm-trap, \
        pci-host-bridge as `NAME --config GUEST.toml --domid N`, each waited for on its control socket; stopped in \
        the reverse order.\n\n\
        Supervision (default): pvh-dm creates the domain with `xl create -p -e` (no xl monitor: the shut-down \
        domain waits for pvh-dm), watches xenstore's @releaseDomain, reads the shutdown reason from `xl list -v`, \
        destroys the domain, stops the device models and exits with the reason's code. A dying device model gets \
        the domain destroyed. SIGTERM/SIGINT: the ACPI power button (pm-trap's PWRBTN_STS) and xenstore's control/shutdown \
        (what `xl shutdown` writes) together, destroy after --shutdown-timeout; a second one \
        destroys at once. With Type=notify under systemd it sends READY=1 once the guest runs.\n\n\
        If the launcher itself dies (kill -9): a reaper it started as soon as the domain existed (`pvh-dm reap`, \
        in a process group of its own, blocked on a pipe only the supervisor writes) stops the device models, \
        destroys the domain, runs `pci-host-bridge reclaim` if the bridge died without handing its devices back, \
        removes RUN/DOMID and records the end in RUN/ended/NAME.json. The device models also get SIGTERM when \
        the launcher dies (--exit-with-parent, PR_SET_PDEATHSIG) and tear down on their own.",
        after_help = EXIT_CODES
    )]
    Create(CreateCmd),
    /// The guests pvh-dm runs and their device models' status.
    #[command(
        long_about = "List the guests in the runtime directory (or one DOMID): name, phase, supervisor \
        pid, and each device model's pid and answer to {\"cmd\":\"status\"}. --json prints one JSON array with the \
        full state and status replies. Exit 1 if DOMID is not a pvh-dm guest."
    )]
    Status {
        /// Only this guest.
        domid: Option<u32>,
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A clean power-off: ACPI power button and xenstore control/shutdown, then destroy after a timeout.
    #[command(
        long_about = "Ask a guest to shut down cleanly. TARGET is a domid, a guest name or the path of its \
        xl config. If its supervisor runs, it is sent SIGTERM (it presses the guest's ACPI power button and writes control/shutdown, waits, destroys, stops the \
        device models) and pvh-dm waits for it to exit; otherwise pvh-dm does the same itself. Used by \
        pvh-dm@.service's ExecStop."
    )]
    Shutdown {
        /// Domid, guest name, or xl config path.
        target: String,
        /// Seconds to wait for the guest before destroying it.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Destroy a guest now, stop its device models, remove its runtime files.
    #[command(
        long_about = "`xl destroy DOMID`, then the device models are stopped (by the supervisor if it \
        runs, else by pids from state.json, each checked to still be that device model), and RUN/DOMID is \
        removed. Works after the supervisor was killed."
    )]
    Destroy {
        /// Domid, guest name, or xl config path.
        target: String,
    },
    /// Check this host: Xen, its version and IOMMU, device nodes, xenstore, candidate devices.
    #[command(
        long_about = "Check the host for pvh-dm: a Xen dom0 (/sys/hypervisor), Xen 4.17 (the domctl \
        interface the bridge implements), the IOMMU (xl info virt_caps, xl dmesg), /dev/xen/{privcmd,evtchn,\
        hypercall}, xenstore, the device-model binaries and the IOMMU wrapper, the host's PCI functions that \
        could be passed through, and with XL.cfg the guest's devices and memory against its windows. On a \
        machine without Xen it says so in one line and exits 1; exit 1 also if any check fails."
    )]
    Doctor {
        /// Also check these guests' configs.
        configs: Vec<PathBuf>,
        /// Directory of the device-model binaries.
        #[arg(long, value_name = "DIR")]
        dm_dir: Option<PathBuf>,
        /// The IOMMU-context wrapper.
        #[arg(
            long,
            default_value = "/usr/local/lib/cdf-iommu.so",
            value_name = "PATH"
        )]
        iommu_wrapper: PathBuf,
    },
    /// Install the systemd template unit pvh-dm@.service.
    #[command(
        long_about = "Write pvh-dm@.service (ExecStart=THIS-BINARY create /etc/xen/%i.cfg) into --dir \
        (default /etc/systemd/system). Then: systemctl daemon-reload; systemctl start pvh-dm@GUEST (reads \
        /etc/xen/GUEST.cfg and /etc/xen/GUEST.toml)."
    )]
    InstallUnit {
        /// Target directory.
        #[arg(long, default_value = "/etc/systemd/system")]
        dir: PathBuf,
        /// Print the unit instead of writing it.
        #[arg(long)]
        print: bool,
    },
    /// (Internal.) The supervisor's reaper: `create` starts it; it cleans up if the
    /// supervisor dies.
    #[command(hide = true)]
    Reap(ReapArgs),
}

/// Arguments of `create`.
#[derive(Args)]
pub struct CreateCmd {
    /// The xl config (type = "pvh").
    pub xl_config: PathBuf,
    /// The guest TOML (default: xl's `pvh_dm_config`, else XL_CONFIG with .toml).
    #[arg(long, value_name = "FILE")]
    pub dm_config: Option<PathBuf>,
    /// Exit once the guest runs (print its domid); xl's own monitor then handles on_poweroff etc.
    #[arg(long, visible_alias = "no-supervise")]
    pub detach: bool,
    /// Validate everything and print what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not deliver the ACPI tables through the initrd (the toolstack adds them; needed for
    /// guests other than Linux).
    #[arg(long)]
    pub no_acpi_upgrade: bool,
    /// Let pci-host-bridge unbind a dom0 driver bound to a [[pci.device]] host function.
    #[arg(long)]
    pub unbind_dom0_drivers: bool,
    /// Directory of the device-model binaries (default: next to pvh-dm, then $PATH).
    #[arg(long, env = "PVH_DM_BIN_DIR", value_name = "DIR")]
    pub dm_dir: Option<PathBuf>,
    /// LD_PRELOAD wrapper that gives the domain an IOMMU context (XEN_DOMCTL_CDF_iommu);
    /// used with PVH_DM_IOMMU=1 when the guest passes devices through.
    #[arg(
        long,
        default_value = "/usr/local/lib/cdf-iommu.so",
        value_name = "PATH"
    )]
    pub iommu_wrapper: PathBuf,
    /// Do not ask `xl info` whether Xen has an IOMMU, nor require the wrapper's
    /// "added XEN_DOMCTL_CDF_iommu" line from `xl create` (for another way to get the context).
    #[arg(long)]
    pub skip_iommu_check: bool,
    /// Seconds a device model may take to answer on its control socket.
    #[arg(long, default_value_t = 30)]
    pub dm_timeout: u64,
    /// Seconds a device model may take to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub dm_stop_timeout: u64,
    /// Seconds the guest may take to shut down after a stop request before it is destroyed.
    #[arg(long, default_value_t = 60)]
    pub shutdown_timeout: u64,
    /// Device models' stdout/stderr to RUN/DOMID/NAME.log (always with --detach; otherwise
    /// they share pvh-dm's stderr, i.e. the journal).
    #[arg(long)]
    pub dm_log_files: bool,
    /// xenstore: socket or /dev/xen/xenbus (default: $XENSTORED_PATH, /run/xenstored/socket,
    /// /var/run/xenstored/socket, /dev/xen/xenbus).
    #[arg(long, value_name = "PATH")]
    pub xenstore: Option<PathBuf>,
}

/// Arguments of the hidden `reap` (started by `create` itself; see `pvh_dm::reap`).
#[derive(Args, Clone, Debug)]
pub struct ReapArgs {
    /// The domain.
    #[arg(long)]
    pub domid: u32,
    /// The supervisor's pid (matched against state.json's `supervisor`).
    #[arg(long)]
    pub supervisor: u32,
    /// The guest's name.
    #[arg(long)]
    pub name: String,
    /// The create's staging dir (`RUN/.create-NAME-PID`), where the state is until the
    /// runtime dir `RUN/DOMID` exists.
    #[arg(long, value_name = "DIR")]
    pub staging: PathBuf,
    /// Seconds a device model may take to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub dm_stop_timeout: u64,
}

/// The `clap` command the binary parses (for manual pages and completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
