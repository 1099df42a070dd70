//! Writes tensors as a DCP checkpoint that torch's `dcp.load` reads into any topology: one chunk per
//! tensor, each a torch.save archive appended to `__<r>_0.distcp`, files written in parallel,
//! `.metadata` last, all in a temporary folder renamed into place.
//!
//! Keys follow `dcp.save({"model": msd, "optim": osd})` of `get_state_dict`: `model.<fqn>`,
//! `optim.state.<fqn>.<state>`, `optim.param_groups.<g>.<hp>` (with `planner_data` paths).

use super::metadata::{Chunk, Item, Metadata, PathSeg, StorageInfo, StorageKey, TensorItem};
use super::metadata_pickle::to_pickle;
use crate::atomic::AtomicDir;
use crate::error::{io_err, Result, StoreError};
use crate::pt_write::{write_pt_to, PtTensor, PtValue};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use uc_schema::{Role, TensorMeta, Value};

/// Reads the full row-major bytes of one output tensor.
pub type ReadFn<'a> = &'a (dyn Fn(&TensorMeta) -> Result<Vec<u8>> + Sync);

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
        Ok(info)
    }

    fn finish(self) -> Result<()> {
        let f = self.w.into_inner().map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io_err(&self.path))
    }
}

/// Greedy size balance: each tensor goes to the file holding the fewest bytes so far (largest first);
/// each file keeps the tensors in their original order.
fn assign(entries: &[Entry], files: usize) -> Vec<Vec<usize>> {
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
    let dir = AtomicDir::create(output)?;
    let entries = entries(outs, output)?;
    let bytes_items = param_groups(state, opts.groups.as_ref());
    let n = opts
        .files
        .unwrap_or_else(rayon::current_num_threads)
        .clamp(1, entries.len().max(1));
    let plan = assign(&entries, n);
    let mut files = Vec::with_capacity(n);
    for r in 0..n {
        files.push(DataFile::create(&dir, format!("__{r}_0.distcp"))?);
    }
    let written: Vec<Vec<(StorageKey, StorageInfo)>> = files
        .into_par_iter()
        .zip(plan)
        .enumerate()
        .map(|(r, (mut f, idx))| {
            let mut infos = Vec::with_capacity(idx.len());
            if r == 0 {
                for (key, _, v) in &bytes_items {
                    let hp = key.rsplit('.').next().unwrap_or("");
                    infos.push(((key.clone(), None), f.append(PtValue::from_state(v, hp))?));
                }
            }
            for i in idx {
                let e = &entries[i];
                let data = read(&e.meta)?;
                if data.len() as u64 != e.meta.nbytes() {
                    return Err(StoreError::BadTensor {
                        path: f.path.clone(),
                        tensor: e.meta.name.clone(),
                        why: format!(
                            "{} bytes read for a {} {:?} tensor",
                            data.len(),
                            e.meta.dtype,
                            e.meta.shape
                        ),
                    });
                }
                let t = PtTensor::from_bytes(e.meta.dtype, e.meta.shape.clone(), &data);
                let info = f.append(PtValue::Tensor(t))?;
                infos.push(((e.key.clone(), Some(vec![0; e.meta.shape.len()])), info));
                progress(data.len() as u64);
            }
            f.finish()?;
            Ok(infos)
        })
        .collect::<Result<_>>()?;
    let mut md = Metadata {
        version: Some("1.0.0".into()),
        ..Default::default()
    };
    let mut planner: HashMap<String, Vec<PathSeg>> = HashMap::new();
    for e in &entries {
        let item = TensorItem {
            dtype: e.meta.dtype,
            size: e.meta.shape.clone(),
            chunks: vec![Chunk {
                offsets: vec![0; e.meta.shape.len()],
                sizes: e.meta.shape.clone(),
            }],
            strides: None,
        };
        md.index.insert(e.key.clone(), md.items.len());
        md.items.push((e.key.clone(), Item::Tensor(item)));
        planner.insert(e.key.clone(), e.path.clone());
    }
    for (key, path, _) in &bytes_items {
        md.index.insert(key.clone(), md.items.len());
        md.items.push((key.clone(), Item::Bytes));
        planner.insert(key.clone(), path.clone());
    }
    md.planner_data = Some(planner);
    md.storage.extend(written.into_iter().flatten());
    let mp = dir.join(".metadata")?;
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(&mp)
        .map_err(io_err(&mp))?;
    f.write_all(&to_pickle(&md)).map_err(io_err(&mp))?;
    f.sync_all().map_err(io_err(&mp))?;
    drop(f);
    dir.commit(b"unicheck dcp\n")
}
