//! PyTorch `.pt` reader: a torch.save zip (`<prefix>/data.pkl` + `<prefix>/data/<key>` storages)
//! memory-mapped, unpickled safely, with tensors read lazily as byte slices of the map.

pub mod zipfile;

use crate::error::{io_err, Result, TorchError};
use crate::lazy::{self, Fill};
use crate::pickle::{unpickle, Allowlist, Cursor, PyValue, TensorRef};
use memmap2::{Mmap, MmapOptions};
use std::borrow::Cow;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zipfile::{ZipEntry, ZipIndex};

/// The bytes a `PtFile` reads from: part of a shared mmap, or an owned buffer.
#[derive(Debug, Clone)]
enum Backing {
    Map {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<[u8]>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map { map, start, len } => &map[*start..*start + *len],
            Backing::Owned(b) => b,
        }
    }

    /// Best-effort `madvise` of bytes `[off, off+n)` of the archive (nothing for owned bytes, nor
    /// for an archive of a few pages — a DCP chunk — where the kernel's read-around costs nothing
    /// and three system calls per archive would: 400k chunks made 1.2 M calls).
    #[cfg(unix)]
    fn advise(&self, advice: memmap2::Advice, off: u64, n: u64) {
        if let Backing::Map { map, start, len } = self {
            if *len < ADVISE_MIN {
                return;
            }
            let off = off.min(*len as u64) as usize;
            let n = n.min((*len - off) as u64) as usize;
            if n > 0 {
                let _ = map.advise_range(advice, *start + off, n);
            }
        }
    }

    /// `madvise` exists on Unix only.
    #[cfg(not(unix))]
    fn advise(&self, _advice: (), _off: u64, _n: u64) {}
}

/// Archives smaller than this get no access advice.
#[cfg(unix)]
const ADVISE_MIN: usize = 1 << 20;

/// Access advice, where the platform has it.
#[cfg(unix)]
mod advice {
    pub use memmap2::Advice;
    pub const NORMAL: Advice = Advice::Normal;
    pub const RANDOM: Advice = Advice::Random;
    pub const WILL_NEED: Advice = Advice::WillNeed;
}

/// No access advice off Unix.
#[cfg(not(unix))]
mod advice {
    pub const NORMAL: () = ();
    pub const RANDOM: () = ();
    pub const WILL_NEED: () = ();
}

/// Marks a mapped archive for random access while its zip index and pickle are read, so that each
/// page touched faults in only itself (not the kernel's read-around window, often megabytes of tensor
/// data); back to normal on drop.
struct MetadataReads<'a>(&'a Backing);

impl<'a> MetadataReads<'a> {
    fn start(b: &'a Backing) -> MetadataReads<'a> {
        b.advise(advice::RANDOM, 0, u64::MAX);
        MetadataReads(b)
    }
}

impl Drop for MetadataReads<'_> {
    fn drop(&mut self) {
        self.0.advise(advice::NORMAL, 0, u64::MAX);
    }
}

/// An open torch.save archive: its value tree and lazy access to its tensors' bytes.
#[derive(Debug, Clone)]
pub struct PtFile {
    path: PathBuf,
    /// Where the archive starts in `path` (non-zero for archives embedded in `.distcp` files).
    base: u64,
    backing: Backing,
    index: ZipIndex,
    prefix: String,
    root: PyValue,
    /// Set when `path` is a lazily filled stand-in ([`crate::lazy`]).
    lazy: Option<Arc<dyn Fill>>,
}

/// Maps `[start, start+len)` of `path` after checking it lies inside the file.
fn map_range(path: &Path, file: &File, start: u64, len: u64) -> Result<Arc<Mmap>> {
    let size = file.metadata().map_err(io_err(path))?.len();
    if start.checked_add(len).is_none_or(|e| e > size) {
        return Err(TorchError::Truncated {
            path: path.to_path_buf(),
            why: format!("byte range [{start}, +{len}) lies past the end of the {size}-byte file"),
        });
    }
    let len = usize::try_from(len).map_err(|_| TorchError::Format {
        path: path.to_path_buf(),
        why: format!("range of {len} bytes does not fit in memory"),
    })?;
    // SAFETY: the file is opened read-only; like every mmap reader we assume nobody truncates
    // or rewrites a checkpoint while it is being read.
    let map =
        unsafe { MmapOptions::new().offset(start).len(len).map(file) }.map_err(io_err(path))?;
    let map = Arc::new(map);
    crate::mapped::register(&map);
    Ok(map)
}

