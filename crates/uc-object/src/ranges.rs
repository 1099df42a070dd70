//! A set of byte ranges: sorted, disjoint, merged on insert.

use std::ops::Range;

/// Sorted, disjoint, non-adjacent half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<Range<u64>>);

impl RangeSet {
    /// Adds `r`, merging it with every range it touches.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let v = &mut self.0;
        let first = v.partition_point(|x| x.end < r.start);
        let last = v.partition_point(|x| x.start <= r.end);
        if first == last {
            v.insert(first, r);
            return;
        }
        let merged = v[first].start.min(r.start)..v[last - 1].end.max(r.end);
        v.splice(first..last, [merged]);
    }

    /// The parts of `r` not in the set.
    pub fn missing(&self, r: &Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut at = r.start;
        let from = self.0.partition_point(|x| x.end <= r.start);
        for x in &self.0[from..] {
            if x.start >= r.end {
                break;
            }
            if x.start > at {
                out.push(at..x.start);
            }
            at = at.max(x.end);
        }
        if at < r.end {
            out.push(at..r.end);
        }
        out
    }

    /// Bytes in the set.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|r| r.end - r.start).sum()
    }
}

/// Sorts `ranges` and joins those less than `gap` bytes apart (the gap is fetched too).
pub fn coalesce(mut ranges: Vec<Range<u64>>, gap: u64) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(l) if r.start <= l.end.saturating_add(gap) => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Splits each range into pieces of at most `max` bytes (requests that can run in parallel).
pub fn split(ranges: &[Range<u64>], max: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut s = r.start;
        while s < r.end {
            let e = r.end.min(s.saturating_add(max));
            out.push(s..e);
            s = e;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_missing_subtracts() {
        let mut s = RangeSet::default();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(20..25);
        assert_eq!(s.0, vec![10..25, 30..40]);
        assert_eq!(s.missing(&(0..50)), vec![0..10, 25..30, 40..50]);
        assert!(s.missing(&(12..24)).is_empty());
        assert_eq!(s.missing(&(24..31)), vec![25..30]);
        s.insert(5..45);
        assert_eq!(s.0, vec![5..45]);
        assert_eq!(s.len(), 40);
    }

    #[test]
    fn coalesce_and_split() {
        assert_eq!(
            coalesce(vec![20..30, 0..10, 12..15], 2),
            vec![0..15, 20..30]
        );
        assert_eq!(split(&[0..10], 4), vec![0..4, 4..8, 8..10]);
    }
}
