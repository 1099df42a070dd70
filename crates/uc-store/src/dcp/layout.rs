//! What a DCP tensor's chunks say about how it was sharded, inferred from the chunks alone.
//!
//! A `.metadata` records no mesh and no placements: per tensor only its chunks (boxes of the global
//! tensor) and, per chunk, the storage entry of the one rank that wrote it (replicas are
//! deduplicated). From those this module infers the chunk grid (distinct part boundaries per dim),
//! a mesh of `Shard(d)` axes for the split dims (plus `Replicate` for the rest of the world), and a
//! uc-schema [`Layout`] whose boxes are exactly the chunks, or none when no layout fits.

use super::DcpCheckpoint;
use std::collections::BTreeSet;
use uc_merge::{layout_matches, Region};
use uc_schema::{Layout, Placement, Split, TensorMeta};
use uc_torch::dcp_metadata::{Metadata, TensorItem};

/// One chunk of a tensor in the tensor's own coordinates, with where its bytes are stored.
pub use uc_schema::DcpChunk;

/// A chunk's box as a uc-merge region.
pub fn region(c: &DcpChunk) -> Region {
    Region::new(c.offsets.as_slice(), c.sizes.as_slice())
}

/// The chunk grid: per dim, the sizes of its parts in offset order (one part: the dim is not split).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub sizes: Vec<Vec<u64>>,
}

impl Grid {
    /// Number of parts per dim.
    pub fn parts(&self) -> Vec<u32> {
        self.sizes.iter().map(|s| s.len() as u32).collect()
    }

    /// The dims split into more than one part, in dim order.
    pub fn split_dims(&self) -> Vec<usize> {
        (0..self.sizes.len())
            .filter(|&d| self.sizes[d].len() > 1)
            .collect()
    }
}

/// Everything the chunks of one tensor say about its sharding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcpLayout {
    /// The DCP item the tensor is read from.
    pub key: String,
    /// The tensor's shape (a slice of the item's for Megatron layers).
    pub shape: Vec<u64>,
    /// Ranks that wrote files (max rank in `__<rank>_<n>.distcp` + 1).
    pub world: u32,
    /// The chunk grid, None when the chunks are not the product of per-dim splits.
    pub grid: Option<Grid>,
    /// Inferred mesh: one axis per split dim (in dim order), then the remaining factor of the world
    /// as a replicated axis when it divides evenly and is above 1; empty without a grid.
    pub mesh: Vec<u32>,
    /// One placement per mesh axis: `Shard(d)` for the split dims, `Replicate` for the rest.
    pub placements: Vec<Placement>,
    /// A layout whose boxes are exactly the non-empty chunks (one layout rank per chunk, empty
    /// chunks included), checked box by box; None when no layout fits.
    pub layout: Option<Layout>,
    /// Every chunk, in the item's (gather) order.
    pub chunks: Vec<DcpChunk>,
}

/// The writer rank a data file name carries: `__<rank>_<n>.distcp` → rank.
pub fn writer_rank(file: &str) -> Option<u32> {
    let stem = file.rsplit('/').next()?.strip_prefix("__")?;
    stem.split('_').next()?.parse().ok()
}

/// Ranks that wrote the checkpoint: max writer rank + 1 over all storage entries, else the number
/// of distinct files (at least 1).
pub fn world_size(md: &Metadata) -> u32 {
    let files: BTreeSet<&str> = md.storage.values().map(|s| s.file.as_str()).collect();
    match files.iter().filter_map(|f| writer_rank(f)).max() {
        Some(m) => m.saturating_add(1),
        None => (files.len() as u32).max(1),
    }
}

/// The sharding facts of an output tensor of `ck` (as listed by [`DcpCheckpoint::outputs`]);
/// None for tensors not read from a tensor item (Megatron's shared Adam step).
pub fn infer(ck: &DcpCheckpoint, meta: &TensorMeta) -> Option<DcpLayout> {
    infer_with_world(ck, meta, world_size(ck.metadata()))
}

/// [`infer`] with the world size computed once by the caller ([`world_size`]), for many tensors.
pub fn infer_with_world(ck: &DcpCheckpoint, meta: &TensorMeta, world: u32) -> Option<DcpLayout> {
    let (key, region) = ck.source_of(meta)?;
    let md = ck.metadata();
    let item = md.tensor(key)?;
    infer_item(md, key, item, region, &meta.shape, world)
}

