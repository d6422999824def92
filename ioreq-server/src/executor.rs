//! The passthrough executor: the one owner of what a device model has set up in Xen for a
//! guest (mapped p2m runs, I/O-port mappings, iomem/ioport permissions, pirqs and their
//! bindings, assignments, MSI-X preparation), and the synchronous calls that change it.
//!
//! A device calls it and sees the result at once, so it can roll back or refuse (the
//! vm-superio / cloud-hypervisor shape); nothing is queued and retried later in another order.
//! What Xen does partly is finished here:
//! - `XEN_DOMCTL_memory_mapping` maps or unmaps at most 64 iterations per call and returns the
//!   number of frames done, positive (`map_mmio_regions`/`unmap_mmio_regions`,
//!   xen/arch/x86/mm/p2m.c:1670-1738 in 4.17; domctl.h "positive partial success ... requiring
//!   re-invocation by the caller"). The executor loops from the returned count, halves the batch
//!   on `E2BIG` (as libxenctrl's `xc_domain_memory_mapping` does) and, when a map fails part
//!   way, unmaps what it mapped.
//! - Only `EBUSY`, `EAGAIN` and `ERESTART` are transient (a few immediate retries); every other
//!   errno is Xen's answer and goes back to the caller.
//!
//! The hypercalls go through a [`PtChannel`]: any [`Transport`] is one (on Xen a privcmd handle
//! that is *not* restricted, since the kernel refuses `IOCTL_PRIVCMD_HYPERCALL` on a restricted
//! one; on xen-sim a connection of its own), and tests use a scripted fake.

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::{debug, info, warn};

use crate::transport::{errno_name, Transport, TransportError};
use xen_abi::passthrough::PtOp;
use xen_abi::DomId;

/// Where passthrough hypercalls go.
pub trait PtChannel {
    /// The guest.
    fn domid(&self) -> DomId;
    /// One hypercall, once: its value ([`PtOp::decode_result`]) or the error.
    fn call(&mut self, op: &PtOp) -> Result<u64, TransportError>;
}

impl<T: Transport> PtChannel for T {
    fn domid(&self) -> DomId {
        Transport::domid(self)
    }
    fn call(&mut self, op: &PtOp) -> Result<u64, TransportError> {
        self.passthrough(op)
    }
}

/// A passthrough call that did not (entirely) happen.
#[derive(Debug, thiserror::Error)]
pub enum PtError {
    /// Xen refused it with this errno (positive).
    #[error("{op} refused by Xen: {}", errno_name(*.errno))]
    Refused {
        /// What was asked.
        op: String,
        /// The errno.
        errno: i32,
    },
    /// The channel itself failed (not an answer from Xen).
    #[error("{op}: {source}")]
    Channel {
        /// What was asked.
        op: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// A request the executor refuses before asking Xen (inconsistent with its state).
    #[error("{0}")]
    Invalid(String),
}

impl PtError {
    /// The errno, when Xen answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            PtError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// `ERESTART` as Xen returns it (Linux's value; xen/include/public/errno.h `XEN_ERESTART` 85).
pub const ERESTART: i32 = 85;

/// Whether Xen says "try again".
pub fn transient(errno: i32) -> bool {
    errno == libc::EBUSY || errno == libc::EAGAIN || errno == ERESTART
}

/// How often a transient failure is retried at once.
const TRANSIENT_RETRIES: u32 = 4;

/// One MSI / MSI-X vector (block) as it is mapped and bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MsiBind {
    /// Host function, `seg << 16 | bus << 8 | devfn`.
    pub sbdf: u32,
    /// MSI-X table entry (0 for MSI).
    pub entry: u32,
    /// For MSI-X: the host address of the BAR holding the table (Xen adds the table offset
    /// itself and compares this with the BAR it reads, xen/arch/x86/msi.c:847-860). 0 for MSI.
    pub table_base: u64,
    /// Vectors (multi-message MSI), 1 otherwise.
    pub nvec: u32,
    /// Guest vector.
    pub gvec: u8,
    /// `XEN_DOMCTL_VMSI_X86_*`.
    pub gflags: u32,
    /// Guest-physical address of the MSI-X table (0 for MSI); registered with Xen's msixtbl
    /// on the first bind only (xen/drivers/passthrough/x86/hvm.c:311-313).
    pub gtable: u64,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct Pirq {
    pirq: u32,
    bind: MsiBind,
    bound: bool,
}

/// A mapped run of guest frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Run {
    /// First guest frame.
    pub gfn: u64,
    /// First host frame.
    pub mfn: u64,
    /// Frames.
    pub nr: u64,
}

/// Counters for the status socket.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ExecStats {
    /// Hypercalls issued.
    pub calls: u64,
    /// Of those, refused by Xen.
    pub refused: u64,
    /// Transient failures retried.
    pub retried: u64,
    /// memory_mapping calls that did part of the work.
    pub partial: u64,
}

