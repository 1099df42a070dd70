//! DeepSpeed metadata: `universal_checkpoint_info` plus every TP rank's local shapes → TP layouts.
//!
//! ```json
//! { "universal_checkpoint_info": { … },
//!   "param_shapes": [ {"name": [rows, cols], …}, … ],   // one entry per TP rank (or a list of groups)
//!   "dtype": "BF16", "topology": {"dp": 2, "zero_stage": 2} }
//! ```
//! Also read: a test-fixture `manifest.json` (`universal_checkpoint_info_in_files`,
//! `param_shapes_per_tp_rank_from_files`, `param_order`, `bf16`, `dp_size`, `pp_size`, `zero_stage`).
//! ZeRO partitions are not part of this metadata, so the source shows the TP layout only.

use crate::cut::Cut;
use crate::doc::{layer_of, Doc, Format, Item};
use crate::error::{Result, ViewError};
use crate::topo::Topo;
use serde_json::{Map, Value as J};
use uc_schema::deepspeed::UniversalCheckpointInfo;
use uc_schema::{DType, Role};

type Obj = Map<String, J>;
/// One TP rank's `(name, local shape)` list.
type RankShapes = Vec<(String, Vec<u64>)>;

/// True when the object carries a `universal_checkpoint_info`.
pub fn is_deepspeed(o: &Obj) -> bool {
    o.contains_key("universal_checkpoint_info")
        || o.contains_key("universal_checkpoint_info_in_files")
}

fn format_err(what: &str, error: impl ToString) -> ViewError {
    ViewError::Format {
        what: what.into(),
        error: error.to_string(),
    }
}

/// One rank's shapes: an object `name → shape`, or a list of such objects (parameter groups).
fn rank_shapes(j: &J, what: &str, out: &mut RankShapes) -> Result<()> {
    match j {
        J::Object(m) => {
            for (name, s) in m {
                let shape: Vec<u64> = serde_json::from_value(s.clone())
                    .map_err(|e| format_err(what, format!("`{name}`: {e}")))?;
                out.push((name.clone(), shape));
            }
            Ok(())
        }
        J::Array(groups) => groups.iter().try_for_each(|g| rank_shapes(g, what, out)),
        _ => Err(format_err(
            what,
            "expected an object of shapes or a list of them",
        )),
    }
}

/// Local shapes per TP rank, in TP-rank order.
fn local_shapes(o: &Obj) -> Result<Vec<RankShapes>> {
    let per_rank: Vec<&J> = if let Some(j) = o.get("param_shapes") {
        match j {
            J::Array(a) => a.iter().collect(),
            _ => {
                return Err(format_err(
                    "param_shapes",
                    "expected a list with one entry per TP rank",
                ))
            }
        }
    } else if let Some(J::Object(m)) = o.get("param_shapes_per_tp_rank_from_files") {
        // Keys like `mp_rank_00` sort in rank order.
        m.values().collect()
    } else {
        return Err(ViewError::Format {
            what: "deepspeed".into(),
            error: "`param_shapes` (each TP rank's local shapes) is missing".into(),
        });
    };
    if per_rank.is_empty() {
        return Err(format_err("param_shapes", "no TP ranks"));
    }
    per_rank
        .iter()
        .enumerate()
        .map(|(r, j)| {
            let mut v = Vec::new();
            rank_shapes(j, &format!("param_shapes[{r}]"), &mut v)?;
            Ok(v)
        })
        .collect()
}

/// Reads an optional non-negative integer field.
fn int_field(o: &Obj, key: &str) -> Result<Option<u64>> {
    match o.get(key) {
        None | Some(J::Null) => Ok(None),
        Some(j) => j
            .as_u64()
            .map(Some)
            .ok_or_else(|| format_err(key, format!("expected a non-negative integer, found {j}"))),
    }
}

