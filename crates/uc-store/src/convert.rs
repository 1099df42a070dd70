//! `convert`: a checkpoint (DeepSpeed, DCP, Megatron `torch_dist` or native) → a universal one (native,
//! DeepSpeed's universal layout, or both in one folder) or a PyTorch DCP checkpoint, streaming tensor by
//! tensor over a rayon pool, written atomically.

use crate::dcp::{write_dcp, DcpWriteOptions};
use crate::deepspeed::DsCheckpoint;
use crate::error::{io_err, Result, StoreError};
use crate::native::{NativeOptions, NativeWriter};
use crate::pickle::PyValue;
use crate::pt_write::{
    write_pt, write_universal_state, PtTensor, PtValue, UniversalDir, UniversalKind,
};
use crate::source::{thread_pool, OpenOptions, Source};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use uc_schema::{DType, Role, TensorMeta};

/// Which universal layout(s) to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `uc.json` + safetensors + `COMPLETE`.
    #[default]
    Native,
    /// DeepSpeed's `zero/<param>/<state>.pt` + model states, loadable with `load_universal`.
    DeepSpeed,
    /// Both in one folder.
    Both,
    /// A PyTorch Distributed Checkpoint (`.metadata` + `__<r>_0.distcp`) for `dcp.load`.
    Dcp,
}

/// Options of [`convert`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    pub format: Format,
    /// How to read the input (tag, TP metadata).
    pub input: OpenOptions,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    pub native: NativeOptions,
    /// `.distcp` files of a DCP output (default: one per thread).
    pub dcp_files: Option<usize>,
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub output: PathBuf,
    pub tensors: usize,
    /// Bytes of tensor data produced (logical tensors, once per tensor).
    pub bytes: u64,
}

/// Progress: tensors done, tensors in all, bytes done.
pub type Progress<'a> = &'a (dyn Fn(usize, usize, u64) + Sync);

/// Converts the checkpoint at `input` (any format [`Source`] reads) into `output`, which must not
/// exist. On any error nothing is left at `output`.
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: Progress,
) -> Result<ConvertReport> {
    let src = Source::open(input, &opts.input)?;
    let ds = match &src {
        Source::DeepSpeed(c) => Some(&**c),
        _ => None,
    };
    let pool = thread_pool(opts.threads, output)?;
    if opts.format == Format::Dcp {
        return pool.install(|| convert_to_dcp(&src, output, opts, progress));
    }
    if ds.is_none() && opts.format != Format::Native {
        return Err(StoreError::Format {
            path: input.to_path_buf(),
            why: format!(
                "writing DeepSpeed's universal layout from a {} checkpoint is not supported yet",
                src.format()
            ),
        });
    }
    let outs = src.outputs();
    let native = match opts.format {
        Format::Native | Format::Both => Some(NativeWriter::create(output, &outs, &opts.native)?),
        Format::DeepSpeed | Format::Dcp => None,
    };
    let udir = match opts.format {
        Format::DeepSpeed => Some(UniversalDir::create(output)?),
        _ => None,
    };
    let ds_root: Option<PathBuf> = match (&native, &udir, opts.format) {
        (_, Some(u), _) => Some(u.root().to_path_buf()),
        (Some(n), _, Format::Both) => Some(n.dir().to_path_buf()),
        _ => None,
    };
    if let Some(root) = &ds_root {
        std::fs::create_dir_all(root.join("zero")).map_err(io_err(root.join("zero")))?;
    }
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let total = outs.len();
    pool.install(|| {
        outs.par_iter().try_for_each(|meta| -> Result<()> {
            let data = src.read(meta)?;
            if let Some(w) = &native {
                w.write_tensor(&meta.name, &meta.role, &data)?;
            }
            if let (Some(root), Some(ck)) = (&ds_root, ds) {
                write_deepspeed(ck, &root.join("zero"), meta, &data)?;
            }
            let b = bytes.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(n as usize, total, b);
            Ok(())
        })
    })?;
    if let (Some(root), Some(ck)) = (&ds_root, ds) {
        write_deepspeed_common(ck, root)?;
    }
    let out = match (native, udir) {
        (Some(w), _) => {
            w.finish(src.topology(), src.state())?;
            output.to_path_buf()
        }
        (None, Some(u)) => u.commit()?,
        (None, None) => output.to_path_buf(),
    };
    Ok(ConvertReport {
        output: out,
        tensors: total,
        bytes: bytes.into_inner(),
    })
}

/// Writes `src` as a DCP checkpoint (param groups get `params` from DeepSpeed's groups when missing).
fn convert_to_dcp(
    src: &Source,
    output: &Path,
    opts: &ConvertOptions,
    progress: Progress,
) -> Result<ConvertReport> {
    let outs = src.outputs();
    let groups = match src {
        Source::DeepSpeed(c) => {
            let mut g: Vec<Vec<String>> = Vec::new();
            for p in &c.params {
                if g.len() <= p.group {
                    g.resize(p.group + 1, Vec::new());
                }
                g[p.group].push(p.name.clone());
            }
            Some(g)
        }
        _ => None,
    };
    let wopts = DcpWriteOptions {
        files: opts.dcp_files,
        groups,
    };
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let total = outs.len();
    let out = write_dcp(
        output,
        &outs,
        &|m| src.read(m),
        &src.state(),
        &wopts,
        &|b| {
            let b = bytes.fetch_add(b, Ordering::Relaxed) + b;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(n as usize, total, b);
        },
    )?;
    Ok(ConvertReport {
        output: out,
        tensors: total,
        bytes: bytes.into_inner(),
    })
}

