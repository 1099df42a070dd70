//! On a CUDA machine (feature `cuda`): device reshard and the demo's loss continuity on the GPU.
#![cfg(feature = "cuda")]

use burn::backend::Autodiff;
use std::collections::BTreeMap;
use uc_burn::demo::{run_on, DemoOptions};
use uc_burn::{io, shards, spec, Cuda, LayoutRules, ParamLayout, Shards};

#[test]
fn cuda_reshard_on_device_is_bit_exact() {
    let dev = Default::default();
    let rules = LayoutRules::new()
        .rule("col", ParamLayout::Column)
        .unwrap()
        .rule(
            "qkv",
            ParamLayout::Fused {
                sizes: vec![32, 16, 16],
            },
        )
        .unwrap();
    let params = vec![
        ("col".to_string(), vec![64, 32]),
        ("qkv".to_string(), vec![8, 64]),
        ("norm".to_string(), vec![7]),
    ];
    let m2 = rules.metas(&params, 2, false).unwrap();
    let m4 = spec::relayout(&rules, &m2, 4).unwrap();
    let mut full = BTreeMap::new();
    let mut ranks: Vec<Shards<Cuda>> = Vec::new();
    for m in &m2 {
        let v: Vec<f32> = (0..m.numel()).map(|i| i as f32 * 0.25 - 3.0).collect();
        full.insert(m.name.clone(), v.clone());
        shards::scatter_into(&mut ranks, m, io::from_f32::<Cuda>(v, &dev)).unwrap();
    }
    let moved = shards::reshard(&m2, &ranks, &m4, &dev).unwrap();
    for m in &m4 {
        let g = io::to_f32(&m.name, shards::gather(m, &moved, &dev).unwrap()).unwrap();
        assert_eq!(g, full[&m.name], "{}", m.name);
    }
}

#[test]
fn cuda_demo_resumes_within_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        steps: 24,
        save_at: 12,
        ..DemoOptions::default()
    };
    let s = run_on::<Autodiff<Cuda>>(dir.path(), &opts, &Default::default()).unwrap();
    for tp in [1, 4] {
        assert!(
            s.max_rel_diff[&tp] <= 1e-5,
            "tp {tp}: {:e}",
            s.max_rel_diff[&tp]
        );
    }
}
