//! What the three device-model binaries share at their edge: common arguments, logging, and
//! "build the transport from the config and serve these devices until told to stop".

use std::path::PathBuf;

use anyhow::Context;
use tracing::info;

use crate::config::GuestConfig;
use crate::device::Device;
use crate::sandbox::{self, Identity, Policy, Sandbox, UserSpec};
use crate::server::{Server, ServerOptions};
use crate::transport::sim::SimTransport;
use crate::transport::xen::XenTransport;
use crate::transport::TransportKind;

/// Arguments every device-model process takes.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// The guest's config file (TOML; shared by all of the guest's device-model processes).
    /// (Required to serve; optional at parse time so that subcommands like `inspect` work.)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override the config's transport: `xen` on a dom0, `sim` against xen-sim.
    #[arg(long, value_enum)]
    pub transport: Option<TransportKind>,
    /// Override the config's domid.
    #[arg(long)]
    pub domid: Option<u16>,
    /// Control socket path (default: the config's `[control]` dir, then DOMID/NAME.sock).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Log filter in RUST_LOG syntax (e.g. `debug`, `ioreq_server=trace`).
    #[arg(long, env = "PVH_DM_LOG", default_value = "info")]
    pub log: String,
    /// Exit when process PID, which started this one, dies: at start-up the kernel is asked to
    /// send this process SIGTERM when its parent dies (PR_SET_PDEATHSIG), so the normal
    /// SIGTERM teardown runs (the ioreq server destroyed, pci-host-bridge's devices handed
    /// back); start-up fails if the parent is no longer PID (it died before the request took
    /// effect). A launcher that supervises the guest passes its own pid (pvh-dm does when it
    /// supervises): if the launcher is SIGKILLed, its device models do not go on serving a
    /// guest nobody supervises. The signal comes when the parent's thread that started this
    /// process exits.
    #[arg(long, value_name = "PID")]
    pub exit_with_parent: Option<u32>,
    /// After setup, run as this user: NAME, UID or UID:GID (a numeric uid needs no passwd entry;
    /// its gid defaults to its passwd entry's, else to the uid). Default: the scheme of Xen's
    /// dm_restrict, the uid of the user `xen-qemuuser-range-base` plus the domid, with that
    /// user's gid; it is an error on Xen when that user does not exist (on the sim transport
    /// uid 0 is kept, with no capability). Ignored when not started as root.
    #[arg(long, value_name = "NAME|UID[:GID]")]
    pub user: Option<UserSpec>,
    /// Do not deprivilege after setup: stay root with every capability, no chroot, no rlimits,
    /// no seccomp filter (logged as a warning). For debugging only.
    #[arg(long, conflicts_with = "user")]
    pub no_sandbox: bool,
    /// The empty directory the process chroots to after setup (created mode 0000 if missing;
    /// it must be a root-owned directory only root may write, and empty).
    #[arg(long, value_name = "DIR", default_value = sandbox::DEFAULT_ROOT)]
    pub sandbox_root: PathBuf,
    /// RLIMIT_NOFILE after setup (default: the descriptors open then plus what the process
    /// may open while it serves: 128, more for the ioapic's interrupt sources).
    #[arg(long, value_name = "N")]
    pub max_files: Option<u64>,
    /// Descriptors the process may open while it serves, beyond those open at the end of
    /// setup, when `--max-files` is not given: set by the binary (not an option).
    #[arg(skip = sandbox::DEFAULT_FILE_HEADROOM)]
    pub file_headroom: u64,
    /// RLIMIT_AS after setup, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = sandbox::DEFAULT_MAX_MEMORY_MIB)]
    pub max_memory: u64,
}

/// The command line of a device model that has subcommands besides `run`: `run`, or one of
/// the binary's own (`C`), or no subcommand at all, which runs with `R` given directly
/// (`pci-host-bridge -c guest.toml` is `pci-host-bridge run -c guest.toml`). pci-host-bridge
/// and pm-trap flatten it into their `Cli`, which keeps their name and help; both used to spell
/// out this same shape.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RunOrSubcommand<C: clap::Subcommand, R: clap::Args> {
    /// The subcommand, if any.
    #[command(subcommand)]
    pub cmd: Option<Subcommand<C, R>>,
    /// `run`'s arguments, taken when no subcommand is given.
    #[command(flatten)]
    pub run: R,
}

