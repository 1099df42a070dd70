//! Layouts as pieces: which box of the global tensor lives where in which rank's local buffer.

use crate::{
    flat_index, flat_range_to_regions, rowmajor_strides, unravel, Dims, MergeError, Region,
};
use uc_schema::{local_shape, zero_padded, ExpertStorage, Layout, Placement, Split, TensorMeta};

/// A box of the global tensor stored in one local buffer of one rank.
///
/// Global element `x` (inside `global`) sits at local element
/// `offset + Σ_d (x[d] − global.off[d]) · strides[d]` of buffer `buffer` on rank `rank`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub rank: u32,
    /// Which local buffer of the rank (per-expert storage has one per local expert; else 0).
    pub buffer: u32,
    pub global: Region,
    pub offset: u64,
    pub strides: Dims,
}

impl Piece {
    /// Local element index of global coordinates `x` (which must lie in `global`).
    pub fn local_index(&self, x: &[u64]) -> u64 {
        self.offset
            + x.iter()
                .zip(&self.global.off)
                .zip(&self.strides)
                .map(|((x, o), s)| (x - o) * s)
                .sum::<u64>()
    }

    /// The same piece restricted to `sub` (a box inside `global`), with its local offset moved.
    pub fn restrict(&self, sub: &Region) -> Piece {
        Piece {
            rank: self.rank,
            buffer: self.buffer,
            offset: self.local_index(&sub.off),
            global: sub.clone(),
            strides: self.strides.clone(),
        }
    }

    /// One past the last local element this piece touches (0 when empty).
    pub fn local_end(&self) -> u64 {
        if self.global.is_empty() {
            return 0;
        }
        self.offset
            + self
                .global
                .len
                .iter()
                .zip(&self.strides)
                .map(|(l, s)| (l - 1) * s)
                .sum::<u64>()
            + 1
    }
}

/// The pieces of a tensor under its layout, clipped to its logical shape (padding belongs to no piece).
pub fn pieces(meta: &TensorMeta) -> Result<Vec<Piece>, MergeError> {
    meta.validate()?;
    let stored = meta.stored_shape();
    let mut out = Vec::new();
    layout_pieces(stored, &meta.layout, &mut out);
    if meta.padded_shape.is_some() {
        out = out
            .into_iter()
            .filter_map(|p| p.global.clip(&meta.shape).map(|g| Piece { global: g, ..p }))
            .collect();
    }
    Ok(out)
}

/// True when `layout` over `shape` spans one rank per box and its non-empty pieces are exactly the
/// non-empty `boxes`, in any order (how a DCP tensor's stored chunks are matched to a layout).
/// The layout is not validated here.
pub fn layout_matches(shape: &[u64], layout: &Layout, boxes: &[Region]) -> bool {
    if layout.checked_ranks() != Some(boxes.len() as u32) {
        return false;
    }
    let mut pieces = Vec::new();
    layout_pieces(shape, layout, &mut pieces);
    let mut have: Vec<Region> = pieces
        .into_iter()
        .map(|p| p.global)
        .filter(|r| !r.is_empty())
        .collect();
    let mut want: Vec<Region> = boxes.iter().filter(|r| !r.is_empty()).cloned().collect();
    have.sort();
    want.sort();
    have == want
}

