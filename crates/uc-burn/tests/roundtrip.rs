//! Round trips through every layout kind, sharded save → convert → load at another TP, bit-exact.

mod common;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use common::{save_and_convert, scatter_all};
use std::collections::BTreeMap;
use uc_burn::shards::{self, FlattenAt};
use uc_burn::{io, module, spec, Cpu, LayoutRules, ParamLayout, Shards};
use uc_schema::{Role, Split, TensorMeta, Topology};
use uc_store::native::NativeCheckpoint;

type B = Cpu;

/// Deterministic pseudo-random values.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn bits(t: Tensor<B, 1>) -> Vec<u32> {
    io::to_f32("t", t)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn rules() -> LayoutRules {
    LayoutRules::new()
        .rule(
            r"^embed\.",
            ParamLayout::Shard {
                dim: 0,
                split: Split::Chunk,
            },
        )
        .unwrap()
        .rule(
            r"\.qkv\.",
            ParamLayout::Fused {
                sizes: vec![16, 8, 8],
            },
        )
        .unwrap()
        .rule(r"\.up\.", ParamLayout::Column)
        .unwrap()
        .rule(r"\.down\.weight$", ParamLayout::Row)
        .unwrap()
        .rule(r"^experts$", ParamLayout::Experts { num_experts: 4 })
        .unwrap()
}

/// Shards every full tensor of `metas` into per-rank shard sets, on the device.
fn params() -> Vec<(String, Vec<u64>)> {
    [
        ("embed.weight", vec![37, 8]),
        ("blocks.0.qkv.weight", vec![8, 32]),
        ("blocks.0.qkv.bias", vec![32]),
        ("blocks.0.up.weight", vec![8, 16]),
        ("blocks.0.down.weight", vec![16, 8]),
        ("blocks.0.down.bias", vec![8]),
        ("norm.gamma", vec![8]),
        ("experts", vec![4, 3, 5]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect()
}

fn full_state(metas: &[TensorMeta]) -> BTreeMap<(String, Role), Tensor<B, 1>> {
    let dev = Default::default();
    metas
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let v = if m.role == Role::Step {
                vec![7.0]
            } else {
                values(m.numel() as usize, i as u64)
            };
            ((m.name.clone(), m.role.clone()), io::from_f32::<B>(v, &dev))
        })
        .collect()
}

#[test]
fn every_layout_kind_round_trips_through_sharded_save_convert_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Default::default();
    let rules = rules();
    let metas2 = rules.metas(&params(), 2, true).unwrap();
    let kinds: std::collections::BTreeSet<String> =
        metas2.iter().map(|m| m.layout.kind()).collect();
    assert!(kinds.len() >= 5, "{kinds:?}");
    let full = full_state(&metas2);
    let ranks = scatter_all(&metas2, &full);
    let mut st = BTreeMap::new();
    st.insert("step".to_string(), uc_schema::Value::Int(7));
    let ck = save_and_convert(dir.path(), &metas2, &ranks, &st);
    for tp in [1u32, 2, 4] {
        let metas = spec::relayout(&rules, &metas2, tp).unwrap();
        let expect = scatter_all(&metas, &full);
        let mut loaded = Vec::new();
        for r in 0..tp {
            let (s, stats) = uc_burn::load_rank::<B>(&ck, &metas, r, &dev).unwrap();
            assert!(stats.ratio() <= 1.0 + 1e-9, "tp {tp} rank {r}: {stats:?}");
            assert_eq!(
                s.keys().collect::<Vec<_>>(),
                expect[r as usize].keys().collect::<Vec<_>>()
            );
            for (k, t) in &s {
                assert_eq!(
                    bits(t.clone()),
                    bits(expect[r as usize][k].clone()),
                    "tp {tp} rank {r} {k:?}"
                );
            }
            loaded.push(s);
        }
        // Gathered back on the device: the original whole tensors.
        for m in &metas {
            let g = shards::gather(m, &loaded, &dev).unwrap();
            assert_eq!(
                bits(g),
                bits(full[&(m.name.clone(), m.role.clone())].clone()),
                "{}",
                m.name
            );
        }
    }
}

#[test]
fn device_reshard_matches_load_and_direct_universal_write() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Default::default();
    let rules = rules();
    let metas2 = rules.metas(&params(), 2, true).unwrap();
    let full = full_state(&metas2);
    let ranks2 = scatter_all(&metas2, &full);
    let metas4 = spec::relayout(&rules, &metas2, 4).unwrap();
    let on_device = shards::reshard(&metas2, &ranks2, &metas4, &dev).unwrap();
    let expect = scatter_all(&metas4, &full);
    for (r, s) in on_device.iter().enumerate() {
        for (k, t) in s {
            assert_eq!(
                bits(t.clone()),
                bits(expect[r][k].clone()),
                "rank {r} {k:?}"
            );
        }
    }
    let out = dir.path().join("direct");
    uc_burn::save_universal(
        &out,
        &metas2,
        &ranks2,
        &Topology::new(&[("tp", 2)], 0),
        &BTreeMap::new(),
        &dev,
    )
    .unwrap();
    let ck = NativeCheckpoint::open(&out).unwrap();
    ck.verify().unwrap();
    for m in &metas2 {
        let b = ck.tensor(&m.name, &m.role).unwrap();
        let t = io::from_bytes::<B>(&m.name, b, &dev).unwrap();
        assert_eq!(
            bits(t),
            bits(full[&(m.name.clone(), m.role.clone())].clone())
        );
    }
}

