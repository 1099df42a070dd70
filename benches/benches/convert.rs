//! `uc convert` of two real DeepSpeed ZeRO-2 checkpoints (fp32, dp 2, made by
//! `scripts/bench/make_zero2_checkpoint.sh` when absent and a torch + DeepSpeed venv is at `VENV`):
//! the ~2 GB one of a 125 M-parameter model (`UC_BENCH_BIG`, default `/tmp/uc-bench/big`) and one of
//! 6,001 small tensors (`UC_BENCH_MANY`, default `/tmp/uc-bench/many`), to native and to DeepSpeed's
//! universal layout: GB/s, ratio to copying the input files, peak heap. DeepSpeed's own converter on
//! the same files: `scripts/bench/speed.sh`.

use criterion::{criterion_group, criterion_main, Criterion};
use uc_benches::{convert_bench, peak, ConvertCase};
use uc_store::convert::Format;

#[global_allocator]
static ALLOC: peak::Counting = peak::Counting;

fn bench(c: &mut Criterion) {
    convert_bench(
        c,
        &ConvertCase {
            name: "convert big",
            env: "UC_BENCH_BIG",
            default: "/tmp/uc-bench/big",
            marker: "latest",
            formats: &[Format::Native, Format::DeepSpeed],
            make: Some((
                "make_zero2_checkpoint.sh",
                &["--hidden", "1024", "--layers", "8", "--vocab", "16000"],
            )),
        },
    );
    convert_bench(
        c,
        &ConvertCase {
            name: "convert many",
            env: "UC_BENCH_MANY",
            default: "/tmp/uc-bench/many",
            marker: "latest",
            formats: &[Format::Native, Format::DeepSpeed],
            make: Some(("make_zero2_checkpoint.sh", &["--many-blocks", "1500"])),
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
