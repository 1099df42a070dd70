//! unicheck for Burn: save a model and its Adam state shard by shard, resume in any topology.
//!
//! - [`spec`]: parameter-name patterns → layouts ([`LayoutRules`], [`ParamLayout`]) → uc-schema metas.
//! - [`shards`]: each rank's local buffers on the device; [`shards::reshard`], [`shards::scatter`],
//!   [`shards::gather`] and ZeRO flattening ([`shards::flatten_zero`]) run as device plans ([`device`]).
//! - [`save`]: per-rank sharded folders, conversion to the native universal checkpoint, or a direct write.
//! - [`load`]: one target rank of any topology, reading only the bytes it needs ([`load::load_rank`]).
//! - [`module`]: Burn modules ⇄ named flat tensors; [`adam`]: element-wise Adam with savable state;
//!   [`burn_adam`]: Burn's own Adam optimizer state ⇄ named tensors.
//! - [`demo`]: a tensor-parallel transformer LM trained, saved at TP=2 and resumed at TP=1 and TP=4.

pub mod adam;
pub mod burn_adam;
pub mod demo;
pub mod device;
mod error;
pub mod io;
pub mod load;
pub mod module;
pub mod save;
pub mod shards;
pub mod spec;

pub use error::{BurnError, Result};
pub use load::{load_rank, LoadStats};
pub use save::{convert_sharded, save_rank, save_universal};
pub use shards::{BufKey, Shards};
pub use spec::{LayoutRules, ParamLayout};

/// The CPU backend used in tests and the demo.
pub type Cpu = burn::backend::NdArray<f32>;
/// [`Cpu`] with autodiff.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;
/// The CUDA backend (feature `cuda`; CUDA is loaded at run time).
#[cfg(feature = "cuda")]
pub type Cuda = burn_cuda::Cuda<f32, i32>;
