//! A DeepSpeed checkpoint read as plain data: every parameter's layout over (model-parallel rank,
//! data-parallel rank), built from what the files say, and full tensors merged through uc-merge.
//!
//! Model-parallel rank `m` is DeepSpeed's `mp_rank_<m>`: `stage * tp + tp_rank`. A parameter held by
//! several `m` (tensor parallel, tied pipeline weights) gets an outer layout over those holders
//! (TP rule or replicated); ZeRO partitions each holder's local tensor over the dp ranks inside it.
//!
//! `open` reads the files (`inputs`), derives every layout (`collect`), then builds the struct once;
//! the methods here only read.

use super::collect::Frags;
use super::files::DsFiles;
use super::inputs::{fmt_err, Inputs};
use crate::error::{Result, StoreError};
use crate::tensor_bytes::TensorBytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use uc_merge::{execute_target, pieces, plan, ReplicaPolicy};
use uc_schema::deepspeed::{AutoEpLayer, UniversalCheckpointInfo};
use uc_schema::{DType, Layout, Role, TensorMeta, Topology, Value};
use uc_torch::pickle::{Cursor, PyValue, TensorRef};
use uc_torch::PtFile;

/// Told each byte range of tensor data a read touches: (file, absolute byte range).
pub type ReadTrace<'a> = &'a mut dyn FnMut(&Path, std::ops::Range<u64>);

/// A trainable parameter found in the optimizer files.
#[derive(Debug, Clone)]
pub struct DsParam {
    pub name: String,
    /// Optimizer param group index (same on every holder).
    pub group: usize,
    /// Model-parallel ranks holding (a part of) it, in outer-rank order.
    pub holders: Vec<u32>,
    /// fp32 description: logical shape, padded shape, layout over `holders.len() × dp` ranks.
    pub meta: TensorMeta,
    /// How replicas are merged (TP-replicated and tied weights: verified; to-average: averaged).
    pub policy: ReplicaPolicy,
    /// Per-element optimizer states (`exp_avg`, `exp_avg_sq`, `momentum_buffer`, …).
    pub states: Vec<String>,
    /// Scalar optimizer states (`step`).
    pub scalars: Vec<String>,
    /// For each rank of `meta.layout`: the (model-parallel rank, optimizer file rank) holding it.
    pub sources: Vec<(u32, u32)>,
}

/// A tensor kept from the model states that no optimizer trains (frozen parameter or buffer).
#[derive(Debug, Clone)]
pub struct DsExtra {
    pub meta: TensorMeta,
    pub holders: Vec<u32>,
    pub policy: ReplicaPolicy,
    /// ZeRO-3 frozen parameter: held as flat fragments (`frozen_param_fragments`) of every dp rank's
    /// model states, not whole in `module`.
    pub fragments: bool,
}

/// User-supplied TP metadata for checkpoints saved without `universal_checkpoint_info`.
#[derive(Debug, Clone, Default)]
pub struct Assume {
    /// Regexes of row-parallel parameters (merged on dim 1).
    pub row: Vec<String>,
    /// Regexes of parameters every TP rank holds whole.
    pub replicated: Vec<String>,
    /// Regexes of vocabulary parameters and the original vocabulary size.
    pub vocab: Vec<String>,
    pub vocab_size: Option<u64>,
}

impl Assume {
    pub(super) fn is_empty(&self) -> bool {
        self.row.is_empty() && self.replicated.is_empty() && self.vocab.is_empty()
    }

    pub(super) fn to_uci(
        &self,
    ) -> std::result::Result<UniversalCheckpointInfo, uc_schema::SchemaError> {
        let mut j = serde_json::json!({
            "universal_checkpoint_version": 0.2,
            "parameter_with_row_parallelism_patterns": self.row,
            "tp_replicated_parameter_patterns": self.replicated,
            "vocabulary_parameter_patterns": self.vocab,
        });
        if let Some(v) = self.vocab_size {
            j["original_vocab_size"] = serde_json::json!(v);
        }
        UniversalCheckpointInfo::parse(&j)
    }
}

