//! The guest's p2m and I/O-port space: mapping and unmapping host frames and ports (looping
//! over Xen's partial counts, rolling back a partial map), and the iomem/ioport permissions.

use tracing::warn;

use super::{PassthroughExecutor, PtError, Run};
use xen_abi::passthrough::PtOp;

impl PassthroughExecutor {
    /// `memory_mapping` of `[gfn, gfn + nr)` to `[mfn, ...)` (add) or its removal, looping
    /// over partial counts. Returns the frames done; on an error part way the error is
    /// returned with what was done left as it is (the callers below roll back).
    fn memory_mapping_loop(&mut self, run: Run, add: bool) -> Result<(), (u64, PtError)> {
        let mut done = 0u64;
        let mut batch = run.nr;
        while done < run.nr {
            let n = batch.min(run.nr - done);
            let op = PtOp::MemoryMapping {
                gfn: run.gfn + done,
                mfn: run.mfn + done,
                nr: n,
                add,
            };
            match self.call(&op) {
                Ok(0) => done += n,
                Ok(k) if k < n => {
                    self.stats.partial += 1;
                    done += k;
                }
                Ok(k) => {
                    return Err((
                        done,
                        PtError::Invalid(format!(
                            "memory_mapping of {n} frames returned {k}: more than asked"
                        )),
                    ))
                }
                // As xc_domain_memory_mapping: halve the largest batch (not this chunk).
                Err(e) if e.errno() == Some(libc::E2BIG) && batch > 1 => batch /= 2,
                Err(e) => return Err((done, e)),
            }
        }
        Ok(())
    }

    /// Map guest frames `[gfn, gfn + nr)` to host frames `[mfn, mfn + nr)`. All or nothing:
    /// a failure part way unmaps what was mapped.
    pub fn map_memory(&mut self, gfn: u64, mfn: u64, nr: u64) -> Result<(), PtError> {
        if nr == 0 {
            return Ok(());
        }
        if self
            .mem
            .values()
            .any(|r| r.gfn < gfn.saturating_add(nr) && gfn < r.gfn + r.nr)
        {
            return Err(PtError::Invalid(format!(
                "guest frames {gfn:#x}+{nr:#x} overlap a mapped run"
            )));
        }
        let run = Run { gfn, mfn, nr };
        match self.memory_mapping_loop(run, true) {
            Ok(()) => {
                self.mem.insert(gfn, run);
                Ok(())
            }
            Err((done, e)) => {
                if done > 0 {
                    let part = Run { gfn, mfn, nr: done };
                    if let Err((_, e2)) = self.memory_mapping_loop(part, false) {
                        warn!(?part, "rolling back a partial BAR mapping failed: {e2}");
                        self.mem.insert(gfn, part);
                    }
                }
                Err(e)
            }
        }
    }

    /// Remove the mapped run starting at `gfn` (all of it, looping over partial counts).
    /// On a failure the frames not removed stay recorded, so that teardown tries again.
    pub fn unmap_memory(&mut self, gfn: u64) -> Result<(), PtError> {
        let Some(run) = self.mem.remove(&gfn) else {
            return Ok(());
        };
        match self.memory_mapping_loop(run, false) {
            Ok(()) => Ok(()),
            Err((done, e)) => {
                let rest = Run {
                    gfn: run.gfn + done,
                    mfn: run.mfn + done,
                    nr: run.nr - done,
                };
                self.mem.insert(rest.gfn, rest);
                Err(e)
            }
        }
    }

    /// The mapped memory runs.
    pub fn memory_runs(&self) -> impl Iterator<Item = &Run> {
        self.mem.values()
    }

    /// `ioport_mapping` of `nr` ports (one call: Xen maps I/O ports in one go).
    pub fn map_ioports(&mut self, gport: u32, mport: u32, nr: u32) -> Result<(), PtError> {
        self.call(&PtOp::IoportMapping {
            gport,
            mport,
            nr,
            add: true,
        })?;
        self.io.insert(gport, (mport, nr));
        Ok(())
    }

    /// Remove the I/O-port mapping starting at `gport`.
    pub fn unmap_ioports(&mut self, gport: u32) -> Result<(), PtError> {
        let Some((mport, nr)) = self.io.remove(&gport) else {
            return Ok(());
        };
        let r = self.call(&PtOp::IoportMapping {
            gport,
            mport,
            nr,
            add: false,
        });
        if r.is_err() {
            self.io.insert(gport, (mport, nr));
        }
        r.map(|_| ())
    }

    /// Grant (or revoke) the guest access to host frames.
    pub fn iomem_permission(&mut self, mfn: u64, nr: u64, allow: bool) -> Result<(), PtError> {
        self.call(&PtOp::IomemPermission { mfn, nr, allow })?;
        note_grant(&mut self.iomem, (mfn, nr), allow);
        Ok(())
    }

    /// Grant (or revoke) the guest access to host I/O ports.
    pub fn ioport_permission(&mut self, port: u32, nr: u32, allow: bool) -> Result<(), PtError> {
        self.call(&PtOp::IoportPermission { port, nr, allow })?;
        note_grant(&mut self.ioports, (port, nr), allow);
        Ok(())
    }

    /// Every memory and I/O-port mapping removed (best effort, first error returned).
    pub fn unmap_all(&mut self) -> Result<(), PtError> {
        let mut first = None;
        for gfn in self.mem.keys().copied().collect::<Vec<_>>() {
            if let Err(e) = self.unmap_memory(gfn) {
                first.get_or_insert(e);
            }
        }
        for g in self.io.keys().copied().collect::<Vec<_>>() {
            if let Err(e) = self.unmap_ioports(g) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Keep `grants` (the permissions the guest holds, as status reports them) in step with a
/// successful grant (`allow`) or revocation of `range`: listed once when granted, gone when
/// revoked. Iomem and ioport permissions keep the same books.
fn note_grant<T: PartialEq + Copy>(grants: &mut Vec<T>, range: T, allow: bool) {
    grants.retain(|&p| p != range);
    if allow {
        grants.push(range);
    }
}
