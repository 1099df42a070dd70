//! PyTorch Distributed Checkpoints (`.metadata` + `__<rank>_<n>.distcp`), as written by torch's
//! `dcp.save` (FSDP2, DTensor meshes) and by Megatron-Core's `torch_dist` backend.
//!
//! The `.metadata` pickle itself is read and written by [`uc_torch::dcp_metadata`].
//!
//! - [`chunks`]: chunks as uc-merge pieces; overlap / hole checks.
//! - [`layout`]: a tensor's chunk grid, inferred mesh / placements and layout, chunk writers.
//! - [`names`]: torch flat keys → model tensors, optimizer states, param groups.
//! - [`megatron`]: `metadata.json`, `common.pt`, stacked layer axes, key names.
//! - [`writer`]: any tensors → a DCP checkpoint torch's `dcp.load` reads ([`write_dcp`]).
//! - [`torch_dist`]: any tensors → a Megatron `torch_dist` checkpoint ([`write_torch_dist`]).
//! - [`DcpCheckpoint`]: an open checkpoint: outputs, merged reads, state.

mod checkpoint;
mod chunks;
pub mod layout;
mod megatron;
mod names;
mod torch_dist;
mod writer;

pub use checkpoint::{DcpCheckpoint, DcpOptions, Flavor};
pub use torch_dist::{write_torch_dist, TorchDistOptions};
pub use uc_torch::dcp_metadata::{Chunk, Item, Metadata, StorageInfo, TensorItem};
pub use writer::{write_dcp, DcpWriteOptions};
