//! Resharding plans: intersect target pieces with source pieces to get copy ops.

use crate::{Dims, MergeError, Piece, Region};
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// What to do where several source ranks hold the same box (replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaPolicy {
    /// Read the lowest rank's copy only.
    #[default]
    First,
    /// Read the lowest rank's copy and check that every other replica is byte-equal.
    Verify,
    /// Use the element-wise mean of all replicas (DeepSpeed's to-average parameters).
    Average,
}

/// A place in a local buffer: rank, buffer, element offset and element strides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub rank: u32,
    pub buffer: u32,
    pub offset: u64,
    pub strides: Dims,
}

impl Loc {
    fn of(p: &Piece, sub: &Region) -> Loc {
        Loc {
            rank: p.rank,
            buffer: p.buffer,
            offset: p.local_index(&sub.off),
            strides: p.strides.clone(),
        }
    }
}

/// Copy the box `global` (extent `global.len`) from `srcs[0]` (or, per policy, from all replicas
/// in `srcs`) to `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOp {
    pub global: Region,
    pub srcs: SmallVec<[Loc; 1]>,
    pub dst: Loc,
}

impl CopyOp {
    /// Elements moved.
    pub fn numel(&self) -> u64 {
        self.global.numel()
    }
}

/// A resharding plan for one tensor: pure data, cheap to print, cost and execute anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub shape: Vec<u64>,
    pub policy: ReplicaPolicy,
    /// Ops grouped by target `(rank, buffer)` so one target can be executed at a time.
    pub ops: Vec<CopyOp>,
}

impl Plan {
    /// Elements read from each source rank (all replicas count under Verify / Average).
    pub fn read_per_source(&self) -> BTreeMap<u32, u64> {
        let mut m = BTreeMap::new();
        for op in &self.ops {
            let srcs = match self.policy {
                ReplicaPolicy::First => &op.srcs[..1],
                _ => &op.srcs[..],
            };
            for s in srcs {
                *m.entry(s.rank).or_insert(0) += op.numel();
            }
        }
        m
    }

    /// Element ranges `[start, end)` of every source buffer `(rank, buffer)` the plan reads (all
    /// replicas under Verify / Average), sorted and merged: what executing it touches.
    pub fn source_ranges(&self) -> BTreeMap<(u32, u32), Vec<(u64, u64)>> {
        let mut m: BTreeMap<(u32, u32), Vec<(u64, u64)>> = BTreeMap::new();
        for op in &self.ops {
            let srcs = match self.policy {
                ReplicaPolicy::First => &op.srcs[..1],
                _ => &op.srcs[..],
            };
            for s in srcs {
                strided_runs(&op.global.len, s, m.entry((s.rank, s.buffer)).or_default());
            }
        }
        for runs in m.values_mut() {
            runs.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
            for &(a, b) in runs.iter() {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            *runs = merged;
        }
        m
    }

    /// Elements written to each target rank.
    pub fn written_per_target(&self) -> BTreeMap<u32, u64> {
        let mut m = BTreeMap::new();
        for op in &self.ops {
            *m.entry(op.dst.rank).or_insert(0) += op.numel();
        }
        m
    }

    /// The ops that fill target `(rank, buffer)`.
    pub fn ops_for(&self, rank: u32, buffer: u32) -> impl Iterator<Item = &CopyOp> {
        self.ops
            .iter()
            .filter(move |o| o.dst.rank == rank && o.dst.buffer == buffer)
    }

    /// Target `(rank, buffer)` pairs in the order their ops appear.
    pub fn targets(&self) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = self
            .ops
            .iter()
            .map(|o| (o.dst.rank, o.dst.buffer))
            .collect();
        v.dedup();
        v
    }
}

/// One contiguous copy of a plan: `len` elements from element `src` of source buffer
/// `(rank, buffer)` to element `dst` of the target buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub rank: u32,
    pub buffer: u32,
    pub src: u64,
    pub dst: u64,
    pub len: u64,
}

