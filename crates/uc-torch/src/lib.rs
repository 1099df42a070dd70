//! Bytes from disk → plain values, safely: PyTorch's pickles and `.pt` archives read without ever
//! executing anything, and `.pt` files written the way `torch.save` writes them. See the README for
//! the crate's promise.
//!
//! - [`pickle`]: a pickle interpreter (protocols 0–5) that builds a [`PyValue`] tree and accepts only
//!   globals on an [`Allowlist`]; depth, size and work are bounded.
//! - [`pt`]: a torch.save zip archive ([`PtFile`]): the value tree plus its tensors' bytes, mapped in place.
//! - [`pt_write`]: [`PtValue`] trees written as torch.save archives ([`write_pt`], [`write_pt_file`], [`write_pt_to`]).
//! - [`lazy`]: files whose bytes arrive on first use (stand-ins for objects in object storage).
//! - [`mapped`]: the input files this process maps, whose page tables it can drop in one call.
//! - [`free_space`]: room left on a file system (`statvfs`).
//! - [`dcp_metadata`]: DCP's `.metadata` pickle as typed data, and back.
//! - [`plain`]: a [`PyValue`] as JSON or as a [`uc_schema::Value`].
//! - [`error`]: [`TorchError`], naming the file, the tensor or the byte offset.

// Byte-range lists (`&[start..end]`) are what the lazy-file hooks take; one range is a list too.
#![allow(clippy::single_range_in_vec_init)]

pub mod dcp_metadata;
pub mod error;
mod free_space;
pub mod lazy;
pub mod mapped;
pub mod pickle;
pub mod plain;
pub mod pt;
pub mod pt_write;

pub use error::{Result, TorchError};
pub use free_space::free_space;
pub use pickle::{
    unpickle, Allowlist, Cursor, PyDict, PyGlobal, PyObject, PyValue, StorageRef, TensorRef,
};
pub use pt::PtFile;
pub use pt_write::{
    write_pt, write_pt_file, write_pt_to, FillFn, PtTensor, PtValue, TensorData, STORAGE_ALIGNMENT,
    WRITE_PIECE,
};
