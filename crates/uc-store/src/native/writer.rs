//! Streaming writer of the native format: plans files and offsets from the metas, then takes tensor
//! bytes in any order through positioned writes (safe to call from many threads), hashing each tensor
//! as it is written, so the checksums need no second pass over the output.

use super::checksum::{combine, cuts, sha256_bytes};
use super::{tensor_keys, NativeOptions, MANIFEST_FILE, TENSORS_DIR};
use crate::atomic::AtomicDir;
use crate::durable::{start_writeback, WRITEBACK_CHUNK};
use crate::error::{io_err, Result, StoreError};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use uc_schema::{DType, Entry, FileSum, Manifest, Role, StorageRef, TensorMeta, Topology, Value};
use uc_torch::WRITE_PIECE;

/// Bytes a [`TensorSink`] gathers before one positioned write.
const SINK_BUFFER: usize = WRITE_PIECE;

/// Where one planned tensor goes.
#[derive(Debug)]
struct Slot {
    file: usize,
    key: String,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
    written: AtomicU64,
    /// BLAKE3 of the tensor's bytes, set when they were written in one sequential stream.
    digest: Mutex<Option<blake3::Hash>>,
}

/// One output safetensors file.
#[derive(Debug)]
struct OutFile {
    rel: String,
    path: PathBuf,
    file: File,
    len: u64,
    /// Length and BLAKE3 of the header (the file's first checksum part).
    header: (u64, blake3::Hash),
}

/// Writes a native checkpoint into a temporary directory; [`NativeWriter::finish`] makes it appear.
///
/// Dropping the writer without finishing removes everything it wrote.
#[derive(Debug)]
pub struct NativeWriter {
    out: AtomicDir,
    metas: Vec<TensorMeta>,
    slots: Vec<Slot>,
    files: Vec<OutFile>,
    index: HashMap<(String, Role), usize>,
}

impl NativeWriter {
    /// Validates `metas`, lays out every file and offset, creates the files with their headers.
    ///
    /// Fails before creating anything on an unsafe name, an invalid meta, a duplicate tensor, or an
    /// existing output path ([`StoreError::OutputExists`]).
    pub fn create(
        dir: impl AsRef<Path>,
        metas: &[TensorMeta],
        opts: &NativeOptions,
    ) -> Result<NativeWriter> {
        let dir = dir.as_ref();
        let plan = Plan::new(dir, metas, opts)?;
        NativeWriter::open_in(AtomicDir::create(dir)?, metas, plan)
    }

    /// Like [`NativeWriter::create`], but into an existing (possibly half-written) folder `out`, such
    /// as a staging folder shared by several workers: files are created when missing and sized, bytes
    /// already there are kept. The plan is the same for the same metas and options.
    pub fn resume(
        out: AtomicDir,
        metas: &[TensorMeta],
        opts: &NativeOptions,
    ) -> Result<NativeWriter> {
        let plan = Plan::new(out.target(), metas, opts)?;
        NativeWriter::open_in(out, metas, plan)
    }

    fn open_in(out: AtomicDir, metas: &[TensorMeta], plan: Plan) -> Result<NativeWriter> {
        let Plan {
            slots,
            headers,
            index,
        } = plan;
        let tdir = out.subdir(TENSORS_DIR)?;
        let mut files = Vec::with_capacity(headers.len());
        for (fi, (header, len)) in headers.into_iter().enumerate() {
            let name = format!("{fi:05}.safetensors");
            let path = tdir.join(&name);
            let file = open_planned(&path, len, &header)?;
            files.push(OutFile {
                rel: format!("{TENSORS_DIR}/{name}"),
                path,
                file,
                len,
                header: (header.len() as u64, blake3::hash(&header)),
            });
        }
        Ok(NativeWriter {
            out,
            metas: metas.to_vec(),
            slots,
            files,
            index,
        })
    }

    /// Byte size of planned tensor `unit` (index into the metas given at creation).
    pub fn unit_len(&self, unit: usize) -> u64 {
        self.slots.get(unit).map_or(0, |s| s.end - s.start)
    }

    /// True when the bytes of tensor `unit` on disk hash to `digest` (a record of an earlier run).
    pub fn verify_unit(&self, unit: usize, digest: &blake3::Hash) -> Result<bool> {
        let s = self.unit_slot(unit)?;
        let f = &self.files[s.file];
        Ok(hash_range(&f.file, s.start, s.end).map_err(io_err(&f.path))? == *digest)
    }

