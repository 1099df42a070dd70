//! The `.metadata` pickle of a DCP checkpoint as typed data: items (tensors with their chunks, or
//! bytes) and the storage entry (file, byte range) of every chunk.

use crate::error::{Result, TorchError};
use crate::pickle::{unpickle, Allowlist, Cursor, PyValue};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use uc_schema::DType;

/// Module of torch's checkpoint dataclasses.
const MD: &str = "torch.distributed.checkpoint.metadata";

/// One chunk of a tensor item: a box of the global tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
}

impl Chunk {
    /// Elements in the chunk (`None` on overflow).
    pub fn numel(&self) -> Option<u64> {
        self.sizes.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// True when some extent is 0 (such chunks hold no data; their offsets may lie out of range).
    pub fn is_empty(&self) -> bool {
        self.sizes.contains(&0)
    }
}

/// A `TensorStorageMetadata`: element type, global shape and chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorItem {
    pub dtype: DType,
    pub size: Vec<u64>,
    pub chunks: Vec<Chunk>,
    /// `TensorProperties.strides` when recorded (None for Megatron's stacked layer tensors).
    pub strides: Option<Vec<u64>>,
}

/// One entry of `state_dict_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Tensor(TensorItem),
    /// A `BytesStorageMetadata`: a pickled Python object.
    Bytes,
}

/// Where one chunk (or bytes item) is stored: `[offset, offset+length)` of `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageInfo {
    /// Path relative to the checkpoint folder, as written (`__0_0.distcp`).
    pub file: String,
    pub offset: u64,
    pub length: u64,
}

/// A `storage_data` key: the item's flat key and the chunk offsets (None for bytes items).
pub type StorageKey = (String, Option<Vec<u64>>);

/// One element of a `planner_data` path: a dict key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(i64),
}

/// A parsed `.metadata`.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// `state_dict_metadata` in file order.
    pub items: Vec<(String, Item)>,
    /// Flat key → position in `items`.
    pub index: HashMap<String, usize>,
    pub storage: HashMap<StorageKey, StorageInfo>,
    /// Flat key → path into the nested state dict (`('optim', 'state', 'w', 'exp_avg')`), when written.
    pub planner_data: Option<HashMap<String, Vec<PathSeg>>>,
    pub version: Option<String>,
}

impl Metadata {
    /// The item under flat key `key`.
    pub fn item(&self, key: &str) -> Option<&Item> {
        self.index.get(key).map(|&i| &self.items[i].1)
    }

    /// The tensor item under flat key `key`.
    pub fn tensor(&self, key: &str) -> Option<&TensorItem> {
        match self.item(key) {
            Some(Item::Tensor(t)) => Some(t),
            _ => None,
        }
    }
}

fn fmt_err(path: &Path, why: impl Into<String>) -> TorchError {
    TorchError::Format {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Checks that a cursor is an instance of `module.name`.
fn expect_class(c: &Cursor, module: &str, name: &str) -> Result<()> {
    match c.value() {
        PyValue::Object(o) if o.class.module == module && o.class.name == name => Ok(()),
        v => Err(fmt_err(
            c.path(),
            format!(
                "`{}`: expected a {module}.{name}, found {}",
                trail(c),
                v.class()
                    .map_or_else(|| v.type_name().to_string(), |(m, n)| format!("{m}.{n}"))
            ),
        )),
    }
}

fn trail<'a>(c: &'a Cursor) -> &'a str {
    if c.trail().is_empty() {
        "<root>"
    } else {
        c.trail()
    }
}

/// Reads and parses `path` (a `.metadata` file) accepting only the globals in `allow`. The file is
/// mapped, not read into the heap: at 10⁵ items it is hundreds of MB.
pub fn read(path: &Path, allow: &Allowlist) -> Result<Metadata> {
    crate::lazy::need_whole(path)?;
    match crate::pt::PtFile::map_file(path)? {
        Some(map) => parse(&map, path, allow),
        None => parse(&[], path, allow),
    }
}