/// An open DeepSpeed checkpoint: its opened files and everything derived from them, built once.
#[derive(Debug)]
pub struct DsCheckpoint {
    inputs: Inputs,
    params: Vec<DsParam>,
    extras: Vec<DsExtra>,
    /// Training state: steps, samples, param-group hyper-parameters, ds_config, …
    state: BTreeMap<String, Value>,
    /// Name → index into `params` (`Ok`) or `extras` (`Err`), so each read finds its tensor at once.
    by_name: HashMap<String, std::result::Result<usize, usize>>,
    /// ZeRO-3 model states of dp ranks > 0, opened when frozen parameters' fragments live there.
    frags: Frags,
}

impl DsCheckpoint {
    /// The files found in the tag folder, by rank.
    pub fn files(&self) -> &DsFiles {
        &self.inputs.files
    }

    /// ZeRO stage (1 for the BF16 optimizer).
    pub fn stage(&self) -> u8 {
        self.inputs.stage
    }

    /// Tensor-, pipeline- and data-parallel degrees.
    pub fn degrees(&self) -> (u32, u32, u32) {
        (self.inputs.tp, self.inputs.pp, self.inputs.dp)
    }

    /// `universal_checkpoint_info`, when the checkpoint carries it.
    pub fn uci(&self) -> Option<&UniversalCheckpointInfo> {
        self.inputs.uci.as_ref()
    }

    /// True when AutoTP's `affine_map` describes `name` (DeepSpeed's converter then rebuilds it from
    /// the map and tags its universal files with no `cat_dim`).
    pub fn has_affine_map(&self, name: &str) -> bool {
        self.inputs.affine.matches(name)
    }

    /// True for a native DeepSpeed MoE checkpoint (`deepspeed.moe.layer.MoE` experts).
    pub fn native_moe(&self) -> bool {
        self.inputs.moe.is_some()
    }

    /// AutoEP layers (`ds_autoep_layers`, or the legacy `autoep_layers`).
    pub fn autoep(&self) -> &[AutoEpLayer] {
        &self.inputs.autoep
    }

    /// Trained parameters (those the optimizer holds).
    pub fn params(&self) -> &[DsParam] {
        &self.params
    }

    /// Frozen parameters and buffers.
    pub fn extras(&self) -> &[DsExtra] {
        &self.extras
    }

    /// Training state: steps, samples, param-group hyper-parameters, ds_config, …
    pub fn state(&self) -> &BTreeMap<String, Value> {
        &self.state
    }