impl Plan {
    /// The ops filling target `(rank, buffer)` as contiguous runs in target order, merged where they
    /// are adjacent in both buffers; `None` unless every op copies one contiguous source run to one
    /// contiguous target run (a replica to verify or average needs the general path) and the runs
    /// tile `0..total` elements of the target exactly. Such a target can be written straight from
    /// the source buffers, without assembling it (ZeRO's flat partitions, whole or split tensors).
    pub fn contiguous_runs(&self, rank: u32, buffer: u32, total: u64) -> Option<Vec<Run>> {
        let mut runs: Vec<Run> = Vec::new();
        for op in self.ops_for(rank, buffer) {
            if op.srcs.len() > 1 && self.policy != ReplicaPolicy::First {
                return None;
            }
            let s = &op.srcs[0];
            let len = contiguous(&op.global.len, &s.strides)?;
            if len == 0 {
                continue;
            }
            if contiguous(&op.global.len, &op.dst.strides)? != len {
                return None;
            }
            runs.push(Run {
                rank: s.rank,
                buffer: s.buffer,
                src: s.offset,
                dst: op.dst.offset,
                len,
            });
        }
        runs.sort_unstable_by_key(|r| r.dst);
        let mut merged: Vec<Run> = Vec::with_capacity(runs.len());
        let mut at = 0u64;
        for r in runs {
            if r.dst != at {
                return None; // a gap or an overlap
            }
            at = at.checked_add(r.len)?;
            match merged.last_mut() {
                Some(m) if (m.rank, m.buffer) == (r.rank, r.buffer) && m.src + m.len == r.src => {
                    m.len += r.len
                }
                _ => merged.push(r),
            }
        }
        (at == total).then_some(merged)
    }
}

/// The element count of a box of extent `len` at `strides` when its elements are one contiguous run.
fn contiguous(len: &[u64], strides: &[u64]) -> Option<u64> {
    if len.contains(&0) {
        return Some(0);
    }
    let mut expect = 1u64;
    for (&n, &s) in len.iter().zip(strides).rev() {
        if n == 1 {
            continue;
        }
        if s != expect {
            return None;
        }
        expect = expect.checked_mul(n)?;
    }
    Some(expect)
}

/// Most contiguous runs listed for one strided box before its whole span is counted instead.
const MAX_RUNS_PER_BOX: u64 = 4096;

/// Appends the contiguous element runs a strided box of extent `len` at `loc` covers (its span
/// when there would be more than [`MAX_RUNS_PER_BOX`]).
fn strided_runs(len: &[u64], loc: &Loc, out: &mut Vec<(u64, u64)>) {
    if len.contains(&0) {
        return;
    }
    // Fuse dims contiguous with their inner neighbour, innermost first: (extent, stride).
    let mut dims: Vec<(u64, u64)> = Vec::new();
    for (&n, &s) in len.iter().zip(&loc.strides).rev() {
        match dims.last_mut() {
            _ if n == 1 => {}
            Some(last) if s == last.0 * last.1 => last.0 *= n,
            _ => dims.push((n, s)),
        }
    }
    let (run, rest) = match dims.split_first() {
        Some((&(n, 1), rest)) => (n, rest),
        _ => (1, &dims[..]),
    };
    let count: u64 = rest.iter().map(|d| d.0).product();
    if count > MAX_RUNS_PER_BOX {
        let span: u64 = dims.iter().map(|(n, s)| (n - 1) * s).sum();
        out.push((loc.offset, loc.offset + span + 1));
        return;
    }
    for i in 0..count {
        let (mut i, mut at) = (i, loc.offset);
        for &(n, s) in rest {
            at += (i % n) * s;
            i /= n;
        }
        out.push((at, at + run));
    }
}

/// A lookup of source boxes along one dim: sorted starts with the running max of ends.
struct Index {
    dim: Option<usize>,
    order: Vec<usize>,
    starts: Vec<u64>,
    max_end: Vec<u64>,
}

impl Index {
    fn new(regions: &[&Region]) -> Index {
        let nd = regions.first().map_or(0, |r| r.ndim());
        let distinct = |d: usize| {
            let mut s: Vec<u64> = regions.iter().map(|r| r.off[d]).collect();
            if !s.is_sorted() {
                s.sort_unstable();
            }
            s.dedup();
            s.len()
        };
        // Index on the dim with the most distinct starts: it separates the boxes best. Boxes
        // come sorted by flat start, so dim 0 is checked first and wins when it separates all.
        let dim = match nd {
            0 => None,
            _ if distinct(0) == regions.len() => Some(0),
            _ => (0..nd).max_by_key(|&d| distinct(d)),
        };
        let mut order: Vec<usize> = (0..regions.len()).collect();
        if let Some(d) = dim {
            if !order.is_sorted_by_key(|&i| regions[i].off[d]) {
                order.sort_by_key(|&i| regions[i].off[d]);
            }
        }
        let starts = order
            .iter()
            .map(|&i| dim.map_or(0, |d| regions[i].off[d]))
            .collect();
        let mut max_end = Vec::with_capacity(order.len());
        let mut m = 0;
        for &i in &order {
            m = m.max(dim.map_or(1, |d| regions[i].end(d)));
            max_end.push(m);
        }
        Index {
            dim,
            order,
            starts,
            max_end,
        }
    }

