//! From `universal_checkpoint_info` and the TP-local shapes of a parameter to one of our layouts,
//! following `ds_to_universal.merge_tp_slices`: tp-replicated → averaged → two sub-params on dim 0 →
//! sub-params with sizes → row-parallel (dim 1) → column (dim 0); then vocabulary rows are cut.

use super::autotp::fused;
use super::json::Result;
use super::keys as k;
use super::ucp_info::{SubDim, SubParamSpec, UniversalCheckpointInfo};
use crate::{DType, Layout, Role, SchemaError, Split, SubParam, TensorMeta};
use serde::{Deserialize, Serialize};

/// Which of DeepSpeed's merge rules applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TpKind {
    /// `tp_replicated_parameter_patterns`: every rank holds the same tensor.
    Replicated,
    /// `parameter_to_average_patterns`: every rank holds a full copy; the merge averages them.
    Averaged,
    /// `parameter_with_2_sub_params_cat_dim_0`: each rank's slice is two halves (torch.chunk).
    TwoSubParams,
    /// `parameter_with_sub_params`: fused sub-params with explicit sizes and shard widths.
    SubParams,
    /// `parameter_with_row_parallelism_patterns`: concatenated on dim 1.
    Row,
    /// Everything else: concatenated on dim 0.
    Column,
}

/// How one DeepSpeed TP parameter maps onto our layouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TpRule {
    pub kind: TpKind,
    /// Layout of the stored tensor over the TP ranks.
    pub layout: Layout,
    /// Stored (full, concatenated) shape; padded for vocabulary tensors.
    pub shape: Vec<u64>,
    /// `original_vocab_size` for vocabulary tensors: rows from here on are padding.
    pub vocab: Option<u64>,
    /// The TP copies are averaged on merge (not bit-identical).
    pub average: bool,
    /// Every TP rank holds the same tensor.
    pub replicated: bool,
}

impl TpRule {
    /// Logical shape: the stored shape with vocabulary padding cut off.
    pub fn logical_shape(&self) -> Vec<u64> {
        let mut s = self.shape.clone();
        if let (Some(v), Some(rows)) = (self.vocab, s.first_mut()) {
            *rows = v;
        }
        s
    }

    /// A tensor description with this layout (padded shape set when vocabulary rows are cut).
    pub fn tensor_meta(&self, name: &str, dtype: DType, role: Role) -> TensorMeta {
        let logical = self.logical_shape();
        let mut t =
            TensorMeta::new(name, dtype, logical.clone(), role).with_layout(self.layout.clone());
        if logical != self.shape {
            t = t.with_padded(self.shape.clone());
        }
        t
    }
}

