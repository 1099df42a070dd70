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
    /// How to make the checkpoint when it is absent: a script under `scripts/bench/` and its arguments
    /// after the output folder (needs a torch + DeepSpeed venv in `VENV`, default `/tmp/torchvenv`).
    pub make: Option<(&'a str, &'a [&'a str])>,
}

/// Flushes dirty pages to disk, so a timed step does not pay for the writes of the one before.
pub fn sync() {
    let _ = std::process::Command::new("sync").status();
}

/// Makes `case`'s checkpoint with its generator; false when it cannot be made here.
fn make_checkpoint(case: &ConvertCase, input: &std::path::Path) -> bool {
    let Some((script, args)) = case.make else {
        return false;
    };
    let venv = std::env::var("VENV").unwrap_or_else(|_| "/tmp/torchvenv".into());
    if !std::path::Path::new(&venv).join("bin/torchrun").is_file() {
        return false;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/bench")
        .join(script);
    // The DCP generator writes into OUT/checkpoint.
    let out = if input.ends_with("checkpoint") {
        input.parent().unwrap_or(input)
    } else {
        input
    };
    eprintln!(
        "{}: making {} with {}",
        case.name,
        out.display(),
        script.display()
    );
    std::process::Command::new("bash")
        .arg(&script)
        .arg(out)
        .args(args)
        .env("VENV", &venv)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && input.join(case.marker).is_file()
}

/// Every file under `dir` (the checkpoint's tag folder for DeepSpeed, the folder itself otherwise).
fn files_of(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The median of a few durations.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Converts the case's checkpoint once per format (printing GB/s, the ratio to copying the same
/// input files, and the peak heap against the largest tensor; needs the [`peak::Counting`] allocator
/// installed), then lets criterion time each format. Every timed run starts after `sync` from a warm
/// page cache. Makes the checkpoint when absent and it can; else skips with a message.
pub fn convert_bench(c: &mut criterion::Criterion, case: &ConvertCase) {
    use uc_store::convert::{convert, ConvertOptions};
    let input =
        std::path::PathBuf::from(std::env::var(case.env).unwrap_or_else(|_| case.default.into()));
    if !input.join(case.marker).is_file() && !make_checkpoint(case, &input) {
        eprintln!(
            "{} bench skipped: no checkpoint at {} and none could be made (see scripts/bench/README.md)",
            case.name,
            input.display()
        );
        return;
    }
    let src = uc_store::source::Source::open(&input, &Default::default()).expect("open input");
    let largest = src.outputs().iter().map(|m| m.nbytes()).max().unwrap_or(0);
    let data_dir = match std::fs::read_to_string(input.join("latest")) {
        Ok(tag) => input.join(tag.trim()),
        Err(_) => input.clone(),
    };
    let files = files_of(&data_dir);
    drop(src);
    let tmp = tempfile::tempdir_in(input.parent().unwrap_or(&input)).expect("tempdir");
    // The floor: the same input files copied through the page cache (what `cp -r` does).
    let copy = || {
        let out = tmp.path().join("cp");
        std::fs::create_dir(&out).expect("cp dir");
        for (i, f) in files.iter().enumerate() {
            std::fs::copy(f, out.join(i.to_string())).expect("copy");
        }
        out
    };
    let timed = |work: &dyn Fn() -> std::path::PathBuf| {
        sync();
        let t = Instant::now();
        let out = work();
        let d = t.elapsed();
        std::fs::remove_dir_all(&out).expect("cleanup");
        d
    };
    let _ = timed(&copy); // warms the page cache
    let cp = median((0..3).map(|_| timed(&copy)).collect());
    let run = |format: uc_store::convert::Format| {
        let out = tmp.path().join(format!("out-{format:?}"));
        let opts = ConvertOptions {
            format,
            ..Default::default()
        };
        let r = convert(&input, &out, &opts, &|_, _, _| {}).expect("convert");
        (out, r.bytes)
    };
    let mut bytes = 0;
    for &format in case.formats {
        peak::reset();
        let b = std::cell::Cell::new(0);
        let d = median(
            (0..3)
                .map(|_| {
                    timed(&|| {
                        let (o, n) = run(format);
                        b.set(n);
                        o
                    })
                })
                .collect(),
        );
        bytes = b.get();
        eprintln!(
            "{} -> {format:?}: {:.1} MB of tensors, median {:.3} s = {:.2} GB/s; copying the {:.1} MB of input \
             files: {:.3} s → {:.2}× cp; peak heap {:.1} MB (largest tensor {:.1} MB)",
            case.name,
            bytes as f64 / 1e6,
            d.as_secs_f64(),
            gbps(bytes as usize, d),
            files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum::<u64>() as f64 / 1e6,
            cp.as_secs_f64(),
            d.as_secs_f64() / cp.as_secs_f64(),
            peak::peak() as f64 / 1e6,
            largest as f64 / 1e6,
        );
    }
    let mut g = c.benchmark_group(case.name);
    g.sample_size(10)
        .throughput(criterion::Throughput::Bytes(bytes));
    g.bench_function(format!("{} -> cp", case.name), |b| {
        b.iter_custom(|n| (0..n).map(|_| timed(&copy)).sum())
    });
    for &format in case.formats {
        g.bench_function(format!("{} -> {format:?}", case.name), |b| {
            b.iter_custom(|n| (0..n).map(|_| timed(&|| run(format).0)).sum())
        });
    }
    g.finish();
}
