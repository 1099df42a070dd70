//! A remote checkpoint seen as a local folder: one sparse stand-in file per object, registered with
//! [`uc_torch::lazy`], so every reader fetches exactly the byte ranges it touches by ranged GETs.

use crate::error::{io_err, ObjectError, Result};
use crate::location::{runtime, Listed, Location};
use crate::ranges::{coalesce, split, RangeSet};
use futures::StreamExt;
use object_store::GetOptions;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Ranges closer than this are fetched as one request (the gap is fetched too).
const GAP: u64 = 256;
/// Largest single GET; larger ranges are split and fetched in parallel.
const PIECE: u64 = 8 << 20;
/// GETs in flight per fill.
const IN_FLIGHT: usize = 16;

/// What reading from the store cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// GET requests made.
    pub requests: u64,
    /// Bytes received.
    pub bytes_fetched: u64,
    /// Bytes the readers asked for (the union of the ranges they touched).
    pub bytes_needed: u64,
    /// Most bytes the stand-ins held at once on local disk.
    pub peak_cached: u64,
    /// Bytes dropped from the stand-ins to stay within the cache budget ([`cache_budget`]).
    pub bytes_released: u64,
}

impl FetchStats {
    /// Bytes fetched ÷ bytes needed (1 when nothing was needed).
    pub fn ratio(&self) -> f64 {
        if self.bytes_needed == 0 {
            1.0
        } else {
            self.bytes_fetched as f64 / self.bytes_needed as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// A remote checkpoint mirrored lazily into a temporary local folder (removed on drop).
#[derive(Debug)]
pub struct Mirror {
    loc: Location,
    dir: tempfile::TempDir,
    files: Vec<Arc<Remote>>,
    counters: Arc<Counters>,
    listing: Vec<Listed>,
    /// `<dir>.lock`, locked while this process lives: a later run removes folders whose lock is free.
    lock: (PathBuf, File),
}

/// Where stand-ins and upload work folders go: `UC_CACHE_DIR`, else the system temp dir.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("UC_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Bytes of fetched input the stand-ins under `base` may hold before they are dropped between two
/// tensors, and when to drop them sooner: `UC_CACHE_MAX` (bytes, or with a `K`, `M`, `G` or `T`
/// suffix — powers of 1024, `iB` or `B` optional — or `unlimited`) and nothing else; without it half
/// the free space of `base`'s file system, and also whenever that file system has less than a quarter
/// of the room it had at the start (other workers' stand-ins and a URL output's work folder may fill
/// it too).
pub fn cache_budget(base: &Path) -> Result<(u64, Option<uc_torch::lazy::LowRoom>)> {
    let Some(v) = std::env::var_os("UC_CACHE_MAX") else {
        let Ok(start) = uc_torch::free_space(base) else {
            return Ok((u64::MAX, None));
        };
        let base = base.to_path_buf();
        let low: uc_torch::lazy::LowRoom =
            Arc::new(move || uc_torch::free_space(&base).is_ok_and(|f| f < start / 4));
        return Ok((start / 2, Some(low)));
    };
    let v = v.to_string_lossy();
    let budget = parse_size(&v).ok_or_else(|| ObjectError::Config {
        var: "UC_CACHE_MAX".into(),
        why: format!("`{v}` is not a size (bytes, or a number with K, M, G or T, or `unlimited`)"),
    })?;
    Ok((budget, None))
}

/// `123`, `64M`, `1.5GiB`, `2 TB` (powers of 1024) or `unlimited`; `None` for anything else.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("unlimited") {
        return Some(u64::MAX);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (&s[..split], s[split..].trim());
    let unit = unit.to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    if num.contains('.') {
        let x: f64 = num.parse().ok()?;
        let bytes = x * (1u64 << shift) as f64;
        return (x.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64);
    }
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Removes stand-in folders under `base` left by killed processes (their `.lock` is not held) and
/// older than a minute (a folder just made may not be locked yet).
fn remove_dead(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_prefix(".uc-remote-")
            .and_then(|n| n.strip_suffix(".lock"))
        else {
            continue;
        };
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() > 60));
        let Ok(f) = File::open(e.path()) else {
            continue;
        };
        if old && f.try_lock().is_ok() {
            let _ = std::fs::remove_dir_all(base.join(format!(".uc-remote-{stem}")));
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Mirror {
    /// Lists `loc` and makes its stand-in folder under `cache` (default: `UC_CACHE_DIR`, else the
    /// system temp dir); nothing is fetched until a reader needs it.
    pub fn open(loc: Location, cache: Option<&Path>) -> Result<Mirror> {
        let listing = loc.list()?;
        if listing.is_empty() {
            return Err(ObjectError::NotFound {
                url: loc.url().to_string(),
            });
        }
        let base = cache.map_or_else(cache_dir, Path::to_path_buf);
        std::fs::create_dir_all(&base).map_err(io_err(&base))?;
        let (budget, low_room) = cache_budget(&base)?;
        uc_torch::lazy::set_budget(budget);
        uc_torch::lazy::set_low_room(low_room);
        remove_dead(&base);
        let dir = tempfile::Builder::new()
            .prefix(".uc-remote-")
            .tempdir_in(&base)
            .map_err(io_err(&base))?;
        let mut lock_name = dir.path().file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let lock_path = base.join(lock_name);
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        let counters = Arc::new(Counters::default());
        let mut files = Vec::with_capacity(listing.len());
        for l in &listing {
            if l.rel.is_empty() || (l.rel.ends_with('/') && l.size == 0) {
                continue; // the prefix itself, or a console's zero-byte "folder" object
            }
            let rel = local_rel(&l.rel).ok_or_else(|| ObjectError::Failed {
                url: loc.url_of(&l.rel),
                why: "this object's key cannot be a file name (empty, `.` or `..` parts)".into(),
            })?;
            let path = dir.path().join(rel);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).map_err(io_err(p))?;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err(&path))?;
            file.set_len(l.size).map_err(io_err(&path))?;
            let r = Arc::new(Remote {
                url: loc.url_of(&l.rel),
                key: loc.key(&l.rel),
                loc: loc.clone(),
                file,
                size: l.size,
                e_tag: l.e_tag.clone(),
                state: Mutex::new(State::default()),
                done: Condvar::new(),
                counters: counters.clone(),
            });
            uc_torch::lazy::register(&path, r.clone());
            files.push(r);
        }
        Ok(Mirror {
            loc,
            dir,
            files,
            counters,
            listing,
            lock: (lock_path, lock),
        })
    }

    /// The local folder standing in for the remote prefix.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The remote location.
    pub fn location(&self) -> &Location {
        &self.loc
    }

    /// What the listing found.
    pub fn listing(&self) -> &[Listed] {
        &self.listing
    }

    /// A hash of the listing (every object's path, size and version): changes when the input does.
    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        for l in &self.listing {
            h.update(format!("{}\0{}\0{}\n", l.rel, l.size, l.version).as_bytes());
        }
        h.finalize().to_hex()[..16].to_string()
    }