    /// Opens the checkpoint at `path` (a folder with `latest`, or a tag folder).
    pub fn open(path: &Path, tag: Option<&str>, assume: &Assume) -> Result<DsCheckpoint> {
        let mut inputs = Inputs::open(path, tag, assume)?;
        let state = inputs.collect_state();
        let params = inputs.collect_params()?;
        let (extras, frags) = inputs.collect_extras(&params)?;
        let by_name = extras
            .iter()
            .enumerate()
            .map(|(i, e)| (e.meta.name.clone(), Err(i)))
            .chain(
                params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.name.clone(), Ok(i))),
            )
            .collect();
        Ok(DsCheckpoint {
            inputs,
            params,
            extras,
            state,
            by_name,
            frags,
        })
    }

    /// The topology the checkpoint was saved with.
    pub fn topology(&self) -> Topology {
        let mut t = Topology::new(
            &[
                ("pp", self.inputs.pp),
                ("dp", self.inputs.dp),
                ("tp", self.inputs.tp),
            ],
            self.inputs.stage,
        );
        t.axes.retain(|a| a.size > 1 || a.name == "dp");
        t
    }

    /// Every tensor a universal checkpoint of this one holds, in a stable order.
    pub fn outputs(&self) -> Vec<TensorMeta> {
        let mut out = Vec::new();
        for p in &self.params {
            let base = TensorMeta {
                layout: Layout::single(),
                padded_shape: None,
                ..p.meta.clone()
            };
            out.push(base.clone());
            for s in &p.states {
                out.push(TensorMeta {
                    role: Role::from_key(s),
                    ..base.clone()
                });
            }
            for s in &p.scalars {
                out.push(TensorMeta {
                    role: Role::from_key(s),
                    shape: vec![],
                    ..base.clone()
                });
            }
        }
        for e in &self.extras {
            out.push(TensorMeta {
                layout: Layout::single(),
                padded_shape: None,
                ..e.meta.clone()
            });
        }
        out
    }

    /// The trained parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&DsParam> {
        match self.by_name.get(name) {
            Some(Ok(i)) => self.params.get(*i),
            _ => None,
        }
    }

    /// Merges one output tensor (as listed by [`DsCheckpoint::outputs`]) into full row-major bytes.
    pub fn read(&self, out: &TensorMeta) -> Result<Vec<u8>> {
        self.read_traced(out, &mut |_, _| {})
    }

    /// [`DsCheckpoint::read`], telling `trace` every byte range of tensor data it reads (file,
    /// absolute range; ranges may repeat across calls). Pickles read at open are not included.
    pub fn read_traced(&self, out: &TensorMeta, trace: ReadTrace<'_>) -> Result<Vec<u8>> {
        Ok(self.bytes_traced(out, trace)?.into_vec())
    }

    /// One output tensor's bytes, borrowed from the input files where they lie contiguously there
    /// (ZeRO partitions of the same dtype), else merged into a buffer.
    pub fn bytes(&self, out: &TensorMeta) -> Result<TensorBytes<'_>> {
        self.bytes_traced(out, &mut |_, _| {})
    }

    /// [`DsCheckpoint::bytes`] with the trace of [`DsCheckpoint::read_traced`].
    pub fn bytes_traced(&self, out: &TensorMeta, trace: ReadTrace<'_>) -> Result<TensorBytes<'_>> {
        if let (Some(p), Some(moe)) = (self.param(&out.name), &self.inputs.moe) {
            if let Some(copies) = moe.whole(&out.name, &out.role, &self.inputs.model[&0])? {
                let (f, c) = copies
                    .first()
                    .ok_or_else(|| fmt_err(&self.inputs.files.dir, format!("no `{}`", out.name)))?;
                if p.scalars.iter().any(|s| s == out.role.key()) {
                    return Ok(TensorBytes::Owned(Self::scalar_at(f, c, trace)?));
                }
                let views = copies
                    .iter()
                    .map(|(f, c)| Ok((*f, c.trail().to_string(), Inputs::tensor_of(c)?)))
                    .collect::<Result<Vec<_>>>()?;
                // several copies (dense moments in every EP rank's file) are verified equal
                let n = views.len() as u32;
                let (meta, policy) = match n {
                    1 => (p.meta.clone(), p.policy),
                    _ => (
                        p.meta.clone().with_layout(Layout::Replicated { ranks: n }),
                        ReplicaPolicy::Verify,
                    ),
                };
                return self.merge(
                    &meta,
                    policy,
                    |r| views.get(r as usize).cloned(),
                    DType::F32,
                    trace,
                );
            }
        }
        if let Some(p) = self.param(&out.name) {
            return match &out.role {
                Role::Fp32Master => self.merge_param(p, None, trace),
                r if p.scalars.iter().any(|s| s == r.key()) => {
                    Ok(TensorBytes::Owned(self.read_scalar(p, r.key(), trace)?))
                }
                r => self.merge_param(p, Some(r.key()), trace),
            };
        }
        let e = match self.by_name.get(&out.name) {
            Some(Err(i)) => self.extras.get(*i),
            _ => None,
        }
        .ok_or_else(|| {
            fmt_err(
                &self.inputs.files.dir,
                format!("no tensor `{}` in this checkpoint", out.name),
            )
        })?;
        let mut views = BTreeMap::new();
        if e.fragments {
            // rank r of the nested layout = holder r % n, dp rank r / n
            let n = e.holders.len() as u32;
            for r in 0..n * self.inputs.dp {
                let (m, d) = (e.holders[(r % n) as usize], r / n);
                let f = match d {
                    0 => &self.inputs.model[&m],
                    _ => self.frags.get(&(m, d)).ok_or_else(|| {
                        fmt_err(
                            &self.inputs.files.dir,
                            format!("no model states of rank {d}, mp {m}"),
                        )
                    })?,
                };
                let c = f
                    .cursor()
                    .key("frozen_param_fragments")?
                    .key(&e.meta.name)?;
                views.insert(r, (f, c.trail().to_string(), Inputs::tensor_of(&c)?));
            }
        }
        for (o, m) in e.holders.iter().enumerate().filter(|_| !e.fragments) {
            let f = &self.inputs.model[m];
            let c = f.cursor().key("module")?.key(&e.meta.name)?;
            let t = Inputs::tensor_of(&c)?;
            views.insert(o as u32, (f, c.trail().to_string(), t));
        }
        self.merge(
            &e.meta,
            e.policy,
            |rank| views.get(&rank).map(|(f, n, t)| (*f, n.clone(), *t)),
            out.dtype,
            trace,
        )
    }

    fn merge_param(
        &self,
        p: &DsParam,
        key: Option<&str>,
        trace: ReadTrace<'_>,
    ) -> Result<TensorBytes<'_>> {
        let mut views = BTreeMap::new();
        for (r, (m, d)) in p.sources.iter().enumerate() {
            let (f, c) = self.inputs.partition(*m, *d, p.group, key)?;
            views.insert(r as u32, (f, c.trail().to_string(), Inputs::tensor_of(&c)?));
        }
        self.merge(
            &p.meta,
            p.policy,
            |rank| views.get(&rank).map(|(f, n, t)| (*f, n.clone(), *t)),
            DType::F32,
            trace,
        )
    }

    fn merge<'a>(
        &'a self,
        meta: &TensorMeta,
        policy: ReplicaPolicy,
        view: impl Fn(u32) -> Option<(&'a PtFile, String, &'a TensorRef)>,
        to: DType,
        trace: ReadTrace<'_>,
    ) -> Result<TensorBytes<'a>> {
        let path = self.inputs.files.dir.clone();
        let merge_err = |e: uc_merge::MergeError| StoreError::BadTensor {
            path: path.clone(),
            tensor: meta.name.clone(),
            why: e.to_string(),
        };
        let views: Vec<_> = (0..meta.layout.ranks())
            .filter_map(|r| Some((r, view(r)?)))
            .collect();
        // every element comes from a distinct element of some rank's tensor: a layout asking for
        // more than the files hold is refused before anything is planned or allocated
        let held = views
            .iter()
            .fold(0u64, |a, (_, (_, _, t))| a.saturating_add(t.numel()));
        if held < meta.numel() {
            return Err(StoreError::BadTensor {
                path,
                tensor: meta.name.clone(),
                why: format!(
                    "shape {:?} needs {} elements but its ranks' tensors hold {held}",
                    meta.shape,
                    meta.numel()
                ),
            });
        }
        let src = pieces(meta).map_err(merge_err)?;
        let mut dst = Vec::new();
        uc_merge::layout_pieces(&meta.shape, &Layout::single(), &mut dst);
        let pl = plan(&meta.name, &meta.shape, &src, &dst, policy).map_err(merge_err)?;
        let mut bytes: BTreeMap<u32, &[u8]> = BTreeMap::new();
        let mut from = None;
        let reads = pl.source_ranges();
        for (r, (f, name, t)) in views {
            if *from.get_or_insert(t.dtype) != t.dtype {
                return Err(StoreError::BadTensor {
                    path: f.path().to_path_buf(),
                    tensor: name,
                    why: format!(
                        "dtype {} differs from other ranks' {}",
                        t.dtype,
                        from.unwrap_or(t.dtype)
                    ),
                });
            }
            let base = f.tensor_file_range(&name, t)?.start;
            let es = t.dtype.size() as u64;
            let mut mine = Vec::new();
            for runs in reads.range((r, 0)..=(r, u32::MAX)).map(|(_, v)| v) {
                if let Some(&(_, end)) = runs.iter().max_by_key(|(_, b)| *b) {
                    if end > t.numel() {
                        return Err(StoreError::BadTensor {
                            path: f.path().to_path_buf(),
                            tensor: name,
                            why: format!(
                                "`{}` needs elements up to {end} of this {}-element tensor",
                                meta.name,
                                t.numel()
                            ),
                        });
                    }
                }
                for &(a, b) in runs {
                    f.will_need(base + a * es..base + b * es);
                    trace(f.path(), base + a * es..base + b * es);
                    mine.push(a..b);
                }
            }
            // Only the runs the plan reads (a remote input fetches just those).
            bytes.insert(r, f.tensor_bytes_in(&name, t, &mine)?);
        }
        let from = from.unwrap_or(to);
        if from == to {
            if let Some(runs) = pl.contiguous_runs(0, 0, meta.numel()) {
                let es = to.size() as u64;
                let slice = |r: &uc_merge::Run| {
                    let b = bytes.get(&r.rank)?;
                    let (s, e) = (r.src.checked_mul(es)?, (r.src + r.len).checked_mul(es)?);
                    b.get(usize::try_from(s).ok()?..usize::try_from(e).ok()?)
                };
                if let Some(v) = runs.iter().map(slice).collect::<Option<Vec<&[u8]>>>() {
                    return Ok(TensorBytes::Runs(v));
                }
            }
        }
        let mut out = vec![0u8; meta.numel() as usize * to.size()];
        let get = |r: u32, _b: u32| bytes.get(&r).copied();
        execute_target(&pl, 0, 0, &mut out, to, from, &get).map_err(merge_err)?;
        Ok(TensorBytes::Owned(out))
    }

    fn read_scalar(&self, p: &DsParam, key: &str, trace: ReadTrace<'_>) -> Result<Vec<u8>> {
        let m = p.holders[0];
        let (f, c) = self.inputs.partition(m, 0, p.group, Some(key))?;
        Self::scalar_at(f, &c, trace)
    }

    /// The number at `c` (a 0-d tensor or a Python number) as float32 bytes.
    fn scalar_at(f: &PtFile, c: &Cursor, trace: ReadTrace<'_>) -> Result<Vec<u8>> {
        let v = match c.value() {
            PyValue::Tensor(t) => {
                let b = f.tensor_bytes(c.trail(), t)?;
                let at = f.tensor_file_range(c.trail(), t)?.start;
                trace(f.path(), at..at + t.dtype.size().min(b.len()) as u64);
                let mut out = [0u8; 4];
                uc_merge::convert::convert(
                    &b[..t.dtype.size().min(b.len())],
                    t.dtype,
                    &mut out,
                    DType::F32,
                )
                .map_err(|e| StoreError::BadTensor {
                    path: f.path().to_path_buf(),
                    tensor: c.trail().into(),
                    why: e.to_string(),
                })?;
                f32::from_le_bytes(out)
            }
            PyValue::Int(i) => *i as f32,
            PyValue::Float(x) => *x as f32,
            other => {
                return Err(fmt_err(
                    f.path(),
                    format!(
                        "`{}`: expected a number, found {}",
                        c.trail(),
                        other.type_name()
                    ),
                ))
            }
        };
        Ok(v.to_le_bytes().to_vec())
    }

    /// Rank 0's `optimizer_state_dict` (for the universal `zero/optimizer_state.pt`).
    pub fn optimizer_state_rank0(&self) -> Option<&PyValue> {
        self.inputs.optim(0, 0).ok().map(|o| o.root().value())
    }

    /// The optimizer step of param group `g` (rank 0's; `None` before the first step).
    pub fn group_step(&self, g: usize) -> Result<Option<f32>> {
        let Some(p) = self
            .params
            .iter()
            .find(|p| p.group == g && p.scalars.iter().any(|s| s == "step"))
        else {
            return Ok(None);
        };
        let b = self.read_scalar(p, "step", &mut |_, _| {})?;
        Ok(b.try_into().ok().map(f32::from_le_bytes))
    }

    /// Rank 0's optimizer `param_groups` (hyper-parameters per group).
    pub fn param_groups_rank0(&self) -> Option<&PyValue> {
        Some(self.inputs.optim(0, 0).ok()?.param_groups()?.value())
    }

    /// The module buffers the model states list (`buffer_names`, every rank's), `None` when no
    /// file lists them. Other non-trained `module` tensors may be aliases of a parameter.
    pub fn buffer_names(&self) -> Option<BTreeSet<String>> {
        let mut out: Option<BTreeSet<String>> = None;
        for f in self.inputs.model.values() {
            if let Some(Ok(items)) = f.cursor().get("buffer_names").map(|c| c.items()) {
                let names = out.get_or_insert_with(BTreeSet::new);
                names.extend(
                    items
                        .iter()
                        .filter_map(|c| c.value().as_str().map(String::from)),
                );
            }
        }
        out
    }

    /// The parameters the model states list as frozen (`frozen_param_shapes`, every rank's), `None`
    /// when no file lists them (ZeRO-1 and the BF16 optimizer save `None` there).
    pub fn frozen_names(&self) -> Option<BTreeSet<String>> {
        let mut out: Option<BTreeSet<String>> = None;
        for f in self.inputs.model.values() {
            if let Some(Ok(e)) = f
                .cursor()
                .get("frozen_param_shapes")
                .map(|c| c.str_entries())
            {
                out.get_or_insert_with(BTreeSet::new)
                    .extend(e.into_iter().map(|(k, _)| k.to_string()));
            }
        }
        out
    }

    /// The trained parameter whose `module` tensor is bit-identical (dtype, shape, bytes) to the
    /// module tensor `name` in the same model file: `name` is then that parameter registered a
    /// second time under another module name (an alias), not a weight of its own.
    pub fn module_twin(&self, name: &str, trace: ReadTrace<'_>) -> Result<Option<String>> {
        for (m, f) in &self.inputs.model {
            let Some(module) = f.cursor().get("module") else {
                continue;
            };
            let Some((c, t)) = module
                .get(name)
                .and_then(|c| c.value().as_tensor().map(|t| (c, t)))
            else {
                continue;
            };
            if t.numel() == 0 {
                continue;
            }
            let mine = f.tensor_data(c.trail(), t)?;
            if let Ok(r) = f.tensor_file_range(c.trail(), t) {
                trace(f.path(), r);
            }
            for p in self.params.iter().filter(|p| p.holders.contains(m)) {
                let Some((pc, pt)) = module
                    .get(&p.name)
                    .and_then(|c| c.value().as_tensor().map(|t| (c, t)))
                else {
                    continue;
                };
                if pt.dtype != t.dtype || pt.shape != t.shape {
                    continue;
                }
                let theirs = f.tensor_data(pc.trail(), pt)?;
                if let Ok(r) = f.tensor_file_range(pc.trail(), pt) {
                    trace(f.path(), r);
                }
                if theirs == mine {
                    return Ok(Some(p.name.clone()));
                }
            }
        }
        Ok(None)
    }

    /// The folder the checkpoint's tag lives in.
    pub fn dir(&self) -> &PathBuf {
        &self.inputs.files.dir
    }
}
