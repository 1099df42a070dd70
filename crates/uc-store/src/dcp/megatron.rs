//! Megatron-Core `torch_dist` checkpoints: a DCP checkpoint plus `metadata.json` (the backend) and
//! `common.pt` (iteration, scheduler, param groups, the shared Adam step). Layers of one kind are
//! stacked in one tensor with a leading layer axis; moments live under `optimizer.state.<state>.<key>`.

use crate::error::{Result, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::{DType, Value};
use uc_torch::pickle::{Allowlist, PyValue, DCP_METADATA_GLOBALS};
use uc_torch::plain::to_value;
use uc_torch::PtFile;

/// The file that marks a Megatron dist checkpoint.
pub const METADATA_JSON: &str = "metadata.json";
/// The non-sharded part of the state dict.
pub const COMMON_PT: &str = "common.pt";

/// True when `dir/metadata.json` names the `torch_dist` backend; an error for other backends.
pub fn detect(dir: &Path) -> Result<bool> {
    let p = dir.join(METADATA_JSON);
    if !p.is_file() {
        return Ok(false);
    }
    let bytes = uc_torch::lazy::read(&p)?;
    let j: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| StoreError::Format {
        path: p.clone(),
        why: format!("not JSON: {e}"),
    })?;
    match j.get("sharded_backend").and_then(|b| b.as_str()) {
        Some("torch_dist") => Ok(true),
        other => Err(StoreError::Format {
            path: p,
            why: format!(
                "sharded_backend {other:?} is not supported (only `torch_dist`, a DCP checkpoint)"
            ),
        }),
    }
}

/// What a Megatron flat key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MKey {
    /// A model tensor key (possibly with a stacked layer axis).
    Model(String),
    /// `optimizer.state.<state>.<key>`: an optimizer state of model key `key`.
    State { state: String, key: String },
    /// `<module>._extra_state/shard_…`: TransformerEngine extra state (no weights).
    ExtraState,
}

/// Classifies a Megatron flat key.
pub fn classify(key: &str) -> MKey {
    if key.contains("._extra_state") {
        return MKey::ExtraState;
    }
    if let Some((state, k)) = key
        .strip_prefix("optimizer.state.")
        .and_then(|r| r.split_once('.'))
    {
        return MKey::State {
            state: state.to_string(),
            key: k.to_string(),
        };
    }
    MKey::Model(key.to_string())
}

/// For a stacked key (`decoder.layers.self_attention.linear_qkv.weight`): the part up to and
/// including `layers.` and the per-layer rest. `None` when the key has no stacked layer axis.
pub fn stacked(key: &str) -> Option<(&str, &str)> {
    let mut at = 0;
    while let Some(i) = key[at..].find("layers.") {
        let start = at + i;
        let end = start + "layers.".len();
        let whole_segment = start == 0 || key.as_bytes()[start - 1] == b'.';
        let rest = &key[end..];
        let next = rest.split('.').next().unwrap_or("");
        if whole_segment && !next.is_empty() && !next.bytes().all(|b| b.is_ascii_digit()) {
            return Some((&key[..end], rest));
        }
        at = end;
    }
    None
}

/// TransformerEngine's fused LayerNorm names → the local-spec module names (TP1 parameter names).
const LOCAL_NAMES: &[(&str, &str)] = &[
    (
        "self_attention.linear_qkv.layer_norm_weight",
        "input_layernorm.weight",
    ),
    (
        "self_attention.linear_qkv.layer_norm_bias",
        "input_layernorm.bias",
    ),
    (
        "mlp.linear_fc1.layer_norm_weight",
        "pre_mlp_layernorm.weight",
    ),
    ("mlp.linear_fc1.layer_norm_bias", "pre_mlp_layernorm.bias"),
];

/// The parameter name of layer `i` of a stacked key (`decoder.layers.<i>.<rest>`), with the fused
/// LayerNorm names mapped to the local spec's unless `te_names`.
pub fn layer_name(prefix: &str, i: u64, rest: &str, te_names: bool) -> String {
    let rest = if te_names {
        rest
    } else {
        LOCAL_NAMES
            .iter()
            .find(|(te, _)| *te == rest)
            .map_or(rest, |(_, local)| local)
    };
    format!("{prefix}{i}.{rest}")
}

/// The TransformerEngine fused name of a per-layer local-spec name (`input_layernorm.weight` →
/// `self_attention.linear_qkv.layer_norm_weight`); other names are unchanged.
pub fn te_name(rest: &str) -> &str {
    LOCAL_NAMES
        .iter()
        .find(|(_, local)| *local == rest)
        .map_or(rest, |(te, _)| te)
}

