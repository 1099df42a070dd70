//! N-d boxes of a tensor (offsets + extents) and their relation to row-major flat ranges.

/// Per-dim numbers (offsets, extents, strides); inline up to 4 dims so planning does not allocate.
pub type Dims = smallvec::SmallVec<[u64; 4]>;

/// A box of an N-d tensor: `off[d] .. off[d] + len[d]` on every dim. A 0-d box is one element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region {
    pub off: Dims,
    pub len: Dims,
}

impl Region {
    /// A box from offsets and extents (same length).
    pub fn new(off: impl Into<Dims>, len: impl Into<Dims>) -> Region {
        let (off, len) = (off.into(), len.into());
        debug_assert_eq!(off.len(), len.len());
        Region { off, len }
    }

    /// The whole tensor of `shape`.
    pub fn full(shape: &[u64]) -> Region {
        Region {
            off: smallvec::smallvec![0; shape.len()],
            len: shape.into(),
        }
    }

    /// Number of dims.
    pub fn ndim(&self) -> usize {
        self.off.len()
    }

    /// Number of elements (1 for a 0-d box).
    pub fn numel(&self) -> u64 {
        self.len.iter().product()
    }

    /// True when some extent is 0.
    pub fn is_empty(&self) -> bool {
        self.len.contains(&0)
    }

    /// End offset (exclusive) on `dim`.
    pub fn end(&self, dim: usize) -> u64 {
        self.off[dim] + self.len[dim]
    }

    /// The common part of two boxes, `None` when they do not overlap.
    ///
    /// ```
    /// use uc_merge::Region;
    /// let a = Region::new(vec![0, 0], vec![4, 4]);
    /// let b = Region::new(vec![2, 3], vec![4, 4]);
    /// assert_eq!(a.intersect(&b), Some(Region::new(vec![2, 3], vec![2, 1])));
    /// ```
    pub fn intersect(&self, other: &Region) -> Option<Region> {
        if self.ndim() != other.ndim() {
            return None;
        }
        let mut off = Dims::new();
        let mut len = Dims::new();
        for d in 0..self.ndim() {
            let lo = self.off[d].max(other.off[d]);
            let hi = self.end(d).min(other.end(d));
            if hi <= lo {
                return None;
            }
            off.push(lo);
            len.push(hi - lo);
        }
        Some(Region { off, len })
    }

    /// True when `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Region) -> bool {
        self.ndim() == other.ndim()
            && (0..self.ndim()).all(|d| other.off[d] >= self.off[d] && other.end(d) <= self.end(d))
    }

    /// Cuts the box to the tensor `shape` (drops vocab padding); `None` if nothing is left.
    pub fn clip(&self, shape: &[u64]) -> Option<Region> {
        self.intersect(&Region::full(shape))
            .filter(|r| !r.is_empty())
            .or_else(|| (self.ndim() == 0).then(|| self.clone()))
    }
}

impl Region {
    /// `self` minus `other`: at most `2·ndim` disjoint boxes covering what `other` does not.
    pub fn subtract(&self, other: &Region) -> Vec<Region> {
        let Some(i) = self.intersect(other) else {
            return vec![self.clone()];
        };
        let mut out = Vec::new();
        let mut rest = self.clone();
        for d in 0..self.ndim() {
            if i.off[d] > rest.off[d] {
                let mut below = rest.clone();
                below.len[d] = i.off[d] - rest.off[d];
                out.push(below);
            }
            if i.end(d) < rest.end(d) {
                let mut above = rest.clone();
                above.off[d] = i.end(d);
                above.len[d] = rest.end(d) - i.end(d);
                out.push(above);
            }
            rest.off[d] = i.off[d];
            rest.len[d] = i.len[d];
        }
        out
    }
}

