//! Typed validation errors. Each names the tensor and the numbers that do not fit.

use thiserror::Error;

/// Why metadata is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    #[error("tensor `{tensor}`: split sizes {sizes:?} sum to {sum}, but dim {dim} has {expected}")]
    SizesDontSum { tensor: String, dim: usize, sizes: Vec<u64>, sum: u64, expected: u64 },
    #[error("tensor `{tensor}`: {got} split sizes given for {parts} ranks")]
    SizesCount { tensor: String, parts: u32, got: usize },
    #[error("tensor `{tensor}`: dim {dim} of size {size} does not split evenly over {parts} ranks")]
    UnevenSplit { tensor: String, dim: usize, size: u64, parts: u32 },
    #[error("tensor `{tensor}`: shard dim {dim} out of range for a {ndim}-d tensor")]
    DimOutOfRange { tensor: String, dim: usize, ndim: usize },
    #[error("tensor `{tensor}`: a layout over 0 ranks")]
    ZeroRanks { tensor: String },
    #[error("tensor `{tensor}`: sub-param sizes {sizes:?} sum to {sum}, but dim {dim} has {expected}")]
    SubParamMismatch { tensor: String, dim: usize, sizes: Vec<u64>, sum: u64, expected: u64 },
    #[error("tensor `{tensor}`: {experts} experts do not divide over ep {ep}")]
    ExpertsNotDivisible { tensor: String, experts: u64, ep: u32 },
    #[error("tensor `{tensor}`: expert dim 0 has {dim0} entries but the layout says {experts} experts")]
    ExpertDimMismatch { tensor: String, dim0: u64, experts: u64 },
    #[error("tensor `{tensor}`: mesh of {mesh_axes} axes with {placements} placements")]
    MeshPlacementMismatch { tensor: String, mesh_axes: usize, placements: usize },
    #[error("tensor `{tensor}`: placement Shard({dim}) on mesh axis {axis} but the tensor has {ndim} dims")]
    PlacementDimOutOfRange { tensor: String, axis: usize, dim: usize, ndim: usize },
    #[error("tensor `{tensor}`: range {offset}..{end} lies outside its ZeRO group of {group_numel} elements")]
    ZeroRangeOutsideGroup { tensor: String, offset: u64, end: u64, group_numel: u64 },
    #[error("tensor `{tensor}`: ZeRO group padded to {padded} elements does not split over dp {dp}")]
    ZeroPaddingUneven { tensor: String, padded: u64, dp: u32 },
    #[error("tensor `{tensor}`: nested layout has {inner} inner layouts for {outer} outer ranks")]
    NestedCount { tensor: String, outer: u32, inner: usize },
    #[error("tensor `{tensor}`: inner layouts span different rank counts {counts:?}")]
    NestedRanksDiffer { tensor: String, counts: Vec<u32> },
    #[error("tensor `{tensor}`: padded shape {padded:?} is smaller than or not of the rank of shape {shape:?}")]
    PaddedShape { tensor: String, shape: Vec<u64>, padded: Vec<u64> },
    #[error("tensor name `{name}` is unsafe: {why}")]
    UnsafeName { name: String, why: &'static str },
    #[error("pattern `{pattern}` is not a valid regex: {error}")]
    BadPattern { pattern: String, error: String },
    #[error("ZeRO stage {stage} does not exist (0–3)")]
    BadZeroStage { stage: u8 },
    #[error("topology axis `{axis}` has size 0")]
    ZeroAxis { axis: String },
    #[error("manifest version {version} is not supported (this build reads 1..={supported})")]
    UnsupportedVersion { version: u32, supported: u32 },
    #[error("DeepSpeed metadata: {0}")]
    DeepSpeed(String),
}
