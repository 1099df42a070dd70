//! The plain value tree an unpickled file becomes, plus typed navigation (`Cursor`).

use crate::error::{Result, TorchError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use uc_schema::DType;

/// One unpickled Python value; nothing in it can run code. Kept to 32 bytes (large variants are
/// boxed): a `.metadata` of 10⁶ chunks unpickles to tens of millions of them.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64, as pickle's LONG1/LONG4 give it: little-endian two's complement.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    /// Insertion-ordered; a key set twice keeps its first position and its last value (Python semantics).
    Dict(PyDict),
    Set(Vec<PyValue>),
    FrozenSet(Vec<PyValue>),
    /// A bare global: an allowlisted class or dtype (`torch.float32`), or a layout named in data
    /// (`_get_layout("torch.strided")`, a value that cannot be called).
    Global(Arc<PyGlobal>),
    /// A persistent-id storage reference `('storage', <T>Storage, key, location, numel)`.
    Storage(Box<StorageRef>),
    /// A tensor view into a storage (from `_rebuild_tensor_v2` and friends).
    Tensor(Box<TensorRef>),
    /// An instance of an allowlisted class.
    Object(Box<PyObject>),
}

/// A global named by a pickle: `module.name` (shared by every instance of a class).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyGlobal {
    pub module: String,
    pub name: String,
}

/// An instance of an allowlisted class: its constructor args (REDUCE/NEWOBJ) and BUILD state.
#[derive(Debug, Clone, PartialEq)]
pub struct PyObject {
    pub class: Arc<PyGlobal>,
    pub args: Vec<PyValue>,
    pub state: Option<PyValue>,
}

/// A storage named by a persistent id: bytes live in zip entry `<prefix>/data/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: DType,
    pub location: String,
    /// Storage length in elements.
    pub numel: u64,
}

/// A lazily read tensor: a strided view (in elements) into storage `data/<storage>`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: String,
    pub dtype: DType,
    /// Storage length in elements (from the persistent id).
    pub storage_numel: u64,
    /// Offset of element 0 in the storage, in elements.
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
    pub requires_grad: bool,
    /// Python attributes kept by `_rebuild_from_type_v2` (e.g. DeepSpeed's `{'ds_id': ...}`).
    pub attrs: Option<Box<PyValue>>,
}

impl TensorRef {
    /// Number of elements (shape product; validated not to overflow when unpickled).
    pub fn numel(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Bytes of the tensor's own elements (not of its storage).
    pub fn nbytes(&self) -> u64 {
        self.numel().saturating_mul(self.dtype.size() as u64)
    }

    /// True when the view is row-major contiguous (dims of size 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        if self.numel() == 0 {
            return true;
        }
        let mut expect = 1u64;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expect {
                return false;
            }
            expect = expect.saturating_mul(d);
        }
        true
    }

    /// One past the largest storage element index the view touches (0 for an empty view).
    pub fn storage_extent(&self) -> Option<u64> {
        if self.numel() == 0 {
            return Some(0);
        }
        let mut last = self.offset;
        for (&d, &s) in self.shape.iter().zip(&self.stride) {
            last = last.checked_add((d - 1).checked_mul(s)?)?;
        }
        last.checked_add(1)
    }

    /// A python attribute kept from `_rebuild_from_type_v2` state (dict form).
    pub fn attr(&self, name: &str) -> Option<&PyValue> {
        self.attrs.as_deref().and_then(|a| a.get(name))
    }
}

/// A resolved dict: its entries in insertion order (read as a slice), and for a large one an
/// index of its string keys, built on the first lookup, so that finding each of a state dict's
/// 10⁵ tensors by name is not a scan of all of them.
#[derive(Debug, Clone, Default)]
pub struct PyDict {
    entries: Box<[(PyValue, PyValue)]>,
    /// Only dicts over [`PyDict::SCAN`] entries have one (boxed: most dicts are small).
    by_str: Option<Box<StrIndex>>,
}

/// A dict's string keys → entry positions, built on first use.
type StrIndex = OnceLock<HashMap<Box<str>, usize>>;

impl PyDict {
    /// Dicts up to this many entries are scanned rather than indexed.
    const SCAN: usize = 32;

