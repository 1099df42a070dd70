//! The optional `dcp` section of a `uc.json` document, as `uc view` writes it for PyTorch DCP and
//! Megatron `torch_dist` checkpoints: per tensor the mesh and placements inferred from its chunks
//! (a `.metadata` records neither) and the chunk table (box, writer rank, file, byte range).
//!
//! A tensor with DCP facts is drawn from its chunks, each coloured and labelled by the rank that
//! wrote it; its `tensors[].meta.layout` (checked against the chunks here too) names the layout.
//!
//! ```json
//! "dcp": {"world": 4, "tensors": [{"name": "blocks.0.qkv.weight", "role": "fp32_master",
//!   "key": "model.blocks.0.qkv.weight", "grid": [4, 1], "mesh": [4], "placements": [{"shard": 0}],
//!   "chunks": [{"offsets": [16, 0], "sizes": [16, 32], "stored_offsets": [16, 0], "rank": 2,
//!               "file": "__2_0.distcp", "offset": 6512, "length": 3291}]}]}
//! ```

use crate::draw::box_attr;
use crate::error::{Result, ViewError};
use crate::svg::color;
use crate::topo::MAX_RANKS;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as J};
use std::collections::BTreeMap;
use uc_merge::{layout_matches, rowmajor_strides, Piece, Region};
use uc_schema::{Placement, Role, TensorMeta};

/// The whole section: the ranks that wrote files and the facts of each tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcpSection {
    /// Ranks that wrote files (max `<rank>` in `__<rank>_<n>.distcp` + 1).
    pub world: u32,
    pub tensors: Vec<DcpTensor>,
}

/// What the chunks of one tensor say (see `uc_store::dcp::layout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcpTensor {
    /// The tensor (name and role as in `tensors`).
    pub name: String,
    pub role: Role,
    /// The DCP item it is read from (a stacked item for a Megatron layer).
    pub key: String,
    /// Parts per dim of the chunk grid; absent when the chunks form no grid.
    #[serde(default)]
    pub grid: Option<Vec<u32>>,
    /// Inferred mesh (one axis per split dim, then the replicated rest of the world).
    #[serde(default)]
    pub mesh: Vec<u32>,
    /// One placement per mesh axis.
    #[serde(default)]
    pub placements: Vec<Placement>,
    pub chunks: Vec<DcpChunk>,
}

pub use uc_schema::DcpChunk;

/// A chunk's box.
pub fn region(c: &DcpChunk) -> Region {
    Region::new(c.offsets.as_slice(), c.sizes.as_slice())
}

/// A tensor's DCP facts as the viewer holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dcp {
    pub facts: DcpTensor,
    /// Ranks that wrote files.
    pub world: u32,
    /// True when the tensor's layout has one rank per chunk and its boxes are exactly the chunks.
    pub layout_fits: bool,
}

/// `Shard(0)` / `Replicate`, as torch prints them.
pub fn placement_label(p: &Placement) -> String {
    match p {
        Placement::Shard(d) => format!("Shard({d})"),
        Placement::Replicate => "Replicate".into(),
    }
}

impl Dcp {
    /// Checks `facts` against the tensor `meta` (dims, boxes inside the shape, writer ranks of
    /// stored chunks, sizes the viewer draws) and whether its layout reproduces the chunks.
    pub fn new(facts: DcpTensor, world: u32, meta: &TensorMeta) -> Result<Dcp> {
        let bad = |why: String| ViewError::Tensor {
            tensor: meta.name.clone(),
            why: format!("dcp: {why}"),
        };
        let shape = &meta.shape;
        if facts.chunks.len() > MAX_RANKS as usize {
            return Err(bad(format!(
                "{} chunks (the viewer draws up to {MAX_RANKS})",
                facts.chunks.len()
            )));
        }
        for c in &facts.chunks {
            if c.offsets.len() != shape.len() || c.sizes.len() != shape.len() {
                return Err(bad(format!(
                    "chunk {:?}+{:?} does not have the {} dims of {shape:?}",
                    c.offsets,
                    c.sizes,
                    shape.len()
                )));
            }
            let inside = c
                .offsets
                .iter()
                .zip(&c.sizes)
                .zip(shape)
                .all(|((o, s), n)| o.checked_add(*s).is_some_and(|e| e <= *n));
            if !inside {
                return Err(bad(format!(
                    "chunk {:?}+{:?} lies outside {shape:?}",
                    c.offsets, c.sizes
                )));
            }
            match c.rank {
                Some(r) if r >= MAX_RANKS => {
                    return Err(bad(format!(
                        "writer rank {r} (the viewer draws up to {MAX_RANKS})"
                    )))
                }
                None if !c.is_empty() => {
                    return Err(bad(format!(
                        "chunk {:?}+{:?} has no writer rank",
                        c.offsets, c.sizes
                    )))
                }
                _ => {}
            }
        }
        let layout_fits = fits(meta, &facts.chunks);
        Ok(Dcp {
            facts,
            world,
            layout_fits,
        })
    }

