//! unicheck's checkpoint formats and conversion engine. Owns every checkpoint on disk; never prints.
//! Parsing untrusted bytes (pickles, torch zips, DCP `.metadata`) is [`uc_torch`]'s job.
//!
//! - [`atomic`]: atomic output directories (temp sibling, rename, `COMPLETE`) and safe name joins.
//! - [`convert`]: any checkpoint → native, DeepSpeed universal layout, both, DCP or `torch_dist`.
//! - [`dcp`]: PyTorch DCP checkpoints (torch `dcp.save`, Megatron `torch_dist`): chunks → merged tensors.
//! - [`deepspeed`]: DeepSpeed checkpoints: every rank's file, layouts, merged tensors.
//! - `durable`: write-back hints and one sync of an output tree before its marker (no fsync per file).
//! - [`error`]: [`StoreError`], naming the file and tensor.
//! - [`export`]: trained weights as Hugging Face safetensors.
//! - [`native`]: the native universal format (`uc.json` + safetensors + `COMPLETE`).
//! - `schedule`: units of work spread over the threads, largest first, each stealable on its own.
//! - [`staging`]: the shared staging folder of cooperating workers and resumed runs.
//! - [`source`]: any input checkpoint behind one interface (tensors out, merged bytes on demand).
//! - [`TensorBytes`]: a tensor's bytes as borrowed input runs or one merged buffer.
//! - [`universal`]: DeepSpeed's universal layout from any source (what `load_universal` opens).

// Byte-range lists (`&[start..end]`) are what the lazy-file hooks take; one range is a list too.
#![allow(clippy::single_range_in_vec_init)]

pub mod atomic;
pub mod convert;
pub mod dcp;
pub mod deepspeed;
mod durable;
pub mod error;
pub mod export;
pub mod native;
mod schedule;
pub mod source;
pub mod staging;
mod tensor_bytes;
mod training_state;
pub mod universal;
pub use error::{Result, StoreError};
pub use tensor_bytes::TensorBytes;
