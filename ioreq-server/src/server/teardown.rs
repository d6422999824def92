//! Teardown (xen-abi.md 7.3): disable, answer what is posted, stop the devices, answer
//! again, destroy, unmap, unbind, close.

use tracing::{debug, info, warn};

use super::Server;
use crate::device::Actions;
use crate::transport::Transport;
use xen_abi::dmop::DmOp;

impl<T: Transport> Server<T> {
    /// Disable and destroy the server, unmap, unbind (idempotent).
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        // A server set up but never run still has its watcher thread: stop and join it.
        self.watch = None;
        // Disable first: Xen then sends the guest's new accesses to no server (a read of them
        // answers all-ones, xen/arch/x86/hvm/ioreq.c's null handler), so nothing of the
        // device is reachable through us while the devices stop (a BAR unmapped by the bridge
        // must not turn into ioreqs nobody answers). Requests already posted are answered
        // before and after the devices stop: a destroyed server leaves a waiting vCPU blocked.
        let id = self.id;
        if let Err(e) = self
            .transport
            .dm_op(&DmOp::SetIoreqServerState { id, enabled: false })
        {
            warn!("disabling server {id}: {e}");
        }
        self.answer_interrupted();
        let mut none = Vec::new();
        if let Err(e) = self.service(&mut none) {
            debug!("answering the last requests: {e}");
        }
        // The devices undo what they did (unmap BARs, unbind interrupts, deassign).
        let mut actions = Actions::new();
        for d in self.dispatcher.devices.iter_mut() {
            d.stop(&mut actions);
        }
        for a in actions.drain() {
            if let Err(e) = self.execute(&a) {
                warn!(action = ?a, "teardown action failed: {e}");
            }
        }
        if let Err(e) = self.service(&mut none) {
            debug!("answering the last requests: {e}");
        }
        if let Err(e) = self.transport.dm_op(&DmOp::DestroyIoreqServer { id }) {
            warn!("destroying server {id}: {e}");
        }
        // xen-abi.md 7.3: destroy, then unmap the resource, then unbind the ports.
        self.ioreq = None;
        self.buffered = None;
        for p in self.ports.drain(..).chain(self.buf_port.take()) {
            if let Err(e) = self.transport.unbind(p) {
                debug!("unbinding port {p}: {e}");
            }
        }
        if let Some(p) = &self.opts.control_path {
            let _ = std::fs::remove_file(p);
        }
        info!(server = id, "ioreq server torn down");
    }
}
