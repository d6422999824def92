//! The supervisor of a running guest (after `xl unpause`): it watches `@releaseDomain` and the
//! domain's xenstore directory, the device models and the stop signals, and ends the guest
//! with the reason it learns (shutdown, gone, forced, a device model died, xenstore lost).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use tracing::{error, info, warn};

use crate::dm::{self, RunningDm};
use crate::exit;
use crate::reap::Reaper;
use crate::runtime::{self, Phase, State};
use crate::xenstore::Xenstore;
use crate::xl::{DomainState, ShutdownReason, Xl};

/// The token of the watch on the domain's xenstore directory.
pub(super) fn path_token(token: &str) -> String {
    format!("{token}-dir")
}

/// Why the supervisor ends.
pub(super) enum End {
    Reason(ShutdownReason),
    Gone,
    Forced,
    DmDied(String),
    /// The xenstore connection was lost (or poll failed): exit with this code.
    Lost(i32, String),
}

pub(super) struct Supervisor<'a> {
    pub(super) xl: &'a Xl,
    pub(super) domid: u32,
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) state: State,
    pub(super) dms: Vec<RunningDm>,
    pub(super) extra_files: Vec<PathBuf>,
    pub(super) stop_timeout: Duration,
    pub(super) shutdown_timeout: Duration,
    pub(super) token: String,
    pub(super) reaper: Option<Reaper>,
}