/// The executor (see the module docs).
pub struct PassthroughExecutor {
    chan: Box<dyn PtChannel>,
    /// Mapped memory runs by first gfn.
    mem: BTreeMap<u64, Run>,
    /// Mapped I/O-port runs by first guest port: (host port, count).
    io: BTreeMap<u32, (u32, u32)>,
    /// Granted iomem permissions (mfn, nr).
    iomem: Vec<(u64, u64)>,
    /// Granted ioport permissions (port, nr).
    ioports: Vec<(u32, u32)>,
    /// Pirqs by (sbdf, entry).
    pirqs: BTreeMap<(u32, u32), Pirq>,
    /// Functions assigned to the guest.
    assigned: Vec<u32>,
    /// Functions whose MSI-X table Xen has read (`prepare_msix`).
    prepared: Vec<u32>,
    stats: ExecStats,
}

impl std::fmt::Debug for PassthroughExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassthroughExecutor")
            .field("domid", &self.chan.domid())
            .field("mem", &self.mem)
            .field("pirqs", &self.pirqs)
            .finish_non_exhaustive()
    }
}

impl PassthroughExecutor {
    /// An executor issuing its hypercalls on `chan`.
    pub fn new(chan: Box<dyn PtChannel>) -> Self {
        PassthroughExecutor {
            chan,
            mem: BTreeMap::new(),
            io: BTreeMap::new(),
            iomem: Vec::new(),
            ioports: Vec::new(),
            pirqs: BTreeMap::new(),
            assigned: Vec::new(),
            prepared: Vec::new(),
            stats: ExecStats::default(),
        }
    }

    /// An executor that believes exactly what this one does (mappings, permissions, pirqs,
    /// assignments, counters) but issues its hypercalls on `chan`: for tests and fuzz targets
    /// that start many runs from one prepared state, with `chan` over a copy of that state's
    /// (fake) Xen. Nothing is called. Test support: behind the `testing` feature.
    #[cfg(any(test, feature = "testing"))]
    pub fn fork(&self, chan: Box<dyn PtChannel>) -> Self {
        PassthroughExecutor {
            chan,
            mem: self.mem.clone(),
            io: self.io.clone(),
            iomem: self.iomem.clone(),
            ioports: self.ioports.clone(),
            pirqs: self.pirqs.clone(),
            assigned: self.assigned.clone(),
            prepared: self.prepared.clone(),
            stats: self.stats,
        }
    }

    /// The guest.
    pub fn domid(&self) -> DomId {
        self.chan.domid()
    }