impl<C: clap::Subcommand, R: clap::Args> RunOrSubcommand<C, R> {
    /// What to do: `Ok(R)` to run (with `run`'s arguments or the bare ones), `Err(C)` for the
    /// binary's own subcommand.
    pub fn action(self) -> Result<R, C> {
        match self.cmd {
            Some(Subcommand::Run(r)) => Ok(r),
            Some(Subcommand::Other(c)) => Err(c),
            None => Ok(self.run),
        }
    }
}

/// `run` first, then the binary's own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand<C: clap::Subcommand, R: clap::Args> {
    /// Serve the guest (the default when no subcommand is given).
    Run(R),
    /// The binary's own subcommands.
    #[command(flatten)]
    Other(C),
}

impl CommonArgs {
    /// Load the config and apply the command-line overrides; with `--exit-with-parent`, first
    /// bind this process's life to its parent's ([`exit_with_parent`]).
    pub fn load(&self) -> anyhow::Result<GuestConfig> {
        if let Some(pid) = self.exit_with_parent {
            exit_with_parent(pid)?;
        }
        let path = self.config.as_deref().ok_or_else(|| {
            anyhow::anyhow!("--config FILE is required (the guest's TOML config)")
        })?;
        let mut c = GuestConfig::load(path)?;
        if let Some(t) = self.transport {
            c.transport = t;
        }
        if let Some(d) = self.domid {
            c.domid = d;
        }
        Ok(c)
    }
}

/// Ask for SIGTERM when the parent dies (PR_SET_PDEATHSIG), then check that the parent still
/// is `pid`: if it died before the request, this process was already reparented and the
/// signal will never come (the race prctl(2) documents), so that is an error.
pub fn exit_with_parent(pid: u32) -> anyhow::Result<()> {
    use nix::sys::signal::Signal;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .context("--exit-with-parent: prctl(PR_SET_PDEATHSIG, SIGTERM)")?;
    let now = nix::unistd::getppid().as_raw();
    if i64::from(now) != i64::from(pid) {
        anyhow::bail!(
            "--exit-with-parent {pid}: the parent process is already gone (this process's parent is now pid {now}); \
             not serving a guest whose launcher has died"
        );
    }
    tracing::debug!(parent = pid, "SIGTERM when the parent dies");
    Ok(())
}