    /// Marks tensor `unit` as written with `digest` (written by another worker or an earlier run and
    /// verified), so [`NativeWriter::finish`] counts it.
    pub fn adopt_unit(&self, unit: usize, digest: blake3::Hash) -> Result<()> {
        let s = self.unit_slot(unit)?;
        s.written.store(s.end - s.start, Ordering::Relaxed);
        *s.digest.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
        Ok(())
    }

    fn unit_slot(&self, unit: usize) -> Result<&Slot> {
        self.slots.get(unit).ok_or_else(|| StoreError::Format {
            path: self.target().to_path_buf(),
            why: format!("no tensor number {unit} in the plan"),
        })
    }

    /// The temporary folder being written (for extra files that must appear with the checkpoint).
    pub fn dir(&self) -> &Path {
        self.out.path()
    }

    /// Where the checkpoint appears after [`NativeWriter::finish`].
    pub fn target(&self) -> &Path {
        self.out.target()
    }

    /// Where a planned tensor's bytes go (file relative to the checkpoint root, key, absolute byte range).
    pub fn storage(&self, name: &str, role: &Role) -> Option<StorageRef> {
        let s = &self.slots[*self.index.get(&(name.to_string(), role.clone()))?];
        Some(StorageRef {
            file: self.files[s.file].rel.clone(),
            key: s.key.clone(),
            start: s.start,
            end: s.end,
        })
    }

    fn slot(&self, name: &str, role: &Role) -> Result<(&Slot, &OutFile)> {
        let i = self
            .index
            .get(&(name.to_string(), role.clone()))
            .ok_or_else(|| {
                bad(
                    self.target(),
                    name,
                    format!("role `{}` is not in the checkpoint plan", role.key()),
                )
            })?;
        let s = &self.slots[*i];
        Ok((s, &self.files[s.file]))
    }

    /// Writes a whole tensor; `bytes` must be its exact (contiguous, little-endian) size.
    pub fn write_tensor(&self, name: &str, role: &Role, bytes: &[u8]) -> Result<()> {
        let (s, _) = self.slot(name, role)?;
        if bytes.len() as u64 != s.end - s.start {
            return Err(bad(
                self.target(),
                name,
                format!("{} bytes given, {} expected", bytes.len(), s.end - s.start),
            ));
        }
        self.write_tensor_with(name, role, |sink| sink.write_all(bytes))
            .map(|_| ())
    }

    /// Writes `bytes` at byte `offset` of a tensor. Parts of one tensor must not overlap; together they
    /// must cover it before [`NativeWriter::finish`], which hashes such a tensor by reading it back
    /// (whole tensors are hashed as they are written).
    pub fn write_part(&self, name: &str, role: &Role, offset: u64, bytes: &[u8]) -> Result<()> {
        let (s, f) = self.slot(name, role)?;
        let len = s.end - s.start;
        let end = offset.checked_add(bytes.len() as u64).filter(|&e| e <= len);
        if end.is_none() {
            return Err(bad(
                self.target(),
                name,
                format!(
                    "part at {offset} of {} bytes overruns {len} bytes",
                    bytes.len()
                ),
            ));
        }
        write_all_at(&f.file, bytes, s.start + offset).map_err(io_err(&f.path))?;
        s.written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Streams a whole tensor through `fill`, which must write exactly its size into the sink; returns
    /// the BLAKE3 of its bytes.
    pub fn write_tensor_with(
        &self,
        name: &str,
        role: &Role,
        fill: impl FnOnce(&mut TensorSink<'_>) -> Result<()>,
    ) -> Result<blake3::Hash> {
        let (s, f) = self.slot(name, role)?;
        let mut sink = TensorSink {
            file: &f.file,
            path: &f.path,
            tensor: name,
            start: s.start,
            len: s.end - s.start,
            pos: 0,
            synced: 0,
            buf: Vec::new(),
            hasher: blake3::Hasher::new(),
        };
        fill(&mut sink)?;
        sink.flush_buf()?;
        if sink.pos != sink.len {
            return Err(bad(
                self.target(),
                name,
                format!("{} of {} bytes written", sink.pos, sink.len),
            ));
        }
        if sink.len >= SINK_BUFFER as u64 {
            start_writeback(sink.file, sink.start + sink.synced, sink.len - sink.synced);
        }
        s.written.fetch_add(sink.len, Ordering::Relaxed);
        let digest = sink.hasher.finalize();
        *s.digest.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
        Ok(digest)
    }

    /// Checks every tensor was written, checksums the files from the digests taken while writing, writes
    /// `uc.json`, syncs the folder once, writes `COMPLETE` and renames the checkpoint into place.
    /// Returns the manifest written.
    pub fn finish(self, source: Topology, state: BTreeMap<String, Value>) -> Result<Manifest> {
        let target = self.out.target().to_path_buf();
        for (m, s) in self.metas.iter().zip(&self.slots) {
            let w = s.written.load(Ordering::Relaxed);
            let len = s.end - s.start;
            if w < len {
                return Err(StoreError::Unwritten {
                    path: target,
                    tensor: format!("{}/{}", m.name, m.role.key()),
                });
            }
            if w > len {
                return Err(bad(
                    &target,
                    &m.name,
                    format!("{w} bytes written into {len}: overlapping parts"),
                ));
            }
        }
        let sums: Vec<Result<FileSum>> = (0..self.files.len())
            .into_par_iter()
            .map(|fi| self.file_sum(fi))
            .collect();
        let files = sums.into_iter().collect::<Result<Vec<_>>>()?;
        let tensors = self
            .metas
            .iter()
            .zip(&self.slots)
            .map(|(m, s)| Entry {
                meta: m.clone(),
                storage: Some(StorageRef {
                    file: self.files[s.file].rel.clone(),
                    key: s.key.clone(),
                    start: s.start,
                    end: s.end,
                }),
            })
            .collect();
        let manifest = Manifest {
            version: uc_schema::MANIFEST_VERSION,
            source,
            tensors,
            files,
            state,
        };
        manifest.validate().map_err(|source| StoreError::Schema {
            path: target.clone(),
            source,
        })?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Format {
            path: target.clone(),
            why: format!("cannot encode uc.json: {e}"),
        })?;
        let mpath = self.out.join(MANIFEST_FILE)?;
        let mut mf = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&mpath)
            .map_err(io_err(&mpath))?;
        mf.write_all(&json).map_err(io_err(&mpath))?;
        drop(mf);
        let marker = format!("{}\n", sha256_bytes(&json));
        drop(self.files);
        self.out.commit(marker.as_bytes())?;
        Ok(manifest)
    }
}

