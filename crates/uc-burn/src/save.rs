//! Saving: one folder per rank with its own shards (sharded), conversion to the native universal
//! checkpoint, or the universal checkpoint written directly from all (simulated) ranks.

use crate::error::{io_err, BurnError, Result};
use crate::shards::{full_pieces, gather, local_lens, Shards};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uc_merge::{execute_target, pieces, plan, ReplicaPolicy};
use uc_schema::{DType, Manifest, Role, TensorMeta, Topology, Value};
use uc_store::native::{NativeCheckpoint, NativeOptions, NativeWriter};

/// State key holding the global metas (JSON) in each rank folder.
const METAS_KEY: &str = "uc_burn.metas";
/// State key holding the rank of a rank folder.
const RANK_KEY: &str = "uc_burn.rank";
/// State key holding the world size of a sharded checkpoint.
const WORLD_KEY: &str = "uc_burn.world";

/// The folder of rank `rank` inside a sharded checkpoint.
pub fn rank_dir(dir: &Path, rank: u32) -> PathBuf {
    dir.join(format!("rank-{rank:05}"))
}

/// The key of local buffer `buffer` of `name` inside a rank folder.
fn local_name(name: &str, buffer: u32) -> String {
    match buffer {
        0 => name.to_string(),
        b => format!("{name}.buffer{b}"),
    }
}

/// Writes rank `rank`'s local buffers of every tensor of `metas` (global metas with layouts) into
/// `<dir>/rank-NNNNN/`, a native checkpoint of local tensors whose state carries the global metas.
pub fn save_rank<B: burn::tensor::backend::Backend>(
    dir: &Path,
    rank: u32,
    metas: &[TensorMeta],
    shards: &Shards<B>,
    topology: &Topology,
    state: &BTreeMap<String, Value>,
) -> Result<()> {
    let mut local = Vec::new();
    let mut data = Vec::new();
    for m in metas {
        for (&(r, b), &len) in &local_lens(m)? {
            if r != rank {
                continue;
            }
            let t = shards
                .get(&(m.name.clone(), m.role.clone(), b))
                .ok_or_else(|| BurnError::Missing {
                    tensor: m.name.clone(),
                    role: m.role.key().to_string(),
                    why: format!("rank {rank} has no buffer {b}"),
                })?;
            let bytes = crate::io::to_bytes(&m.name, t.clone())?;
            if bytes.len() as u64 != len * 4 {
                return Err(BurnError::Data {
                    tensor: m.name.clone(),
                    why: format!(
                        "rank {rank} buffer {b}: {} bytes, {} expected",
                        bytes.len(),
                        len * 4
                    ),
                });
            }
            local.push(TensorMeta::new(
                local_name(&m.name, b),
                DType::F32,
                vec![len],
                m.role.clone(),
            ));
            data.push(bytes);
        }
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let w = NativeWriter::create(rank_dir(dir, rank), &local, &NativeOptions::default())?;
    for (m, d) in local.iter().zip(&data) {
        w.write_tensor(&m.name, &m.role, d)?;
    }
    let mut st = state.clone();
    let json = serde_json::to_string(metas).map_err(|e| BurnError::Sharded {
        path: dir.to_path_buf(),
        why: format!("cannot encode metas: {e}"),
    })?;
    st.insert(METAS_KEY.into(), Value::Str(json));
    st.insert(RANK_KEY.into(), Value::Int(rank as i64));
    st.insert(WORLD_KEY.into(), Value::Int(topology.world_size() as i64));
    w.finish(topology.clone(), st)?;
    Ok(())
}

/// Converts a sharded checkpoint (`rank-*` folders) into the native universal checkpoint `out`,
/// one tensor at a time, reading each rank's shards by mmap.
pub fn convert_sharded(dir: &Path, out: &Path) -> Result<Manifest> {
    let bad = |why: String| BurnError::Sharded {
        path: dir.to_path_buf(),
        why,
    };
    let first = NativeCheckpoint::open(rank_dir(dir, 0))?;
    let st = &first.manifest().state;
    let metas: Vec<TensorMeta> = match st.get(METAS_KEY) {
        Some(Value::Str(s)) => {
            serde_json::from_str(s).map_err(|e| bad(format!("bad metas: {e}")))?
        }
        _ => return Err(bad("rank 0 does not carry the metas".into())),
    };
    let world = match st.get(WORLD_KEY) {
        Some(Value::Int(w)) if *w > 0 && *w <= u32::MAX as i64 => *w as u32,
        _ => return Err(bad("rank 0 does not carry the world size".into())),
    };
    let topology = first.manifest().source.clone();
    let mut ranks = vec![first];
    for r in 1..world {
        let c = NativeCheckpoint::open(rank_dir(dir, r))?;
        if c.manifest().state.get(RANK_KEY) != Some(&Value::Int(r as i64)) {
            return Err(bad(format!("folder of rank {r} says it is another rank")));
        }
        ranks.push(c);
    }
    let mut state = ranks[0].manifest().state.clone();
    state.retain(|k, _| !k.starts_with("uc_burn."));
    let w = NativeWriter::create(out, &metas, &NativeOptions::default())?;
    for m in &metas {
        let p = plan(
            &m.name,
            &m.shape,
            &pieces(m)?,
            &full_pieces(&m.shape),
            ReplicaPolicy::First,
        )?;
        let mut buf = vec![0u8; m.numel() as usize * 4];
        let get = |r: u32, b: u32| {
            ranks
                .get(r as usize)
                .and_then(|c| c.tensor(&local_name(&m.name, b), &m.role).ok())
        };
        execute_target(&p, 0, 0, &mut buf, DType::F32, DType::F32, &get)?;
        w.write_tensor(&m.name, &m.role, &buf)?;
    }
    Ok(w.finish(topology, state)?)
}

/// Writes the native universal checkpoint directly from every rank's shards: each tensor is
/// gathered on the device, read back once and written whole.
pub fn save_universal<B: burn::tensor::backend::Backend>(
    out: &Path,
    metas: &[TensorMeta],
    ranks: &[Shards<B>],
    topology: &Topology,
    state: &BTreeMap<String, Value>,
    device: &B::Device,
) -> Result<Manifest> {
    let w = NativeWriter::create(out, metas, &NativeOptions::default())?;
    for m in metas {
        let full = gather(m, ranks, device)?;
        w.write_tensor(&m.name, &m.role, &crate::io::to_bytes(&m.name, full)?)?;
    }
    Ok(w.finish(topology.clone(), state.clone())?)
}

/// The role of an optimizer state tensor by its key, for callers naming roles by string.
pub fn role(key: &str) -> Role {
    Role::from_key(key)
}
