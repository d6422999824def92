//! Guest-caused warnings, logged once per key so a guest cannot flood the log.

use std::collections::HashSet;

/// Distinct keys remembered before everything further is only counted.
const MAX_KEYS: usize = 1024;

/// Logs each key's first warning; after [`MAX_KEYS`] keys, logs one notice and then only counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct WarnOnce {
    seen: HashSet<(u32, u64)>,
    suppressed: u64,
}

impl WarnOnce {
    /// Warn about `key` (a device and an offset, say) unless done before.
    pub(crate) fn warn(&mut self, key: (u32, u64), msg: impl FnOnce() -> String) {
        if self.seen.contains(&key) {
            return;
        }
        if self.seen.len() >= MAX_KEYS {
            if self.suppressed == 0 {
                tracing::warn!("too many distinct guest warnings; further ones are suppressed");
            }
            self.suppressed += 1;
            return;
        }
        self.seen.insert(key);
        tracing::warn!("{}", msg());
    }

    /// Warnings suppressed so far.
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed
    }
}
