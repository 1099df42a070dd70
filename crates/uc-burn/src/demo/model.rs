//! A one-block transformer LM whose every rank holds only its shards: vocab-parallel embedding,
//! column-parallel fused QKV with GQA sizes, row-parallel attention output and MLP down, column-parallel
//! MLP up and LM head, combined by in-process all-reduce (sum) and all-gather (cat).

use crate::error::{BurnError, Result};
use crate::spec::{LayoutRules, ParamLayout};
use burn::tensor::activation::{gelu, log_softmax, softmax};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use std::collections::BTreeMap;
use uc_schema::Split;

/// Sizes of the demo model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub vocab: usize,
    pub d_model: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub seq: usize,
    pub batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vocab: 64,
            d_model: 32,
            q_heads: 8,
            kv_heads: 4,
            head_dim: 4,
            d_ff: 64,
            seq: 16,
            batch: 8,
        }
    }
}

impl Config {
    /// Every parameter with its global shape (Burn's `[d_in, d_out]` convention).
    pub fn params(&self) -> Vec<(String, Vec<u64>)> {
        let (v, d, f) = (self.vocab as u64, self.d_model as u64, self.d_ff as u64);
        let (q, kv) = (
            (self.q_heads * self.head_dim) as u64,
            (self.kv_heads * self.head_dim) as u64,
        );
        [
            ("embed.weight", vec![v, d]),
            ("block.norm1.gamma", vec![d]),
            ("block.attn.qkv.weight", vec![d, q + 2 * kv]),
            ("block.attn.out.weight", vec![q, d]),
            ("block.attn.out.bias", vec![d]),
            ("block.norm2.gamma", vec![d]),
            ("block.mlp.up.weight", vec![d, f]),
            ("block.mlp.up.bias", vec![f]),
            ("block.mlp.down.weight", vec![f, d]),
            ("block.mlp.down.bias", vec![d]),
            ("norm_f.gamma", vec![d]),
            ("lm_head.weight", vec![d, v]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect()
    }

    /// The tensor-parallel layout of every parameter.
    pub fn rules(&self) -> Result<LayoutRules> {
        let (q, kv) = (
            (self.q_heads * self.head_dim) as u64,
            (self.kv_heads * self.head_dim) as u64,
        );
        LayoutRules::new()
            .rule(
                r"^embed\.weight$",
                ParamLayout::Shard {
                    dim: 0,
                    split: Split::Even,
                },
            )?
            .rule(
                r"\.qkv\.weight$",
                ParamLayout::Fused {
                    sizes: vec![q, kv, kv],
                },
            )?
            .rule(r"\.out\.weight$", ParamLayout::Row)?
            .rule(r"\.up\.(weight|bias)$", ParamLayout::Column)?
            .rule(r"\.down\.weight$", ParamLayout::Row)?
            .rule(r"^lm_head\.weight$", ParamLayout::Column)
    }

    /// Checks the sizes split over `tp` ranks (heads, vocab, hidden).
    pub fn check(&self, tp: usize) -> Result<()> {
        let ok = tp > 0
            && self.q_heads.is_multiple_of(self.kv_heads.max(1))
            && [self.q_heads, self.kv_heads, self.vocab, self.d_ff]
                .iter()
                .all(|&n| n > 0 && n.is_multiple_of(tp));
        match ok {
            true => Ok(()),
            false => Err(BurnError::Layout {
                tensor: "demo model".into(),
                shape: vec![
                    self.q_heads as u64,
                    self.kv_heads as u64,
                    self.vocab as u64,
                    self.d_ff as u64,
                ],
                why: format!("heads, vocab and d_ff must split over tp={tp}"),
            }),
        }
    }

    /// Deterministic initial values of every parameter (whole tensors, host).
    pub fn init(&self, seed: u64) -> BTreeMap<String, Vec<f32>> {
        let mut rng = crate::demo::data::Rng::new(seed);
        self.params()
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product::<u64>() as usize;
                let v = if name.ends_with("gamma") {
                    vec![1.0; n]
                } else if name.ends_with("bias") {
                    vec![0.0; n]
                } else {
                    let scale = 2.0 / (shape[0] as f32).sqrt();
                    (0..n).map(|_| rng.uniform() * scale).collect()
                };
                (name, v)
            })
            .collect()
    }
}

/// One rank's parameters, reshaped, on the autodiff backend.
pub struct RankParams<B: Backend> {
    pub tensors: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> RankParams<B> {
    fn get(&self, name: &str) -> Result<Tensor<B, 1>> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| BurnError::Missing {
                tensor: name.to_string(),
                role: "param".into(),
                why: "the rank does not hold it".into(),
            })
    }

    fn mat(&self, name: &str, cols: usize) -> Result<Tensor<B, 2>> {
        let t = self.get(name)?;
        let n = t.dims()[0];
        if cols == 0 || !n.is_multiple_of(cols) {
            return Err(BurnError::Data {
                tensor: name.into(),
                why: format!("{n} elements are not rows of {cols}"),
            });
        }
        Ok(t.reshape([n / cols, cols]))
    }

    fn vec3(&self, name: &str) -> Result<Tensor<B, 3>> {
        let t = self.get(name)?;
        let n = t.dims()[0];
        Ok(t.reshape([1, 1, n]))
    }
}

fn rmsnorm<B: Backend>(x: Tensor<B, 3>, gamma: Tensor<B, 3>) -> Tensor<B, 3> {
    let ms = x.clone().mul(x.clone()).mean_dim(2).add_scalar(1e-6);
    x.div(ms.sqrt()).mul(gamma)
}