/// How DeepSpeed's converter would tag this parameter's universal files.
fn universal_kind(ck: &DsCheckpoint, name: &str) -> UniversalKind {
    if let Some(l) = ck.autoep.iter().find(|l| l.owns(name)) {
        return UniversalKind::Expert {
            num_experts: l.num_experts as i64,
        };
    }
    if ck.stage == 3 {
        return UniversalKind::Bare;
    }
    match (&ck.uci, ck.tp > 1) {
        (Some(u), true) if u.is_vocabulary(name) => UniversalKind::Vocab,
        (Some(u), true) if u.is_row_parallel(name) => UniversalKind::CatDim(1),
        (Some(_), true) => UniversalKind::ParamOnly,
        _ => UniversalKind::CatDim(0),
    }
}

/// Writes one tensor's `zero/<name>/<state>.pt` as DeepSpeed's `ds_to_universal` does.
fn write_deepspeed(ck: &DsCheckpoint, zero: &Path, meta: &TensorMeta, data: &[u8]) -> Result<()> {
    let trained = ck.param(&meta.name).is_some();
    if meta.role == Role::Step {
        if ck.stage == 3 {
            return Ok(()); // DeepSpeed writes no step.pt for ZeRO-3
        }
        let v = f32::from_le_bytes(data.try_into().map_err(|_| StoreError::BadTensor {
            path: zero.to_path_buf(),
            tensor: meta.name.clone(),
            why: "step is not one float32".into(),
        })?);
        write_universal_state(
            zero,
            &meta.name,
            "step",
            UniversalKind::Bare,
            PtTensor::scalar_f32(v),
        )?;
        return Ok(());
    }
    if !trained {
        // DeepSpeed writes `fp32.pt` for module tensors the optimizer does not hold, as float32.
        let mut f32s = vec![0u8; meta.numel() as usize * 4];
        uc_merge::convert::convert(data, meta.dtype, &mut f32s, DType::F32).map_err(|e| {
            StoreError::BadTensor {
                path: zero.to_path_buf(),
                tensor: meta.name.clone(),
                why: e.to_string(),
            }
        })?;
        let t = PtTensor::from_bytes(DType::F32, meta.shape.clone(), &f32s);
        write_universal_state(zero, &meta.name, "fp32", UniversalKind::ParamOnly, t)?;
        return Ok(());
    }
    let kind = universal_kind(ck, &meta.name);
    let shape = if kind == UniversalKind::Bare {
        vec![meta.numel()]
    } else {
        meta.shape.clone()
    };
    let state = match &meta.role {
        Role::Fp32Master => "fp32",
        r => r.key(),
    };
    let t = PtTensor::from_bytes(meta.dtype, shape, data)
        .with_requires_grad(meta.role == Role::Fp32Master);
    write_universal_state(zero, &meta.name, state, kind, t)?;
    Ok(())
}

/// Model states (byte copies) and `zero/optimizer_state.pt` (rank 0's plain optimizer state without
/// its partitions, plus `param_groups`).
fn write_deepspeed_common(ck: &DsCheckpoint, root: &Path) -> Result<()> {
    let mut models: Vec<&PathBuf> = ck.files.model.values().collect();
    models.extend(ck.files.zero3_model.values());
    for src in models {
        let name = src.file_name().ok_or_else(|| StoreError::Format {
            path: src.clone(),
            why: "no file name".into(),
        })?;
        let dst = root.join(name);
        std::fs::copy(src, &dst).map_err(io_err(&dst))?;
    }
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
    if ck.stage == 3 {
        // DeepSpeed's ZeRO-3 loader reads the step of group 0 and the hyper-parameters from the
        // nested `optimizer_state_dict`: one 0-d float32 `step` per param group.
        let n = match ck.param_groups_rank0() {
            Some(PyValue::List(g)) | Some(PyValue::Tuple(g)) => g.len(),
            _ => 0,
        };
        let mut state = Vec::new();
        for g in 0..n {
            if let Some(step) = ck.group_step(g)? {
                let t = PtValue::Tensor(PtTensor::scalar_f32(step));
                state.push((g as i64, PtValue::Dict(vec![("step".into(), t)])));
            }
        }
        let mut inner = vec![("state".to_string(), PtValue::IntDict(state))];
        if let Some(g) = ck.param_groups_rank0().and_then(plain) {
            inner.push(("param_groups".into(), g));
        }
        entries.push(("optimizer_state_dict".into(), PtValue::Dict(inner)));
    }
    if let Some(groups) = groups {
        entries.push(("param_groups".into(), groups));
    }
    write_pt(
        root.join("zero").join("optimizer_state.pt"),
        PtValue::Dict(entries),
    )
}

/// Plain data as a `.pt` value; objects (loss scaler, …) are dropped, `ZeroStageEnum(n)` becomes `n`.
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
        _ => return None,
    })
}