    /// One hypercall with the transient retries.
    pub fn call(&mut self, op: &PtOp) -> Result<u64, PtError> {
        let mut attempt = 0;
        loop {
            self.stats.calls += 1;
            match self.chan.call(op) {
                Ok(v) => return Ok(v),
                Err(TransportError::Hypervisor { errno, .. })
                    if transient(errno) && attempt < TRANSIENT_RETRIES =>
                {
                    attempt += 1;
                    self.stats.retried += 1;
                    debug!(?op, attempt, "transient {}: retrying", errno_name(errno));
                    std::thread::sleep(std::time::Duration::from_millis(1 << attempt));
                }
                Err(TransportError::Hypervisor { errno, .. }) => {
                    self.stats.refused += 1;
                    return Err(PtError::Refused {
                        op: format!("{op:?}"),
                        errno,
                    });
                }
                Err(source) => {
                    return Err(PtError::Channel {
                        op: format!("{op:?}"),
                        source,
                    })
                }
            }
        }
    }

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
        self.iomem.retain(|&p| p != (mfn, nr));
        if allow {
            self.iomem.push((mfn, nr));
        }
        Ok(())
    }

    /// Grant (or revoke) the guest access to host I/O ports.
    pub fn ioport_permission(&mut self, port: u32, nr: u32, allow: bool) -> Result<(), PtError> {
        self.call(&PtOp::IoportPermission { port, nr, allow })?;
        self.ioports.retain(|&p| p != (port, nr));
        if allow {
            self.ioports.push((port, nr));
        }
        Ok(())
    }

    /// Whether the guest has an IOMMU context and `sbdf` could be assigned to it: Xen's
    /// `test_assign_device` against the guest (EOPNOTSUPP: no IOMMU context,
    /// xen/drivers/passthrough/iommu.c:615-622 in 4.17; EINVAL: owned by another domain or
    /// unknown to Xen, pci.c:1642-1649).
    pub fn test_assign(&mut self, sbdf: u32) -> Result<(), PtError> {
        self.call_once(&PtOp::TestAssignDevice { sbdf }).map(|_| ())
    }

    /// The guest's `max_pages` (4 KiB frames).
    pub fn domain_max_pages(&mut self) -> Result<u64, PtError> {
        self.call(&PtOp::GetDomainInfo)
    }

    /// Whether the guest still exists (getdomaininfo answers for it).
    pub fn domain_alive(&mut self) -> bool {
        self.domain_max_pages().is_ok()
    }

    /// The guest is gone: Xen destroyed its p2m, pirqs and permissions with it and moved its
    /// devices to dom_io (xen/drivers/passthrough/pci.c:849-859), so forget them without
    /// asking; what stays is what dom0 must still undo (`release_msix`, the assignments,
    /// which [`PassthroughExecutor::deassign`] takes back from dom_io).
    pub fn forget_domain(&mut self) {
        info!(
            domid = self.domid(),
            runs = self.mem.len(),
            pirqs = self.pirqs.len(),
            "the guest is gone: its mappings, pirqs and permissions went with it"
        );
        self.mem.clear();
        self.io.clear();
        self.pirqs.clear();
        self.iomem.clear();
        self.ioports.clear();
    }

    /// A call without the transient retries (for probes whose EBUSY is an answer).
    fn call_once(&mut self, op: &PtOp) -> Result<u64, PtError> {
        self.stats.calls += 1;
        self.chan.call(op).map_err(|e| match e {
            TransportError::Hypervisor { errno, .. } => {
                self.stats.refused += 1;
                PtError::Refused {
                    op: format!("{op:?}"),
                    errno,
                }
            }
            source => PtError::Channel {
                op: format!("{op:?}"),
                source,
            },
        })
    }

    /// `PHYSDEVOP_prepare_msix` while dom0 owns the function. Xen answers EBUSY when an
    /// MSI-X entry of the function is in use (`pci_prepare_msix`, xen/arch/x86/msi.c:1142-1166
    /// in 4.17: `used_entries != 0`), which after dom0's driver let go means an earlier
    /// prepare was never released (a device model that died): the table is known to Xen
    /// then, so that is taken as done (and released at the end).
    pub fn prepare_msix(&mut self, sbdf: u32) -> Result<(), PtError> {
        match self.call_once(&PtOp::PrepareMsix { sbdf }) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::EBUSY) => {
                warn!(
                    sbdf,
                    "prepare_msix: EBUSY (an earlier prepare was not released); continuing"
                )
            }
            Err(e) => return Err(e),
        }
        if !self.prepared.contains(&sbdf) {
            self.prepared.push(sbdf);
        }
        Ok(())
    }

    /// Take over a `prepare_msix` another process made (a device model that died), so that
    /// [`PassthroughExecutor::release_msix`] releases it.
    pub fn adopt_prepared(&mut self, sbdf: u32) {
        if !self.prepared.contains(&sbdf) {
            self.prepared.push(sbdf);
        }
    }

    /// `PHYSDEVOP_release_msix` (only if this executor prepared it). Xen wants exactly the
    /// prepare's own entry in use then (`used_entries == 1`, msi.c:1154), i.e. every pirq of
    /// the function unmapped first.
    pub fn release_msix(&mut self, sbdf: u32) -> Result<(), PtError> {
        if !self.prepared.contains(&sbdf) {
            return Ok(());
        }
        self.call(&PtOp::ReleaseMsix { sbdf })?;
        self.prepared.retain(|&s| s != sbdf);
        Ok(())
    }

    /// `assign_device` to the guest.
    pub fn assign(&mut self, sbdf: u32) -> Result<(), PtError> {
        self.call(&PtOp::AssignDevice { sbdf })?;
        if !self.assigned.contains(&sbdf) {
            self.assigned.push(sbdf);
        }
        Ok(())
    }

    /// `deassign_device` from the guest; if the guest is gone (or Xen says the function is
    /// not the guest's: it was quarantined when the domain died, xen/drivers/passthrough/
    /// pci.c:849-859), from `DOMID_IO` instead, which hands it back to dom0.
    pub fn deassign(&mut self, sbdf: u32) -> Result<(), PtError> {
        let r = self.call(&PtOp::DeassignDevice {
            sbdf,
            from_dom_io: false,
        });
        let r = match r {
            Ok(_) => {
                // With quarantine on (the default, xen/drivers/passthrough/Kconfig:46) Xen
                // deassigns to dom_io; taking it from there returns it to dom0.
                self.call(&PtOp::DeassignDevice {
                    sbdf,
                    from_dom_io: true,
                })
                .map(|_| ())
                .or_else(|e| match e.errno() {
                    // Not quarantined (iommu=no-quarantine): already dom0's.
                    Some(libc::EINVAL) | Some(libc::ENODEV) | Some(libc::ESRCH) => Ok(()),
                    _ => Err(e),
                })
            }
            Err(e) => {
                info!(
                    sbdf,
                    "deassign from the guest failed ({e}); taking it out of Xen's quarantine"
                );
                self.call(&PtOp::DeassignDevice {
                    sbdf,
                    from_dom_io: true,
                })
                .map(|_| ())
            }
        };
        if r.is_ok() {
            self.assigned.retain(|&s| s != sbdf);
        }
        r
    }

    /// Map (if needed) and bind an MSI / MSI-X vector (block); returns the first pirq.
    /// A vector already mapped with the same size and table keeps its pirq and is rebound
    /// (Xen updates gvec/gflags of a bound pirq, hvm.c:344-356); a changed `gtable` is unbound
    /// first, since Xen registers the guest table only on the first bind. If binding fails,
    /// a pirq mapped by this call is unmapped again.
    pub fn bind_msi(&mut self, b: MsiBind) -> Result<u32, PtError> {
        let key = (b.sbdf, b.entry);
        let nvec = b.nvec.max(1);
        let b = MsiBind { nvec, ..b };
        if let Some(p) = self.pirqs.get(&key).copied() {
            if p.bind.nvec != nvec || p.bind.table_base != b.table_base {
                self.unbind_msi(b.sbdf, b.entry)?;
            } else if p.bound && p.bind.gtable != b.gtable {
                self.unbind_vectors(key)?;
            }
        }
        let fresh = !self.pirqs.contains_key(&key);
        let pirq = match self.pirqs.get(&key) {
            Some(p) => p.pirq,
            None => {
                let v = self.call(&PtOp::MapPirqMsi {
                    sbdf: b.sbdf,
                    entry: b.entry,
                    table_base: b.table_base,
                    nvec,
                })?;
                let pirq = u32::try_from(v)
                    .map_err(|_| PtError::Invalid(format!("map_pirq returned {v}")))?;
                self.pirqs.insert(
                    key,
                    Pirq {
                        pirq,
                        bind: b,
                        bound: false,
                    },
                );
                pirq
            }
        };
        // Multi-message MSI: vector i of the block is pirq + i, delivered as gvec + i (the
        // guest's base vector is aligned to nvec), as Xen's own vPCI binds them.
        for i in 0..nvec {
            let op = PtOp::BindPtIrqMsi {
                pirq: pirq + i,
                gvec: b.gvec.wrapping_add(i as u8),
                gflags: b.gflags,
                gtable: b.gtable,
            };
            if let Err(e) = self.call(&op) {
                if fresh {
                    for j in 0..i {
                        let _ = self.call(&PtOp::UnbindPtIrqMsi {
                            pirq: pirq + j,
                            gvec: b.gvec.wrapping_add(j as u8),
                            gflags: b.gflags,
                            gtable: b.gtable,
                        });
                    }
                    if let Err(e2) = self.call(&PtOp::UnmapPirq { pirq }) {
                        warn!(pirq, "unmapping after a failed bind also failed: {e2}");
                    } else {
                        self.pirqs.remove(&key);
                    }
                }
                return Err(e);
            }
        }
        self.pirqs.insert(
            key,
            Pirq {
                pirq,
                bind: b,
                bound: true,
            },
        );
        Ok(pirq)
    }

    fn unbind_vectors(&mut self, key: (u32, u32)) -> Result<(), PtError> {
        let Some(p) = self.pirqs.get(&key).copied() else {
            return Ok(());
        };
        if !p.bound {
            return Ok(());
        }
        for i in 0..p.bind.nvec {
            self.call(&PtOp::UnbindPtIrqMsi {
                pirq: p.pirq + i,
                gvec: p.bind.gvec.wrapping_add(i as u8),
                gflags: p.bind.gflags,
                gtable: p.bind.gtable,
            })?;
        }
        if let Some(p) = self.pirqs.get_mut(&key) {
            p.bound = false;
        }
        Ok(())
    }

    /// Unbind every vector of `(sbdf, entry)` and unmap its pirq block.
    pub fn unbind_msi(&mut self, sbdf: u32, entry: u32) -> Result<(), PtError> {
        let key = (sbdf, entry);
        self.unbind_vectors(key)?;
        let Some(p) = self.pirqs.get(&key).copied() else {
            return Ok(());
        };
        self.call(&PtOp::UnmapPirq { pirq: p.pirq })?;
        self.pirqs.remove(&key);
        Ok(())
    }

    /// The pirq of `(sbdf, entry)` if mapped, and whether it is bound.
    pub fn pirq(&self, sbdf: u32, entry: u32) -> Option<(u32, bool)> {
        self.pirqs.get(&(sbdf, entry)).map(|p| (p.pirq, p.bound))
    }

    /// Every pirq of function `sbdf` unbound and unmapped (best effort: the first error is
    /// returned after trying them all).
    pub fn unbind_all(&mut self, sbdf: u32) -> Result<(), PtError> {
        let keys: Vec<_> = self.pirqs.keys().filter(|k| k.0 == sbdf).copied().collect();
        let mut first = None;
        for (s, e) in keys {
            if let Err(err) = self.unbind_msi(s, e) {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
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

    /// What is set up in Xen now, for the status socket.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "mapped_runs": self.mem.values().collect::<Vec<_>>(),
            "mapped_frames": self.mem.values().map(|r| r.nr).sum::<u64>(),
            "io_mappings": self.io.len(),
            "iomem_permissions": self.iomem.len(),
            "ioport_permissions": self.ioports.len(),
            "pirqs": self.pirqs.iter().map(|((s, e), p)| serde_json::json!({
                "sbdf": s, "entry": e, "pirq": p.pirq, "bound": p.bound, "gvec": p.bind.gvec,
            })).collect::<Vec<_>>(),
            "assigned": self.assigned,
            "msix_prepared": self.prepared,
            "stats": self.stats,
        })
    }

    /// Counters.
    pub fn stats(&self) -> ExecStats {
        self.stats
    }
}

