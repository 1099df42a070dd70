//! An open DCP checkpoint (torch or Megatron `torch_dist`): validated chunks and files, the output
//! tensors a universal checkpoint of it holds, and each one merged from its chunks on demand.

use super::chunks::{self, check_tiling};
use super::megatron::{self, MKey};
use super::names::{self, KeyKind, KeyStyle};
use crate::atomic::safe_rel_path;
use crate::error::{io_err, Result, StoreError};
use crate::tensor_bytes::TensorBytes;
use memmap2::Mmap;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uc_merge::{execute_target, plan, Region, ReplicaPolicy};
use uc_schema::{DType, Layout, Role, TensorMeta, Topology, Value};
use uc_torch::dcp_metadata::{
    self as metadata, Item, Metadata, StorageInfo, StorageKey, TensorItem,
};
use uc_torch::pickle::Allowlist;
use uc_torch::plain::to_value;
use uc_torch::PtFile;

/// How to open a DCP checkpoint.
#[derive(Debug, Clone, Default)]
pub struct DcpOptions {
    /// Megatron: keep only the first N rows of the padded vocabulary tensors (default: keep all rows).
    pub vocab_size: Option<u64>,
    /// Megatron: keep TransformerEngine's fused LayerNorm names (`linear_qkv.layer_norm_weight`)
    /// instead of the local spec's (`input_layernorm.weight`).
    pub te_names: bool,
}

/// Which writer produced the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `torch.distributed.checkpoint.save` (FSDP2, DTensor, plain modules).
    Torch,
    /// Megatron-Core `dist_checkpointing` with the `torch_dist` backend.
    Megatron,
}

/// One data file, mapped read-only (`None` when empty).
#[derive(Debug)]
struct DataFile {
    path: PathBuf,
    map: Option<Arc<Mmap>>,
}

