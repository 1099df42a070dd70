//! AutoEP layer metadata (`ds_autoep_layers`, legacy `autoep_layers`) and its expert-parallel layout.

use super::affine::AffineMap;
use super::json::{
    self, i64_of, list_of, string_of, u32_of, u64_of, u64s_json, u64s_of, Obj, Out, Result,
};
use super::keys as k;
use crate::{ExpertStorage, Layout, SchemaError, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use std::collections::{BTreeMap, BTreeSet};

/// The experts one EP rank owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankExperts {
    pub rank: u32,
    /// Global expert ids.
    pub experts: Vec<u64>,
    pub extra: BTreeMap<String, Value>,
}

/// `expert_placement`: which EP rank owns which global experts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertPlacement {
    pub version: Option<i64>,
    pub num_experts: u64,
    pub ep_size: u32,
    pub ranks: Vec<RankExperts>,
    pub extra: BTreeMap<String, Value>,
}

impl ExpertPlacement {
    /// Reads the placement dict.
    fn parse(j: &J, key: &str) -> Result<ExpertPlacement> {
        let mut o = Obj::new(key, j)?;
        Ok(ExpertPlacement {
            version: o.opt("version", i64_of)?,
            num_experts: o.req("num_experts", u64_of)?,
            ep_size: o.req("ep_size", u32_of)?,
            ranks: o.req("ranks", |j, k| {
                list_of(j, k, |j, k| {
                    let mut r = Obj::new(k, j)?;
                    Ok(RankExperts {
                        rank: r.req("rank", u32_of)?,
                        experts: r.req("experts", u64s_of)?,
                        extra: r.extra(),
                    })
                })
            })?,
            extra: o.extra(),
        })
    }

    /// Emits the placement dict.
    fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.opt("version", &self.version, |&v| J::from(v));
        out.put("num_experts", J::from(self.num_experts));
        out.put("ep_size", J::from(self.ep_size));
        let ranks = self.ranks.iter().map(|r| {
            let mut o = Out::new(&r.extra);
            o.put("rank", J::from(r.rank));
            o.put("experts", u64s_json(&r.experts));
            o.done()
        });
        out.put("ranks", J::Array(ranks.collect()));
        out.done()
    }
}

/// One entry of `ds_autoep_layers`: an AutoEP MoE layer as seen from the rank that wrote the file.
/// The first six fields are the ones DeepSpeed requires; ZeRO-1/2 universal output keeps only those.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoEpLayer {
    pub moe_layer_id: u64,
    /// Module path of the MoE block (`model.layers.0.mlp`).
    pub module_path: String,
    pub num_experts: u64,
    pub num_local_experts: u64,
    pub ep_size: u32,
    /// Prefix of the expert parameters (`model.layers.0.mlp.experts`; params are `<prefix>.w1` …).
    pub expert_key_prefix: String,
    pub expert_placement: Option<ExpertPlacement>,
    /// Per expert parameter (by name): which pieces of `[E, …]` each EP rank holds.
    pub affine_maps: Option<AffineMap>,
    /// `per_expert_files` (ZeRO-1/2) or `zero3_partitioned` (ZeRO-3).
    pub checkpoint_format: Option<String>,
    pub checkpoint_format_version: Option<i64>,
    pub ep_group_name: Option<String>,
    pub ep_rank: Option<u32>,
    pub expert_data_parallel_rank: Option<u32>,
    pub expert_data_parallel_world_size: Option<u32>,
    pub global_expert_start: Option<u64>,
    pub global_expert_end: Option<u64>,
    pub extra: BTreeMap<String, Value>,
}

impl AutoEpLayer {
    /// Reads one entry dict.
    pub fn parse(j: &J) -> Result<AutoEpLayer> {
        AutoEpLayer::parse_at(j, "ds_autoep_layers[]")
    }

