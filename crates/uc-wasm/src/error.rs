//! Typed viewer errors; schema and merge errors keep uc-schema's and uc-merge's own text.

use thiserror::Error;
use uc_merge::MergeError;
use uc_schema::SchemaError;

/// Why metadata cannot be drawn.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ViewError {
    /// Invalid metadata, exactly as uc-schema words it.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A layout or plan uc-merge refuses, exactly as uc-merge words it.
    #[error(transparent)]
    Merge(MergeError),
    #[error("metadata is not valid JSON: {0}")]
    Json(String),
    /// A document of a known format whose fields do not fit it.
    #[error("{what}: {error}")]
    Format { what: String, error: String },
    #[error("metadata format not recognised: expected a uc.json manifest (`version`, `source`, `tensors`), DeepSpeed `universal_checkpoint_info` with per-TP-rank `param_shapes`, or a model description (`tensors` + `topology`)")]
    Unknown,
    #[error("no tensor #{index}: the metadata has {count}")]
    NoTensor { index: usize, count: usize },
    #[error("tensor `{tensor}`: {why}")]
    Tensor { tensor: String, why: String },
    #[error("tensor `{tensor}`: too large to draw: {why}")]
    TooLarge { tensor: String, why: String },
    #[error("topology: {0}")]
    Topology(String),
}

impl From<MergeError> for ViewError {
    fn from(e: MergeError) -> ViewError {
        match e {
            MergeError::Schema(s) => ViewError::Schema(s),
            other => ViewError::Merge(other),
        }
    }
}

/// Result with a [`ViewError`].
pub type Result<T, E = ViewError> = std::result::Result<T, E>;
