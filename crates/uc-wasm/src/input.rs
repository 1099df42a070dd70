//! Reads metadata JSON: detects the format and builds a [`Doc`].
//!
//! - `uc.json` (has `version`, `source`, `tensors`): layouts as the manifest states them; an
//!   optional `dcp` section adds each tensor's DCP chunks and writer ranks (see [`crate::dcp`]).
//! - DeepSpeed (has `universal_checkpoint_info`): see [`crate::deepspeed`].
//! - a model description (has `tensors` and no `source`): see [`crate::model`].

use crate::cut::Cut;
use crate::dcp::{Dcp, DcpSection, DcpTensor};
use crate::doc::{layer_of, Doc, Format, Item};
use crate::error::{Result, ViewError};
use crate::topo::Topo;
use serde_json::Value as J;
use std::collections::HashMap;
use uc_schema::{Manifest, Role, MANIFEST_VERSION};

/// Parses any supported metadata document.
pub fn parse(text: &str) -> Result<Doc> {
    let j: J = serde_json::from_str(text).map_err(|e| ViewError::Json(e.to_string()))?;
    let J::Object(o) = &j else {
        return Err(ViewError::Unknown);
    };
    if crate::deepspeed::is_deepspeed(o) {
        crate::deepspeed::parse(o)
    } else if o.contains_key("source") && o.contains_key("version") {
        manifest(j)
    } else if o.contains_key("tensors") {
        crate::model::parse(j)
    } else {
        Err(ViewError::Unknown)
    }
}

/// A `uc.json` manifest: version and topology must be valid; each tensor is checked on its own.
fn manifest(mut j: J) -> Result<Doc> {
    let dcp = match j.as_object_mut().and_then(|o| o.remove("dcp")) {
        Some(d) => Some(crate::dcp::parse(d)?),
        None => None,
    };
    let m: Manifest = serde_json::from_value(j).map_err(|e| ViewError::Format {
        what: "uc.json".into(),
        error: e.to_string(),
    })?;
    if m.version == 0 || m.version > MANIFEST_VERSION {
        return Err(uc_schema::SchemaError::UnsupportedVersion {
            version: m.version,
            supported: MANIFEST_VERSION,
        }
        .into());
    }
    m.source.validate()?;
    let items = m
        .tensors
        .into_iter()
        .map(|e| {
            let meta = e.meta;
            Item {
                name: meta.name.clone(),
                role: meta.role.clone(),
                dtype: meta.dtype,
                shape: meta.shape.clone(),
                frozen: meta.frozen,
                cut: Cut::of(&meta.layout),
                pad_multiple: meta.padded_shape.as_ref().map(|_| 1),
                layer: layer_of(&meta.name),
                source: meta.validate().map(|_| meta).map_err(ViewError::from),
                dcp: None,
            }
        })
        .collect();
    let mut doc = Doc {
        format: Format::Manifest,
        source: Topo::of(&m.source),
        items,
        notes: Vec::new(),
    };
    if let Some(section) = dcp {
        attach_dcp(&mut doc, section);
    }
    Ok(doc)
}

/// Gives each tensor its DCP facts (by name and role); facts that do not fit a tensor make it
/// invalid with the reason.
fn attach_dcp(doc: &mut Doc, section: DcpSection) {
    doc.format = Format::Dcp;
    let mut by_name: HashMap<(String, Role), DcpTensor> = section
        .tensors
        .into_iter()
        .map(|t| ((t.name.clone(), t.role.clone()), t))
        .collect();
    for it in &mut doc.items {
        let Some(facts) = by_name.remove(&(it.name.clone(), it.role.clone())) else {
            continue;
        };
        if let Ok(meta) = &it.source {
            match Dcp::new(facts, section.world, meta) {
                Ok(d) => it.dcp = Some(d),
                Err(e) => it.source = Err(e),
            }
        }
    }
    doc.notes.push(format!(
        "PyTorch DCP, {} ranks wrote files: .metadata records no mesh or placements, so both are inferred from each tensor's chunks; pieces are coloured by the rank that wrote them (replicated chunks are written once).",
        section.world
    ));
    if !by_name.is_empty() {
        doc.notes.push(format!(
            "the dcp section names {} tensors that are not in `tensors`",
            by_name.len()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uc_schema::{DType, Layout, Role, Split, TensorMeta, Topology};

    #[test]
    fn manifest_layouts_and_errors_per_tensor() {
        let mut m = Manifest::new(Topology::new(&[("dp", 1), ("tp", 2)], 0));
        let good = TensorMeta::new("o.weight", DType::F32, vec![4, 6], Role::Param).with_layout(
            Layout::Shard {
                dim: 1,
                parts: 2,
                split: Split::Even,
            },
        );
        let bad =
            TensorMeta::new("x", DType::F32, vec![5], Role::Param).with_layout(Layout::Shard {
                dim: 0,
                parts: 2,
                split: Split::Even,
            });
        for meta in [good, bad] {
            m.tensors.push(uc_schema::Entry {
                meta,
                storage: None,
            });
        }
        let doc = parse(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(doc.format, Format::Manifest);
        assert_eq!(doc.source.tp, 2);
        assert_eq!(doc.items[0].cut, Cut::Shard { dim: 1, grain: 1 });
        assert_eq!(
            doc.items[1].source().unwrap_err().to_string(),
            "tensor `x`: dim 0 of size 5 does not split evenly over 2 ranks"
        );
    }

    #[test]
    fn manifest_version_error_is_uc_schemas() {
        let mut m = serde_json::to_value(Manifest::new(Topology::default())).unwrap();
        m["version"] = 9.into();
        let e = parse(&m.to_string()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "manifest version 9 is not supported (this build reads 1..=1)"
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(parse("{"), Err(ViewError::Json(_))));
        assert_eq!(parse("[1]"), Err(ViewError::Unknown));
        assert_eq!(parse("{\"a\":1}"), Err(ViewError::Unknown));
    }
}