/// Where an output tensor's bytes come from.
#[derive(Debug, Clone)]
enum Src {
    /// A box of a tensor item (the whole item, one layer of a stacked item, or unpadded rows).
    Item { key: String, region: Region },
    /// A value not stored as a tensor item (Megatron's shared Adam step), as little-endian bytes.
    Const(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Output {
    meta: TensorMeta,
    src: Src,
}

/// An open DCP checkpoint.
#[derive(Debug)]
pub struct DcpCheckpoint {
    dir: PathBuf,
    flavor: Flavor,
    metadata: Metadata,
    files: BTreeMap<String, DataFile>,
    outputs: Vec<Output>,
    by_name: HashMap<(String, Role), usize>,
    ranks: u32,
    /// Training state: `param_groups` (hyper-parameters, `params` = FQNs), `step`, scheduler, and
    /// every other non-tensor item by its flat key.
    pub state: BTreeMap<String, Value>,
}

/// The `.metadata` file of `dir`.
fn md_path(dir: &Path) -> PathBuf {
    metadata::metadata_path(dir)
}

impl DcpCheckpoint {
    /// True when `dir` looks like a DCP checkpoint (it has a `.metadata` file).
    pub fn is_dcp(dir: &Path) -> bool {
        md_path(dir).is_file()
    }

    /// Opens and validates the checkpoint in `dir`: `.metadata` (allowlisted globals only), chunks
    /// that tile every tensor, storage entries inside existing files. Tensor bytes are read on demand.
    pub fn open(dir: &Path, opts: &DcpOptions) -> Result<DcpCheckpoint> {
        let flavor = if megatron::detect(dir)? {
            Flavor::Megatron
        } else {
            Flavor::Torch
        };
        let allow = match flavor {
            Flavor::Torch => Allowlist::dcp_metadata(),
            Flavor::Megatron => Allowlist::megatron_dcp_metadata(),
        };
        let md = md_path(dir);
        let metadata = metadata::read(&md, &allow)?;
        let mut ck = DcpCheckpoint {
            dir: dir.to_path_buf(),
            flavor,
            files: BTreeMap::new(),
            outputs: Vec::new(),
            by_name: HashMap::new(),
            ranks: 1,
            state: BTreeMap::new(),
            metadata,
        };
        ck.check_tensors()?;
        ck.open_files()?;
        match flavor {
            Flavor::Torch => ck.collect_torch()?,
            Flavor::Megatron => ck.collect_megatron(opts)?,
        }
        for (i, o) in ck.outputs.iter().enumerate() {
            if ck
                .by_name
                .insert((o.meta.name.clone(), o.meta.role.clone()), i)
                .is_some()
            {
                return Err(StoreError::Format {
                    path: md.clone(),
                    why: format!(
                        "two items map to tensor `{}` ({})",
                        o.meta.name,
                        o.meta.role.key()
                    ),
                });
            }
        }
        ck.ranks = rank_count(ck.files.keys().map(String::as_str));
        Ok(ck)
    }

    /// Checks every tensor item: chunks tile it, and each non-empty chunk has a storage entry whose
    /// byte range is large enough for the chunk's data.
    fn check_tensors(&self) -> Result<()> {
        let md = md_path(&self.dir);
        for (key, item) in &self.metadata.items {
            let Item::Tensor(t) = item else { continue };
            check_tiling(&md, key, t)?;
            for c in t.chunks.iter().filter(|c| !c.is_empty()) {
                let sk = (key.clone(), Some(c.offsets.clone()));
                let Some(info) = self.metadata.storage.get(&sk) else {
                    return Err(StoreError::BadTensor {
                        path: md.clone(),
                        tensor: key.clone(),
                        why: format!(
                            "no storage_data entry for the chunk at offsets {:?}",
                            c.offsets
                        ),
                    });
                };
                // Inside the shape (checked above), so this cannot overflow.
                let need = c
                    .numel()
                    .unwrap_or(u64::MAX)
                    .saturating_mul(t.dtype.size() as u64);
                if need > info.length {
                    return Err(StoreError::BadTensor {
                        path: self.dir.join(&info.file),
                        tensor: key.clone(),
                        why: format!(
                            "range [{}, +{}) cannot hold the {need} bytes of the chunk at {:?}",
                            info.offset, info.length, c.offsets
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Maps every data file a storage entry names, checking that each range lies inside its file.
    fn open_files(&mut self) -> Result<()> {
        let mut entries: Vec<(&StorageKey, &StorageInfo)> = self.metadata.storage.iter().collect();
        entries.sort_by(|a, b| (&a.1.file, a.1.offset).cmp(&(&b.1.file, b.1.offset)));
        for ((key, _), info) in entries {
            if !self.files.contains_key(&info.file) {
                let path = safe_rel_path(&self.dir, &info.file)?;
                let map = match std::fs::metadata(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(StoreError::MissingFile {
                            path,
                            tensor: key.clone(),
                        })
                    }
                    Err(e) => return Err(io_err(&path)(e)),
                    Ok(_) => PtFile::map_file(&path)?,
                };
                self.files.insert(info.file.clone(), DataFile { path, map });
            }
            let f = &self.files[&info.file];
            let size = f.map.as_ref().map_or(0, |m| m.len() as u64);
            if info
                .offset
                .checked_add(info.length)
                .is_none_or(|e| e > size)
            {
                return Err(StoreError::OutOfRange {
                    path: f.path.clone(),
                    tensor: key.clone(),
                    start: info.offset,
                    len: info.length,
                    size,
                });
            }
        }
        Ok(())
    }

    /// The torch.save archive stored for `(key, offsets)`.
    fn archive(&self, key: &str, offsets: Option<&[u64]>) -> Result<PtFile> {
        let sk = (key.to_string(), offsets.map(<[u64]>::to_vec));
        let info = self
            .metadata
            .storage
            .get(&sk)
            .ok_or_else(|| StoreError::BadTensor {
                path: md_path(&self.dir),
                tensor: key.to_string(),
                why: format!("no storage_data entry for offsets {offsets:?}"),
            })?;
        let f = self
            .files
            .get(&info.file)
            .ok_or_else(|| StoreError::MissingFile {
                path: self.dir.join(&info.file),
                tensor: key.to_string(),
            })?;
        let allow = Allowlist::dcp_archive();
        if info.length <= WHOLE_ARCHIVE {
            // One request for a small archive instead of one per zip record (remote inputs).
            uc_torch::lazy::need(&f.path, &[info.offset..info.offset + info.length])?;
        }
        Ok(match &f.map {
            Some(m) => PtFile::from_map(&f.path, m, info.offset, info.length, &allow)?,
            None => PtFile::from_bytes(&f.path, Vec::new(), &allow)?,
        })
    }

    /// Every bytes item holding module extra state (`<module>._extra_state/shard_…`, written by
    /// Megatron for TransformerEngine-style modules): key and archive bytes, each checked to unpickle
    /// with the allowlist, to carry over verbatim into a `torch_dist` output.
    pub fn extra_states(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for (key, item) in &self.metadata.items {
            if !matches!(item, Item::Bytes) || !key.contains("._extra_state") {
                continue;
            }
            self.archive(key, None)?;
            let info = &self.metadata.storage[&(key.clone(), None)];
            let f = &self.files[&info.file];
            uc_torch::lazy::need(&f.path, &[info.offset..info.offset + info.length])?;
            let bytes = f.map.as_ref().map_or(&[][..], |m| {
                &m[info.offset as usize..(info.offset + info.length) as usize]
            });
            out.push((key.clone(), bytes.to_vec()));
        }
        Ok(out)
    }

    /// A bytes item's pickled value as training state.
    fn bytes_value(&self, key: &str) -> Result<Value> {
        Ok(to_value(self.archive(key, None)?.root()))
    }

    /// Appends an output reading `region` of tensor item `key`.
    fn push_item(&mut self, name: String, role: Role, key: &str, region: Region, shape: Vec<u64>) {
        let Some(t) = self.metadata.tensor(key) else {
            return;
        };
        let meta = TensorMeta {
            layout: Layout::single(),
            ..TensorMeta::new(name, t.dtype, shape, role)
        };
        self.outputs.push(Output {
            meta,
            src: Src::Item {
                key: key.to_string(),
                region,
            },
        });
    }

    /// Outputs and state of a torch DCP checkpoint.
    fn collect_torch(&mut self) -> Result<()> {
        let style = KeyStyle::guess(self.metadata.items.iter().map(|(k, _)| k.as_str()));
        let mut model: Vec<(String, String)> = Vec::new();
        let mut optim: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut groups: BTreeMap<usize, BTreeMap<String, Value>> = BTreeMap::new();
        let mut other_tensors = Vec::new();
        let items: Vec<(String, bool)> = self
            .metadata
            .items
            .iter()
            .map(|(k, i)| (k.clone(), matches!(i, Item::Tensor(_))))
            .collect();
        for (key, is_tensor) in items {
            let kind = match self
                .metadata
                .planner_data
                .as_ref()
                .and_then(|p| p.get(&key))
            {
                Some(path) => names::from_path(path),
                None => names::from_text(&key, style),
            };
            match (kind, is_tensor) {
                (KeyKind::Model(fqn), true) => model.push((fqn, key)),
                (KeyKind::OptimState { fqn, state }, true) => {
                    optim.entry(fqn).or_default().push((state, key))
                }
                (KeyKind::ParamGroup { group, hp }, false) => {
                    let v = self.bytes_value(&key)?;
                    groups.entry(group).or_default().insert(hp, v);
                }
                (KeyKind::Other, true) => other_tensors.push(key),
                // TransformerEngine's FP8 metadata: opaque objects, no weights.
                (_, false) if key.contains("._extra_state") => {}
                (_, false) => {
                    let v = self.bytes_value(&key)?;
                    self.state.insert(key, v);
                }
                (_, true) => other_tensors.push(key),
            }
        }
        let mut trained: BTreeSet<String> = optim.keys().cloned().collect();
        for g in groups.values() {
            if let Some(Value::List(ps)) = g.get("params") {
                trained.extend(ps.iter().filter_map(|p| match p {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                }));
            }
        }
        let has_optimizer = !optim.is_empty() || !groups.is_empty();
        let mut done = BTreeSet::new();
        for (fqn, key) in &model {
            let Some(t) = self.metadata.tensor(key) else {
                continue;
            };
            let (dtype, shape) = (t.dtype, t.size.clone());
            let role = match (trained.contains(fqn) || !has_optimizer, dtype) {
                (true, DType::F32) => Role::Fp32Master,
                (true, _) => Role::Param,
                (false, _) => Role::Buffer,
            };
            self.push_item(fqn.clone(), role, key, Region::full(&shape), shape);
            if let Some(states) = optim.get(fqn) {
                self.push_states(fqn, states);
            }
            done.insert(fqn.clone());
        }
        for (fqn, states) in &optim {
            if !done.contains(fqn) {
                self.push_states(fqn, states);
            }
        }
        for key in other_tensors {
            let Some(t) = self.metadata.tensor(&key) else {
                continue;
            };
            let shape = t.size.clone();
            self.push_item(key.clone(), Role::Buffer, &key, Region::full(&shape), shape);
        }
        if !groups.is_empty() {
            let n = groups.keys().max().map_or(0, |m| m + 1);
            let list = (0..n)
                .map(|g| groups.remove(&g).map_or(Value::Null, Value::Map))
                .collect();
            self.state.insert("param_groups".into(), Value::List(list));
        }
        Ok(())
    }

    /// Outputs for the optimizer states of `fqn`: moments first, then other states, `step` last.
    fn push_states(&mut self, fqn: &str, states: &[(String, String)]) {
        let mut states = states.to_vec();
        states.sort_by_key(|(s, _)| match s.as_str() {
            "exp_avg" => 0,
            "exp_avg_sq" => 1,
            "step" => 3,
            _ => 2,
        });
        for (state, key) in states {
            let Some(t) = self.metadata.tensor(&key) else {
                continue;
            };
            let shape = t.size.clone();
            self.push_item(
                fqn.to_string(),
                Role::from_key(&state),
                &key,
                Region::full(&shape),
                shape,
            );
        }
    }

    /// Outputs and state of a Megatron `torch_dist` checkpoint.
    fn collect_megatron(&mut self, opts: &DcpOptions) -> Result<()> {
        let (state, step) = megatron::common_state(&self.dir)?;
        self.state = state;
        let mut model: Vec<String> = Vec::new();
        let mut states: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let items: Vec<(String, bool)> = self
            .metadata
            .items
            .iter()
            .map(|(k, i)| (k.clone(), matches!(i, Item::Tensor(_))))
            .collect();
        for (key, is_tensor) in items {
            match (megatron::classify(&key), is_tensor) {
                (MKey::ExtraState, _) => {}
                (MKey::Model(k), true) => model.push(k),
                (MKey::State { state, key: k }, true) => {
                    states.entry(k).or_default().push((state, key))
                }
                (_, false) => {
                    let v = self.bytes_value(&key)?;
                    self.state.insert(key, v);
                }
            }
        }
        let in_model: HashSet<&String> = model.iter().collect();
        let mut keys = model.clone();
        keys.extend(states.keys().filter(|k| !in_model.contains(k)).cloned());
        for k in keys {
            let mut own = states.get(&k).cloned().unwrap_or_default();
            own.sort_by_key(|(s, _)| match s.as_str() {
                "fp32_param" => 0,
                "exp_avg" => 1,
                "exp_avg_sq" => 2,
                _ => 3,
            });
            let trained = !own.is_empty();
            let has_master = own.iter().any(|(s, _)| s == "fp32_param");
            let mut entries: Vec<(Role, String)> = Vec::new();
            if in_model.contains(&k) {
                let dtype = self.metadata.tensor(&k).map_or(DType::F32, |t| t.dtype);
                let role = match (trained, has_master, dtype) {
                    (true, false, DType::F32) => Role::Fp32Master,
                    (true, _, _) => Role::Param,
                    (false, _, _) => Role::Buffer,
                };
                entries.push((role, k.clone()));
            }
            for (s, key) in own {
                let role = match s.as_str() {
                    "fp32_param" => Role::Fp32Master,
                    s => Role::from_key(s),
                };
                entries.push((role, key));
            }
            self.push_megatron(&k, &entries, trained.then_some(step).flatten(), opts)?;
        }
        Ok(())
    }

    /// Outputs of model key `k` (its param and states in `entries`), split per layer when stacked,
    /// vocabulary rows cut to `opts.vocab_size`, plus a `step` per parameter when known.
    fn push_megatron(
        &mut self,
        k: &str,
        entries: &[(Role, String)],
        step: Option<f32>,
        opts: &DcpOptions,
    ) -> Result<()> {
        let Some(size) = entries
            .iter()
            .find_map(|(_, key)| self.metadata.tensor(key).map(|t| t.size.clone()))
        else {
            return Ok(());
        };
        let mut views: Vec<(String, Region, Vec<u64>)> = Vec::new();
        match megatron::stacked(k) {
            Some((prefix, rest)) if !size.is_empty() => {
                for i in 0..size[0] {
                    let mut r = Region::full(&size);
                    r.off[0] = i;
                    r.len[0] = 1;
                    let name = megatron::layer_name(prefix, i, rest, opts.te_names);
                    views.push((name, r, size[1..].to_vec()));
                }
            }
            _ => {
                let mut r = Region::full(&size);
                let mut shape = size.clone();
                if let (true, Some(n)) = (megatron::is_vocab(k), opts.vocab_size) {
                    if size.is_empty() || n > size[0] {
                        return Err(StoreError::BadTensor {
                            path: md_path(&self.dir),
                            tensor: k.to_string(),
                            why: format!("vocabulary size {n} is larger than the stored {size:?}"),
                        });
                    }
                    r.len[0] = n;
                    shape[0] = n;
                }
                views.push((k.to_string(), r, shape));
            }
        }
        for (name, region, shape) in views {
            for (role, key) in entries {
                let same = self.metadata.tensor(key).is_some_and(|t| t.size == size);
                if !same {
                    return Err(StoreError::BadTensor {
                        path: md_path(&self.dir),
                        tensor: key.clone(),
                        why: format!("shape differs from its parameter's {size:?}"),
                    });
                }
                self.push_item(
                    name.clone(),
                    role.clone(),
                    key,
                    region.clone(),
                    shape.clone(),
                );
            }
            if let Some(s) = step {
                self.outputs.push(Output {
                    meta: TensorMeta::new(name, DType::F32, vec![], Role::Step),
                    src: Src::Const(s.to_le_bytes().to_vec()),
                });
            }
        }
        Ok(())
    }

    /// Which writer produced the checkpoint.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `.metadata` (items, chunks, storage entries).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Every output tensor (full logical shape, `Layout::single()`), in a stable order.
    pub fn outputs(&self) -> Vec<TensorMeta> {
        self.outputs.iter().map(|o| o.meta.clone()).collect()
    }

    /// The flat key and box of the stored item an output tensor is read from (None for constants).
    pub fn source_of(&self, meta: &TensorMeta) -> Option<(&str, &Region)> {
        let o = &self.outputs[*self.by_name.get(&(meta.name.clone(), meta.role.clone()))?];
        match &o.src {
            Src::Item { key, region } => Some((key, region)),
            Src::Const(_) => None,
        }
    }

    /// The topology: one `world` axis with as many ranks as the data files name (`__<rank>_<n>`).
    pub fn topology(&self) -> Topology {
        Topology::new(&[("world", self.ranks)], 0)
    }

    /// Merges one output tensor (as listed by [`DcpCheckpoint::outputs`]) into full row-major bytes.
    pub fn read(&self, meta: &TensorMeta) -> Result<Vec<u8>> {
        Ok(self.bytes(meta)?.into_vec())
    }

    /// One output tensor's bytes, borrowed from the `.distcp` mappings when its chunks hold it as
    /// contiguous runs (a whole chunk, row blocks), else merged into a buffer.
    pub fn bytes(&self, meta: &TensorMeta) -> Result<TensorBytes<'_>> {
        let i = self
            .by_name
            .get(&(meta.name.clone(), meta.role.clone()))
            .ok_or_else(|| StoreError::Format {
                path: self.dir.clone(),
                why: format!(
                    "no tensor `{}` ({}) in this checkpoint",
                    meta.name,
                    meta.role.key()
                ),
            })?;
        match &self.outputs[*i].src {
            Src::Const(b) => Ok(TensorBytes::Owned(b.clone())),
            Src::Item { key, region } => self.region_bytes(key, region),
        }
    }

    /// Reads `region` of tensor item `key` from the chunks that hold it (only those are opened).
    pub fn read_region(&self, key: &str, region: &Region) -> Result<Vec<u8>> {
        Ok(self.region_bytes(key, region)?.into_vec())
    }

    /// [`DcpCheckpoint::read_region`] as borrowed runs where the chunks allow (see [`Self::bytes`]).
    fn region_bytes(&self, key: &str, region: &Region) -> Result<TensorBytes<'_>> {
        let md = md_path(&self.dir);
        let item: &TensorItem = self
            .metadata
            .tensor(key)
            .ok_or_else(|| StoreError::Format {
                path: md.clone(),
                why: format!("no tensor item `{key}`"),
            })?;
        let merge = |e| StoreError::Merge {
            path: md.clone(),
            tensor: key.to_string(),
            source: Box::new(e),
        };
        let src = chunks::pieces(item);
        let pl = plan(
            key,
            &item.size,
            &src,
            &[chunks::target(region)],
            ReplicaPolicy::First,
        )
        .map_err(merge)?;
        let needed: BTreeSet<u32> = pl.ops.iter().map(|o| o.srcs[0].rank).collect();
        let mut archives: BTreeMap<u32, PtFile> = BTreeMap::new();
        for &c in &needed {
            let chunk = &item.chunks[c as usize];
            let pt = self.archive(key, Some(&chunk.offsets))?;
            let bad = |why: String| StoreError::BadTensor {
                path: pt.path().to_path_buf(),
                tensor: key.to_string(),
                why,
            };
            let t = pt
                .root()
                .as_tensor()
                .ok_or_else(|| bad(format!("chunk at {:?} holds no tensor", chunk.offsets)))?;
            if t.shape != chunk.sizes || t.dtype != item.dtype {
                return Err(bad(format!(
                    "chunk at {:?} holds a {} {:?} tensor, the metadata says {} {:?}",
                    chunk.offsets, t.dtype, t.shape, item.dtype, chunk.sizes
                )));
            }
            archives.insert(c, pt);
        }
        if let Some(runs) = pl.contiguous_runs(0, 0, region.numel()) {
            if let Some(v) = self.borrowed_runs(key, item, &archives, &runs) {
                return Ok(TensorBytes::Runs(v));
            }
        }
        let mut bytes = BTreeMap::new();
        for (c, pt) in &archives {
            if let Some(t) = pt.root().as_tensor() {
                bytes.insert(*c, pt.tensor_data(key, t)?);
            }
        }
        let mut out = vec![0u8; (region.numel() as usize).saturating_mul(item.dtype.size())];
        let get = |r: u32, _b: u32| bytes.get(&r).map(|b| &**b);
        execute_target(&pl, 0, 0, &mut out, item.dtype, item.dtype, &get).map_err(merge)?;
        Ok(TensorBytes::Owned(out))
    }

    /// The runs of a plan as slices of the mapped `.distcp` files (`None` when a chunk is not a
    /// contiguous tensor of a mapped file, or a run falls outside it).
    fn borrowed_runs(
        &self,
        key: &str,
        item: &TensorItem,
        archives: &BTreeMap<u32, PtFile>,
        runs: &[uc_merge::Run],
    ) -> Option<Vec<&[u8]>> {
        let es = item.dtype.size() as u64;
        runs.iter()
            .map(|r| {
                let pt = archives.get(&r.rank)?;
                let t = pt.root().as_tensor()?;
                let range = pt.tensor_file_range(key, t).ok()?;
                let chunk = &item.chunks[r.rank as usize];
                let info = self
                    .metadata
                    .storage
                    .get(&(key.to_string(), Some(chunk.offsets.clone())))?;
                let file = self.files.get(&info.file)?;
                let map = file.map.as_ref()?;
                let s = range.start.checked_add(r.src.checked_mul(es)?)?;
                let e = s.checked_add(r.len.checked_mul(es)?)?;
                if e > range.end {
                    return None;
                }
                // A lazily filled file that cannot be filled falls back to the reading path,
                // which reports the error.
                uc_torch::lazy::need(&file.path, &[s..e]).ok()?;
                map.get(usize::try_from(s).ok()?..usize::try_from(e).ok()?)
            })
            .collect()
    }
}

/// Archives up to this size are filled whole before parsing when their file is lazily filled.
const WHOLE_ARCHIVE: u64 = 4 << 20;

/// Ranks named by data files `__<rank>_<n>.distcp` (max + 1), else the number of files.
fn rank_count<'a>(files: impl Iterator<Item = &'a str> + Clone) -> u32 {
    let ranks = files.clone().filter_map(|f| {
        let stem = f.rsplit('/').next()?.strip_prefix("__")?;
        stem.split('_').next()?.parse::<u32>().ok()
    });
    match ranks.max() {
        Some(m) => m.saturating_add(1),
        None => (files.count() as u32).max(1),
    }
}
