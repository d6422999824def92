//! A bridge with passed-through functions runs as two processes (issue 12, item 1; the
//! checks and both ends of the socket are `pci_host_bridge::broker`):
//!
//! - the **broker**, the process pvh-dm started and supervises: it opens everything
//!   privileged (the host functions' backends, the unrestricted hypercall channel passthrough
//!   needs), starts the worker, answers its requests until the worker exits, hands back what
//!   the worker's own teardown did not, and exits non-zero if the worker failed or anything
//!   was left. SIGTERM / SIGINT to it are passed on to the worker, whose teardown then runs
//!   through the broker as before;
//! - the **worker**, this binary again with `--broker-worker` and the broker's socket as its
//!   standard input: the serving process of before, with every host access and hypercall a
//!   request to the broker, and `--exit-with-parent` the broker (it ends when the broker dies).

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::Context;
use ioreq_server::cli::serve_sandboxed;
use ioreq_server::config::GuestConfig;
use ioreq_server::executor::{PassthroughExecutor, PtChannel};
use ioreq_server::seqpacket;
use ioreq_server::server::ServerOptions;
use ioreq_server::transport::sim::SimTransport;
use ioreq_server::transport::xen::XenTransport;
use ioreq_server::transport::TransportKind;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pci_host_bridge::backend;
use pci_host_bridge::broker::{policy_for, Broker, BrokerChannel, BrokerClient, BrokerDevice};
use pci_host_bridge::cli::RunArgs;
use pci_host_bridge::{HostDevice, PciConfig, PciHostBridge};

/// The worker's command line: ours without `--exit-with-parent` (the worker's parent is this
/// broker), plus `--exit-with-parent BROKER --broker-worker`.
fn worker_args(args: impl Iterator<Item = OsString>, broker: u32) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if a == "--exit-with-parent" {
            skip = true;
            continue;
        }
        if a.to_string_lossy().starts_with("--exit-with-parent=") {
            continue;
        }
        out.push(a);
    }
    out.extend([
        "--exit-with-parent".into(),
        broker.to_string().into(),
        "--broker-worker".into(),
    ]);
    out
}