    /// The dict of `entries` (keys as the unpickler left them: each at most once).
    pub fn new(entries: Vec<(PyValue, PyValue)>) -> PyDict {
        let by_str = (entries.len() > Self::SCAN).then(Box::default);
        PyDict {
            entries: entries.into_boxed_slice(),
            by_str,
        }
    }

    /// The entries in insertion order.
    pub fn entries(&self) -> &[(PyValue, PyValue)] {
        &self.entries
    }

    /// The value under string key `key` (the first such entry).
    pub fn get_str(&self, key: &str) -> Option<&PyValue> {
        let Some(by_str) = &self.by_str else {
            return self
                .entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v);
        };
        let index = by_str.get_or_init(|| {
            let mut m = HashMap::with_capacity(self.entries.len());
            for (i, (k, _)) in self.entries.iter().enumerate() {
                if let Some(k) = k.as_str() {
                    m.entry(k.into()).or_insert(i);
                }
            }
            m
        });
        index.get(key).map(|&i| &self.entries[i].1)
    }
}

impl std::ops::Deref for PyDict {
    type Target = [(PyValue, PyValue)];
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl PartialEq for PyDict {
    fn eq(&self, other: &PyDict) -> bool {
        self.entries == other.entries
    }
}

impl<'a> IntoIterator for &'a PyDict {
    type Item = &'a (PyValue, PyValue);
    type IntoIter = std::slice::Iter<'a, (PyValue, PyValue)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl From<Vec<(PyValue, PyValue)>> for PyDict {
    fn from(entries: Vec<(PyValue, PyValue)>) -> PyDict {
        PyDict::new(entries)
    }
}

impl PyValue {
    /// Short Python-ish type name for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "None",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) | PyValue::BigInt(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::Set(_) => "set",
            PyValue::FrozenSet(_) => "frozenset",
            PyValue::Global(_) => "global",
            PyValue::Storage(_) => "storage",
            PyValue::Tensor(_) => "tensor",
            PyValue::Object(_) => "object",
        }
    }

    /// True for `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, PyValue::None)
    }

    /// Integer value (bools count, as in Python).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            PyValue::Int(i) => Some(*i),
            PyValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// Float value (ints convert).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyValue::Float(f) => Some(*f),
            PyValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// Boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PyValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// String value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Elements of a list or tuple.
    pub fn as_seq(&self) -> Option<&[PyValue]> {
        match self {
            PyValue::List(v) | PyValue::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// Entries of a dict.
    pub fn as_dict(&self) -> Option<&[(PyValue, PyValue)]> {
        match self {
            PyValue::Dict(d) => Some(d.entries()),
            _ => None,
        }
    }

    /// The tensor, if this is one.
    pub fn as_tensor(&self) -> Option<&TensorRef> {
        match self {
            PyValue::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// `(module, name)` of a bare global or of an object's class.
    pub fn class(&self) -> Option<(&str, &str)> {
        match self {
            PyValue::Global(g) => Some((&g.module, &g.name)),
            PyValue::Object(o) => Some((&o.class.module, &o.class.name)),
            _ => None,
        }
    }

    /// A shape: a tuple/list (incl. `torch.Size`) of non-negative ints.
    pub fn as_shape(&self) -> Option<Vec<u64>> {
        self.as_seq()?
            .iter()
            .map(|d| d.as_int().and_then(|i| u64::try_from(i).ok()))
            .collect()
    }

    /// Value under a string key of a dict, or an attribute in an object's dict state.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(d) => d.get_str(key),
            PyValue::Object(o) => o.state.as_ref()?.get(key),
            _ => None,
        }
    }

    /// Value under an integer key of a dict (e.g. optimizer `state[0]`).
    pub fn get_int(&self, key: i64) -> Option<&PyValue> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| matches!(k, PyValue::Int(i) if *i == key))
            .map(|(_, v)| v)
    }

    /// Visits every tensor in the tree with a dotted trail (`a.b[3]`); stops at the first error.
    pub fn visit_tensors<'s, E>(
        &'s self,
        f: &mut impl FnMut(&str, &'s TensorRef) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut trail = String::new();
        self.visit_inner(&mut trail, f)
    }

    fn visit_inner<'s, E>(
        &'s self,
        trail: &mut String,
        f: &mut impl FnMut(&str, &'s TensorRef) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            PyValue::Tensor(t) => {
                f(trail, t)?;
                if let Some(a) = &t.attrs {
                    a.visit_child(trail, &".attrs", f)?;
                }
            }
            PyValue::List(v) | PyValue::Tuple(v) | PyValue::Set(v) | PyValue::FrozenSet(v) => {
                for (i, x) in v.iter().enumerate() {
                    x.visit_child(trail, &format_args!("[{i}]"), f)?;
                }
            }
            PyValue::Dict(d) => {
                for (k, v) in d {
                    v.visit_child(trail, &KeySeg(k), f)?;
                }
            }
            PyValue::Object(o) => {
                for (i, x) in o.args.iter().enumerate() {
                    x.visit_child(trail, &format_args!(".args[{i}]"), f)?;
                }
                if let Some(s) = &o.state {
                    s.visit_inner(trail, f)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn visit_child<'s, E>(
        &'s self,
        trail: &mut String,
        seg: &dyn std::fmt::Display,
        f: &mut impl FnMut(&str, &'s TensorRef) -> Result<(), E>,
    ) -> Result<(), E> {
        let len = trail.len();
        push_seg(trail, seg);
        let r = self.visit_inner(trail, f);
        trail.truncate(len);
        r
    }
}

/// Displays a dict key as a trail segment: `.name` for strings, `[3]` otherwise.
struct KeySeg<'a>(&'a PyValue);