fn matmul<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 3> {
    x.matmul(w.unsqueeze::<3>())
}

fn all_reduce<B: Backend>(parts: Vec<Tensor<B, 3>>) -> Result<Tensor<B, 3>> {
    parts
        .into_iter()
        .reduce(|a, b| a + b)
        .ok_or_else(|| BurnError::Data {
            tensor: "all-reduce".into(),
            why: "no ranks".into(),
        })
}

/// The mean next-token cross-entropy of `tokens` (`batch × (seq+1)` ids) over the ranks' shards.
pub fn loss<B: Backend>(
    cfg: &Config,
    ranks: &[RankParams<B>],
    tokens: &[u32],
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    let tp = ranks.len();
    cfg.check(tp)?;
    let (b, t, d, v) = (cfg.batch, cfg.seq, cfg.d_model, cfg.vocab);
    let n = b * t;
    if tokens.len() != b * (t + 1) || tokens.iter().any(|&x| x as usize >= v) {
        return Err(BurnError::Data {
            tensor: "tokens".into(),
            why: format!("{} ids, want {} below {v}", tokens.len(), b * (t + 1)),
        });
    }
    let inputs: Vec<usize> = (0..n)
        .map(|i| tokens[(i / t) * (t + 1) + i % t] as usize)
        .collect();
    let targets: Vec<usize> = (0..n)
        .map(|i| tokens[(i / t) * (t + 1) + i % t + 1] as usize)
        .collect();
    let one_hot = |ids: &[usize], lo: usize, width: usize| -> Tensor<B, 2> {
        let mut h = vec![0f32; ids.len() * width];
        for (i, &id) in ids.iter().enumerate() {
            if (lo..lo + width).contains(&id) {
                h[i * width + id - lo] = 1.0;
            }
        }
        Tensor::from_data(TensorData::new(h, [ids.len(), width]), device)
    };
    // Vocab-parallel embedding: each rank looks up its rows, all-reduce.
    let vl = v / tp;
    let mut parts = Vec::with_capacity(tp);
    for (r, p) in ranks.iter().enumerate() {
        parts.push(
            one_hot(&inputs, r * vl, vl)
                .matmul(p.mat("embed.weight", d)?)
                .reshape([b, t, d]),
        );
    }
    let mut x = all_reduce(parts)?;
    // Attention: column-parallel fused QKV (GQA), row-parallel output, all-reduce.
    let (hq, hkv, hd) = (cfg.q_heads / tp, cfg.kv_heads / tp, cfg.head_dim);
    let group = cfg.q_heads / cfg.kv_heads;
    let mut mask = vec![0f32; t * t];
    for i in 0..t {
        for j in i + 1..t {
            mask[i * t + j] = -1e9;
        }
    }
    let mask: Tensor<B, 4> = Tensor::from_data(TensorData::new(mask, [1, 1, t, t]), device);
    let mut parts = Vec::with_capacity(tp);
    for p in ranks {
        let h = rmsnorm(x.clone(), p.vec3("block.norm1.gamma")?);
        let qkv = matmul(h, p.mat("block.attn.qkv.weight", (hq + 2 * hkv) * hd)?);
        let q = qkv
            .clone()
            .slice([0..b, 0..t, 0..hq * hd])
            .reshape([b, t, hq, hd])
            .swap_dims(1, 2);
        let kv = |at: usize| -> Tensor<B, 4> {
            qkv.clone()
                .slice([0..b, 0..t, at..at + hkv * hd])
                .reshape([b, t, hkv, 1, hd])
                .repeat_dim(3, group)
                .reshape([b, t, hq, hd])
                .swap_dims(1, 2)
        };
        let (k, vv) = (kv(hq * hd), kv((hq + hkv) * hd));
        let scores = q.matmul(k.transpose()).div_scalar((hd as f64).sqrt()) + mask.clone();
        let o = softmax(scores, 3)
            .matmul(vv)
            .swap_dims(1, 2)
            .reshape([b, t, hq * hd]);
        parts.push(matmul(o, p.mat("block.attn.out.weight", d)?));
    }
    x = x + all_reduce(parts)? + ranks[0].vec3("block.attn.out.bias")?;
    // MLP: column-parallel up, row-parallel down, all-reduce.
    let mut parts = Vec::with_capacity(tp);
    for p in ranks {
        let h = rmsnorm(x.clone(), p.vec3("block.norm2.gamma")?);
        let up = p.get("block.mlp.up.bias")?;
        let fl = up.dims()[0];
        let u = gelu(matmul(h, p.mat("block.mlp.up.weight", fl)?) + up.reshape([1, 1, fl]));
        parts.push(matmul(u, p.mat("block.mlp.down.weight", d)?));
    }
    x = x + all_reduce(parts)? + ranks[0].vec3("block.mlp.down.bias")?;
    // Column-parallel LM head, all-gather of the logits, cross-entropy.
    let mut logits = Vec::with_capacity(tp);
    for p in ranks {
        let h = rmsnorm(x.clone(), p.vec3("norm_f.gamma")?);
        logits.push(matmul(h, p.mat("lm_head.weight", vl)?));
    }
    let logits: Tensor<B, 2> = Tensor::cat(logits, 2).reshape([n, v]);
    let nll = log_softmax(logits, 1)
        .mul(one_hot(&targets, 0, v))
        .sum_dim(1);
    Ok(nll.mean().neg())
}
