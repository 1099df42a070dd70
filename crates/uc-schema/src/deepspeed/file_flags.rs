//! Flags stored beside the tensor in DeepSpeed's universal `zero/<param>/<state>.pt` dicts.

use super::json::{bool_of, u64_of, usize_of, Obj, Out, Result};
use super::keys as k;
use super::ucp_info::SubParamSpec;
use crate::{ExpertStorage, Layout, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use std::collections::BTreeMap;

/// The non-tensor keys of a universal state file (`{"param": tensor, "cat_dim": 0, …}`).
/// The `param` tensor itself is not part of this type: [`UniversalFileFlags::parse`] skips it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UniversalFileFlags {
    /// Dim the TP slices were concatenated on (DeepSpeed's loader re-chunks on it).
    pub cat_dim: Option<usize>,
    /// A vocabulary tensor trimmed to `original_vocab_size`; the loader pads it again.
    pub vocab_tensor: Option<bool>,
    /// Two (or more) equal sub-params fused on `cat_dim`.
    pub param_n_sub_params: Option<u64>,
    /// Fused sub-params with explicit sizes (DeepSpeed pickles its `SubparamShape` dataclass here).
    pub sub_param_shape: Option<SubParamSpec>,
    /// An AutoEP expert tensor `[ep_num_experts, …]` in global expert order.
    pub is_expert_param: Option<bool>,
    pub ep_num_experts: Option<u64>,
    pub extra: BTreeMap<String, Value>,
}

impl UniversalFileFlags {
    /// Reads the dict, ignoring its `param` tensor.
    pub fn parse(j: &J) -> Result<UniversalFileFlags> {
        let mut o = Obj::new("universal state file", j)?;
        o.skip(k::PARAM);
        Ok(UniversalFileFlags {
            cat_dim: o.opt(k::CAT_DIM, usize_of)?,
            vocab_tensor: o.opt(k::VOCAB_TENSOR, bool_of)?,
            param_n_sub_params: o.opt(k::PARAM_N_SUB_PARAMS, u64_of)?,
            sub_param_shape: o.opt(k::SUB_PARAM_SHAPE, SubParamSpec::parse_at)?,
            is_expert_param: o.opt(k::EP_IS_EXPERT_PARAM, bool_of)?,
            ep_num_experts: o.opt(k::EP_NUM_EXPERTS, u64_of)?,
            extra: o.extra(),
        })
    }

    /// Emits the flags (without `param`; the writer adds the tensor).
    pub fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.opt(k::CAT_DIM, &self.cat_dim, |&d| J::from(d));
        out.opt(k::VOCAB_TENSOR, &self.vocab_tensor, |&b| J::Bool(b));
        out.opt(k::PARAM_N_SUB_PARAMS, &self.param_n_sub_params, |&n| {
            J::from(n)
        });
        out.opt(
            k::SUB_PARAM_SHAPE,
            &self.sub_param_shape,
            SubParamSpec::to_json,
        );
        out.opt(k::EP_IS_EXPERT_PARAM, &self.is_expert_param, |&b| {
            J::Bool(b)
        });
        out.opt(k::EP_NUM_EXPERTS, &self.ep_num_experts, |&n| J::from(n));
        out.done()
    }

    /// Flags DeepSpeed writes for an AutoEP expert tensor of `num_experts` experts.
    pub fn expert(num_experts: u64) -> UniversalFileFlags {
        UniversalFileFlags {
            cat_dim: Some(0),
            is_expert_param: Some(true),
            ep_num_experts: Some(num_experts),
            ..UniversalFileFlags::default()
        }
    }

    /// True for AutoEP expert tensors.
    pub fn is_expert(&self) -> bool {
        self.is_expert_param == Some(true)
    }

    /// The layout of this expert tensor over `ep` target ranks (stacked `[E, …]`), or `None` for
    /// non-expert tensors or when `ep_num_experts` is missing. Validate it against the shape.
    pub fn experts_layout(&self, ep: u32) -> Option<Layout> {
        let num_experts = self.ep_num_experts.filter(|_| self.is_expert())?;
        Some(Layout::Experts {
            num_experts,
            ep,
            storage: ExpertStorage::Stacked,
        })
    }
}
