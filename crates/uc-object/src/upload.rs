//! The pieces of an upload: the files that mark a checkpoint complete (sent last, so that a reader
//! never finds a marker beside missing or partial objects), the check that a prefix holds none,
//! and one file sent whole.

use crate::error::{io_err, ObjectError, Result};
use crate::location::Location;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Files whose presence tells a reader a checkpoint is complete, uploaded after everything else
/// in this order: Hugging Face's shard index, Megatron's and DCP's metadata, DeepSpeed's `latest*`,
/// unicheck's `COMPLETE` (its `uc.json` is checked against it).
pub const MARKERS: &[&str] = &[
    "model.safetensors.index.json",
    "metadata.json",
    ".metadata",
    "latest_universal",
    "latest",
    "uc.json",
    "COMPLETE",
];

/// Files up to this size go up in one PUT; larger ones as multipart uploads.
pub(crate) const SINGLE_PUT: u64 = 8 << 20;
/// Parts in flight per multipart upload.
const PARTS_AT_ONCE: usize = 4;
/// S3 allows at most 10,000 parts.
pub(crate) const MAX_PARTS: u64 = 9_000;

/// What an upload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Objects written.
    pub files: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// The markers already under `dest` (a finished checkpoint is there when any is).
pub fn markers_at(dest: &Location) -> Result<Vec<String>> {
    Ok(dest
        .list()?
        .into_iter()
        .filter(|l| is_marker(&l.rel))
        .map(|l| l.rel)
        .collect())
}

/// Refuses a destination that already holds a finished checkpoint.
pub fn check_free(dest: &Location) -> Result<()> {
    match markers_at(dest)?.into_iter().next() {
        Some(m) => Err(ObjectError::Exists {
            url: dest.url().to_string(),
            marker: m,
        }),
        None => Ok(()),
    }
}

/// Where `rel` stands in [`MARKERS`], if it is one (by its last path part).
pub(crate) fn marker_rank(rel: &str) -> Option<usize> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    MARKERS.iter().position(|m| *m == name)
}

pub(crate) fn is_marker(rel: &str) -> bool {
    marker_rank(rel).is_some()
}

/// Every regular file under `dir`, as a `/`-separated path relative to `root`, with its size.
pub(crate) fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        let t = e.file_type().map_err(io_err(&p))?;
        if t.is_dir() {
            walk(root, &p, out)?;
        } else if t.is_file() {
            let size = e.metadata().map_err(io_err(&p))?.len();
            let rel = p.strip_prefix(root).expect("under root");
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((rel.join("/"), size));
        }
    }
    Ok(())
}

/// Uploads one file whole: one PUT when small, else a multipart upload aborted on any failure;
/// returns its size.
pub(crate) async fn put_file(
    local: &Path,
    rel: &str,
    dest: &Location,
    bump: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let path: PathBuf = local.join(rel);
    let url = dest.url_of(rel);
    let key = dest.key(rel);
    let store = dest.store();
    let mut f = std::fs::File::open(&path).map_err(io_err(&path))?;
    let size = f.metadata().map_err(io_err(&path))?.len();
    if size <= SINGLE_PUT {
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf).map_err(io_err(&path))?;
        store
            .put(&key, PutPayload::from(buf))
            .await
            .map_err(|e| ObjectError::from_store(&url, e))?;
        bump(size);
        return Ok(size);
    }
    let chunk = (SINGLE_PUT).max(size.div_ceil(MAX_PARTS)) as usize;
    let upload = store
        .put_multipart(&key)
        .await
        .map_err(|e| ObjectError::from_store(&url, e))?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, chunk);
    let mut buf = vec![0u8; chunk];
    let res: Result<()> = async {
        loop {
            w.wait_for_capacity(PARTS_AT_ONCE)
                .await
                .map_err(|e| ObjectError::from_store(&url, e))?;
            let n = read_full(&mut f, &mut buf).map_err(io_err(&path))?;
            if n == 0 {
                return Ok(());
            }
            w.write(&buf[..n]);
            bump(n as u64);
        }
    }
    .await;
    match res {
        Ok(()) => w
            .finish()
            .await
            .map(|_| size)
            .map_err(|e| ObjectError::from_store(&url, e)),
        Err(e) => {
            let _ = w.abort().await;
            Err(e)
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
