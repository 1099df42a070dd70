//! Property tests: random shapes and random pairs of layouts of every kind, A → B → A is lossless
//! and every merge equals the naive element-by-element reference.

mod common;
use common::{iota, meta, naive_gather};
use proptest::prelude::*;
use uc_merge::{gather, reshard, scatter, ReplicaPolicy};
use uc_schema::{ExpertStorage, Layout, Placement, Split, SubParam, TensorMeta};

/// Tiny deterministic generator so one seed describes one layout.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn random_split(rng: &mut Rng, size: u64, parts: u32) -> Split {
    match rng.below(4) {
        0 if size.is_multiple_of(parts as u64) => Split::Even,
        1 => {
            // random composition of `size` into `parts` (zeros allowed)
            let mut cuts: Vec<u64> = (0..parts - 1).map(|_| rng.below(size + 1)).collect();
            cuts.sort_unstable();
            let mut sizes = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([size]) {
                sizes.push(c - prev);
                prev = c;
            }
            Split::Sizes(sizes)
        }
        2 => {
            let g = 1 + rng.below(3);
            if size.is_multiple_of(g) {
                Split::Grain { grain: g }
            } else {
                Split::Chunk
            }
        }
        _ => Split::Chunk,
    }
}

/// A layout whose local buffers are tensors (usable as the outer layout of a nesting).
fn tensor_layout(rng: &mut Rng, shape: &[u64]) -> Layout {
    let dim = rng.below(shape.len() as u64) as usize;
    let parts = 1 + rng.below(4) as u32;
    match rng.below(5) {
        0 => Layout::Replicated {
            ranks: 1 + rng.below(3) as u32,
        },
        1 => Layout::Shard {
            dim,
            parts,
            split: random_split(rng, shape[dim], parts),
        },
        2 => {
            let mut left = shape[dim];
            let mut subs = Vec::new();
            while left > 0 {
                let size = 1 + rng.below(left);
                subs.push(SubParam {
                    size,
                    split: random_split(rng, size, parts),
                });
                left -= size;
            }
            Layout::Fused { dim, parts, subs }
        }
        3 => {
            let e = shape[0];
            let divisors: Vec<u64> = (1..=e).filter(|d| e.is_multiple_of(*d)).collect();
            let ep = divisors[rng.below(divisors.len() as u64) as usize] as u32;
            Layout::Experts {
                num_experts: e,
                ep,
                storage: ExpertStorage::Stacked,
            }
        }
        _ => {
            let axes = 1 + rng.below(2) as usize;
            let mesh = (0..axes).map(|_| 1 + rng.below(3) as u32).collect();
            let placements = (0..axes)
                .map(|_| match rng.below(3) {
                    0 => Placement::Replicate,
                    _ => Placement::Shard(rng.below(shape.len() as u64) as usize),
                })
                .collect();
            Layout::Mesh { mesh, placements }
        }
    }
}

fn flat_layout(rng: &mut Rng, numel: u64) -> Layout {
    let dp = 1 + rng.below(4) as u32;
    if rng.below(2) == 0 {
        let before = rng.below(6);
        let after = rng.below(6);
        Layout::ZeroFlat {
            dp,
            offset: before,
            group_numel: before + numel + after,
            alignment: 2 * dp as u64,
        }
    } else {
        Layout::Zero3 {
            dp,
            offset: rng.below(4),
        }
    }
}

fn random_layout(rng: &mut Rng, shape: &[u64]) -> Layout {
    let numel: u64 = shape.iter().product();
    match rng.below(6) {
        0 => flat_layout(rng, numel),
        1 => {
            let outer = tensor_layout(rng, shape);
            let inner = (0..outer.ranks())
                .map(|o| {
                    let local = uc_schema::local_shape(shape, &outer, o);
                    let n: u64 = local.iter().product();
                    // every inner layout must span the same ranks: fix dp from the first draw
                    flat_layout(rng, n)
                })
                .collect::<Vec<_>>();
            let dp = inner.first().map_or(1, Layout::ranks);
            let inner = inner
                .into_iter()
                .map(|l| match l {
                    Layout::ZeroFlat {
                        offset,
                        group_numel,
                        ..
                    } => Layout::ZeroFlat {
                        dp,
                        offset,
                        group_numel,
                        alignment: 2 * dp as u64,
                    },
                    Layout::Zero3 { offset, .. } => Layout::Zero3 { dp, offset },
                    other => other,
                })
                .collect();
            Layout::Nested {
                outer: Box::new(outer),
                inner,
            }
        }
        _ => tensor_layout(rng, shape),
    }
}

