//! Carrying out the devices' actions (MSIs, shutdown requests) through the transport, with
//! the retry queue for those that fail.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::{error, info, warn};

use super::{Pending, Server, ServerError};
use crate::device::{Action, Actions};
use crate::transport::{Transport, TransportError};
use xen_abi::dmop::DmOp;

impl<T: Transport> Server<T> {
    pub(super) fn execute(&mut self, a: &Action) -> Result<(), TransportError> {
        execute_action(&mut self.transport, a)
    }

    /// Carry out actions in order; failures go to the retry queue.
    pub(super) fn perform(&mut self, actions: &mut Actions) {
        for a in actions.drain() {
            match self.execute(&a) {
                Ok(()) => self.dispatcher.stats.actions_done += 1,
                Err(e) => {
                    self.dispatcher.stats.actions_failed += 1;
                    warn!(action = ?a, "action failed, will retry: {e}");
                    let due = Instant::now() + self.opts.retry_delay;
                    self.retries.push_back(Pending {
                        action: a,
                        attempts: 1,
                        due,
                        last: e.to_string(),
                    });
                }
            }
        }
    }

    pub(super) fn run_retries(&mut self) -> Result<(), ServerError> {
        if self.retries.is_empty() {
            // No clock read on the hot path (one syscall per ioreq saved).
            return Ok(());
        }
        let now = Instant::now();
        let mut keep = VecDeque::new();
        while let Some(mut p) = self.retries.pop_front() {
            if p.due > now {
                keep.push_back(p);
                continue;
            }
            match self.execute(&p.action) {
                Ok(()) => {
                    info!(action = ?p.action, attempts = p.attempts + 1, "action delivered after retry");
                    self.dispatcher.stats.actions_done += 1;
                }
                Err(e) => {
                    self.dispatcher.stats.actions_failed += 1;
                    p.attempts += 1;
                    p.last = e.to_string();
                    if p.attempts > self.opts.action_retries {
                        error!(action = ?p.action, attempts = p.attempts, "action could not be delivered: {e}");
                        self.retries = keep;
                        return Err(ServerError::ActionFailed {
                            action: p.action,
                            attempts: p.attempts,
                            last: p.last,
                        });
                    }
                    let delay = self.opts.retry_delay * 2u32.saturating_pow(p.attempts.min(16) - 1);
                    warn!(action = ?p.action, attempts = p.attempts, retry_in = ?delay, "action failed again: {e}");
                    p.due = now + delay;
                    keep.push_back(p);
                }
            }
        }
        self.retries = keep;
        Ok(())
    }
}

/// Carry out one action through the transport.
pub(super) fn execute_action<T: Transport>(
    transport: &mut T,
    a: &Action,
) -> Result<(), TransportError> {
    match *a {
        Action::InjectMsi { addr, data } => {
            transport.dm_op(&DmOp::InjectMsi { addr, data }).map(|_| ())
        }
        Action::Shutdown { reason } => {
            info!(?reason, "asking the hypervisor to shut the guest down");
            transport
                .dm_op(&DmOp::RemoteShutdown {
                    reason: reason.code(),
                })
                .map(|_| ())
        }
    }
}
