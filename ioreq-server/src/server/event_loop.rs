//! The event loop (xen-abi.md 7.2): block in the transport's wait, serve the guest's ports,
//! and handle what the watcher thread found ready (signals, the control socket and its
//! clients, the devices' fds, the retry timer) on the main thread.

use std::os::fd::{AsRawFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tracing::info;

use super::watch::{Watcher, TOKEN_TIMER};
use super::{
    Server, ServerError, TOKEN_CLIENT_BASE, TOKEN_CONTROL, TOKEN_DEVICE_BASE, TOKEN_SIGNAL,
};
use crate::device::Actions;
use crate::transport::Transport;

impl<T: Transport> Server<T> {
    pub(super) fn run_loop(&mut self) -> Result<(), ServerError> {
        // Dropped on every way out of here, a panic included: stops and joins the thread.
        let mut watch = self
            .watch
            .take()
            .ok_or_else(|| ServerError::Setup("the event loop ran before".into()))?;
        watch
            .start(&self.opts.name)
            .map_err(|e| ServerError::Io("watcher thread", e))?;
        if let Some(s) = &self.signals {
            watch
                .registry()
                .register(
                    &mut SourceFd(&s.as_raw_fd()),
                    TOKEN_SIGNAL,
                    Interest::READABLE,
                )
                .map_err(|e| ServerError::Io("register signalfd", e))?;
        }
        if let Some(c) = &mut self.control {
            c.register(watch.registry(), TOKEN_CONTROL)
                .map_err(|e| ServerError::Io("register control socket", e))?;
        }
        let mut dev_fds: Vec<RawFd> = Vec::new();
        self.sync_device_fds(watch.registry(), &mut dev_fds)?;
        let mut ready = Vec::new();
        let mut pending = Vec::new();
        // Requests may already be waiting (posted before we bound our ports).
        self.service(&mut pending)?;
        while !self.stop {
            // The only blocking call: guest ports and the watcher's wake-ups alike.
            let woken = self.transport.wait(&mut pending)?;
            if !pending.is_empty() {
                self.dispatcher.stats.wakeups += 1;
                self.service(&mut pending)?;
            }
            if woken {
                watch
                    .take_ready(&mut ready)
                    .map_err(|e| ServerError::Io("watcher", std::io::Error::other(e)))?;
                self.handle_ready(&ready, &mut watch, &mut dev_fds)?;
            }
            self.run_retries()?;
            // No system call unless the earliest retry changed (none at all while none waits).
            let due = self.retries.iter().map(|p| p.due).min();
            watch
                .set_deadline(due)
                .map_err(|e| ServerError::Io("retry timer", e))?;
        }
        Ok(())
    }

    /// Handle what the watcher found ready (on this thread: device and control state stay
    /// single-threaded).
    fn handle_ready(
        &mut self,
        ready: &[Token],
        watch: &mut Watcher,
        dev_fds: &mut Vec<RawFd>,
    ) -> Result<(), ServerError> {
        let mut device_events = Vec::new();
        for &t in ready {
            match t {
                TOKEN_SIGNAL => {
                    if let Some(sig) = self
                        .signals
                        .as_mut()
                        .and_then(|s| s.read_signal().ok().flatten())
                    {
                        info!(signal = sig.ssi_signo, "signal received, shutting down");
                        self.stop = true;
                    }
                }
                TOKEN_CONTROL => {
                    if let Some(c) = &mut self.control {
                        c.accept(watch.registry(), TOKEN_CLIENT_BASE);
                    }
                }
                TOKEN_TIMER => watch.timer_fired(),
                Token(t) if t >= TOKEN_CLIENT_BASE => self.control_client(t, watch.registry()),
                Token(t) if t >= TOKEN_DEVICE_BASE => {
                    if let Some(fd) = dev_fds.get(t - TOKEN_DEVICE_BASE) {
                        device_events.push(*fd);
                    }
                }
                _ => {}
            }
        }
        if !device_events.is_empty() {
            let mut actions = Actions::new();
            for fd in device_events {
                for d in self.dispatcher.devices.iter_mut() {
                    if d.event_fds().contains(&fd) {
                        d.on_event(fd, &mut actions);
                    }
                }
            }
            self.perform(&mut actions);
            self.sync_device_fds(watch.registry(), dev_fds)?;
        }
        Ok(())
    }

    fn sync_device_fds(
        &mut self,
        registry: &Registry,
        registered: &mut Vec<RawFd>,
    ) -> Result<(), ServerError> {
        let want: Vec<RawFd> = self
            .dispatcher
            .devices
            .iter()
            .flat_map(|d| d.event_fds())
            .collect();
        if want == *registered {
            return Ok(());
        }
        for fd in registered.iter() {
            let _ = registry.deregister(&mut SourceFd(fd));
        }
        for (i, fd) in want.iter().enumerate() {
            registry
                .register(
                    &mut SourceFd(fd),
                    Token(TOKEN_DEVICE_BASE + i),
                    Interest::READABLE,
                )
                .map_err(|e| ServerError::Io("register device fd", e))?;
        }
        *registered = want;
        Ok(())
    }

    fn control_client(&mut self, token: usize, registry: &Registry) {
        let Some(mut c) = self.control.take() else {
            return;
        };
        for cmd in c.read_commands(token, registry) {
            let reply = match cmd.get("cmd").and_then(|v| v.as_str()) {
                Some("status") => serde_json::json!({"ok": true, "status": self.status()}),
                Some("shutdown") => {
                    info!("shutdown requested on the control socket");
                    self.stop = true;
                    serde_json::json!({"ok": true})
                }
                Some(other) => {
                    let r = self
                        .dispatcher
                        .devices
                        .iter_mut()
                        .find_map(|d| d.control(other, &cmd));
                    match r {
                        Some(Ok(v)) => serde_json::json!({"ok": true, "result": v}),
                        Some(Err(e)) => serde_json::json!({"ok": false, "error": e}),
                        None => {
                            serde_json::json!({"ok": false, "error": format!("unknown command {other:?}; try status or shutdown")})
                        }
                    }
                }
                None => serde_json::json!({"ok": false, "error": "expected {\"cmd\": ...}"}),
            };
            c.reply(token, &reply);
        }
        c.finish(registry);
        self.control = Some(c);
    }
}