    /// Reads one entry dict; `key` names it in errors.
    pub(crate) fn parse_at(j: &J, key: &str) -> Result<AutoEpLayer> {
        let mut o = Obj::new(key, j)?;
        Ok(AutoEpLayer {
            moe_layer_id: o.req("moe_layer_id", u64_of)?,
            module_path: o.req("module_path", string_of)?,
            num_experts: o.req("num_experts", u64_of)?,
            num_local_experts: o.req("num_local_experts", u64_of)?,
            ep_size: o.req("ep_size", u32_of)?,
            expert_key_prefix: o.req("expert_key_prefix", string_of)?,
            expert_placement: o.opt("expert_placement", ExpertPlacement::parse)?,
            affine_maps: o.opt("affine_maps", AffineMap::parse_at)?,
            checkpoint_format: o.opt("checkpoint_format", string_of)?,
            checkpoint_format_version: o.opt("checkpoint_format_version", i64_of)?,
            ep_group_name: o.opt("ep_group_name", string_of)?,
            ep_rank: o.opt("ep_rank", u32_of)?,
            expert_data_parallel_rank: o.opt("expert_data_parallel_rank", u32_of)?,
            expert_data_parallel_world_size: o.opt("expert_data_parallel_world_size", u32_of)?,
            global_expert_start: o.opt("global_expert_start", u64_of)?,
            global_expert_end: o.opt("global_expert_end", u64_of)?,
            extra: o.extra(),
        })
    }

