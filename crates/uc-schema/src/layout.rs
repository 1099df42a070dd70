//! How one tensor is distributed over ranks. Every layout here becomes a list of boxes in uc-merge.
//!
//! Ranks are numbered `0..layout.ranks()`. A [`Layout::Nested`] layout numbers its ranks
//! `inner_rank * outer_ranks + outer_rank` (the outer index varies fastest), which is DeepSpeed's
//! `dp_rank * tp + tp_rank` when the outer layout is tensor parallel and the inner one is ZeRO.

use serde::{Deserialize, Serialize};

/// How a dimension of `size` elements is split over `parts` ranks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Equal parts; the size must divide evenly.
    Even,
    /// Explicit per-rank sizes (may be uneven or zero); they must sum to the size.
    Sizes(Vec<u64>),
    /// `torch.chunk` / DTensor semantics: each part gets `ceil(size/parts)` until the elements run out,
    /// so trailing parts may be short or empty.
    Chunk,
    /// DeepSpeed AutoTP (`tp_shard.get_shard_size`): the size is cut into units of `grain` elements
    /// (e.g. one attention head group), units are spread near-evenly and the first `units % parts`
    /// ranks get one more. When the size is smaller than one grain, elements are spread near-evenly.
    Grain { grain: u64 },
}

impl Split {
    /// Per-part sizes of a dimension of `size` elements over `parts` parts.
    ///
    /// ```
    /// use uc_schema::Split;
    /// assert_eq!(Split::Chunk.sizes(10, 4), vec![3, 3, 3, 1]);
    /// assert_eq!(Split::Chunk.sizes(2, 4), vec![1, 1, 0, 0]);
    /// assert_eq!(Split::Grain { grain: 8 }.sizes(24, 2), vec![16, 8]);
    /// ```
    /// `Even` with an uneven size and `Grain` with a remainder return sizes that do not sum to
    /// `size`; [`crate::validate`] reports those.
    pub fn sizes(&self, size: u64, parts: u32) -> Vec<u64> {
        let p = parts.max(1) as u64;
        match self {
            Split::Even => vec![size / p; p as usize],
            Split::Sizes(s) => s.clone(),
            Split::Chunk => {
                let c = size.div_ceil(p);
                (0..p)
                    .map(|i| size.saturating_sub(i.saturating_mul(c)).min(c))
                    .collect()
            }
            Split::Grain { grain } => {
                let g = (*grain).max(1);
                if size >= g {
                    let units = size / g;
                    (0..p)
                        .map(|i| (units / p + u64::from(i < units % p)) * g)
                        .collect()
                } else {
                    (0..p).map(|i| size / p + u64::from(i < size % p)).collect()
                }
            }
        }
    }
}

impl Split {
    /// Size of part `index` alone (0 past the last part), equal to `sizes(size, parts)[index]`
    /// without building the list, so a huge `parts` costs nothing.
    ///
    /// ```
    /// use uc_schema::Split;
    /// assert_eq!(Split::Chunk.part(10, 4, 3), 1);
    /// assert_eq!(Split::Grain { grain: 8 }.part(24, 2, 0), 16);
    /// ```
    pub fn part(&self, size: u64, parts: u32, index: u32) -> u64 {
        let p = parts.max(1) as u64;
        let i = index as u64;
        if i >= p {
            return match self {
                Split::Sizes(s) => s.get(index as usize).copied().unwrap_or(0),
                _ => 0,
            };
        }
        match self {
            Split::Even => size / p,
            Split::Sizes(s) => s.get(index as usize).copied().unwrap_or(0),
            Split::Chunk => {
                let c = size.div_ceil(p);
                size.saturating_sub(i.saturating_mul(c)).min(c)
            }
            Split::Grain { grain } => {
                let g = (*grain).max(1);
                if size >= g {
                    let units = size / g;
                    (units / p + u64::from(i < units % p)) * g
                } else {
                    size / p + u64::from(i < size % p)
                }
            }
        }
    }
}

/// One fused sub-parameter (e.g. the K of a fused QKV): its extent along the fused dim and how it is split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubParam {
    pub size: u64,
    pub split: Split,
}

/// How experts are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertStorage {
    /// One tensor `[E_local, …]` per rank; the global tensor is `[E, …]` (dim 0 = expert).
    Stacked,
    /// One local buffer per local expert (buffer index = local expert index), each `[…]` without the
    /// expert dim; the global tensor is still `[E, …]`.
    PerExpert,
}

/// A DTensor placement on one mesh axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Split the current local extent of `dim` with torch.chunk semantics over this axis.
    Shard(usize),
    /// Every coordinate of this axis holds the same data.
    Replicate,
}

