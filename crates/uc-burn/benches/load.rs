//! Criterion: (1) load one target rank of a ≥ 256 MiB model from a native checkpoint (GB/s of bytes
//! needed; bytes read ÷ bytes needed printed); (2) on-device reshard TP=2 → TP=4 vs a host round trip.

use burn::tensor::{backend::Backend, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::collections::BTreeMap;
use std::time::Duration;
use uc_burn::{io, shards, spec, Cpu, LayoutRules, ParamLayout, Shards};
use uc_schema::{TensorMeta, Topology};
use uc_store::native::{NativeCheckpoint, NativeOptions, NativeWriter};

/// 16 weights of 4096 × 1024 f32 (256 MiB) plus small norms; half column-, half row-parallel.
fn model() -> (LayoutRules, Vec<(String, Vec<u64>)>) {
    let rules = LayoutRules::new()
        .rule(r"\.col$", ParamLayout::Column)
        .unwrap()
        .rule(r"\.row$", ParamLayout::Row)
        .unwrap();
    let mut params = Vec::new();
    for i in 0..8 {
        params.push((format!("layers.{i}.col"), vec![4096, 1024]));
        params.push((format!("layers.{i}.row"), vec![4096, 1024]));
        params.push((format!("layers.{i}.norm"), vec![1024]));
    }
    (rules, params)
}

fn fill(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .flat_map(|i| ((i ^ seed) as f32 * 1e-3).to_le_bytes())
        .collect()
}

fn bench_load_on<B: Backend>(c: &mut Criterion, backend: &str, dev: &B::Device) {
    let dir = tempfile::tempdir().unwrap();
    let (rules, params) = model();
    let metas = rules.metas(&params, 1, false).unwrap();
    let path = dir.path().join("ckpt");
    let w = NativeWriter::create(&path, &metas, &NativeOptions::default()).unwrap();
    for (i, m) in metas.iter().enumerate() {
        w.write_tensor(&m.name, &m.role, &fill(m.numel() as usize, i as u32))
            .unwrap();
    }
    w.finish(Topology::default(), BTreeMap::new()).unwrap();
    let ck = NativeCheckpoint::open(&path).unwrap();
    let total: u64 = metas.iter().map(|m| m.nbytes()).sum();
    let mut g = c.benchmark_group(format!("load_rank_{backend}"));
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for tp in [1u32, 4] {
        let target = spec::relayout(&rules, &metas, tp).unwrap();
        let (_, stats) = uc_burn::load_rank::<B>(&ck, &target, 1 % tp, dev).unwrap();
        eprintln!(
            "load tp={tp} rank {}: model {} MiB, needed {} MiB, read {} MiB, read/needed = {:.4}",
            1 % tp,
            total >> 20,
            stats.bytes_needed >> 20,
            stats.bytes_read >> 20,
            stats.ratio()
        );
        g.throughput(Throughput::Bytes(stats.bytes_needed));
        g.bench_function(format!("256MiB_model_tp{tp}_one_rank"), |b| {
            b.iter(|| uc_burn::load_rank::<B>(&ck, &target, 1 % tp, dev).unwrap())
        });
    }
    g.finish();
}

/// Host round trip: read every shard back, reshard bytes with uc-merge, upload the new shards.
fn host_reshard<B: Backend>(
    from: &[TensorMeta],
    ranks: &[Shards<B>],
    to: &[TensorMeta],
    dev: &B::Device,
) -> Vec<Shards<B>> {
    let world = to.iter().map(|m| m.layout.ranks()).max().unwrap() as usize;
    let mut out: Vec<Shards<B>> = (0..world).map(|_| Shards::new()).collect();
    for (f, t) in from.iter().zip(to) {
        let mut bufs = uc_merge::Buffers::new();
        for (r, s) in ranks.iter().enumerate() {
            bufs.insert(
                (r as u32, 0),
                io::to_bytes(&f.name, s[&(f.name.clone(), f.role.clone(), 0)].clone()).unwrap(),
            );
        }
        for ((r, b), bytes) in
            uc_merge::reshard(f, &bufs, t, uc_merge::ReplicaPolicy::First).unwrap()
        {
            out[r as usize].insert(
                (t.name.clone(), t.role.clone(), b),
                io::from_bytes::<B>(&t.name, &bytes, dev).unwrap(),
            );
        }
    }
    out
}

fn bench_reshard_on<B: Backend>(c: &mut Criterion, backend: &str, dev: &B::Device) {
    let (rules, params) = model();
    let params: Vec<_> = params.into_iter().take(6).collect(); // 64 MiB
    let m2 = rules.metas(&params, 2, false).unwrap();
    let m4 = spec::relayout(&rules, &m2, 4).unwrap();
    let mut ranks: Vec<Shards<B>> = Vec::new();
    for (i, m) in m2.iter().enumerate() {
        let full: Tensor<B, 1> =
            io::from_bytes::<B>(&m.name, &fill(m.numel() as usize, i as u32), dev).unwrap();
        shards::scatter_into(&mut ranks, m, full).unwrap();
    }
    let bytes: u64 = m2.iter().map(|m| m.nbytes()).sum();
    let mut g = c.benchmark_group(format!("reshard_tp2_to_tp4_{backend}"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(bytes));
    g.bench_function("on_device", |b| {
        b.iter(|| shards::reshard(&m2, &ranks, &m4, dev).unwrap())
    });
    g.bench_function("host_round_trip", |b| {
        b.iter(|| host_reshard(&m2, &ranks, &m4, dev))
    });
    g.finish();
}

fn bench_load(c: &mut Criterion) {
    bench_load_on::<Cpu>(c, "ndarray", &Default::default());
    #[cfg(feature = "cuda")]
    bench_load_on::<uc_burn::Cuda>(c, "cuda", &Default::default());
}

fn bench_reshard(c: &mut Criterion) {
    bench_reshard_on::<Cpu>(c, "ndarray", &Default::default());
    #[cfg(feature = "cuda")]
    bench_reshard_on::<uc_burn::Cuda>(c, "cuda", &Default::default());
}

criterion_group!(benches, bench_load, bench_reshard);
criterion_main!(benches);