/// Parses `.metadata` bytes (read from `path`, named in errors).
pub fn parse(bytes: &[u8], path: &Path, allow: &Allowlist) -> Result<Metadata> {
    let root = unpickle(bytes, allow, path)?;
    let md = Cursor::new(path, &root);
    expect_class(&md, MD, "Metadata")?;
    let mut out = Metadata::default();
    for (key, c) in md.key("state_dict_metadata")?.str_entries()? {
        let item = parse_item(key, &c)?;
        if out.index.insert(key.to_string(), out.items.len()).is_some() {
            return Err(fmt_err(path, format!("item `{key}` is listed twice")));
        }
        out.items.push((key.to_string(), item));
    }
    for (k, v) in md.key("storage_data")?.entries()? {
        let kc = Cursor::new(path, k);
        expect_class(&kc, MD, "MetadataIndex")?;
        let fqn = kc.key("fqn")?.as_str()?.to_string();
        let offsets = match kc.get("offset") {
            Some(o) if !o.is_none() => Some(o.as_shape()?),
            _ => None,
        };
        let info = StorageInfo {
            file: v.key("relative_path")?.as_str()?.to_string(),
            offset: v.key("offset")?.as_u64()?,
            length: v.key("length")?.as_u64()?,
        };
        match out.storage.entry((fqn, offsets)) {
            Entry::Vacant(e) => {
                e.insert(info);
            }
            Entry::Occupied(e) => {
                let (fqn, offsets) = e.key();
                return Err(TorchError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: fqn.clone(),
                    why: format!("two storage_data entries for the chunk at offsets {offsets:?}"),
                });
            }
        }
    }
    out.planner_data = md.get("planner_data").and_then(|p| planner_data(p.value()));
    out.version = md
        .get("version")
        .and_then(|v| v.value().as_str().map(str::to_string));
    Ok(out)
}

/// One `state_dict_metadata` value.
fn parse_item(key: &str, c: &Cursor) -> Result<Item> {
    let bad = |why: String| TorchError::BadTensor {
        path: c.path().to_path_buf(),
        tensor: key.to_string(),
        why,
    };
    match c.value().class() {
        Some((MD, "BytesStorageMetadata")) => return Ok(Item::Bytes),
        Some((MD, "TensorStorageMetadata")) => {}
        _ => return Err(bad(format!("unexpected item {}", c.value().type_name()))),
    }
    let (dtype, strides) = properties(key, &c.key("properties")?)?;
    let size = c.key("size")?.as_shape()?;
    let mut chunks = Vec::new();
    for ch in c.key("chunks")?.items()? {
        let chunk = Chunk {
            offsets: ch.key("offsets")?.as_shape()?,
            sizes: ch.key("sizes")?.as_shape()?,
        };
        if chunk.offsets.len() != size.len() || chunk.sizes.len() != size.len() {
            return Err(bad(format!(
                "chunk offsets {:?} / sizes {:?} do not match the {}-d shape {size:?}",
                chunk.offsets,
                chunk.sizes,
                size.len()
            )));
        }
        chunks.push(chunk);
    }
    Ok(Item::Tensor(TensorItem {
        dtype,
        size,
        chunks,
        strides,
    }))
}

/// `TensorProperties`: its state is `(dtype, layout, requires_grad, memory_format, pin_memory[, strides])`
/// (`__setstate__`) or, from older writers, a dict with a `dtype` field.
fn properties(key: &str, c: &Cursor) -> Result<(DType, Option<Vec<u64>>)> {
    expect_class(c, MD, "TensorProperties")?;
    let (dtype, strides) = match c.value() {
        PyValue::Object(o) => match &o.state {
            Some(PyValue::Tuple(t) | PyValue::List(t)) => (t.first(), t.get(5)),
            Some(d @ PyValue::Dict(_)) => (d.get("dtype"), d.get("strides")),
            _ => (None, None),
        },
        _ => (None, None),
    };
    let dtype = match dtype {
        Some(PyValue::Global(g)) if g.module == "torch" => DType::parse(&g.name),
        _ => None,
    }
    .ok_or_else(|| TorchError::BadTensor {
        path: c.path().to_path_buf(),
        tensor: key.to_string(),
        why: format!("TensorProperties has no supported dtype ({:?})", dtype),
    })?;
    Ok((dtype, strides.and_then(PyValue::as_shape)))
}

/// `planner_data` as flat key → path; anything not of that form is ignored (it is only a hint).
fn planner_data(v: &PyValue) -> Option<HashMap<String, Vec<PathSeg>>> {
    let d = v.as_dict()?;
    let mut out = HashMap::with_capacity(d.len());
    for (k, v) in d {
        let path = v
            .as_seq()?
            .iter()
            .map(|s| match s {
                PyValue::Str(s) => Some(PathSeg::Key(s.clone())),
                PyValue::Int(i) => Some(PathSeg::Index(*i)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        out.insert(k.as_str()?.to_string(), path);
    }
    Some(out)
}

/// The `.metadata` path of a checkpoint folder.
pub fn metadata_path(dir: &Path) -> PathBuf {
    dir.join(".metadata")
}