/// The distribution of one tensor over ranks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Every one of `ranks` ranks holds the whole tensor.
    Replicated { ranks: u32 },
    /// Split along `dim` over `parts` ranks (row / column tensor parallel, vocab parallel).
    Shard {
        dim: usize,
        parts: u32,
        split: Split,
    },
    /// Sub-parameters concatenated along `dim` (fused QKV), each split over `parts` ranks on its own;
    /// a rank's local tensor is its pieces of every sub-parameter, concatenated in order.
    Fused {
        dim: usize,
        parts: u32,
        subs: Vec<SubParam>,
    },
    /// Expert parallel: `num_experts` experts over `ep` ranks, rank r owning experts
    /// `r*E/ep .. (r+1)*E/ep` (dim 0 of the global tensor is the expert dim).
    Experts {
        num_experts: u64,
        ep: u32,
        storage: ExpertStorage,
    },
    /// DTensor: a device mesh (row-major rank numbering) and one placement per mesh axis,
    /// applied in mesh order (several axes may shard one dim).
    Mesh {
        mesh: Vec<u32>,
        placements: Vec<Placement>,
    },
    /// ZeRO stage 1/2 (and bf16 optimizer): the parameter group is flattened and concatenated,
    /// padded to a multiple of `alignment`, and split evenly over `dp` ranks. This tensor occupies
    /// `offset .. offset + numel` of the group; each rank's local buffer is its partition.
    ZeroFlat {
        dp: u32,
        offset: u64,
        group_numel: u64,
        alignment: u64,
    },
    /// ZeRO stage 3: this tensor is flattened and split over `dp` ranks, `ceil(numel/dp)` each with
    /// tail padding; it sits at `offset` of each rank's group partition buffer.
    Zero3 { dp: u32, offset: u64 },
    /// `inner[o]` distributes the local tensor of outer rank `o` (e.g. ZeRO inside tensor parallel).
    Nested {
        outer: Box<Layout>,
        inner: Vec<Layout>,
    },
}

impl Layout {
    /// A single rank holding everything.
    pub fn single() -> Layout {
        Layout::Replicated { ranks: 1 }
    }

    /// Number of ranks this layout spans (`u32::MAX` when that overflows; see [`Layout::checked_ranks`]).
    pub fn ranks(&self) -> u32 {
        self.checked_ranks().unwrap_or(u32::MAX)
    }

    /// Number of ranks this layout spans, `None` when a mesh or nesting overflows u32.
    pub fn checked_ranks(&self) -> Option<u32> {
        match self {
            Layout::Replicated { ranks } => Some(*ranks),
            Layout::Shard { parts, .. } | Layout::Fused { parts, .. } => Some(*parts),
            Layout::Experts { ep, .. } => Some(*ep),
            Layout::Mesh { mesh, .. } => mesh.iter().try_fold(1u32, |a, &m| a.checked_mul(m)),
            Layout::ZeroFlat { dp, .. } | Layout::Zero3 { dp, .. } => Some(*dp),
            Layout::Nested { outer, inner } => {
                let most = inner
                    .iter()
                    .map(Layout::checked_ranks)
                    .try_fold(1u32, |a, r| Some(a.max(r?)))?;
                outer.checked_ranks()?.checked_mul(most)
            }
        }
    }

    /// Short human name of the layout kind (`"shard(dim 1)"`, `"zero3"`, …).
    pub fn kind(&self) -> String {
        match self {
            Layout::Replicated { .. } => "replicated".into(),
            Layout::Shard { dim, .. } => format!("shard(dim {dim})"),
            Layout::Fused { dim, subs, .. } => {
                format!("fused {} sub-params (dim {dim})", subs.len())
            }
            Layout::Experts { .. } => "experts".into(),
            Layout::Mesh { .. } => "mesh".into(),
            Layout::ZeroFlat { .. } => "zero1/2 flat".into(),
            Layout::Zero3 { .. } => "zero3".into(),
            Layout::Nested { outer, inner } if **outer == Layout::single() => {
                inner.first().map_or_else(|| outer.kind(), Layout::kind)
            }
            Layout::Nested { outer, inner } => match inner.first() {
                Some(i) => format!("{} > {}", outer.kind(), i.kind()),
                None => outer.kind(),
            },
        }
    }
}

/// Padded size of a ZeRO-1/2 group: `group_numel` rounded up to a multiple of `alignment`.
pub fn zero_padded(group_numel: u64, alignment: u64) -> u64 {
    group_numel.div_ceil(alignment.max(1)) * alignment.max(1)
}
