//! PyTorch `.pt` writer (the zip + pickle layout `torch.save` writes) and DeepSpeed's universal files.
//!
//! A [`PtValue`] tree (dicts with str keys, lists, tuples, scalars, tensors) is pickled with protocol 2
//! exactly as Python pickles it; each tensor becomes its own storage `<stem>/data/<key>`, streamed from
//! a slice, an owned buffer or a callback so memory stays bounded. [`write_universal_state`] and
//! [`write_universal_step`] produce DeepSpeed's `zero/<param>/<state>.pt` files key for key.

mod pickler;
mod torchzip;

use crate::atomic::{create_dir_if_missing, refuse_existing, safe_join, AtomicDir};
use crate::error::{io_err, Result, StoreError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use uc_schema::{DType, Value};

pub use torchzip::ALIGNMENT as STORAGE_ALIGNMENT;

/// A Python value `torch.save` can write and `torch.load(weights_only=True)` reads back.
pub enum PtValue<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<PtValue<'a>>),
    Tuple(Vec<PtValue<'a>>),
    /// A plain `dict` with str keys, in insertion order.
    Dict(Vec<(String, PtValue<'a>)>),
    /// A `collections.OrderedDict` with str keys (what `state_dict()` returns).
    OrderedDict(Vec<(String, PtValue<'a>)>),
    /// A plain `dict` with int keys (an optimizer's `state`: param index → its state).
    IntDict(Vec<(i64, PtValue<'a>)>),
    Tensor(PtTensor<'a>),
    /// A global (a class or a dtype such as `torch.float16`), as `GLOBAL module name`.
    Global {
        module: String,
        name: String,
    },
    /// `module.name.__new__(cls)` with its `__dict__` set to `state` (what pickle writes for a
    /// plain Python object such as DeepSpeed's loss scaler); `torch.load` needs `weights_only=False`.
    Object {
        module: String,
        name: String,
        state: Box<PtValue<'a>>,
    },
}

impl<'a> PtValue<'a> {
    /// A `str` value.
    pub fn str(s: impl Into<String>) -> PtValue<'a> {
        PtValue::Str(s.into())
    }

    /// A training-state value (hyper-parameter `key`) as torch keeps it: `betas` as a tuple.
    pub fn from_state(v: &Value, key: &str) -> PtValue<'static> {
        let list = |l: &[Value]| l.iter().map(|x| PtValue::from_state(x, "")).collect();
        match v {
            Value::Null => PtValue::None,
            Value::Bool(b) => PtValue::Bool(*b),
            Value::Int(i) => PtValue::Int(*i),
            Value::Float(f) => PtValue::Float(*f),
            Value::Str(s) => PtValue::Str(s.clone()),
            Value::List(l) if key == "betas" => PtValue::Tuple(list(l)),
            Value::List(l) => PtValue::List(list(l)),
            Value::Map(m) => PtValue::Dict(
                m.iter()
                    .map(|(k, x)| (k.clone(), PtValue::from_state(x, k)))
                    .collect(),
            ),
        }
    }
}

/// Where a tensor's contiguous little-endian bytes come from.
pub enum TensorData<'a> {
    Bytes(&'a [u8]),
    Owned(Vec<u8>),
    /// Called once with the output; must write exactly the tensor's byte size, in any chunking.
    Stream(FillFn<'a>),
}

/// A callback that writes a tensor's bytes into the archive.
pub type FillFn<'a> = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + 'a>;

/// A contiguous CPU tensor to pickle: `_rebuild_tensor_v2` over a storage of its own, offset 0.
pub struct PtTensor<'a> {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub requires_grad: bool,
    pub data: TensorData<'a>,
}

impl<'a> PtTensor<'a> {
    /// A tensor over borrowed bytes (`requires_grad=False`).
    pub fn from_bytes(dtype: DType, shape: Vec<u64>, bytes: &'a [u8]) -> PtTensor<'a> {
        PtTensor {
            dtype,
            shape,
            requires_grad: false,
            data: TensorData::Bytes(bytes),
        }
    }

    /// A tensor whose bytes `fill` writes when the file is written (`requires_grad=False`).
    pub fn streamed(
        dtype: DType,
        shape: Vec<u64>,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + 'a,
    ) -> PtTensor<'a> {
        PtTensor {
            dtype,
            shape,
            requires_grad: false,
            data: TensorData::Stream(Box::new(fill)),
        }
    }

    /// A 0-d float32 tensor (DeepSpeed's `step`).
    pub fn scalar_f32(v: f32) -> PtTensor<'static> {
        PtTensor {
            dtype: DType::F32,
            shape: Vec::new(),
            requires_grad: false,
            data: TensorData::Owned(v.to_le_bytes().to_vec()),
        }
    }

    /// Builder: set `requires_grad` (DeepSpeed's universal `fp32.pt` tensors carry `True`).
    pub fn with_requires_grad(mut self, requires_grad: bool) -> PtTensor<'a> {
        self.requires_grad = requires_grad;
        self
    }

    /// Number of elements, `None` on overflow.
    pub fn numel(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Size of the data in bytes, `None` on overflow.
    pub fn nbytes(&self) -> Option<u64> {
        self.numel()?.checked_mul(self.dtype.size() as u64)
    }
}

/// Writes `value` as a new `.pt` file at `path` (refusing an existing path); removes it again on error.
///
/// The archive's top-level folder is the file stem, as `torch.save` names it. The file is fsynced.
pub fn write_pt(path: impl AsRef<Path>, value: PtValue<'_>) -> Result<()> {
    let path = path.as_ref();
    refuse_existing(path)?;
    let file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(StoreError::OutputExists {
                path: path.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let stem = archive_stem(path);
    let res =
        write_pt_to(BufWriter::with_capacity(1 << 20, file), &stem, value, path).and_then(|w| {
            let f = w.into_inner().map_err(|e| StoreError::Io {
                path: path.to_path_buf(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(io_err(path))
        });
    if res.is_err() {
        let _ = fs::remove_file(path);
    }
    res
}

/// Writes `value` as a torch zip archive with top-level folder `stem` into `w`; errors name `path`.
pub fn write_pt_to<W: Write>(w: W, stem: &str, value: PtValue<'_>, path: &Path) -> Result<W> {
    let (pkl, storages) = pickler::Pickler::new(path).dump(value)?;
    let mut zip = torchzip::ZipOut::new(w, path);
    let mut id = Sha256::new();
    id.update(&pkl);
    zip.add(&format!("{stem}/data.pkl"), &pkl)?;
    zip.add(&format!("{stem}/.format_version"), b"1")?;
    zip.add(&format!("{stem}/.storage_alignment"), b"64")?;
    zip.add(&format!("{stem}/byteorder"), b"little")?;
    let mut storages = storages;
    // torch.save writes storages in sorted (string) key order.
    storages.sort_by(|a, b| a.key.cmp(&b.key));
    for s in storages {
        let name = format!("{stem}/data/{}", s.key);
        let bad = |why: String| StoreError::BadTensor {
            path: path.to_path_buf(),
            tensor: s.label.clone(),
            why,
        };
        match s.data {
            TensorData::Bytes(b) => {
                check_len(b.len(), s.nbytes).map_err(bad)?;
                zip.add(&name, b)?;
            }
            TensorData::Owned(b) => {
                check_len(b.len(), s.nbytes).map_err(bad)?;
                zip.add(&name, &b)?;
            }
            TensorData::Stream(fill) => {
                zip.add_stream(&name, s.nbytes, fill).map_err(|e| match e {
                    StoreError::Format { why, .. } => bad(why),
                    e => e,
                })?
            }
        }
        id.update(s.key.as_bytes());
        id.update(s.nbytes.to_le_bytes());
    }
    zip.add(&format!("{stem}/version"), b"3\n")?;
    zip.add(
        &format!("{stem}/.data/serialization_id"),
        serialization_id(&id.finalize()).as_bytes(),
    )?;
    let mut w = zip.finish()?;
    w.flush().map_err(io_err(path))?;
    Ok(w)
}

/// `Err` unless a buffer has exactly the tensor's size.
fn check_len(got: usize, want: u64) -> std::result::Result<(), String> {
    if got as u64 == want {
        Ok(())
    } else {
        Err(format!(
            "{got} data bytes given for a tensor of {want} bytes"
        ))
    }
}

/// torch's 40-digit serialization id (two zero-padded u64s); here derived from the content, so reproducible.
fn serialization_id(digest: &[u8]) -> String {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&digest[..8]);
    b.copy_from_slice(&digest[8..16]);
    format!("{:020}{:020}", u64::from_le_bytes(a), u64::from_le_bytes(b))
}

/// The archive folder name torch uses: the file name without its last extension (`archive` if none).
fn archive_stem(path: &Path) -> String {
    match path.file_stem().and_then(|s| s.to_str()) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "archive".to_string(),
    }
}

/// Which keys DeepSpeed's `ds_to_universal` puts into a `zero/<param>/<state>.pt`, in its key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniversalKind {
    /// `{'cat_dim': d, 'param': t}`: ZeRO data parallel, pipeline, row-parallel embedding (`d` = 1).
    CatDim(i64),
    /// `{'param': t}`: AutoTP params rebuilt from their affine map; the router alias's `fp32.pt`.
    ParamOnly,
    /// `{'vocab_tensor': True, 'param': t}`: AutoTP vocabulary tensors (`lm_head`).
    Vocab,
    /// `{'param': t, 'cat_dim': 0, 'is_expert_param': True, 'ep_num_experts': n}`: AutoEP experts.
    Expert { num_experts: i64 },
    /// A bare tensor: ZeRO-3 flat 1-D states.
    Bare,
}

/// The value DeepSpeed pickles for one universal state file of `kind`.
pub fn universal_value(kind: UniversalKind, tensor: PtTensor<'_>) -> PtValue<'_> {
    let t = PtValue::Tensor(tensor);
    let s = |k: &str| k.to_string();
    match kind {
        UniversalKind::CatDim(d) => {
            PtValue::Dict(vec![(s("cat_dim"), PtValue::Int(d)), (s("param"), t)])
        }
        UniversalKind::ParamOnly => PtValue::Dict(vec![(s("param"), t)]),
        UniversalKind::Vocab => PtValue::Dict(vec![
            (s("vocab_tensor"), PtValue::Bool(true)),
            (s("param"), t),
        ]),
        UniversalKind::Expert { num_experts } => PtValue::Dict(vec![
            (s("param"), t),
            (s("cat_dim"), PtValue::Int(0)),
            (s("is_expert_param"), PtValue::Bool(true)),
            (s("ep_num_experts"), PtValue::Int(num_experts)),
        ]),
        UniversalKind::Bare => t,
    }
}

/// Writes `zero_dir/<param>/<state>.pt` (creating the param folder) and returns its path.
///
/// `param` and `state` are checked with [`safe_join`]. DeepSpeed writes `fp32` tensors with
/// `requires_grad=True` and moments with `False`; set it on `tensor` accordingly.
pub fn write_universal_state(
    zero_dir: &Path,
    param: &str,
    state: &str,
    kind: UniversalKind,
    tensor: PtTensor<'_>,
) -> Result<PathBuf> {
    let dir = safe_join(zero_dir, param)?;
    let file = safe_join(&dir, &format!("{}.pt", checked_state(&dir, state)?))?;
    create_dir_if_missing(&dir)?;
    write_pt(&file, universal_value(kind, tensor))?;
    Ok(file)
}

/// Writes `zero_dir/<param>/step.pt`: a bare 0-d float32 tensor, as DeepSpeed does.
pub fn write_universal_step(zero_dir: &Path, param: &str, step: f32) -> Result<PathBuf> {
    write_universal_state(
        zero_dir,
        param,
        "step",
        UniversalKind::Bare,
        PtTensor::scalar_f32(step),
    )
}

/// A state name is a file stem: it must itself be a safe single name.
fn checked_state<'s>(dir: &Path, state: &'s str) -> Result<&'s str> {
    safe_join(dir, state)?;
    Ok(state)
}

/// A DeepSpeed universal checkpoint folder (`global_step<N>_universal/`) written atomically: its
/// `zero/<param>/<state>.pt` files go into a temporary sibling that [`UniversalDir::commit`] renames
/// into place (with a `COMPLETE` marker, which DeepSpeed ignores). Dropped uncommitted, it leaves nothing.
#[derive(Debug)]
pub struct UniversalDir {
    out: AtomicDir,
    zero: PathBuf,
}

impl UniversalDir {
    /// Starts the folder at `target` (which must not exist) with an empty `zero/` inside.
    pub fn create(target: impl AsRef<Path>) -> Result<UniversalDir> {
        let out = AtomicDir::create(target)?;
        let zero = out.subdir("zero")?;
        Ok(UniversalDir { out, zero })
    }

    /// The temporary root, for the files beside `zero/` (`mp_rank_00_model_states.pt`, …).
    pub fn root(&self) -> &Path {
        self.out.path()
    }

    /// The temporary `zero/` folder.
    pub fn zero_dir(&self) -> &Path {
        &self.zero
    }

    /// Writes `zero/<param>/<state>.pt` (see [`write_universal_state`]); callable from many threads.
    pub fn write_state(
        &self,
        param: &str,
        state: &str,
        kind: UniversalKind,
        tensor: PtTensor<'_>,
    ) -> Result<PathBuf> {
        write_universal_state(&self.zero, param, state, kind, tensor)
    }

    /// Writes `zero/<param>/step.pt` (see [`write_universal_step`]).
    pub fn write_step(&self, param: &str, step: f32) -> Result<PathBuf> {
        write_universal_step(&self.zero, param, step)
    }

    /// Writes `COMPLETE` and renames the folder into place; returns its final path.
    pub fn commit(self) -> Result<PathBuf> {
        self.out.commit(b"")
    }
}
