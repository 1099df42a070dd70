//! `uc convert` of a real ~1.5 GB PyTorch DCP checkpoint (FSDP2, 2 ranks, AdamW, 126 M params; made by
//! `scripts/bench/make_dcp_checkpoint.sh` when absent and a torch venv is at `VENV`; path in
//! `UC_BENCH_DCP`, default `/tmp/uc-bench/dcp_big/checkpoint`) to native and to DCP: GB/s, ratio to
//! copying the input files, peak heap. torch's `dcp_to_torch_save` on the same files:
//! `scripts/bench/speed.sh`.

use criterion::{criterion_group, criterion_main, Criterion};
use uc_benches::{convert_bench, peak, ConvertCase};
use uc_store::convert::Format;

#[global_allocator]
static ALLOC: peak::Counting = peak::Counting;

fn bench(c: &mut Criterion) {
    convert_bench(
        c,
        &ConvertCase {
            name: "convert dcp",
            env: "UC_BENCH_DCP",
            default: "/tmp/uc-bench/dcp_big/checkpoint",
            marker: ".metadata",
            formats: &[Format::Native, Format::Dcp],
            make: Some(("make_dcp_checkpoint.sh", &["--layers", "96"])),
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
