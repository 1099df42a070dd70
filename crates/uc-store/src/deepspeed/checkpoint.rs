//! A DeepSpeed checkpoint read as plain data: every parameter's layout over (model-parallel rank,
//! data-parallel rank), built from what the files say, and full tensors merged through uc-merge.
//!
//! Model-parallel rank `m` is DeepSpeed's `mp_rank_<m>`: `stage * tp + tp_rank`. A parameter held by
//! several `m` (tensor parallel, tied pipeline weights) gets an outer layout over those holders
//! (TP rule or replicated); ZeRO partitions each holder's local tensor over the dp ranks inside it.

use super::files::DsFiles;
use super::folding::{check_expert_files, Folding};
use super::native_moe::{group_ep, NativeMoe};
use super::optim_file::{positive_u32, OptimFile};
use crate::error::{Result, StoreError};
use crate::tensor_bytes::TensorBytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use uc_merge::{execute_target, pieces, plan, Piece, ReplicaPolicy};
use uc_schema::deepspeed::{autoep_layers_in, AutoEpLayer, UniversalCheckpointInfo};
use uc_schema::ExpertStorage;
use uc_schema::{DType, Layout, PatternSet, Role, TensorMeta, Topology, Value};
use uc_torch::pickle::{Allowlist, Cursor, PyValue, TensorRef};
use uc_torch::plain::{to_json, to_value};
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

/// How a module tensor is merged: outer layout, logical shape, padded shape, replica policy.
type ExtraLayout = (Layout, Vec<u64>, Option<Vec<u64>>, ReplicaPolicy);

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
    fn is_empty(&self) -> bool {
        self.row.is_empty() && self.replicated.is_empty() && self.vocab.is_empty()
    }

    fn to_uci(&self) -> std::result::Result<UniversalCheckpointInfo, uc_schema::SchemaError> {
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

/// An open DeepSpeed checkpoint.
#[derive(Debug)]
pub struct DsCheckpoint {
    pub(crate) files: DsFiles,
    /// ZeRO stage (1 for the BF16 optimizer).
    pub(crate) stage: u8,
    pub(crate) tp: u32,
    pub(crate) pp: u32,
    pub(crate) dp: u32,
    pub(crate) uci: Option<UniversalCheckpointInfo>,
    /// The parameter patterns AutoTP's `affine_map` describes (empty without one).
    affine: PatternSet,
    /// AutoEP layers (`ds_autoep_layers`, or the legacy `autoep_layers`).
    pub(crate) autoep: Vec<AutoEpLayer>,
    /// Native DeepSpeed MoE files (per-expert files without AutoEP metadata).
    moe: Option<NativeMoe>,
    /// AutoEP folded with AutoTP: which model-parallel rank holds each EP rank's experts.
    folding: Option<Folding>,
    pub(crate) params: Vec<DsParam>,
    pub(crate) extras: Vec<DsExtra>,
    /// Training state: steps, samples, param-group hyper-parameters, ds_config, …
    pub(crate) state: BTreeMap<String, Value>,
    model: BTreeMap<u32, PtFile>,
    optim: BTreeMap<(u32, u32), PtFile>,
    /// Name → index into `params` (`Ok`) or `extras` (`Err`), so each read finds its tensor at once.
    by_name: HashMap<String, std::result::Result<usize, usize>>,
    /// ZeRO-3 model states of dp ranks > 0, opened when frozen parameters' fragments live there.
    frags: BTreeMap<(u32, u32), PtFile>,
}

/// The ZeRO layout of `name` inside model-parallel rank `m`'s optimizer files; an error naming
/// `path` when no optimizer group of that rank lists it.
fn inner_layout<'a>(
    inner: &'a BTreeMap<(u32, String), Layout>,
    m: u32,
    name: &str,
    path: &Path,
) -> Result<&'a Layout> {
    inner.get(&(m, name.to_string())).ok_or_else(|| {
        fmt_err(
            path,
            format!("`{name}`: no optimizer param group of model-parallel rank {m} lists it"),
        )
    })
}

fn fmt_err(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::Format {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn schema_err(path: &Path) -> impl FnOnce(uc_schema::SchemaError) -> StoreError + '_ {
    move |source| StoreError::Schema {
        path: path.to_path_buf(),
        source,
    }
}

fn as_u64(c: &Cursor, what: &str) -> Result<u64> {
    c.value()
        .as_int()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| {
            fmt_err(
                c.path(),
                format!("`{}`: expected a non-negative int for {what}", c.trail()),
            )
        })
}

/// One param group's parameters in flat order: name → local shape.
type Group = Vec<(String, Vec<u64>)>;

/// `param_shapes`: one ordered map per param group, name → shape.
fn param_shapes(f: &PtFile) -> Result<Vec<Group>> {
    let root = f.cursor();
    let Some(ps) = root.get("param_shapes").filter(|c| !c.is_none()) else {
        return Ok(Vec::new()); // absent, or None without ZeRO
    };
    let groups = match ps.value() {
        PyValue::Dict(_) => vec![ps],
        _ => ps.items()?,
    };
    groups
        .iter()
        .map(|g| {
            g.str_entries()?
                .into_iter()
                .map(|(name, c)| {
                    let shape = c.value().as_shape().ok_or_else(|| {
                        fmt_err(f.path(), format!("`{}`: expected a shape", c.trail()))
                    })?;
                    Ok((name.to_string(), shape))
                })
                .collect()
        })
        .collect()
}

