//! Typed merge errors naming the tensor, ranks and boxes involved.

use crate::Region;
use thiserror::Error;
use uc_schema::{DType, SchemaError};

/// Why a plan could not be made or executed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MergeError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("tensor `{tensor}`: target rank {rank} box {region:?}: {missing} elements are held by no source")]
    Uncovered {
        tensor: String,
        rank: u32,
        region: Box<Region>,
        missing: u64,
    },
    #[error("tensor `{tensor}`: source boxes {a:?} and {b:?} overlap without being replicas")]
    Overlap {
        tensor: String,
        a: Box<Region>,
        b: Box<Region>,
    },
    #[error("tensor `{tensor}`: replicas on ranks {a} and {b} differ in box {region:?}")]
    ReplicaMismatch {
        tensor: String,
        a: u32,
        b: u32,
        region: Box<Region>,
    },
    #[error("tensor `{tensor}`: no buffer for source rank {rank} buffer {buffer}")]
    MissingSource {
        tensor: String,
        rank: u32,
        buffer: u32,
    },
    #[error("{what} buffer holds {have} bytes but the copy needs {need}")]
    BufferTooSmall { what: String, need: u64, have: u64 },
    #[error("cannot convert {from} to {to}")]
    Unconvertible { from: DType, to: DType },
    #[error("tensor `{tensor}`: layouts disagree on the shape: {a:?} vs {b:?}")]
    ShapeMismatch {
        tensor: String,
        a: Vec<u64>,
        b: Vec<u64>,
    },
}
