//! Sharded state on the device: each rank's local buffers, moved between layouts by device plans.

use crate::device;
use crate::error::{BurnError, Result};
use burn::tensor::{backend::Backend, Tensor};
use std::collections::BTreeMap;
use uc_merge::{buffer_lens, layout_pieces, pieces, plan, Piece, ReplicaPolicy};
use uc_schema::{Layout, Role, TensorMeta};

/// Which local buffer: tensor name, role and buffer index (0 except per-expert storage).
pub type BufKey = (String, Role, u32);

/// One rank's local buffers, flat, on the device.
pub type Shards<B> = BTreeMap<BufKey, Tensor<B, 1>>;

/// The pieces of one whole (unsharded) tensor on rank 0.
pub(crate) fn full_pieces(shape: &[u64]) -> Vec<Piece> {
    let mut v = Vec::new();
    layout_pieces(shape, &Layout::single(), &mut v);
    v
}

/// Lengths of `meta`'s local buffers `(rank, buffer) → elements` (ZeRO partitions at full size).
pub fn local_lens(meta: &TensorMeta) -> Result<BTreeMap<(u32, u32), u64>> {
    let mut lens = buffer_lens(&pieces(meta)?);
    if let Layout::ZeroFlat {
        dp,
        group_numel,
        alignment,
        ..
    } = meta.layout
    {
        let part = uc_schema::zero_padded(group_numel, alignment) / dp.max(1) as u64;
        for v in lens.values_mut() {
            *v = part;
        }
    }
    Ok(lens)
}

/// Moves tensor buffers from `src` pieces to `dst` pieces on the device: `(rank, buffer) → tensor`.
pub fn move_pieces<B: Backend>(
    meta: &TensorMeta,
    src: &[Piece],
    dst: &[Piece],
    dst_lens: &BTreeMap<(u32, u32), u64>,
    policy: ReplicaPolicy,
    device: &B::Device,
    get: &dyn Fn(u32, u32) -> Option<Tensor<B, 1>>,
) -> Result<BTreeMap<(u32, u32), Tensor<B, 1>>> {
    let p = plan(&meta.name, &meta.shape, src, dst, policy)?;
    let mut out = BTreeMap::new();
    for (&(rank, buffer), &len) in dst_lens {
        let t = device::execute_target(&p, rank, buffer, len as usize, device, get)?;
        out.insert((rank, buffer), t);
    }
    Ok(out)
}

/// Cuts a whole flat device tensor into the local buffers of `meta.layout`, on the device.
pub fn scatter<B: Backend>(
    meta: &TensorMeta,
    full: Tensor<B, 1>,
) -> Result<BTreeMap<(u32, u32), Tensor<B, 1>>> {
    let device = full.device();
    let get = move |r: u32, b: u32| (r == 0 && b == 0).then(|| full.clone());
    move_pieces(
        meta,
        &full_pieces(&meta.shape),
        &pieces(meta)?,
        &local_lens(meta)?,
        ReplicaPolicy::First,
        &device,
        &get,
    )
}

/// Cuts `full` into `meta`'s local buffers and files each under its rank's shards (`ranks` grows
/// to the ranks the layout spans), on the device.
pub fn scatter_into<B: Backend>(
    ranks: &mut Vec<Shards<B>>,
    meta: &TensorMeta,
    full: Tensor<B, 1>,
) -> Result<()> {
    for ((r, b), t) in scatter(meta, full)? {
        if ranks.len() <= r as usize {
            ranks.resize_with(r as usize + 1, Shards::new);
        }
        ranks[r as usize].insert((meta.name.clone(), meta.role.clone(), b), t);
    }
    Ok(())
}

/// Merges every rank's local buffer of `meta` into the whole flat tensor, on the device.
pub fn gather<B: Backend>(
    meta: &TensorMeta,
    ranks: &[Shards<B>],
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    let get = |r: u32, b: u32| {
        ranks
            .get(r as usize)
            .and_then(|s| s.get(&(meta.name.clone(), meta.role.clone(), b)))
            .cloned()
    };
    let mut lens = BTreeMap::new();
    lens.insert((0, 0), meta.numel());
    let mut out = move_pieces(
        meta,
        &pieces(meta)?,
        &full_pieces(&meta.shape),
        &lens,
        ReplicaPolicy::First,
        device,
        &get,
    )?;
    out.remove(&(0, 0)).ok_or_else(|| BurnError::Data {
        tensor: meta.name.clone(),
        why: "gather produced nothing".into(),
    })
}