/// A scripted [`PtChannel`] for tests: records every op and answers from a rule.
pub mod fake {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What the fake answers: `Ok(value)` or `Err(errno)`.
    pub type Rule = Box<dyn FnMut(&PtOp) -> Result<u64, i32>>;

    /// A fake channel; clones share the log.
    pub struct FakeChannel {
        domid: DomId,
        log: Arc<Mutex<Vec<PtOp>>>,
        rule: Rule,
    }

    impl FakeChannel {
        /// A channel for `domid` that answers every op with 0 (map_pirq: 100 + entry).
        pub fn new(domid: DomId) -> (Self, Arc<Mutex<Vec<PtOp>>>) {
            Self::with_rule(
                domid,
                Box::new(|op| match op {
                    PtOp::MapPirqMsi { entry, .. } => Ok(100 + u64::from(*entry)),
                    PtOp::GetDomainInfo => Ok(256 * 256),
                    _ => Ok(0),
                }),
            )
        }

        /// A channel answering with `rule`.
        pub fn with_rule(domid: DomId, rule: Rule) -> (Self, Arc<Mutex<Vec<PtOp>>>) {
            let log = Arc::new(Mutex::new(Vec::new()));
            (
                FakeChannel {
                    domid,
                    log: log.clone(),
                    rule,
                },
                log,
            )
        }
    }

