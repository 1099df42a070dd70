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
