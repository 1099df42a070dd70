//! unicheck geometry: every layout is a list of boxes; resharding is box intersection.
//! Pure: no I/O, no threads; builds for `wasm32-unknown-unknown`.
//!
//! - [`Region`]: N-d boxes, intersection, flat ranges ⇄ boxes.
//! - [`Piece`], [`pieces`]: a layout as boxes of the global tensor in ranks' local buffers.
//! - [`plan`]: copy ops from source pieces to target pieces, with costs.
//! - [`execute_target`], [`copy_strided`], [`convert`](convert::convert): run plans on bytes.
//! - [`reshard`]: one-call helpers for whole tensors.

pub mod convert;
mod error;
mod exec;
mod piece;
mod plan;
mod region;
mod reshard;

pub use error::MergeError;
pub use exec::{convert_strided, copy_strided, execute_op, execute_target, view_end, Strided};
pub use piece::{buffer_lens, layout_matches, layout_pieces, pieces, Piece};
pub use plan::{check_disjoint, plan, CopyOp, Loc, Plan, ReplicaPolicy, Run};
pub use region::{
    flat_index, flat_range_to_regions, region_to_flat_ranges, rowmajor_strides, unravel, Dims,
    Region,
};
pub use reshard::{gather, reshard, scatter, Buffers};
