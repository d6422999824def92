//! The fake Xen (see the crate docs): the record of each call it answered ([`LoggedOp`]),
//! its pirq bookkeeping, its knobs ([`XenLikeConfig`]) and [`XenLike`], which answers the
//! passthrough executor's hypercalls from a [`XenState`].

use std::sync::{Arc, Mutex, MutexGuard};

use ioreq_server::executor::fake::FakeChannel;
use ioreq_server::executor::PassthroughExecutor;
use xen_abi::passthrough::PtOp;

use pci_host_bridge::backend::snapshot::next_seq;

mod p2m;
mod state;

pub use p2m::{Intervals, P2m, Run};
pub use state::XenState;

/// A hypercall the fake answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedOp {
    /// Position in the process-wide sequence ([`next_seq`]).
    pub seq: u64,
    /// The call.
    pub op: PtOp,
    /// Its answer: the value, or the errno.
    pub result: Result<u64, i32>,
    /// For pirq ops: the block the pirq belongs to, as it was at the call.
    pub pirq: Option<PirqBlock>,
}

/// A pirq block `map_pirq` handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PirqBlock {
    /// First pirq.
    pub base: u32,
    /// Host function.
    pub sbdf: u32,
    /// Entry (MSI-X table entry, 0 for MSI).
    pub entry: u32,
    /// `table_base` it was mapped with (0: MSI).
    pub table_base: u64,
    /// Vectors.
    pub nvec: u32,
}

/// A bound pirq: what `bind_pt_irq` last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Guest vector.
    pub gvec: u8,
    /// Flags.
    pub gflags: u32,
    /// Guest table address (registered on the first bind only, as Xen does).
    pub gtable: u64,
}

/// The knobs of the fake Xen.
#[derive(Clone, Copy, Debug)]
pub struct XenLikeConfig {
    /// The guest's `max_pages` (4 KiB frames); 512 MiB by default.
    pub max_pages: u64,
    /// Frames one `memory_mapping` call does (Xen 4.17 on 4 KiB pages: 64).
    pub frames_per_call: u64,
    /// Interrupt remapping (multi-vector MSI is refused without it).
    pub intremap: bool,
    /// The domain has an IOMMU context (assignment is refused without it).
    pub iommu: bool,
    /// At most this many pirqs mapped at once (`map_pirq` then fails with ENOSPC, as Xen does
    /// when the domain's `nr_pirqs` are used up); `None`: no limit.
    pub pirq_limit: Option<u32>,
    /// `memory_mapping` of more frames than this fails with E2BIG (as Xen on Arm does above
    /// 64; libxenctrl then halves the batch); `None`: never.
    pub e2big_above: Option<u64>,
}

impl Default for XenLikeConfig {
    fn default() -> Self {
        XenLikeConfig {
            max_pages: 512 << 8,
            frames_per_call: 64,
            intremap: false,
            iommu: true,
            pirq_limit: None,
            e2big_above: None,
        }
    }
}

/// A fault to inject: `Some(errno)` makes the fake refuse that call (before looking at it).
pub type Fault = Box<dyn FnMut(&PtOp) -> Option<i32>>;

/// The fake Xen (see the crate docs).
pub struct XenLike {
    /// Knobs.
    pub config: XenLikeConfig,
    /// Injected faults.
    pub fault: Option<Fault>,
}

impl XenLike {
    /// A fake Xen with these knobs and no fault.
    pub fn new(config: XenLikeConfig) -> Self {
        XenLike {
            config,
            fault: None,
        }
    }

    /// The same, refusing the calls `fault` picks.
    pub fn with_fault(config: XenLikeConfig, fault: Fault) -> Self {
        XenLike {
            config,
            fault: Some(fault),
        }
    }

    /// A channel for `domid` answering as this Xen, and the state it keeps.
    pub fn channel(self, domid: u16) -> (FakeChannel, Arc<Mutex<XenState>>) {
        self.channel_over(domid, XenState::default())
    }

    /// A channel for `domid` answering as this Xen from `state` on (a [`XenState::fork`],
    /// say), and the state it keeps.
    pub fn channel_over(self, domid: u16, state: XenState) -> (FakeChannel, Arc<Mutex<XenState>>) {
        let room = state.log.capacity();
        let state = Arc::new(Mutex::new(state));
        let st = state.clone();
        let XenLike { config, mut fault } = self;
        let (chan, chan_log) = FakeChannel::with_rule(
            domid,
            Box::new(move |op| {
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                let pirq = match *op {
                    PtOp::UnmapPirq { pirq }
                    | PtOp::BindPtIrqMsi { pirq, .. }
                    | PtOp::UnbindPtIrqMsi { pirq, .. } => s.block_of(pirq),
                    _ => None,
                };
                let result = match fault.as_mut().and_then(|f| f(op)) {
                    Some(errno) => Err(errno),
                    None => s.answer(&config, op),
                };
                let pirq = pirq.or_else(|| match (op, result) {
                    (PtOp::MapPirqMsi(..), Ok(v)) => s.pirqs.get(&(v as u32)).copied(),
                    _ => None,
                });
                s.log.push(LoggedOp {
                    seq: next_seq(),
                    op: op.clone(),
                    result,
                    pirq,
                });
                result
            }),
        );
        // The channel keeps a log of its own: room for it too.
        chan_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(room);
        (chan, state)
    }

    /// An executor for `domid` over this Xen.
    pub fn executor(self, domid: u16) -> (PassthroughExecutor, Arc<Mutex<XenState>>) {
        let (c, s) = self.channel(domid);
        (PassthroughExecutor::new(Box::new(c)), s)
    }
}

/// Lock the fake's state.
pub fn lock(x: &Arc<Mutex<XenState>>) -> MutexGuard<'_, XenState> {
    x.lock().unwrap_or_else(|p| p.into_inner())
}

/// The guest's domid in these tests.
pub const DOMID: u16 = 7;
