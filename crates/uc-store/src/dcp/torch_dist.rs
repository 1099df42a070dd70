//! Megatron-Core `torch_dist` output, what `dist_checkpointing.load` reads at any TP size: per-layer
//! tensors `<prefix>layers.<i>.<rest>` stacked under `<prefix>layers.<rest>` with a leading layer
//! axis (one chunk per layer, as Megatron writes them), LayerNorms under TransformerEngine's fused
//! names, moments under `optimizer.state.<state>.<key>`, everything in global (TP 1) coordinates;
//! plus `metadata.json` and `common.pt` (iteration, scheduler, param groups, the shared Adam step).

use super::megatron::{split_layer, te_name, COMMON_PT, METADATA_JSON};
use super::writer::{write_plan, ChunkOut, DcpPlan, ReadFn};
use crate::error::{Result, StoreError};
use crate::training_state::{groups_without_params, scalar_f32};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use uc_schema::{Role, TensorMeta, Value};
use uc_torch::{write_pt_to, PtTensor, PtValue};

/// Options of [`write_torch_dist`].
#[derive(Debug, Clone, Default)]
pub struct TorchDistOptions {
    /// Number of `.distcp` files (written in parallel); default: the rayon pool's thread count.
    pub files: Option<usize>,
    /// Module extra-state bytes items (key, torch.save archive) carried over verbatim, e.g. from
    /// [`super::DcpCheckpoint::extra_states`] of a Megatron input.
    pub extra: Vec<(String, Vec<u8>)>,
}

/// `metadata.json` of a `torch_dist` checkpoint (as megatron-core 0.16 writes it).
const BACKEND: &str = r#"{"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch", "common_backend_version": 1}"#;

/// Where one output tensor goes: its key and, when stacked, its layer index.
struct Place {
    key: String,
    layer: Option<u64>,
}

/// The Megatron key of an output tensor (`None` for the step, which goes to `common.pt`).
fn place(meta: &TensorMeta, has_working_copy: bool) -> Option<Place> {
    let (base, layer) = match split_layer(&meta.name) {
        Some((prefix, i, rest)) => (format!("{prefix}{}", te_name(rest)), Some(i)),
        None => (meta.name.clone(), None),
    };
    let key = match &meta.role {
        Role::Step => return None,
        Role::Fp32Master if has_working_copy => format!("optimizer.state.fp32_param.{base}"),
        Role::Fp32Master | Role::Param | Role::Buffer => base,
        r => format!("optimizer.state.{}.{base}", r.key()),
    };
    Some(Place { key, layer })
}

/// Plans every tensor: stacked keys need every layer `0..L` of their prefix, with one dtype and shape.
fn plan_tensors(outs: &[TensorMeta], output: &Path) -> Result<DcpPlan> {
    let working: HashSet<&str> = outs
        .iter()
        .filter(|m| m.role == Role::Param)
        .map(|m| m.name.as_str())
        .collect();
    let mut layers_of: HashMap<String, u64> = HashMap::new();
    for m in outs {
        if let Some((prefix, i, _)) = split_layer(&m.name) {
            let n = layers_of.entry(prefix.to_string()).or_default();
            *n = (*n).max(i + 1);
        }
    }
    let mut plan = DcpPlan::default();
    let mut stacks: BTreeMap<String, Vec<(u64, &TensorMeta)>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for m in outs {
        let Some(p) = place(m, working.contains(m.name.as_str())) else {
            continue;
        };
        if !seen.insert((p.key.clone(), p.layer)) {
            return Err(StoreError::Format {
                path: output.to_path_buf(),
                why: format!("two tensors map to the torch_dist key `{}`", p.key),
            });
        }
        match p.layer {
            Some(i) => {
                if !stacks.contains_key(&p.key) {
                    order.push(p.key.clone());
                }
                stacks.entry(p.key).or_default().push((i, m));
            }
            None => {
                order.push(p.key.clone());
                plan.tensors.push((p.key.clone(), m.dtype, m.shape.clone()));
                plan.chunks.push(ChunkOut {
                    key: p.key,
                    meta: m.clone(),
                    offsets: vec![0; m.shape.len()],
                    shape: m.shape.clone(),
                });
            }
        }
    }
    for (key, mut members) in stacks {
        members.sort_by_key(|(i, _)| *i);
        let first = members[0].1;
        let prefix = split_layer(&first.name).map_or("", |(p, _, _)| p);
        let layers = layers_of.get(prefix).copied().unwrap_or(0);
        let indices: Vec<u64> = members.iter().map(|(i, _)| *i).collect();
        if indices != (0..layers).collect::<Vec<_>>() {
            let missing = (0..layers).find(|i| !indices.contains(i)).unwrap_or(0);
            return Err(StoreError::BadTensor {
                path: output.to_path_buf(),
                tensor: first.name.clone(),
                why: format!(
                    "cannot stack `{key}`: layer {missing} of {layers} has no such tensor \
                     (torch_dist stores every layer of a kind under one key)"
                ),
            });
        }
        for (_, m) in &members {
            if m.dtype != first.dtype || m.shape != first.shape {
                return Err(StoreError::BadTensor {
                    path: output.to_path_buf(),
                    tensor: m.name.clone(),
                    why: format!(
                        "cannot stack `{key}`: {} {:?} differs from layer 0's {} {:?}",
                        m.dtype, m.shape, first.dtype, first.shape
                    ),
                });
            }
        }
        let mut size = vec![layers];
        size.extend(&first.shape);
        plan.tensors.push((key.clone(), first.dtype, size));
        for (i, m) in members {
            let mut offsets = vec![0; m.shape.len() + 1];
            offsets[0] = i;
            let mut shape = vec![1];
            shape.extend(&m.shape);
            plan.chunks.push(ChunkOut {
                key: key.clone(),
                meta: m.clone(),
                offsets,
                shape,
            });
        }
    }
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    plan.tensors
        .sort_by_key(|(k, _, _)| rank.get(k.as_str()).copied());
    Ok(plan)
}