impl PtFile {
    /// Opens a whole `.pt` file, accepting only the globals in `allow`.
    pub fn open(path: impl AsRef<Path>, allow: &Allowlist) -> Result<PtFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        PtFile::open_file_range(path, &file, 0, size, allow)
    }

    /// Opens the torch.save archive stored at bytes `[start, start+len)` of `path` (a `.distcp` chunk).
    pub fn open_range(
        path: impl AsRef<Path>,
        start: u64,
        len: u64,
        allow: &Allowlist,
    ) -> Result<PtFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_err(path))?;
        PtFile::open_file_range(path, &file, start, len, allow)
    }

    /// Opens several archives of one file (e.g. every chunk of a `.distcp`), sharing one mapping.
    pub fn open_ranges(
        path: impl AsRef<Path>,
        ranges: &[(u64, u64)],
        allow: &Allowlist,
    ) -> Result<Vec<PtFile>> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        if size == 0 {
            return ranges
                .iter()
                .map(|&(s, l)| PtFile::open_file_range(path, &file, s, l, allow))
                .collect();
        }
        let map = map_range(path, &file, 0, size)?;
        ranges
            .iter()
            .map(|&(start, len)| {
                if start.checked_add(len).is_none_or(|e| e > size) {
                    return Err(TorchError::Truncated {
                        path: path.to_path_buf(),
                        why: format!("byte range [{start}, +{len}) lies past the end of the {size}-byte file"),
                    });
                }
                let backing = Backing::Map { map: map.clone(), start: start as usize, len: len as usize };
                PtFile::parse(path.to_path_buf(), start, backing, allow)
            })
            .collect()
    }

    /// Opens the archive at `[start, start+len)` of `map`, a mapping of all of `path` shared by many archives.
    pub fn from_map(
        path: impl Into<PathBuf>,
        map: &Arc<Mmap>,
        start: u64,
        len: u64,
        allow: &Allowlist,
    ) -> Result<PtFile> {
        let path = path.into();
        let size = map.len() as u64;
        if start.checked_add(len).is_none_or(|e| e > size) {
            return Err(TorchError::Truncated {
                path,
                why: format!(
                    "byte range [{start}, +{len}) lies past the end of the {size}-byte file"
                ),
            });
        }
        let backing = Backing::Map {
            map: map.clone(),
            start: start as usize,
            len: len as usize,
        };
        PtFile::parse(path, start, backing, allow)
    }

    /// Maps all of `path` read-only for [`PtFile::from_map`]; `None` for an empty file (nothing to map).
    pub fn map_file(path: &Path) -> Result<Option<Arc<Mmap>>> {
        let file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        if size == 0 {
            return Ok(None);
        }
        map_range(path, &file, 0, size).map(Some)
    }

    /// Parses an archive held in memory; `label` names it in errors.
    pub fn from_bytes(
        label: impl Into<PathBuf>,
        bytes: Vec<u8>,
        allow: &Allowlist,
    ) -> Result<PtFile> {
        PtFile::parse(label.into(), 0, Backing::Owned(bytes.into()), allow)
    }

    fn open_file_range(
        path: &Path,
        file: &File,
        start: u64,
        len: u64,
        allow: &Allowlist,
    ) -> Result<PtFile> {
        let backing = if len == 0 {
            let size = file.metadata().map_err(io_err(path))?.len();
            if start > size {
                return Err(TorchError::Truncated {
                    path: path.to_path_buf(),
                    why: format!(
                        "byte range starts at {start}, past the end of the {size}-byte file"
                    ),
                });
            }
            Backing::Owned(Arc::from(Vec::new()))
        } else {
            let map = map_range(path, file, start, len)?;
            let len = map.len();
            Backing::Map { map, start: 0, len }
        };
        PtFile::parse(path.to_path_buf(), start, backing, allow)
    }

    fn parse(path: PathBuf, base: u64, backing: Backing, allow: &Allowlist) -> Result<PtFile> {
        let bytes = backing.bytes();
        let _random = MetadataReads::start(&backing);
        let lazy = match backing {
            Backing::Map { .. } => lazy::lookup(&path),
            Backing::Owned(_) => None,
        };
        let need = |ranges: &[Range<u64>]| need_in(&lazy, &path, base, ranges);
        let index = zipfile::parse_filling(bytes, &path, &need)?;
        let prefix = find_prefix(&index, &path)?;
        let need_entry = |e: &ZipEntry| need(&[e.data_range()]);
        if let Some(e) = index.get(&format!("{prefix}/byteorder")) {
            need_entry(e)?;
            let b = entry_slice(bytes, e, &path)?;
            if b.trim_ascii() != b"little" {
                return Err(TorchError::Format {
                    path: path.clone(),
                    why: format!(
                        "byteorder is {:?}; only little-endian is supported",
                        String::from_utf8_lossy(b)
                    ),
                });
            }
        }
        let pkl_name = format!("{prefix}/data.pkl");
        let pkl = index.get(&pkl_name).ok_or_else(|| TorchError::MissingKey {
            path: path.clone(),
            key: pkl_name.clone(),
        })?;
        backing.advise(advice::WILL_NEED, pkl.data_start, pkl.size);
        need_entry(pkl)?;
        let root = unpickle(entry_slice(bytes, pkl, &path)?, allow, &path)?;
        let file = PtFile {
            path,
            base,
            index,
            prefix,
            root,
            backing: backing.clone(),
            lazy,
        };
        file.root
            .visit_tensors(&mut |name, t| file.check_tensor(name, t).map(|_| ()))?;
        Ok(file)
    }

    /// The file the archive was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The archive's top-level folder name (`archive`, or the file stem for DeepSpeed files).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The unpickled value tree.
    pub fn root(&self) -> &PyValue {
        &self.root
    }

    /// Takes the value tree out.
    pub fn into_root(self) -> PyValue {
        self.root
    }

    /// A typed-navigation cursor at the root.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor::new(&self.path, &self.root)
    }

    /// The zip members (names include the prefix).
    pub fn entries(&self) -> &[ZipEntry] {
        self.index.entries()
    }

    /// Raw bytes of member `name` (full name, including the prefix).
    pub fn entry_bytes(&self, name: &str) -> Result<&[u8]> {
        let e = self.index.get(name).ok_or_else(|| TorchError::MissingKey {
            path: self.path.clone(),
            key: name.to_owned(),
        })?;
        self.need(&[e.data_range()])?;
        entry_slice(self.backing.bytes(), e, &self.path)
    }

    /// Fills archive-relative `ranges` first when the file is a lazy stand-in.
    fn need(&self, ranges: &[Range<u64>]) -> Result<()> {
        need_in(&self.lazy, &self.path, self.base, ranges)
    }

    /// Every tensor in the tree with its trail (`module.embed.weight`), in tree order.
    pub fn tensors(&self) -> Vec<(String, &TensorRef)> {
        let mut out = Vec::new();
        let _ = self.root.visit_tensors::<()>(&mut |name, t| {
            out.push((name.to_owned(), t));
            Ok(())
        });
        out
    }

    fn storage_entry(&self, name: &str, t: &TensorRef) -> Result<Option<&ZipEntry>> {
        let key = format!("{}/data/{}", self.prefix, t.storage);
        Ok(match self.index.get(&key) {
            Some(e) => Some(e),
            None if t.numel() == 0 || t.storage_numel == 0 => None,
            None => return Err(self.bad_tensor(name, format!("storage entry `{key}` is missing"))),
        })
    }

    fn bad_tensor(&self, name: &str, why: String) -> TorchError {
        let tensor = if name.is_empty() { "<root>" } else { name };
        TorchError::BadTensor {
            path: self.path.clone(),
            tensor: tensor.to_owned(),
            why,
        }
    }

    /// Checks a tensor's view against its storage and the storage against its zip entry;
    /// returns the entry (None when the tensor is empty and has no storage entry).
    fn check_tensor(&self, name: &str, t: &TensorRef) -> Result<Option<&ZipEntry>> {
        let esize = t.dtype.size() as u64;
        let Some(entry) = self.storage_entry(name, t)? else {
            return Ok(None);
        };
        if entry.method != 0 {
            return Err(self.bad_tensor(
                name,
                format!("storage entry `{}` is compressed", entry.name),
            ));
        }
        let storage_bytes = t.storage_numel.checked_mul(esize);
        if storage_bytes.is_none_or(|b| b > entry.size) {
            return Err(self.bad_tensor(
                name,
                format!(
                    "storage `{}` claims {} {} elements but its entry holds {} bytes",
                    t.storage, t.storage_numel, t.dtype, entry.size
                ),
            ));
        }
        if t.storage_extent().is_none_or(|e| e > t.storage_numel) {
            return Err(self.bad_tensor(
                name,
                format!(
                    "view (offset {}, shape {:?}, stride {:?}) runs past the end of storage `{}` ({} elements)",
                    t.offset, t.shape, t.stride, t.storage, t.storage_numel
                ),
            ));
        }
        Ok(Some(entry))
    }

    /// Offset (relative to the archive) of a checked tensor's first element.
    fn data_start(entry: &ZipEntry, t: &TensorRef) -> u64 {
        entry.data_start + t.offset * t.dtype.size() as u64
    }

    /// The raw little-endian bytes of a contiguous tensor, borrowed from the map.
    /// `name` labels the tensor in errors (e.g. a [`Cursor::trail`]).
    pub fn tensor_bytes(&self, name: &str, t: &TensorRef) -> Result<&[u8]> {
        let range = self.contiguous_range(name, t)?;
        self.need(std::slice::from_ref(&range))?;
        Ok(&self.backing.bytes()[range.start as usize..range.end as usize])
    }

    /// A contiguous tensor's bytes of which the caller reads only the element ranges `runs`: a lazily
    /// filled file ([`crate::lazy`]) fetches just those, so the rest of the slice must not be read.
    pub fn tensor_bytes_in(&self, name: &str, t: &TensorRef, runs: &[Range<u64>]) -> Result<&[u8]> {
        let range = self.contiguous_range(name, t)?;
        let es = t.dtype.size() as u64;
        let clamp = |e: u64| {
            range
                .start
                .saturating_add(e.saturating_mul(es))
                .min(range.end)
        };
        let parts: Vec<Range<u64>> = runs.iter().map(|r| clamp(r.start)..clamp(r.end)).collect();
        self.need(&parts)?;
        Ok(&self.backing.bytes()[range.start as usize..range.end as usize])
    }

    /// Archive-relative byte range of a contiguous tensor's data, its view checked against its storage.
    fn contiguous_range(&self, name: &str, t: &TensorRef) -> Result<Range<u64>> {
        if !t.is_contiguous() {
            return Err(self.bad_tensor(
                name,
                format!(
                    "not contiguous (shape {:?}, stride {:?}); use tensor_data",
                    t.shape, t.stride
                ),
            ));
        }
        Ok(match self.check_tensor(name, t)? {
            Some(entry) if t.numel() > 0 => {
                let start = PtFile::data_start(entry, t);
                start..start + t.nbytes()
            }
            _ => 0..0,
        })
    }

    /// The tensor's bytes in row-major order: borrowed when contiguous, gathered otherwise.
    pub fn tensor_data(&self, name: &str, t: &TensorRef) -> Result<Cow<'_, [u8]>> {
        if t.is_contiguous() {
            return self.tensor_bytes(name, t).map(Cow::Borrowed);
        }
        let Some(entry) = self.check_tensor(name, t)? else {
            return Ok(Cow::Owned(Vec::new()));
        };
        self.need(&[entry.data_range()])?;
        let storage = entry_slice(self.backing.bytes(), entry, &self.path)?;
        let esize = t.dtype.size();
        // Expanded views (stride 0) can describe far more bytes than are stored; bound the copy.
        let limit = (storage.len() as u64).max(1 << 20).saturating_mul(64);
        if t.nbytes() > limit {
            return Err(self.bad_tensor(
                name,
                format!(
                    "strided view of {} bytes is too large to gather from a {}-byte storage",
                    t.nbytes(),
                    storage.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(t.nbytes() as usize);
        let mut idx = vec![0u64; t.shape.len()];
        loop {
            let elem: u64 = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
            let at = elem as usize * esize;
            out.extend_from_slice(&storage[at..at + esize]);
            // Odometer increment over the shape, last dim fastest.
            let mut d = idx.len();
            loop {
                if d == 0 {
                    return Ok(Cow::Owned(out));
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }

    /// Starts reading an absolute byte range of [`path`](Self::path) (as [`PtFile::tensor_file_range`]
    /// gives) into the page cache, so that touching it then faults in nothing around it; best effort.
    pub fn will_need(&self, range: Range<u64>) {
        if let Some(off) = range.start.checked_sub(self.base) {
            self.backing.advise(
                advice::WILL_NEED,
                off,
                range.end.saturating_sub(range.start),
            );
        }
    }

    /// Absolute byte range in [`path`](Self::path) of a contiguous tensor's data (for planning reads).
    pub fn tensor_file_range(&self, name: &str, t: &TensorRef) -> Result<Range<u64>> {
        if !t.is_contiguous() {
            return Err(self.bad_tensor(name, "not contiguous".into()));
        }
        Ok(match self.check_tensor(name, t)? {
            Some(entry) if t.numel() > 0 => {
                let start = self.base + PtFile::data_start(entry, t);
                start..start + t.nbytes()
            }
            _ => self.base..self.base,
        })
    }
}

/// Fills archive-relative `ranges` of the archive at `base` in `path` through `lazy`, if any.
fn need_in(
    lazy: &Option<Arc<dyn Fill>>,
    path: &Path,
    base: u64,
    ranges: &[Range<u64>],
) -> Result<()> {
    let Some(f) = lazy else { return Ok(()) };
    let abs: Vec<Range<u64>> = ranges
        .iter()
        .map(|r| base.saturating_add(r.start)..base.saturating_add(r.end))
        .collect();
    lazy::fill_with(&**f, path, &abs)
}

/// The data of a stored entry as a slice of the archive bytes.
fn entry_slice<'a>(bytes: &'a [u8], e: &ZipEntry, path: &Path) -> Result<&'a [u8]> {
    if e.method != 0 {
        return Err(TorchError::BadZip {
            path: path.to_path_buf(),
            why: format!(
                "entry `{}` is compressed (method {}); only stored entries are supported",
                e.name, e.method
            ),
        });
    }
    let (s, n) = (e.data_start as usize, e.size as usize);
    bytes.get(s..s + n).ok_or_else(|| TorchError::BadZip {
        path: path.to_path_buf(),
        why: format!("entry `{}` runs past the archive", e.name),
    })
}

/// The single top-level folder holding `data.pkl`.
fn find_prefix(index: &ZipIndex, path: &Path) -> Result<String> {
    let mut found = index
        .entries()
        .iter()
        .filter_map(|e| e.name.strip_suffix("/data.pkl"))
        .filter(|p| !p.is_empty() && !p.contains('/'));
    match (found.next(), found.next()) {
        (Some(p), None) => Ok(p.to_owned()),
        (None, _) => Err(TorchError::Format {
            path: path.to_path_buf(),
            why: "zip archive has no `<prefix>/data.pkl`: not a torch.save file".into(),
        }),
        (Some(a), Some(b)) => Err(TorchError::Format {
            path: path.to_path_buf(),
            why: format!("zip archive has several data.pkl files (`{a}`, `{b}`)"),
        }),
    }
}
