//! The viewer's own model + topology description; its source layouts come from [`crate::relayout`].
//!
//! ```json
//! { "model": "tiny-moe", "dtype": "BF16",
//!   "topology": {"tp": 2, "dp": 2, "ep": 1, "pp": 1, "zero_stage": 1},
//!   "tensors": [
//!     {"name": "embed.weight", "shape": [1000, 64], "kind": "vocab", "pad_to_multiple_of": 64},
//!     {"name": "blocks.0.qkv.weight", "shape": [128, 64], "kind": "fused",
//!      "subs": [{"name": "q", "size": 64}, {"name": "k", "size": 32}, {"name": "v", "size": 32}], "grain": 16},
//!     {"name": "blocks.0.o.weight", "shape": [64, 64], "kind": "row"},
//!     {"name": "blocks.0.moe.w1", "shape": [8, 64, 128], "kind": "experts"},
//!     {"name": "blocks.0.ln.weight", "shape": [64]} ] }
//! ```
//! Kinds: `replicated` (default), `column` (dim 0), `row` (dim 1), `shard` (with `dim`), `vocab`
//! (dim 0, padded to a multiple of `pad_to_multiple_of × tp`), `fused` (with `subs`, along `dim`,
//! default 0), `experts` (dim 0 = `experts`, default `shape[0]`). `grain` (default 1) makes TP cut in
//! whole units, e.g. attention heads.

use crate::cut::{sub_names, Cut, Sub};
use crate::doc::{layer_of, Doc, Format, Item};
use crate::error::{Result, ViewError};
use crate::relayout::layouts;
use crate::topo::Topo;
use serde::Deserialize;
use serde_json::Value as J;
use uc_schema::{DType, ExpertStorage, Role};

/// The whole description.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelDoc {
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<String>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    topology: Topo,
    tensors: Vec<ModelTensor>,
}

/// One tensor of the description.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTensor {
    name: String,
    shape: Vec<u64>,
    #[serde(default)]
    kind: Kind,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    dim: Option<usize>,
    #[serde(default)]
    grain: Option<u64>,
    #[serde(default)]
    subs: Option<Vec<SubDesc>>,
    #[serde(default)]
    experts: Option<u64>,
    #[serde(default)]
    pad_to_multiple_of: Option<u64>,
    #[serde(default)]
    frozen: bool,
    #[serde(default)]
    role: Option<String>,
}

/// The tensor-parallel role as the description names it.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    #[default]
    Replicated,
    Column,
    Row,
    Shard,
    Vocab,
    Fused,
    Experts,
}

/// A sub-parameter: a bare size or `{name, size, grain}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SubDesc {
    Size(u64),
    Named {
        name: String,
        size: u64,
        #[serde(default)]
        grain: Option<u64>,
    },
}

/// Parses a dtype name, defaulting to F32.
fn parse_dtype(s: Option<&str>, default: DType, tensor: &str) -> Result<DType> {
    match s {
        None => Ok(default),
        Some(s) => DType::parse(s).ok_or_else(|| ViewError::Tensor {
            tensor: tensor.into(),
            why: format!("unknown dtype `{s}`"),
        }),
    }
}

/// The cut a described tensor asks for.
fn cut_of(t: &ModelTensor) -> Result<Cut> {
    let grain = t.grain.unwrap_or(1).max(1);
    Ok(match t.kind {
        Kind::Replicated => Cut::Replicated,
        Kind::Column | Kind::Vocab => Cut::Shard { dim: 0, grain },
        Kind::Row => Cut::Shard { dim: 1, grain },
        Kind::Shard => Cut::Shard {
            dim: t.dim.unwrap_or(0),
            grain,
        },
        Kind::Fused => {
            let subs = t.subs.as_ref().ok_or_else(|| ViewError::Tensor {
                tensor: t.name.clone(),
                why: "kind `fused` needs `subs`".into(),
            })?;
            let names = sub_names(subs.len());
            Cut::Fused {
                dim: t.dim.unwrap_or(0),
                subs: subs
                    .iter()
                    .zip(names)
                    .map(|(s, default)| match s {
                        SubDesc::Size(size) => Sub {
                            name: default,
                            size: *size,
                            grain,
                        },
                        SubDesc::Named {
                            name,
                            size,
                            grain: g,
                        } => Sub {
                            name: name.clone(),
                            size: *size,
                            grain: g.unwrap_or(grain).max(1),
                        },
                    })
                    .collect(),
            }
        }
        Kind::Experts => Cut::Experts {
            num_experts: t
                .experts
                .unwrap_or_else(|| t.shape.first().copied().unwrap_or(0)),
            storage: ExpertStorage::Stacked,
        },
    })
}

/// Parses the description and lays it out on its own topology.
pub fn parse(j: J) -> Result<Doc> {
    let d: ModelDoc = serde_json::from_value(j).map_err(|e| ViewError::Format {
        what: "model description".into(),
        error: e.to_string(),
    })?;
    let default = parse_dtype(d.dtype.as_deref(), DType::F32, "(document)")?;
    let mut items = Vec::with_capacity(d.tensors.len());
    let mut bad = Vec::with_capacity(d.tensors.len());
    for t in &d.tensors {
        let dtype = parse_dtype(t.dtype.as_deref(), default, &t.name);
        let cut = cut_of(t);
        bad.push(dtype.as_ref().err().or(cut.as_ref().err()).cloned());
        items.push(Item {
            name: t.name.clone(),
            role: t.role.as_deref().map_or(Role::Param, Role::from_key),
            dtype: dtype.unwrap_or(default),
            shape: t.shape.clone(),
            frozen: t.frozen,
            cut: cut.unwrap_or(Cut::Replicated),
            pad_multiple: matches!(t.kind, Kind::Vocab).then(|| t.pad_to_multiple_of.unwrap_or(1)),
            layer: layer_of(&t.name),
            source: Err(ViewError::Unknown),
            dcp: None,
        });
    }
    let metas = layouts(&items, &d.topology)?;
    for ((it, m), b) in items.iter_mut().zip(metas).zip(bad) {
        it.source = b.map_or(m, Err);
    }
    Ok(Doc {
        format: Format::Model,
        source: d.topology,
        items,
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uc_schema::Layout;

    #[test]
    fn description_builds_layouts_and_keeps_bad_tensors() {
        let j = serde_json::json!({
            "topology": {"tp": 2},
            "tensors": [
                {"name": "qkv", "shape": [64, 32], "kind": "fused", "subs": [32, 16, 16]},
                {"name": "bias", "shape": [7], "kind": "row"},
                {"name": "f", "shape": [4], "kind": "fused"}
            ]
        });
        let doc = parse(j).unwrap();
        assert!(matches!(
            doc.items[0].source().unwrap().layout,
            Layout::Fused { parts: 2, .. }
        ));
        assert_eq!(
            doc.items[1].source().unwrap_err().to_string(),
            "tensor `bias`: shard dim 1 out of range for a 1-d tensor"
        );
        assert_eq!(
            doc.items[2].source().unwrap_err().to_string(),
            "tensor `f`: kind `fused` needs `subs`"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let j = serde_json::json!({"tensors": [{"name": "a", "shape": [1], "knd": "row"}]});
        let e = parse(j).unwrap_err().to_string();
        assert!(
            e.starts_with("model description: unknown field `knd`"),
            "{e}"
        );
    }
}