impl UniversalCheckpointInfo {
    /// The rule for parameter `name` whose TP rank `t` holds a tensor of shape `local_shapes[t]`
    /// (what that rank's `param_shapes` says).
    ///
    /// ```
    /// use uc_schema::deepspeed::UniversalCheckpointInfo;
    /// let uci = UniversalCheckpointInfo::parse(&serde_json::json!({
    ///     "universal_checkpoint_version": 0.4,
    ///     "parameter_with_row_parallelism_patterns": ["^o\\.weight$"]})).unwrap();
    /// let r = uci.tp_rule("o.weight", &[vec![32, 16], vec![32, 16]]).unwrap();
    /// assert_eq!(r.shape, vec![32, 32]);
    /// ```
    pub fn tp_rule(&self, name: &str, local_shapes: &[Vec<u64>]) -> Result<TpRule> {
        let tensor = || name.to_string();
        let tp = u32::try_from(local_shapes.len()).map_err(|_| SchemaError::SizesCount {
            tensor: tensor(),
            parts: u32::MAX,
            got: local_shapes.len(),
        })?;
        let Some(first) = local_shapes.first() else {
            return Err(SchemaError::ZeroRanks { tensor: tensor() });
        };
        self.check_supported(name)?;
        let (kind, layout, shape) = if self.is_tp_replicated(name) || self.is_averaged(name) {
            if local_shapes.iter().any(|s| s != first) {
                return Err(SchemaError::ReplicaShapesDiffer {
                    tensor: tensor(),
                    ranks: tp,
                    shapes: local_shapes.to_vec(),
                });
            }
            let kind = if self.is_tp_replicated(name) {
                TpKind::Replicated
            } else {
                TpKind::Averaged
            };
            (kind, Layout::Replicated { ranks: tp }, first.clone())
        } else if self.is_two_sub_params(name) {
            let (sizes, shape) = concat(name, 0, local_shapes)?;
            let halves: Vec<(u64, u64)> = sizes
                .iter()
                .map(|&n| (n.div_ceil(2), n - n.div_ceil(2)))
                .collect();
            let sub = |part: Vec<u64>| SubParam {
                size: part.iter().sum(),
                split: Split::Sizes(part),
            };
            let subs = vec![
                sub(halves.iter().map(|h| h.0).collect()),
                sub(halves.iter().map(|h| h.1).collect()),
            ];
            (
                TpKind::TwoSubParams,
                Layout::Fused {
                    dim: 0,
                    parts: tp,
                    subs,
                },
                shape,
            )
        } else if let Some((spec, pattern)) = self.sub_params_for(name) {
            let (layout, shape) = self.sub_params(name, spec, pattern, local_shapes, tp)?;
            (TpKind::SubParams, layout, shape)
        } else {
            let (kind, dim) = if self.is_row_parallel(name) {
                (TpKind::Row, 1)
            } else {
                (TpKind::Column, 0)
            };
            let (sizes, shape) = concat(name, dim, local_shapes)?;
            (
                kind,
                Layout::Shard {
                    dim,
                    parts: tp,
                    split: Split::Sizes(sizes),
                },
                shape,
            )
        };
        let vocab = if self.is_vocabulary(name) {
            let v = self
                .original_vocab_size
                .ok_or_else(|| SchemaError::MissingVocabSize { tensor: tensor() })?;
            let rows = shape.first().copied().unwrap_or(0);
            if v > rows {
                return Err(SchemaError::VocabTooLarge {
                    tensor: tensor(),
                    vocab: v,
                    rows,
                });
            }
            Some(v)
        } else {
            None
        };
        crate::validate_layout(name, &shape, &layout)?;
        Ok(TpRule {
            replicated: kind == TpKind::Replicated,
            average: kind == TpKind::Averaged,
            kind,
            layout,
            shape,
            vocab,
        })
    }

    /// Refuses parameters listed in `autotp_unsupported_parameter_patterns`.
    fn check_supported(&self, name: &str) -> Result<()> {
        for (pattern, reason) in self.autotp_unsupported_parameter_patterns.iter().flatten() {
            let re = regex::Regex::new(&format!("^(?:{pattern})")).map_err(|e| {
                SchemaError::BadPattern {
                    pattern: pattern.clone(),
                    error: e.to_string(),
                }
            })?;
            if re.is_match(name) {
                return Err(SchemaError::AutoTpUnsupported {
                    tensor: name.into(),
                    reason: reason.clone(),
                });
            }
        }
        Ok(())
    }