/// `common.pt`: the state's entries at the top level (Megatron's `iteration`, `checkpoint_version`,
/// scheduler, … ; the first two filled from the step when missing) and `optimizer` = the shared
/// Adam step as `state.common_step` plus `param_groups` without `params`.
fn common(state: &BTreeMap<String, Value>, step: Option<f32>) -> PtValue<'static> {
    let mut top: Vec<(String, PtValue<'static>)> = Vec::new();
    if !state.contains_key("checkpoint_version") {
        top.push(("checkpoint_version".into(), PtValue::Float(3.0)));
    }
    for (k, v) in state {
        if k != "param_groups" && k != "step" {
            top.push((k.clone(), PtValue::from_state(v, k)));
        }
    }
    if let (false, Some(s)) = (state.contains_key("iteration"), step) {
        top.push(("iteration".into(), PtValue::Int(s as i64)));
    }
    let groups = groups_without_params(state)
        .unwrap_or_default()
        .iter()
        .map(|g| PtValue::from_state(g, ""))
        .collect();
    let mut opt_state = Vec::new();
    if let Some(s) = step {
        opt_state.push((
            "common_step".to_string(),
            PtValue::Tensor(PtTensor::scalar_f32(s)),
        ));
    }
    let optimizer = vec![
        ("state".to_string(), PtValue::Dict(opt_state)),
        ("param_groups".to_string(), PtValue::List(groups)),
    ];
    top.push(("optimizer".into(), PtValue::Dict(optimizer)));
    PtValue::Dict(top)
}

/// Writes `outs` (bytes from `read`) and `state` as a Megatron `torch_dist` checkpoint at `output`,
/// which must not exist; on error nothing is left there. `progress(bytes)` follows each tensor.
pub fn write_torch_dist(
    output: &Path,
    outs: &[TensorMeta],
    read: ReadFn<'_>,
    state: &BTreeMap<String, Value>,
    opts: &TorchDistOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PathBuf> {
    let mut plan = plan_tensors(outs, output)?;
    let step = match outs.iter().find(|m| m.role == Role::Step) {
        Some(m) => Some(scalar_f32(output, m, &read(m)?.contiguous())?),
        None => state.get("step").and_then(|v| match v {
            Value::Float(f) => Some(*f as f32),
            Value::Int(i) => Some(*i as f32),
            _ => None,
        }),
    };
    plan.blobs = opts.extra.clone();
    plan.files = vec![
        (METADATA_JSON.to_string(), BACKEND.as_bytes().to_vec()),
        (COMMON_PT.to_string(), common_pt(state, step, output)?),
    ];
    write_plan(
        output,
        &plan,
        read,
        opts.files,
        b"unicheck torch_dist\n",
        progress,
    )
}

/// `common.pt` serialized: a torch.save archive with the `common/` prefix Megatron's file has.
fn common_pt(state: &BTreeMap<String, Value>, step: Option<f32>, output: &Path) -> Result<Vec<u8>> {
    Ok(write_pt_to(
        Vec::new(),
        "common",
        common(state, step),
        output,
    )?)
}