    /// True when the boxes, in index order, do not even overlap along the indexed dim (then they
    /// are disjoint); a linear check that spares the pairwise one for the common layouts.
    fn separated(&self, regions: &[&Region]) -> bool {
        let Some(d) = self.dim else {
            return regions.len() <= 1;
        };
        self.order
            .windows(2)
            .all(|w| regions[w[0]].end(d) <= regions[w[1]].off[d])
    }

    /// Indices of boxes that may overlap `q`, in source order along the indexed dim.
    fn candidates(&self, q: &Region) -> impl Iterator<Item = usize> + '_ {
        let (lo, hi) = self.dim.map_or((0, 1), |d| (q.off[d], q.end(d)));
        let upto = self.starts.partition_point(|&s| s < hi);
        let from = self.max_end[..upto].partition_point(|&e| e <= lo);
        self.order[from..upto].iter().copied()
    }
}

/// Plans the copy of a tensor of logical `shape` from `source` pieces into `target` pieces.
///
/// Source pieces that hold the same elements are replicas (handled by `policy`), whether their
/// boxes are identical or only overlap. Every element of every target piece must be covered, else
/// [`MergeError::Uncovered`].
pub fn plan(
    name: &str,
    shape: &[u64],
    source: &[Piece],
    target: &[Piece],
    policy: ReplicaPolicy,
) -> Result<Plan, MergeError> {
    // Group replicas: one entry per distinct source box, ranks in ascending order.
    let strides = crate::rowmajor_strides(shape);
    // Sorting by the box's flat start is cheap and puts replicas next to each other.
    let mut sorted: Vec<(u64, &Piece)> = source
        .iter()
        .filter(|p| !p.global.is_empty())
        .map(|p| {
            (
                p.global
                    .off
                    .iter()
                    .zip(&strides)
                    .map(|(o, s)| o * s)
                    .sum::<u64>(),
                p,
            )
        })
        .collect();
    sorted.sort_unstable_by_key(|(k, p)| (*k, p.rank, p.buffer));
    let mut groups: Vec<(&Region, SmallVec<[&Piece; 1]>)> = Vec::new();
    let mut run_start = 0;
    let mut run_key = None;
    for (k, p) in sorted {
        if run_key != Some(k) {
            run_key = Some(k);
            run_start = groups.len();
        }
        // Within boxes of one start, join the group of an identical box.
        match groups[run_start..].iter_mut().find(|g| *g.0 == p.global) {
            Some(g) => g.1.push(p),
            None => groups.push((&p.global, smallvec::smallvec![p])),
        }
    }
    let regions: Vec<&Region> = groups.iter().map(|g| g.0).collect();
    let index = Index::new(&regions);
    // Replicas cut differently (e.g. a TP-replicated norm under per-TP-rank ZeRO partitions)
    // overlap partially; only then do target boxes need refining into cells.
    let partial = !index.separated(&regions) && first_overlap(&regions, &index).is_some();

    let mut ops = Vec::with_capacity(groups.len() + target.len());
    let mut hits: Vec<(usize, Region)> = Vec::new();
    let mut sorted_targets: Vec<&Piece> = target.iter().filter(|p| !p.global.is_empty()).collect();
    sorted_targets.sort_by_key(|p| (p.rank, p.buffer));
    for t in sorted_targets {
        let mut covered = 0;
        if partial {
            hits.clear();
            hits.extend(
                index
                    .candidates(&t.global)
                    .filter_map(|gi| regions[gi].intersect(&t.global).map(|i| (gi, i))),
            );
            hits.sort_unstable_by_key(|h| h.0);
            for (cell, gs) in refine(std::mem::take(&mut hits)) {
                covered += cell.numel();
                let mut reps: SmallVec<[&Piece; 2]> = gs
                    .iter()
                    .flat_map(|&g| groups[g].1.iter().copied())
                    .collect();
                reps.sort_by_key(|p| (p.rank, p.buffer));
                ops.push(CopyOp {
                    srcs: reps.iter().map(|p| Loc::of(p, &cell)).collect(),
                    dst: Loc::of(t, &cell),
                    global: cell,
                });
            }
        } else {
            // Disjoint sources: every candidate's intersection is one op, in index order.
            for g in index.candidates(&t.global) {
                let Some(cell) = regions[g].intersect(&t.global) else {
                    continue;
                };
                covered += cell.numel();
                let srcs = groups[g].1.iter().map(|p| Loc::of(p, &cell)).collect();
                ops.push(CopyOp {
                    srcs,
                    dst: Loc::of(t, &cell),
                    global: cell,
                });
            }
        }
        if covered != t.global.numel() {
            return Err(MergeError::Uncovered {
                tensor: name.to_string(),
                rank: t.rank,
                region: Box::new(t.global.clone()),
                missing: t.global.numel() - covered,
            });
        }
    }
    Ok(Plan {
        name: name.to_string(),
        shape: shape.to_vec(),
        policy,
        ops,
    })
}

