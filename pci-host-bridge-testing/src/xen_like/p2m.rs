//! How the fake keeps frames and ports: sets of ranges ([`Intervals`], the permissions) and
//! maps kept as runs ([`P2m`], the p2m and the port mappings).

use std::collections::BTreeMap;

/// A run of mapped frames: (first guest frame, first host frame, frames).
pub type Run = (u64, u64, u64);

/// A set of frames (or ports) kept as disjoint half-open intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intervals(BTreeMap<u64, u64>);

impl Intervals {
    /// Add `[a, a + n)`.
    pub fn add(&mut self, a: u64, n: u64) {
        let (mut lo, mut hi) = (a, a.saturating_add(n));
        if lo >= hi {
            return;
        }
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=hi)
            .filter(|(_, &e)| e >= lo)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.0.insert(lo, hi);
    }

    /// Remove `[a, a + n)`.
    pub fn remove(&mut self, a: u64, n: u64) {
        let (lo, hi) = (a, a.saturating_add(n));
        let hit: Vec<(u64, u64)> = self
            .0
            .range(..hi)
            .filter(|(_, &e)| e > lo)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            self.0.remove(&s);
            if s < lo {
                self.0.insert(s, lo);
            }
            if e > hi {
                self.0.insert(hi, e);
            }
        }
    }

    /// Whether all of `[a, a + n)` is in the set.
    pub fn covers(&self, a: u64, n: u64) -> bool {
        n == 0
            || self
                .0
                .range(..=a)
                .next_back()
                .is_some_and(|(_, &e)| e >= a.saturating_add(n))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many frames (ports) the set holds.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }
}

/// Xen's p2m as the fake keeps it: guest frame -> host frame (and, the same way, its guest
/// port -> host port mappings), stored as disjoint runs so that mapping, unmapping and copying
/// a large BAR costs per run, not per frame (the answers are the same as for a frame-by-frame
/// map).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct P2m {
    /// First guest frame -> (first host frame, frames); the runs do not overlap.
    runs: BTreeMap<u64, (u64, u64)>,
    frames: u64,
}

impl P2m {
    /// Frames mapped.
    pub fn len(&self) -> usize {
        self.frames as usize
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// The host frame guest frame `gfn` maps.
    pub fn get(&self, gfn: u64) -> Option<u64> {
        let (&g, &(m, n)) = self.runs.range(..=gfn).next_back()?;
        (gfn - g < n).then(|| m + (gfn - g))
    }

    /// Every mapped frame, (guest frame, host frame), in guest order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs
            .iter()
            .flat_map(|(&g, &(m, n))| (0..n).map(move |k| (g + k, m + k)))
    }

    /// The mapped runs (first guest frame, first host frame, frames), in guest order.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.runs.iter().map(|(&g, &(m, n))| (g, m, n))
    }

    /// Unmap everything.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.frames = 0;
    }

    /// The mapped pieces of guest frames `[g, g + n)`: (guest frame, host frame, frames).
    fn pieces(&self, g: u64, n: u64) -> Vec<Run> {
        let end = g.saturating_add(n);
        let before = self.runs.range(..g).next_back();
        before
            .into_iter()
            .chain(self.runs.range(g..end))
            .filter_map(|(&s, &(m, len))| {
                let (a, z) = (s.max(g), s.saturating_add(len).min(end));
                (a < z).then(|| (a, m + (a - s), z - a))
            })
            .collect()
    }

    /// Unmap guest frames `[g, g + n)` (whatever they map).
    pub(crate) fn remove(&mut self, g: u64, n: u64) {
        let end = g.saturating_add(n);
        let starts: Vec<u64> = self
            .runs
            .range(..g)
            .next_back()
            .map(|(&s, _)| s)
            .into_iter()
            .chain(self.runs.range(g..end).map(|(&s, _)| s))
            .collect();
        for s in starts {
            let (m, len) = self.runs[&s];
            let z = s.saturating_add(len);
            if z <= g || s >= end {
                continue;
            }
            self.runs.remove(&s);
            self.frames -= z.min(end) - s.max(g);
            if s < g {
                self.runs.insert(s, (m, g - s));
            }
            if z > end {
                self.runs.insert(end, (m + (end - s), z - end));
            }
        }
    }

    /// Map guest frames `[g, g + n)` to host frames `[m, m + n)`, replacing what they mapped;
    /// returns the replaced pieces.
    pub(crate) fn insert(&mut self, g: u64, m: u64, n: u64) -> Vec<Run> {
        let old = self.pieces(g, n);
        self.remove(g, n);
        if n > 0 {
            self.runs.insert(g, (m, n));
            self.frames += n;
        }
        old
    }

    /// How many frames from `g` on map `m`, `m + 1`, ... (at most `n`).
    pub(crate) fn mapped_prefix(&self, g: u64, m: u64, n: u64) -> u64 {
        let mut k = 0;
        while k < n {
            let Some((&s, &(sm, len))) = self.runs.range(..=g + k).next_back() else {
                break;
            };
            let off = g + k - s;
            if off >= len || sm + off != m + k {
                break;
            }
            k += (len - off).min(n - k);
        }
        k
    }
}
