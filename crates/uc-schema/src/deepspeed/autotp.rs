//! AutoTP per-parameter metadata (`param.ds_autotp_universal_checkpoint_meta`): how DeepSpeed's AutoTP
//! split one parameter, and the layout that follows from it.

use super::json::{
    self, bool_of, string_of, u64s_json, u64s_of, u64ss_json, u64ss_of, usize_of, Obj, Out, Result,
};
use super::keys as k;
use super::ucp_info::SubDim;
use super::Num;
use crate::{Layout, SchemaError, Split, SubParam, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use std::collections::BTreeMap;

/// AutoTP's split kind: column-parallel (output dim, 0) or row-parallel (input dim, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionType {
    Row,
    Column,
}

impl PartitionType {
    /// DeepSpeed's spelling.
    pub fn name(self) -> &'static str {
        match self {
            PartitionType::Row => "row",
            PartitionType::Column => "column",
        }
    }

    /// Reads `"row"` / `"column"`.
    fn parse(j: &J, key: &str) -> Result<PartitionType> {
        match j.as_str() {
            Some("row") => Ok(PartitionType::Row),
            Some("column") => Ok(PartitionType::Column),
            _ => Err(json::wrong(key, "\"row\" or \"column\"", j)),
        }
    }
}

/// Reads a sub-param shape spec (list of ints / int lists).
fn sub_shape_of(j: &J, key: &str) -> Result<Vec<SubDim>> {
    json::list_of(j, key, SubDim::parse)
}

/// Emits a sub-param shape spec.
fn sub_shape_json(s: &[SubDim]) -> J {
    J::Array(s.iter().map(SubDim::to_json).collect())
}

/// The conversion-facing subset (`meta["conversion"]`), which feeds `universal_checkpoint_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoTpConversion {
    pub partition_type: Option<PartitionType>,
    pub partition_dim: Option<usize>,
    pub sub_param_shape: Option<Vec<SubDim>>,
    pub sub_param_shard_widths: Option<Vec<Vec<u64>>>,
    pub original_shape: Option<Vec<u64>>,
    pub is_bias: Option<bool>,
    pub replicated: Option<bool>,
    /// Set when the layer could not describe its split; DeepSpeed refuses to convert such parameters.
    pub unsupported_reason: Option<String>,
    pub extra: BTreeMap<String, Value>,
}

impl AutoTpConversion {
    /// Reads the `conversion` dict.
    fn parse(j: &J, key: &str) -> Result<AutoTpConversion> {
        let mut o = Obj::new(key, j)?;
        Ok(AutoTpConversion {
            partition_type: o.opt("partition_type", PartitionType::parse)?,
            partition_dim: o.opt("partition_dim", usize_of)?,
            sub_param_shape: o.opt(k::SUB_PARAM_SHAPE, sub_shape_of)?,
            sub_param_shard_widths: o.opt(k::SUB_PARAM_SHARD_WIDTHS, u64ss_of)?,
            original_shape: o.opt("original_shape", u64s_of)?,
            is_bias: o.opt("is_bias", bool_of)?,
            replicated: o.opt("replicated", bool_of)?,
            unsupported_reason: o.opt("unsupported_reason", string_of)?,
            extra: o.extra(),
        })
    }

    /// Emits the `conversion` dict.
    fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.opt("partition_type", &self.partition_type, |p| {
            J::from(p.name())
        });
        out.opt("partition_dim", &self.partition_dim, |&d| J::from(d));
        out.opt(k::SUB_PARAM_SHAPE, &self.sub_param_shape, |s| {
            sub_shape_json(s)
        });
        out.opt(
            k::SUB_PARAM_SHARD_WIDTHS,
            &self.sub_param_shard_widths,
            |w| u64ss_json(w),
        );
        out.opt("original_shape", &self.original_shape, |s| u64s_json(s));
        out.opt("is_bias", &self.is_bias, |&b| J::Bool(b));
        out.opt("replicated", &self.replicated, |&b| J::Bool(b));
        out.opt("unsupported_reason", &self.unsupported_reason, |s| {
            J::String(s.clone())
        });
        out.done()
    }
}

