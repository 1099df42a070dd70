//! Protocol-2 pickler emitting the opcodes Python's `pickle` emits for what `torch.save` pickles.
//!
//! Memo behaviour follows CPython: strings, tuples, lists, dicts, globals and REDUCE results get a
//! `BINPUT`; repeated strings and globals are fetched with `BINGET` (strings are memoized by value).

use super::{PtTensor, PtValue, TensorData};
use crate::error::{Result, TorchError};
use std::collections::HashMap;
use std::path::Path;
use uc_schema::DType;

/// Python pickles dict items and list elements in batches of this many (`pickle._BATCHSIZE`).
const BATCH: usize = 1000;
/// Deepest value tree accepted (guards the recursion).
const MAX_DEPTH: usize = 512;

/// One tensor storage to write as `data/<key>` after the pickle.
pub(crate) struct Storage<'a> {
    pub key: String,
    pub label: String,
    pub nbytes: u64,
    pub data: TensorData<'a>,
}

/// A memo key: strings by value, globals by `module.name`.
#[derive(PartialEq, Eq, Hash)]
enum MemoKey {
    Str(String),
    Global(String, String),
}

/// Pickles a value tree into bytes and collects its tensor storages in key order.
pub(crate) struct Pickler<'a, 'p> {
    out: Vec<u8>,
    memo: HashMap<MemoKey, u32>,
    next: u32,
    pub storages: Vec<Storage<'a>>,
    path: &'p Path,
}

impl<'a, 'p> Pickler<'a, 'p> {
    /// A pickler whose errors name `path`.
    pub fn new(path: &'p Path) -> Self {
        Pickler {
            out: Vec::new(),
            memo: HashMap::new(),
            next: 0,
            storages: Vec::new(),
            path,
        }
    }

    /// Pickles `value` as a whole protocol-2 pickle (`PROTO 2 … STOP`) and returns the bytes.
    pub fn dump(mut self, value: PtValue<'a>) -> Result<(Vec<u8>, Vec<Storage<'a>>)> {
        self.out.extend_from_slice(&[0x80, 2]);
        self.save(value, "", 0)?;
        self.out.push(b'.');
        Ok((self.out, self.storages))
    }

    fn err(&self, tensor: &str, why: impl Into<String>) -> TorchError {
        TorchError::BadTensor {
            path: self.path.to_path_buf(),
            tensor: tensor.to_string(),
            why: why.into(),
        }
    }

