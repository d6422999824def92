//! Rate limiting for guest-caused warnings: a hostile guest must not be able to flood the log.

use std::time::{Duration, Instant};

/// Allows `burst` events per `period`, counting the ones it suppressed.
#[derive(Clone, Debug)]
pub struct RateLimit {
    period: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
    total_suppressed: u64,
}

impl RateLimit {
    /// `burst` messages per `period`.
    pub const fn new(burst: u32, period: Duration) -> Self {
        RateLimit {
            period,
            burst,
            window_start: None,
            in_window: 0,
            suppressed: 0,
            total_suppressed: 0,
        }
    }

    /// Ten messages per five seconds: the default for guest-caused warnings.
    pub const fn guest() -> Self {
        Self::new(10, Duration::from_secs(5))
    }

    /// Whether to log now: `Some(n)` means log, and mention the `n` messages dropped since
    /// the last one logged; `None` means drop this one.
    pub fn check(&mut self) -> Option<u64> {
        self.allow().then(|| self.take_suppressed())
    }

    /// Whether to log this event (the suppressed count is kept for
    /// [`RateLimit::take_suppressed`]).
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        match self.window_start {
            Some(s) if now.duration_since(s) < self.period => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            true
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            self.total_suppressed = self.total_suppressed.saturating_add(1);
            false
        }
    }

    /// How many messages were suppressed since the last call.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// How many messages were suppressed in all (for status reports; not reset by
    /// [`RateLimit::take_suppressed`]).
    pub fn total_suppressed(&self) -> u64 {
        self.total_suppressed
    }
}

impl Default for RateLimit {
    /// Ten messages per ten seconds.
    fn default() -> Self {
        Self::new(10, Duration::from_secs(10))
    }
}

/// `warn!` through a [`RateLimit`]: `guest_warn!(self.limit, "bad size {}", size)`.
#[macro_export]
macro_rules! guest_warn {
    ($limit:expr, $($arg:tt)+) => {{
        let l: &mut $crate::ratelimit::RateLimit = &mut $limit;
        if l.allow() {
            let dropped = l.take_suppressed();
            if dropped > 0 {
                tracing::warn!(suppressed = dropped, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppress_then_new_window() {
        let mut l = RateLimit::new(2, Duration::from_millis(50));
        assert!(l.allow() && l.allow());
        assert!(!l.allow());
        assert_eq!(l.take_suppressed(), 1);
        assert_eq!(l.total_suppressed(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.allow());
    }
}
