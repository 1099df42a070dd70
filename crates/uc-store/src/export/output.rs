//! Where the export's files appear, so that nothing partial is ever visible.
//!
//! Files are written into the job's staging folder (see [`crate::staging`]). A target that does not
//! exist: the staging folder's `out/` is renamed into place at the end. An existing folder (say one
//! holding `config.json` and the tokenizer): the files move into it at the end, the index last; it must
//! not hold Hugging Face weights already (`model.safetensors`, `model-*-of-*.safetensors`, the index).

use super::shard::{INDEX_NAME, WEIGHTS_NAME};
use crate::atomic::{refuse_existing, safe_join, sync_dir, AtomicDir};
use crate::durable::sync_files;
use crate::error::{io_err, Result, StoreError};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

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

/// Whether `target` is an existing folder to add the weights to (false: it does not exist and is
/// created); refuses a file, or a folder that already holds Hugging Face weights.
pub(crate) fn existing_target(target: &Path) -> Result<bool> {
    match fs::metadata(target) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
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
            Ok(true)
        }
    }
}

/// Publishes files `names` written into the staging folder `out`: `out` becomes `target`, or
/// (`existing`) the files move into the existing folder `target` in order (the index last); a file
/// that fails to move takes the ones moved before it back out.
pub(crate) fn publish(
    out: &Path,
    target: &Path,
    existing: bool,
    names: &[String],
) -> Result<PathBuf> {
    if !existing {
        return AtomicDir::resumable(out.to_path_buf(), target.to_path_buf()).commit_unmarked();
    }
    let files = names
        .iter()
        .map(|n| Ok((safe_join(out, n)?, safe_join(target, n)?)))
        .collect::<Result<Vec<_>>>()?;
    let tmps: Vec<&Path> = files.iter().map(|(t, _)| t.as_path()).collect();
    sync_files(out, &tmps)?;
    let mut moved: Vec<&Path> = Vec::new();
    for (tmp, dst) in &files {
        if let Err(e) = refuse_existing(dst).and_then(|_| fs::rename(tmp, dst).map_err(io_err(dst)))
        {
            for m in moved {
                let _ = fs::remove_file(m);
            }
            return Err(e);
        }
        moved.push(dst);
    }
    sync_dir(target);
    Ok(target.to_path_buf())
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
    fn existing_folder_keeps_its_files_and_refuses_weights() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("model");
        assert!(!existing_target(&target).unwrap());
        fs::create_dir(&target).unwrap();
        fs::write(target.join("config.json"), b"{}").unwrap();
        assert!(existing_target(&target).unwrap());
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join(WEIGHTS_NAME), b"w").unwrap();
        publish(&out, &target, true, &[WEIGHTS_NAME.to_string()]).unwrap();
        assert!(target.join(WEIGHTS_NAME).is_file() && target.join("config.json").is_file());
        assert!(matches!(
            existing_target(&target),
            Err(StoreError::OutputExists { .. })
        ));
    }
}