    /// Fused sub-params: sizes from the spec (or, before 0.4, a count of equal parts), widths from
    /// `sub_param_shard_widths` (or even before 0.4); each rank must hold the sum of its widths.
    fn sub_params(
        &self,
        name: &str,
        spec: &SubParamSpec,
        pattern: &str,
        local_shapes: &[Vec<u64>],
        tp: u32,
    ) -> Result<(Layout, Vec<u64>)> {
        let tensor = || name.to_string();
        let pd = spec.partition_dim;
        let (local, mut shape) = concat(name, pd, local_shapes)?;
        let spec_err = || SchemaError::SubParamShape {
            tensor: tensor(),
            spec: spec.shape_text(),
            shape: local_shapes[0].clone(),
        };
        if spec.shape.len() != shape.len() {
            return Err(spec_err());
        }
        for (d, sd) in spec.shape.iter().enumerate().filter(|(d, _)| *d != pd) {
            let fits = match sd {
                SubDim::Size(n) => *n < 0 || *n as u64 == shape[d],
                SubDim::Subs(v) => checked_sum(v.iter().copied()) == Some(shape[d]),
            };
            if !fits {
                return Err(spec_err());
            }
        }
        let version = self.version_f64();
        let full: u64 = local.iter().sum();
        let (sizes, widths) = if version >= k::SHARD_WIDTHS_VERSION {
            let SubDim::Subs(sizes) = &spec.shape[pd] else {
                return Err(spec_err());
            };
            let widths = self
                .sub_param_shard_widths
                .as_ref()
                .and_then(|m| m.get(pattern))
                .ok_or_else(|| SchemaError::MissingShardWidths {
                    tensor: tensor(),
                    pattern: pattern.to_string(),
                    version: version.to_string(),
                })?;
            (sizes.clone(), widths.clone())
        } else {
            let sizes = match &spec.shape[pd] {
                SubDim::Subs(v) => v.clone(),
                SubDim::Size(n) => {
                    let n = u64::try_from(*n).unwrap_or(0);
                    if n == 0 || n > full.max(1) || !full.is_multiple_of(n) {
                        return Err(SchemaError::SubParamCount {
                            tensor: tensor(),
                            count: n,
                            size: full,
                        });
                    }
                    vec![full / n; n as usize]
                }
            };
            if let Some(&size) = sizes.iter().find(|&&s| !s.is_multiple_of(tp as u64)) {
                return Err(SchemaError::UnevenSplit {
                    tensor: tensor(),
                    dim: pd,
                    size,
                    parts: tp,
                });
            }
            let widths = sizes.iter().map(|&s| Split::Even.sizes(s, tp)).collect();
            (sizes, widths)
        };
        let layout = fused(name, pd, tp, &sizes, &widths)?;
        for (rank, &got) in local.iter().enumerate() {
            let expected = checked_sum(widths.iter().map(|w| w.get(rank).copied().unwrap_or(0)));
            if Some(got) != expected {
                let expected = expected.unwrap_or(u64::MAX);
                return Err(SchemaError::LocalShapeMismatch {
                    tensor: tensor(),
                    rank: rank as u32,
                    dim: pd,
                    got,
                    expected,
                });
            }
        }
        shape[pd] = full;
        Ok((layout, shape))
    }
}

/// Sum without overflow (`None` when it would overflow).
fn checked_sum(v: impl IntoIterator<Item = u64>) -> Option<u64> {
    v.into_iter().try_fold(0u64, |a, b| a.checked_add(b))
}

/// Concatenation of the local shapes along `dim`: each rank's size there and the full shape.
/// All ranks must have the same rank (ndim) and agree outside `dim`.
fn concat(name: &str, dim: usize, local_shapes: &[Vec<u64>]) -> Result<(Vec<u64>, Vec<u64>)> {
    let first = local_shapes.first().ok_or_else(|| SchemaError::ZeroRanks {
        tensor: name.into(),
    })?;
    if dim >= first.len() {
        return Err(SchemaError::DimOutOfRange {
            tensor: name.into(),
            dim,
            ndim: first.len(),
        });
    }
    let differs = |s: &Vec<u64>| {
        s.len() != first.len()
            || s.iter()
                .zip(first)
                .enumerate()
                .any(|(d, (a, b))| d != dim && a != b)
    };
    let sizes: Vec<u64> = local_shapes
        .iter()
        .map(|s| s.get(dim).copied().unwrap_or(0))
        .collect();
    let total = checked_sum(sizes.iter().copied());
    match total {
        Some(total) if !local_shapes.iter().any(differs) => {
            let mut shape = first.clone();
            shape[dim] = total;
            Ok((sizes, shape))
        }
        _ => Err(SchemaError::LocalShapesDiffer {
            tensor: name.into(),
            dim,
            shapes: local_shapes.to_vec(),
        }),
    }
}