/// The sharding facts of `region` of item `key`, seen as a tensor of `shape`: either the region's
/// own shape, or that shape without its first dim when the region is one index of it (a layer of
/// a stacked tensor). None when `shape` is neither.
pub fn infer_item(
    md: &Metadata,
    key: &str,
    item: &TensorItem,
    region: &Region,
    shape: &[u64],
    world: u32,
) -> Option<DcpLayout> {
    let whole = *region == Region::full(&item.size);
    let drop_first = if shape.len() == region.ndim() && shape == region.len.as_slice() {
        false
    } else if shape.len() + 1 == region.ndim()
        && region.len.first() == Some(&1)
        && shape == &region.len[1..]
    {
        true
    } else {
        return None;
    };
    let mut chunks = Vec::new();
    for c in &item.chunks {
        let b = if whole {
            Region::new(c.offsets.as_slice(), c.sizes.as_slice())
        } else {
            if c.is_empty() {
                continue;
            }
            let Some(i) = Region::new(c.offsets.as_slice(), c.sizes.as_slice()).intersect(region)
            else {
                continue;
            };
            let off: Vec<u64> = i.off.iter().zip(&region.off).map(|(a, b)| a - b).collect();
            Region::new(off, i.len)
        };
        let skip = usize::from(drop_first);
        let info = md.storage.get(&(key.to_string(), Some(c.offsets.clone())));
        chunks.push(DcpChunk {
            offsets: b.off[skip..].to_vec(),
            sizes: b.len[skip..].to_vec(),
            stored_offsets: c.offsets.clone(),
            rank: info.and_then(|s| writer_rank(&s.file)),
            file: info.map(|s| s.file.clone()),
            offset: info.map_or(0, |s| s.offset),
            length: info.map_or(0, |s| s.length),
        });
    }
    Some(from_chunks(key, shape, chunks, world))
}

/// Infers grid, mesh, placements and layout of a tensor of `shape` from its chunks.
pub fn from_chunks(key: &str, shape: &[u64], chunks: Vec<DcpChunk>, world: u32) -> DcpLayout {
    let boxes: Vec<(Vec<u64>, Vec<u64>)> = chunks
        .iter()
        .map(|c| (c.offsets.clone(), c.sizes.clone()))
        .collect();
    let grid = infer_grid(shape, &boxes);
    let (mut mesh, mut placements) = (Vec::new(), Vec::new());
    let mut layout = None;
    if let Some(g) = &grid {
        for d in g.split_dims() {
            mesh.push(g.sizes[d].len() as u32);
            placements.push(Placement::Shard(d));
        }
        let parts = mesh.iter().try_fold(1u32, |a, &m| a.checked_mul(m));
        if let Some(p) = parts.filter(|&p| p > 0 && world.is_multiple_of(p) && world / p > 1) {
            mesh.push(world / p);
            placements.push(Placement::Replicate);
        }
        layout = Some(grid_layout(shape, g)).filter(|l| fits(key, shape, l, &chunks));
    }
    DcpLayout {
        key: key.to_string(),
        shape: shape.to_vec(),
        world,
        grid,
        mesh,
        placements,
        layout,
        chunks,
    }
}

/// The grid the chunk boxes `(offsets, sizes)` form: on every dim their distinct intervals tile
/// `0..size` in order (empty intervals allowed), and the boxes are exactly all combinations of
/// intervals. None when the chunks are irregular.
pub fn infer_grid(shape: &[u64], boxes: &[(Vec<u64>, Vec<u64>)]) -> Option<Grid> {
    if boxes.is_empty()
        || boxes
            .iter()
            .any(|(o, s)| o.len() != shape.len() || s.len() != shape.len())
    {
        return None;
    }
    let mut sizes = Vec::with_capacity(shape.len());
    let mut count: usize = 1;
    for (d, &n) in shape.iter().enumerate() {
        let intervals: BTreeSet<(u64, u64)> = boxes.iter().map(|(o, s)| (o[d], s[d])).collect();
        let mut at = 0u64;
        for &(off, len) in &intervals {
            if off != at {
                return None;
            }
            at = at.checked_add(len)?;
        }
        if at != n {
            return None;
        }
        count = count.checked_mul(intervals.len())?;
        sizes.push(intervals.into_iter().map(|(_, l)| l).collect());
    }
    let distinct: BTreeSet<&(Vec<u64>, Vec<u64>)> = boxes.iter().collect();
    (distinct.len() == boxes.len() && boxes.len() == count).then_some(Grid { sizes })
}

