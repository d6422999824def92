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

mod assign;
pub mod fake;
mod mapping;
mod msi;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::{debug, info};

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
