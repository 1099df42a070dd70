//! Atomic output directories and safe path joins: nothing partial is ever left, nothing is written outside.
//!
//! An [`AtomicDir`] is written in a hidden temporary sibling (`.<name>.tmp-<pid>`), gets a `COMPLETE`
//! marker last and is then renamed into place. Dropping it uncommitted removes the temporary directory.
//! Files inside are not synced one by one: [`AtomicDir::commit`] makes the whole tree durable once,
//! before `COMPLETE` is written.

use crate::durable::sync_tree;
use crate::error::{io_err, Result, StoreError};
use crate::staging::{parent_of, try_lock};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use uc_schema::SchemaError;

/// Name of the marker file written last into every finished output directory.
pub const COMPLETE: &str = "COMPLETE";

/// How many temporary names to try before giving up (stale directories of crashed runs may hold some).
const TMP_ATTEMPTS: u32 = 1000;

/// An output directory under construction; becomes visible at its target only on [`AtomicDir::commit`].
#[derive(Debug)]
pub struct AtomicDir {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
    /// Exclusive flock(2) on the temporary folder while it is written: tells a later run that the
    /// folder is a live writer's, not a killed one's.
    _lock: Option<fs::File>,
    /// False for a staging folder that must survive an error to be resumed.
    remove_on_drop: bool,
}

impl AtomicDir {
    /// Starts an output at `target`: refuses an existing path, creates the temporary sibling directory.
    ///
    /// The parent directory must exist; it is not created, so a failure leaves nothing behind.
    pub fn create(target: impl AsRef<Path>) -> Result<AtomicDir> {
        let target = target.as_ref().to_path_buf();
        let name = target.file_name().ok_or_else(|| StoreError::Format {
            path: target.clone(),
            why: "output path has no final name component".into(),
        })?;
        let parent = parent_of(&target)?;
        clear_stale_siblings(&target, None)?;
        refuse_existing(&target)?;
        let pid = std::process::id();
        for attempt in 0..TMP_ATTEMPTS {
            let mut tmp_name = OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".tmp-{pid}"));
            if attempt > 0 {
                tmp_name.push(format!("-{attempt}"));
            }
            let tmp = parent.join(tmp_name);
            match fs::create_dir(&tmp) {
                Ok(()) => {
                    let lock = fs::File::open(&tmp).ok();
                    if let Some(l) = &lock {
                        let _ = try_lock(l);
                    }
                    return Ok(AtomicDir {
                        target,
                        tmp,
                        committed: false,
                        _lock: lock,
                        remove_on_drop: true,
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(StoreError::Io {
                        path: tmp,
                        source: e,
                    })
                }
            }
        }
        Err(StoreError::Format {
            path: target,
            why: "no free temporary directory name beside the output".into(),
        })
    }

    /// An existing staging folder `tmp` that becomes `target` on commit and is kept on error (so a
    /// rerun can resume it).
    pub fn resumable(tmp: PathBuf, target: PathBuf) -> AtomicDir {
        AtomicDir {
            target,
            tmp,
            committed: false,
            _lock: None,
            remove_on_drop: false,
        }
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Where the directory appears after [`AtomicDir::commit`].
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Safely joins a single name under the temporary directory (see [`safe_join`]).
    pub fn join(&self, name: &str) -> Result<PathBuf> {
        safe_join(&self.tmp, name)
    }

    /// Creates (if missing) the sub-directory `name` of the temporary directory and returns its path.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.join(name)?;
        create_dir_if_missing(&p)?;
        Ok(p)
    }

    /// Makes everything written durable (one [`sync_tree`]), then writes `COMPLETE` (holding `marker`),
    /// syncs it and renames the directory into place; returns the target.
    pub fn commit(self, marker: &[u8]) -> Result<PathBuf> {
        sync_tree(&self.tmp)?;
        let complete = self.tmp.join(COMPLETE);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&complete)
            .map_err(io_err(&complete))?;
        f.write_all(marker).map_err(io_err(&complete))?;
        f.sync_all().map_err(io_err(&complete))?;
        drop(f);
        sync_dir(&self.tmp);
        self.publish()
    }

    /// Syncs and renames the directory into place without a `COMPLETE` marker (for layouts of other
    /// tools, such as Hugging Face model folders); returns the target.
    pub fn commit_unmarked(self) -> Result<PathBuf> {
        sync_tree(&self.tmp)?;
        self.publish()
    }

    /// Renames the (synced) directory into place and syncs its parent.
    fn publish(mut self) -> Result<PathBuf> {
        refuse_existing(&self.target)?;
        fs::rename(&self.tmp, &self.target).map_err(io_err(&self.target))?;
        self.committed = true;
        if let Some(parent) = self.target.parent() {
            sync_dir(parent);
        }
        Ok(self.target.clone())
    }
}

