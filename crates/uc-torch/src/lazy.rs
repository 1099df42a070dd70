//! Files whose bytes arrive on first use: a local sparse stand-in for a remote object (made by
//! `uc-object`), filled range by range just before a reader touches those bytes.
//!
//! Every reader of checkpoint bytes in unicheck asks [`need`] for the ranges it is about to read
//! (zip records, pickles, tensor data, whole small files through [`read`]). For an ordinary file
//! that is one atomic load and nothing else; for a registered stand-in the [`Fill`] fetches the
//! missing ranges and writes them into the file, so the map or `read` that follows sees them.

use crate::error::{Result, TorchError};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Brings byte ranges of a stand-in file up to date with the object it stands for.
pub trait Fill: Send + Sync + Debug {
    /// Makes `ranges` (absolute offsets in the file) hold the object's bytes; fetches what is missing.
    fn fill(&self, ranges: &[Range<u64>]) -> std::io::Result<()>;
}

static ANY: AtomicBool = AtomicBool::new(false);
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
}