#[test]
fn zero_flat_buffer_on_device_and_host_fallback_agree() {
    let dev = Default::default();
    let metas: Vec<TensorMeta> = params()
        .into_iter()
        .map(|(n, s)| TensorMeta::new(n, uc_schema::DType::F32, s, Role::Param))
        .collect();
    let tensors: Vec<Tensor<B, 1>> = metas
        .iter()
        .enumerate()
        .map(|(i, m)| io::from_f32::<B>(values(m.numel() as usize, i as u64), &dev))
        .collect();
    let d = shards::flatten_zero(&metas, &tensors, 3, 4, FlattenAt::Device, &dev).unwrap();
    let h = shards::flatten_zero(
        &metas,
        &tensors,
        3,
        4,
        FlattenAt::DeviceUnless { free_bytes: 16 },
        &dev,
    )
    .unwrap();
    assert!(!d.on_host && h.on_host);
    assert_eq!(d.metas, h.metas);
    for (a, b) in d.partitions.iter().zip(&h.partitions) {
        assert_eq!(bits(a.clone()), bits(b.clone()));
    }
    // The flat partitions are a layout like any other: gather each tensor back on the device.
    let ranks: Vec<Shards<B>> = d
        .partitions
        .iter()
        .map(|p| {
            d.metas
                .iter()
                .map(|m| ((m.name.clone(), m.role.clone(), 0), p.clone()))
                .collect()
        })
        .collect();
    for (m, t) in d.metas.iter().zip(&tensors) {
        assert_eq!(
            bits(shards::gather(m, &ranks, &dev).unwrap()),
            bits(t.clone()),
            "{}",
            m.name
        );
    }
    // And resharded from ZeRO partitions straight into column-parallel shards.
    let col: Vec<TensorMeta> = d
        .metas
        .iter()
        .map(|m| {
            m.clone()
                .with_layout(rules().of(&m.name).layout(&m.name, &m.shape, 2).unwrap())
        })
        .collect();
    let moved = shards::reshard(&d.metas, &ranks, &col, &dev).unwrap();
    let full: BTreeMap<_, _> = metas
        .iter()
        .zip(&tensors)
        .map(|(m, t)| ((m.name.clone(), m.role.clone()), t.clone()))
        .collect();
    let expect = scatter_all(&col, &full);
    for (r, s) in moved.iter().enumerate() {
        for (k, t) in s {
            assert_eq!(
                bits(t.clone()),
                bits(expect[r][k].clone()),
                "rank {r} {k:?}"
            );
        }
    }
}

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    embed: Embedding<B>,
    up: Linear<B>,
    down: Linear<B>,
    norm: LayerNorm<B>,
}

fn tiny(dev: &burn::backend::ndarray::NdArrayDevice) -> Tiny<B> {
    Tiny {
        embed: EmbeddingConfig::new(10, 8).init(dev),
        up: LinearConfig::new(8, 16).init(dev),
        down: LinearConfig::new(16, 8).init(dev),
        norm: LayerNormConfig::new(8).init(dev),
    }
}

#[test]
fn burn_module_resumes_at_another_tp_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Default::default();
    let m = tiny(&dev);
    let named = module::named_params(&m);
    let names: Vec<&str> = named.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"up.weight") && names.contains(&"norm.gamma"),
        "{names:?}"
    );
    let rules = LayoutRules::new()
        .rule(r"^embed\.", ParamLayout::Row)
        .unwrap()
        .rule(r"^up\.", ParamLayout::Column)
        .unwrap()
        .rule(r"^down\.weight", ParamLayout::Row)
        .unwrap();
    let shapes: Vec<(String, Vec<u64>)> = named
        .iter()
        .map(|p| (p.name.clone(), p.shape.iter().map(|&d| d as u64).collect()))
        .collect();
    let metas = rules.metas(&shapes, 2, false).unwrap();
    let full: BTreeMap<_, _> = named
        .iter()
        .map(|p| ((p.name.clone(), Role::Param), p.value.clone()))
        .collect();
    let ranks = scatter_all(&metas, &full);
    let ck = save_and_convert(dir.path(), &metas, &ranks, &BTreeMap::new());
    let one = spec::relayout(&rules, &metas, 1).unwrap();
    let (s, _) = uc_burn::load_rank::<B>(&ck, &one, 0, &dev).unwrap();
    let values: BTreeMap<String, Tensor<B, 1>> =
        s.into_iter().map(|((n, _, _), t)| (n, t)).collect();
    let fresh = module::assign_params(tiny(&dev), &values).unwrap();
    for (a, b) in module::named_params(&fresh).into_iter().zip(named) {
        assert_eq!((a.name.as_str(), &a.shape), (b.name.as_str(), &b.shape));
        assert_eq!(bits(a.value), bits(b.value), "{}", a.name);
    }
    // A missing value is a typed error, not a panic.
    assert!(module::assign_params::<B, _>(tiny(&dev), &BTreeMap::new()).is_err());
}

