//! A tensor item's chunks as uc-merge pieces, and the check that they tile the tensor exactly.

use crate::error::{Result, StoreError};
use std::path::Path;
use uc_merge::{check_disjoint, plan, rowmajor_strides, Piece, Region, ReplicaPolicy};
use uc_torch::dcp_metadata::TensorItem;

/// One piece per non-empty chunk: chunk `i` is "rank" `i`, its archive's tensor the local buffer.
pub fn pieces(item: &TensorItem) -> Vec<Piece> {
    item.chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.is_empty())
        .map(|(i, c)| Piece {
            rank: i as u32,
            buffer: 0,
            global: Region::new(c.offsets.as_slice(), c.sizes.as_slice()),
            offset: 0,
            strides: rowmajor_strides(&c.sizes),
        })
        .collect()
}

/// A piece covering `region` of a dense row-major buffer holding exactly that region.
pub fn target(region: &Region) -> Piece {
    Piece {
        rank: 0,
        buffer: 0,
        global: region.clone(),
        offset: 0,
        strides: rowmajor_strides(&region.len),
    }
}

/// Checks that the chunks of `key` lie inside the tensor, do not overlap and leave no hole.
/// `md` (the `.metadata` file) is named in errors.
pub fn check_tiling(md: &Path, key: &str, item: &TensorItem) -> Result<()> {
    let bad = |why: String| StoreError::BadTensor {
        path: md.to_path_buf(),
        tensor: key.to_string(),
        why,
    };
    if item.chunks.len() > u32::MAX as usize {
        return Err(bad(format!("{} chunks is too many", item.chunks.len())));
    }
    let total = item
        .size
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", item.size)))?;
    let mut sum = 0u64;
    for c in item.chunks.iter().filter(|c| !c.is_empty()) {
        let inside = c
            .offsets
            .iter()
            .zip(&c.sizes)
            .zip(&item.size)
            .all(|((o, s), n)| o.checked_add(*s).is_some_and(|e| e <= *n));
        if !inside {
            return Err(bad(format!(
                "chunk at offsets {:?} sizes {:?} lies outside the shape {:?}",
                c.offsets, c.sizes, item.size
            )));
        }
        // Inside the shape, so its numel is at most `total` and cannot overflow.
        sum = sum.saturating_add(c.numel().unwrap_or(u64::MAX));
    }
    let merge = |e| StoreError::Merge {
        path: md.to_path_buf(),
        tensor: key.to_string(),
        source: Box::new(e),
    };
    let src = pieces(item);
    check_disjoint(key, &src).map_err(merge)?;
    if sum != total {
        // Disjoint boxes inside the shape that add up to less: the plan names the hole.
        let full = target(&Region::full(&item.size));
        plan(key, &item.size, &src, &[full], ReplicaPolicy::First).map_err(merge)?;
        return Err(bad(format!("chunks hold {sum} of the {total} elements")));
    }
    Ok(())
}
