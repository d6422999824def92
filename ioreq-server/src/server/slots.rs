//! The shared pages: answering every READY vCPU slot, draining the buffered ring, and
//! answering a slot whose handling was cut short.

use tracing::{debug, warn};

use super::{Server, ServerError};
use crate::device::Actions;
use crate::transport::Transport;
use xen_abi::*;

impl<T: Transport> Server<T> {
    /// Scan every vCPU slot and the buffered ring; answer everything that is ready.
    pub(super) fn service(&mut self, pending: &mut Vec<u32>) -> Result<(), ServerError> {
        if pending.iter().any(|p| Some(*p) == self.buf_port) || self.buffered.is_some() {
            self.drain_buffered();
        }
        pending.clear();
        for v in 0..self.vcpus {
            let Some(page) = &self.ioreq else {
                return Ok(());
            };
            if page.state(v) != STATE_IOREQ_READY {
                continue;
            }
            let req = page.read(v);
            page.set_state(v, STATE_IOREQ_INPROCESS);
            let mut actions = Actions::new();
            let data = self
                .dispatcher
                .handle(&req, v, &mut self.transport, &mut actions);
            // Side effects first: a BAR mapped or an MSI sent before the vCPU resumes.
            self.perform(&mut actions);
            let Some(page) = &self.ioreq else {
                return Ok(());
            };
            if let Some(d) = data {
                page.write_data(v, d);
            }
            page.set_state(v, STATE_IORESP_READY);
            self.transport.notify(self.ports[v as usize])?;
        }
        Ok(())
    }

    fn drain_buffered(&mut self) {
        let Some(page) = &self.buffered else { return };
        let mut actions = Actions::new();
        loop {
            let (r, w) = page.pointers();
            if r == w {
                break;
            }
            if w.wrapping_sub(r) > IOREQ_BUFFER_SLOT_NUM {
                // Corrupt pointers: skip to the writer rather than loop on garbage.
                warn!(
                    read = r,
                    write = w,
                    "buffered ring pointers out of range; skipping"
                );
                page.advance_read(w.wrapping_sub(r));
                break;
            }
            let s = page.slot(r);
            let mut data = u64::from(s.data);
            let mut n = 1;
            if s.size_bytes() == 8 {
                if w.wrapping_sub(r) < 2 {
                    break; // second half not published yet
                }
                data |= u64::from(page.slot(r.wrapping_add(1)).data) << 32;
                n = 2;
            }
            self.dispatcher.handle_buffered(
                s.type_(),
                u64::from(s.addr()),
                s.size_bytes(),
                data,
                &mut self.transport,
                &mut actions,
            );
            page.advance_read(n);
        }
        self.perform(&mut actions);
    }

    /// Answer a slot left INPROCESS: only a request whose handling was cut short (a panic or
    /// an error out of [`Server::service`]) is in that state here, since the loop answers
    /// each request before it looks at the next. Its vCPU would otherwise stay blocked: a read
    /// gets all-ones, as from no device.
    pub(super) fn answer_interrupted(&mut self) {
        let Some(page) = &self.ioreq else { return };
        for v in 0..self.vcpus {
            if page.state(v) != STATE_IOREQ_INPROCESS {
                continue;
            }
            let req = page.read(v);
            warn!(
                vcpu = v,
                addr = req.addr,
                "answering a request whose handling was interrupted"
            );
            if req.is_read() && !req.data_is_ptr() {
                let bits = (req.size.clamp(1, 8) * 8) as u64;
                page.write_data(v, u64::MAX >> (64 - bits));
            }
            page.set_state(v, STATE_IORESP_READY);
            if let Err(e) = self.transport.notify(self.ports[v as usize]) {
                debug!("notifying vcpu {v}: {e}");
            }
        }
    }
}