    /// Requests and bytes so far.
    pub fn stats(&self) -> FetchStats {
        let needed = self
            .files
            .iter()
            .map(|f| {
                f.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .requested
                    .len()
            })
            .sum();
        let (_, peak_cached, bytes_released) = uc_torch::lazy::cache_stats();
        FetchStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            bytes_fetched: self.counters.bytes.load(Ordering::Relaxed),
            bytes_needed: needed,
            peak_cached,
            bytes_released,
        }
    }

    /// Rewrites local stand-in paths in a message into the objects' URLs.
    pub fn explain(&self, msg: &str) -> String {
        let root = self.dir.path().display().to_string();
        msg.replace(&format!("{root}/"), &format!("{}/", self.loc.url()))
            .replace(&root, self.loc.url())
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        uc_torch::lazy::unregister_under(self.dir.path());
        let _ = std::fs::remove_file(&self.lock.0);
    }
}

/// `rel` as a relative local path, or `None` when a part is empty, `.` or `..`.
fn local_rel(rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && !rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

#[derive(Debug, Default)]
struct State {
    /// Bytes present in the stand-in.
    filled: RangeSet,
    /// Ranges some thread is fetching now.
    inflight: Vec<Range<u64>>,
    /// Every range a reader asked for.
    requested: RangeSet,
    /// Bytes written into the stand-in since its last release, as told to [`uc_torch::lazy::filled`].
    held: u64,
}

/// One object and its stand-in file.
#[derive(Debug)]
struct Remote {
    url: String,
    key: object_store::path::Path,
    loc: Location,
    file: File,
    size: u64,
    /// Every GET requires this ETag (If-Match): an object rewritten mid-read fails, not mixes.
    e_tag: Option<String>,
    state: Mutex<State>,
    done: Condvar,
    counters: Arc<Counters>,
}

impl Remote {
    /// Fetches `ranges` (already coalesced) and writes them into the stand-in.
    fn fetch(&self, ranges: &[Range<u64>]) -> Result<()> {
        let pieces = split(ranges, PIECE);
        let store = self.loc.store().clone();
        let results: Vec<Result<()>> = runtime().block_on(async {
            futures::stream::iter(pieces)
                .map(|r| {
                    let store = store.clone();
                    async move {
                        let want = r.end - r.start;
                        self.counters.requests.fetch_add(1, Ordering::Relaxed);
                        let opts = GetOptions::new()
                            .with_range(Some(r.clone()))
                            .with_if_match(self.e_tag.clone());
                        let got = match store.get_opts(&self.key, opts).await {
                            Ok(g) => g.bytes().await,
                            Err(e) => Err(e),
                        };
                        let bytes = got.map_err(|e| match e {
                            object_store::Error::Precondition { .. } => ObjectError::Changed {
                                url: self.url.clone(),
                                why: "its ETag is not the one listed when the read began".into(),
                            },
                            e => ObjectError::from_store(&self.url, e),
                        })?;
                        self.counters
                            .bytes
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        if bytes.len() as u64 != want {
                            return Err(ObjectError::Changed {
                                url: self.url.clone(),
                                why: format!(
                                    "asked for bytes [{}, {}), got {}",
                                    r.start,
                                    r.end,
                                    bytes.len()
                                ),
                            });
                        }
                        self.file
                            .write_all_at(&bytes, r.start)
                            .map_err(|e| ObjectError::Io {
                                path: PathBuf::from(&self.url),
                                source: e,
                            })
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await
        });
        results.into_iter().collect()
    }
}

impl uc_torch::lazy::Fill for Remote {
    fn fill(&self, ranges: &[Range<u64>]) -> std::io::Result<()> {
        let want: Vec<Range<u64>> = ranges
            .iter()
            .map(|r| r.start.min(self.size)..r.end.min(self.size))
            .filter(|r| r.start < r.end)
            .collect();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for r in &want {
            st.requested.insert(r.clone());
        }
        loop {
            let missing: Vec<Range<u64>> = want.iter().flat_map(|r| st.filled.missing(r)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            let mut busy = RangeSet::default();
            for r in &st.inflight {
                busy.insert(r.clone());
            }
            let mine: Vec<Range<u64>> = missing.iter().flat_map(|r| busy.missing(r)).collect();
            if mine.is_empty() {
                st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let mine = coalesce(mine, GAP);
            st.inflight.extend(mine.iter().cloned());
            drop(st);
            let res = self.fetch(&mine);
            st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.inflight.retain(|r| !mine.contains(r));
            if res.is_ok() {
                for r in &mine {
                    st.filled.insert(r.clone());
                }
                let n: u64 = mine.iter().map(|r| r.end - r.start).sum();
                st.held += n;
                uc_torch::lazy::filled(n);
            }
            self.done.notify_all();
            res.map_err(ObjectError::into_io)?;
        }
    }

    /// Punches the whole stand-in back into a hole (Linux; elsewhere nothing is dropped) and forgets
    /// what was filled. Not while a fetch is under way (then nothing is dropped).
    fn release(&self) -> std::io::Result<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.inflight.is_empty() || st.held == 0 {
            return Ok(0);
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let len = i64::try_from(self.size).unwrap_or(i64::MAX);
            // SAFETY: a plain syscall on an open descriptor; no memory is passed.
            let rc = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    len,
                )
            };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot drop the fetched bytes of its local stand-in to stay within \
                         UC_CACHE_MAX ({e}); set UC_CACHE_DIR to a file system that can punch \
                         holes, or UC_CACHE_MAX=unlimited"
                    ),
                ));
            }
            st.filled = RangeSet::default();
            Ok(std::mem::take(&mut st.held))
        }
        #[cfg(not(target_os = "linux"))]
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::{local_rel, parse_size};

    #[test]
    fn cache_sizes_are_bytes_or_powers_of_1024() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("2 gb"), Some(2 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size(" unlimited "), Some(u64::MAX));
        for bad in ["", "lots", "-1", "12X", "1.2.3", "99999999999T", "G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn object_keys_become_relative_paths_or_nothing() {
        assert_eq!(local_rel("a/b.pt").unwrap().to_str(), Some("a/b.pt"));
        for bad in ["", "../x", "a/../b", "a//b", "/abs", "./x", "a/.", "a/"] {
            assert!(local_rel(bad).is_none(), "{bad}");
        }
    }
}