/// Pieces of `layout` over a tensor of `shape` (no validation, no clipping).
pub fn layout_pieces(shape: &[u64], layout: &Layout, out: &mut Vec<Piece>) {
    let full = Region::full(shape);
    let contiguous = |rank: u32, buffer: u32, global: Region, local: &[u64], local_off: &[u64]| {
        let strides = rowmajor_strides(local);
        Piece {
            rank,
            buffer,
            offset: flat_index(local, local_off),
            global,
            strides,
        }
    };
    match layout {
        Layout::Replicated { ranks } => {
            for r in 0..*ranks {
                out.push(contiguous(r, 0, full.clone(), shape, &vec![0; shape.len()]));
            }
        }
        Layout::Shard { dim, parts, split } => {
            let mut start = 0;
            for (r, n) in split.sizes(shape[*dim], *parts).into_iter().enumerate() {
                let mut g = full.clone();
                g.off[*dim] = start;
                g.len[*dim] = n;
                start += n;
                if n > 0 {
                    let local = g.len.clone();
                    out.push(contiguous(r as u32, 0, g, &local, &vec![0; shape.len()]));
                }
            }
        }
        Layout::Fused { dim, parts, subs } => {
            let per_sub: Vec<Vec<u64>> =
                subs.iter().map(|s| s.split.sizes(s.size, *parts)).collect();
            for r in 0..*parts as usize {
                let mut local = shape.to_vec();
                local[*dim] = per_sub.iter().map(|v| v.get(r).copied().unwrap_or(0)).sum();
                let (mut sub_start, mut local_start) = (0, 0);
                for (s, sizes) in subs.iter().zip(&per_sub) {
                    let before: u64 = sizes[..r].iter().sum();
                    let n = sizes.get(r).copied().unwrap_or(0);
                    if n > 0 {
                        let mut g = full.clone();
                        g.off[*dim] = sub_start + before;
                        g.len[*dim] = n;
                        let mut lo = vec![0; shape.len()];
                        lo[*dim] = local_start;
                        out.push(contiguous(r as u32, 0, g, &local, &lo));
                    }
                    sub_start += s.size;
                    local_start += n;
                }
            }
        }
        Layout::Experts {
            num_experts,
            ep,
            storage,
        } => {
            let per = num_experts / (*ep).max(1) as u64;
            for r in 0..*ep {
                let first = r as u64 * per;
                match storage {
                    ExpertStorage::Stacked => {
                        let mut g = full.clone();
                        g.off[0] = first;
                        g.len[0] = per;
                        let local = g.len.clone();
                        out.push(contiguous(r, 0, g, &local, &vec![0; shape.len()]));
                    }
                    ExpertStorage::PerExpert => {
                        for e in 0..per {
                            let mut g = full.clone();
                            g.off[0] = first + e;
                            g.len[0] = 1;
                            let local = g.len.clone();
                            out.push(contiguous(r, e as u32, g, &local, &vec![0; shape.len()]));
                        }
                    }
                }
            }
        }
        Layout::Mesh { mesh, placements } => {
            let world: u32 = mesh.iter().product();
            for r in 0..world {
                let coords = unravel(
                    &mesh.iter().map(|&m| m as u64).collect::<Vec<_>>(),
                    r as u64,
                );
                let mut g = full.clone();
                for (axis, p) in placements.iter().enumerate() {
                    if let Placement::Shard(d) = p {
                        let sizes = Split::Chunk.sizes(g.len[*d], mesh[axis]);
                        let c = coords[axis] as usize;
                        g.off[*d] += sizes[..c].iter().sum::<u64>();
                        g.len[*d] = sizes[c];
                    }
                }
                if !g.is_empty() {
                    let local = g.len.clone();
                    out.push(contiguous(r, 0, g, &local, &vec![0; shape.len()]));
                }
            }
        }
        Layout::ZeroFlat {
            dp,
            offset,
            group_numel,
            alignment,
        } => {
            let part = zero_padded(*group_numel, *alignment) / (*dp).max(1) as u64;
            let numel: u64 = shape.iter().product();
            for r in 0..*dp {
                let (lo, hi) = (r as u64 * part, (r as u64 + 1) * part);
                let (a, b) = (lo.max(*offset), hi.min(offset + numel));
                flat_pieces(
                    shape,
                    r,
                    a - offset,
                    b.saturating_sub(*offset),
                    a.saturating_sub(lo),
                    out,
                    a < b,
                );
            }
        }
        Layout::Zero3 { dp, offset } => {
            let numel: u64 = shape.iter().product();
            let part = numel.div_ceil((*dp).max(1) as u64);
            for r in 0..*dp {
                let (a, b) = (
                    (r as u64 * part).min(numel),
                    ((r as u64 + 1) * part).min(numel),
                );
                flat_pieces(shape, r, a, b, *offset, out, a < b);
            }
        }
        Layout::Nested { outer, inner } => {
            let mut outer_pieces = Vec::new();
            layout_pieces(shape, outer, &mut outer_pieces);
            let outer_ranks = outer.ranks();
            for op in &outer_pieces {
                let local = local_shape(shape, outer, op.rank);
                let Some(inner_layout) = inner.get(op.rank as usize) else {
                    continue;
                };
                let local_box = Region::new(unravel(&local, op.offset), op.global.len.clone());
                let mut inner_pieces = Vec::new();
                layout_pieces(&local, inner_layout, &mut inner_pieces);
                for ip in inner_pieces {
                    if let Some(i) = ip.global.intersect(&local_box) {
                        let off = i.off.iter().zip(&local_box.off).zip(&op.global.off);
                        let global = Region::new(
                            off.map(|((x, l), g)| x - l + g).collect::<Dims>(),
                            i.len.clone(),
                        );
                        out.push(Piece {
                            rank: ip.rank * outer_ranks + op.rank,
                            buffer: ip.buffer,
                            offset: ip.local_index(&i.off),
                            global,
                            strides: ip.strides.clone(),
                        });
                    }
                }
            }
        }
    }
}

/// Pieces for the tensor-flat range `a..b` held by `rank` at local offset `base`.
fn flat_pieces(
    shape: &[u64],
    rank: u32,
    a: u64,
    b: u64,
    base: u64,
    out: &mut Vec<Piece>,
    any: bool,
) {
    if !any {
        return;
    }
    let strides = rowmajor_strides(shape);
    for g in flat_range_to_regions(shape, a, b) {
        let start = flat_index(shape, &g.off);
        out.push(Piece {
            rank,
            buffer: 0,
            offset: base + (start - a),
            global: g,
            strides: strides.clone(),
        });
    }
}

/// Number of elements each local buffer must hold: `(rank, buffer) → len`, from the pieces.
pub fn buffer_lens(pieces: &[Piece]) -> std::collections::BTreeMap<(u32, u32), u64> {
    let mut m = std::collections::BTreeMap::new();
    for p in pieces {
        let e = m.entry((p.rank, p.buffer)).or_insert(0);
        *e = (*e).max(p.local_end());
    }
    m
}