    impl PtChannel for FakeChannel {
        fn domid(&self) -> DomId {
            self.domid
        }
        fn call(&mut self, op: &PtOp) -> Result<u64, TransportError> {
            if let Ok(mut l) = self.log.lock() {
                l.push(op.clone());
            }
            (self.rule)(op).map_err(|errno| TransportError::Hypervisor {
                what: format!("{op:?}"),
                errno,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeChannel;
    use super::*;

    /// Xen 4.17's map_mmio_regions on 4 KiB pages: 64 frames a call.
    fn xen_like(op: &PtOp) -> Result<u64, i32> {
        match *op {
            PtOp::MemoryMapping { nr, .. } if nr > 64 => Ok(64),
            _ => Ok(0),
        }
    }

    #[test]
    fn memory_mapping_loops_over_partial_counts() {
        let (c, log) = FakeChannel::with_rule(3, Box::new(xen_like));
        let mut x = PassthroughExecutor::new(Box::new(c));
        x.map_memory(0xF1000, 0xE0000, 200).unwrap();
        let sent: Vec<_> = log
            .lock()
            .unwrap()
            .iter()
            .map(|o| match *o {
                PtOp::MemoryMapping { gfn, mfn, nr, add } => (gfn, mfn, nr, add),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            sent,
            vec![
                (0xF1000, 0xE0000, 200, true),
                (0xF1040, 0xE0040, 136, true),
                (0xF1080, 0xE0080, 72, true),
                (0xF10C0, 0xE00C0, 8, true),
            ]
        );
        log.lock().unwrap().clear();
        x.unmap_memory(0xF1000).unwrap();
        assert_eq!(log.lock().unwrap().len(), 4, "unmap loops too");
        assert_eq!(x.memory_runs().count(), 0);
    }

    #[test]
    fn failed_map_rolls_back_what_it_mapped() {
        let mut calls = 0;
        let (c, log) = FakeChannel::with_rule(
            3,
            Box::new(move |op| match *op {
                PtOp::MemoryMapping { add: true, .. } => {
                    calls += 1;
                    if calls == 1 {
                        Ok(64)
                    } else {
                        Err(libc::ENOMEM)
                    }
                }
                _ => Ok(0),
            }),
        );
        let mut x = PassthroughExecutor::new(Box::new(c));
        let e = x.map_memory(0x100, 0x200, 100).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOMEM));
        let l = log.lock().unwrap();
        assert_eq!(
            l.last(),
            Some(&PtOp::MemoryMapping {
                gfn: 0x100,
                mfn: 0x200,
                nr: 64,
                add: false
            })
        );
        assert_eq!(x.memory_runs().count(), 0);
    }

    #[test]
    fn e2big_halves_the_batch() {
        let (c, log) = FakeChannel::with_rule(
            3,
            Box::new(|op| match *op {
                PtOp::MemoryMapping { nr, .. } if nr > 16 => Err(libc::E2BIG),
                _ => Ok(0),
            }),
        );
        let mut x = PassthroughExecutor::new(Box::new(c));
        x.map_memory(0, 0, 40).unwrap();
        let nrs: Vec<u64> = log
            .lock()
            .unwrap()
            .iter()
            .map(|o| match *o {
                PtOp::MemoryMapping { nr, .. } => nr,
                _ => 0,
            })
            .collect();
        assert_eq!(nrs, vec![40, 20, 10, 10, 10, 10]);
        // After a partial count the largest batch is halved, not the remaining chunk.
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let mut n = 0;
        let (c, log) = FakeChannel::with_rule(
            3,
            Box::new(move |op| match op {
                PtOp::AssignDevice { .. } => {
                    n += 1;
                    if n < 3 {
                        Err(libc::EBUSY)
                    } else {
                        Ok(0)
                    }
                }
                PtOp::MapPirqMsi { .. } => Err(libc::EOPNOTSUPP),
                _ => Ok(0),
            }),
        );
        let mut x = PassthroughExecutor::new(Box::new(c));
        x.assign(0x100).unwrap();
        assert_eq!(log.lock().unwrap().len(), 3);
        let e = x
            .bind_msi(MsiBind {
                sbdf: 0x100,
                entry: 0,
                table_base: 0,
                nvec: 4,
                gvec: 0x40,
                gflags: 0,
                gtable: 0,
            })
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EOPNOTSUPP));
        assert_eq!(
            log.lock().unwrap().len(),
            4,
            "EOPNOTSUPP is an answer, not retried"
        );
        assert!(x.pirq(0x100, 0).is_none());
    }

