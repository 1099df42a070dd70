//! DCP's `.metadata` pickle (what torch's `dcp.save` writes beside the `.distcp` files) as typed data,
//! and typed data written back as a `.metadata` pickle `dcp.load` accepts.
//!
//! - [`read`] / [`parse`]: a `.metadata` → [`Metadata`] (allowlisted globals only).
//! - [`to_pickle`]: a [`Metadata`] → `.metadata` bytes.

mod read;
mod write;

pub use read::{
    metadata_path, parse, read, Chunk, Item, Metadata, PathSeg, StorageInfo, StorageKey, TensorItem,
};
pub use write::{to_pickle, torch_dtype};
