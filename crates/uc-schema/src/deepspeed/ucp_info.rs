//! DeepSpeed's `universal_checkpoint_info` dict: which parameters are replicated, row-parallel, fused,
//! vocabulary-padded or experts, as regex pattern sets.

use super::affine::AffineMap;
use super::autoep::{autoep_layers_to_json, AutoEpLayer};
use super::json::{
    self, i64_of, list_of, map_of, patterns_json, patterns_of, string_of, u64_of, u64s_json,
    u64s_of, u64ss_json, u64ss_of, usize_of, Obj, Out, Result,
};
use super::keys as k;
use super::Num;
use crate::{ExpertStorage, Layout, PatternSet, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use std::collections::BTreeMap;

/// One dim of a sub-param shape spec: a plain size (`-1` = infer) or the sizes of the fused sub-params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubDim {
    /// A size; `-1` means "whatever is left". Before version 0.4, at `partition_dim` it is the
    /// *number* of equal sub-params (e.g. `(3, -1)` for QKV).
    Size(i64),
    /// Sizes of the sub-params fused along this dim (a Python tuple, e.g. `(q, k, v)`).
    Subs(Vec<u64>),
}

impl SubDim {
    /// Reads an int or a list of ints.
    pub(crate) fn parse(j: &J, key: &str) -> Result<SubDim> {
        match j {
            J::Array(_) => Ok(SubDim::Subs(u64s_of(j, key)?)),
            J::Number(_) => Ok(SubDim::Size(i64_of(j, key)?)),
            _ => Err(json::wrong(key, "an int or a list of ints", j)),
        }
    }

    /// Emits an int or a list.
    pub(crate) fn to_json(&self) -> J {
        match self {
            SubDim::Size(s) => J::from(*s),
            SubDim::Subs(v) => u64s_json(v),
        }
    }
}

impl std::fmt::Display for SubDim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubDim::Size(s) => write!(f, "{s}"),
            SubDim::Subs(v) => write!(f, "{v:?}"),
        }
    }
}

/// One entry of `parameter_with_sub_params` (DeepSpeed's `SubparamShape`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubParamSpec {
    pub patterns: PatternSet,
    pub shape: Vec<SubDim>,
    pub partition_dim: usize,
    pub extra: BTreeMap<String, Value>,
}

impl SubParamSpec {
    /// Reads `{"patterns": [...], "shape": [...], "partition_dim": d}`.
    pub fn parse(j: &J) -> Result<SubParamSpec> {
        SubParamSpec::parse_at(j, "parameter_with_sub_params[]")
    }

    /// Reads the dict; `key` names it in errors.
    pub(crate) fn parse_at(j: &J, key: &str) -> Result<SubParamSpec> {
        let mut o = Obj::new(key, j)?;
        Ok(SubParamSpec {
            patterns: o.req("patterns", patterns_of)?,
            shape: o.req("shape", |j, p| list_of(j, p, SubDim::parse))?,
            partition_dim: o.req("partition_dim", usize_of)?,
            extra: o.extra(),
        })
    }

    /// Emits the dict form.
    pub fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.put("patterns", patterns_json(&self.patterns));
        out.put(
            "shape",
            J::Array(self.shape.iter().map(SubDim::to_json).collect()),
        );
        out.put("partition_dim", J::from(self.partition_dim));
        out.done()
    }

    /// The shape spec as text, for error messages (`((32, 16, 16), -1)` style).
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(ToString::to_string).collect();
        format!(
            "[{}] (partition_dim {})",
            dims.join(", "),
            self.partition_dim
        )
    }
}