/// The broker (see the module docs).
pub fn broker(r: &RunArgs, cfg: &GuestConfig, pci: &PciConfig) -> anyhow::Result<()> {
    let backends = pci
        .devices
        .iter()
        .map(|d| backend::open(d, Path::new("/sys")))
        .collect::<Result<Vec<_>, _>>()?;
    let (policy, backends) = policy_for(pci, cfg.domid, backends)?;
    // Passthrough hypercalls on a handle of their own, unrestricted: the kernel refuses
    // IOCTL_PRIVCMD_HYPERCALL on a restricted privcmd (drivers/xen/privcmd.c,
    // privcmd_ioctl_hypercall: `if (data->domid != DOMID_INVALID) return -EPERM`).
    let chan: Box<dyn PtChannel> = match cfg.transport {
        TransportKind::Xen => Box::new(XenTransport::open(cfg.domid)?),
        TransportKind::Sim => Box::new(SimTransport::connect(
            &cfg.sim.socket,
            cfg.domid,
            "pci-host-bridge/passthrough",
        )?),
    };
    let mut broker = Broker::new(policy, chan, backends)?;
    // Before the worker exists, so that no signal is lost; the worker starts with its
    // signals at their defaults.
    let signals = ioreq_server::signals::signalfd().context("signalfd")?;
    let (mine, theirs) = seqpacket::pair().context("socketpair")?;
    let mut cmd = Command::new(std::env::current_exe().context("this executable")?);
    cmd.args(worker_args(std::env::args_os().skip(1), std::process::id()))
        .stdin(Stdio::from(theirs));
    ioreq_server::signals::with_default_signals(&mut cmd);
    let mut child = cmd.spawn().context("starting the worker")?;
    drop(cmd);
    let worker = Pid::from_raw(child.id() as i32);
    // From here on the broker only answers the worker, signals it, waits for it and hands
    // back: its own allow-list (ioreq_server::sandbox::apply_broker_filter), so that a broker
    // subverted through a request can exec nothing, start nothing and open no socket. A
    // filter that cannot be installed stops the worker and fails the start.
    if r.common.no_sandbox {
        tracing::warn!("--no-sandbox: the broker serves without its seccomp filter");
    } else if let Err(e) = ioreq_server::sandbox::apply_broker_filter(worker.as_raw()) {
        // Nothing has been served yet: the worker's first request gets EOF, not an answer.
        let _ = kill(worker, Signal::SIGTERM);
        drop(mine);
        let _ = child.wait();
        return Err(e).context("the broker's seccomp filter");
    }
    tracing::info!(
        worker = child.id(),
        filtered = !r.common.no_sandbox,
        "broker: the worker serves; this process keeps the privileged handles"
    );
    let served: std::io::Result<()> = loop {
        let mut fds = [
            PollFd::new(mine.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(e.into()),
            Ok(_) => {}
        }
        let ready = |f: &PollFd| {
            f.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        if ready(&fds[1]) {
            while let Ok(Some(s)) = signals.read_signal() {
                tracing::info!(
                    signal = s.ssi_signo,
                    "broker: passing the signal on to the worker"
                );
                let _ = kill(worker, Signal::SIGTERM);
            }
        }
        if ready(&fds[0]) {
            match broker.serve_one(mine.as_fd()) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        }
    };
    if let Err(e) = &served {
        tracing::error!("broker: the worker's socket failed ({e}); stopping the worker");
        let _ = kill(worker, Signal::SIGTERM);
    }
    drop(mine);
    let status = child.wait().context("waiting for the worker")?;
    let stats = broker.stats();
    let errs = broker.hand_back();
    tracing::info!(
        executed = stats.executed,
        refused = stats.refused,
        worker = %status,
        "broker: the worker is gone"
    );
    served.context("serving the worker")?;
    if !errs.is_empty() {
        anyhow::bail!(
            "the broker's hand-back left steps undone: {}",
            errs.join("; ")
        );
    }
    if !status.success() {
        anyhow::bail!("the worker {status}");
    }
    Ok(())
}

/// The worker (see the module docs): `dev`'s functions over the broker.
pub fn worker(r: &RunArgs, cfg: &GuestConfig, pci: &PciConfig) -> anyhow::Result<()> {
    let sock = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("the broker's socket (standard input)")?;
    let client = Arc::new(BrokerClient::new(sock));
    let backends = pci
        .devices
        .iter()
        .map(|d| {
            BrokerDevice::connect(client.clone(), d.host)
                .map(|b| Box::new(b) as Box<dyn HostDevice>)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut dev = PciHostBridge::with_backends(pci, backends)?;
    if dev.needs_ioapic() {
        let socket = super::ioapic_socket(cfg, pci)?;
        super::connect_intx(&mut dev, &socket)?;
    }
    dev.set_executor(PassthroughExecutor::new(Box::new(BrokerChannel::new(
        client, cfg.domid,
    ))));
    let opts = ServerOptions::named("pci-host-bridge");
    // Deprivileged after setup (issue 12 item 2, ioreq_server::sandbox): the worker needs no
    // privilege then; its serving transport is restricted to the domid and every host access
    // and hypercall is a request to the broker.
    serve_sandboxed(&r.common, cfg, vec![Box::new(dev)], opts, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_exits_with_the_broker_not_with_the_launcher() {
        let args = [
            "run",
            "-c",
            "g.toml",
            "--exit-with-parent",
            "77",
            "--exit-with-parent=78",
            "--log",
            "debug",
        ]
        .map(OsString::from);
        let w = worker_args(args.into_iter(), 900);
        assert_eq!(
            w,
            [
                "run",
                "-c",
                "g.toml",
                "--log",
                "debug",
                "--exit-with-parent",
                "900",
                "--broker-worker"
            ]
            .map(OsString::from)
        );
    }
}
