//! Typed errors of uc-burn: every failure names the tensor, rank or path involved.

use std::path::PathBuf;

/// Result with [`BurnError`].
pub type Result<T, E = BurnError> = std::result::Result<T, E>;

/// Everything that can go wrong saving, loading or resharding Burn tensors.
#[derive(Debug, thiserror::Error)]
pub enum BurnError {
    /// A geometry error from uc-merge (uncovered box, bad layout…).
    #[error(transparent)]
    Merge(#[from] uc_merge::MergeError),
    /// An on-disk error from uc-store.
    #[error(transparent)]
    Store(#[from] uc_store::StoreError),
    /// A layout rule pattern that is not a valid regex.
    #[error("bad layout pattern `{pattern}`: {why}")]
    Pattern { pattern: String, why: String },
    /// A layout that cannot apply to a tensor of this shape.
    #[error("tensor `{tensor}` of shape {shape:?}: {why}")]
    Layout {
        tensor: String,
        shape: Vec<u64>,
        why: String,
    },
    /// A tensor or buffer that should be there but is not.
    #[error("tensor `{tensor}` ({role}): {why}")]
    Missing {
        tensor: String,
        role: String,
        why: String,
    },
    /// Tensor data of the wrong size, type or shape.
    #[error("tensor `{tensor}`: {why}")]
    Data { tensor: String, why: String },
    /// A sharded checkpoint folder that is not what it claims.
    #[error("sharded checkpoint {path}: {why}")]
    Sharded { path: PathBuf, why: String },
    /// A file system error outside uc-store.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Maps an io error to [`BurnError::Io`] for `path`.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BurnError + '_ {
    move |source| BurnError::Io {
        path: path.to_path_buf(),
        source,
    }
}
