//! DeepSpeed checkpoints: discovery of every rank's file, layouts from what the files say
//! (param shapes, partitions, `universal_checkpoint_info`), and full tensors merged by uc-merge.

mod checkpoint;
mod collect;
mod files;
mod folding;
mod inputs;
mod native_moe;
mod optim_file;

pub use checkpoint::{Assume, DsCheckpoint, DsExtra, DsParam, ReadTrace};
pub use files::DsFiles;