/// Reshards every tensor from the `from` metas' layouts to the `to` metas' layouts (matched by
/// name and role), entirely on the device: `to_ranks` shard sets come back.
pub fn reshard<B: Backend>(
    from: &[TensorMeta],
    ranks: &[Shards<B>],
    to: &[TensorMeta],
    device: &B::Device,
) -> Result<Vec<Shards<B>>> {
    let by_key: BTreeMap<(&str, &Role), &TensorMeta> = from
        .iter()
        .map(|m| ((m.name.as_str(), &m.role), m))
        .collect();
    let world = to.iter().map(|m| m.layout.ranks()).max().unwrap_or(1) as usize;
    let mut out: Vec<Shards<B>> = (0..world).map(|_| Shards::new()).collect();
    for t in to {
        let f = by_key
            .get(&(t.name.as_str(), &t.role))
            .ok_or_else(|| BurnError::Missing {
                tensor: t.name.clone(),
                role: t.role.key().to_string(),
                why: "not in the source state".into(),
            })?;
        if f.shape != t.shape {
            return Err(BurnError::Data {
                tensor: t.name.clone(),
                why: format!("shape {:?} cannot become {:?}", f.shape, t.shape),
            });
        }
        let get = |r: u32, b: u32| {
            ranks
                .get(r as usize)
                .and_then(|s| s.get(&(f.name.clone(), f.role.clone(), b)))
                .cloned()
        };
        let moved = move_pieces(
            t,
            &pieces(f)?,
            &pieces(t)?,
            &local_lens(t)?,
            ReplicaPolicy::First,
            device,
            &get,
        )?;
        for ((r, b), x) in moved {
            if let Some(s) = out.get_mut(r as usize) {
                s.insert((t.name.clone(), t.role.clone(), b), x);
            }
        }
    }
    Ok(out)
}

/// Where a ZeRO flat buffer is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlattenAt {
    /// On the device, with `cat` and `slice` (the fast path).
    #[default]
    Device,
    /// On the device while the group fits in this many bytes of free device memory, else on the host.
    DeviceUnless { free_bytes: u64 },
    /// On the host: each tensor read back once, partitions uploaded.
    Host,
}

/// A ZeRO-1/2 flat group: the metas (layout [`Layout::ZeroFlat`]) and each dp rank's partition.
pub struct FlatGroup<B: Backend> {
    pub metas: Vec<TensorMeta>,
    pub partitions: Vec<Tensor<B, 1>>,
    /// True when the host fallback was taken.
    pub on_host: bool,
}

/// Flattens whole tensors (`metas` with their flat data) into one group padded to `alignment` and
/// split evenly over `dp` ranks, on the device unless `at` says otherwise.
pub fn flatten_zero<B: Backend>(
    metas: &[TensorMeta],
    tensors: &[Tensor<B, 1>],
    dp: u32,
    alignment: u64,
    at: FlattenAt,
    device: &B::Device,
) -> Result<FlatGroup<B>> {
    if metas.len() != tensors.len() || dp == 0 {
        return Err(BurnError::Data {
            tensor: metas.first().map_or_else(String::new, |m| m.name.clone()),
            why: format!("{} metas, {} tensors, dp {dp}", metas.len(), tensors.len()),
        });
    }
    let align = alignment.max(1) * dp as u64;
    let group_numel: u64 = metas.iter().map(TensorMeta::numel).sum();
    let padded = uc_schema::zero_padded(group_numel, align);
    let mut offset = 0;
    let mut out = Vec::with_capacity(metas.len());
    for (m, t) in metas.iter().zip(tensors) {
        if t.dims()[0] as u64 != m.numel() {
            return Err(BurnError::Data {
                tensor: m.name.clone(),
                why: format!("{} elements given, {} expected", t.dims()[0], m.numel()),
            });
        }
        out.push(m.clone().with_layout(Layout::ZeroFlat {
            dp,
            offset,
            group_numel,
            alignment: align,
        }));
        offset += m.numel();
    }
    let part = (padded / dp as u64) as usize;
    let bytes = padded * 4;
    let host = match at {
        FlattenAt::Device => false,
        FlattenAt::Host => true,
        FlattenAt::DeviceUnless { free_bytes } => bytes.saturating_mul(2) > free_bytes,
    };
    let partitions = if host {
        let mut flat: Vec<f32> = Vec::with_capacity(padded as usize);
        for (m, t) in metas.iter().zip(tensors) {
            flat.extend(crate::io::to_f32(&m.name, t.clone())?);
        }
        flat.resize(padded as usize, 0.0);
        flat.chunks(part.max(1))
            .take(dp as usize)
            .map(|c| crate::io::from_f32::<B>(c.to_vec(), device))
            .collect()
    } else {
        let mut all: Vec<Tensor<B, 1>> = tensors.to_vec();
        if padded > group_numel {
            all.push(Tensor::zeros([(padded - group_numel) as usize], device));
        }
        let flat = Tensor::cat(all, 0);
        (0..dp as usize)
            .map(|r| flat.clone().slice(r * part..(r + 1) * part))
            .collect()
    };
    Ok(FlatGroup {
        metas: out,
        partitions,
        on_host: host,
    })
}