    /// Emits the entry dict.
    pub fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.put("moe_layer_id", J::from(self.moe_layer_id));
        out.put("module_path", J::String(self.module_path.clone()));
        out.put("num_experts", J::from(self.num_experts));
        out.put("num_local_experts", J::from(self.num_local_experts));
        out.put("ep_size", J::from(self.ep_size));
        out.put(
            "expert_key_prefix",
            J::String(self.expert_key_prefix.clone()),
        );
        out.opt(
            "expert_placement",
            &self.expert_placement,
            ExpertPlacement::to_json,
        );
        out.opt("affine_maps", &self.affine_maps, AffineMap::to_json);
        out.opt("checkpoint_format", &self.checkpoint_format, |s| {
            J::String(s.clone())
        });
        out.opt(
            "checkpoint_format_version",
            &self.checkpoint_format_version,
            |&v| J::from(v),
        );
        out.opt("ep_group_name", &self.ep_group_name, |s| {
            J::String(s.clone())
        });
        out.opt("ep_rank", &self.ep_rank, |&v| J::from(v));
        out.opt(
            "expert_data_parallel_rank",
            &self.expert_data_parallel_rank,
            |&v| J::from(v),
        );
        out.opt(
            "expert_data_parallel_world_size",
            &self.expert_data_parallel_world_size,
            |&v| J::from(v),
        );
        out.opt("global_expert_start", &self.global_expert_start, |&v| {
            J::from(v)
        });
        out.opt("global_expert_end", &self.global_expert_end, |&v| {
            J::from(v)
        });
        out.done()
    }

    /// True when `name` is one of this layer's expert parameters (`<expert_key_prefix>.…`).
    pub fn owns(&self, name: &str) -> bool {
        name.strip_prefix(self.expert_key_prefix.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// Names of this layer's expert parameters: the affine map's keys, else DeepSpeed's fixed
    /// `<prefix>.w1`, `w2`, `w3`.
    pub fn expert_params(&self) -> Vec<String> {
        match &self.affine_maps {
            Some(m) if !m.params.is_empty() => m.params.keys().cloned().collect(),
            _ => ["w1", "w2", "w3"]
                .iter()
                .map(|w| format!("{}.{w}", self.expert_key_prefix))
                .collect(),
        }
    }

    /// Checks counts and placement: `num_local_experts * ep_size == num_experts`, experts divisible
    /// over ep, each EP rank owning the contiguous block `r*E_local..`, and the global expert range.
    pub fn validate(&self) -> Result<()> {
        let layer = || self.module_path.clone();
        if self.ep_size == 0 {
            return Err(SchemaError::ZeroRanks { tensor: layer() });
        }
        if !self.num_experts.is_multiple_of(self.ep_size as u64) {
            return Err(SchemaError::ExpertsNotDivisible {
                tensor: layer(),
                experts: self.num_experts,
                ep: self.ep_size,
            });
        }
        if self.num_local_experts.checked_mul(self.ep_size as u64) != Some(self.num_experts) {
            return Err(SchemaError::ExpertCountMismatch {
                layer: layer(),
                num_experts: self.num_experts,
                num_local_experts: self.num_local_experts,
                ep: self.ep_size,
            });
        }
        let local = self.num_local_experts;
        if let Some(p) = &self.expert_placement {
            if p.num_experts != self.num_experts || p.ep_size != self.ep_size {
                return Err(SchemaError::ExpertCountMismatch {
                    layer: layer(),
                    num_experts: p.num_experts,
                    num_local_experts: local,
                    ep: p.ep_size,
                });
            }
            for r in &p.ranks {
                let start = r.rank as u64 * local;
                if r.rank >= self.ep_size || !r.experts.iter().copied().eq(start..start + local) {
                    return Err(SchemaError::ExpertPlacement {
                        layer: layer(),
                        rank: r.rank,
                        experts: r.experts.clone(),
                        local,
                        expected_start: start,
                    });
                }
            }
        }
        if let (Some(rank), Some(start), Some(end)) = (
            self.ep_rank,
            self.global_expert_start,
            self.global_expert_end,
        ) {
            let expected_start = rank as u64 * local;
            if start != expected_start || end != expected_start + local {
                return Err(SchemaError::ExpertRange {
                    layer: layer(),
                    rank,
                    local,
                    start,
                    end,
                    expected_start,
                    expected_end: expected_start + local,
                });
            }
        }
        Ok(())
    }

    /// The source layout of this layer's expert parameters: `Layout::Experts` over `ep_size` ranks.
    /// `Stacked` for the ZeRO partitions (`[E_local, …]` per rank), `PerExpert` for the per-expert files.
    pub fn experts_layout(&self, storage: ExpertStorage) -> Result<Layout> {
        self.validate()?;
        Ok(Layout::Experts {
            num_experts: self.num_experts,
            ep: self.ep_size,
            storage,
        })
    }

    /// True for ZeRO-3 checkpoints whose experts live in the ZeRO-3 shards (no per-expert files).
    pub fn is_zero3_partitioned(&self) -> bool {
        self.checkpoint_format.as_deref() == Some(k::AUTOEP_ZERO3_PARTITIONED)
    }
}

/// Reads a `ds_autoep_layers` list.
pub fn parse_autoep_layers(j: &J) -> Result<Vec<AutoEpLayer>> {
    list_of(j, k::AUTOEP_LAYERS, AutoEpLayer::parse_at)
}

/// Emits a `ds_autoep_layers` list.
pub fn autoep_layers_to_json(layers: &[AutoEpLayer]) -> J {
    J::Array(layers.iter().map(AutoEpLayer::to_json).collect())
}

/// The AutoEP layers of a model_states dict: `ds_autoep_layers`, else the legacy `autoep_layers`;
/// `None` when neither is set (DeepSpeed writes `None` for models without AutoEP layers).
pub fn autoep_layers_in(model_states: &J) -> Result<Option<Vec<AutoEpLayer>>> {
    let o = model_states
        .as_object()
        .ok_or_else(|| json::wrong("model_states", "a dict", model_states))?;
    for key in [k::AUTOEP_LAYERS, k::AUTOEP_LAYERS_LEGACY] {
        match o.get(key) {
            None | Some(J::Null) => continue,
            Some(j) => return list_of(j, key, AutoEpLayer::parse_at).map(Some),
        }
    }
    Ok(None)
}

/// Checks every layer and that no `moe_layer_id` or `expert_key_prefix` repeats (as DeepSpeed does).
pub fn validate_autoep_layers(layers: &[AutoEpLayer]) -> Result<()> {
    let mut ids = BTreeSet::new();
    let mut prefixes = BTreeSet::new();
    for l in layers {
        if !ids.insert(l.moe_layer_id) {
            return Err(SchemaError::DuplicateExpertLayer {
                what: "moe_layer_id",
                value: l.moe_layer_id.to_string(),
            });
        }
        if !prefixes.insert(l.expert_key_prefix.as_str()) {
            return Err(SchemaError::DuplicateExpertLayer {
                what: "expert_key_prefix",
                value: l.expert_key_prefix.clone(),
            });
        }
        l.validate()?;
    }
    Ok(())
}