/// The layout of a grid: `Replicated { ranks: 1 }` for one part, `Shard` with explicit sizes for
/// one split dim, a DTensor `Mesh` when every split dim follows torch.chunk sizes, else `Shard`s
/// nested in dim order.
pub fn grid_layout(shape: &[u64], g: &Grid) -> Layout {
    let dims = g.split_dims();
    let chunked = dims
        .iter()
        .all(|&d| Split::Chunk.sizes(shape[d], g.sizes[d].len() as u32) == g.sizes[d]);
    if dims.len() > 1 && chunked {
        return Layout::Mesh {
            mesh: dims.iter().map(|&d| g.sizes[d].len() as u32).collect(),
            placements: dims.iter().map(|&d| Placement::Shard(d)).collect(),
        };
    }
    nested(g, &dims)
}

/// `Shard` on the first of `dims`, each part holding the layout of the rest.
fn nested(g: &Grid, dims: &[usize]) -> Layout {
    let Some((&d, rest)) = dims.split_first() else {
        return Layout::single();
    };
    let shard = Layout::Shard {
        dim: d,
        parts: g.sizes[d].len() as u32,
        split: Split::Sizes(g.sizes[d].clone()),
    };
    if rest.is_empty() {
        return shard;
    }
    Layout::Nested {
        inner: vec![nested(g, rest); g.sizes[d].len()],
        outer: Box::new(shard),
    }
}

/// True when `layout` is valid for `shape`, has one rank per chunk, and its non-empty boxes are
/// exactly the non-empty chunks.
pub fn fits(key: &str, shape: &[u64], layout: &Layout, chunks: &[DcpChunk]) -> bool {
    let boxes: Vec<Region> = chunks.iter().map(region).collect();
    layout.validate(key, shape).is_ok() && layout_matches(shape, layout, &boxes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offsets: &[u64], sizes: &[u64], rank: u32) -> DcpChunk {
        DcpChunk {
            offsets: offsets.to_vec(),
            sizes: sizes.to_vec(),
            stored_offsets: offsets.to_vec(),
            rank: Some(rank),
            file: Some(format!("__{rank}_0.distcp")),
            offset: 0,
            length: 0,
        }
    }

    #[test]
    fn writer_rank_reads_the_file_name() {
        assert_eq!(writer_rank("__3_1.distcp"), Some(3));
        assert_eq!(writer_rank("sub/__12_0.distcp"), Some(12));
        assert_eq!(writer_rank("data.bin"), None);
    }

    #[test]
    fn uneven_rows_with_an_empty_part_are_one_shard() {
        let c = vec![
            chunk(&[0, 0], &[2, 4], 0),
            chunk(&[2, 0], &[1, 4], 1),
            chunk(&[3, 0], &[0, 4], 2),
        ];
        let l = from_chunks("w", &[3, 4], c, 4);
        assert_eq!(
            l.layout,
            Some(Layout::Shard {
                dim: 0,
                parts: 3,
                split: Split::Sizes(vec![2, 1, 0])
            })
        );
        assert_eq!(l.mesh, vec![3]);
        assert_eq!(l.placements, vec![Placement::Shard(0)]);
    }

    #[test]
    fn non_chunk_grid_is_nested_and_fits() {
        let mut c = Vec::new();
        for (i, (r, h)) in [(0, 3), (3, 1)].into_iter().enumerate() {
            for (j, (o, w)) in [(0, 2), (2, 3)].into_iter().enumerate() {
                c.push(chunk(&[r, o], &[h, w], (2 * i + j) as u32));
            }
        }
        let l = from_chunks("w", &[4, 5], c, 8);
        assert!(matches!(l.layout, Some(Layout::Nested { .. })), "{l:?}");
        assert_eq!(l.mesh, vec![2, 2, 2]);
        assert_eq!(
            l.placements,
            vec![
                Placement::Shard(0),
                Placement::Shard(1),
                Placement::Replicate
            ]
        );
    }

    #[test]
    fn irregular_chunks_have_no_grid_or_layout() {
        let c = vec![
            chunk(&[0, 0], &[2, 2], 0),
            chunk(&[0, 2], &[4, 2], 1),
            chunk(&[2, 0], &[2, 2], 2),
        ];
        let l = from_chunks("w", &[4, 4], c, 3);
        assert_eq!((l.grid, l.layout), (None, None));
        assert!(l.mesh.is_empty() && l.chunks.len() == 3);
    }

    #[test]
    fn scalar_is_one_chunk() {
        let l = from_chunks("step", &[], vec![chunk(&[], &[], 3)], 4);
        assert_eq!(l.layout, Some(Layout::single()));
        assert_eq!(l.mesh, vec![4]);
        assert_eq!(l.placements, vec![Placement::Replicate]);
    }
}
