//! Native DeepSpeed MoE (`deepspeed.moe.layer.MoE`): every EP rank names its experts by local index
//! (`…deepspeed_experts.<j>.…`) and only the per-expert files carry global ids, so each expert is
//! read under its global name `…deepspeed_experts.<e·num_local + j>.…` (EP rank e).
//!
//! With ZeRO 1/2 the experts' fp32 masters and moments are in the expert param groups (named
//! `ep_size_<ep>`) of the ZeRO files, partitioned over each EP rank's expert-data-parallel ranks.
//! Without ZeRO the fp32 weights are `module` (dense) and the per-expert files (experts), the moments
//! in `expp_rank_<e>` files keyed by torch's integer param index, mapped back to names here.

use super::files::DsFiles;
use crate::error::{Result, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use uc_merge::ReplicaPolicy;
use uc_schema::{DType, Layout, Role, TensorMeta};
use uc_torch::pickle::{Allowlist, Cursor, PyValue};
use uc_torch::PtFile;

use super::checkpoint::DsParam;

/// The module name segment before a native MoE expert's index.
const EXPERTS: &str = "deepspeed_experts.";

/// An expert parameter name split around its expert index: `<prefix><index>.<rest>`, where
/// `prefix` ends with `deepspeed_experts.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExpertName<'a> {
    pub prefix: &'a str,
    pub index: u64,
    pub rest: &'a str,
}

impl<'a> ExpertName<'a> {
    /// Splits `name`; `None` when it is no native MoE expert parameter.
    pub fn parse(name: &'a str) -> Option<ExpertName<'a>> {
        let at = if name.starts_with(EXPERTS) {
            0
        } else {
            name.find(&format!(".{EXPERTS}"))? + 1
        };
        let (prefix, tail) = name.split_at(at + EXPERTS.len());
        let (digits, rest) = tail.split_once('.')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
            return None;
        }
        Some(ExpertName {
            prefix,
            index: digits.parse().ok()?,
            rest,
        })
    }

    /// The same parameter of expert `index`.
    pub fn with_index(&self, index: u64) -> String {
        format!("{}{index}.{}", self.prefix, self.rest)
    }
}

/// The expert-parallel size an expert param group's name (`ep_size_<n>`) gives, `n ≥ 1`.
pub(crate) fn group_ep(group: &Cursor) -> Result<u32> {
    let bad = || StoreError::BadValue {
        path: group.path().to_path_buf(),
        key: format!("{}.name", group.trail()),
        value: match group.get("name").map(|c| c.value().clone()) {
            Some(PyValue::Str(s)) => format!("{s:?}"),
            Some(v) => format!("a {}", v.type_name()),
            None => "missing".into(),
        },
        expected: "an expert group name `ep_size_<n>` with n ≥ 1",
    };
    let name = group.get("name").ok_or_else(bad)?;
    let n = name
        .value()
        .as_str()
        .and_then(|s| s.strip_prefix("ep_size_"));
    n.filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u32>().ok())
        .filter(|&n| n >= 1)
        .ok_or_else(bad)
}

/// One MoE layer (numbered as DeepSpeed numbers the per-expert files).
#[derive(Debug)]
struct MoeLayer {
    /// The expert names' prefix, up to and including `deepspeed_experts.`.
    prefix: String,
    num_experts: u64,
}

/// Where a no-ZeRO parameter's tensors lie.
#[derive(Debug, Clone, Copy)]
enum Weights {
    /// `module` of the model states (dense parameters).
    Module,
    /// The per-expert file of (MoE layer, global expert).
    Expert(u32, u32),
}

/// A parameter kept whole (no ZeRO): its weights, and its optimizer state in `expp_rank_<ep_rank>`
/// under torch's param `index`.
#[derive(Debug, Clone)]
struct Whole {
    weights: Weights,
    /// (EP rank, param index) of each copy of its optimizer state: one for an expert, one per EP
    /// rank for a dense parameter (every EP rank's file holds the same dense moments; verified).
    states: Vec<(u32, i64)>,
}

/// The native MoE files of a checkpoint: MoE layers, per-expert files and `expp_rank_*` files.
#[derive(Debug)]
pub(crate) struct NativeMoe {
    layers: Vec<MoeLayer>,
    /// Per-expert files by (MoE layer, global expert).
    experts: BTreeMap<(u32, u32), PtFile>,
    /// No-ZeRO optimizer files by EP rank.
    expp: BTreeMap<u32, PtFile>,
    /// No-ZeRO parameters by (global) name.
    whole: HashMap<String, Whole>,
}

