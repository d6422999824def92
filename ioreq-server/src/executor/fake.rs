//! A scripted [`PtChannel`] for tests: records every op and answers from a rule.

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
                PtOp::MapPirqMsi(m) => Ok(100 + u64::from(m.entry)),
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