    fn save(&mut self, value: PtValue<'a>, label: &str, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(TorchError::Format {
                path: self.path.to_path_buf(),
                why: format!("value tree deeper than {MAX_DEPTH} at `{label}`"),
            });
        }
        match value {
            PtValue::None => self.out.push(b'N'),
            PtValue::Bool(b) => self.out.push(if b { 0x88 } else { 0x89 }),
            PtValue::Int(i) => self.int(i),
            PtValue::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            PtValue::Str(s) => self.str(&s)?,
            PtValue::List(items) => {
                self.out.push(b']');
                self.put();
                self.batch(items.into_iter().enumerate(), b'a', b'e', |p, (i, v)| {
                    p.save(v, &child(label, &i.to_string()), depth + 1)
                })?;
            }
            PtValue::Tuple(items) => {
                let items: Vec<(usize, PtValue<'a>)> = items.into_iter().enumerate().collect();
                self.tuple_with(items, |p, (i, v)| {
                    p.save(v, &child(label, &i.to_string()), depth + 1)
                })?;
            }
            PtValue::Dict(items) => {
                self.out.push(b'}');
                self.put();
                self.items(items, label, depth)?;
            }
            PtValue::OrderedDict(items) => {
                self.global("collections", "OrderedDict");
                self.out.extend_from_slice(b")R");
                self.put();
                self.items(items, label, depth)?;
            }
            PtValue::IntDict(items) => {
                self.out.push(b'}');
                self.put();
                self.batch(items.into_iter(), b's', b'u', |p, (k, v)| {
                    p.int(k);
                    p.save(v, &child(label, &k.to_string()), depth + 1)
                })?;
            }
            PtValue::Tensor(t) => self.tensor(t, label)?,
            PtValue::Global { module, name } => {
                self.check_global(&module, &name, label)?;
                self.global(&module, &name);
            }
            PtValue::Object {
                module,
                name,
                state,
            } => {
                // copyreg.__newobj__: the class, `()`, NEWOBJ, memoized; then the state and BUILD.
                self.check_global(&module, &name, label)?;
                self.global(&module, &name);
                self.out.extend_from_slice(b")\x81");
                self.put();
                self.save(*state, label, depth + 1)?;
                self.out.push(b'b');
            }
        }
        Ok(())
    }

    /// `SETITEM`/`SETITEMS` batches of a dict's items.
    fn items(
        &mut self,
        items: Vec<(String, PtValue<'a>)>,
        label: &str,
        depth: usize,
    ) -> Result<()> {
        self.batch(items.into_iter(), b's', b'u', |p, (k, v)| {
            let l = child(label, &k);
            p.str(&k)?;
            p.save(v, &l, depth + 1)
        })
    }

    /// Python's `_batch_appends`/`_batch_setitems`: one item → `one`, more → `MARK … many`.
    fn batch<T>(
        &mut self,
        items: impl ExactSizeIterator<Item = T>,
        one: u8,
        many: u8,
        mut f: impl FnMut(&mut Self, T) -> Result<()>,
    ) -> Result<()> {
        let mut items = items.peekable();
        while items.peek().is_some() {
            let chunk: Vec<T> = items.by_ref().take(BATCH).collect();
            if chunk.len() == 1 {
                for it in chunk {
                    f(self, it)?;
                }
                self.out.push(one);
            } else {
                self.out.push(b'(');
                for it in chunk {
                    f(self, it)?;
                }
                self.out.push(many);
            }
        }
        Ok(())
    }

    /// A tuple as Python writes it: `()` → EMPTY_TUPLE; ≤ 3 items → TUPLEn; else MARK … TUPLE; then memoized.
    fn tuple_with<T>(
        &mut self,
        items: Vec<T>,
        mut f: impl FnMut(&mut Self, T) -> Result<()>,
    ) -> Result<()> {
        let n = items.len();
        if n == 0 {
            self.out.push(b')');
            return Ok(());
        }
        if n > 3 {
            self.out.push(b'(');
        }
        for it in items {
            f(self, it)?;
        }
        self.out.push(match n {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        });
        self.put();
        Ok(())
    }

    fn int_tuple(&mut self, v: &[u64], label: &str) -> Result<()> {
        let ints = v
            .iter()
            .map(|&x| {
                i64::try_from(x).map_err(|_| self.err(label, format!("dimension {x} exceeds i64")))
            })
            .collect::<Result<Vec<i64>>>()?;
        self.tuple_with(ints, |p, i| {
            p.int(i);
            Ok(())
        })
    }

    /// `_rebuild_tensor_v2(persistent_id(('storage', <dtype>Storage, key, 'cpu', numel)), 0, size, stride, requires_grad, OrderedDict())`.
    fn tensor(&mut self, t: PtTensor<'a>, label: &str) -> Result<()> {
        let numel = t
            .numel()
            .ok_or_else(|| self.err(label, "element count overflows u64"))?;
        let nbytes = t
            .nbytes()
            .ok_or_else(|| self.err(label, "byte size overflows u64"))?;
        let numel =
            i64::try_from(numel).map_err(|_| self.err(label, "element count exceeds i64"))?;
        let key = self.storages.len().to_string();
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(b'(');
        // persistent id
        self.out.push(b'(');
        self.str("storage")?;
        self.global("torch", storage_class(t.dtype));
        self.str(&key)?;
        self.str("cpu")?;
        self.int(numel);
        self.out.push(b't');
        self.put();
        self.out.push(b'Q');
        self.int(0);
        self.int_tuple(&t.shape, label)?;
        self.int_tuple(&contiguous_strides(&t.shape), label)?;
        self.out.push(if t.requires_grad { 0x88 } else { 0x89 });
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R");
        self.put();
        self.out.push(b't');
        self.put();
        self.out.push(b'R');
        self.put();
        self.storages.push(Storage {
            key,
            label: label.to_string(),
            nbytes,
            data: t.data,
        });
        Ok(())
    }

    /// BININT1 / BININT2 / BININT / LONG1, as Python chooses them.
    fn int(&mut self, i: i64) {
        if (0..=0xff).contains(&i) {
            self.out.extend_from_slice(&[b'K', i as u8]);
        } else if (0..=0xffff).contains(&i) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(i as u16).to_le_bytes());
        } else if let Ok(v) = i32::try_from(i) {
            self.out.push(b'J');
            self.out.extend_from_slice(&v.to_le_bytes());
        } else {
            let mut b = i.to_le_bytes().to_vec();
            while b.len() > 1 {
                let last = b[b.len() - 1];
                let prev_sign = b[b.len() - 2] & 0x80;
                if (last == 0 && prev_sign == 0) || (last == 0xff && prev_sign != 0) {
                    b.pop();
                } else {
                    break;
                }
            }
            self.out.extend_from_slice(&[0x8a, b.len() as u8]);
            self.out.extend_from_slice(&b);
        }
    }

    /// BINUNICODE (memoized by value).
    fn str(&mut self, s: &str) -> Result<()> {
        if let Some(&i) = self.memo.get(&MemoKey::Str(s.to_string())) {
            self.get(i);
            return Ok(());
        }
        let n = u32::try_from(s.len()).map_err(|_| TorchError::Format {
            path: self.path.to_path_buf(),
            why: "string longer than 4 GiB".into(),
        })?;
        self.out.push(b'X');
        self.out.extend_from_slice(&n.to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        let i = self.put();
        self.memo.insert(MemoKey::Str(s.to_string()), i);
        Ok(())
    }

    /// A GLOBAL's module and name must be dotted identifiers (a newline would end them early).
    fn check_global(&self, module: &str, name: &str, label: &str) -> Result<()> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|p| {
                    !p.is_empty()
                        && !p.starts_with(|c: char| c.is_ascii_digit())
                        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        };
        if ok(module) && ok(name) {
            return Ok(());
        }
        Err(self.err(
            label,
            format!("`{module}.{name}` is not a Python global name"),
        ))
    }

    /// GLOBAL `module\nname\n` (memoized).
    fn global(&mut self, module: &str, name: &str) {
        let key = MemoKey::Global(module.to_string(), name.to_string());
        if let Some(&i) = self.memo.get(&key) {
            self.get(i);
            return;
        }
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let i = self.put();
        self.memo.insert(key, i);
    }

    /// Memoizes the object on top of the stack (BINPUT / LONG_BINPUT); returns its index.
    fn put(&mut self) -> u32 {
        let i = self.next;
        self.next += 1;
        if let Ok(b) = u8::try_from(i) {
            self.out.extend_from_slice(&[b'q', b]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
        i
    }

    /// BINGET / LONG_BINGET.
    fn get(&mut self, i: u32) {
        if let Ok(b) = u8::try_from(i) {
            self.out.extend_from_slice(&[b'h', b]);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }
}

/// `a.b` label of a child value, for error messages.
fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The legacy typed-storage class torch pickles for a dtype.
pub(crate) fn storage_class(d: DType) -> &'static str {
    match d {
        DType::F64 => "DoubleStorage",
        DType::F32 => "FloatStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::I8 => "CharStorage",
        DType::U8 => "ByteStorage",
        DType::Bool => "BoolStorage",
    }
}

/// Row-major strides in elements, as torch computes them (a size-0 dim counts as 1).
pub(crate) fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    let mut acc = 1u64;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc = acc.saturating_mul(shape[i].max(1));
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long1(i: i64) -> Vec<u8> {
        let mut p = Pickler::new(Path::new("t"));
        p.int(i);
        p.out
    }

    #[test]
    fn ints_like_python() {
        assert_eq!(long1(5), vec![b'K', 5]);
        assert_eq!(long1(2048), vec![b'M', 0, 8]);
        assert_eq!(long1(-1), vec![b'J', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(long1(1 << 31), vec![0x8a, 5, 0, 0, 0, 0x80, 0]);
        assert_eq!(
            long1(-(1 << 31) - 1),
            vec![0x8a, 5, 0xff, 0xff, 0xff, 0x7f, 0xff]
        );
        assert_eq!(
            long1(i64::MAX),
            vec![0x8a, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]
        );
        assert_eq!(contiguous_strides(&[4, 16, 32]), vec![512, 32, 1]);
        assert_eq!(contiguous_strides(&[3, 0, 2]), vec![2, 2, 1]);
    }
}