impl Drop for AtomicDir {
    /// Removes the temporary directory of an output that was never committed.
    fn drop(&mut self) {
        if !self.committed && self.remove_on_drop {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Folders of killed runs removed while starting outputs, for the CLI to report (nothing here prints).
static REMOVED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Takes the list of stale folders removed since the last call.
pub fn take_removed() -> Vec<PathBuf> {
    std::mem::take(&mut *REMOVED.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Looks at the hidden siblings of `target` that unicheck writes (`.<name>.tmp-*` of a single-process
/// output, `.<name>.uc-*` of a staged job) except `keep`: one whose writer is dead (no lock held) is
/// removed and listed in [`take_removed`]; one a live process holds refuses with
/// [`StoreError::LiveWriters`].
pub(crate) fn clear_stale_siblings(target: &Path, keep: Option<&OsStr>) -> Result<()> {
    let Some(name) = target.file_name() else {
        return Ok(());
    };
    let parent = parent_of(target)?;
    let (mut tmp_pre, mut job_pre) = (OsString::from("."), OsString::from("."));
    tmp_pre.push(name);
    tmp_pre.push(".tmp-");
    job_pre.push(name);
    job_pre.push(".uc-");
    let (tmp_pre, job_pre) = (tmp_pre.as_encoded_bytes(), job_pre.as_encoded_bytes());
    for e in fs::read_dir(&parent).map_err(io_err(&parent))? {
        let e = e.map_err(io_err(&parent))?;
        let n = e.file_name();
        if Some(n.as_os_str()) == keep {
            continue;
        }
        let b = n.as_encoded_bytes();
        let lock_path = if b.starts_with(tmp_pre) {
            e.path()
        } else if b.starts_with(job_pre) {
            e.path().join("lock")
        } else {
            continue;
        };
        let p = e.path();
        let live = match fs::File::open(&lock_path) {
            Ok(f) => !try_lock(&f).unwrap_or(false),
            Err(_) => false,
        };
        if live {
            return Err(StoreError::LiveWriters { path: p });
        }
        crate::staging::remove_any(&p)?;
        REMOVED.lock().unwrap_or_else(|p| p.into_inner()).push(p);
    }
    Ok(())
}

/// Fails with [`StoreError::OutputExists`] when anything (file, directory, link) is at `path`.
pub fn refuse_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(StoreError::OutputExists {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Joins one tensor/state name under `dir`, refusing anything that could leave it.
///
/// Rejects what [`uc_schema::validate_name`] rejects (empty, `/`, `\`, NUL, `..`) plus `.`, absolute
/// paths and drive prefixes: the result is always a direct child of `dir`.
pub fn safe_join(dir: &Path, name: &str) -> Result<PathBuf> {
    let unsafe_name = |why: &'static str| StoreError::Schema {
        path: dir.to_path_buf(),
        source: SchemaError::UnsafeName {
            name: name.to_string(),
            why,
        },
    };
    uc_schema::validate_name(name).map_err(|source| StoreError::Schema {
        path: dir.to_path_buf(),
        source,
    })?;
    if name == "." {
        return Err(unsafe_name("is `.`"));
    }
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) => Ok(dir.join(name)),
        _ => Err(unsafe_name("is not a single plain path component")),
    }
}

/// Joins a `/`-separated relative path (as stored in a manifest) under `dir`, each component checked by [`safe_join`].
pub fn safe_rel_path(dir: &Path, rel: &str) -> Result<PathBuf> {
    let mut p = dir.to_path_buf();
    for part in rel.split('/') {
        p = safe_join(&p, part)?;
    }
    Ok(p)
}

/// Creates a directory, accepting one that already exists.
pub(crate) fn create_dir_if_missing(p: &Path) -> Result<()> {
    match fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        Err(e) => Err(StoreError::Io {
            path: p.to_path_buf(),
            source: e,
        }),
    }
}

/// Best-effort fsync of a directory entry list (not supported everywhere, so errors are ignored).
pub(crate) fn sync_dir(p: &Path) {
    if let Ok(d) = fs::File::open(p) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_join_rejects_escapes() {
        let d = Path::new("/out");
        for bad in ["", "..", ".", "../x", "a/b", "a\\b", "/abs", "x\0y", "a..b"] {
            assert!(safe_join(d, bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            safe_join(d, "layers.0.w").ok(),
            Some(PathBuf::from("/out/layers.0.w"))
        );
        assert!(safe_rel_path(d, "tensors/00000.safetensors").is_ok());
        assert!(safe_rel_path(d, "tensors/../x").is_err());
        assert!(safe_rel_path(d, "/etc/passwd").is_err());
    }
}
