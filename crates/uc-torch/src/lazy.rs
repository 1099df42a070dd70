//! Files whose bytes arrive on first use: a local sparse stand-in for a remote object (made by
//! `uc-object`), filled range by range just before a reader touches those bytes.
//!
//! Every reader of checkpoint bytes in unicheck asks [`need`] for the ranges it is about to read
//! (zip records, pickles, tensor data, whole small files through [`read`]). For an ordinary file
//! that is one atomic load and nothing else; for a registered stand-in the [`Fill`] fetches the
//! missing ranges and writes them into the file, so the map or `read` that follows sees them.
//!
//! The bytes fetched stay in the stand-ins, up to a budget ([`set_budget`]): a conversion wraps each
//! unit of work (one tensor) in a [`hold`] and calls [`relieve`] after it; past the budget, `relieve`
//! waits until no unit is in flight and has every stand-in drop its bytes ([`Fill::release`]). It does
//! the same, whatever the budget, when the stand-ins' file system runs short of room ([`set_low_room`]:
//! other processes and the output may fill it too). A byte read again later is fetched again, because
//! every reader asks [`need`] before it reads.

use crate::error::{Result, TorchError};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// Brings byte ranges of a stand-in file up to date with the object it stands for.
pub trait Fill: Send + Sync + Debug {
    /// Makes `ranges` (absolute offsets in the file) hold the object's bytes; fetches what is missing.
    /// Reports the bytes it writes into the file with [`filled`].
    fn fill(&self, ranges: &[Range<u64>]) -> std::io::Result<()>;

    /// Drops every byte held in the stand-in (they are fetched again when needed); returns how many
    /// were dropped. Called only while no reader is between [`need`] and its read ([`relieve`]).
    fn release(&self) -> std::io::Result<u64> {
        Ok(0)
    }
}

static ANY: AtomicBool = AtomicBool::new(false);
/// Bytes held in stand-ins (reported by [`filled`], less what [`relieve`] dropped).
static CACHED: AtomicU64 = AtomicU64::new(0);
/// Most bytes ever held at once, and bytes dropped so far.
static PEAK: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);
/// Bytes stand-ins may hold before [`relieve`] drops them.
static BUDGET: AtomicU64 = AtomicU64::new(u64::MAX);
/// Bytes still held after the last release (a stand-in that cannot drop its bytes keeps them): the
/// budget counts from here, so such bytes do not make every unit wait for a release.
static FLOOR: AtomicU64 = AtomicU64::new(0);

/// Whether the stand-ins' file system runs short of room ([`set_low_room`]).
pub type LowRoom = Arc<dyn Fn() -> bool + Send + Sync>;
static LOW_ROOM: RwLock<Option<LowRoom>> = RwLock::new(None);
/// Bytes filled since the process started (never less), and the count at which [`LOW_ROOM`] is
/// asked next.
static FILLED: AtomicU64 = AtomicU64::new(0);
static NEXT_ROOM_CHECK: AtomicU64 = AtomicU64::new(0);
/// Bytes filled between two questions to [`LOW_ROOM`] (each one a `statvfs`).
pub const ROOM_CHECK_EVERY: u64 = 64 << 20;

/// Units of work in flight, and whether a release waits for them to end.
#[derive(Debug, Default)]
struct Gate {
    active: usize,
    draining: bool,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    active: 0,
    draining: false,
});
static GATE_CHANGED: Condvar = Condvar::new();

thread_local! {
    /// Holds this thread has open (a nested hold never waits: its thread already counts as busy).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}
static REGISTRY: RwLock<BTreeMap<PathBuf, Arc<dyn Fill>>> = RwLock::new(BTreeMap::new());

/// Registers `path` as a stand-in filled by `fill`.
pub fn register(path: &Path, fill: Arc<dyn Fill>) {
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    r.insert(path.to_path_buf(), fill);
    ANY.store(true, Ordering::Release);
}

/// Forgets every stand-in under `dir` (when its mirror is removed).
pub fn unregister_under(dir: &Path) {
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    r.retain(|p, _| !p.starts_with(dir));
    ANY.store(!r.is_empty(), Ordering::Release);
}

/// The filler of `path`, if it is a stand-in.
pub fn lookup(path: &Path) -> Option<Arc<dyn Fill>> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    let r = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    r.get(path).cloned()
}

/// Makes sure bytes `ranges` of `path` are present (a no-op for ordinary files).
pub fn need(path: &Path, ranges: &[Range<u64>]) -> Result<()> {
    match lookup(path) {
        Some(f) => fill_with(&*f, path, ranges),
        None => Ok(()),
    }
}