fn fmt_err(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::Format {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn not_found(path: std::path::PathBuf, why: &str) -> StoreError {
    StoreError::Io {
        path,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, why.to_string()),
    }
}

impl NativeMoe {
    /// Opens and checks every per-expert file (one per MoE layer and global expert, of model-parallel
    /// rank 0, holding exactly that expert's tensors) and every `expp_rank_*` file; `model` is the
    /// model states (`num_experts`: one count per MoE layer).
    pub fn open(files: &DsFiles, model: &PtFile) -> Result<NativeMoe> {
        let counts = model.cursor().get("num_experts").ok_or_else(|| {
            fmt_err(
                model.path(),
                "per-expert files without AutoEP metadata (`ds_autoep_layers`) and without native MoE \
                 `num_experts` in the model states: cannot tell which experts each file holds",
            )
        })?;
        let counts = counts
            .items()?
            .iter()
            .map(|c| {
                c.value()
                    .as_int()
                    .and_then(|n| u64::try_from(n).ok())
                    .filter(|&n| n >= 1 && n <= u64::from(u32::MAX))
                    .ok_or_else(|| StoreError::BadValue {
                        path: c.path().to_path_buf(),
                        key: c.trail().to_string(),
                        value: format!("{:?}", c.value()),
                        expected: "an expert count ≥ 1",
                    })
            })
            .collect::<Result<Vec<u64>>>()?;
        for (&(l, e, m), p) in &files.experts {
            let known = counts.get(l as usize).is_some_and(|&n| u64::from(e) < n);
            if m != 0 || !known {
                return Err(fmt_err(
                    p,
                    format!(
                        "no such expert file: the model states list {} MoE layers with {counts:?} \
                         experts, of model-parallel rank 0",
                        counts.len()
                    ),
                ));
            }
        }
        let allow = Allowlist::deepspeed();
        let mut experts = BTreeMap::new();
        let mut layers = Vec::new();
        for (l, &n) in counts.iter().enumerate() {
            let l = l as u32;
            let mut prefix: Option<String> = None;
            for e in 0..n as u32 {
                let Some(p) = files.experts.get(&(l, e, 0)) else {
                    return Err(not_found(
                        files
                            .dir
                            .join(format!("layer_{l}_expert_{e}_mp_rank_00_model_states.pt")),
                        "expert file missing",
                    ));
                };
                let f = PtFile::open(p, &allow)?;
                for (key, _) in f.cursor().str_entries()? {
                    let parsed = ExpertName::parse(key).ok_or_else(|| StoreError::BadTensor {
                        path: p.clone(),
                        tensor: key.to_string(),
                        why: "per-expert file without AutoEP metadata (`ds_autoep_layers`), and not a native \
                              MoE expert parameter (`…deepspeed_experts.<id>.…`)"
                            .into(),
                    })?;
                    if parsed.index != u64::from(e) {
                        return Err(StoreError::WrongExpert {
                            path: p.clone(),
                            tensor: key.to_string(),
                            expected: u64::from(e),
                            found: parsed.index,
                        });
                    }
                    match &prefix {
                        Some(q) if q != parsed.prefix => {
                            return Err(StoreError::BadTensor {
                                path: p.clone(),
                                tensor: key.to_string(),
                                why: format!("MoE layer {l}'s other experts are under `{q}`"),
                            })
                        }
                        Some(_) => {}
                        None => prefix = Some(parsed.prefix.to_string()),
                    }
                }
                experts.insert((l, e), f);
            }
            let prefix = prefix.ok_or_else(|| {
                fmt_err(
                    &files.dir,
                    format!("MoE layer {l}: its expert files are empty"),
                )
            })?;
            if let Some(other) = layers.iter().position(|x: &MoeLayer| x.prefix == prefix) {
                return Err(fmt_err(
                    &files.dir,
                    format!("MoE layers {other} and {l} both hold experts `{prefix}…`"),
                ));
            }
            layers.push(MoeLayer {
                prefix,
                num_experts: n,
            });
        }
        let mut expp = BTreeMap::new();
        for (&(m, e), p) in &files.expp {
            if m != 0 {
                return Err(fmt_err(
                    p,
                    "expert optimizer file of model-parallel rank > 0: native MoE is read at tp 1 only",
                ));
            }
            expp.insert(e, PtFile::open(p, &allow)?);
        }
        Ok(NativeMoe {
            layers,
            experts,
            expp,
            whole: HashMap::new(),
        })
    }

    /// True when the checkpoint has no ZeRO: the optimizer state is in `expp_rank_*` files.
    pub fn unsharded(&self) -> bool {
        !self.expp.is_empty()
    }

    /// The MoE layer whose experts are named `prefix…`, and its local expert count at `ep`.
    fn layer(&self, path: &Path, name: &ExpertName, ep: u32) -> Result<(u32, u64)> {
        let l = self
            .layers
            .iter()
            .position(|l| l.prefix == name.prefix)
            .ok_or_else(|| StoreError::BadTensor {
                path: path.to_path_buf(),
                tensor: name.with_index(name.index),
                why: "no per-expert file holds experts of this MoE layer".into(),
            })?;
        let n = self.layers[l].num_experts;
        if !n.is_multiple_of(u64::from(ep)) || name.index >= n / u64::from(ep) {
            return Err(StoreError::BadTensor {
                path: path.to_path_buf(),
                tensor: name.with_index(name.index),
                why: format!("local expert {} of {n} experts over ep {ep}", name.index),
            });
        }
        Ok((l as u32, n / u64::from(ep)))
    }

    /// Checks that the per-expert file of (`layer`, `expert`) holds `global` with `shape`.
    fn check_expert_file(
        &self,
        layer: u32,
        expert: u32,
        global: &str,
        shape: &[u64],
    ) -> Result<()> {
        let f = &self.experts[&(layer, expert)];
        let t = f
            .cursor()
            .get(global)
            .and_then(|c| c.value().as_tensor().cloned());
        match t {
            Some(t) if t.shape == shape => Ok(()),
            Some(t) => Err(StoreError::BadTensor {
                path: f.path().to_path_buf(),
                tensor: global.to_string(),
                why: format!("shape {:?}, but the optimizer holds {shape:?}", t.shape),
            }),
            None => Err(StoreError::BadTensor {
                path: f.path().to_path_buf(),
                tensor: global.to_string(),
                why: "missing from its expert file".into(),
            }),
        }
    }

    /// The ZeRO-1/2 parameters of local expert parameter `local` (group `group`, shape `shape`, ZeRO
    /// layout `inner` over its `edp` expert-data-parallel ranks): one per EP rank e, named by global
    /// expert, read from optimizer files e, e + ep, e + 2·ep, … (`dp` files in all).
    #[allow(clippy::too_many_arguments)]
    pub fn zero_params(
        &self,
        path: &Path,
        local: &str,
        group: usize,
        shape: &[u64],
        (ep, edp, dp): (u32, u32, u32),
        inner: &Layout,
        (states, scalars): (&[String], &[String]),
    ) -> Result<Vec<DsParam>> {
        let name = ExpertName::parse(local).ok_or_else(|| StoreError::BadTensor {
            path: path.to_path_buf(),
            tensor: local.to_string(),
            why: "in an expert (moe) param group but not named `…deepspeed_experts.<id>.…`".into(),
        })?;
        if ep.checked_mul(edp) != Some(dp) {
            return Err(StoreError::BadTensor {
                path: path.to_path_buf(),
                tensor: local.to_string(),
                why: format!("ep {ep} × expert-data-parallel {edp} ≠ {dp} optimizer files"),
            });
        }
        let (l, num_local) = self.layer(path, &name, ep)?;
        let mut out = Vec::with_capacity(ep as usize);
        for e in 0..ep {
            let expert = u64::from(e) * num_local + name.index;
            let global = name.with_index(expert);
            self.check_expert_file(l, expert as u32, &global, shape)?;
            let layout = Layout::Nested {
                outer: Box::new(Layout::single()),
                inner: vec![inner.clone()],
            };
            let meta = TensorMeta::new(&global, DType::F32, shape.to_vec(), Role::Fp32Master)
                .with_layout(layout);
            meta.validate().map_err(|source| StoreError::Schema {
                path: path.to_path_buf(),
                source,
            })?;
            out.push(DsParam {
                name: global,
                group,
                holders: vec![0],
                meta,
                policy: ReplicaPolicy::First,
                states: states.to_vec(),
                scalars: scalars.to_vec(),
                sources: (0..edp).map(|k| (0, e + k * ep)).collect(),
            });
        }
        Ok(out)
    }

    /// Without ZeRO: every parameter whole, dense ones from `module` of `model`, experts from their
    /// per-expert files, optimizer state from `expp_rank_<e>` by torch's param index. The index →
    /// name map is the client's grouping rule: the non-expert groups take the dense parameters in
    /// `module` order, the expert groups EP rank e's experts (MoE layer, local expert, the expert's
    /// own order); two groups of a kind split them into ndim ≥ 2 and ndim < 2, as DeepSpeed's MoE
    /// examples group weight decay. Counts and every moment's shape must agree.
    pub fn unsharded_params(&mut self, model: &PtFile) -> Result<Vec<DsParam>> {
        let module = model.cursor().key("module")?;
        let mut dense = Vec::new();
        for (name, c) in module.str_entries()? {
            if let Some(t) = c.value().as_tensor() {
                uc_schema::validate_name(name).map_err(|source| StoreError::Schema {
                    path: model.path().to_path_buf(),
                    source,
                })?;
                dense.push((name.to_string(), t.shape.clone(), Weights::Module));
            }
        }
        let ep = self.expp.len() as u32;
        if self.expp.keys().copied().ne(0..ep) {
            let missing = (0..ep).find(|e| !self.expp.contains_key(e)).unwrap_or(ep);
            let dir = model.path().parent().unwrap_or(Path::new("."));
            return Err(not_found(
                dir.join(format!("expp_rank_{missing}_mp_rank_00_optim_states.pt")),
                "expert optimizer states of this EP rank are missing",
            ));
        }
        let mut out = Vec::new();
        for e in 0..ep {
            let f = &self.expp[&e];
            let mut experts = Vec::new();
            for (l, layer) in self.layers.iter().enumerate() {
                if !layer.num_experts.is_multiple_of(u64::from(ep)) {
                    return Err(fmt_err(
                        f.path(),
                        format!(
                            "{} experts of `{}…` do not divide over ep {ep}",
                            layer.num_experts, layer.prefix
                        ),
                    ));
                }
                let local = layer.num_experts / u64::from(ep);
                for j in 0..local {
                    let g = (u64::from(e) * local + j) as u32;
                    let ef = &self.experts[&(l as u32, g)];
                    for (name, c) in ef.cursor().str_entries()? {
                        let t = c.value().as_tensor().ok_or_else(|| StoreError::BadTensor {
                            path: ef.path().to_path_buf(),
                            tensor: name.to_string(),
                            why: format!("expected a tensor, found {}", c.value().type_name()),
                        })?;
                        uc_schema::validate_name(name).map_err(|source| StoreError::Schema {
                            path: ef.path().to_path_buf(),
                            source,
                        })?;
                        experts.push((
                            name.to_string(),
                            t.shape.clone(),
                            Weights::Expert(l as u32, g),
                        ));
                    }
                }
            }
            let opt = f.cursor().key("optimizer")?;
            let groups = opt.key("param_groups")?.items()?;
            let (mut plain, mut moe) = (Vec::new(), Vec::new());
            for (g, c) in groups.iter().enumerate() {
                let is_moe = c
                    .get("moe")
                    .is_some_and(|m| m.value().as_bool() == Some(true));
                let ids = c
                    .key("params")?
                    .items()?
                    .iter()
                    .map(|i| i.as_int().map_err(StoreError::from))
                    .collect::<Result<Vec<i64>>>()?;
                if is_moe {
                    group_ep(c).and_then(|n| {
                        (n == ep).then_some(()).ok_or_else(|| StoreError::BadValue {
                            path: f.path().to_path_buf(),
                            key: format!("{}.name", c.trail()),
                            value: format!("ep_size_{n}"),
                            expected: "the number of expp_rank_* files",
                        })
                    })?;
                    moe.push((g, ids));
                } else {
                    plain.push((g, ids));
                }
            }
            let mut named = Vec::new();
            for (kind, params, groups) in [("dense", &dense, &plain), ("expert", &experts, &moe)] {
                let split = split_groups(params, groups.len()).ok_or_else(|| {
                    fmt_err(
                        f.path(),
                        format!(
                            "{} {kind} param groups: cannot tell which parameter each index is \
                             (one group, or two split by ndim ≥ 2 / < 2, are understood)",
                            groups.len()
                        ),
                    )
                })?;
                for ((g, ids), members) in groups.iter().zip(split) {
                    if ids.len() != members.len() {
                        return Err(fmt_err(
                            f.path(),
                            format!(
                                "param group {g} lists {} params but EP rank {e} has {} {kind} \
                                 params for it",
                                ids.len(),
                                members.len()
                            ),
                        ));
                    }
                    named.extend(ids.iter().zip(members).map(|(&i, m)| (*g, i, m)));
                }
            }
            let state = opt.key("state")?;
            for (g, index, (name, shape, weights)) in named {
                let st = state.int_key(index)?;
                let (mut states, mut scalars) = (Vec::new(), Vec::new());
                for (k, c) in st.str_entries()? {
                    match c.value() {
                        PyValue::Tensor(t) if !t.shape.is_empty() => {
                            if t.shape != *shape {
                                return Err(StoreError::BadTensor {
                                    path: f.path().to_path_buf(),
                                    tensor: name.clone(),
                                    why: format!(
                                        "`{}` has shape {:?}, the parameter {shape:?}: the param \
                                         index map does not fit",
                                        c.trail(),
                                        t.shape
                                    ),
                                });
                            }
                            states.push(k.to_string());
                        }
                        PyValue::Tensor(_) | PyValue::Int(_) | PyValue::Float(_) => {
                            scalars.push(k.to_string())
                        }
                        _ => {}
                    }
                }
                let meta = TensorMeta::new(name, DType::F32, shape.clone(), Role::Fp32Master)
                    .with_layout(Layout::single());
                meta.validate().map_err(|source| StoreError::Schema {
                    path: f.path().to_path_buf(),
                    source,
                })?;
                if matches!(weights, Weights::Module) && e > 0 {
                    // a dense parameter: another copy of EP rank 0's moments
                    if let Some(w) = self.whole.get_mut(name) {
                        w.states.push((e, index));
                    }
                    continue;
                }
                self.whole.insert(
                    name.clone(),
                    Whole {
                        weights: *weights,
                        states: vec![(e, index)],
                    },
                );
                out.push(DsParam {
                    name: name.clone(),
                    group: g,
                    holders: vec![0],
                    meta,
                    policy: ReplicaPolicy::First,
                    states,
                    scalars,
                    sources: Vec::new(),
                });
            }
        }
        Ok(out)
    }

    /// Where a no-ZeRO parameter's tensor of `role` lies: its file and the cursor at it, one per
    /// copy (a dense parameter's moments are in every EP rank's file); `None` for parameters of
    /// ZeRO checkpoints. `model` is the model states.
    pub fn whole<'a>(
        &'a self,
        name: &str,
        role: &Role,
        model: &'a PtFile,
    ) -> Result<Option<Vec<(&'a PtFile, Cursor<'a>)>>> {
        let Some(w) = self.whole.get(name) else {
            return Ok(None);
        };
        Ok(Some(match role {
            Role::Fp32Master => vec![match w.weights {
                Weights::Module => (model, model.cursor().key("module")?.key(name)?),
                Weights::Expert(l, e) => {
                    let f = &self.experts[&(l, e)];
                    (f, f.cursor().key(name)?)
                }
            }],
            r => w
                .states
                .iter()
                .map(|&(e, index)| {
                    let f = &self.expp[&e];
                    let c = f
                        .cursor()
                        .key("optimizer")?
                        .key("state")?
                        .int_key(index)?
                        .key(r.key())?;
                    Ok((f, c))
                })
                .collect::<Result<_>>()?,
        }))
    }

    /// EP rank 0's optimizer `param_groups` (no ZeRO).
    pub fn param_groups(&self) -> Option<Cursor<'_>> {
        let f = self.expp.get(&0)?;
        f.cursor().get("optimizer")?.get("param_groups")
    }
}