/// Log to stderr through `tracing`, filtered by `filter`: a level (`debug`) or
/// `target=level` directives separated by commas (`warn,ioreq_server=trace`). A filter that
/// does not parse falls back to `info`, with a warning.
///
/// (`Targets` rather than `EnvFilter`: it needs no regex engine, which keeps an idle
/// device-model process a few hundred KiB smaller.)
pub fn init_logging(filter: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (targets, bad) = match filter.parse::<tracing_subscriber::filter::Targets>() {
        Ok(t) => (t, false),
        Err(_) => (
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO),
            true,
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(targets)
        .try_init();
    if bad {
        tracing::warn!(filter, "log filter not understood; logging at info");
    }
}

/// The passthrough executor for the guest of `cfg`, on a hypervisor handle of its own: on Xen
/// a second privcmd handle that stays unrestricted (the kernel refuses
/// `IOCTL_PRIVCMD_HYPERCALL` on a restricted one), so that the serving transport itself can be
/// restricted to the guest; on xen-sim a second connection. `name` names the process.
pub fn passthrough_executor(
    cfg: &GuestConfig,
    name: &str,
) -> anyhow::Result<crate::executor::PassthroughExecutor> {
    let chan: Box<dyn crate::executor::PtChannel> = match cfg.transport {
        TransportKind::Xen => Box::new(XenTransport::open(cfg.domid)?),
        TransportKind::Sim => Box::new(SimTransport::connect(
            &cfg.sim.socket,
            cfg.domid,
            &format!("{name}/passthrough"),
        )?),
    };
    Ok(crate::executor::PassthroughExecutor::new(chan))
}

/// Serve `devices` for the guest of `cfg` until SIGTERM/SIGINT or a control `shutdown`,
/// without deprivileging (for a process that needs privileged hypercalls while it serves,
/// e.g. pci-host-bridge with passed-through functions). `opts.name` names the process; its
/// control socket comes from the arguments or the config. Set `opts.restrict` only when the
/// process needs no hypercall beyond DM ops after setup.
pub fn serve(
    args: &CommonArgs,
    cfg: &GuestConfig,
    devices: Vec<Box<dyn Device>>,
    opts: ServerOptions,
) -> anyhow::Result<()> {
    serve_inner(args, cfg, devices, opts, None)
}

/// Like [`serve`], deprivileged between setup and serving ([`crate::sandbox`]) unless
/// `--no-sandbox`: the per-guest uid is resolved before setup (a bad `--user` changes nothing
/// in the hypervisor). `unlink_at_exit`: sockets besides the control socket that the process
/// removes at its clean end (the ioapic's irq_line socket), which after the chroot only the
/// sandbox's unlinker can reach.
pub fn serve_sandboxed(
    args: &CommonArgs,
    cfg: &GuestConfig,
    devices: Vec<Box<dyn Device>>,
    opts: ServerOptions,
    unlink_at_exit: Vec<PathBuf>,
) -> anyhow::Result<()> {
    let name = opts.name.clone();
    if args.no_sandbox {
        tracing::warn!("--no-sandbox: {name} serves as it was started (root, every capability, no seccomp filter)");
        return serve_inner(args, cfg, devices, opts, None);
    }
    let identity = if nix::unistd::geteuid().is_root() {
        let spec = args.user.clone().unwrap_or(UserSpec::RangeBase);
        sandbox::resolve_user(&spec, cfg.domid, cfg.transport == TransportKind::Sim)?
    } else {
        Identity::KeepRoot("not root".into())
    };
    let mut unlink = vec![args
        .control
        .clone()
        .unwrap_or_else(|| cfg.control_socket(&name))];
    unlink.extend(unlink_at_exit);
    let policy = Policy {
        name,
        identity,
        root: args.sandbox_root.clone(),
        max_files: args.max_files,
        file_headroom: args.file_headroom,
        max_memory_mib: args.max_memory,
        unlink_at_exit: unlink,
        exit_with_parent: args.exit_with_parent,
    };
    serve_inner(args, cfg, devices, opts, Some(policy))
}

fn serve_inner(
    args: &CommonArgs,
    cfg: &GuestConfig,
    devices: Vec<Box<dyn Device>>,
    mut opts: ServerOptions,
    policy: Option<Policy>,
) -> anyhow::Result<()> {
    let name = opts.name.clone();
    let name = name.as_str();
    opts.control_path = Some(
        args.control
            .clone()
            .unwrap_or_else(|| cfg.control_socket(name)),
    );
    opts.control_access = cfg.socket_access()?;
    info!(domid = cfg.domid, transport = ?cfg.transport, control = ?opts.control_path, "{name} starting");
    match cfg.transport {
        TransportKind::Xen => {
            let t = XenTransport::open(cfg.domid)?;
            run(Server::setup(t, devices, opts)?, cfg, policy)
        }
        TransportKind::Sim => {
            let t = SimTransport::connect(&cfg.sim.socket, cfg.domid, name)?;
            run(Server::setup(t, devices, opts)?, cfg, policy)
        }
    }
    .with_context(|| format!("{name} for domain {}", cfg.domid))
}

fn run<T: crate::transport::Transport>(
    s: Server<T>,
    cfg: &GuestConfig,
    policy: Option<Policy>,
) -> anyhow::Result<()> {
    if let Some(v) = cfg.vcpus {
        let have = s.status()["vcpus"].as_u64().unwrap_or(0);
        if have != u64::from(v) {
            tracing::warn!(
                config = v,
                hypervisor = have,
                "the config's vcpus differs from the hypervisor's nr_vcpus"
            );
        }
    }
    // Between setup and serving: everything privileged is done (the ioreq server exists, its
    // pages are mapped, the ports bound, the handles restricted, the sockets bound).
    let sandbox = match &policy {
        Some(p) => {
            // On an error the server is dropped first (its teardown), then the sandbox (the
            // unlinker removes the sockets).
            let mut sb = Sandbox::prepare(p)?;
            if let Err(e) = sb.enter(p) {
                drop(s);
                sb.finish();
                return Err(e.into());
            }
            Some(sb)
        }
        None => None,
    };
    let r = s.run();
    if let Some(sb) = sandbox {
        sb.finish();
    }
    r?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_with_parent_refuses_a_parent_that_is_not_ours() {
        let ppid = nix::unistd::getppid().as_raw() as u32;
        super::exit_with_parent(ppid).unwrap();
        let e = super::exit_with_parent(ppid.wrapping_add(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already gone"), "{e}");
        nix::sys::prctl::set_pdeathsig(None).unwrap();
    }
}