/// Splits a per-layer name `<prefix>layers.<i>.<rest>` into (`<prefix>layers.`, i, rest): the first
/// `layers` segment followed by a layer number. `None` for names outside the layer stack.
pub fn split_layer(name: &str) -> Option<(&str, u64, &str)> {
    let mut at = 0;
    for seg in name.split('.') {
        let end = at + seg.len();
        if seg == "layers" {
            let rest = name.get(end + 1..)?;
            let (num, tail) = rest.split_once('.')?;
            if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) && !tail.is_empty() {
                return Some((&name[..end + 1], num.parse().ok()?, tail));
            }
        }
        at = end + 1;
    }
    None
}

/// True for the vocabulary-parallel tensors whose rows are padded.
pub fn is_vocab(key: &str) -> bool {
    key == "embedding.word_embeddings.weight" || key == "output_layer.weight"
}

/// `common.pt` read as training state, plus the shared Adam step (`optimizer.state.common_step`).
pub fn common_state(dir: &Path) -> Result<(BTreeMap<String, Value>, Option<f32>)> {
    let p = dir.join(COMMON_PT);
    let mut state = BTreeMap::new();
    if !p.is_file() {
        return Ok((state, None));
    }
    let allow = Allowlist::deepspeed().with_all(
        &DCP_METADATA_GLOBALS
            .iter()
            .copied()
            .filter(|(m, _)| *m == "torch")
            .collect::<Vec<_>>(),
    );
    let f = PtFile::open(&p, &allow)?;
    let mut step = None;
    let Some(entries) = f.root().as_dict() else {
        return Err(StoreError::Format {
            path: p,
            why: format!("expected a dict, found {}", f.root().type_name()),
        });
    };
    for (k, v) in entries {
        let Some(k) = k.as_str() else { continue };
        if k != "optimizer" {
            state.insert(k.to_string(), to_value(v));
            continue;
        }
        if let Some(g) = v.get("param_groups") {
            state.insert("param_groups".into(), to_value(g));
        }
        if let Some(s) = v.get("state").and_then(|s| s.get("common_step")) {
            let x = scalar(&f, s)?;
            state.insert("step".into(), Value::Float(f64::from(x)));
            step = Some(x);
        }
    }
    Ok((state, step))
}

/// A number stored as a 0-d (or one-element) tensor or as a Python number.
fn scalar(f: &PtFile, v: &PyValue) -> Result<f32> {
    let bad = |why: String| StoreError::BadTensor {
        path: f.path().to_path_buf(),
        tensor: "optimizer.state.common_step".into(),
        why,
    };
    match v {
        PyValue::Tensor(t) if t.numel() == 1 => {
            let b = f.tensor_data("optimizer.state.common_step", t)?;
            let mut out = [0u8; 4];
            uc_merge::convert::convert(&b, t.dtype, &mut out, DType::F32)
                .map_err(|e| bad(e.to_string()))?;
            Ok(f32::from_le_bytes(out))
        }
        PyValue::Int(i) => Ok(*i as f32),
        PyValue::Float(x) => Ok(*x as f32),
        other => Err(bad(format!(
            "expected a number, found {}",
            other.type_name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_keys() {
        assert_eq!(
            stacked("decoder.layers.self_attention.linear_qkv.weight"),
            Some(("decoder.layers.", "self_attention.linear_qkv.weight"))
        );
        assert_eq!(stacked("decoder.layers.0.mlp.weight"), None);
        assert_eq!(stacked("decoder.final_layernorm.weight"), None);
        assert_eq!(stacked("encoder.sublayers.x"), None);
        assert_eq!(
            layer_name(
                "decoder.layers.",
                1,
                "mlp.linear_fc1.layer_norm_bias",
                false
            ),
            "decoder.layers.1.pre_mlp_layernorm.bias"
        );
        assert_eq!(
            classify("optimizer.state.exp_avg_sq.decoder.layers.mlp.linear_fc1.bias"),
            MKey::State {
                state: "exp_avg_sq".into(),
                key: "decoder.layers.mlp.linear_fc1.bias".into()
            }
        );
        assert_eq!(
            split_layer("decoder.layers.12.input_layernorm.weight"),
            Some(("decoder.layers.", 12, "input_layernorm.weight"))
        );
        assert_eq!(split_layer("decoder.layers.mlp.weight"), None);
        assert_eq!(split_layer("decoder.final_layernorm.weight"), None);
        assert_eq!(split_layer("layers.3"), None);
        assert_eq!(
            te_name("pre_mlp_layernorm.bias"),
            "mlp.linear_fc1.layer_norm_bias"
        );
        assert_eq!(te_name("mlp.linear_fc2.weight"), "mlp.linear_fc2.weight");
        assert_eq!(
            classify("decoder.layers.mlp.linear_fc1._extra_state/shard_0_2"),
            MKey::ExtraState
        );
    }
}