fn with_padding(rng: &mut Rng, m: TensorMeta) -> TensorMeta {
    if rng.below(3) == 0 {
        let mut p = m.shape.clone();
        p[0] += rng.below(3);
        let layout = m.layout.clone();
        // a layout drawn for the logical shape may not fit the padded one; keep it only if valid
        let padded = m.clone().with_padded(p);
        if padded.validate().is_ok() {
            return padded;
        }
        return m.with_layout(layout);
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn a_to_b_to_a_is_identity(
        shape in prop::collection::vec(1u64..6, 1..4),
        seed_a in 1u64..u64::MAX,
        seed_b in 1u64..u64::MAX,
    ) {
        let (mut ra, mut rb) = (Rng(seed_a), Rng(seed_b));
        let (la, lb) = (random_layout(&mut ra, &shape), random_layout(&mut rb, &shape));
        let a = with_padding(&mut ra, meta("t", &shape, la));
        let b = with_padding(&mut rb, meta("t", &shape, lb));
        prop_assume!(a.validate().is_ok() && b.validate().is_ok());
        let full = iota(&shape);
        let bufs_a = scatter(&a, &full).unwrap();
        prop_assert_eq!(&naive_gather(&a, &bufs_a), &full);
        let bufs_b = reshard(&a, &bufs_a, &b, ReplicaPolicy::Verify).unwrap();
        prop_assert_eq!(&gather(&b, &bufs_b, ReplicaPolicy::Verify).unwrap(), &full);
        prop_assert_eq!(&naive_gather(&b, &bufs_b), &full);
        let back = reshard(&b, &bufs_b, &a, ReplicaPolicy::Verify).unwrap();
        prop_assert_eq!(&back, &bufs_a, "A → B → A changed bytes ({:?} → {:?})", a.layout, b.layout);
    }

    #[test]
    fn contiguous_runs_gather_what_the_plan_executes(
        shape in prop::collection::vec(1u64..6, 1..4),
        seed in 1u64..u64::MAX,
    ) {
        let mut r = Rng(seed);
        let la = random_layout(&mut r, &shape);
        let a = with_padding(&mut r, meta("t", &shape, la));
        prop_assume!(a.validate().is_ok());
        let full = iota(&shape);
        let bufs = scatter(&a, &full).unwrap();
        let src = uc_merge::pieces(&a).unwrap();
        let mut dst = Vec::new();
        uc_merge::layout_pieces(&shape, &Layout::single(), &mut dst);
        let pl = uc_merge::plan("t", &shape, &src, &dst, ReplicaPolicy::First).unwrap();
        let n: u64 = shape.iter().product();
        if let Some(runs) = pl.contiguous_runs(0, 0, n) {
            let es = a.dtype.size() as u64;
            let mut got = Vec::new();
            for run in &runs {
                let b = &bufs[&(run.rank, run.buffer)];
                prop_assert_eq!(run.dst * es, got.len() as u64);
                got.extend_from_slice(&b[(run.src * es) as usize..((run.src + run.len) * es) as usize]);
            }
            prop_assert_eq!(&got, &full);
        }
        // a flat (ZeRO) layout without replicas always qualifies
        let flat = meta("t", &shape, flat_layout(&mut r, n));
        if flat.validate().is_ok() {
            let src = uc_merge::pieces(&flat).unwrap();
            let pl = uc_merge::plan("t", &shape, &src, &dst, ReplicaPolicy::First).unwrap();
            prop_assert!(pl.contiguous_runs(0, 0, n).is_some(), "{:?}", flat.layout);
        }
    }

    #[test]
    fn flat_ranges_round_trip(shape in prop::collection::vec(1u64..6, 0..5), a in 0u64..2000, b in 0u64..2000) {
        let n: u64 = shape.iter().product();
        let (a, b) = (a.min(b) % (n + 1), a.max(b) % (n + 1));
        let (a, b) = (a.min(b), a.max(b));
        let regions = uc_merge::flat_range_to_regions(&shape, a, b);
        prop_assert!(regions.len() <= (2 * shape.len()).saturating_sub(1).max(1));
        let mut flat = Vec::new();
        for r in &regions {
            flat.extend(uc_merge::region_to_flat_ranges(&shape, r));
        }
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, l) in flat {
            match merged.last_mut() {
                Some(m) if m.0 + m.1 == s => m.1 += l,
                _ => merged.push((s, l)),
            }
        }
        let expect = if a < b { vec![(a, b - a)] } else { vec![] };
        prop_assert_eq!(merged, expect);
    }
}