impl NativeWriter {
    /// The checksum of file `fi` from its header's and tensors' digests; a tensor written in parts
    /// (or any other part) is hashed by reading it back.
    fn file_sum(&self, fi: usize) -> Result<FileSum> {
        let f = &self.files[fi];
        let mine: HashMap<(u64, u64), &Slot> = self
            .slots
            .iter()
            .filter(|s| s.file == fi && s.end > s.start)
            .map(|s| ((s.start, s.end), s))
            .collect();
        let c = cuts(f.len, mine.keys().copied());
        let mut parts = Vec::with_capacity(c.len());
        for w in c.windows(2) {
            let (a, b) = (w[0], w[1]);
            let known = match mine.get(&(a, b)) {
                Some(s) => *s.digest.lock().unwrap_or_else(|p| p.into_inner()),
                None if (a, b) == (0, f.header.0) => Some(f.header.1),
                None => None,
            };
            let d = match known {
                Some(d) => d,
                None => hash_range(&f.file, a, b).map_err(io_err(&f.path))?,
            };
            parts.push((b - a, d));
        }
        Ok(FileSum {
            file: f.rel.clone(),
            bytes: f.len,
            checksum: combine(parts),
        })
    }
}

/// Every file and offset of a native checkpoint, computed from the metas alone (so every worker of a
/// job computes the same one).
struct Plan {
    slots: Vec<Slot>,
    /// Header bytes and total length of each file.
    headers: Vec<(Vec<u8>, u64)>,
    index: HashMap<(String, Role), usize>,
}

