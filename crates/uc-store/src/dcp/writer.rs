//! Writes tensors as a DCP checkpoint that torch's `dcp.load` reads into any topology: each chunk a
//! torch.save archive appended to `__<r>_0.distcp`, files written in parallel, `.metadata` last, all
//! in a temporary folder renamed into place.
//!
//! [`write_dcp`] writes one chunk per tensor with keys as `dcp.save({"model": msd, "optim": osd})` of
//! `get_state_dict` names them: `model.<fqn>`, `optim.state.<fqn>.<state>`,
//! `optim.param_groups.<g>.<hp>` (with `planner_data` paths). [`DcpPlan`] is the general form other
//! key schemes (Megatron `torch_dist`) fill in.

use crate::atomic::AtomicDir;
use crate::durable::{start_writeback, WRITEBACK_CHUNK};
use crate::error::{io_err, Result, StoreError};
use crate::source::input_unit;
use crate::tensor_bytes::TensorBytes;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use uc_schema::{DType, Role, TensorMeta, Value};
use uc_torch::dcp_metadata::to_pickle;
use uc_torch::dcp_metadata::{Chunk, Item, Metadata, PathSeg, StorageInfo, StorageKey, TensorItem};
use uc_torch::{write_pt_to, PtValue};

/// Reads the full row-major bytes of one output tensor (borrowed from the input where it can).
pub type ReadFn<'a> = &'a (dyn Fn(&TensorMeta) -> Result<TensorBytes<'a>> + Sync);

/// Options of [`write_dcp`].
#[derive(Debug, Clone, Default)]
pub struct DcpWriteOptions {
    /// Number of `.distcp` files (written in parallel); default: the rayon pool's thread count.
    pub files: Option<usize>,
    /// Parameter names of each optimizer group, used for `params` when the state's groups lack it.
    pub groups: Option<Vec<Vec<String>>>,
}

/// One tensor to write: its flat key, nested path and description.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    path: Vec<PathSeg>,
    meta: TensorMeta,
}

fn seg(s: &str) -> PathSeg {
    PathSeg::Key(s.to_string())
}

/// The DCP flat key and nested path of an output tensor (`None` for a working copy whose fp32
/// master is written instead).
pub fn dcp_key(meta: &TensorMeta) -> (String, Vec<PathSeg>) {
    let n = &meta.name;
    match &meta.role {
        Role::Fp32Master | Role::Param | Role::Buffer => {
            (format!("model.{n}"), vec![seg("model"), seg(n)])
        }
        r => {
            let k = r.key();
            (
                format!("optim.state.{n}.{k}"),
                vec![seg("optim"), seg("state"), seg(n), seg(k)],
            )
        }
    }
}

/// The tensors to write, in `outs` order: a `Param` is dropped when its `Fp32Master` is present.
fn entries(outs: &[TensorMeta], output: &Path) -> Result<Vec<Entry>> {
    let masters: HashSet<&str> = outs
        .iter()
        .filter(|m| m.role == Role::Fp32Master)
        .map(|m| m.name.as_str())
        .collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in outs {
        if m.role == Role::Param && masters.contains(m.name.as_str()) {
            continue;
        }
        let (key, path) = dcp_key(m);
        if !seen.insert(key.clone()) {
            return Err(StoreError::Format {
                path: output.to_path_buf(),
                why: format!("two tensors map to the DCP key `{key}`"),
            });
        }
        out.push(Entry {
            key,
            path,
            meta: m.clone(),
        });
    }
    Ok(out)
}

/// A bytes item: flat key, nested path and value.
type BytesEntry = (String, Vec<PathSeg>, Value);

/// `optim.param_groups.<g>.<hp>` entries from the state's `param_groups` (adding `params` from `groups`).
fn param_groups(
    state: &BTreeMap<String, Value>,
    groups: Option<&Vec<Vec<String>>>,
) -> Vec<BytesEntry> {
    let mut out = Vec::new();
    let Some(Value::List(gs)) = state.get("param_groups") else {
        return out;
    };
    for (g, group) in gs.iter().enumerate() {
        let Value::Map(hps) = group else { continue };
        let mut hps = hps.clone();
        if let (false, Some(names)) = (hps.contains_key("params"), groups.and_then(|v| v.get(g))) {
            let names = names.iter().map(|n| Value::Str(n.clone())).collect();
            hps.insert("params".into(), Value::List(names));
        }
        for (hp, v) in hps {
            let path = vec![
                seg("optim"),
                seg("param_groups"),
                PathSeg::Index(g as i64),
                seg(&hp),
            ];
            out.push((format!("optim.param_groups.{g}.{hp}"), path, v));
        }
    }
    out
}

