//! DeepSpeed's universal checkpoint layout, from any source: `zero/<param>/<state>.pt`,
//! `zero/optimizer_state.pt` and the model-states file(s) that `load_universal` opens.
//!
//! From a DeepSpeed checkpoint the files are what `ds_to_universal` writes, key for key. From DCP,
//! Megatron `torch_dist` or native checkpoints (no DeepSpeed files to copy) the model states are
//! synthesized, so DeepSpeed resumes a PyTorch-native run; see [`Origin::Other`].

mod files;
mod moe;

pub use files::{write_universal_state, write_universal_step, UniversalDir, UniversalKind};

use crate::deepspeed::DsCheckpoint;
use crate::error::{Result, StoreError};
use crate::source::{input_unit, Source};
use crate::tensor_bytes::TensorBytes;
use crate::training_state::{groups_without_params, scalar_f32};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use uc_schema::{DType, Role, TensorMeta, Value};
use uc_torch::pickle::PyValue;
use uc_torch::{write_pt, PtTensor, PtValue};

/// The DeepSpeed release whose universal layout is written (its loaders check `ds_version`).
pub const DS_VERSION: &str = "0.19.8";

/// Model-states files a synthesized universal folder holds: the ZeRO-1/2 name and the ZeRO-3 name
/// (`load_universal` globs `zero_pp_rank_0_mp_rank_*` under ZeRO-3), both mp rank 0 of 1.
pub const MODEL_STATES: [&str; 2] = [
    "mp_rank_00_model_states.pt",
    "zero_pp_rank_0_mp_rank_00_model_states.pt",
];

/// Where the tensors come from, which decides how each universal file is tagged.
pub enum Origin<'a> {
    /// A DeepSpeed checkpoint: TP / expert tags as `ds_to_universal` writes them, its files copied.
    DeepSpeed(&'a DsCheckpoint),
    /// Any other source: tensors are in global (TP 1) coordinates, so every state is tagged
    /// `cat_dim 0` like a TP 1 DeepSpeed checkpoint; `masters` are the parameters whose fp32 master
    /// is written (their working copy is not). Untrained tensors go to the model states' `module`.
    Other {
        masters: HashSet<String>,
        groups: Vec<Value>,
    },
}

impl<'a> Origin<'a> {
    /// The origin of `src` (read from `input`), whose outputs are `outs`. A non-DeepSpeed source
    /// needs optimizer `param_groups`: DeepSpeed restores parameters group by group.
    pub fn of(src: &'a Source, outs: &[TensorMeta], input: &Path) -> Result<Origin<'a>> {
        Ok(match src {
            Source::DeepSpeed(c) if c.native_moe() && c.stage() == 0 => {
                return Err(StoreError::Format {
                    path: input.to_path_buf(),
                    why: "native DeepSpeed MoE saved without ZeRO into DeepSpeed's universal layout is \
                          refused: DeepSpeed 0.19.8's load_universal cannot resume it (such a run resumes \
                          from its expp_rank_* files only; scripts/interop/moe_resume.sh); convert to \
                          native, dcp or torch_dist instead"
                        .into(),
                })
            }
            Source::DeepSpeed(c) => Origin::DeepSpeed(c),
            _ => Origin::Other {
                masters: outs
                    .iter()
                    .filter(|m| m.role == Role::Fp32Master)
                    .map(|m| m.name.clone())
                    .collect(),
                groups: other_param_groups(src, input)?,
            },
        })
    }

    /// Writes one output tensor's `zero/<name>/<state>.pt` (nothing for tensors that have none).
    pub fn write_tensor(
        &self,
        zero: &Path,
        meta: &TensorMeta,
        data: &TensorBytes<'_>,
    ) -> Result<()> {
        match self {
            // Native MoE experts are stacked over the EP ranks in `write_common`.
            Origin::DeepSpeed(ck) if ck.native_moe() && moe::is_expert(meta) => Ok(()),
            Origin::DeepSpeed(ck) => write_from_deepspeed(ck, zero, meta, data),
            Origin::Other { masters, .. } => write_from_other(masters, zero, meta, data),
        }
    }

    /// Writes the model states and `zero/optimizer_state.pt` under `root`, after every tensor.
    pub fn write_common(&self, src: &Source, outs: &[TensorMeta], root: &Path) -> Result<()> {
        match self {
            Origin::DeepSpeed(ck) if ck.native_moe() => {
                moe::write_experts(ck, src, outs, &root.join("zero"))?;
                write_common_deepspeed(ck, root)
            }
            Origin::DeepSpeed(ck) => write_common_deepspeed(ck, root),
            Origin::Other { groups, .. } => {
                input_unit(|| write_common_other(src, outs, groups, root))
            }
        }
    }
}

fn bad(zero: &Path, meta: &TensorMeta, why: impl Into<String>) -> StoreError {
    StoreError::BadTensor {
        path: zero.to_path_buf(),
        tensor: meta.name.clone(),
        why: why.into(),
    }
}

/// `data` converted to float32 bytes.
fn to_f32(zero: &Path, meta: &TensorMeta, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; meta.numel() as usize * 4];
    uc_merge::convert::convert(data, meta.dtype, &mut out, DType::F32)
        .map_err(|e| bad(zero, meta, e.to_string()))?;
    Ok(out)
}

