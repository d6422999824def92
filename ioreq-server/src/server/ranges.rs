//! Which device owns an address: sorted, non-overlapping ranges per space, O(log n) lookup.

use crate::device::{Range, Space};

/// Registered ranges and the index of the device that owns each.
#[derive(Debug, Default)]
pub struct RangeTable {
    by_space: [Vec<(Range, usize)>; 3],
}

/// Two devices of one process claimed overlapping ranges.
#[derive(Debug, thiserror::Error)]
#[error("range {new:?} overlaps {old:?}")]
pub struct Overlap {
    /// The range being added.
    pub new: Range,
    /// The range it overlaps.
    pub old: Range,
}

fn idx(s: Space) -> usize {
    match s {
        Space::Port => 0,
        Space::Memory => 1,
        Space::PciConfig => 2,
    }
}

impl RangeTable {
    /// Add a range owned by device `dev`.
    pub fn insert(&mut self, r: Range, dev: usize) -> Result<(), Overlap> {
        let v = &mut self.by_space[idx(r.space)];
        let pos = v.partition_point(|(x, _)| x.start < r.start);
        for (old, _) in v
            .get(pos.saturating_sub(1)..(pos + 1).min(v.len()))
            .unwrap_or(&[])
        {
            if old.start <= r.end && r.start <= old.end {
                return Err(Overlap { new: r, old: *old });
            }
        }
        v.insert(pos, (r, dev));
        Ok(())
    }

    /// The device owning all of `[first, last]` in `space`, if one range holds it whole.
    pub fn lookup(&self, space: Space, first: u64, last: u64) -> Option<usize> {
        let v = &self.by_space[idx(space)];
        let pos = v.partition_point(|(x, _)| x.start <= first);
        let (r, dev) = v.get(pos.checked_sub(1)?)?;
        (first >= r.start && last <= r.end).then_some(*dev)
    }

    /// Every range, in order.
    pub fn iter(&self) -> impl Iterator<Item = &(Range, usize)> {
        self.by_space.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_the_whole_span_inside_one_range() {
        let mut t = RangeTable::default();
        t.insert(Range::new(Space::Port, 0xB000, 4), 0).unwrap();
        t.insert(Range::new(Space::Port, 0xB004, 2), 1).unwrap();
        assert!(t.insert(Range::new(Space::Port, 0xB003, 2), 2).is_err());
        assert_eq!(t.lookup(Space::Port, 0xB000, 0xB003), Some(0));
        assert_eq!(t.lookup(Space::Port, 0xB004, 0xB005), Some(1));
        assert_eq!(t.lookup(Space::Port, 0xB003, 0xB004), None);
        assert_eq!(t.lookup(Space::Port, 0xAFFF, 0xAFFF), None);
        assert_eq!(t.lookup(Space::Memory, 0xB000, 0xB000), None);
        assert_eq!(t.lookup(Space::Port, 0xB006, 0xB006), None);
    }
}
