//! unicheck checkpoint metadata: what every other crate speaks. Pure data and validation, no I/O.
//!
//! - [`DType`], [`Role`], [`TensorMeta`]: one tensor.
//! - [`Layout`], [`Split`], [`Placement`]: how a tensor is spread over ranks.
//! - [`Topology`]: the run's mesh axes, ZeRO stage and pipeline stages.
//! - [`DcpChunk`]: one stored chunk of a PyTorch DCP tensor (box, writer rank, byte range).
//! - [`Manifest`]: a whole topology-independent checkpoint (`uc.json`).
//! - [`deepspeed`]: DeepSpeed's `universal_checkpoint_info`, AutoTP and AutoEP metadata.
//! - [`validate`](validate_tensor): typed [`SchemaError`]s naming the tensor and the numbers.

mod chunk;
pub mod deepspeed;
mod dtype;
mod error;
mod layout;
mod manifest;
mod patterns;
mod tensor;
mod topology;
mod validate;
mod value;

pub use chunk::DcpChunk;
pub use dtype::DType;
pub use error::SchemaError;
pub use layout::{zero_padded, ExpertStorage, Layout, Placement, Split, SubParam};
pub use manifest::{Entry, FileSum, Manifest, StorageRef, MANIFEST_VERSION};
pub use patterns::PatternSet;
pub use tensor::{Role, TensorMeta};
pub use topology::{MeshAxis, Topology};
pub use validate::{
    local_shape, validate_layout, validate_manifest, validate_name, validate_split,
    validate_tensor, validate_topology,
};
pub use value::Value;
