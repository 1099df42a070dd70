//! Adam on flat device tensors, element-wise, so a sharded step equals the unsharded one bit for bit.

use crate::error::{BurnError, Result};
use crate::shards::Shards;
use burn::tensor::{backend::Backend, Tensor};
use uc_schema::Role;

/// Adam hyper-parameters (PyTorch's defaults for the betas and eps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl Adam {
    /// One step of the parameter `name` (rank-local buffer 0) in `state`: updates `exp_avg`,
    /// `exp_avg_sq` and `step` there and returns the new parameter.
    pub fn step<B: Backend>(
        &self,
        name: &str,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        state: &mut Shards<B>,
    ) -> Result<Tensor<B, 1>> {
        let device = param.device();
        let n = param.dims()[0];
        let key = |r: Role| (name.to_string(), r, 0u32);
        let m = state
            .remove(&key(Role::ExpAvg))
            .unwrap_or_else(|| Tensor::zeros([n], &device));
        let v = state
            .remove(&key(Role::ExpAvgSq))
            .unwrap_or_else(|| Tensor::zeros([n], &device));
        let step = state
            .remove(&key(Role::Step))
            .unwrap_or_else(|| Tensor::zeros([1], &device));
        if m.dims()[0] != n || v.dims()[0] != n || grad.dims()[0] != n {
            return Err(BurnError::Data {
                tensor: name.into(),
                why: format!("state sizes differ from the parameter's {n}"),
            });
        }
        let t = crate::io::to_f32(name, step.clone())?
            .first()
            .copied()
            .unwrap_or(0.0) as f64
            + 1.0;
        let m = m
            .mul_scalar(self.beta1)
            .add(grad.clone().mul_scalar(1.0 - self.beta1));
        let v = v
            .mul_scalar(self.beta2)
            .add(grad.clone().mul(grad).mul_scalar(1.0 - self.beta2));
        let bc1 = 1.0 - self.beta1.powf(t);
        let bc2 = 1.0 - self.beta2.powf(t);
        let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(self.eps);
        let update = m.clone().div_scalar(bc1).div(denom).mul_scalar(self.lr);
        let out = param.sub(update);
        state.insert(key(Role::ExpAvg), m);
        state.insert(key(Role::ExpAvgSq), v);
        state.insert(key(Role::Step), step.add_scalar(1.0));
        Ok(out)
    }
}
