//! The crate's typed errors. Every variant names the file (and tensor or byte offset, where there is one).

use std::path::PathBuf;
use thiserror::Error;

/// Why bytes from disk could not be turned into plain values (or a `.pt` could not be written).
#[derive(Debug, Error)]
pub enum TorchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid zip archive: {why}")]
    BadZip { path: PathBuf, why: String },
    #[error("{path}: truncated: {why}")]
    Truncated { path: PathBuf, why: String },
    #[error("{path}: pickle names global `{module}.{name}`, which is not on the allowlist")]
    DisallowedGlobal {
        path: PathBuf,
        module: String,
        name: String,
    },
    #[error("{path}: bad pickle at byte {offset}: {why}")]
    BadPickle {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("{path}: tensor `{tensor}`: {why}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        why: String,
    },
    #[error("{path}: missing key `{key}`")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: {why}")]
    Format { path: PathBuf, why: String },
    #[error("{path}: output already exists; refusing to overwrite")]
    OutputExists { path: PathBuf },
}

/// Result with [`TorchError`].
pub type Result<T, E = TorchError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TorchError {
    let path = path.into();
    move |source| TorchError::Io { path, source }
}
