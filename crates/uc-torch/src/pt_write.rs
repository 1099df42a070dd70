//! PyTorch `.pt` writer: the zip + pickle layout `torch.save` writes.
//!
//! A [`PtValue`] tree (dicts with str keys, lists, tuples, scalars, tensors) is pickled with protocol 2
//! exactly as Python pickles it; each tensor becomes its own storage `<stem>/data/<key>`, streamed from
//! a slice, an owned buffer or a callback so memory stays bounded.

mod pickler;
mod torchzip;

use crate::error::{io_err, Result, TorchError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::Path;
use uc_schema::{DType, Value};

pub use torchzip::ALIGNMENT as STORAGE_ALIGNMENT;

/// The largest single `write` of tensor bytes (1 MiB). A large write from a file mapping costs the
/// kernel about twice as much a byte as the same bytes in 1 MiB writes (measured on Linux 6.18/ext4:
/// a 733 MB file from its mapping to a new file, 64 MiB writes 0.44 s, 1 MiB writes 0.21 s, the same
/// as `copy_file_range`): the kernel faults in the whole source range before copying, so a large one
/// is read from memory twice. A piece also stays in cache between its checksum and its write.
pub const WRITE_PIECE: usize = 1 << 20;

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
/// The archive's top-level folder is the file stem, as `torch.save` names it. The file is not synced:
/// writers of many files make their folder durable once (an `fsync` per file costs more than the write).
pub fn write_pt(path: impl AsRef<Path>, value: PtValue<'_>) -> Result<()> {
    let path = path.as_ref();
    let file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(TorchError::OutputExists {
                path: path.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(TorchError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    write_pt_file(file, path, value)
}

/// Writes `value` as a `.pt` archive into `file`, freshly created at `path` (see [`write_pt`]);
/// removes `path` again on error.
pub fn write_pt_file(file: fs::File, path: &Path, value: PtValue<'_>) -> Result<()> {
    let stem = archive_stem(path);
    let res =
        write_pt_to(BufWriter::with_capacity(1 << 20, file), &stem, value, path).and_then(|w| {
            w.into_inner().map_err(|e| TorchError::Io {
                path: path.to_path_buf(),
                source: e.into_error(),
            })?;
            Ok(())
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
        let bad = |why: String| TorchError::BadTensor {
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
                    TorchError::Format { why, .. } => bad(why),
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