impl std::fmt::Display for KeySeg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            PyValue::Str(s) => write!(f, ".{s}"),
            PyValue::Int(i) => write!(f, "[{i}]"),
            other => write!(f, "[<{}>]", other.type_name()),
        }
    }
}

/// Appends a segment, dropping a leading '.' at the root.
fn push_seg(trail: &mut String, seg: &dyn std::fmt::Display) {
    use std::fmt::Write;
    let root = trail.is_empty();
    let _ = write!(trail, "{seg}");
    if root && trail.starts_with('.') {
        trail.remove(0);
    }
}

/// A position in a value tree that remembers how it got there, for typed errors naming the file and trail.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    path: &'a Path,
    value: &'a PyValue,
    trail: String,
}

impl<'a> Cursor<'a> {
    /// A cursor at the root of `value`, read from `path`.
    pub fn new(path: &'a Path, value: &'a PyValue) -> Cursor<'a> {
        Cursor {
            path,
            value,
            trail: String::new(),
        }
    }

    /// The value here.
    pub fn value(&self) -> &'a PyValue {
        self.value
    }

    /// The dotted trail from the root (`optimizer_state_dict.state[0].exp_avg`).
    pub fn trail(&self) -> &str {
        &self.trail
    }

    /// The file this tree came from.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    fn child(&self, seg: &dyn std::fmt::Display, value: &'a PyValue) -> Cursor<'a> {
        let mut trail = String::with_capacity(self.trail.len() + 24);
        trail.push_str(&self.trail);
        push_seg(&mut trail, seg);
        Cursor {
            path: self.path,
            value,
            trail,
        }
    }

    fn wrong(&self, expected: &str) -> TorchError {
        TorchError::Format {
            path: self.path.to_path_buf(),
            why: format!(
                "`{}`: expected {expected}, found {}",
                if self.trail.is_empty() {
                    "<root>"
                } else {
                    &self.trail
                },
                self.value.type_name()
            ),
        }
    }

    fn missing(&self, seg: &dyn std::fmt::Display) -> TorchError {
        let mut key = self.trail.clone();
        push_seg(&mut key, seg);
        TorchError::MissingKey {
            path: self.path.to_path_buf(),
            key,
        }
    }

    /// The value under string key `key` (dict key or object attribute), if present.
    pub fn get(&self, key: &str) -> Option<Cursor<'a>> {
        self.value
            .get(key)
            .map(|v| self.child(&format_args!(".{key}"), v))
    }

    /// The value under string key `key`; `MissingKey` when absent, `Format` when this is not a mapping.
    pub fn key(&self, key: &str) -> Result<Cursor<'a>> {
        match self.value {
            PyValue::Dict(_) | PyValue::Object(_) => self
                .get(key)
                .ok_or_else(|| self.missing(&format_args!(".{key}"))),
            _ => Err(self.wrong("dict")),
        }
    }

    /// The value under integer dict key `key`.
    pub fn int_key(&self, key: i64) -> Result<Cursor<'a>> {
        match self.value {
            PyValue::Dict(_) => self
                .value
                .get_int(key)
                .map(|v| self.child(&format_args!("[{key}]"), v))
                .ok_or_else(|| self.missing(&format_args!("[{key}]"))),
            _ => Err(self.wrong("dict")),
        }
    }

    /// Element `i` of a list or tuple.
    pub fn index(&self, i: usize) -> Result<Cursor<'a>> {
        let seq = self
            .value
            .as_seq()
            .ok_or_else(|| self.wrong("list or tuple"))?;
        seq.get(i)
            .map(|v| self.child(&format_args!("[{i}]"), v))
            .ok_or_else(|| self.missing(&format_args!("[{i}]")))
    }

    /// Elements of a list or tuple.
    pub fn items(&self) -> Result<Vec<Cursor<'a>>> {
        let seq = self
            .value
            .as_seq()
            .ok_or_else(|| self.wrong("list or tuple"))?;
        Ok(seq
            .iter()
            .enumerate()
            .map(|(i, v)| self.child(&format_args!("[{i}]"), v))
            .collect())
    }

    /// Entries of a dict: (key, cursor at the value).
    pub fn entries(&self) -> Result<Vec<(&'a PyValue, Cursor<'a>)>> {
        let d = self.value.as_dict().ok_or_else(|| self.wrong("dict"))?;
        Ok(d.iter()
            .map(|(k, v)| (k, self.child(&KeySeg(k), v)))
            .collect())
    }

    /// Entries of a dict whose keys must all be strings.
    pub fn str_entries(&self) -> Result<Vec<(&'a str, Cursor<'a>)>> {
        self.entries()?
            .into_iter()
            .map(|(k, c)| match k.as_str() {
                Some(s) => Ok((s, c)),
                None => Err(c.wrong_key(k)),
            })
            .collect()
    }

    fn wrong_key(&self, k: &PyValue) -> TorchError {
        TorchError::Format {
            path: self.path.to_path_buf(),
            why: format!(
                "`{}`: expected a str key, found {}",
                self.trail,
                k.type_name()
            ),
        }
    }

    /// Number of elements of a list/tuple/dict.
    pub fn len(&self) -> Result<usize> {
        match self.value {
            PyValue::Dict(d) => Ok(d.len()),
            v => v
                .as_seq()
                .map(<[PyValue]>::len)
                .ok_or_else(|| self.wrong("list, tuple or dict")),
        }
    }

    /// True when a list/tuple/dict has no elements.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// True when the value is `None`.
    pub fn is_none(&self) -> bool {
        self.value.is_none()
    }

    /// Integer value.
    pub fn as_int(&self) -> Result<i64> {
        self.value.as_int().ok_or_else(|| self.wrong("int"))
    }

    /// Non-negative integer value.
    pub fn as_u64(&self) -> Result<u64> {
        self.as_int()
            .and_then(|i| u64::try_from(i).map_err(|_| self.wrong("non-negative int")))
    }

    /// Float value (ints convert).
    pub fn as_f64(&self) -> Result<f64> {
        self.value.as_f64().ok_or_else(|| self.wrong("float"))
    }

    /// Boolean value.
    pub fn as_bool(&self) -> Result<bool> {
        self.value.as_bool().ok_or_else(|| self.wrong("bool"))
    }

    /// String value.
    pub fn as_str(&self) -> Result<&'a str> {
        self.value.as_str().ok_or_else(|| self.wrong("str"))
    }

    /// Tensor value.
    pub fn as_tensor(&self) -> Result<&'a TensorRef> {
        self.value.as_tensor().ok_or_else(|| self.wrong("tensor"))
    }

    /// A shape: tuple / list / `torch.Size` of non-negative ints.
    pub fn as_shape(&self) -> Result<Vec<u64>> {
        self.value
            .as_shape()
            .ok_or_else(|| self.wrong("shape (tuple of non-negative ints)"))
    }

    /// `(module, name)` of an object's class or of a bare global.
    pub fn class(&self) -> Result<(&'a str, &'a str)> {
        self.value
            .class()
            .ok_or_else(|| self.wrong("object or global"))
    }
}
