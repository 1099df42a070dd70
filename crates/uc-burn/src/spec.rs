//! The declarative part: parameter-name patterns → layouts, turned into uc-schema [`TensorMeta`]s.

use crate::error::{BurnError, Result};
use regex::Regex;
use uc_schema::{DType, ExpertStorage, Layout, Role, Split, SubParam, TensorMeta};

/// How one parameter is spread over the tensor-parallel ranks (Burn's `[d_in, d_out]` weights).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamLayout {
    /// Every rank holds all of it (norms, row-parallel biases).
    Replicated,
    /// Column parallel: the last (output) dim is split evenly.
    Column,
    /// Row parallel: dim 0 (the input dim of a weight) is split evenly.
    Row,
    /// Split along an explicit dim, with a uc-schema split rule (vocab-parallel embeddings…).
    Shard { dim: usize, split: Split },
    /// Fused sub-params (QKV with GQA sizes) along the last dim, each split evenly on its own.
    Fused { sizes: Vec<u64> },
    /// Stacked experts `[E, …]`, expert-parallel over the ranks.
    Experts { num_experts: u64 },
}

impl ParamLayout {
    /// The uc-schema layout of a tensor of `shape` over `ranks` ranks.
    pub fn layout(&self, name: &str, shape: &[u64], ranks: u32) -> Result<Layout> {
        let bad = |why: String| BurnError::Layout {
            tensor: name.to_string(),
            shape: shape.to_vec(),
            why,
        };
        let last = shape.len().checked_sub(1);
        let even = |dim: usize| -> Result<Layout> {
            let size = shape[dim];
            if ranks == 0 || !size.is_multiple_of(ranks as u64) {
                return Err(bad(format!(
                    "dim {dim} ({size}) does not split over {ranks} ranks"
                )));
            }
            Ok(Layout::Shard {
                dim,
                parts: ranks,
                split: Split::Even,
            })
        };
        match self {
            ParamLayout::Replicated => Ok(Layout::Replicated { ranks }),
            ParamLayout::Column => even(last.ok_or_else(|| bad("a 0-d tensor has no dim".into()))?),
            ParamLayout::Row => match last {
                Some(_) => even(0),
                None => Err(bad("a 0-d tensor has no dim".into())),
            },
            ParamLayout::Shard { dim, split } => {
                if *dim >= shape.len() {
                    return Err(bad(format!("no dim {dim}")));
                }
                Ok(Layout::Shard {
                    dim: *dim,
                    parts: ranks,
                    split: split.clone(),
                })
            }
            ParamLayout::Fused { sizes } => {
                let dim = last.ok_or_else(|| bad("a 0-d tensor has no dim".into()))?;
                if sizes.iter().sum::<u64>() != shape[dim] {
                    return Err(bad(format!(
                        "sub-param sizes {sizes:?} do not sum to dim {dim}"
                    )));
                }
                if let Some(s) = sizes
                    .iter()
                    .find(|&&s| ranks == 0 || !s.is_multiple_of(ranks as u64))
                {
                    return Err(bad(format!(
                        "sub-param of {s} does not split over {ranks} ranks"
                    )));
                }
                let subs = sizes
                    .iter()
                    .map(|&size| SubParam {
                        size,
                        split: Split::Even,
                    })
                    .collect();
                Ok(Layout::Fused {
                    dim,
                    parts: ranks,
                    subs,
                })
            }
            ParamLayout::Experts { num_experts } => {
                if shape.first() != Some(num_experts)
                    || ranks == 0
                    || !num_experts.is_multiple_of(ranks as u64)
                {
                    return Err(bad(format!(
                        "{num_experts} experts do not fit dim 0 over {ranks} ranks"
                    )));
                }
                Ok(Layout::Experts {
                    num_experts: *num_experts,
                    ep: ranks,
                    storage: ExpertStorage::Stacked,
                })
            }
        }
    }
}

/// Ordered rules: the first pattern that matches a parameter name gives its layout.
#[derive(Debug, Clone, Default)]
pub struct LayoutRules {
    rules: Vec<(Regex, ParamLayout)>,
    fallback: Option<ParamLayout>,
}

impl LayoutRules {
    /// No rules: everything replicated.
    pub fn new() -> LayoutRules {
        LayoutRules::default()
    }

    /// Adds a rule: names matching the regex `pattern` (searched, not anchored) get `layout`.
    pub fn rule(mut self, pattern: &str, layout: ParamLayout) -> Result<LayoutRules> {
        let re = Regex::new(pattern).map_err(|e| BurnError::Pattern {
            pattern: pattern.to_string(),
            why: e.to_string(),
        })?;
        self.rules.push((re, layout));
        Ok(self)
    }

    /// Layout for names no rule matches (default: replicated).
    pub fn otherwise(mut self, layout: ParamLayout) -> LayoutRules {
        self.fallback = Some(layout);
        self
    }

    /// The layout rule of a parameter name.
    pub fn of(&self, name: &str) -> &ParamLayout {
        self.rules
            .iter()
            .find(|(re, _)| re.is_match(name))
            .map(|(_, l)| l)
            .or(self.fallback.as_ref())
            .unwrap_or(&ParamLayout::Replicated)
    }

    /// Metas of every parameter (`(name, global shape)`) over `ranks` ranks; with `adam`, also
    /// `exp_avg`, `exp_avg_sq` (same layout) and a replicated 0-d `step` per parameter.
    pub fn metas(
        &self,
        params: &[(String, Vec<u64>)],
        ranks: u32,
        adam: bool,
    ) -> Result<Vec<TensorMeta>> {
        let mut out = Vec::with_capacity(params.len() * if adam { 4 } else { 1 });
        for (name, shape) in params {
            let layout = self.of(name).layout(name, shape, ranks)?;
            let meta = |role| {
                TensorMeta::new(name.clone(), DType::F32, shape.clone(), role)
                    .with_layout(layout.clone())
            };
            out.push(meta(Role::Param));
            if adam {
                out.push(meta(Role::ExpAvg));
                out.push(meta(Role::ExpAvgSq));
                out.push(
                    TensorMeta::new(name.clone(), DType::F32, vec![], Role::Step)
                        .with_layout(Layout::Replicated { ranks }),
                );
            }
        }
        for m in &out {
            uc_merge::pieces(m)?;
        }
        Ok(out)
    }
}

/// The same metas re-laid over `ranks` ranks (the target topology of a resume).
pub fn relayout(rules: &LayoutRules, metas: &[TensorMeta], ranks: u32) -> Result<Vec<TensorMeta>> {
    metas
        .iter()
        .map(|m| {
            let layout = match m.role {
                Role::Step => Layout::Replicated { ranks },
                _ => rules.of(&m.name).layout(&m.name, &m.shape, ranks)?,
            };
            Ok(m.clone().with_layout(layout))
        })
        .collect()
}
