//! Description of one checkpoint tensor: name, type, shapes, role and layout.

use crate::{DType, Layout};
use serde::{Deserialize, Serialize};

/// What a tensor is for in training.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The working weights the model computes with (may be bf16/fp16).
    Param,
    /// The optimizer's fp32 master copy of a parameter.
    Fp32Master,
    /// Adam's first moment.
    ExpAvg,
    /// Adam's second moment.
    ExpAvgSq,
    /// The optimizer step counter.
    Step,
    /// A non-trainable buffer (running stats, rotary tables…).
    Buffer,
    /// Any other per-parameter optimizer state, by the optimizer's own key (`momentum_buffer`, …).
    OptimState(String),
}

impl Role {
    /// The key this role uses in checkpoints (`fp32`, `exp_avg`, `step`, …).
    pub fn key(&self) -> &str {
        match self {
            Role::Param => "param",
            Role::Fp32Master => "fp32",
            Role::ExpAvg => "exp_avg",
            Role::ExpAvgSq => "exp_avg_sq",
            Role::Step => "step",
            Role::Buffer => "buffer",
            Role::OptimState(k) => k,
        }
    }

    /// Inverse of [`Role::key`]; unknown keys become [`Role::OptimState`].
    pub fn from_key(key: &str) -> Role {
        match key {
            "param" => Role::Param,
            "fp32" => Role::Fp32Master,
            "exp_avg" => Role::ExpAvg,
            "exp_avg_sq" => Role::ExpAvgSq,
            "step" => Role::Step,
            "buffer" => Role::Buffer,
            k => Role::OptimState(k.to_string()),
        }
    }
}

/// One tensor of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMeta {
    /// Parameter name as the model names it (`blocks.0.qkv.weight`).
    pub name: String,
    pub dtype: DType,
    /// Logical (global, unpadded) shape.
    pub shape: Vec<u64>,
    /// Shape as stored when larger than the logical one (vocab padding); the extra rows belong to no one.
    pub padded_shape: Option<Vec<u64>>,
    pub role: Role,
    /// A parameter that does not train (no optimizer state).
    pub frozen: bool,
    /// How the stored (padded) tensor is spread over ranks.
    pub layout: Layout,
}

impl TensorMeta {
    /// A replicated, unpadded, trainable tensor on one rank.
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<u64>, role: Role) -> TensorMeta {
        TensorMeta {
            name: name.into(),
            dtype,
            shape,
            padded_shape: None,
            role,
            frozen: false,
            layout: Layout::single(),
        }
    }

    /// Builder: set the layout.
    pub fn with_layout(mut self, layout: Layout) -> TensorMeta {
        self.layout = layout;
        self
    }

    /// Builder: set the padded shape.
    pub fn with_padded(mut self, padded: Vec<u64>) -> TensorMeta {
        self.padded_shape = Some(padded);
        self
    }

    /// The shape the layout applies to: the padded shape if any, else the logical one.
    pub fn stored_shape(&self) -> &[u64] {
        self.padded_shape.as_deref().unwrap_or(&self.shape)
    }

    /// Number of logical elements (saturating: absurd shapes give `u64::MAX`, not a panic).
    pub fn numel(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Logical size in bytes (saturating).
    pub fn nbytes(&self) -> u64 {
        self.numel().saturating_mul(self.dtype.size() as u64)
    }
}