/// AutoTP's per-parameter metadata (restore-facing fields plus `conversion`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoTpParamMeta {
    pub version: Option<Num>,
    pub partition_type: Option<PartitionType>,
    /// `None` for replicated parameters (row-parallel biases).
    pub partition_dim: Option<usize>,
    /// Full logical shape.
    pub logical_shape: Option<Vec<u64>>,
    pub output_shape: Option<Vec<u64>>,
    /// View spec of fused sub-params (`((q, k, v), -1)`).
    pub sub_param_shape: Option<Vec<SubDim>>,
    /// Resolved size of each sub-param along `partition_dim`.
    pub sub_param_sizes: Option<Vec<u64>>,
    /// `[sub-param][tp rank]` widths.
    pub sub_param_shard_widths: Option<Vec<Vec<u64>>>,
    /// Per-TP-rank sizes along `partition_dim` (AutoTP allows uneven splits).
    pub partition_sizes: Option<Vec<u64>>,
    /// This rank's local shape.
    pub target_partition_shape: Option<Vec<u64>>,
    pub original_shape: Option<Vec<u64>>,
    pub is_bias: Option<bool>,
    pub replicated: Option<bool>,
    pub conversion: Option<AutoTpConversion>,
    pub extra: BTreeMap<String, Value>,
}

impl AutoTpParamMeta {
    /// Reads the metadata dict.
    pub fn parse(j: &J) -> Result<AutoTpParamMeta> {
        let mut o = Obj::new(k::DS_AUTOTP_UC_META, j)?;
        Ok(AutoTpParamMeta {
            version: o.opt(k::UNIVERSAL_CHECKPOINT_VERSION, Num::parse)?,
            partition_type: o.opt("partition_type", PartitionType::parse)?,
            partition_dim: o.opt("partition_dim", usize_of)?,
            logical_shape: o.opt("logical_shape", u64s_of)?,
            output_shape: o.opt("output_shape", u64s_of)?,
            sub_param_shape: o.opt(k::SUB_PARAM_SHAPE, sub_shape_of)?,
            sub_param_sizes: o.opt("sub_param_sizes", u64s_of)?,
            sub_param_shard_widths: o.opt(k::SUB_PARAM_SHARD_WIDTHS, u64ss_of)?,
            partition_sizes: o.opt("partition_sizes", u64s_of)?,
            target_partition_shape: o.opt("target_partition_shape", u64s_of)?,
            original_shape: o.opt("original_shape", u64s_of)?,
            is_bias: o.opt("is_bias", bool_of)?,
            replicated: o.opt("replicated", bool_of)?,
            conversion: o.opt("conversion", |j, key| match j {
                J::Object(_) => AutoTpConversion::parse(j, key),
                _ => Err(json::wrong(key, "a dict", j)),
            })?,
            extra: o.extra(),
        })
    }