impl DsCheckpoint {
    /// The files found in the tag folder, by rank.
    pub fn files(&self) -> &DsFiles {
        &self.files
    }

    /// ZeRO stage (1 for the BF16 optimizer).
    pub fn stage(&self) -> u8 {
        self.stage
    }

    /// Tensor-, pipeline- and data-parallel degrees.
    pub fn degrees(&self) -> (u32, u32, u32) {
        (self.tp, self.pp, self.dp)
    }

    /// `universal_checkpoint_info`, when the checkpoint carries it.
    pub fn uci(&self) -> Option<&UniversalCheckpointInfo> {
        self.uci.as_ref()
    }

    /// True when AutoTP's `affine_map` describes `name` (DeepSpeed's converter then rebuilds it from
    /// the map and tags its universal files with no `cat_dim`).
    pub fn has_affine_map(&self, name: &str) -> bool {
        self.affine.matches(name)
    }

    /// AutoEP layers (`ds_autoep_layers`, or the legacy `autoep_layers`).
    pub fn autoep(&self) -> &[AutoEpLayer] {
        &self.autoep
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
        let files = DsFiles::discover(path, tag)?;
        let allow = Allowlist::deepspeed();
        let zero3 = !files.zero3_model.is_empty();
        let stage = if zero3 { 3 } else { 0 };
        let mut model = BTreeMap::new();
        if zero3 {
            for ((m, d), p) in &files.zero3_model {
                if *d == 0 {
                    model.insert(*m, PtFile::open(p, &allow)?);
                }
            }
        } else {
            for (m, p) in &files.model {
                model.insert(*m, PtFile::open(p, &allow)?);
            }
        }
        let first = model
            .values()
            .next()
            .ok_or_else(|| fmt_err(&files.dir, "no model states"))?;
        let root = first.cursor();
        let dims = root.get("checkpoint_parallel_dimensions");
        let degree = |key: &str| -> Result<Option<u32>> {
            match dims.as_ref().and_then(|d| d.get(key)) {
                Some(c) if !c.value().is_none() => Ok(Some(positive_u32(&c, "a degree ≥ 1")?)),
                _ => Ok(None),
            }
        };
        let mp = u32::try_from(model.len()).unwrap_or(u32::MAX);
        let tp = degree("tp_degree")?.unwrap_or(mp);
        let pp = degree("pp_degree")?.unwrap_or(1);
        if tp.checked_mul(pp) != Some(mp) {
            return Err(fmt_err(
                &files.dir,
                format!(
                    "{mp} model-parallel ranks found but the checkpoint says tp {tp} × pp {pp}"
                ),
            ));
        }
        for m in 0..mp {
            if !model.contains_key(&m) {
                let name = if zero3 {
                    format!("zero_pp_rank_0_mp_rank_{m:02}_model_states.pt")
                } else {
                    format!("mp_rank_{m:02}_model_states.pt")
                };
                return Err(StoreError::Io {
                    path: files.dir.join(name),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "model states of this rank are missing",
                    ),
                });
            }
        }
        let dp = files.optim.keys().filter(|(m, _)| *m == 0).count() as u32;
        let mut optim = BTreeMap::new();
        if dp > 0 {
            for m in 0..mp {
                for d in 0..dp {
                    let p = files
                        .optim
                        .get(&(m, d))
                        .cloned()
                        .unwrap_or_else(|| files.optim_name(m, d));
                    optim.insert((m, d), PtFile::open(&p, &allow)?);
                }
            }
        }
        let uci_json = root
            .get("universal_checkpoint_info")
            .map(|c| to_json(c.value()));
        let uci = match (&uci_json, assume.is_empty()) {
            (_, false) => Some(assume.to_uci().map_err(schema_err(&files.dir))?),
            (Some(j), true) => {
                Some(UniversalCheckpointInfo::parse(j).map_err(schema_err(first.path()))?)
            }
            (None, true) => None,
        };
        let affine = match uci.as_ref().and_then(|u| u.affine_map.as_ref()) {
            Some(map) => PatternSet::new(map.params.keys().cloned().collect())
                .map_err(schema_err(first.path()))?,
            None => PatternSet::empty(),
        };
        let autoep = autoep_layers_in(&to_json(root.value()))
            .map_err(schema_err(first.path()))?
            .unwrap_or_default();
        let moe = if autoep.is_empty() && !(files.experts.is_empty() && files.expp.is_empty()) {
            if mp != 1 {
                return Err(fmt_err(
                    &files.dir,
                    format!("native DeepSpeed MoE (per-expert files without AutoEP metadata) at tp {tp} × pp {pp}: only tp 1, pp 1 is supported"),
                ));
            }
            if !files.optim.is_empty() && !files.expp.is_empty() {
                return Err(fmt_err(
                    &files.dir,
                    "both ZeRO optimizer files and no-ZeRO `expp_rank_*` optimizer files",
                ));
            }
            Some(NativeMoe::open(&files, first)?)
        } else {
            None
        };
        // without ZeRO (native MoE's `expp_rank_*` files) there are no dp-rank files to count
        let dp = match (&moe, root.get("dp_world_size")) {
            (Some(m), Some(c)) if dp == 0 && m.unsharded() => positive_u32(&c, "a degree ≥ 1")?,
            _ => dp.max(1),
        };
        let folding = Folding::read(&model, tp)?;
        check_expert_files(&files, &autoep, folding.as_ref())?;
        let mut ck = DsCheckpoint {
            autoep,
            moe,
            folding,
            files,
            stage,
            tp,
            pp,
            dp,
            uci,
            affine,
            params: Vec::new(),
            extras: Vec::new(),
            state: BTreeMap::new(),
            model,
            optim,
            frags: BTreeMap::new(),
            by_name: HashMap::new(),
        };
        ck.stage = ck.detect_stage()?;
        ck.collect_state();
        ck.collect_params()?;
        ck.collect_extras()?;
        let params = ck
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), Ok(i)));
        let extras = ck
            .extras
            .iter()
            .enumerate()
            .map(|(i, e)| (e.meta.name.clone(), Err(i)));
        ck.by_name = extras.chain(params).collect();
        Ok(ck)
    }

    /// The topology the checkpoint was saved with.
    pub fn topology(&self) -> Topology {
        let mut t = Topology::new(
            &[("pp", self.pp), ("dp", self.dp), ("tp", self.tp)],
            self.stage,
        );
        t.axes.retain(|a| a.size > 1 || a.name == "dp");
        t
    }

    /// The optimizer-states file of (model-parallel rank `m`, dp rank `d`).
    fn optim(&self, m: u32, d: u32) -> Result<OptimFile<'_>> {
        let f = self
            .optim
            .get(&(m, d))
            .ok_or_else(|| fmt_err(&self.files.optim_name(m, d), "missing optimizer states"))?;
        OptimFile::new(f, self.stage == 3)
    }

    fn detect_stage(&self) -> Result<u8> {
        if self.stage == 3 || self.optim.is_empty() {
            return Ok(self.stage.max(if self.optim.is_empty() { 0 } else { 1 }));
        }
        // the BF16 optimizer is ZeRO-1 and writes no zero_stage
        Ok(self.optim(0, 0)?.zero_stage()?.unwrap_or(1))
    }

    fn collect_state(&mut self) {
        let root = self.model[&0].cursor();
        for key in [
            "global_steps",
            "global_samples",
            "skipped_steps",
            "iteration",
            "ds_version",
            "ds_config",
            "lr_scheduler",
            "mp_world_size",
            "dp_world_size",
            "checkpoint_parallel_dimensions",
            "universal_checkpoint_info",
            "ds_autoep_layers",
            "num_experts",
        ] {
            if let Some(c) = root.get(key) {
                self.state.insert(key.to_string(), to_value(c.value()));
            }
        }
        let groups = match self.optim(0, 0) {
            Ok(o) => o.param_groups(),
            Err(_) => self.moe.as_ref().and_then(NativeMoe::param_groups),
        };
        if let Some(g) = groups {
            let mut v = to_json(g.value());
            if let Some(a) = v.as_array_mut() {
                for g in a {
                    if let Some(m) = g.as_object_mut() {
                        m.remove("params");
                    }
                }
            }
            self.state
                .insert("param_groups".into(), Value::from_json(&v));
        }
    }

    /// The partition tensor of (m, d) for group `g`: the fp32 master (`key` None) or a state.
    fn partition(
        &self,
        m: u32,
        d: u32,
        g: usize,
        key: Option<&str>,
    ) -> Result<(&PtFile, Cursor<'_>)> {
        let f = &self.optim[&(m, d)];
        let o = OptimFile::new(f, self.stage == 3)?;
        let c = match key {
            None => o.fp32(g)?,
            Some(k) => o.state(g, k)?,
        };
        Ok((f, c))
    }

    /// How group `g` of rank-file (m, 0) is partitioned: (partition count, is an expert group).
    fn group_partitioning(&self, m: u32, g: usize) -> Result<(u32, bool)> {
        self.optim(m, 0)?.partitioning(g, self.dp)
    }

    fn tensor_of<'a>(c: &Cursor<'a>) -> Result<&'a TensorRef> {
        c.value().as_tensor().ok_or_else(|| {
            fmt_err(
                c.path(),
                format!(
                    "`{}`: expected a tensor, found {}",
                    c.trail(),
                    c.value().type_name()
                ),
            )
        })
    }

    fn collect_params(&mut self) -> Result<()> {
        // name → (group, holder m → local shape); order of first appearance.
        let mut order: Vec<String> = Vec::new();
        let mut seen: BTreeMap<String, (usize, BTreeMap<u32, Vec<u64>>)> = BTreeMap::new();
        let mut groups_of: BTreeMap<u32, Vec<Group>> = BTreeMap::new();
        for (m, f) in &self.model {
            let groups = param_shapes(f)?;
            for (g, params) in groups.iter().enumerate() {
                for (name, shape) in params {
                    uc_schema::validate_name(name).map_err(schema_err(f.path()))?;
                    let e = seen.entry(name.clone()).or_insert_with(|| {
                        order.push(name.clone());
                        (g, BTreeMap::new())
                    });
                    e.1.insert(*m, shape.clone());
                }
            }
            groups_of.insert(*m, groups);
        }
        if self.optim.is_empty() {
            if let Some(moe) = self.moe.as_mut().filter(|m| m.unsharded()) {
                self.params = moe.unsharded_params(&self.model[&0])?;
            }
            return Ok(()); // else saved before the first optimizer step: weights only (extras)
        }
        // Inner (ZeRO) layout of every (m, group, name).
        let mut inner: BTreeMap<(u32, String), Layout> = BTreeMap::new();
        let mut expert_dp: BTreeMap<String, u32> = BTreeMap::new();
        for (m, groups) in &groups_of {
            for (g, params) in groups.iter().enumerate() {
                let (f0, c0) = self.partition(*m, 0, g, None)?;
                let part = Self::tensor_of(&c0)?.numel();
                let group_numel: u64 = params.iter().map(|(_, s)| s.iter().product::<u64>()).sum();
                let (gdp, moe) = self.group_partitioning(*m, g)?;
                if moe {
                    expert_dp.extend(params.iter().map(|(n, _)| (n.clone(), gdp)));
                }
                let dp = gdp as u64;
                if self.stage < 3 && group_numel > part * dp {
                    return Err(fmt_err(f0.path(), format!("param group {g}: {group_numel} elements do not fit {dp} partitions of {part}")));
                }
                let mut off = 0;
                for (name, shape) in params {
                    let numel: u64 = shape.iter().product();
                    let l = if self.stage == 3 {
                        Layout::Zero3 {
                            dp: gdp,
                            offset: off,
                        }
                    } else {
                        Layout::ZeroFlat {
                            dp: gdp,
                            offset: off,
                            group_numel,
                            alignment: part * dp,
                        }
                    };
                    off += if self.stage == 3 {
                        numel.div_ceil(dp)
                    } else {
                        numel
                    };
                    inner.insert((*m, name.clone()), l);
                }
                if self.stage < 3 && !moe {
                    self.check_fragments(*m, g, params, &inner)?;
                }
            }
        }
        // States present in group files (from m 0, d 0 of the param's group).
        for name in order {
            let (group, locals) = &seen[&name];
            let holders: Vec<u32> = locals.keys().copied().collect();
            let local_shapes: Vec<Vec<u64>> = locals.values().cloned().collect();
            let path = self.model[&holders[0]].path().to_path_buf();
            if let (Some(&edp), Some(moe)) = (expert_dp.get(&name), &self.moe) {
                let pg = self.optim(0, 0)?.param_group(*group).ok_or_else(|| {
                    fmt_err(&path, format!("`{name}`: no optimizer param group {group}"))
                })?;
                let (states, scalars) = self.state_keys(0, *group)?;
                let ps = moe.zero_params(
                    &path,
                    &name,
                    *group,
                    &local_shapes[0],
                    (group_ep(&pg)?, edp, self.dp),
                    inner_layout(&inner, 0, &name, &path)?,
                    (&states, &scalars),
                )?;
                self.params.extend(ps);
                continue;
            }
            if let Some(&edp) = expert_dp.get(&name) {
                inner_layout(&inner, 0, &name, &path)?;
                let p = self.expert_param(&path, &name, *group, locals, edp, &inner)?;
                self.params.push(p);
                continue;
            }
            let stages: BTreeSet<u32> = holders.iter().map(|m| m / self.tp).collect();
            let (outer, shape, padded, policy) = if holders.len() == 1 {
                (
                    Layout::single(),
                    local_shapes[0].clone(),
                    None,
                    ReplicaPolicy::First,
                )
            } else if self.tp == 1 || stages.len() == holders.len() {
                // tied pipeline weights: every stage holds the same tensor
                if local_shapes.windows(2).any(|w| w[0] != w[1]) {
                    return Err(fmt_err(&path, format!("`{name}` is held by stages {stages:?} with different shapes {local_shapes:?}")));
                }
                (
                    Layout::Replicated {
                        ranks: holders.len() as u32,
                    },
                    local_shapes[0].clone(),
                    None,
                    ReplicaPolicy::Verify,
                )
            } else if stages.len() == 1 && holders.len() == self.tp as usize {
                let uci = self.uci.as_ref().ok_or_else(|| {
                    fmt_err(&path, format!(
                        "tensor-parallel checkpoint (tp {}) without `universal_checkpoint_info`: cannot tell how `{name}` \
                         (local shapes {local_shapes:?}) is split; pass --assume-row / --assume-replicated patterns",
                        self.tp
                    ))
                })?;
                let rule = uci
                    .tp_rule(&name, &local_shapes)
                    .map_err(schema_err(&path))?;
                let policy = if rule.average {
                    ReplicaPolicy::Average
                } else if rule.replicated {
                    ReplicaPolicy::Verify
                } else {
                    ReplicaPolicy::First
                };
                let padded = (rule.logical_shape() != rule.shape).then(|| rule.shape.clone());
                (rule.layout.clone(), rule.logical_shape(), padded, policy)
            } else {
                return Err(fmt_err(&path, format!("`{name}` is held by model-parallel ranks {holders:?}: tied weights across TP ranks of several stages are not supported")));
            };
            let inner_layouts = holders
                .iter()
                .map(|&m| inner_layout(&inner, m, &name, &path).cloned())
                .collect::<Result<_>>()?;
            let layout = Layout::Nested {
                outer: Box::new(outer),
                inner: inner_layouts,
            };
            let mut meta =
                TensorMeta::new(&name, DType::F32, shape, Role::Fp32Master).with_layout(layout);
            meta.padded_shape = padded;
            meta.validate().map_err(schema_err(&path))?;
            let (states, scalars) = self.state_keys(holders[0], *group)?;
            let n = holders.len() as u32;
            let sources = (0..n * self.dp)
                .map(|r| (holders[(r % n) as usize], r / n))
                .collect();
            self.params.push(DsParam {
                name,
                group: *group,
                holders,
                meta,
                policy,
                states,
                scalars,
                sources,
            });
        }
        Ok(())
    }

    /// An AutoEP expert parameter: local `[E_local, …]` tensors of the EP ranks, each ZeRO-partitioned
    /// over its expert-data-parallel group: global rank `r = ep_rank + edp_rank * ep` of model-parallel
    /// rank 0, or, folded with AutoTP, dp rank `edp_rank` of the TP rank the folding table gives.
    fn expert_param(
        &self,
        path: &Path,
        name: &str,
        group: usize,
        locals: &BTreeMap<u32, Vec<u64>>,
        edp: u32,
        inner: &BTreeMap<(u32, String), Layout>,
    ) -> Result<DsParam> {
        let layer = self.autoep.iter().find(|l| l.owns(name)).ok_or_else(|| {
            fmt_err(path, format!("`{name}` is in an expert (moe) param group but no AutoEP layer (`ds_autoep_layers`) owns it"))
        })?;
        let ep = layer.ep_size;
        // the model-parallel rank holding each EP rank's experts, and the optimizer files per EP rank
        let (mps, files) = match (&self.folding, self.tp, self.pp) {
            (_, 1, 1) => (vec![0; ep as usize], ep.checked_mul(edp)),
            (Some(f), tp, 1) if f.ep() == ep && ep == tp => {
                let mps = (0..ep).map(|e| f.mp_of(e).unwrap_or(e)).collect();
                (mps, Some(edp))
            }
            _ => {
                return Err(fmt_err(
                    path,
                    format!(
                        "`{name}`: AutoEP experts with tp {} / pp {} need pp 1 and a folding table \
                         (`folding`) putting one of the {ep} EP ranks on each TP rank",
                        self.tp, self.pp
                    ),
                ))
            }
        };
        let local = locals.get(&mps[0]).map_or(&[][..], Vec::as_slice);
        if files != Some(self.dp)
            || local.is_empty()
            || local[0].checked_mul(ep as u64) != Some(layer.num_experts)
        {
            return Err(fmt_err(path, format!(
                "`{name}`: local shape {local:?} × ep {ep} (expert-dp {edp}) does not match {} experts over {} optimizer files",
                layer.num_experts, self.dp
            )));
        }
        if let Some(m) = mps
            .iter()
            .find(|m| locals.get(m).map(Vec::as_slice) != Some(local))
        {
            return Err(fmt_err(
                path,
                format!(
                    "`{name}`: model-parallel rank {m} holds local shape {:?}, rank {} {local:?}",
                    locals.get(m),
                    mps[0]
                ),
            ));
        }
        if self.stage < 3 {
            let pg = self.optim(mps[0], 0)?.param_group(group);
            if let Some(pg) = pg.filter(|pg| pg.get("name").is_some()) {
                let n = group_ep(&pg)?;
                if n != ep {
                    return Err(StoreError::BadValue {
                        path: pg.path().to_path_buf(),
                        key: format!("{}.name", pg.trail()),
                        value: format!("ep_size_{n}"),
                        expected: "the ep_size of the AutoEP layer owning the group's experts",
                    });
                }
            }
        }
        let mut shape = local.to_vec();
        shape[0] = layer.num_experts;
        let outer = Layout::Experts {
            num_experts: layer.num_experts,
            ep,
            storage: ExpertStorage::Stacked,
        };
        let layout = Layout::Nested {
            outer: Box::new(outer),
            inner: mps
                .iter()
                .map(|&m| inner_layout(inner, m, name, path).cloned())
                .collect::<Result<_>>()?,
        };
        let meta = TensorMeta::new(name, DType::F32, shape, Role::Fp32Master).with_layout(layout);
        meta.validate().map_err(schema_err(path))?;
        let (states, scalars) = self.state_keys(mps[0], group)?;
        let mut holders = mps.clone();
        holders.dedup();
        Ok(DsParam {
            name: name.to_string(),
            group,
            holders,
            meta,
            policy: ReplicaPolicy::First,
            states,
            scalars,
            // rank r = ep rank r % ep, expert-dp rank r / ep: global rank r of mp rank 0, or dp
            // rank r / ep of the folded TP rank
            sources: (0..ep * edp)
                .map(|r| match self.tp > 1 {
                    true => (mps[(r % ep) as usize], r / ep),
                    false => (0, r),
                })
                .collect(),
        })
    }

    /// Per-element and scalar optimizer state keys of group `g`.
    fn state_keys(&self, m: u32, g: usize) -> Result<(Vec<String>, Vec<String>)> {
        let Some(gs) = self.optim(m, 0)?.group_state(g)? else {
            return Ok((Vec::new(), Vec::new()));
        };
        let (mut states, mut scalars) = (Vec::new(), Vec::new());
        for (k, c) in gs.str_entries()? {
            // Partitions may be stored with or without their padding, so any 1-d tensor is a
            // per-element state; 0-d tensors and numbers are scalars.
            match c.value() {
                PyValue::Tensor(t) if !t.shape.is_empty() => states.push(k.to_string()),
                PyValue::Tensor(_) => scalars.push(k.to_string()),
                PyValue::Int(_) | PyValue::Float(_) => scalars.push(k.to_string()),
                _ => {}
            }
        }
        Ok((states, scalars))
    }

    /// Checks our ZeRO-1/2 layout against DeepSpeed's `param_slice_mappings` on every dp rank.
    fn check_fragments(
        &self,
        m: u32,
        g: usize,
        params: &[(String, Vec<u64>)],
        inner: &BTreeMap<(u32, String), Layout>,
    ) -> Result<()> {
        for d in 0..self.dp {
            let o = self.optim(m, d)?;
            let Some(gm) = o.slice_mappings(g)? else {
                continue;
            };
            for (name, shape) in params {
                let mut ps = Vec::new();
                let layout = inner_layout(inner, m, name, o.root().path())?;
                uc_merge::layout_pieces(shape, layout, &mut ps);
                let mine: Vec<&Piece> = ps.iter().filter(|p| p.rank == d).collect();
                let numel: u64 = mine.iter().map(|p| p.global.numel()).sum();
                let start = mine.iter().map(|p| p.offset).min();
                let theirs = gm.get(name);
                let ok = match (&theirs, start) {
                    (None, None) => true,
                    (Some(c), Some(s)) => {
                        let st = c.get("start").map(|x| as_u64(&x, "start")).transpose()?;
                        let n = c.get("numel").map(|x| as_u64(&x, "numel")).transpose()?;
                        st == Some(s) && n == Some(numel)
                    }
                    _ => false,
                };
                if !ok {
                    return Err(StoreError::BadTensor {
                        path: self.optim[&(m, d)].path().to_path_buf(),
                        tensor: name.clone(),
                        why: format!("param_slice_mappings disagree with the ZeRO layout (expected start {start:?}, numel {numel})"),
                    });
                }
            }
        }
        Ok(())
    }

    fn collect_extras(&mut self) -> Result<()> {
        let zero3 = self.stage == 3;
        let trained: BTreeSet<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        let mut locals: BTreeMap<String, BTreeMap<u32, (DType, Vec<u64>)>> = BTreeMap::new();
        let mut order = Vec::new();
        let mut frozen = BTreeSet::new();
        let mut buffers: BTreeSet<String> = BTreeSet::new();
        for (m, f) in &self.model {
            let root = f.cursor();
            if let Some(b) = root.get("buffer_names").and_then(|c| c.items().ok()) {
                buffers.extend(
                    b.iter()
                        .filter_map(|c| c.value().as_str().map(str::to_string)),
                );
            }
            if let Some(fs) = root.get("frozen_param_shapes") {
                if let Ok(e) = fs.str_entries() {
                    frozen.extend(e.into_iter().map(|(k, _)| k.to_string()));
                }
            }
            let Some(module) = root.get("module") else {
                continue;
            };
            if module.value().is_none() {
                continue;
            }
            for (name, c) in module.str_entries()? {
                let Some(t) = c.value().as_tensor() else {
                    continue;
                };
                if trained.contains(name) {
                    continue;
                }
                // ZeRO-3 `module` holds empty placeholders for parameters (frozen ones included,
                // whose data are fragments: see collect_zero3_frozen); buffers are whole.
                if zero3 && (frozen.contains(name) || (t.numel() == 0 && !buffers.contains(name))) {
                    continue;
                }
                uc_schema::validate_name(name).map_err(schema_err(f.path()))?;
                let e = locals.entry(name.to_string()).or_insert_with(|| {
                    order.push(name.to_string());
                    BTreeMap::new()
                });
                e.insert(*m, (t.dtype, t.shape.clone()));
            }
        }
        for name in order {
            let l = &locals[&name];
            let holders: Vec<u32> = l.keys().copied().collect();
            let dtype = l.values().next().map_or(DType::F32, |v| v.0);
            let shapes: Vec<Vec<u64>> = l.values().map(|v| v.1.clone()).collect();
            let path = self.model[&holders[0]].path().to_path_buf();
            let (layout, shape, padded, policy) = self.extra_layout(&name, &holders, &shapes)?;
            // Frozen parameters and, before the first optimizer step (no optimizer files), every
            // module tensor are weights; otherwise what the optimizer does not hold is a buffer.
            // `buffer_names` (when saved) tells buffers apart; every other module tensor the
            // optimizer does not hold is a frozen parameter (or, before the first step, a weight).
            let is_buffer = if buffers.is_empty() && frozen.is_empty() {
                !self.optim.is_empty()
            } else {
                buffers.contains(&name)
            };
            let role = if is_buffer { Role::Buffer } else { Role::Param };
            let mut meta = TensorMeta::new(&name, dtype, shape, role).with_layout(layout);
            meta.padded_shape = padded;
            meta.frozen = !is_buffer && !self.optim.is_empty();
            meta.validate().map_err(schema_err(&path))?;
            self.extras.push(DsExtra {
                meta,
                holders,
                policy,
                fragments: false,
            });
        }
        if zero3 {
            self.collect_zero3_frozen()?;
        }
        Ok(())
    }

    /// How a tensor the model-parallel ranks `holders` each hold (local `shapes`) is merged: outer
    /// layout, logical shape, padded shape, replica policy.
    fn extra_layout(
        &self,
        name: &str,
        holders: &[u32],
        shapes: &[Vec<u64>],
    ) -> Result<ExtraLayout> {
        let path = self.model[&holders[0]].path();
        let shape0 = shapes.first().cloned().unwrap_or_default();
        Ok(if holders.len() == 1 {
            (Layout::single(), shape0, None, ReplicaPolicy::First)
        } else if self.unsplit_by_autotp(name) && shapes.windows(2).all(|w| w[0] == w[1]) {
            // AutoTP's metadata describes every split tensor; this one (a module alias) is whole
            (
                Layout::Replicated {
                    ranks: holders.len() as u32,
                },
                shape0,
                None,
                ReplicaPolicy::Verify,
            )
        } else if let (Some(uci), true) =
            (&self.uci, self.tp as usize == holders.len() && self.pp == 1)
        {
            let rule = uci.tp_rule(name, shapes).map_err(schema_err(path))?;
            let padded = (rule.logical_shape() != rule.shape).then(|| rule.shape.clone());
            let pol = if rule.average {
                ReplicaPolicy::Average
            } else {
                ReplicaPolicy::First
            };
            (rule.layout.clone(), rule.logical_shape(), padded, pol)
        } else if shapes.windows(2).all(|w| w[0] == w[1]) {
            (
                Layout::Replicated {
                    ranks: holders.len() as u32,
                },
                shape0,
                None,
                ReplicaPolicy::First,
            )
        } else {
            return Err(fmt_err(path, format!("`{name}` has different shapes {shapes:?} on ranks {holders:?} and no TP metadata says how to merge it")));
        })
    }

    /// True when the checkpoint has AutoTP's `affine_map` (which describes every split tensor) and
    /// neither the map nor any TP pattern names `name`: it is not split over the TP ranks.
    fn unsplit_by_autotp(&self, name: &str) -> bool {
        let Some(u) = self.uci.as_ref().filter(|u| u.affine_map.is_some()) else {
            return false;
        };
        !(self.has_affine_map(name)
            || u.is_row_parallel(name)
            || u.is_vocabulary(name)
            || u.is_tp_replicated(name)
            || u.is_averaged(name)
            || u.is_two_sub_params(name)
            || u.sub_params_for(name).is_some())
    }

    /// ZeRO-3 frozen parameters: `frozen_param_shapes` gives each one's (local) shape, and every dp
    /// rank's model states a flat fragment of it (`frozen_param_fragments`, `ceil(numel / dp)`
    /// elements, tail padding on the last), as `zero_to_fp32` reassembles them.
    fn collect_zero3_frozen(&mut self) -> Result<()> {
        let mut locals: BTreeMap<String, BTreeMap<u32, Vec<u64>>> = BTreeMap::new();
        let mut order = Vec::new();
        for (m, f) in &self.model {
            let Some(Ok(entries)) = f
                .cursor()
                .get("frozen_param_shapes")
                .map(|c| c.str_entries())
            else {
                continue;
            };
            for (name, c) in entries {
                uc_schema::validate_name(name).map_err(schema_err(f.path()))?;
                let shape = c.value().as_shape().ok_or_else(|| {
                    fmt_err(f.path(), format!("`{}`: expected a shape", c.trail()))
                })?;
                locals
                    .entry(name.to_string())
                    .or_insert_with(|| {
                        order.push(name.to_string());
                        BTreeMap::new()
                    })
                    .insert(*m, shape);
            }
        }
        let holders_all: BTreeSet<u32> = locals.values().flat_map(|l| l.keys().copied()).collect();
        let allow = Allowlist::deepspeed();
        for m in holders_all {
            for d in 1..self.dp {
                let p = self
                    .files
                    .zero3_model
                    .get(&(m, d))
                    .ok_or_else(|| StoreError::Io {
                        path: self
                            .files
                            .dir
                            .join(format!("zero_pp_rank_{d}_mp_rank_{m:02}_model_states.pt")),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "model states of this rank (frozen parameter fragments) are missing",
                        ),
                    })?;
                self.frags.insert((m, d), PtFile::open(p, &allow)?);
            }
        }
        for name in order {
            let l = &locals[&name];
            let holders: Vec<u32> = l.keys().copied().collect();
            let shapes: Vec<Vec<u64>> = l.values().cloned().collect();
            let f0 = &self.model[&holders[0]];
            let c = f0.cursor().key("frozen_param_fragments")?.key(&name)?;
            let dtype = Self::tensor_of(&c)?.dtype;
            let (outer, shape, padded, policy) = self.extra_layout(&name, &holders, &shapes)?;
            let inner = Layout::Zero3 {
                dp: self.dp,
                offset: 0,
            };
            let layout = Layout::Nested {
                outer: Box::new(outer),
                inner: vec![inner; holders.len()],
            };
            let mut meta = TensorMeta::new(&name, dtype, shape, Role::Param).with_layout(layout);
            meta.padded_shape = padded;
            meta.frozen = true;
            meta.validate().map_err(schema_err(f0.path()))?;
            self.extras.push(DsExtra {
                meta,
                holders,
                policy,
                fragments: true,
            });
        }
        Ok(())
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
        if let (Some(p), Some(moe)) = (self.param(&out.name), &self.moe) {
            if let Some((f, c)) = moe.whole(&out.name, &out.role, &self.model[&0])? {
                if p.scalars.iter().any(|s| s == out.role.key()) {
                    return Ok(TensorBytes::Owned(Self::scalar_at(f, &c, trace)?));
                }
                let t = Self::tensor_of(&c)?;
                let name = c.trail().to_string();
                return self.merge(
                    &p.meta,
                    p.policy,
                    |r| (r == 0).then(|| (f, name.clone(), t)),
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
                &self.files.dir,
                format!("no tensor `{}` in this checkpoint", out.name),
            )
        })?;
        let mut views = BTreeMap::new();
        if e.fragments {
            // rank r of the nested layout = holder r % n, dp rank r / n
            let n = e.holders.len() as u32;
            for r in 0..n * self.dp {
                let (m, d) = (e.holders[(r % n) as usize], r / n);
                let f = match d {
                    0 => &self.model[&m],
                    _ => self.frags.get(&(m, d)).ok_or_else(|| {
                        fmt_err(
                            &self.files.dir,
                            format!("no model states of rank {d}, mp {m}"),
                        )
                    })?,
                };
                let c = f
                    .cursor()
                    .key("frozen_param_fragments")?
                    .key(&e.meta.name)?;
                views.insert(r, (f, c.trail().to_string(), Self::tensor_of(&c)?));
            }
        }
        for (o, m) in e.holders.iter().enumerate().filter(|_| !e.fragments) {
            let f = &self.model[m];
            let c = f.cursor().key("module")?.key(&e.meta.name)?;
            let t = Self::tensor_of(&c)?;
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
            let (f, c) = self.partition(*m, *d, p.group, key)?;
            views.insert(r as u32, (f, c.trail().to_string(), Self::tensor_of(&c)?));
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
        let path = self.files.dir.clone();
        let merge_err = |e: uc_merge::MergeError| StoreError::BadTensor {
            path: path.clone(),
            tensor: meta.name.clone(),
            why: e.to_string(),
        };
        let src = pieces(meta).map_err(merge_err)?;
        let mut dst = Vec::new();
        uc_merge::layout_pieces(&meta.shape, &Layout::single(), &mut dst);
        let pl = plan(&meta.name, &meta.shape, &src, &dst, policy).map_err(merge_err)?;
        let mut bytes: BTreeMap<u32, &[u8]> = BTreeMap::new();
        let mut from = None;
        let reads = pl.source_ranges();
        for r in 0..meta.layout.ranks() {
            if let Some((f, name, t)) = view(r) {
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
                bytes.insert(r, f.tensor_bytes(&name, t)?);
                let base = f.tensor_file_range(&name, t)?.start;
                let es = t.dtype.size() as u64;
                for runs in reads.range((r, 0)..=(r, u32::MAX)).map(|(_, v)| v) {
                    for &(a, b) in runs {
                        f.will_need(base + a * es..base + b * es);
                        trace(f.path(), base + a * es..base + b * es);
                    }
                }
            }
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
        let (f, c) = self.partition(m, 0, p.group, Some(key))?;
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
        self.optim(0, 0).ok().map(|o| o.root().value())
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
        Some(self.optim(0, 0).ok()?.param_groups()?.value())
    }

    /// The module buffers the model states list (`buffer_names`, every rank's), `None` when no
    /// file lists them. Other non-trained `module` tensors may be aliases of a parameter.
    pub fn buffer_names(&self) -> Option<BTreeSet<String>> {
        let mut out: Option<BTreeSet<String>> = None;
        for f in self.model.values() {
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
        for f in self.model.values() {
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
        for (m, f) in &self.model {
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
        &self.files.dir
    }
}