/// How DeepSpeed's converter would tag this parameter's universal files.
fn universal_kind(ck: &DsCheckpoint, zero: &Path, meta: &TensorMeta) -> Result<UniversalKind> {
    let name = meta.name.as_str();
    if let Some(l) = ck.autoep().iter().find(|l| l.owns(name)) {
        let n = i64::try_from(l.num_experts).map_err(|_| {
            bad(
                zero,
                meta,
                format!("{} experts do not fit an int64", l.num_experts),
            )
        })?;
        return Ok(UniversalKind::Expert { num_experts: n });
    }
    if ck.stage() == 3 {
        return Ok(UniversalKind::Bare);
    }
    Ok(match (ck.uci(), ck.degrees().0 > 1) {
        (Some(u), true) if u.is_vocabulary(name) => UniversalKind::Vocab,
        // rebuilt from its affine map: no category key, whatever its patterns say
        (Some(_), true) if ck.has_affine_map(name) => UniversalKind::ParamOnly,
        (Some(u), true) if u.is_row_parallel(name) => UniversalKind::CatDim(1),
        (Some(_), true) => UniversalKind::ParamOnly,
        _ => UniversalKind::CatDim(0),
    })
}

/// One tensor's `zero/<name>/<state>.pt` as DeepSpeed's `ds_to_universal` writes it.
fn write_from_deepspeed(
    ck: &DsCheckpoint,
    zero: &Path,
    meta: &TensorMeta,
    data: &TensorBytes<'_>,
) -> Result<()> {
    let trained = ck.param(&meta.name).is_some();
    if meta.role == Role::Step {
        if ck.stage() == 3 {
            return Ok(()); // DeepSpeed writes no step.pt for ZeRO-3
        }
        write_universal_step(
            zero,
            &meta.name,
            scalar_f32(zero, meta, &data.contiguous())?,
        )?;
        return Ok(());
    }
    if !trained {
        // DeepSpeed writes `fp32.pt` for module tensors the optimizer does not hold, as float32.
        let f32s = to_f32(zero, meta, &data.contiguous())?;
        let t = PtTensor::from_bytes(DType::F32, meta.shape.clone(), &f32s);
        write_universal_state(zero, &meta.name, "fp32", UniversalKind::ParamOnly, t)?;
        return Ok(());
    }
    let kind = universal_kind(ck, zero, meta)?;
    let shape = if kind == UniversalKind::Bare {
        vec![meta.numel()]
    } else {
        meta.shape.clone()
    };
    let state = match &meta.role {
        Role::Fp32Master => "fp32",
        r => r.key(),
    };
    let t = data
        .pt_tensor(meta.dtype, shape)
        .with_requires_grad(meta.role == Role::Fp32Master);
    write_universal_state(zero, &meta.name, state, kind, t)?;
    Ok(())
}

/// One tensor of a non-DeepSpeed source: the trained parameter as `fp32.pt` (float32, as DeepSpeed's
/// master weights are), each optimizer state as `<state>.pt`, the step as `step.pt`.
fn write_from_other(
    masters: &HashSet<String>,
    zero: &Path,
    meta: &TensorMeta,
    data: &TensorBytes<'_>,
) -> Result<()> {
    let kind = UniversalKind::CatDim(0);
    match &meta.role {
        Role::Buffer => Ok(()), // untrained: the model states' `module` holds it
        Role::Param if masters.contains(&meta.name) => Ok(()),
        Role::Step => {
            let v = scalar_f32(zero, meta, &data.contiguous())?;
            write_universal_step(zero, &meta.name, v)?;
            Ok(())
        }
        Role::Fp32Master | Role::Param => {
            let converted;
            let bytes = if meta.dtype == DType::F32 {
                data
            } else {
                converted = TensorBytes::Owned(to_f32(zero, meta, &data.contiguous())?);
                &converted
            };
            let t = bytes
                .pt_tensor(DType::F32, meta.shape.clone())
                .with_requires_grad(true);
            write_universal_state(zero, &meta.name, "fp32", kind, t)?;
            Ok(())
        }
        r => {
            let t = data.pt_tensor(meta.dtype, meta.shape.clone());
            write_universal_state(zero, &meta.name, r.key(), kind, t)?;
            Ok(())
        }
    }
}