impl Supervisor<'_> {
    pub(super) fn run(mut self, sig: &SignalFd, xs: &mut Xenstore) -> i32 {
        let mut deadline: Option<Instant> = None;
        let mut requested = false;
        if let Some(why) = self.dead_dm() {
            return self.end(End::DmDied(why));
        }
        // The watch fires once at registration; the first check also covers a domain that
        // went away between unpause and now.
        loop {
            if !xs.has_queued_events() {
                let timeout = match deadline {
                    None => PollTimeout::NONE,
                    Some(d) => {
                        let ms = d.saturating_duration_since(Instant::now()).as_millis();
                        PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                            .unwrap_or(PollTimeout::MAX)
                    }
                };
                let mut fds = [
                    PollFd::new(sig.as_fd(), PollFlags::POLLIN),
                    PollFd::new(xs.fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        return self.end(End::Lost(exit::ERROR, format!("poll: {e}")));
                    }
                }
                let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
                let xs_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
                if sig_ready {
                    while let Ok(Some(si)) = sig.read_signal() {
                        match Signal::try_from(si.ssi_signo as i32) {
                            Ok(Signal::SIGCHLD) => {
                                self.check_reaper();
                                if let Some(why) = self.dead_dm() {
                                    // A device model may exit because the domain went away
                                    // (its event channels die with it): then that is the end.
                                    return match self.xl.state(self.domid) {
                                        Ok(DomainState::Shutdown(r)) => self.end(End::Reason(r)),
                                        Ok(DomainState::Dying | DomainState::Gone) => {
                                            self.end(End::Gone)
                                        }
                                        _ => self.end(End::DmDied(why)),
                                    };
                                }
                            }
                            Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => {
                                if requested {
                                    warn!("second {s}: destroying domain {} now", self.domid);
                                    let _ = self.xl.destroy(&self.domid.to_string());
                                    return self.end(End::Forced);
                                }
                                requested = true;
                                self.state.phase = Phase::Stopping;
                                let _ = self.state.save(&self.dir);
                                crate::notify::notify("STOPPING=1");
                                info!("{s}: asking guest {} (domid {}) to shut down (ACPI power button and xenstore control/shutdown); destroy after {} s",
                                    self.name, self.domid, self.shutdown_timeout.as_secs());
                                dm::press_power_button(self.dms.iter().map(|d| &d.rec));
                                match xs.request_poweroff(self.domid) {
                                    Ok(()) => {
                                        deadline = Some(Instant::now() + self.shutdown_timeout)
                                    }
                                    Err(e) => {
                                        warn!(
                                            "cannot write control/shutdown ({e}): destroying domain {}",
                                            self.domid
                                        );
                                        let _ = self.xl.destroy(&self.domid.to_string());
                                        return self.end(End::Forced);
                                    }
                                }
                            }
                            Ok(s) => info!("{s} ignored"),
                            Err(_) => {}
                        }
                    }
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    warn!(
                        "guest {} did not shut down within {} s of the request: destroying domain {}",
                        self.name,
                        self.shutdown_timeout.as_secs(),
                        self.domid
                    );
                    if let Ok(DomainState::Shutdown(r)) = self.xl.state(self.domid) {
                        return self.end(End::Reason(r));
                    }
                    let _ = self.xl.destroy(&self.domid.to_string());
                    return self.end(End::Forced);
                }
                if !xs_ready {
                    continue;
                }
            }
            match xs.next_event() {
                Ok(ev) if ev.token == path_token(&self.token) => {
                    match xs.read(&format!("/local/domain/{}", self.domid)) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            info!(
                                "domain {}'s xenstore directory is gone: it is being destroyed",
                                self.domid
                            );
                            return self.end(End::Gone);
                        }
                        Err(e) => {
                            return self.end(End::Lost(
                                exit::LOST_XENSTORE,
                                format!("lost the xenstore connection: {e}"),
                            ));
                        }
                    }
                }
                Ok(ev) if ev.token == self.token => match self.xl.state(self.domid) {
                    Ok(DomainState::Alive) => {}
                    Ok(DomainState::Shutdown(r)) => return self.end(End::Reason(r)),
                    Ok(DomainState::Dying | DomainState::Gone) => return self.end(End::Gone),
                    Err(e) => warn!("cannot read domain {}'s state: {e}", self.domid),
                },
                Ok(_) => {}
                Err(e) => {
                    return self.end(End::Lost(
                        exit::LOST_XENSTORE,
                        format!("lost the xenstore connection: {e}"),
                    ));
                }
            }
        }
    }

    fn dead_dm(&mut self) -> Option<String> {
        for d in &mut self.dms {
            if let Some(st) = d.try_reap() {
                return Some(format!(
                    "{} (pid {}) {}",
                    d.rec.name,
                    d.rec.pid,
                    dm::describe(st)
                ));
            }
        }
        None
    }

    /// The reaper should live as long as we do; if it died (someone killed it), say what
    /// that means.
    fn check_reaper(&mut self) {
        if let Some(st) = self.reaper.as_mut().and_then(Reaper::exited) {
            let pid = self.reaper.take().map_or(0, |r| r.pid());
            warn!(
                "the reaper (pid {pid}) {}: if this supervisor dies now, nobody destroys domain {} \
                 (`pvh-dm destroy {}` does)",
                dm::describe(st),
                self.domid,
                self.domid
            );
            self.state.reaper = None;
            let _ = self.state.save(&self.dir);
        }
    }

    fn end(mut self, why: End) -> i32 {
        self.state.phase = Phase::Stopping;
        let _ = self.state.save(&self.dir);
        crate::notify::notify("STOPPING=1");
        let (code, msg) = match &why {
            End::Reason(r) => (
                exit::for_reason(*r),
                format!("guest {} (domid {}) shut down: {r}", self.name, self.domid),
            ),
            End::Gone => (
                exit::GONE,
                format!(
                    "domain {} ({}) was destroyed without a shutdown reason (xl destroy from outside?)",
                    self.domid, self.name
                ),
            ),
            End::Forced => (
                exit::FORCED,
                format!("domain {} ({}) destroyed after a stop request", self.domid, self.name),
            ),
            End::DmDied(w) => (
                exit::DM_DIED,
                format!(
                    "device model {w}: destroying domain {} ({}), whose vCPUs would wait forever on requests nobody serves",
                    self.domid, self.name
                ),
            ),
            // The device models exit with us (--exit-with-parent): the guest cannot be left
            // running without a supervisor.
            End::Lost(code, w) => (
                *code,
                format!(
                    "{w}: the end of domain {} ({}) can no longer be seen; destroying it",
                    self.domid, self.name
                ),
            ),
        };
        if matches!(why, End::DmDied(_) | End::Lost(..)) {
            error!("{msg}");
        } else {
            info!("{msg}");
        }
        let bridge_died = matches!(&why, End::DmDied(w) if w.starts_with("pci-host-bridge "));
        if bridge_died && !self.state.devices.is_empty() {
            error!(
                "pci-host-bridge died without handing back {}: once the domain is destroyed Xen quarantines them \
                 (owner dom_io); `pci-host-bridge reclaim` does the reset, PHYSDEVOP_release_msix and \
                 XEN_DOMCTL_deassign_device from DOMID_IO next",
                self.state.devices.join(", ")
            );
        }
        // The device models stop before `xl destroy`, not after: on the rig (Xen 4.17, a PVH
        // guest with a VF) `xl destroy` did not return while they still ran — the VF was
        // already in DomIO, the domain still listed, a dom0 vCPU busy in the destroy
        // hypercall's continuation for minutes. A domain whose vCPUs may still run (a device
        // model died, or we cannot see its end) is paused first, so that nothing it does
        // meets a half-stopped device model; a shut-down domain runs nothing.
        let destroy = matches!(why, End::Reason(_) | End::DmDied(_) | End::Lost(..));
        if matches!(why, End::DmDied(_) | End::Lost(..)) {
            if let Err(e) = self.xl.pause(self.domid) {
                warn!("xl pause {}: {e}", self.domid);
            }
        }
        let stopped = dm::stop_all(&mut self.dms, self.stop_timeout);
        if destroy {
            if let Err(e) = self.xl.destroy(&self.domid.to_string()) {
                warn!("xl destroy {}: {e}", self.domid);
            }
        }
        if bridge_died && !self.state.devices.is_empty() {
            let _ = dm::reclaim(&self.state);
        }
        for f in &self.extra_files {
            let _ = std::fs::remove_file(f);
            if let Some(d) = f.parent() {
                let _ = std::fs::remove_dir(d);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            warn!("removing {}: {e}", self.dir.display());
        }
        eprintln!(
            "pvh-dm: {msg}; device models stopped ({}); exit {code}",
            stopped.join(", ")
        );
        runtime::record_end(
            self.dir.parent().unwrap_or(Path::new("/")),
            &self.name,
            &serde_json::json!({
                "name": self.name,
                "domid": self.domid,
                "exit_code": code,
                "end": match &why {
                    End::Reason(_) => "shutdown",
                    End::Gone => "destroyed_from_outside",
                    End::Forced => "forced",
                    End::DmDied(_) => "device_model_died",
                    End::Lost(..) => "lost_xenstore",
                },
                "reason": match &why { End::Reason(r) => Some(r.to_string()), _ => None },
                "reason_code": match &why { End::Reason(r) => Some(r.code()), _ => None },
                "message": msg,
                "device_models": stopped,
            }),
        );
        if let Some(r) = self.reaper.take() {
            r.done();
        }
        code
    }
}
