//! Shared benchmark helpers: workloads and the memcpy baseline that ratios are measured against.

use std::time::{Duration, Instant};

/// Times `f` over `iters` runs and returns the best run (least disturbed by the other core).
pub fn best_of(iters: usize, mut f: impl FnMut()) -> Duration {
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// GB/s (10^9 bytes per second) for `bytes` moved in `d`.
pub fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// A global allocator that records the peak of live heap bytes (memory bounded by a few tensors,
/// not the model, is a claim about this number; mmapped input pages are not heap).
pub mod peak {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// Install with `#[global_allocator] static A: uc_benches::peak::Counting = uc_benches::peak::Counting;`.
    pub struct Counting;

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            unsafe { System.dealloc(p, l) };
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        }
    }

    /// Resets the peak to the current live bytes.
    pub fn reset() {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Peak live heap bytes since the last reset.
    pub fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }
}

/// A real checkpoint to convert, found through an environment variable.
pub struct ConvertCase<'a> {
    /// Criterion group name and log label.
    pub name: &'a str,
    /// Environment variable naming the checkpoint, and its default.
    pub env: &'a str,
    pub default: &'a str,
    /// A file whose presence says the checkpoint is there (`latest`, `.metadata`).
    pub marker: &'a str,
    /// Output formats to time.
    pub formats: &'a [uc_store::convert::Format],
}

/// Converts the case's checkpoint once per format (printing GB/s and peak heap, which needs the
/// [`peak::Counting`] allocator installed), then lets criterion time each format. Skips with a
/// message when the checkpoint is absent.
pub fn convert_bench(c: &mut criterion::Criterion, case: &ConvertCase) {
    use uc_store::convert::{convert, ConvertOptions};
    let input =
        std::path::PathBuf::from(std::env::var(case.env).unwrap_or_else(|_| case.default.into()));
    if !input.join(case.marker).is_file() {
        eprintln!(
            "{} bench skipped: no checkpoint at {} (see scripts/bench/README.md)",
            case.name,
            input.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = |format: uc_store::convert::Format, n: usize| {
        let out = tmp.path().join(format!("out-{format:?}-{n}"));
        let opts = ConvertOptions {
            format,
            ..Default::default()
        };
        let r = convert(&input, &out, &opts, &|_, _, _| {}).expect("convert");
        std::fs::remove_dir_all(&out).expect("cleanup");
        r.bytes
    };
    let mut bytes = 0;
    for &format in case.formats {
        peak::reset();
        let t = Instant::now();
        bytes = run(format, 0);
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "{} -> {format:?}: {:.1} MB of tensors in {secs:.2} s = {:.2} GB/s; peak heap {:.1} MB",
            case.name,
            bytes as f64 / 1e6,
            bytes as f64 / secs / 1e9,
            peak::peak() as f64 / 1e6
        );
    }
    let mut g = c.benchmark_group(case.name);
    g.sample_size(10)
        .throughput(criterion::Throughput::Bytes(bytes));
    let mut i = 1;
    for &format in case.formats {
        g.bench_function(format!("{} -> {format:?}", case.name), |b| {
            b.iter(|| {
                i += 1;
                run(format, i)
            })
        });
    }
    g.finish();
}
