//! A tiny limiter for warnings the guest (or a peer) can trigger at will.

use std::time::{Duration, Instant};

/// Allows at most [`RateLimit::PER_WINDOW`] events per [`RateLimit::WINDOW`] and counts the
/// suppressed ones, so that the next allowed message can say how many were dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct RateLimit {
    window_start: Option<Instant>,
    count: u32,
    suppressed: u64,
}

impl RateLimit {
    const PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    /// `Some(number suppressed since the last allowed event)` if this event may be logged.
    pub(crate) fn check(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < Self::WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.count = 0;
            }
        }
        if self.count < Self::PER_WINDOW {
            self.count += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_counts_suppressed() {
        let mut r = RateLimit::default();
        for _ in 0..RateLimit::PER_WINDOW {
            assert_eq!(r.check(), Some(0));
        }
        assert_eq!(r.check(), None);
        assert_eq!(r.check(), None);
        assert_eq!(r.suppressed, 2);
    }
}