impl Plan {
    /// Validates `metas` and lays out every file; fails on an unsafe name, an invalid meta or a
    /// duplicate tensor.
    fn new(dir: &Path, metas: &[TensorMeta], opts: &NativeOptions) -> Result<Plan> {
        let schema = |source| StoreError::Schema {
            path: dir.to_path_buf(),
            source,
        };
        let mut index = HashMap::new();
        let mut sizes = Vec::with_capacity(metas.len());
        for (i, m) in metas.iter().enumerate() {
            m.validate().map_err(schema)?;
            uc_schema::validate_name(m.role.key()).map_err(schema)?;
            if index.insert((m.name.clone(), m.role.clone()), i).is_some() {
                return Err(bad(
                    dir,
                    &m.name,
                    format!("listed twice with role `{}`", m.role.key()),
                ));
            }
            let n = m
                .shape
                .iter()
                .try_fold(m.dtype.size() as u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(dir, &m.name, "byte size overflows u64".into()))?;
            sizes.push(n);
        }
        let keys = tensor_keys(metas);
        let mut seen = HashSet::new();
        for (k, m) in keys.iter().zip(metas) {
            if !seen.insert(k.as_str()) {
                return Err(bad(
                    dir,
                    &m.name,
                    format!("safetensors key `{k}` used twice"),
                ));
            }
        }
        let groups = group_files(&sizes, opts);
        let mut slots: Vec<Option<Slot>> = (0..metas.len()).map(|_| None).collect();
        let mut headers = Vec::with_capacity(groups.len());
        for (fi, group) in groups.iter().enumerate() {
            let FileLayout {
                header,
                len,
                placed,
            } = layout_file(dir, group, metas, &keys, &sizes)?;
            for (i, start, end) in placed {
                slots[i] = Some(Slot {
                    file: fi,
                    key: keys[i].clone(),
                    start,
                    end,
                    written: AtomicU64::new(0),
                    digest: Mutex::new(None),
                });
            }
            headers.push((header, len));
        }
        let slots: Vec<Slot> = slots.into_iter().flatten().collect();
        if slots.len() != metas.len() {
            return Err(StoreError::Format {
                path: dir.to_path_buf(),
                why: "file plan lost a tensor".into(),
            });
        }
        Ok(Plan {
            slots,
            headers,
            index,
        })
    }
}

/// BLAKE3 of bytes `a..b` of `f`, read back in chunks.
pub(crate) fn hash_range(f: &File, a: u64, b: u64) -> std::io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; SINK_BUFFER.min((b - a) as usize)];
    let mut at = a;
    while at < b {
        let n = buf.len().min((b - at) as usize);
        read_exact_at(f, &mut buf[..n], at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finalize())
}

/// A sequential writer into one planned tensor: hashes its bytes, buffers small writes, issues
/// positioned writes and starts their write-back as it goes.
pub struct TensorSink<'w> {
    file: &'w File,
    path: &'w Path,
    tensor: &'w str,
    start: u64,
    len: u64,
    pos: u64,
    /// Bytes (from the tensor's start) whose write-back was started.
    synced: u64,
    buf: Vec<u8>,
    hasher: blake3::Hasher,
}

impl TensorSink<'_> {
    /// Bytes still to write.
    pub fn remaining(&self) -> u64 {
        self.len - self.pos - self.buf.len() as u64
    }

    /// Appends bytes; fails when they would overrun the tensor.
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.remaining() {
            return Err(bad(
                self.path,
                self.tensor,
                format!("write of {} bytes overruns {} bytes", data.len(), self.len),
            ));
        }
        if self.buf.is_empty() && data.len() >= SINK_BUFFER {
            // Large runs go straight from the caller's bytes (often an input mapping), a cache-sized
            // piece at a time: hashed, then written while still in cache.
            for piece in data.chunks(SINK_BUFFER) {
                self.put(piece)?;
            }
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SINK_BUFFER {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.put(&buf)?;
            self.buf = buf;
            self.buf.clear();
        }
        Ok(())
    }

    /// Hashes and writes `data` at the current position; starts write-back every few MiB.
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        write_all_at(self.file, data, self.start + self.pos).map_err(io_err(self.path))?;
        self.pos += data.len() as u64;
        if self.pos - self.synced >= WRITEBACK_CHUNK as u64 {
            start_writeback(self.file, self.start + self.synced, self.pos - self.synced);
            self.synced = self.pos;
        }
        Ok(())
    }
}

