//! A tiny rate limiter for guest-caused log messages: a hostile guest must not flood the log.

use std::time::{Duration, Instant};

/// Allows `burst` messages per `period` and counts the ones it drops.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
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
        }
    }

    /// Whether to log now. `Some(n)`: log, and mention the `n` messages dropped since the last
    /// one logged; `None`: drop this one.
    pub fn check(&mut self) -> Option<u64> {
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
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

impl Default for RateLimit {
    /// Ten messages per ten seconds.
    fn default() -> Self {
        RateLimit::new(10, Duration::from_secs(10))
    }
}

/// Log at `warn` through a [`RateLimit`]: `limited_warn!(self.limit, "bad size {}", size)`.
macro_rules! limited_warn {
    ($limit:expr, $($arg:tt)+) => {{
        if let Some(dropped) = $limit.check() {
            if dropped > 0 {
                tracing::warn!(suppressed = dropped, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    }};
}
pub(crate) use limited_warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_drop_then_report() {
        let mut l = RateLimit::new(2, Duration::from_millis(40));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), None);
        assert_eq!(l.check(), None);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(l.check(), Some(2));
    }
}
