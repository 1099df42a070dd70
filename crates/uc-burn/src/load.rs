//! Loading one target rank of any topology from a native checkpoint: plan, read only the byte ranges
//! the rank needs from the mmap, upload each local buffer to the device once.

use crate::error::{BurnError, Result};
use crate::shards::{full_pieces, local_lens, Shards};
use burn::tensor::backend::Backend;
use uc_merge::{execute_target, pieces, plan, ReplicaPolicy};
use uc_schema::{DType, TensorMeta};
use uc_store::native::NativeCheckpoint;

/// What a load read, for the ≤ 1.05 target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Bytes of the checkpoint files the plans read.
    pub bytes_read: u64,
    /// Bytes of the rank's local buffers.
    pub bytes_needed: u64,
}

impl LoadStats {
    /// `bytes_read / bytes_needed` (1 when nothing was needed).
    pub fn ratio(&self) -> f64 {
        match self.bytes_needed {
            0 => 1.0,
            n => self.bytes_read as f64 / n as f64,
        }
    }
}

/// Loads target rank `rank` of every tensor of `target` (metas laid out for the target topology)
/// from `ckpt`, building the local buffers on `device`.
pub fn load_rank<B: Backend>(
    ckpt: &NativeCheckpoint,
    target: &[TensorMeta],
    rank: u32,
    device: &B::Device,
) -> Result<(Shards<B>, LoadStats)> {
    let mut out = Shards::new();
    let mut stats = LoadStats::default();
    for m in target {
        let entry = ckpt
            .entry(&m.name, &m.role)
            .ok_or_else(|| BurnError::Missing {
                tensor: m.name.clone(),
                role: m.role.key().to_string(),
                why: format!("not in checkpoint {}", ckpt.dir().display()),
            })?;
        let src = &entry.meta;
        if src.shape != m.shape || src.dtype != DType::F32 {
            return Err(BurnError::Data {
                tensor: m.name.clone(),
                why: format!(
                    "checkpoint has {} {:?}, wanted F32 {:?}",
                    src.dtype, src.shape, m.shape
                ),
            });
        }
        let bytes = ckpt.tensor(&m.name, &m.role)?;
        let mine: Vec<_> = pieces(m)?.into_iter().filter(|p| p.rank == rank).collect();
        let p = plan(
            &m.name,
            &m.shape,
            &full_pieces(&m.shape),
            &mine,
            ReplicaPolicy::First,
        )?;
        stats.bytes_read += p
            .source_ranges()
            .values()
            .flatten()
            .map(|(a, b)| (b - a) * 4)
            .sum::<u64>();
        let get = |r: u32, b: u32| (r == 0 && b == 0).then_some(bytes);
        for (&(r, b), &len) in &local_lens(m)? {
            if r != rank {
                continue;
            }
            let mut buf = vec![0u8; len as usize * 4];
            execute_target(&p, r, b, &mut buf, DType::F32, DType::F32, &get)?;
            stats.bytes_needed += mine
                .iter()
                .filter(|x| x.buffer == b)
                .map(|x| x.global.numel() * 4)
                .sum::<u64>();
            out.insert(
                (m.name.clone(), m.role.clone(), b),
                crate::io::from_bytes_vec(&m.name, buf, device)?,
            );
        }
    }
    Ok((out, stats))
}