    #[test]
    fn rebind_keeps_the_pirq_and_a_new_gtable_unbinds_first() {
        let (c, log) = FakeChannel::new(3);
        let mut x = PassthroughExecutor::new(Box::new(c));
        let b = MsiBind {
            sbdf: 0x100,
            entry: 2,
            table_base: 0xE000_0000,
            nvec: 1,
            gvec: 0x30,
            gflags: 0x1_0000,
            gtable: 0xF100_0000,
        };
        assert_eq!(x.bind_msi(b).unwrap(), 102);
        x.bind_msi(MsiBind { gvec: 0x31, ..b }).unwrap();
        x.bind_msi(MsiBind {
            gtable: 0xF200_0000,
            ..b
        })
        .unwrap();
        let names: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .map(|o| {
                serde_json::to_value(o).unwrap()["op"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "map_pirq_msi",
                "bind_pt_irq_msi",
                "bind_pt_irq_msi",
                "unbind_pt_irq_msi",
                "bind_pt_irq_msi"
            ]
        );
        x.unbind_all(0x100).unwrap();
        assert!(x.pirq(0x100, 2).is_none());
    }

    #[test]
    fn deassign_takes_a_quarantined_function_back_from_dom_io() {
        let (c, log) = FakeChannel::with_rule(
            3,
            Box::new(|op| match op {
                PtOp::DeassignDevice {
                    from_dom_io: false, ..
                } => Err(libc::ESRCH),
                _ => Ok(0),
            }),
        );
        let mut x = PassthroughExecutor::new(Box::new(c));
        x.assign(0x100).unwrap();
        x.deassign(0x100).unwrap();
        assert_eq!(
            log.lock().unwrap().last(),
            Some(&PtOp::DeassignDevice {
                sbdf: 0x100,
                from_dom_io: true
            })
        );
        assert!(x.status()["assigned"].as_array().unwrap().is_empty());
    }
}
