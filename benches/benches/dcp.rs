//! `uc convert` of a real ≥ 500 MB PyTorch DCP checkpoint (FSDP2, 2 ranks, AdamW; made by
//! `scripts/bench/make_dcp_checkpoint.sh`; path in `UC_BENCH_DCP`, default `/tmp/uc-bench/dcp/checkpoint`)
//! to native and to DCP: GB/s of tensor data and peak heap. Skipped with a message when absent.
//! torch's own `dcp_to_torch_save` on the same files: `scripts/bench/time_dcp.sh`.

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
            default: "/tmp/uc-bench/dcp/checkpoint",
            marker: ".metadata",
            formats: &[Format::Native, Format::Dcp],
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
