//! The export's output folder, written so that nothing partial is ever visible.
//!
//! A folder that does not exist is built as a hidden sibling and renamed into place at the end. An
//! existing folder (say one holding `config.json` and the tokenizer) gets hidden temporary files
//! (`.<name>.tmp-<pid>`), renamed to their names at the end, the index last; it must not hold
//! Hugging Face weights already (`model.safetensors`, `model-*-of-*.safetensors`, the index).

use super::shard::{INDEX_NAME, WEIGHTS_NAME};
use crate::atomic::{refuse_existing, safe_join, sync_dir, AtomicDir};
use crate::durable::sync_files;
use crate::error::{io_err, Result, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The output folder under construction.
#[derive(Debug)]
pub(crate) enum Output {
    /// A new folder, built in a hidden sibling.
    New(AtomicDir),
    /// An existing folder and the files written into it so far.
    Existing { dir: PathBuf, files: TempFiles },
}

/// (temporary, final) paths of files written into an existing folder; removed unless renamed.
#[derive(Debug, Default)]
pub(crate) struct TempFiles(Vec<(PathBuf, PathBuf)>);

impl Drop for TempFiles {
    /// Removes the temporary files of an output that was not finished.
    fn drop(&mut self) {
        for (tmp, _) in self.0.drain(..) {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Whether `name` is a weights file of a Hugging Face model folder (ours or from an earlier save).
fn is_hf_weights(name: &str) -> bool {
    let shard = || {
        let rest = name.strip_prefix("model-")?.strip_suffix(".safetensors")?;
        let (a, b) = rest.split_once("-of-")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        (digits(a) && digits(b)).then_some(())
    };
    name == WEIGHTS_NAME || name == INDEX_NAME || shard().is_some()
}

impl Output {
    /// Starts writing into `target` (see the module docs for what is accepted).
    pub fn create(target: &Path) -> Result<Output> {
        match fs::metadata(target) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Ok(Output::New(AtomicDir::create(target)?))
            }
            Err(e) => Err(StoreError::Io {
                path: target.to_path_buf(),
                source: e,
            }),
            Ok(m) if !m.is_dir() => Err(StoreError::OutputExists {
                path: target.to_path_buf(),
            }),
            Ok(_) => {
                for e in fs::read_dir(target).map_err(io_err(target))? {
                    let e = e.map_err(io_err(target))?;
                    if e.file_name().to_str().is_some_and(is_hf_weights) {
                        return Err(StoreError::OutputExists { path: e.path() });
                    }
                }
                Ok(Output::Existing {
                    dir: target.to_path_buf(),
                    files: TempFiles::default(),
                })
            }
        }
    }

    /// Creates the (temporary) file that becomes `name` on [`Output::finish`].
    pub fn file(&mut self, name: &str) -> Result<(File, PathBuf)> {
        let (tmp, dst) = match self {
            Output::New(d) => (d.join(name)?, None),
            Output::Existing { dir, .. } => (
                safe_join(dir, &format!(".{name}.tmp-{}", std::process::id()))?,
                Some(safe_join(dir, name)?),
            ),
        };
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        if let (Output::Existing { files, .. }, Some(dst)) = (self, dst) {
            files.0.push((tmp.clone(), dst));
        }
        Ok((f, tmp))
    }

    /// Makes every file appear under its name (in creation order) and returns the folder.
    pub fn finish(self) -> Result<PathBuf> {
        match self {
            Output::New(d) => d.commit_unmarked(),
            Output::Existing { dir, mut files } => {
                let tmps: Vec<&Path> = files.0.iter().map(|(t, _)| t.as_path()).collect();
                sync_files(&dir, &tmps)?;
                let mut moved: Vec<PathBuf> = Vec::new();
                let mut result = Ok(());
                for (tmp, dst) in &files.0 {
                    result = refuse_existing(dst)
                        .and_then(|_| fs::rename(tmp, dst).map_err(io_err(dst)));
                    if result.is_err() {
                        break;
                    }
                    moved.push(dst.clone());
                }
                if let Err(e) = result {
                    for m in moved {
                        let _ = fs::remove_file(m);
                    }
                    return Err(e); // the rest are removed by drop
                }
                files.0.clear();
                sync_dir(&dir);
                Ok(dir.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_names() {
        for n in [
            "model.safetensors",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
        ] {
            assert!(is_hf_weights(n), "{n}");
        }
        for n in [
            "config.json",
            "model-1.safetensors",
            "model-a-of-b.safetensors",
        ] {
            assert!(!is_hf_weights(n), "{n}");
        }
    }

    #[test]
    fn existing_folder_keeps_its_files_and_gets_no_leftovers() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("config.json"), b"{}").unwrap();
        let mut o = Output::create(t.path()).unwrap();
        let (_, tmp) = o.file("model.safetensors").unwrap();
        assert!(tmp.is_file());
        drop(o);
        let left: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
        let mut o = Output::create(t.path()).unwrap();
        o.file("model.safetensors").unwrap();
        o.finish().unwrap();
        assert!(t.path().join("model.safetensors").is_file());
        assert!(matches!(
            Output::create(t.path()),
            Err(StoreError::OutputExists { .. })
        ));
    }
}