/// Row-major (C-order) element strides of `shape`.
pub fn rowmajor_strides(shape: &[u64]) -> Dims {
    let mut s: Dims = smallvec::smallvec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Row-major flat index of the first element of `region` in a tensor of `shape`.
pub fn flat_index(shape: &[u64], coords: &[u64]) -> u64 {
    rowmajor_strides(shape)
        .iter()
        .zip(coords)
        .map(|(s, c)| s * c)
        .sum()
}

/// Coordinates of flat index `i` in a tensor of `shape`.
pub fn unravel(shape: &[u64], mut i: u64) -> Vec<u64> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        let n = shape[d].max(1);
        c[d] = i % n;
        i /= n;
    }
    c
}

/// Cuts the row-major flat range `start..end` of a tensor of `shape` into at most `2·ndim−1`
/// boxes, in flat order.
///
/// ```
/// use uc_merge::{flat_range_to_regions, Region};
/// // rows of 4: elements 2..9 = tail of row 0, all of row 1, head of row 2
/// let r = flat_range_to_regions(&[3, 4], 2, 9);
/// assert_eq!(r, vec![
///     Region::new(vec![0, 2], vec![1, 2]),
///     Region::new(vec![1, 0], vec![1, 4]),
///     Region::new(vec![2, 0], vec![1, 1]),
/// ]);
/// ```
pub fn flat_range_to_regions(shape: &[u64], start: u64, end: u64) -> Vec<Region> {
    let mut out = Vec::new();
    if start < end {
        split_range(shape, &mut Vec::new(), start, end, &mut out);
    }
    out
}

fn split_range(shape: &[u64], prefix: &mut Vec<u64>, a: u64, b: u64, out: &mut Vec<Region>) {
    let depth = prefix.len();
    if depth == shape.len() {
        out.push(Region::new(prefix.as_slice(), vec![1; depth]));
        return;
    }
    let inner: u64 = shape[depth + 1..].iter().product();
    let (mut ra, rb) = (a / inner, b / inner);
    let whole = |rows: (u64, u64), out: &mut Vec<Region>, prefix: &[u64]| {
        let mut off = prefix.to_vec();
        let mut len = vec![1; depth];
        off.push(rows.0);
        len.push(rows.1 - rows.0);
        off.extend(std::iter::repeat_n(0, shape.len() - depth - 1));
        len.extend_from_slice(&shape[depth + 1..]);
        out.push(Region::new(off, len));
    };
    if ra == rb {
        prefix.push(ra);
        split_range(shape, prefix, a % inner, b % inner, out);
        prefix.pop();
        return;
    }
    if !a.is_multiple_of(inner) {
        prefix.push(ra);
        split_range(shape, prefix, a % inner, inner, out);
        prefix.pop();
        ra += 1;
    }
    if ra < rb {
        whole((ra, rb), out, prefix);
    }
    if !b.is_multiple_of(inner) {
        prefix.push(rb);
        split_range(shape, prefix, 0, b % inner, out);
        prefix.pop();
    }
}

/// The row-major flat ranges `(start, len)` a box covers in a tensor of `shape`, merged where
/// contiguous, in flat order. Inverse of [`flat_range_to_regions`] up to merging.
pub fn region_to_flat_ranges(shape: &[u64], region: &Region) -> Vec<(u64, u64)> {
    if region.is_empty() {
        return Vec::new();
    }
    let nd = shape.len();
    // Trailing dims that the box covers fully merge into one contiguous run.
    let mut k = nd;
    while k > 0 && region.off[k - 1] == 0 && region.len[k - 1] == shape[k - 1] {
        k -= 1;
    }
    let strides = rowmajor_strides(shape);
    let run: u64 = if k == 0 {
        region.numel()
    } else {
        region.len[k - 1] * strides[k - 1]
    };
    let outer = k.saturating_sub(1);
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut idx = vec![0u64; outer];
    loop {
        let mut start: u64 = (0..outer)
            .map(|d| (region.off[d] + idx[d]) * strides[d])
            .sum();
        if k > 0 {
            start += region.off[k - 1] * strides[k - 1];
        }
        match out.last_mut() {
            Some(last) if last.0 + last.1 == start => last.1 += run,
            _ => out.push((start, run)),
        }
        let mut d = outer;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < region.len[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}
