//! Reader of the native format: checks `COMPLETE`, validates `uc.json` against the safetensors headers,
//! and serves each tensor's bytes as a slice of an mmapped file.

use super::checksum::{
    cuts, digest_range, file_checksum, is_checksum, sha256_bytes, verify_ranges, RangeDigest,
};
use super::MANIFEST_FILE;
use crate::atomic::{safe_rel_path, COMPLETE};
use crate::error::{io_err, Result, StoreError};
use crate::source::input_unit;
use memmap2::Mmap;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uc_schema::{Entry, Manifest, Role};
use uc_torch::lazy;

/// Bytes of consecutive parts `uc verify` reads and hashes as one unit of work.
const VERIFY_RUN: u64 = 8 << 20;

/// One mmapped safetensors file of the checkpoint.
#[derive(Debug)]
struct Mapped {
    rel: String,
    path: PathBuf,
    checksum: String,
    map: Arc<Mmap>,
    /// Where the file's checksum parts begin and end (see `checksum`).
    cuts: Vec<u64>,
}

/// An opened native checkpoint.
#[derive(Debug)]
pub struct NativeCheckpoint {
    dir: PathBuf,
    manifest: Manifest,
    files: Vec<Mapped>,
    /// Per manifest entry: (file index, absolute byte range), when it has storage.
    ranges: Vec<Option<(usize, usize, usize)>>,
    index: HashMap<(String, Role), usize>,
}

