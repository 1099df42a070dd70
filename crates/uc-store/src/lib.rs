//! unicheck on-disk formats. Owns every byte on disk; never prints.
//!
//! - [`atomic`]: atomic output directories (temp sibling, rename, `COMPLETE`) and safe name joins.
//! - [`convert`]: any checkpoint → native, DeepSpeed universal layout, both, or DCP; streamed and atomic.
//! - [`dcp`]: PyTorch DCP checkpoints (torch `dcp.save`, Megatron `torch_dist`): chunks → merged tensors.
//! - [`deepspeed`]: DeepSpeed checkpoints: every rank's file, layouts, merged tensors.
//! - [`error`]: [`StoreError`], naming the file and tensor.
//! - [`pickle`]: a pickle interpreter that never executes code (allowlisted globals only).
//! - [`pt`]: PyTorch `.pt` files (zip + pickle) read lazily by mmap.
//! - [`pt_write`]: `.pt` writer (DeepSpeed universal layout files `torch.load` opens).
//! - [`source`]: any input checkpoint behind one interface (tensors out, merged bytes on demand).
//! - [`native`]: the native universal format (`uc.json` + safetensors + `COMPLETE`).
//! - [`universal`]: DeepSpeed's universal layout from any source (what `load_universal` opens).

pub mod atomic;
pub mod convert;
pub mod dcp;
pub mod deepspeed;
pub mod error;
pub mod export;
pub mod native;
pub mod pickle;
pub mod pt;
pub mod pt_write;
pub mod source;
pub mod universal;
pub use error::{Result, StoreError};
