//! A progress bar on a terminal; nothing when stderr is piped.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// A bar counting bytes (uploads; its length set as it goes), hidden unless stderr is a terminal.
pub fn byte_bar(what: &str) -> ProgressBar {
    let pb = bar(0, what);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} ({elapsed}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

/// A bar over `total` items, hidden unless stderr is a terminal.
pub fn bar(total: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} tensors, {msg} ({elapsed}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// Runs `work` with a `(done, total, bytes)` progress callback drawn as a bar over tensors (see
/// [`bar`]); returns its result and the seconds it took.
pub fn timed<T>(
    what: &str,
    work: impl FnOnce(&(dyn Fn(usize, usize, u64) + Sync)) -> T,
) -> (T, f64) {
    let t = Instant::now();
    let pb = bar(0, what);
    let out = work(&|done, total, bytes| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        pb.set_message(human(bytes));
    });
    pb.finish_and_clear();
    (out, t.elapsed().as_secs_f64())
}

/// Human-readable bytes (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