    /// The non-empty chunks as pieces: rank = writer rank, buffer = the chunk's index among that
    /// rank's chunks, each a dense local buffer.
    pub fn pieces(&self) -> Vec<Piece> {
        let mut next: BTreeMap<u32, u32> = BTreeMap::new();
        self.facts
            .chunks
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| {
                let rank = c.rank.unwrap_or(0);
                let b = next.entry(rank).or_insert(0);
                let buffer = *b;
                *b += 1;
                Piece {
                    rank,
                    buffer,
                    global: region(c),
                    offset: 0,
                    strides: rowmajor_strides(&c.sizes),
                }
            })
            .collect()
    }

    /// `mesh (2, 2) · (Shard(0), Shard(1))`, or why there is none.
    pub fn mesh_label(&self) -> String {
        if self.facts.mesh.is_empty() {
            return match self.facts.grid {
                Some(_) => "one chunk, no mesh axis".into(),
                None => "irregular chunks: no mesh".into(),
            };
        }
        let m: Vec<String> = self.facts.mesh.iter().map(u32::to_string).collect();
        let p: Vec<String> = self.facts.placements.iter().map(placement_label).collect();
        format!("mesh ({}) · ({})", m.join(", "), p.join(", "))
    }

    /// Short text: `mesh (4) · (Shard(0)) · 4 chunks` plus whether the layout fits.
    pub fn label(&self) -> String {
        let n = self.facts.chunks.len();
        format!(
            "{} · {n} chunk{}{}",
            self.mesh_label(),
            if n == 1 { "" } else { "s" },
            if self.layout_fits {
                ""
            } else {
                " · no layout fits"
            }
        )
    }

    /// The facts as JSON for the page: mesh, placements, grid and the chunk table.
    pub fn summary(&self) -> J {
        let f = &self.facts;
        let chunks: Vec<J> = f
            .chunks
            .iter()
            .map(|c| {
                json!({"offsets": c.offsets, "sizes": c.sizes, "box": box_attr(&region(c)),
                       "stored_offsets": c.stored_offsets, "rank": c.rank, "file": c.file,
                       "offset": c.offset, "length": c.length, "empty": c.is_empty(),
                       "color": c.rank.map(color)})
            })
            .collect();
        json!({"key": f.key, "world": self.world, "grid": f.grid, "mesh": f.mesh,
               "placements": f.placements.iter().map(placement_label).collect::<Vec<_>>(),
               "mesh_label": self.mesh_label(), "label": self.label(),
               "layout_fits": self.layout_fits, "chunks": chunks})
    }
}

/// True when `meta.layout` is valid, has one rank per chunk and its non-empty boxes are exactly
/// the non-empty chunks.
pub fn fits(meta: &TensorMeta, chunks: &[DcpChunk]) -> bool {
    let boxes: Vec<Region> = chunks.iter().map(region).collect();
    meta.validate().is_ok() && layout_matches(meta.stored_shape(), &meta.layout, &boxes)
}

/// Parses the section (a `dcp` value of a `uc.json` document).
pub fn parse(j: J) -> Result<DcpSection> {
    serde_json::from_value(j).map_err(|e| ViewError::Format {
        what: "dcp section".into(),
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uc_schema::{DType, Layout, Split};

    fn chunk(off: u64, len: u64, rank: u32) -> DcpChunk {
        DcpChunk {
            offsets: vec![off, 0],
            sizes: vec![len, 4],
            stored_offsets: vec![off, 0],
            rank: Some(rank),
            file: Some(format!("__{rank}_0.distcp")),
            offset: 0,
            length: len * 16,
        }
    }

    fn facts(chunks: Vec<DcpChunk>) -> DcpTensor {
        DcpTensor {
            name: "w".into(),
            role: Role::Param,
            key: "model.w".into(),
            grid: Some(vec![chunks.len() as u32, 1]),
            mesh: vec![chunks.len() as u32],
            placements: vec![Placement::Shard(0)],
            chunks,
        }
    }

    fn meta(split: Vec<u64>) -> TensorMeta {
        TensorMeta::new("w", DType::F32, vec![4, 4], Role::Param).with_layout(Layout::Shard {
            dim: 0,
            parts: split.len() as u32,
            split: Split::Sizes(split),
        })
    }

    #[test]
    fn pieces_are_coloured_by_writer_and_layout_is_checked() {
        let f = facts(vec![chunk(0, 1, 0), chunk(1, 3, 2), chunk(4, 0, 3)]);
        let d = Dcp::new(f.clone(), 4, &meta(vec![1, 3, 0])).unwrap();
        assert!(d.layout_fits);
        let ranks: Vec<u32> = d.pieces().iter().map(|p| p.rank).collect();
        assert_eq!(ranks, vec![0, 2]);
        assert_eq!(d.label(), "mesh (3) · (Shard(0)) · 3 chunks");
        let d = Dcp::new(f, 4, &meta(vec![2, 2, 0])).unwrap();
        assert!(!d.layout_fits);
        assert!(d.label().ends_with("no layout fits"));
    }

    #[test]
    fn bad_chunks_are_typed_errors() {
        let e = Dcp::new(facts(vec![chunk(3, 2, 0)]), 1, &meta(vec![4])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor `w`: dcp: chunk [3, 0]+[2, 4] lies outside [4, 4]"
        );
        let mut c = chunk(0, 4, 0);
        c.rank = None;
        let e = Dcp::new(facts(vec![c]), 1, &meta(vec![4])).unwrap_err();
        assert!(e.to_string().ends_with("has no writer rank"), "{e}");
    }
}
