//! The wired-OR of the sources on each pin ([`LineTracker`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::*;

/// A pin's level changed: apply it to the interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinChange {
    /// The pin.
    pub pin: u8,
    /// The new wired-OR level (true = asserted).
    pub level: bool,
}

/// Per-source contributions and the wired-OR level of every pin. Pure state, no I/O.
#[derive(Clone, Debug, Default)]
pub struct LineTracker {
    /// Asserted contributions, ordered by pin.
    asserted: BTreeSet<(u8, SourceId)>,
    /// Number of asserted contributions per pin.
    count: Vec<u32>,
}

impl LineTracker {
    /// A tracker for `pins` pins (at most [`MAX_PINS`]), all deasserted.
    pub fn new(pins: usize) -> Self {
        LineTracker {
            asserted: BTreeSet::new(),
            count: vec![0; pins.min(MAX_PINS)],
        }
    }

    /// Number of pins.
    pub fn pins(&self) -> usize {
        self.count.len()
    }

    /// Sets `source`'s contribution to `pin`. Returns the pin's new level if it changed.
    /// A pin outside the tracker is ignored.
    pub fn set(&mut self, source: SourceId, pin: u8, asserted: bool) -> Option<bool> {
        let slot = self.count.get_mut(usize::from(pin))?;
        let before = *slot > 0;
        if asserted {
            if self.asserted.insert((pin, source)) {
                *slot += 1;
            }
        } else if self.asserted.remove(&(pin, source)) {
            *slot -= 1;
        }
        let after = *slot > 0;
        (before != after).then_some(after)
    }

    /// Whether `source` asserts `pin`.
    pub fn is_asserted(&self, source: SourceId, pin: u8) -> bool {
        self.asserted.contains(&(pin, source))
    }

    /// The wired-OR level of `pin` (false outside the tracker).
    pub fn level(&self, pin: u8) -> bool {
        self.count.get(usize::from(pin)).is_some_and(|&c| c > 0)
    }

    /// Releases every contribution on `pin` (an EOI). Returns the sources that were asserted.
    pub fn release_pin(&mut self, pin: u8) -> Vec<SourceId> {
        let released: Vec<SourceId> = self
            .asserted
            .range((pin, SourceId(0))..=(pin, SourceId(u64::MAX)))
            .map(|&(_, s)| s)
            .collect();
        for s in &released {
            self.asserted.remove(&(pin, *s));
        }
        if let Some(c) = self.count.get_mut(usize::from(pin)) {
            *c = 0;
        }
        released
    }
}
