//! One tensor-parallel training run: every rank's shards of the parameters and Adam state.

use super::{data, model, DemoOptions};
use crate::adam::Adam;
use crate::error::{BurnError, Result};
use crate::load::LoadStats;
use crate::shards::{self, Shards};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::{Layout, Role, TensorMeta, Topology, Value};
use uc_store::native::NativeCheckpoint;

/// A simulated tensor-parallel run in one process.
pub struct Trainer<B: AutodiffBackend> {
    cfg: model::Config,
    adam: Adam,
    seed: u64,
    tp: u32,
    metas: Vec<TensorMeta>,
    ranks: Vec<Shards<B::InnerBackend>>,
    step: u64,
    device: B::Device,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A fresh run at `tp` ranks, parameters initialised from the seed and sharded on the device.
    pub fn new(opts: &DemoOptions, tp: u32, device: &B::Device) -> Result<Trainer<B>> {
        let cfg = opts.model;
        cfg.check(tp as usize)?;
        let metas = cfg.rules()?.metas(&cfg.params(), tp, true)?;
        let init = cfg.init(opts.seed);
        let mut ranks: Vec<Shards<B::InnerBackend>> = (0..tp).map(|_| Shards::new()).collect();
        for m in metas.iter().filter(|m| m.role == Role::Param) {
            let full = crate::io::from_f32::<B::InnerBackend>(init[&m.name].clone(), device);
            shards::scatter_into(&mut ranks, m, full)?;
        }
        Ok(Trainer {
            cfg,
            adam: Adam {
                lr: opts.lr,
                ..Adam::default()
            },
            seed: opts.seed,
            tp,
            metas,
            ranks,
            step: 0,
            device: device.clone(),
        })
    }

    /// A run at `tp` ranks resumed from a universal checkpoint: every rank loads only its bytes.
    pub fn resume(
        opts: &DemoOptions,
        tp: u32,
        ckpt: &NativeCheckpoint,
        device: &B::Device,
    ) -> Result<(Trainer<B>, LoadStats)> {
        let mut t = Trainer::<B>::new(opts, tp, device)?;
        let mut stats = LoadStats::default();
        for r in 0..tp {
            let (s, st) = crate::load::load_rank::<B::InnerBackend>(ckpt, &t.metas, r, device)?;
            stats.bytes_read += st.bytes_read;
            stats.bytes_needed += st.bytes_needed;
            t.ranks[r as usize] = s;
        }
        t.step = match ckpt.manifest().state.get("step") {
            Some(Value::Int(s)) if *s >= 0 => *s as u64,
            _ => {
                return Err(BurnError::Data {
                    tensor: "step".into(),
                    why: "the checkpoint has no training step".into(),
                })
            }
        };
        Ok((t, stats))
    }

    /// Checks that `other` (any TP) holds bitwise the same parameters and Adam state as this run.
    pub fn same_state(&self, other: &Trainer<B>) -> Result<()> {
        for (a, b) in self.metas.iter().zip(&other.metas) {
            let x = crate::io::to_f32(&a.name, shards::gather(a, &self.ranks, &self.device)?)?;
            let y = crate::io::to_f32(&b.name, shards::gather(b, &other.ranks, &other.device)?)?;
            if x.iter()
                .map(|v| v.to_bits())
                .ne(y.iter().map(|v| v.to_bits()))
            {
                return Err(BurnError::Data {
                    tensor: a.name.clone(),
                    why: format!(
                        "{} differs between TP={} and TP={}",
                        a.role.key(),
                        self.tp,
                        other.tp
                    ),
                });
            }
        }
        Ok(())
    }

    /// Saves every rank's shards into `dir/rank-NNNNN/`.
    pub fn save_sharded(&self, dir: &Path) -> Result<()> {
        let topo = Topology::new(&[("tp", self.tp)], 0);
        let mut state = BTreeMap::new();
        state.insert("step".to_string(), Value::Int(self.step as i64));
        state.insert("lr".to_string(), Value::Float(self.adam.lr));
        for (r, s) in self.ranks.iter().enumerate() {
            crate::save::save_rank(dir, r as u32, &self.metas, s, &topo, &state)?;
        }
        Ok(())
    }

    /// One training step (forward and backward over all ranks, Adam); returns the loss.
    pub fn step(&mut self, step: u64) -> Result<f64> {
        if step != self.step + 1 {
            return Err(BurnError::Data {
                tensor: "step".into(),
                why: format!("step {step} after step {}", self.step),
            });
        }
        let c = &self.cfg;
        let tokens = data::batch(step, c.batch, c.seq, c.vocab, self.seed);
        let params: Vec<model::RankParams<B>> = self
            .ranks
            .iter()
            .map(|s| model::RankParams {
                tensors: s
                    .iter()
                    .filter(|(k, _)| k.1 == Role::Param)
                    .map(|(k, t)| {
                        (
                            k.0.clone(),
                            Tensor::<B, 1>::from_inner(t.clone()).require_grad(),
                        )
                    })
                    .collect(),
            })
            .collect();
        let loss = model::loss(c, &params, &tokens, &self.device)?;
        let value = crate::io::to_f32("loss", loss.clone().inner())?
            .first()
            .copied()
            .unwrap_or(f32::NAN) as f64;
        let grads = loss.backward();
        for m in self.metas.iter().filter(|m| m.role == Role::Param) {
            let mut g: Vec<Tensor<B::InnerBackend, 1>> = Vec::with_capacity(params.len());
            for p in &params {
                let t = &p.tensors[&m.name];
                g.push(
                    t.grad(&grads)
                        .unwrap_or_else(|| Tensor::zeros([t.dims()[0]], &self.device)),
                );
            }
            if matches!(m.layout, Layout::Replicated { .. }) {
                // All-reduce of a replicated parameter's gradient: every copy takes the same step.
                let sum =
                    g.iter()
                        .cloned()
                        .reduce(|a, b| a + b)
                        .ok_or_else(|| BurnError::Data {
                            tensor: m.name.clone(),
                            why: "no ranks".into(),
                        })?;
                g = vec![sum; params.len()];
            }
            for (s, g) in self.ranks.iter_mut().zip(g) {
                let key = (m.name.clone(), Role::Param, 0);
                let p = s.remove(&key).ok_or_else(|| BurnError::Missing {
                    tensor: m.name.clone(),
                    role: "param".into(),
                    why: "rank lost it".into(),
                })?;
                let new = self.adam.step(&m.name, p, g, s)?;
                s.insert(key, new);
            }
        }
        self.step = step;
        Ok(value)
    }
}