impl Write for TensorSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        TensorSink::write_all(self, data)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buf()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Cuts tensors (in order) into files bounded by bytes and count; an oversized tensor gets its own file.
fn group_files(sizes: &[u64], opts: &NativeOptions) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut bytes = 0u64;
    for (i, &n) in sizes.iter().enumerate() {
        let full = cur.len() >= opts.max_file_tensors.max(1)
            || bytes.saturating_add(n) > opts.max_file_bytes;
        if !cur.is_empty() && full {
            groups.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        cur.push(i);
        bytes = bytes.saturating_add(n);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

/// The planned contents of one safetensors file.
pub(crate) struct FileLayout {
    /// Length prefix + space-padded JSON header.
    pub header: Vec<u8>,
    /// Total file length.
    pub len: u64,
    /// (tensor index, absolute start, absolute end).
    pub placed: Vec<(usize, u64, u64)>,
}

/// One tensor of a safetensors file to lay out.
pub(crate) struct StEntry<'a> {
    /// The caller's index of the tensor (returned in [`FileLayout::placed`]).
    pub index: usize,
    pub key: &'a str,
    pub dtype: DType,
    pub shape: &'a [u64],
    /// Data bytes (`numel × dtype size`).
    pub bytes: u64,
}

/// Lays out one file. Tensors are stored by descending element size, so with the header padded to 8
/// bytes every tensor's data is aligned to its element size (as safetensors' own writer does).
fn layout_file(
    dir: &Path,
    group: &[usize],
    metas: &[TensorMeta],
    keys: &[String],
    sizes: &[u64],
) -> Result<FileLayout> {
    let mut order = group.to_vec();
    order.sort_by_key(|&i| std::cmp::Reverse(metas[i].dtype.size()));
    let entries: Vec<StEntry> = order
        .iter()
        .map(|&i| StEntry {
            index: i,
            key: &keys[i],
            dtype: metas[i].dtype,
            shape: &metas[i].shape,
            bytes: sizes[i],
        })
        .collect();
    layout_safetensors(dir, &entries)
}

/// Lays out one safetensors file holding `entries` in the given order: 8-byte length, JSON header
/// (`__metadata__` `{"format":"pt"}` first) space-padded to a multiple of 8, then the data.
pub(crate) fn layout_safetensors(dir: &Path, entries: &[StEntry]) -> Result<FileLayout> {
    let mut json = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut off = 0u64;
    let mut rel = Vec::with_capacity(entries.len());
    for e in entries {
        let end = off
            .checked_add(e.bytes)
            .ok_or_else(|| bad(dir, e.key, "file size overflows u64".into()))?;
        let shape: Vec<String> = e.shape.iter().map(|d| d.to_string()).collect();
        json.push_str(&format!(
            ",{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            serde_json::Value::String(e.key.to_string()),
            e.dtype.name(),
            shape.join(","),
            off,
            end
        ));
        rel.push((e.index, off, end));
        off = end;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut header = Vec::with_capacity(8 + json.len());
    header.extend_from_slice(&(json.len() as u64).to_le_bytes());
    header.extend_from_slice(json.as_bytes());
    let base = header.len() as u64;
    let len = base.checked_add(off).ok_or_else(|| StoreError::Format {
        path: dir.to_path_buf(),
        why: "file size overflows u64".into(),
    })?;
    let placed = rel
        .into_iter()
        .map(|(i, s, e)| (i, base + s, base + e))
        .collect();
    Ok(FileLayout {
        header,
        len,
        placed,
    })
}

/// A [`StoreError::BadTensor`] at `path`.
fn bad(path: &Path, tensor: &str, why: String) -> StoreError {
    StoreError::BadTensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        why,
    }
}

/// Opens (creating when missing) a planned output file of `len` bytes that starts with `header`;
/// bytes already written there by another worker or an earlier run are kept.
pub(crate) fn open_planned(path: &Path, len: u64, header: &[u8]) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))?;
    if f.metadata().map_err(io_err(path))?.len() != len {
        f.set_len(len).map_err(io_err(path))?;
    }
    write_all_at(&f, header, 0).map_err(io_err(path))?;
    Ok(f)
}

/// Positioned write of the whole buffer, [`WRITE_PIECE`] bytes a call (does not move any file
/// cursor; safe from many threads).
#[cfg(unix)]
pub(crate) fn write_all_at(f: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    let mut at = offset;
    for piece in buf.chunks(WRITE_PIECE) {
        std::os::unix::fs::FileExt::write_all_at(f, piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Positioned read filling the whole buffer.
#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

/// Positioned read filling the whole buffer.
#[cfg(windows)]
fn read_exact_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = f.seek_read(buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Positioned write of the whole buffer.
#[cfg(windows)]
pub(crate) fn write_all_at(f: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = f.seek_write(buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of several pieces lands whole at its offset (the writes are cut at `WRITE_PIECE`).
    #[test]
    fn write_all_at_writes_every_piece_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let data: Vec<u8> = (0..WRITE_PIECE * 2 + 777)
            .map(|i| (i % 249) as u8)
            .collect();
        write_all_at(&f, b"head", 0).unwrap();
        write_all_at(&f, &data, 100).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 100 + data.len());
        assert_eq!(&got[..4], b"head");
        assert!(got[4..100].iter().all(|&b| b == 0));
        assert!(got[100..] == data[..]);
    }
}