impl NativeCheckpoint {
    /// Opens `dir`: requires `COMPLETE`, parses and validates `uc.json`, mmaps the files and checks every
    /// entry against its safetensors header (key, dtype, shape, byte range). Checksums: [`Self::verify`].
    pub fn open(dir: impl AsRef<Path>) -> Result<NativeCheckpoint> {
        let dir = dir.as_ref().to_path_buf();
        let meta = fs::metadata(&dir).map_err(io_err(&dir))?;
        if !meta.is_dir() {
            return Err(StoreError::Format {
                path: dir,
                why: "not a directory".into(),
            });
        }
        match fs::symlink_metadata(dir.join(COMPLETE)) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::Incomplete { path: dir })
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir.join(COMPLETE),
                    source: e,
                })
            }
        }
        let mpath = dir.join(MANIFEST_FILE);
        let json = lazy::read(&mpath)?;
        let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| StoreError::Format {
            path: mpath.clone(),
            why: format!("invalid manifest: {e}"),
        })?;
        manifest.validate().map_err(|source| StoreError::Schema {
            path: mpath.clone(),
            source,
        })?;

        let mut files = Vec::with_capacity(manifest.files.len());
        let mut by_rel = HashMap::new();
        let mut headers = Vec::with_capacity(manifest.files.len());
        for fs_ in &manifest.files {
            let path = safe_rel_path(&dir, &fs_.file)?;
            if by_rel.insert(fs_.file.clone(), files.len()).is_some() {
                return Err(StoreError::Format {
                    path: mpath.clone(),
                    why: format!("file `{}` listed twice", fs_.file),
                });
            }
            if !is_checksum(&fs_.checksum) {
                return Err(StoreError::Format {
                    path: mpath.clone(),
                    why: format!(
                        "file `{}`: checksum `{}` is neither blake3-parts:<64 hex> nor sha256:<64 hex>",
                        fs_.file, fs_.checksum
                    ),
                });
            }
            let file = File::open(&path).map_err(io_err(&path))?;
            let len = file.metadata().map_err(io_err(&path))?.len();
            if len != fs_.bytes {
                return Err(StoreError::Truncated {
                    path,
                    why: format!("{len} bytes on disk, the manifest says {}", fs_.bytes),
                });
            }
            // SAFETY: the map is read-only; like every mmap reader we rely on nobody truncating or
            // rewriting the checkpoint files while it is open (checkpoints are written once, atomically).
            let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(io_err(&path))?);
            uc_torch::mapped::register(&map);
            need_header(&path, &map)?;
            let (n, header) = SafeTensors::read_metadata(&map).map_err(|e| StoreError::Format {
                path: path.clone(),
                why: format!("not a valid safetensors file: {e}"),
            })?;
            headers.push((8 + n, header));
            files.push(Mapped {
                rel: fs_.file.clone(),
                path,
                checksum: fs_.checksum.clone(),
                map,
                cuts: Vec::new(),
            });
        }

        let mut ranges = Vec::with_capacity(manifest.tensors.len());
        let mut index = HashMap::new();
        for (i, e) in manifest.tensors.iter().enumerate() {
            let m = &e.meta;
            if index.insert((m.name.clone(), m.role.clone()), i).is_some() {
                return Err(bad(
                    &mpath,
                    &m.name,
                    format!("role `{}` listed twice", m.role.key()),
                ));
            }
            let Some(st) = &e.storage else {
                ranges.push(None);
                continue;
            };
            let fi = *by_rel.get(&st.file).ok_or_else(|| {
                bad(
                    &mpath,
                    &m.name,
                    format!("file `{}` is not in the manifest's file list", st.file),
                )
            })?;
            let (data_start, header) = &headers[fi];
            let f = &files[fi];
            let info = header.info(&st.key).ok_or_else(|| StoreError::MissingKey {
                path: f.path.clone(),
                key: st.key.clone(),
            })?;
            let dtype = format!("{:?}", info.dtype);
            let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
            let (s, end) = (
                data_start + info.data_offsets.0,
                data_start + info.data_offsets.1,
            );
            if dtype != m.dtype.name() || shape != m.shape {
                return Err(bad(
                    &f.path,
                    &m.name,
                    format!(
                        "header has {dtype} {shape:?}, the manifest {} {:?}",
                        m.dtype.name(),
                        m.shape
                    ),
                ));
            }
            // safetensors already checked that the range holds exactly dtype × shape bytes.
            if (s as u64, end as u64) != (st.start, st.end) {
                return Err(bad(
                    &f.path,
                    &m.name,
                    format!(
                        "bytes {s}..{end} in the header, {}..{} in the manifest",
                        st.start, st.end
                    ),
                ));
            }
            ranges.push(Some((fi, s, end)));
        }
        for (fi, f) in files.iter_mut().enumerate() {
            let mine = ranges.iter().flatten().filter(|r| r.0 == fi);
            f.cuts = cuts(f.map.len() as u64, mine.map(|r| (r.1 as u64, r.2 as u64)));
        }
        Ok(NativeCheckpoint {
            dir,
            manifest,
            files,
            ranges,
            index,
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed, validated `uc.json`.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest entry of a tensor.
    pub fn entry(&self, name: &str, role: &Role) -> Option<&Entry> {
        self.index
            .get(&(name.to_string(), role.clone()))
            .map(|&i| &self.manifest.tensors[i])
    }

    /// A tensor's contiguous little-endian bytes, borrowed from the mmap.
    pub fn tensor(&self, name: &str, role: &Role) -> Result<&[u8]> {
        let missing = || StoreError::MissingKey {
            path: self.dir.join(MANIFEST_FILE),
            key: format!("{name}/{}", role.key()),
        };
        let i = *self
            .index
            .get(&(name.to_string(), role.clone()))
            .ok_or_else(missing)?;
        let (fi, s, e) =
            self.ranges[i].ok_or_else(|| bad(&self.dir, name, "has no stored bytes".into()))?;
        let f = &self.files[fi];
        lazy::need(&f.path, &[s as u64..e as u64])?;
        f.map.get(s..e).ok_or_else(|| StoreError::Truncated {
            path: f.path.clone(),
            why: format!("bytes {s}..{e} of `{name}`"),
        })
    }

    /// Recomputes every file's checksum and `uc.json`'s sha256 against `COMPLETE`. The parts of all
    /// files are hashed in parallel, each a unit of input reads (a remote checkpoint's stand-ins drop
    /// their bytes past the cache budget between parts).
    pub fn verify(&self) -> Result<()> {
        let ranges: Vec<Vec<(u64, u64)>> = self
            .files
            .iter()
            .map(|f| verify_ranges(&f.cuts, &f.checksum, f.map.len() as u64))
            .collect();
        // Jobs: runs of consecutive parts of one file, each run at least VERIFY_RUN bytes (or the
        // file's rest), so a remote file is fetched in large requests, not one per small tensor.
        let mut jobs: Vec<(usize, &[(u64, u64)])> = Vec::new();
        for (fi, rs) in ranges.iter().enumerate() {
            let mut rest = rs.as_slice();
            while !rest.is_empty() {
                let mut n = 0;
                let mut bytes = 0;
                while n < rest.len() && bytes < VERIFY_RUN {
                    bytes += rest[n].1 - rest[n].0;
                    n += 1;
                }
                jobs.push((fi, &rest[..n]));
                rest = &rest[n..];
            }
        }
        let run_bytes = |&(_, run): &(usize, &[(u64, u64)])| run[run.len() - 1].1 - run[0].0;
        let digests: Vec<Result<Vec<RangeDigest>>> =
            crate::schedule::map_largest_first(&jobs, run_bytes, |&(fi, run)| {
                let f = &self.files[fi];
                input_unit(|| {
                    let (s, e) = (run[0].0, run[run.len() - 1].1);
                    lazy::need(&f.path, &[s..e])?;
                    run.iter()
                        .map(|&r| digest_range(&f.path, &f.map, r, &f.checksum))
                        .collect()
                })
            });
        let mut digests = digests
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten();
        for (f, rs) in self.files.iter().zip(&ranges) {
            let mine: Vec<RangeDigest> = digests.by_ref().take(rs.len()).collect();
            let found = file_checksum(mine);
            if found != f.checksum {
                return Err(StoreError::Checksum {
                    path: self.dir.clone(),
                    file: f.rel.clone(),
                    expected: f.checksum.clone(),
                    found,
                });
            }
        }
        let cpath = self.dir.join(COMPLETE);
        let marker = String::from_utf8_lossy(&lazy::read(&cpath)?).into_owned();
        let expected = marker.trim();
        if expected.is_empty() {
            return Ok(());
        }
        if !(expected.starts_with(super::SHA256_PREFIX) && is_checksum(expected)) {
            return Err(StoreError::Format {
                path: cpath,
                why: format!("`{expected}` is not sha256:<64 hex>"),
            });
        }
        let mpath = self.dir.join(MANIFEST_FILE);
        let found = sha256_bytes(&lazy::read(&mpath)?);
        if found != expected {
            return Err(StoreError::Checksum {
                path: self.dir.clone(),
                file: MANIFEST_FILE.into(),
                expected: expected.to_string(),
                found,
            });
        }
        Ok(())
    }
}

/// Fills a safetensors file's length word and JSON header when it is a lazy stand-in.
fn need_header(path: &Path, map: &[u8]) -> Result<()> {
    let len = map.len() as u64;
    lazy::need(path, &[0..len.min(8)])?;
    if let Some(n) = map.get(..8) {
        let n = u64::from_le_bytes(n.try_into().expect("8 bytes"));
        lazy::need(path, &[8..n.saturating_add(8).min(len)])?;
    }
    Ok(())
}

/// A [`StoreError::BadTensor`] at `path`.
fn bad(path: &Path, tensor: &str, why: String) -> StoreError {
    StoreError::BadTensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        why,
    }
}
