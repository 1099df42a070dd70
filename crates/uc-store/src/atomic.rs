//! Atomic output directories and safe path joins: nothing partial is ever left, nothing is written outside.
//!
//! An [`AtomicDir`] is written in a hidden temporary sibling (`.<name>.tmp-<pid>`), gets a `COMPLETE`
//! marker last and is then renamed into place. Dropping it uncommitted removes the temporary directory.
//! Files inside are not synced one by one: [`AtomicDir::commit`] makes the whole tree durable once,
//! before `COMPLETE` is written.

use crate::durable::sync_tree;
use crate::error::{io_err, Result, StoreError};
use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};
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
}

impl AtomicDir {
    /// Starts an output at `target`: refuses an existing path, creates the temporary sibling directory.
    ///
    /// The parent directory must exist; it is not created, so a failure leaves nothing behind.
    pub fn create(target: impl AsRef<Path>) -> Result<AtomicDir> {
        let target = target.as_ref().to_path_buf();
        refuse_existing(&target)?;
        let name = target.file_name().ok_or_else(|| StoreError::Format {
            path: target.clone(),
            why: "output path has no final name component".into(),
        })?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let meta = fs::metadata(&parent).map_err(io_err(&parent))?;
        if !meta.is_dir() {
            return Err(StoreError::Format {
                path: parent,
                why: "parent of the output is not a directory".into(),
            });
        }
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
                    return Ok(AtomicDir {
                        target,
                        tmp,
                        committed: false,
                    })
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
            .create_new(true)
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
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
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
