//! What the fuzz targets share: the count of guest accesses a fuzzing process has made.
//!
//! libFuzzer counts inputs (`exec/s`); a campaign is measured in guest accesses (an input
//! holds from one to thousands of them), so each target reports what it performed here,
//! and every 2^16 accesses a line `#accesses N` goes to stderr, into libFuzzer's log.
//! `scripts/fuzz-short` and `scripts/fuzz-campaign` read the last such line (a lower bound:
//! the accesses since it are not shown).
#![deny(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ACCESSES: AtomicU64 = AtomicU64::new(0);

/// Granularity of the `#accesses` lines (2^16: a 15 s CI run of the slowest target still
/// prints a few).
const REPORT_SHIFT: u32 = 16;

/// Count `n` guest accesses performed by this process.
pub fn accesses(n: usize) {
    let n = n as u64;
    let before = ACCESSES.fetch_add(n, Relaxed);
    let after = before + n;
    if before >> REPORT_SHIFT != after >> REPORT_SHIFT {
        eprintln!("#accesses {after}");
    }
}
