//! Whole-tensor helpers: scatter a full tensor into a layout, gather it back, reshard between layouts.

use crate::{buffer_lens, execute_target, pieces, plan, MergeError, Piece, ReplicaPolicy};
use std::collections::BTreeMap;
use uc_schema::{Layout, TensorMeta};

/// Local buffers by `(rank, buffer)`, raw little-endian bytes.
pub type Buffers = BTreeMap<(u32, u32), Vec<u8>>;

fn full_pieces(shape: &[u64]) -> Vec<Piece> {
    let mut v = Vec::new();
    crate::layout_pieces(shape, &Layout::single(), &mut v);
    v
}

fn run(
    src: &[Piece],
    src_bufs: &Buffers,
    src_meta: &TensorMeta,
    dst: &[Piece],
    dst_meta: &TensorMeta,
    policy: ReplicaPolicy,
) -> Result<Buffers, MergeError> {
    let p = plan(&src_meta.name, &src_meta.shape, src, dst, policy)?;
    let mut out = Buffers::new();
    let get = |r: u32, b: u32| src_bufs.get(&(r, b)).map(Vec::as_slice);
    for ((rank, buffer), len) in buffer_lens(dst) {
        let mut buf = vec![0u8; len as usize * dst_meta.dtype.size()];
        execute_target(
            &p,
            rank,
            buffer,
            &mut buf,
            dst_meta.dtype,
            src_meta.dtype,
            &get,
        )?;
        out.insert((rank, buffer), buf);
    }
    Ok(out)
}

/// Cuts a full row-major tensor (logical shape, `meta.dtype`) into the local buffers of `meta.layout`.
/// Padding elements are left zero.
pub fn scatter(meta: &TensorMeta, full: &[u8]) -> Result<Buffers, MergeError> {
    let mut src = BTreeMap::new();
    src.insert((0, 0), full.to_vec());
    run(
        &full_pieces(&meta.shape),
        &src,
        meta,
        &pieces(meta)?,
        meta,
        ReplicaPolicy::First,
    )
}

/// Merges local buffers of `meta.layout` into the full row-major tensor.
pub fn gather(
    meta: &TensorMeta,
    bufs: &Buffers,
    policy: ReplicaPolicy,
) -> Result<Vec<u8>, MergeError> {
    let dst = full_pieces(&meta.shape);
    let mut out = run(&pieces(meta)?, bufs, meta, &dst, meta, policy)?;
    Ok(out.remove(&(0, 0)).unwrap_or_default())
}

/// Moves a tensor from `from`'s layout (buffers `bufs`) to `to`'s layout, converting dtypes.
pub fn reshard(
    from: &TensorMeta,
    bufs: &Buffers,
    to: &TensorMeta,
    policy: ReplicaPolicy,
) -> Result<Buffers, MergeError> {
    if from.shape != to.shape {
        return Err(MergeError::ShapeMismatch {
            tensor: from.name.clone(),
            a: from.shape.clone(),
            b: to.shape.clone(),
        });
    }
    run(&pieces(from)?, bufs, from, &pieces(to)?, to, policy)
}