    /// Emits the metadata dict with DeepSpeed's key names.
    pub fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.opt(k::UNIVERSAL_CHECKPOINT_VERSION, &self.version, |v| {
            v.to_json()
        });
        out.opt("partition_type", &self.partition_type, |p| {
            J::from(p.name())
        });
        out.opt("partition_dim", &self.partition_dim, |&d| J::from(d));
        out.opt("logical_shape", &self.logical_shape, |s| u64s_json(s));
        out.opt("output_shape", &self.output_shape, |s| u64s_json(s));
        out.opt(k::SUB_PARAM_SHAPE, &self.sub_param_shape, |s| {
            sub_shape_json(s)
        });
        out.opt("sub_param_sizes", &self.sub_param_sizes, |s| u64s_json(s));
        out.opt(
            k::SUB_PARAM_SHARD_WIDTHS,
            &self.sub_param_shard_widths,
            |w| u64ss_json(w),
        );
        out.opt("partition_sizes", &self.partition_sizes, |s| u64s_json(s));
        out.opt(
            "target_partition_shape",
            &self.target_partition_shape,
            |s| u64s_json(s),
        );
        out.opt("original_shape", &self.original_shape, |s| u64s_json(s));
        out.opt("is_bias", &self.is_bias, |&b| J::Bool(b));
        out.opt("replicated", &self.replicated, |&b| J::Bool(b));
        out.opt("conversion", &self.conversion, AutoTpConversion::to_json);
        out.done()
    }

    /// The TP layout this metadata pins down over `tp` ranks, as DeepSpeed's restore path
    /// (`_resolve_autotp_partition`) reads it; `None` where DeepSpeed falls back to its generic rules
    /// (no partition dim, no logical shape). Checked against `logical_shape`.
    pub fn layout(&self, tensor: &str, tp: u32) -> Result<Option<Layout>> {
        if tp == 0 {
            return Err(SchemaError::ZeroRanks {
                tensor: tensor.into(),
            });
        }
        if let Some(reason) = self
            .conversion
            .as_ref()
            .and_then(|c| c.unsupported_reason.clone())
        {
            return Err(SchemaError::AutoTpUnsupported {
                tensor: tensor.into(),
                reason,
            });
        }
        if self.replicated == Some(true) {
            return Ok(Some(Layout::Replicated { ranks: tp }));
        }
        let (Some(dim), Some(shape)) = (self.partition_dim, self.logical_shape.as_ref()) else {
            return Ok(None);
        };
        let sizes = match (&self.sub_param_sizes, &self.sub_param_shape) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(spec)) => match spec.get(dim) {
                Some(SubDim::Subs(s)) => Some(s.clone()),
                Some(SubDim::Size(n)) if *n > 0 => Some(vec![*n as u64]),
                _ => {
                    return Err(SchemaError::SubParamShape {
                        tensor: tensor.into(),
                        spec: format!("{spec:?} (partition_dim {dim})"),
                        shape: shape.clone(),
                    })
                }
            },
            (None, None) => None,
        };
        let layout = match (sizes, &self.partition_sizes) {
            (Some(sizes), _) => {
                let version = self.version.map_or(0.0, Num::as_f64);
                let widths = if version < k::SHARD_WIDTHS_VERSION {
                    sizes.iter().map(|&s| Split::Even.sizes(s, tp)).collect()
                } else {
                    self.sub_param_shard_widths.clone().ok_or_else(|| {
                        SchemaError::MissingShardWidths {
                            tensor: tensor.into(),
                            pattern: k::DS_AUTOTP_UC_META.into(),
                            version: version.to_string(),
                        }
                    })?
                };
                if version < k::SHARD_WIDTHS_VERSION {
                    if let Some(&s) = sizes.iter().find(|&&s| !s.is_multiple_of(tp as u64)) {
                        return Err(SchemaError::UnevenSplit {
                            tensor: tensor.into(),
                            dim,
                            size: s,
                            parts: tp,
                        });
                    }
                }
                fused(tensor, dim, tp, &sizes, &widths)?
            }
            (None, Some(p)) => Layout::Shard {
                dim,
                parts: tp,
                split: Split::Sizes(p.clone()),
            },
            (None, None) => Layout::Shard {
                dim,
                parts: tp,
                split: Split::Even,
            },
        };
        crate::validate_layout(tensor, shape, &layout)?;
        Ok(Some(layout))
    }
}

/// A fused layout from sub-param sizes and `[sub][rank]` widths, checking counts and sums.
pub(crate) fn fused(
    tensor: &str,
    dim: usize,
    tp: u32,
    sizes: &[u64],
    widths: &[Vec<u64>],
) -> Result<Layout> {
    if widths.len() != sizes.len() {
        return Err(SchemaError::SubParamWidthsCount {
            tensor: tensor.into(),
            subs: sizes.len(),
            got: widths.len(),
        });
    }
    let mut subs = Vec::with_capacity(sizes.len());
    for (sub, (&size, w)) in sizes.iter().zip(widths).enumerate() {
        if w.len() != tp as usize {
            return Err(SchemaError::SubParamWidthsRanks {
                tensor: tensor.into(),
                sub,
                got: w.len(),
                parts: tp,
            });
        }
        let sum = w
            .iter()
            .try_fold(0u64, |a, &b| a.checked_add(b))
            .unwrap_or(u64::MAX);
        if sum != size {
            return Err(SchemaError::SubParamWidthsDontSum {
                tensor: tensor.into(),
                sub,
                widths: w.clone(),
                sum,
                expected: size,
            });
        }
        subs.push(SubParam {
            size,
            split: Split::Sizes(w.clone()),
        });
    }
    Ok(Layout::Fused {
        dim,
        parts: tp,
        subs,
    })
}