/// DeepSpeed's `universal_checkpoint_info`. A field is `None` when its key is absent (or `None`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UniversalCheckpointInfo {
    /// `universal_checkpoint_version` (0.4 for current AutoTP/AutoEP; absent means 0.0).
    pub version: Option<Num>,
    /// Embeddings / heads padded on dim 0; their rows past `original_vocab_size` are cut.
    pub vocabulary_parameter_patterns: Option<PatternSet>,
    /// Parameters present on several pipeline stages (tied embeddings); take one copy.
    pub pipeline_replicated_parameter_patterns: Option<PatternSet>,
    /// Parameters whose TP copies differ and are averaged on merge.
    pub parameter_to_average_patterns: Option<PatternSet>,
    /// Row-parallel parameters: concatenated on dim 1.
    pub parameter_with_row_parallelism_patterns: Option<PatternSet>,
    /// Parameters identical on every TP rank.
    pub tp_replicated_parameter_patterns: Option<PatternSet>,
    /// Two equal sub-params fused on dim 0 (Megatron SwiGLU `h_to_4h`), each chunked over TP.
    pub parameter_with_2_sub_params_cat_dim_0: Option<PatternSet>,
    /// Fused sub-params with explicit sizes (QKV, GQA).
    pub parameter_with_sub_params: Option<Vec<SubParamSpec>>,
    /// Pattern → `[sub-param][tp rank]` shard widths (version ≥ 0.4).
    pub sub_param_shard_widths: Option<BTreeMap<String, Vec<Vec<u64>>>>,
    /// Unpadded vocabulary size for the vocabulary patterns.
    pub original_vocab_size: Option<u64>,
    /// Pattern → why AutoTP could not describe the split; DeepSpeed refuses to convert these.
    pub autotp_unsupported_parameter_patterns: Option<BTreeMap<String, String>>,
    /// AutoTP's per-parameter pieces (informational; the patterns above decide the layout).
    pub affine_map: Option<AffineMap>,
    /// AutoEP expert parameters (`.*\.experts\.w[123]$`).
    pub expert_parameter_patterns: Option<PatternSet>,
    /// AutoEP layers, as in model_states' `ds_autoep_layers`.
    pub ds_autoep_layers: Option<Vec<AutoEpLayer>>,
    /// Every other key, verbatim.
    pub extra: BTreeMap<String, Value>,
}

impl UniversalCheckpointInfo {
    /// Reads the dict (as serde_json: tuples as lists, keys as strings).
    ///
    /// ```
    /// let j = serde_json::json!({"universal_checkpoint_version": 0.4,
    ///     "parameter_with_row_parallelism_patterns": ["^o\\.weight$"], "custom": 1});
    /// let uci = uc_schema::deepspeed::UniversalCheckpointInfo::parse(&j).unwrap();
    /// assert!(uci.is_row_parallel("o.weight"));
    /// assert_eq!(uci.to_json(), j);
    /// ```
    pub fn parse(j: &J) -> Result<UniversalCheckpointInfo> {
        let mut o = Obj::new(k::UNIVERSAL_CHECKPOINT_INFO, j)?;
        Ok(UniversalCheckpointInfo {
            version: o.opt(k::UNIVERSAL_CHECKPOINT_VERSION, Num::parse)?,
            vocabulary_parameter_patterns: o.opt(k::VOCABULARY_PARAMETER_PATTERNS, patterns_of)?,
            pipeline_replicated_parameter_patterns: o
                .opt(k::PIPELINE_REPLICATED_PARAMETER_PATTERNS, patterns_of)?,
            parameter_to_average_patterns: o.opt(k::PARAMETER_TO_AVERAGE_PATTERNS, patterns_of)?,
            parameter_with_row_parallelism_patterns: o
                .opt(k::PARAMETER_WITH_ROW_PARALLELISM_PATTERNS, patterns_of)?,
            tp_replicated_parameter_patterns: o
                .opt(k::TP_REPLICATED_PARAMETER_PATTERNS, patterns_of)?,
            parameter_with_2_sub_params_cat_dim_0: o
                .opt(k::PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0, patterns_of)?,
            parameter_with_sub_params: o.opt(k::PARAMETER_WITH_SUB_PARAMS, |j, p| {
                list_of(j, p, SubParamSpec::parse_at)
            })?,
            sub_param_shard_widths: o
                .opt(k::SUB_PARAM_SHARD_WIDTHS, |j, p| map_of(j, p, u64ss_of))?,
            original_vocab_size: o.opt(k::ORIGINAL_VOCAB_SIZE, u64_of)?,
            autotp_unsupported_parameter_patterns: o
                .opt(k::AUTOTP_UNSUPPORTED_PARAMETER_PATTERNS, |j, p| {
                    map_of(j, p, string_of)
                })?,
            affine_map: o.opt(k::AFFINE_MAP, AffineMap::parse_at)?,
            expert_parameter_patterns: o.opt(k::EXPERT_PARAMETER_PATTERNS, patterns_of)?,
            ds_autoep_layers: o.opt(k::AUTOEP_LAYERS, |j, p| {
                list_of(j, p, AutoEpLayer::parse_at)
            })?,
            extra: o.extra(),
        })
    }