/// Splits overlapping boxes into disjoint cells, each with the boxes (by index) that cover it.
fn refine(boxes: Vec<(usize, Region)>) -> Vec<(Region, SmallVec<[usize; 1]>)> {
    let mut cells: Vec<(Region, SmallVec<[usize; 1]>)> = Vec::new();
    for (g, b) in boxes {
        let mut next = Vec::with_capacity(cells.len() + 1);
        let mut fresh = vec![b.clone()];
        for (c, gs) in cells {
            match c.intersect(&b) {
                Some(i) => {
                    fresh = fresh.iter().flat_map(|f| f.subtract(&i)).collect();
                    for rest in c.subtract(&i) {
                        next.push((rest, gs.clone()));
                    }
                    let mut with = gs;
                    with.push(g);
                    next.push((i, with));
                }
                None => next.push((c, gs)),
            }
        }
        next.extend(fresh.into_iter().map(|f| (f, smallvec::smallvec![g])));
        cells = next;
    }
    cells
}

/// The first pair of distinct source boxes that overlap, if any.
fn first_overlap(regions: &[&Region], index: &Index) -> Option<(usize, usize)> {
    for (i, r) in regions.iter().enumerate() {
        for j in index.candidates(r) {
            if j != i && r.intersect(regions[j]).is_some() {
                return Some((i, j));
            }
        }
    }
    None
}

/// Checks that the pieces' boxes do not overlap (for formats whose chunks must be disjoint,
/// such as PyTorch DCP); identical boxes count as overlapping too.
pub fn check_disjoint(name: &str, pieces: &[Piece]) -> Result<(), MergeError> {
    let regions: Vec<&Region> = pieces
        .iter()
        .map(|p| &p.global)
        .filter(|r| !r.is_empty())
        .collect();
    let index = Index::new(&regions);
    match first_overlap(&regions, &index) {
        Some((a, b)) => Err(MergeError::Overlap {
            tensor: name.to_string(),
            a: Box::new(regions[a].clone()),
            b: Box::new(regions[b].clone()),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout_pieces;
    use uc_schema::{Layout, Split};

    fn plan_of(shape: &[u64], src: &Layout, dst: &Layout, policy: ReplicaPolicy) -> Plan {
        let (mut s, mut d) = (Vec::new(), Vec::new());
        layout_pieces(shape, src, &mut s);
        layout_pieces(shape, dst, &mut d);
        plan("t", shape, &s, &d, policy).unwrap()
    }

    #[test]
    fn source_ranges_cover_what_is_read() {
        // ZeRO: 10 of a 16-element group at offset 3, two ranks of 8; gathered whole.
        let zero = Layout::ZeroFlat {
            dp: 2,
            offset: 3,
            group_numel: 16,
            alignment: 2,
        };
        let p = plan_of(&[2, 5], &zero, &Layout::single(), ReplicaPolicy::First);
        let r = p.source_ranges();
        assert_eq!(r[&(0, 0)], vec![(3, 8)]);
        assert_eq!(r[&(1, 0)], vec![(0, 5)]);
        // One column shard of a row-major tensor read from a whole copy: 4 runs of 2.
        let col = Layout::Shard {
            dim: 1,
            parts: 3,
            split: Split::Even,
        };
        let p = plan_of(&[4, 6], &Layout::single(), &col, ReplicaPolicy::First);
        let r = p.source_ranges();
        assert_eq!(r[&(0, 0)], vec![(0, 24)]); // all three targets together read everything
        let only: Vec<CopyOp> = p.ops_for(1, 0).cloned().collect();
        let p1 = Plan { ops: only, ..p };
        let r = p1.source_ranges();
        assert_eq!(r[&(0, 0)], vec![(2, 4), (8, 10), (14, 16), (20, 22)]);
        // Replicas: Verify reads both, First reads one.
        let rep = Layout::Replicated { ranks: 2 };
        let v = plan_of(&[3], &rep, &Layout::single(), ReplicaPolicy::Verify).source_ranges();
        assert_eq!(v.len(), 2);
        let f = plan_of(&[3], &rep, &Layout::single(), ReplicaPolicy::First).source_ranges();
        assert_eq!(f.len(), 1);
    }
}
