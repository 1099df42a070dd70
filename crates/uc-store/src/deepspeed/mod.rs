//! DeepSpeed checkpoints: discovery of every rank's file, layouts from what the files say
//! (param shapes, partitions, `universal_checkpoint_info`), and full tensors merged by uc-merge.
//!
//! - `files`: every rank's file by name; `inputs`: the files opened, degrees, stage, metadata;
//!   `optim_file`: one optimizer file's stage-specific key paths; `collect`: every tensor's layout;
//!   `checkpoint`: [`DsCheckpoint`], the read API.
//! - `folding`: AutoEP expert files and AutoEP folded with AutoTP; `native_moe`: native DeepSpeed
//!   MoE (`deepspeed.moe.layer.MoE`), with ZeRO 1/2 or without ZeRO.

mod checkpoint;
mod collect;
mod files;
mod folding;
mod inputs;
mod native_moe;
mod optim_file;

pub use checkpoint::{Assume, DsCheckpoint, DsExtra, DsParam, ReadTrace};
pub use files::DsFiles;
pub(crate) use native_moe::ExpertName;