    /// Emits the dict with DeepSpeed's key names.
    pub fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.opt(k::UNIVERSAL_CHECKPOINT_VERSION, &self.version, |v| {
            v.to_json()
        });
        let sets = [
            (
                k::VOCABULARY_PARAMETER_PATTERNS,
                &self.vocabulary_parameter_patterns,
            ),
            (
                k::PIPELINE_REPLICATED_PARAMETER_PATTERNS,
                &self.pipeline_replicated_parameter_patterns,
            ),
            (
                k::PARAMETER_TO_AVERAGE_PATTERNS,
                &self.parameter_to_average_patterns,
            ),
            (
                k::PARAMETER_WITH_ROW_PARALLELISM_PATTERNS,
                &self.parameter_with_row_parallelism_patterns,
            ),
            (
                k::TP_REPLICATED_PARAMETER_PATTERNS,
                &self.tp_replicated_parameter_patterns,
            ),
            (
                k::PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0,
                &self.parameter_with_2_sub_params_cat_dim_0,
            ),
            (
                k::EXPERT_PARAMETER_PATTERNS,
                &self.expert_parameter_patterns,
            ),
        ];
        for (key, set) in sets {
            out.opt(key, set, patterns_json);
        }
        out.opt(
            k::PARAMETER_WITH_SUB_PARAMS,
            &self.parameter_with_sub_params,
            |v| J::Array(v.iter().map(SubParamSpec::to_json).collect()),
        );
        out.opt(
            k::SUB_PARAM_SHARD_WIDTHS,
            &self.sub_param_shard_widths,
            |m| J::Object(m.iter().map(|(p, w)| (p.clone(), u64ss_json(w))).collect()),
        );
        out.opt(k::ORIGINAL_VOCAB_SIZE, &self.original_vocab_size, |&v| {
            J::from(v)
        });
        out.opt(
            k::AUTOTP_UNSUPPORTED_PARAMETER_PATTERNS,
            &self.autotp_unsupported_parameter_patterns,
            |m| {
                J::Object(
                    m.iter()
                        .map(|(p, r)| (p.clone(), J::String(r.clone())))
                        .collect(),
                )
            },
        );
        out.opt(k::AFFINE_MAP, &self.affine_map, AffineMap::to_json);
        out.opt(k::AUTOEP_LAYERS, &self.ds_autoep_layers, |l| {
            autoep_layers_to_json(l)
        });
        out.done()
    }

    /// The version as a number; DeepSpeed reads a missing one as 0.0.
    pub fn version_f64(&self) -> f64 {
        self.version.map_or(0.0, Num::as_f64)
    }

    /// True when `name` is identical on every TP rank.
    pub fn is_tp_replicated(&self, name: &str) -> bool {
        hit(&self.tp_replicated_parameter_patterns, name)
    }

    /// True when `name`'s TP copies are averaged on merge.
    pub fn is_averaged(&self, name: &str) -> bool {
        hit(&self.parameter_to_average_patterns, name)
    }

    /// True when `name` is row-parallel (concatenated on dim 1).
    pub fn is_row_parallel(&self, name: &str) -> bool {
        hit(&self.parameter_with_row_parallelism_patterns, name)
    }

    /// True when `name` is a padded vocabulary tensor.
    pub fn is_vocabulary(&self, name: &str) -> bool {
        hit(&self.vocabulary_parameter_patterns, name)
    }

    /// True when `name` exists on several pipeline stages.
    pub fn is_pipeline_replicated(&self, name: &str) -> bool {
        hit(&self.pipeline_replicated_parameter_patterns, name)
    }

    /// True when `name` holds two equal sub-params fused on dim 0.
    pub fn is_two_sub_params(&self, name: &str) -> bool {
        hit(&self.parameter_with_2_sub_params_cat_dim_0, name)
    }

    /// True when `name` is an AutoEP expert parameter (by pattern or by a layer's key prefix).
    pub fn is_expert(&self, name: &str) -> bool {
        hit(&self.expert_parameter_patterns, name) || self.expert_layer(name).is_some()
    }

    /// The AutoEP layer whose `expert_key_prefix` starts `name`.
    pub fn expert_layer(&self, name: &str) -> Option<&AutoEpLayer> {
        self.ds_autoep_layers
            .as_deref()?
            .iter()
            .find(|l| l.owns(name))
    }

    /// The expert-parallel layout of `name` when it belongs to an AutoEP layer (checked first).
    pub fn experts_layout(&self, name: &str, storage: ExpertStorage) -> Result<Option<Layout>> {
        self.expert_layer(name)
            .map(|l| l.experts_layout(storage))
            .transpose()
    }

    /// The first sub-param spec with a pattern matching `name`, and that pattern's source string.
    pub fn sub_params_for(&self, name: &str) -> Option<(&SubParamSpec, &str)> {
        self.parameter_with_sub_params
            .as_deref()?
            .iter()
            .find_map(|s| {
                let i = s.patterns.first_match(name)?;
                Some((s, s.patterns.sources().get(i)?.as_str()))
            })
    }
}

/// True when the optional set exists and matches.
fn hit(set: &Option<PatternSet>, name: &str) -> bool {
    set.as_ref().is_some_and(|s| s.matches(name))
}
