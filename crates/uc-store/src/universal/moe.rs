//! Native DeepSpeed MoE experts in DeepSpeed's universal layout, the way `load_universal` reads them:
//! each rank names its experts by EP-local index, so expert folder `…deepspeed_experts.<j>.…` holds
//! the local expert j of every EP rank stacked as `[ep, …]` (EP rank e's is global expert
//! `e·num_local + j`), tagged `is_expert_param` with `ep_num_experts` = ep; DeepSpeed keeps its rank's
//! row. Such a folder resumes at the same EP size only (checked with real DeepSpeed:
//! `scripts/interop/moe_resume.sh`).

use super::files::{write_universal_state, write_universal_step, UniversalKind};
use crate::deepspeed::{DsCheckpoint, ExpertName};
use crate::error::{Result, StoreError};
use crate::source::{input_unit, Source};
use crate::training_state::scalar_f32;
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::{Role, TensorMeta};
use uc_torch::pickle::PyValue;
use uc_torch::PtTensor;

/// The expert-parallel size of a native MoE checkpoint: `n` of its `ep_size_<n>` optimizer groups.
pub(crate) fn ep_size(ck: &DsCheckpoint) -> Option<u64> {
    let Some(PyValue::List(groups) | PyValue::Tuple(groups)) = ck.param_groups_rank0() else {
        return None;
    };
    groups.iter().find_map(|g| {
        let PyValue::Dict(d) = g else { return None };
        d.iter().find_map(|(k, v)| match (k.as_str(), v.as_str()) {
            (Some("name"), Some(n)) => n.strip_prefix("ep_size_")?.parse().ok(),
            _ => None,
        })
    })
}

/// True for an output tensor that is a native MoE expert (written by [`write_experts`]).
pub(crate) fn is_expert(meta: &TensorMeta) -> bool {
    ExpertName::parse(&meta.name).is_some()
}

/// Writes every expert state under its EP-local name, stacked over the EP ranks.
pub(crate) fn write_experts(
    ck: &DsCheckpoint,
    src: &Source,
    outs: &[TensorMeta],
    zero: &Path,
) -> Result<()> {
    let bad = |why: String| StoreError::Format {
        path: ck.dir().clone(),
        why,
    };
    let ep = ep_size(ck).ok_or_else(|| bad("native MoE without an `ep_size_<n>` group".into()))?;
    // (prefix, rest, role) → global expert index → output tensor
    let mut groups: BTreeMap<(&str, &str, String), BTreeMap<u64, &TensorMeta>> = BTreeMap::new();
    for m in outs {
        if let Some(e) = ExpertName::parse(&m.name) {
            let key = (e.prefix, e.rest, m.role.key().to_string());
            groups.entry(key).or_default().insert(e.index, m);
        }
    }
    for ((prefix, rest, _), experts) in &groups {
        let n = experts.len() as u64;
        if ep == 0 || !n.is_multiple_of(ep) || experts.keys().copied().ne(0..n) {
            return Err(bad(format!(
                "experts of `{prefix}…{rest}`: {n} global ids do not split over ep {ep}"
            )));
        }
        let local = n / ep;
        for j in 0..local {
            let name = format!("{prefix}{j}.{rest}");
            let members: Vec<&TensorMeta> = (0..ep).map(|e| experts[&(e * local + j)]).collect();
            let first = members[0];
            if first.role != Role::Step {
                if let Some(m) = members
                    .iter()
                    .find(|m| (m.dtype, &m.shape) != (first.dtype, &first.shape))
                {
                    return Err(bad(format!(
                        "`{}` and `{}` differ in dtype or shape",
                        m.name, first.name
                    )));
                }
            }
            input_unit(|| write_stacked(zero, src, &name, ep, &members))?;
        }
    }
    Ok(())
}

/// Writes the universal file of one local expert slot: its `ep` members (of one dtype and shape)
/// stacked along a new first dimension (a `step` is one scalar).
fn write_stacked(
    zero: &Path,
    src: &Source,
    name: &str,
    ep: u64,
    members: &[&TensorMeta],
) -> Result<()> {
    let first = members[0];
    if first.role == Role::Step {
        let b = src.bytes(first)?.into_vec();
        return write_universal_step(zero, name, scalar_f32(zero, first, &b)?).map(|_| ());
    }
    let mut stacked = Vec::new(); // grows with bytes really read, never with a claimed size
    for m in members {
        stacked.extend_from_slice(&src.bytes(m)?.into_vec());
    }
    let mut shape = vec![ep];
    shape.extend_from_slice(&first.shape);
    let state = match &first.role {
        Role::Fp32Master => "fp32",
        r => r.key(),
    };
    let t = PtTensor::from_bytes(first.dtype, shape, &stacked)
        .with_requires_grad(first.role == Role::Fp32Master);
    let kind = UniversalKind::Expert {
        num_experts: ep as i64,
    };
    write_universal_state(zero, name, state, kind, t).map(|_| ())
}