/// Runs `f` on the non-empty `ranges`, naming `path` in the error.
pub fn fill_with(f: &dyn Fill, path: &Path, ranges: &[Range<u64>]) -> Result<()> {
    let ranges: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    if ranges.is_empty() {
        return Ok(());
    }
    f.fill(&ranges).map_err(|source| TorchError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Sets the bytes stand-ins may hold before [`relieve`] drops them (default: no limit).
pub fn set_budget(bytes: u64) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

/// Also has [`relieve`] drop the stand-ins' bytes, whatever the budget, when `low` says their file
/// system runs short of room (asked again after every [`ROOM_CHECK_EVERY`] bytes filled); `None`:
/// only the budget counts.
pub fn set_low_room(low: Option<LowRoom>) {
    *LOW_ROOM.write().unwrap_or_else(|p| p.into_inner()) = low;
    NEXT_ROOM_CHECK.store(FILLED.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Whether [`LOW_ROOM`] is due to be asked and says the room is short.
fn room_low() -> bool {
    let filled = FILLED.load(Ordering::Relaxed);
    let next = NEXT_ROOM_CHECK.load(Ordering::Relaxed);
    // One thread asks per ROOM_CHECK_EVERY bytes.
    if filled < next
        || NEXT_ROOM_CHECK
            .compare_exchange(
                next,
                filled + ROOM_CHECK_EVERY,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
    {
        return false;
    }
    let low = LOW_ROOM.read().unwrap_or_else(|p| p.into_inner()).clone();
    low.is_some_and(|f| f())
}

/// Called by a [`Fill`] for the bytes it wrote into a stand-in.
pub fn filled(bytes: u64) {
    FILLED.fetch_add(bytes, Ordering::Relaxed);
    let now = CACHED.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// What the stand-ins held: (bytes now, most at once, bytes dropped by [`relieve`]).
pub fn cache_stats() -> (u64, u64, u64) {
    (
        CACHED.load(Ordering::Relaxed),
        PEAK.load(Ordering::Relaxed),
        RELEASED.load(Ordering::Relaxed),
    )
}

/// A unit of work that reads stand-in bytes: while one is open, [`relieve`] releases nothing.
#[must_use = "the hold ends when dropped"]
#[derive(Debug)]
pub struct Hold {
    counted: bool,
}

/// Opens a [`Hold`] around one unit of work (a tensor read and written). While a release is under
/// way it waits for it — unless this thread already holds one. A unit must not wait on other threads'
/// units (no rayon calls inside it), else a release could wait for a unit that waits for it.
pub fn hold() -> Hold {
    if !ANY.load(Ordering::Acquire) {
        return Hold { counted: false };
    }
    let nested = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() > 1
    });
    let mut g = GATE.lock().unwrap_or_else(|p| p.into_inner());
    while g.draining && !nested {
        g = GATE_CHANGED.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    g.active += 1;
    Hold { counted: true }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        let mut g = GATE.lock().unwrap_or_else(|p| p.into_inner());
        g.active -= 1;
        if g.active == 0 {
            GATE_CHANGED.notify_all();
        }
    }
}

/// After a unit of work: when the stand-ins hold more than the budget, or their file system runs
/// short of room ([`set_low_room`]), waits until no [`Hold`] is open and has every stand-in drop its
/// bytes. Does nothing on a thread that holds a [`Hold`].
pub fn relieve() -> Result<()> {
    if DEPTH.with(Cell::get) > 0 {
        return Ok(());
    }
    let fresh = CACHED
        .load(Ordering::Relaxed)
        .saturating_sub(FLOOR.load(Ordering::Relaxed));
    if fresh <= BUDGET.load(Ordering::Relaxed) && !(fresh > 0 && room_low()) {
        return Ok(());
    }
    let mut g = GATE.lock().unwrap_or_else(|p| p.into_inner());
    if g.draining {
        // Another thread releases: wait for it rather than release twice.
        while g.draining {
            g = GATE_CHANGED.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        return Ok(());
    }
    g.draining = true;
    while g.active > 0 {
        g = GATE_CHANGED.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    drop(g);
    let fills: Vec<(PathBuf, Arc<dyn Fill>)> = {
        let r = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
        r.iter().map(|(p, f)| (p.clone(), f.clone())).collect()
    };
    let mut res = Ok(());
    for (path, f) in fills {
        match f.release() {
            Ok(n) => {
                let _ = CACHED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(n))
                });
                RELEASED.fetch_add(n, Ordering::Relaxed);
            }
            Err(source) => {
                res = Err(TorchError::Io { path, source });
                break;
            }
        }
    }
    FLOOR.store(CACHED.load(Ordering::Relaxed), Ordering::Relaxed);
    let mut g = GATE.lock().unwrap_or_else(|p| p.into_inner());
    g.draining = false;
    GATE_CHANGED.notify_all();
    res
}

/// Makes sure all of `path` is present (before something that bypasses the hooks reads it).
pub fn need_whole(path: &Path) -> Result<()> {
    if let Some(f) = lookup(path) {
        let len = std::fs::metadata(path)
            .map_err(crate::error::io_err(path))?
            .len();
        fill_with(&*f, path, &[0..len])?;
    }
    Ok(())
}

/// The whole of `path`, filled first when it is a stand-in.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    need_whole(path)?;
    std::fs::read(path).map_err(crate::error::io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Log(Mutex<Vec<Range<u64>>>);

    impl Fill for Log {
        fn fill(&self, ranges: &[Range<u64>]) -> std::io::Result<()> {
            self.0.lock().unwrap().extend(ranges.iter().cloned());
            Ok(())
        }
    }

    #[test]
    fn need_reaches_only_registered_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"0123456789").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let log = Arc::new(Log::default());
        register(&a, log.clone());
        need(&a, &[2..4, 5..5]).unwrap();
        need(&b, &[0..1]).unwrap();
        assert_eq!(read(&a).unwrap(), b"0123456789");
        assert_eq!(*log.0.lock().unwrap(), vec![2..4, 0..10]);
        unregister_under(dir.path());
        assert!(lookup(&a).is_none());
    }

    /// A stand-in that counts the bytes it holds and how often it was released.
    #[derive(Debug, Default)]
    struct Cache {
        held: AtomicU64,
        releases: AtomicU64,
    }

    impl Fill for Cache {
        fn fill(&self, ranges: &[Range<u64>]) -> std::io::Result<()> {
            let n: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            self.held.fetch_add(n, Ordering::SeqCst);
            filled(n);
            Ok(())
        }

        fn release(&self) -> std::io::Result<u64> {
            self.releases.fetch_add(1, Ordering::SeqCst);
            Ok(self.held.swap(0, Ordering::SeqCst))
        }
    }

    /// The tests that change the budget or the room check, one at a time.
    static GLOBALS: Mutex<()> = Mutex::new(());

    #[test]
    fn relieve_drops_bytes_past_the_budget_once_no_unit_holds_any() {
        let _one = GLOBALS.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![0u8; 1000]).unwrap();
        let cache = Arc::new(Cache::default());
        register(&a, cache.clone());
        let released_before = cache_stats().2;
        set_budget(100);
        {
            let _unit = hold();
            need(&a, &[0..80, 100..150]).unwrap();
            // Inside a unit nothing is released, whatever the cache holds.
            relieve().unwrap();
            assert_eq!(cache.releases.load(Ordering::SeqCst), 0);
        }
        relieve().unwrap();
        assert_eq!(cache.releases.load(Ordering::SeqCst), 1);
        assert_eq!(cache.held.load(Ordering::SeqCst), 0);
        assert!(cache_stats().2 >= released_before + 130);
        // Under the budget: nothing to do.
        need(&a, &[0..60]).unwrap();
        relieve().unwrap();
        assert_eq!(cache.releases.load(Ordering::SeqCst), 1);
        // A unit in flight on another thread, which takes a nested hold while the release waits for
        // it (a nested hold must not wait): the release happens after that unit ends.
        need(&a, &[0..60]).unwrap();
        let ended = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let t = {
            let ended = ended.clone();
            std::thread::spawn(move || {
                let outer = hold();
                tx.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(100));
                let inner = hold();
                drop(inner);
                ended.store(true, Ordering::SeqCst);
                drop(outer);
            })
        };
        rx.recv().unwrap();
        relieve().unwrap();
        assert!(
            ended.load(Ordering::SeqCst),
            "released while a unit held the bytes"
        );
        assert_eq!(cache.releases.load(Ordering::SeqCst), 2);
        t.join().unwrap();
        set_budget(u64::MAX);
        unregister_under(dir.path());
    }

    #[test]
    fn relieve_drops_bytes_when_the_room_runs_short_whatever_the_budget() {
        let _one = GLOBALS.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let cache = Arc::new(Cache::default());
        register(&a, cache.clone());
        set_budget(u64::MAX);
        let (low, asked) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let check: LowRoom = {
            let (low, asked) = (low.clone(), asked.clone());
            Arc::new(move || {
                asked.fetch_add(1, Ordering::SeqCst);
                low.load(Ordering::SeqCst)
            })
        };
        set_low_room(Some(check));
        // Room enough: asked once, nothing dropped.
        need(&a, &[0..100]).unwrap();
        relieve().unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(cache.releases.load(Ordering::SeqCst), 0);
        // Not asked again before ROOM_CHECK_EVERY more bytes were filled, short or not.
        low.store(true, Ordering::SeqCst);
        need(&a, &[100..200]).unwrap();
        relieve().unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(cache.releases.load(Ordering::SeqCst), 0);
        // Then asked, and the room is short: everything held is dropped.
        need(&a, &[200..ROOM_CHECK_EVERY + 100]).unwrap();
        relieve().unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        assert_eq!(cache.releases.load(Ordering::SeqCst), 1);
        assert_eq!(cache.held.load(Ordering::SeqCst), 0);
        // Without the check only the budget counts.
        set_low_room(None);
        need(&a, &[0..ROOM_CHECK_EVERY * 2]).unwrap();
        relieve().unwrap();
        assert_eq!(cache.releases.load(Ordering::SeqCst), 1);
        // Leave nothing held for the other tests.
        set_budget(0);
        relieve().unwrap();
        set_budget(u64::MAX);
        unregister_under(dir.path());
    }
}
