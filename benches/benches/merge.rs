//! uc-merge: planning 10 000 tensors × 1 024 ranks, and executing a ≥ 256 MiB reshard next to a
//! plain memcpy of the same bytes (GB/s and ratio printed before criterion's own numbers).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use uc_benches::{best_of, gbps};
use uc_merge::{execute_target, pieces, plan, scatter, ReplicaPolicy};
use uc_schema::{DType, Layout, Role, Split, TensorMeta};

fn meta(shape: &[u64], layout: Layout) -> TensorMeta {
    TensorMeta::new("w", DType::F32, shape.to_vec(), Role::Fp32Master).with_layout(layout)
}

/// 10 000 tensors: ZeRO-3 over 1 024 dp ranks → TP 8 row shards (a resume at another topology).
fn plan_many(c: &mut Criterion) {
    let shape = [4096u64, 1024];
    let src = pieces(&meta(
        &shape,
        Layout::Zero3 {
            dp: 1024,
            offset: 0,
        },
    ))
    .unwrap();
    let dst = pieces(&meta(
        &shape,
        Layout::Shard {
            dim: 0,
            parts: 8,
            split: Split::Even,
        },
    ))
    .unwrap();
    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    g.bench_function("10k tensors x 1024 ranks (zero3 dp1024 -> tp8)", |b| {
        b.iter(|| {
            let mut ops = 0;
            for _ in 0..10_000 {
                ops += plan(
                    "w",
                    &shape,
                    black_box(&src),
                    black_box(&dst),
                    ReplicaPolicy::First,
                )
                .unwrap()
                .ops
                .len();
            }
            ops
        })
    });
    g.finish();
}

/// 256 MiB f32 tensor: row shards over 8 ranks → column shards over 4 ranks.
fn execute(c: &mut Criterion) {
    let shape = [8192u64, 8192];
    let bytes = (shape[0] * shape[1] * 4) as usize;
    let from = meta(
        &shape,
        Layout::Shard {
            dim: 0,
            parts: 8,
            split: Split::Even,
        },
    );
    let to = meta(
        &shape,
        Layout::Shard {
            dim: 1,
            parts: 4,
            split: Split::Even,
        },
    );
    let full: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    let src = scatter(&from, &full).unwrap();
    drop(full);
    let p = plan(
        "w",
        &shape,
        &pieces(&from).unwrap(),
        &pieces(&to).unwrap(),
        ReplicaPolicy::First,
    )
    .unwrap();
    let mut dst: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; bytes / 4]).collect();
    let get = |r: u32, b: u32| src.get(&(r, b)).map(Vec::as_slice);
    let run = |dst: &mut Vec<Vec<u8>>| {
        for (r, d) in dst.iter_mut().enumerate() {
            execute_target(&p, r as u32, 0, d, DType::F32, DType::F32, &get).unwrap();
        }
    };
    let src_flat: Vec<u8> = src.values().flat_map(|v| v.iter().copied()).collect();
    let mut copy = vec![0u8; bytes];
    let t_copy = best_of(5, || copy.copy_from_slice(black_box(&src_flat)));
    let t_exec = best_of(5, || run(&mut dst));
    eprintln!(
        "execute 256 MiB reshard (tp8 rows -> tp4 cols): {:.2} GB/s; memcpy {:.2} GB/s; ratio {:.0}%",
        gbps(bytes, t_exec),
        gbps(bytes, t_copy),
        100.0 * t_copy.as_secs_f64() / t_exec.as_secs_f64()
    );
    let mut g = c.benchmark_group("execute");
    g.sample_size(10)
        .throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("memcpy 256 MiB", |b| {
        b.iter(|| copy.copy_from_slice(black_box(&src_flat)))
    });
    g.bench_function("reshard 256 MiB tp8 rows -> tp4 cols", |b| {
        b.iter(|| run(&mut dst))
    });
    g.finish();
}

criterion_group!(benches, plan_many, execute);
criterion_main!(benches);