/// Model states (byte copies) and `zero/optimizer_state.pt` (rank 0's plain optimizer state without
/// its partitions, plus `param_groups`), each file a unit of input reads.
fn write_common_deepspeed(ck: &DsCheckpoint, root: &Path) -> Result<()> {
    let mut models: Vec<&PathBuf> = ck.files().model.values().collect();
    models.extend(ck.files().zero3_model.values());
    for src in models {
        let name = src.file_name().ok_or_else(|| StoreError::Format {
            path: src.clone(),
            why: "no file name".into(),
        })?;
        crate::durable::copy_file(src, &root.join(name))?;
    }
    input_unit(|| write_optimizer_state(ck, root))
}

/// `zero/optimizer_state.pt` of a DeepSpeed input (reads rank 0's optimizer file and step scalars).
fn write_optimizer_state(ck: &DsCheckpoint, root: &Path) -> Result<()> {
    let Some(rank0) = ck.optimizer_state_rank0() else {
        return Ok(());
    };
    const SHARDED: &[&str] = &[
        "single_partition_of_fp32_groups",
        "fp32_flat_groups",
        "param_slice_mappings",
        "base_optimizer_state",
        "optimizer_state_dict",
    ];
    let mut entries: Vec<(String, PtValue)> = Vec::new();
    if let PyValue::Dict(d) = rank0 {
        for (k, v) in d {
            let Some(k) = k.as_str() else { continue };
            if SHARDED.contains(&k) {
                continue;
            }
            if let Some(v) = plain(v) {
                entries.push((k.to_string(), v));
            }
        }
    }
    let groups = ck.param_groups_rank0().and_then(plain);
    if ck.stage() == 3 {
        let n = match ck.param_groups_rank0() {
            Some(PyValue::List(g)) | Some(PyValue::Tuple(g)) => g.len(),
            _ => 0,
        };
        let mut steps = Vec::new();
        for g in 0..n {
            if let Some(step) = ck.group_step(g)? {
                steps.push((g, step));
            }
        }
        let inner = ck.param_groups_rank0().and_then(plain);
        entries.push(("optimizer_state_dict".into(), zero3_state(&steps, inner)));
    }
    if let Some(groups) = groups {
        entries.push(("param_groups".into(), groups));
    }
    Ok(write_pt(
        root.join("zero").join("optimizer_state.pt"),
        PtValue::Dict(entries),
    )?)
}

/// The nested optimizer state DeepSpeed's ZeRO-3 loader reads: the step of each group (it reads
/// group 0's) as a 0-d float32, and the hyper-parameters (it applies group 0's to every group).
fn zero3_state(steps: &[(usize, f32)], groups: Option<PtValue<'static>>) -> PtValue<'static> {
    let state = steps
        .iter()
        .map(|&(g, s)| {
            let t = PtValue::Tensor(PtTensor::scalar_f32(s));
            (g as i64, PtValue::Dict(vec![("step".into(), t)]))
        })
        .collect();
    let mut inner = vec![("state".to_string(), PtValue::IntDict(state))];
    if let Some(g) = groups {
        inner.push(("param_groups".into(), g));
    }
    PtValue::Dict(inner)
}

/// Plain data as a `.pt` value: plain objects (the loss scaler) keep their class and state; other
/// objects (reduced with arguments) are dropped, `ZeroStageEnum(n)` becomes `n`.
fn plain(v: &PyValue) -> Option<PtValue<'static>> {
    Some(match v {
        PyValue::None => PtValue::None,
        PyValue::Bool(b) => PtValue::Bool(*b),
        PyValue::Int(i) => PtValue::Int(*i),
        PyValue::Float(f) => PtValue::Float(*f),
        PyValue::Str(s) => PtValue::Str(s.clone()),
        PyValue::List(l) => PtValue::List(l.iter().filter_map(plain).collect()),
        PyValue::Tuple(l) => PtValue::Tuple(l.iter().filter_map(plain).collect()),
        PyValue::Dict(d) => PtValue::Dict(
            d.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), plain(v)?)))
                .collect(),
        ),
        PyValue::Global(g) => PtValue::Global {
            module: g.module.clone(),
            name: g.name.clone(),
        },
        // An allowlisted plain object (the loss scaler): class and `__dict__`, as DeepSpeed has it.
        PyValue::Object(o) if o.args.is_empty() => PtValue::Object {
            module: o.class.module.clone(),
            name: o.class.name.clone(),
            state: Box::new(plain(o.state.as_ref()?)?),
        },
        _ => return None,
    })
}

