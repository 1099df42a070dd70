//! `uc convert` of a real ≥ 500 MB DeepSpeed ZeRO-2 checkpoint (made by
//! `scripts/bench/make_zero2_checkpoint.sh`; path in `UC_BENCH_ZERO2`, default `/tmp/uc-bench/zero2`)
//! to native and to DeepSpeed's universal layout: GB/s of tensor data and peak heap. Skipped with a
//! message when the checkpoint is absent. DeepSpeed's own converter: `scripts/bench/time_deepspeed.sh`.

use criterion::{criterion_group, criterion_main, Criterion};
use uc_benches::{convert_bench, peak, ConvertCase};
use uc_store::convert::Format;

#[global_allocator]
static ALLOC: peak::Counting = peak::Counting;

fn bench(c: &mut Criterion) {
    convert_bench(
        c,
        &ConvertCase {
            name: "convert zero2",
            env: "UC_BENCH_ZERO2",
            default: "/tmp/uc-bench/zero2",
            marker: "latest",
            formats: &[Format::Native, Format::DeepSpeed],
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
