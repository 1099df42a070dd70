//! The store's typed errors. Every variant names the file (and tensor, where there is one).

use std::path::PathBuf;
use thiserror::Error;

/// Why reading or writing a checkpoint failed.
#[derive(Debug, Error)]
pub enum StoreError {
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
    #[error("{path}: live workers of another conversion are writing this output (a process holds its lock); refusing — wait for them or stop them")]
    LiveWriters { path: PathBuf },
    #[error("{path}: not enough free space: the output needs {needed} bytes, the file system has {available} free")]
    DiskFull {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("{path}: output already exists; refusing to overwrite")]
    OutputExists { path: PathBuf },
    #[error("{path}: checksum mismatch for `{file}`: expected {expected}, found {found}")]
    Checksum {
        path: PathBuf,
        file: String,
        expected: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Schema {
        path: PathBuf,
        source: uc_schema::SchemaError,
    },
    #[error("{path}: no COMPLETE marker; not a finished checkpoint")]
    Incomplete { path: PathBuf },
    #[error("{path}: tensor `{tensor}` was planned but never written")]
    Unwritten { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}`: {source}")]
    Merge {
        path: PathBuf,
        tensor: String,
        source: Box<uc_merge::MergeError>,
    },
    #[error("{path}: `{key}` is {value}; expected {expected}")]
    BadValue {
        path: PathBuf,
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{path}: tensor `{tensor}` belongs to expert {found}, but the file name says expert {expected}")]
    WrongExpert {
        path: PathBuf,
        tensor: String,
        expected: u64,
        found: u64,
    },
    #[error("{path}: file is missing; it holds a chunk of tensor `{tensor}`")]
    MissingFile { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}`: byte range [{start}, {start}+{len}) lies past the end of the {size}-byte file")]
    OutOfRange {
        path: PathBuf,
        tensor: String,
        start: u64,
        len: u64,
        size: u64,
    },
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

impl From<uc_torch::TorchError> for StoreError {
    /// The parsing layer's errors keep their kind: a disallowed global stays a disallowed global.
    fn from(e: uc_torch::TorchError) -> StoreError {
        use uc_torch::TorchError as T;
        match e {
            T::Io { path, source } => StoreError::Io { path, source },
            T::BadZip { path, why } => StoreError::BadZip { path, why },
            T::Truncated { path, why } => StoreError::Truncated { path, why },
            T::DisallowedGlobal { path, module, name } => {
                StoreError::DisallowedGlobal { path, module, name }
            }
            T::BadPickle { path, offset, why } => StoreError::BadPickle { path, offset, why },
            T::BadTensor { path, tensor, why } => StoreError::BadTensor { path, tensor, why },
            T::MissingKey { path, key } => StoreError::MissingKey { path, key },
            T::Format { path, why } => StoreError::Format { path, why },
            T::OutputExists { path } => StoreError::OutputExists { path },
        }
    }
}