/// Counts the bytes written through it.
struct Counter<W: Write> {
    w: W,
    n: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// One `.distcp` file being appended to.
struct DataFile {
    name: String,
    path: PathBuf,
    w: BufWriter<File>,
    pos: u64,
    /// Bytes whose write-back was started.
    synced: u64,
}

impl DataFile {
    fn create(dir: &AtomicDir, name: String) -> Result<DataFile> {
        let path = dir.join(&name)?;
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(DataFile {
            name,
            path,
            w: BufWriter::with_capacity(1 << 20, f),
            pos: 0,
            synced: 0,
        })
    }

    /// Appends one torch.save archive holding `value`; returns its storage entry.
    fn append(&mut self, value: PtValue<'_>) -> Result<StorageInfo> {
        let c = write_pt_to(
            Counter {
                w: &mut self.w,
                n: 0,
            },
            "archive",
            value,
            &self.path,
        )?;
        let info = StorageInfo {
            file: self.name.clone(),
            offset: self.pos,
            length: c.n,
        };
        self.pos += c.n;
        self.writeback();
        Ok(info)
    }

    /// Starts the write-back of what was appended since the last call, every few MiB.
    fn writeback(&mut self) {
        if self.pos - self.synced >= WRITEBACK_CHUNK as u64 {
            start_writeback(self.w.get_ref(), self.synced, self.pos - self.synced);
            self.synced = self.pos;
        }
    }

    /// Appends bytes as they are (an archive serialized before); returns its storage entry.
    fn append_raw(&mut self, bytes: &[u8]) -> Result<StorageInfo> {
        for piece in bytes.chunks(uc_torch::WRITE_PIECE) {
            self.w.write_all(piece).map_err(io_err(&self.path))?;
        }
        let info = StorageInfo {
            file: self.name.clone(),
            offset: self.pos,
            length: bytes.len() as u64,
        };
        self.pos += bytes.len() as u64;
        self.writeback();
        Ok(info)
    }

    /// Flushes the buffer (the folder is synced once, at commit).
    fn finish(self) -> Result<()> {
        self.w.into_inner().map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        Ok(())
    }
}

/// Greedy size balance: each tensor goes to the file holding the fewest bytes so far (largest first);
/// each file keeps the tensors in their original order.
fn assign(entries: &[ChunkOut], files: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(entries[i].meta.nbytes()));
    let mut load = vec![0u64; files];
    let mut out = vec![Vec::new(); files];
    for i in order {
        let f = (0..files).min_by_key(|&f| (load[f], f)).unwrap_or(0);
        load[f] = load[f].saturating_add(entries[i].meta.nbytes());
        out[f].push(i);
    }
    for v in &mut out {
        v.sort_unstable();
    }
    out
}

/// One chunk to write: the output tensor whose bytes it holds and where it sits in its key's tensor.
#[derive(Debug, Clone)]
pub struct ChunkOut {
    pub key: String,
    pub meta: TensorMeta,
    /// Offsets of the chunk in the key's global tensor; its sizes are `shape`.
    pub offsets: Vec<u64>,
    /// The chunk's shape (the tensor's shape, or it with leading 1s for a stacked axis).
    pub shape: Vec<u64>,
}

/// Everything a DCP checkpoint holds, planned before any byte is written.
#[derive(Debug, Clone, Default)]
pub struct DcpPlan {
    /// Tensor items in order: key, dtype, global size. Every element is covered by exactly one chunk.
    pub tensors: Vec<(String, DType, Vec<u64>)>,
    pub chunks: Vec<ChunkOut>,
    /// Bytes items: key and the torch.save archive stored for it.
    pub blobs: Vec<(String, Vec<u8>)>,
    /// Nested paths of the flat keys (`None`: keys are already flat, as Megatron writes).
    pub planner: Option<HashMap<String, Vec<PathSeg>>>,
    /// Other files of the checkpoint folder (name, bytes), e.g. Megatron's `metadata.json`.
    pub files: Vec<(String, Vec<u8>)>,
}

/// A value serialized as the torch.save archive DCP stores for a bytes item.
pub fn archive(value: PtValue<'_>, path: &Path) -> Result<Vec<u8>> {
    Ok(write_pt_to(Vec::new(), "archive", value, path)?)
}

