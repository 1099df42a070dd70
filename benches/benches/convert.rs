//! `uc convert` of a real ≥ 500 MB DeepSpeed ZeRO-2 checkpoint (made by `scripts/bench/make_zero2_checkpoint.sh`;
//! path in `UC_BENCH_ZERO2`, default `/tmp/uc-bench/zero2`): GB/s of tensor data and peak heap.
//! Skipped with a message when the checkpoint is absent.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::PathBuf;
use std::time::Instant;
use uc_benches::peak;
use uc_store::convert::{convert, ConvertOptions, Format};

#[global_allocator]
static ALLOC: peak::Counting = peak::Counting;

fn bench(c: &mut Criterion) {
    let input = PathBuf::from(
        std::env::var("UC_BENCH_ZERO2").unwrap_or_else(|_| "/tmp/uc-bench/zero2".into()),
    );
    if !input.join("latest").is_file() {
        eprintln!(
            "convert bench skipped: no DeepSpeed checkpoint at {} (see scripts/bench/README.md)",
            input.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = |format: Format, n: usize| {
        let out = tmp.path().join(format!("out-{format:?}-{n}"));
        let opts = ConvertOptions {
            format,
            ..Default::default()
        };
        let r = convert(&input, &out, &opts, &|_, _, _| {}).expect("convert");
        std::fs::remove_dir_all(&out).expect("cleanup");
        r.bytes
    };
    for format in [Format::Native, Format::DeepSpeed] {
        peak::reset();
        let t = Instant::now();
        let bytes = run(format, 0);
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "convert {format:?}: {:.1} MB of tensors in {secs:.2} s = {:.2} GB/s; peak heap {:.1} MB",
            bytes as f64 / 1e6,
            bytes as f64 / secs / 1e9,
            peak::peak() as f64 / 1e6
        );
    }
    let bytes = run(Format::Native, 1);
    let mut g = c.benchmark_group("convert");
    g.sample_size(10).throughput(Throughput::Bytes(bytes));
    let mut i = 2;
    g.bench_function("zero2 -> native", |b| {
        b.iter(|| {
            i += 1;
            run(Format::Native, i)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