/// A parameter of a no-ZeRO checkpoint: name, shape, where its weights are.
type Named = (String, Vec<u64>, Weights);

/// `params` split over `groups` param groups: one group takes all, two take ndim ≥ 2 then ndim < 2.
fn split_groups(params: &[Named], groups: usize) -> Option<Vec<Vec<&Named>>> {
    match groups {
        0 if params.is_empty() => Some(Vec::new()),
        1 => Some(vec![params.iter().collect()]),
        2 => Some(vec![
            params.iter().filter(|p| p.1.len() >= 2).collect(),
            params.iter().filter(|p| p.1.len() < 2).collect(),
        ]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::ExpertName;

    #[test]
    fn expert_names() {
        let n =
            ExpertName::parse("blocks.0.mlp.deepspeed_moe.experts.deepspeed_experts.1.fc1.weight")
                .unwrap();
        assert_eq!(
            n.prefix,
            "blocks.0.mlp.deepspeed_moe.experts.deepspeed_experts."
        );
        assert_eq!((n.index, n.rest), (1, "fc1.weight"));
        assert_eq!(
            n.with_index(3),
            "blocks.0.mlp.deepspeed_moe.experts.deepspeed_experts.3.fc1.weight"
        );
        assert!(ExpertName::parse("deepspeed_experts.0.w").is_some());
        for bad in [
            "blocks.0.mlp.fc1.weight",
            "x.deepspeed_experts.a.w",
            "x.deepspeed_experts.1",
            "x.deepspeed_experts..w",
            "xdeepspeed_experts.1.w",
        ] {
            assert_eq!(ExpertName::parse(bad), None, "{bad}");
        }
    }
}