/// The element type: `dtype` (any safetensors or torch name), else `bf16: true`, else F32.
fn dtype(o: &Obj) -> Result<DType> {
    match o.get("dtype") {
        Some(J::String(s)) => {
            DType::parse(s).ok_or_else(|| format_err("dtype", format!("unknown dtype `{s}`")))
        }
        Some(j) => Err(format_err("dtype", format!("expected a string, found {j}"))),
        None if o.get("bf16") == Some(&J::Bool(true)) => Ok(DType::BF16),
        None => Ok(DType::F32),
    }
}

/// The source topology: TP from the number of shape lists; the rest from `topology` or the fixture keys.
fn topology(o: &Obj, tp: u32) -> Result<Topo> {
    let mut t = match o.get("topology") {
        Some(j) => {
            serde_json::from_value::<Topo>(j.clone()).map_err(|e| format_err("topology", e))?
        }
        None => {
            let mut t = Topo::default();
            let small = |k: &str| -> Result<Option<u32>> {
                int_field(o, k)?
                    .map(|v| u32::try_from(v).map_err(|_| format_err(k, "too large")))
                    .transpose()
            };
            t.dp = small("dp_size")?.unwrap_or(1);
            t.pp = small("pp_size")?.unwrap_or(1);
            t.zero_stage = small("zero_stage")?.map_or(0, |z| z.min(255) as u8);
            t
        }
    };
    t.tp = tp;
    t.validate()?;
    Ok(t)
}

/// Parses the DeepSpeed document.
pub fn parse(o: &Obj) -> Result<Doc> {
    let uci_json = o
        .get("universal_checkpoint_info")
        .or_else(|| o.get("universal_checkpoint_info_in_files"))
        .ok_or(ViewError::Unknown)?;
    let uci = UniversalCheckpointInfo::parse(uci_json)?;
    let ranks = local_shapes(o)?;
    let tp =
        u32::try_from(ranks.len()).map_err(|_| format_err("param_shapes", "too many ranks"))?;
    let source = topology(o, tp)?;
    let dtype = dtype(o)?;
    let mut order: Vec<String> = match o.get("param_order") {
        Some(j) => serde_json::from_value(j.clone()).map_err(|e| format_err("param_order", e))?,
        None => ranks[0].iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut seen = std::collections::BTreeSet::new();
    order.retain(|n| seen.insert(n.clone()));
    let lookup = |r: &[(String, Vec<u64>)], name: &str| {
        r.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone())
    };
    let items = order
        .iter()
        .map(|name| {
            let shapes: Result<Vec<Vec<u64>>> = ranks
                .iter()
                .enumerate()
                .map(|(r, rs)| {
                    lookup(rs, name).ok_or_else(|| ViewError::Tensor {
                        tensor: name.clone(),
                        why: format!("no local shape on TP rank {r}"),
                    })
                })
                .collect();
            let rule = shapes.and_then(|s| Ok(uci.tp_rule(name, &s)?));
            let meta = rule
                .as_ref()
                .map(|r| r.tensor_meta(name, dtype, Role::Param));
            let shape = match &meta {
                Ok(m) => m.shape.clone(),
                Err(_) => lookup(&ranks[0], name).unwrap_or_default(),
            };
            Item {
                name: name.clone(),
                role: Role::Param,
                dtype,
                cut: meta
                    .as_ref()
                    .map_or(Cut::Replicated, |m| Cut::of(&m.layout)),
                pad_multiple: meta
                    .as_ref()
                    .ok()
                    .and_then(|m| m.padded_shape.as_ref())
                    .map(|_| 1),
                shape,
                frozen: false,
                layer: layer_of(name),
                source: meta.map_err(Clone::clone),
                dcp: None,
            }
        })
        .collect();
    let mut notes = vec!["DeepSpeed metadata: the source shows TP ranks; ZeRO partitions live in the optimizer files, not in universal_checkpoint_info.".to_string()];
    if source.dp > 1 || source.zero_stage > 0 {
        notes.push(format!("source run: {}", source.label()));
    }
    Ok(Doc {
        format: Format::DeepSpeed,
        source,
        items,
        notes,
    })
}