/// Writes every tensor of `outs` (bytes from `read`) and the state's param groups as a DCP
/// checkpoint at `output`, which must not exist; on error nothing is left there.
/// `progress(bytes)` is called after each tensor with the bytes of tensor data written.
pub fn write_dcp(
    output: &Path,
    outs: &[TensorMeta],
    read: ReadFn<'_>,
    state: &BTreeMap<String, Value>,
    opts: &DcpWriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PathBuf> {
    let entries = entries(outs, output)?;
    let mut plan = DcpPlan::default();
    let mut planner: HashMap<String, Vec<PathSeg>> = HashMap::new();
    for e in entries {
        let zeros = vec![0; e.meta.shape.len()];
        plan.tensors
            .push((e.key.clone(), e.meta.dtype, e.meta.shape.clone()));
        planner.insert(e.key.clone(), e.path);
        plan.chunks.push(ChunkOut {
            key: e.key,
            shape: e.meta.shape.clone(),
            meta: e.meta,
            offsets: zeros,
        });
    }
    for (key, path, v) in param_groups(state, opts.groups.as_ref()) {
        let hp = key.rsplit('.').next().unwrap_or("");
        plan.blobs
            .push((key.clone(), archive(PtValue::from_state(&v, hp), output)?));
        planner.insert(key, path);
    }
    plan.planner = Some(planner);
    write_plan(output, &plan, read, opts.files, b"unicheck dcp\n", progress)
}

/// Writes `plan` at `output` (which must not exist; on error nothing is left there) over `files`
/// `.distcp` files (default: one per thread), bytes items in the first; `COMPLETE` holds `marker`.
pub fn write_plan(
    output: &Path,
    plan: &DcpPlan,
    read: ReadFn<'_>,
    files: Option<usize>,
    marker: &[u8],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PathBuf> {
    let dir = AtomicDir::create(output)?;
    let n = files
        .unwrap_or_else(rayon::current_num_threads)
        .clamp(1, plan.chunks.len().max(1));
    let order = assign(&plan.chunks, n);
    let mut data_files = Vec::with_capacity(n);
    for r in 0..n {
        data_files.push(DataFile::create(&dir, format!("__{r}_0.distcp"))?);
    }
    let written: Vec<Vec<(StorageKey, StorageInfo)>> = data_files
        .into_par_iter()
        .zip(order)
        .enumerate()
        .map(|(r, (mut f, idx))| {
            let mut infos = Vec::with_capacity(idx.len());
            if r == 0 {
                for (key, bytes) in &plan.blobs {
                    infos.push(((key.clone(), None), f.append_raw(bytes)?));
                }
            }
            for i in idx {
                let c = &plan.chunks[i];
                let n = input_unit(|| {
                    let data = read(&c.meta)?;
                    if data.len() as u64 != c.meta.nbytes() {
                        return Err(StoreError::BadTensor {
                            path: f.path.clone(),
                            tensor: c.meta.name.clone(),
                            why: format!(
                                "{} bytes read for a {} {:?} tensor",
                                data.len(),
                                c.meta.dtype,
                                c.meta.shape
                            ),
                        });
                    }
                    let t = data.pt_tensor(c.meta.dtype, c.shape.clone());
                    let info = f.append(PtValue::Tensor(t))?;
                    infos.push(((c.key.clone(), Some(c.offsets.clone())), info));
                    Ok(data.len() as u64)
                })?;
                progress(n);
            }
            f.finish()?;
            Ok(infos)
        })
        .collect::<Result<_>>()?;
    let mut md = Metadata {
        version: Some("1.0.0".into()),
        ..Default::default()
    };
    let mut items: HashMap<&str, TensorItem> = plan
        .tensors
        .iter()
        .map(|(k, dtype, size)| {
            let item = TensorItem {
                dtype: *dtype,
                size: size.clone(),
                chunks: Vec::new(),
                strides: None,
            };
            (k.as_str(), item)
        })
        .collect();
    for c in &plan.chunks {
        if let Some(item) = items.get_mut(c.key.as_str()) {
            item.chunks.push(Chunk {
                offsets: c.offsets.clone(),
                sizes: c.shape.clone(),
            });
        }
    }
    for (key, _, _) in &plan.tensors {
        if let Some(item) = items.remove(key.as_str()) {
            md.index.insert(key.clone(), md.items.len());
            md.items.push((key.clone(), Item::Tensor(item)));
        }
    }
    for (key, _) in &plan.blobs {
        md.index.insert(key.clone(), md.items.len());
        md.items.push((key.clone(), Item::Bytes));
    }
    md.planner_data = plan.planner.clone();
    md.storage.extend(written.into_iter().flatten());
    for (name, bytes) in &plan.files {
        write_new(&dir.join(name)?, bytes)?;
    }
    write_new(&dir.join(".metadata")?, &to_pickle(&md))?;
    dir.commit(marker)
}

/// Creates `path` (which must not exist) holding `bytes` (synced with the folder, at commit).
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))
}