#[test]
fn bad_input_is_a_typed_error() {
    assert!(LayoutRules::new().rule("(", ParamLayout::Column).is_err());
    let r = LayoutRules::new().rule("w", ParamLayout::Column).unwrap();
    assert!(r.metas(&[("w".into(), vec![3, 5])], 2, false).is_err());
    let f = LayoutRules::new()
        .rule("w", ParamLayout::Fused { sizes: vec![2, 2] })
        .unwrap();
    assert!(f.metas(&[("w".into(), vec![3, 5])], 1, false).is_err());
    let dir = tempfile::tempdir().unwrap();
    assert!(uc_burn::convert_sharded(dir.path(), &dir.path().join("o")).is_err());
}

/// Adam steps over every rank's shards with the full gradient `grads` scattered by `metas`.
fn adam_steps(
    metas: &[TensorMeta],
    ranks: &mut [Shards<B>],
    grads: &BTreeMap<(String, Role), Tensor<B, 1>>,
) {
    let adam = uc_burn::adam::Adam {
        lr: 1e-2,
        ..Default::default()
    };
    for m in metas.iter().filter(|m| m.role == Role::Param) {
        let g = shards::scatter(m, grads[&(m.name.clone(), Role::Param)].clone()).unwrap();
        for (r, s) in ranks.iter_mut().enumerate() {
            let key = (m.name.clone(), Role::Param, 0);
            let Some(p) = s.remove(&key) else { continue };
            let new = adam.step(&m.name, p, g[&(r as u32, 0)].clone(), s).unwrap();
            s.insert(key, new);
        }
    }
}

#[test]
fn adam_state_resumes_at_another_tp_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Default::default();
    let rules = rules();
    let ps: Vec<_> = params()
        .into_iter()
        .filter(|(n, _)| n != "experts")
        .collect();
    let metas2 = rules.metas(&ps, 2, true).unwrap();
    let full: BTreeMap<_, _> = full_state(&metas2)
        .into_iter()
        .filter(|(k, _)| k.1 == Role::Param)
        .collect();
    let params_only: Vec<TensorMeta> = metas2
        .iter()
        .filter(|m| m.role == Role::Param)
        .cloned()
        .collect();
    let grads = |seed: u64| -> BTreeMap<(String, Role), Tensor<B, 1>> {
        params_only
            .iter()
            .map(|m| {
                (
                    (m.name.clone(), Role::Param),
                    io::from_f32::<B>(values(m.numel() as usize, seed + m.numel()), &dev),
                )
            })
            .collect()
    };
    let mut tp2 = scatter_all(&params_only, &full);
    for i in 0..3 {
        adam_steps(&metas2, &mut tp2, &grads(i));
    }
    let ck = save_and_convert(dir.path(), &metas2, &tp2, &BTreeMap::new());
    let metas4 = spec::relayout(&rules, &metas2, 4).unwrap();
    let mut tp4: Vec<Shards<B>> = (0..4)
        .map(|r| uc_burn::load_rank::<B>(&ck, &metas4, r, &dev).unwrap().0)
        .collect();
    // Loaded state (params, exp_avg, exp_avg_sq, step) is bitwise the saved state.
    for m in &metas2 {
        assert_eq!(
            bits(shards::gather(m, &tp2, &dev).unwrap()),
            bits(
                shards::gather(
                    &metas4[metas2.iter().position(|x| x == m).unwrap()],
                    &tp4,
                    &dev
                )
                .unwrap()
            ),
            "{} {:?}",
            m.name,
            m.role
        );
    }
    // Training on at TP=4 equals training on at TP=2, bit for bit (Adam is element-wise).
    for i in 3..5 {
        adam_steps(&metas2, &mut tp2, &grads(i));
        adam_steps(&metas4, &mut tp4, &grads(i));
    }
    for (a, b) in metas2.iter().zip(&metas4) {
        assert_eq!(
            bits(shards::gather(a, &tp2, &dev).unwrap()),
            bits(shards::gather(b, &tp4, &dev).unwrap()),
            "{} {:?}",
            a.name,
            a.role
        );
    }
}
