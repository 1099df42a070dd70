//! Every parameter's and module tensor's layout, derived from the opened files: ZeRO partitions
//! inside each model-parallel rank, TP rules, tied pipeline weights, AutoEP and native MoE experts,
//! frozen parameters and buffers.

use super::checkpoint::{DsExtra, DsParam};
use super::inputs::{fmt_err, schema_err, Inputs};
use super::native_moe::{group_ep, NativeMoe};
use crate::error::{Result, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use uc_merge::{Piece, ReplicaPolicy};
use uc_schema::ExpertStorage;
use uc_schema::{DType, Layout, Role, TensorMeta, Value};
use uc_torch::pickle::{Allowlist, Cursor, PyValue};
use uc_torch::plain::{to_json, to_value};
use uc_torch::PtFile;

/// ZeRO-3 model states of dp ranks > 0 by (model-parallel rank, dp rank).
pub(super) type Frags = BTreeMap<(u32, u32), PtFile>;

/// How a module tensor is merged: outer layout, logical shape, padded shape, replica policy.
type ExtraLayout = (Layout, Vec<u64>, Option<Vec<u64>>, ReplicaPolicy);

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
                    let shape = c
                        .value()
                        .as_shape()
                        .filter(|s| s.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).is_some())
                        .ok_or_else(|| {
                            fmt_err(
                                f.path(),
                                format!(
                                    "`{}`: expected a shape of fewer than 2^64 elements",
                                    c.trail()
                                ),
                            )
                        })?;
                    Ok((name.to_string(), shape))
                })
                .collect()
        })
        .collect()
}

impl Inputs {
    /// Training state: steps, samples, param-group hyper-parameters, ds_config, …
    pub(super) fn collect_state(&self) -> BTreeMap<String, Value> {
        let mut state = BTreeMap::new();
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
                state.insert(key.to_string(), to_value(c.value()));
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
            state.insert("param_groups".into(), Value::from_json(&v));
        }
        state
    }

    /// How group `g` of rank-file (m, 0) is partitioned: (partition count, is an expert group).
    fn group_partitioning(&self, m: u32, g: usize) -> Result<(u32, bool)> {
        self.optim(m, 0)?.partitioning(g, self.dp)
    }

    /// Every trained parameter: its layout over (model-parallel rank, optimizer file) and states.
    pub(super) fn collect_params(&mut self) -> Result<Vec<DsParam>> {
        let mut params = Vec::new();
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
                params = moe.unsharded_params(&self.model[&0])?;
            }
            return Ok(params); // else saved before the first optimizer step: weights only (extras)
        }
        // Inner (ZeRO) layout of every (m, group, name).
        let mut inner: BTreeMap<(u32, String), Layout> = BTreeMap::new();
        let mut expert_dp: BTreeMap<String, u32> = BTreeMap::new();
        for (m, groups) in &groups_of {
            for (g, params) in groups.iter().enumerate() {
                let (f0, c0) = self.partition(*m, 0, g, None)?;
                let part = Self::tensor_of(&c0)?.numel();
                // shapes were checked to have a numel (param_shapes); their sum must fit too
                let group_numel = params
                    .iter()
                    .try_fold(0u64, |a, (_, s)| a.checked_add(s.iter().product::<u64>()))
                    .ok_or_else(|| {
                        fmt_err(
                            f0.path(),
                            format!("param group {g}: more than 2^64 elements"),
                        )
                    })?;
                let (gdp, moe) = self.group_partitioning(*m, g)?;
                if moe {
                    expert_dp.extend(params.iter().map(|(n, _)| (n.clone(), gdp)));
                }
                let dp = gdp as u64;
                if self.stage < 3 && group_numel > part.saturating_mul(dp) {
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
                            alignment: part.saturating_mul(dp),
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
                params.extend(ps);
                continue;
            }
            if let Some(&edp) = expert_dp.get(&name) {
                inner_layout(&inner, 0, &name, &path)?;
                let p = self.expert_param(&path, &name, *group, locals, edp, &inner)?;
                params.push(p);
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
            params.push(DsParam {
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
        Ok(params)
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
        if ep == 0 {
            return Err(StoreError::Schema {
                path: path.to_path_buf(),
                source: uc_schema::SchemaError::ZeroAxis {
                    axis: format!("ep of AutoEP layer `{}`", layer.expert_key_prefix),
                },
            });
        }
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

    /// Module tensors no optimizer trains (frozen parameters, buffers), and the ZeRO-3 model
    /// states of dp ranks > 0 that frozen parameters' fragments live in.
    pub(super) fn collect_extras(&self, params: &[DsParam]) -> Result<(Vec<DsExtra>, Frags)> {
        let mut extras = Vec::new();
        let zero3 = self.stage == 3;
        let trained: BTreeSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
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
            extras.push(DsExtra {
                meta,
                holders,
                policy,
                fragments: false,
            });
        }
        let mut frags = BTreeMap::new();
        if zero3 {
            let (more, f) = self.collect_zero3_frozen()?;
            extras.extend(more);
            frags = f;
        }
        Ok((extras, frags))
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
        !(self.affine.matches(name)
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
    fn collect_zero3_frozen(&self) -> Result<(Vec<DsExtra>, Frags)> {
        let (mut extras, mut frags) = (Vec::new(), BTreeMap::new());
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
                frags.insert((m, d), PtFile::open(p, &allow)?);
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
            extras.push(DsExtra {
                meta,
                holders,
                policy,
                fragments: true,
            });
        }
        Ok((extras, frags))
    }
}
