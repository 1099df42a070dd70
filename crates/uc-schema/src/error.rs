//! Typed validation errors. Each names the tensor and the numbers that do not fit.

use thiserror::Error;

/// Why metadata is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    #[error("tensor `{tensor}`: split sizes {sizes:?} sum to {sum}, but dim {dim} has {expected}")]
    SizesDontSum {
        tensor: String,
        dim: usize,
        sizes: Vec<u64>,
        sum: u64,
        expected: u64,
    },
    #[error("tensor `{tensor}`: {got} split sizes given for {parts} ranks")]
    SizesCount {
        tensor: String,
        parts: u32,
        got: usize,
    },
    #[error(
        "tensor `{tensor}`: dim {dim} of size {size} does not split evenly over {parts} ranks"
    )]
    UnevenSplit {
        tensor: String,
        dim: usize,
        size: u64,
        parts: u32,
    },
    #[error("tensor `{tensor}`: shard dim {dim} out of range for a {ndim}-d tensor")]
    DimOutOfRange {
        tensor: String,
        dim: usize,
        ndim: usize,
    },
    #[error("tensor `{tensor}`: a layout over 0 ranks")]
    ZeroRanks { tensor: String },
    #[error(
        "tensor `{tensor}`: sub-param sizes {sizes:?} sum to {sum}, but dim {dim} has {expected}"
    )]
    SubParamMismatch {
        tensor: String,
        dim: usize,
        sizes: Vec<u64>,
        sum: u64,
        expected: u64,
    },
    #[error("tensor `{tensor}`: {experts} experts do not divide over ep {ep}")]
    ExpertsNotDivisible {
        tensor: String,
        experts: u64,
        ep: u32,
    },
    #[error(
        "tensor `{tensor}`: expert dim 0 has {dim0} entries but the layout says {experts} experts"
    )]
    ExpertDimMismatch {
        tensor: String,
        dim0: u64,
        experts: u64,
    },
    #[error("tensor `{tensor}`: mesh of {mesh_axes} axes with {placements} placements")]
    MeshPlacementMismatch {
        tensor: String,
        mesh_axes: usize,
        placements: usize,
    },
    #[error("tensor `{tensor}`: placement Shard({dim}) on mesh axis {axis} but the tensor has {ndim} dims")]
    PlacementDimOutOfRange {
        tensor: String,
        axis: usize,
        dim: usize,
        ndim: usize,
    },
    #[error("tensor `{tensor}`: range {offset}..{end} lies outside its ZeRO group of {group_numel} elements")]
    ZeroRangeOutsideGroup {
        tensor: String,
        offset: u64,
        end: u64,
        group_numel: u64,
    },
    #[error(
        "tensor `{tensor}`: ZeRO group padded to {padded} elements does not split over dp {dp}"
    )]
    ZeroPaddingUneven {
        tensor: String,
        padded: u64,
        dp: u32,
    },
    #[error("tensor `{tensor}`: nested layout has {inner} inner layouts for {outer} outer ranks")]
    NestedCount {
        tensor: String,
        outer: u32,
        inner: usize,
    },
    #[error("tensor `{tensor}`: inner layouts span different rank counts {counts:?}")]
    NestedRanksDiffer { tensor: String, counts: Vec<u32> },
    #[error("tensor `{tensor}`: padded shape {padded:?} is smaller than or not of the rank of shape {shape:?}")]
    PaddedShape {
        tensor: String,
        shape: Vec<u64>,
        padded: Vec<u64>,
    },
    #[error("{what} spans more than {} ranks", u32::MAX)]
    TooManyRanks { what: String },
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
    #[error("DeepSpeed metadata `{key}`: expected {expected}, found {found}")]
    DeepSpeedType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("DeepSpeed metadata `{key}` is missing")]
    DeepSpeedMissing { key: String },
    #[error(
        "tensor `{tensor}`: replicated over {ranks} ranks but the local shapes differ: {shapes:?}"
    )]
    ReplicaShapesDiffer {
        tensor: String,
        ranks: u32,
        shapes: Vec<Vec<u64>>,
    },
    #[error(
        "tensor `{tensor}`: TP-local shapes {shapes:?} differ outside the concatenation dim {dim}"
    )]
    LocalShapesDiffer {
        tensor: String,
        dim: usize,
        shapes: Vec<Vec<u64>>,
    },
    #[error("tensor `{tensor}`: {got} shard-width lists for {subs} sub-params")]
    SubParamWidthsCount {
        tensor: String,
        subs: usize,
        got: usize,
    },
    #[error("tensor `{tensor}`: sub-param {sub} has {got} shard widths for {parts} TP ranks")]
    SubParamWidthsRanks {
        tensor: String,
        sub: usize,
        got: usize,
        parts: u32,
    },
    #[error("tensor `{tensor}`: shard widths {widths:?} of sub-param {sub} sum to {sum}, but the sub-param has {expected}")]
    SubParamWidthsDontSum {
        tensor: String,
        sub: usize,
        widths: Vec<u64>,
        sum: u64,
        expected: u64,
    },
    #[error("tensor `{tensor}`: TP rank {rank} holds {got} along dim {dim}, but the shard widths give {expected}")]
    LocalShapeMismatch {
        tensor: String,
        rank: u32,
        dim: usize,
        got: u64,
        expected: u64,
    },
    #[error("tensor `{tensor}`: universal_checkpoint_version {version} needs sub_param_shard_widths for `{pattern}`")]
    MissingShardWidths {
        tensor: String,
        pattern: String,
        version: String,
    },
    #[error("tensor `{tensor}`: sub-param shape {spec} does not fit the TP-local shape {shape:?}")]
    SubParamShape {
        tensor: String,
        spec: String,
        shape: Vec<u64>,
    },
    #[error("tensor `{tensor}`: {size} elements along the fused dim do not split into {count} equal sub-params")]
    SubParamCount {
        tensor: String,
        count: u64,
        size: u64,
    },
    #[error("tensor `{tensor}`: matches a vocabulary pattern but universal_checkpoint_info has no original_vocab_size")]
    MissingVocabSize { tensor: String },
    #[error("tensor `{tensor}`: original_vocab_size {vocab} exceeds its {rows} stored rows")]
    VocabTooLarge {
        tensor: String,
        vocab: u64,
        rows: u64,
    },
    #[error("tensor `{tensor}`: DeepSpeed AutoTP cannot convert it: {reason}")]
    AutoTpUnsupported { tensor: String, reason: String },
    #[error("AutoEP layer `{layer}`: {num_local_experts} local experts x ep {ep} != {num_experts} experts")]
    ExpertCountMismatch {
        layer: String,
        num_experts: u64,
        num_local_experts: u64,
        ep: u32,
    },
    #[error("AutoEP layer `{layer}`: ep rank {rank} owns experts {experts:?}, not the block of {local} starting at {expected_start}")]
    ExpertPlacement {
        layer: String,
        rank: u32,
        experts: Vec<u64>,
        local: u64,
        expected_start: u64,
    },
    #[error("AutoEP layer `{layer}`: global experts {start}..{end} but ep rank {rank} with {local} local experts owns {expected_start}..{expected_end}")]
    ExpertRange {
        layer: String,
        rank: u32,
        local: u64,
        start: u64,
        end: u64,
        expected_start: u64,
        expected_end: u64,
    },
    #[error("AutoEP layers: duplicate {what} `{value}`")]
    DuplicateExpertLayer { what: &'static str, value: String },
}