/// The source's optimizer groups without `params`; an error when it has none.
fn other_param_groups(src: &Source, input: &Path) -> Result<Vec<Value>> {
    groups_without_params(&src.state()).ok_or_else(|| StoreError::Format {
        path: input.to_path_buf(),
        why: "the checkpoint has no optimizer param_groups: DeepSpeed's load_universal restores \
              parameters group by group and would restore none"
            .into(),
    })
}

/// The training step of a non-DeepSpeed source: its first `step` tensor (Adam's step count).
fn other_step(src: &Source, outs: &[TensorMeta], root: &Path) -> Result<Option<f32>> {
    let Some(meta) = outs.iter().find(|m| m.role == Role::Step) else {
        return Ok(None);
    };
    let data = src.read(meta)?;
    scalar_f32(root, meta, &data).map(Some)
}

/// Synthesized model states and `zero/optimizer_state.pt` for a non-DeepSpeed source. The model
/// states carry what `load_universal` reads (steps, world sizes, version) and the untrained tensors
/// as `module` (DeepSpeed restores parameters from `zero/`, never from `module`).
fn write_common_other(
    src: &Source,
    outs: &[TensorMeta],
    groups: &[Value],
    root: &Path,
) -> Result<()> {
    let step = other_step(src, outs, root)?;
    let s = |k: &str| k.to_string();
    let ds_version = || PtValue::str(DS_VERSION);
    let group_list = || PtValue::List(groups.iter().map(|g| PtValue::from_state(g, "")).collect());
    let steps: Vec<(usize, f32)> = step.map_or(Vec::new(), |st| {
        (0..groups.len()).map(|g| (g, st)).collect()
    });
    let opt = vec![
        (s("dynamic_loss_scale"), PtValue::Bool(false)),
        (s("overflow"), PtValue::Bool(false)),
        (s("clip_grad"), PtValue::Float(0.0)),
        (s("ds_version"), ds_version()),
        (
            s("optimizer_state_dict"),
            zero3_state(&steps, Some(group_list())),
        ),
        (s("param_groups"), group_list()),
    ];
    write_pt(
        root.join("zero").join("optimizer_state.pt"),
        PtValue::Dict(opt),
    )?;

    let buffers: Vec<&TensorMeta> = outs.iter().filter(|m| m.role == Role::Buffer).collect();
    let steps_done = step.map_or(0, |v| v as i64);
    let world = i64::from(src.topology().world_size());
    let module = buffers
        .iter()
        .map(|m| {
            let meta = (*m).clone();
            let t = PtTensor::streamed(m.dtype, m.shape.clone(), move |w| {
                let data = src.read(&meta).map_err(std::io::Error::other)?;
                w.write_all(&data)
            });
            (m.name.clone(), PtValue::Tensor(t))
        })
        .collect();
    let names = buffers.iter().map(|m| PtValue::str(&m.name)).collect();
    let states = vec![
        (s("module"), PtValue::OrderedDict(module)),
        (s("buffer_names"), PtValue::List(names)),
        (s("optimizer"), PtValue::None),
        (s("lr_scheduler"), PtValue::None),
        (s("data_sampler"), PtValue::None),
        (s("random_ltd"), PtValue::None),
        (s("sparse_tensor_module_names"), PtValue::List(Vec::new())),
        (s("skipped_steps"), PtValue::Int(0)),
        (s("global_steps"), PtValue::Int(steps_done)),
        (s("dp_world_size"), PtValue::Int(world)),
        (s("mp_world_size"), PtValue::Int(1)),
        (s("ds_version"), ds_version()),
        (s("uc_source_format"), PtValue::str(src.format())),
    ];
    let [first, second] = MODEL_STATES.map(|n| root.join(n));
    write_pt(&first, PtValue::Dict(states))?;
    crate::durable::copy_file(&first, &second)?;
    Ok(())
}
