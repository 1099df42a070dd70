//! The opcode loop: a stack machine over an arena of objects (so memo sharing and in-place
//! filling behave as in Python) that becomes a [`PyValue`] tree at STOP — values referenced once
//! moved out of the arena, shared ones copied per reference within a work budget.

use super::allow::{storage_dtype, Allowlist};
use super::value::{PyGlobal, PyObject, PyValue, StorageRef, TensorRef};
use super::MAX_DEPTH;
use crate::error::{Result, TorchError};
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

/// A stack/memo slot: small scalars and globals inline, everything else an arena index (cheap to copy).
#[derive(Debug, Clone, Copy)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Index into [`Machine::globals`] (a class is named once per instance in a memo-less pickle).
    Global(usize),
    Obj(usize),
}

/// An arena object; containers are mutable so later SETITEMS/APPENDS/BUILD reach every reference.
#[derive(Debug)]
enum Obj {
    Val(PyValue),
    List(Vec<Node>),
    Tuple(Vec<Node>),
    Dict(Vec<(Node, Node)>),
    Set(Vec<Node>),
    FrozenSet(Vec<Node>),
    Object(Box<ObjInstance>),
    /// Moved into the result tree by [`Machine::move_out`] (never read again).
    Taken,
}

/// The memo: ids as picklers write them (0, 1, 2, …) in a vector, a far-off id in a map (so a
/// hostile id cannot make the vector huge).
#[derive(Default)]
struct Memo {
    dense: Vec<Option<Node>>,
    far: HashMap<u64, Node>,
    /// Distinct ids defined (what MEMOIZE numbers the next entry).
    len: usize,
}

impl Memo {
    /// Ids this far past the count of defined ids go to the map: the vector stays within
    /// `len + REACH` slots, so no run of PUTs can make it grow faster than one slot per PUT.
    const REACH: u64 = 1024;

    fn insert(&mut self, i: u64, n: Node) {
        let new = if i < self.len as u64 + Self::REACH {
            let i = i as usize;
            if i >= self.dense.len() {
                self.dense.resize(i + 1, None);
            }
            let was_far = !self.far.is_empty() && self.far.remove(&(i as u64)).is_some();
            self.dense[i].replace(n).is_none() && !was_far
        } else {
            self.far.insert(i, n).is_none()
        };
        self.len += usize::from(new);
    }

    fn get(&self, i: u64) -> Option<Node> {
        let dense = usize::try_from(i).ok().and_then(|i| *self.dense.get(i)?);
        dense.or_else(|| self.far.get(&i).copied())
    }
}

/// What APPENDS, ADDITEMS and SETITEMS add to.
#[derive(Debug, Clone, Copy)]
enum Container {
    List,
    Set,
    Dict,
}

/// An instance of an allowlisted class in the arena (boxed: arenas hold 10⁷ objects, few of them instances).
#[derive(Debug)]
struct ObjInstance {
    class: Arc<PyGlobal>,
    args: Vec<Node>,
    state: Option<Node>,
}

/// Interpreter state for one pickle stream.
pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    allow: &'a Allowlist,
    path: &'a Path,
    stack: Vec<Node>,
    marks: Vec<usize>,
    memo: Memo,
    arena: Vec<Obj>,
    /// Each global met so far, once (an allowlist is a few dozen names; a pickle without a memo
    /// names a class again for every instance), and whether the allowlist passed it: layouts named
    /// in data are here too, as values.
    globals: Vec<(Arc<PyGlobal>, bool)>,
    /// Work left for building values (guards against memo-sharing blowups).
    budget: Cell<u64>,
}

impl<'a> Machine<'a> {
    /// A machine over `data`; the resolution budget scales with the input size.
    pub(super) fn new(data: &'a [u8], allow: &'a Allowlist, path: &'a Path) -> Machine<'a> {
        let budget = (1u64 << 20).saturating_add((data.len() as u64).saturating_mul(16));
        Machine {
            data,
            pos: 0,
            op_pos: 0,
            allow,
            path,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Memo::default(),
            arena: Vec::new(),
            globals: Vec::new(),
            budget: Cell::new(budget),
        }
    }

    fn bad(&self, why: impl Into<String>) -> TorchError {
        TorchError::BadPickle {
            path: self.path.to_path_buf(),
            offset: self.op_pos as u64,
            why: why.into(),
        }
    }

    fn truncated(&self, what: &str) -> TorchError {
        TorchError::Truncated {
            path: self.path.to_path_buf(),
            why: format!(
                "pickle stream ends at byte {} inside {what} (opcode at byte {})",
                self.data.len(),
                self.op_pos
            ),
        }
    }

    // ---- reading ----------------------------------------------------------------------------

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.truncated(what)),
        }
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.arr::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    /// Reads `n` payload bytes whose count came from the stream: checked before any allocation.
    fn payload(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(TorchError::Truncated {
                path: self.path.to_path_buf(),
                why: format!(
                    "{what} at byte {} claims {n} bytes but only {left} remain",
                    self.op_pos
                ),
            });
        }
        self.take(n as usize, what)
    }

    /// A newline-terminated argument of a text opcode (without the newline).
    fn line(&mut self, what: &str) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(self.truncated(what)),
        }
    }

    fn line_str(&mut self, what: &str) -> Result<&'a str> {
        let l = self.line(what)?;
        std::str::from_utf8(l).map_err(|_| self.bad(format!("{what}: argument is not UTF-8")))
    }

    fn utf8(&self, b: &[u8], what: &str) -> Result<String> {
        String::from_utf8(b.to_vec()).map_err(|_| self.bad(format!("{what}: invalid UTF-8")))
    }

    // ---- stack ------------------------------------------------------------------------------

    fn push(&mut self, n: Node) {
        self.stack.push(n);
    }

    fn alloc(&mut self, o: Obj) -> Node {
        self.arena.push(o);
        Node::Obj(self.arena.len() - 1)
    }

    fn push_obj(&mut self, o: Obj) {
        let n = self.alloc(o);
        self.push(n);
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Node> {
        if self.stack.len() <= self.floor() {
            return Err(self.bad("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.bad("stack underflow"))
    }

    fn top(&self) -> Result<Node> {
        if self.stack.len() <= self.floor() {
            return Err(self.bad("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.bad("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Node>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.bad("no MARK on the stack"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn str_of(&self, n: Node) -> Option<&str> {
        match self.obj(n) {
            Some(Obj::Val(PyValue::Str(s))) => Some(s),
            _ => None,
        }
    }

    // ---- the loop ---------------------------------------------------------------------------

    /// Runs to STOP and returns the resolved top of the stack.
    pub(super) fn run(mut self) -> Result<PyValue> {
        loop {
            self.op_pos = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                return Err(TorchError::Truncated {
                    path: self.path.to_path_buf(),
                    why: format!(
                        "pickle stream ends at byte {} without STOP",
                        self.data.len()
                    ),
                });
            };
            self.pos += 1;
            if op == b'.' {
                let top = self.pop()?;
                return self.resolve_root(top);
            }
            self.step(op)?;
        }
    }

    /// Executes one opcode (everything but STOP).
    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => {
                let p = self.u8("PROTO")?;
                if p > 5 {
                    return Err(self.bad(format!("unsupported pickle protocol {p}")));
                }
            }
            0x95 => {
                let n = self.u64("FRAME")?;
                if n > (self.data.len() - self.pos) as u64 {
                    return Err(self.truncated("FRAME"));
                }
            }
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.push(Node::None),
            0x88 => self.push(Node::Bool(true)),
            0x89 => self.push(Node::Bool(false)),
            b'J' => {
                let v = self.i32("BININT")?;
                self.push(Node::Int(v.into()));
            }
            b'K' => {
                let v = self.u8("BININT1")?;
                self.push(Node::Int(v.into()));
            }
            b'M' => {
                let v = self.u16("BININT2")?;
                self.push(Node::Int(v.into()));
            }
            0x8a => {
                let n = self.u8("LONG1")?;
                let b = self.payload(n.into(), "LONG1")?;
                let node = self.long(b);
                self.push(node);
            }
            0x8b => {
                let n = self.i32("LONG4")?;
                let n = u64::try_from(n).map_err(|_| self.bad("LONG4: negative length"))?;
                let b = self.payload(n, "LONG4")?;
                let node = self.long(b);
                self.push(node);
            }
            b'I' => {
                let l = self.line_str("INT")?;
                let node = match l {
                    "00" => Node::Bool(false),
                    "01" => Node::Bool(true),
                    s => Node::Int(
                        s.trim()
                            .parse()
                            .map_err(|_| self.bad(format!("INT: bad value {s:?}")))?,
                    ),
                };
                self.push(node);
            }
            b'L' => {
                let l = self.line_str("LONG")?;
                let s = l.trim().trim_end_matches('L');
                let v: i64 = s
                    .parse()
                    .map_err(|_| self.bad(format!("LONG: unsupported value {s:?}")))?;
                self.push(Node::Int(v));
            }
            b'F' => {
                let l = self.line_str("FLOAT")?;
                let v: f64 = l
                    .trim()
                    .parse()
                    .map_err(|_| self.bad(format!("FLOAT: bad value {l:?}")))?;
                self.push(Node::Float(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.arr("BINFLOAT")?);
                self.push(Node::Float(v));
            }
            b'X' | 0x8c | 0x8d => {
                let (n, what) = match op {
                    b'X' => (u64::from(self.u32("BINUNICODE")?), "BINUNICODE"),
                    0x8c => (u64::from(self.u8("SHORT_BINUNICODE")?), "SHORT_BINUNICODE"),
                    _ => (self.u64("BINUNICODE8")?, "BINUNICODE8"),
                };
                let b = self.payload(n, what)?;
                let s = self.utf8(b, what)?;
                self.push_obj(Obj::Val(PyValue::Str(s)));
            }
            b'V' => {
                let l = self.line("UNICODE")?;
                let s = raw_unicode_escape(l).ok_or_else(|| self.bad("UNICODE: bad escape"))?;
                self.push_obj(Obj::Val(PyValue::Str(s)));
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let (n, what) = match op {
                    b'B' => (u64::from(self.u32("BINBYTES")?), "BINBYTES"),
                    b'C' => (u64::from(self.u8("SHORT_BINBYTES")?), "SHORT_BINBYTES"),
                    0x8e => (self.u64("BINBYTES8")?, "BINBYTES8"),
                    _ => (self.u64("BYTEARRAY8")?, "BYTEARRAY8"),
                };
                let b = self.payload(n, what)?;
                self.push_obj(Obj::Val(PyValue::Bytes(b.to_vec())));
            }
            b'T' | b'U' => {
                let n = if op == b'T' {
                    let n = self.i32("BINSTRING")?;
                    u64::try_from(n).map_err(|_| self.bad("BINSTRING: negative length"))?
                } else {
                    u64::from(self.u8("SHORT_BINSTRING")?)
                };
                let b = self.payload(n, "BINSTRING")?;
                self.push_obj(Obj::Val(str_or_bytes(b.to_vec())));
            }
            b'S' => {
                let l = self.line("STRING")?;
                let b = unquote(l).ok_or_else(|| self.bad("STRING: bad quoted literal"))?;
                self.push_obj(Obj::Val(str_or_bytes(b)));
            }
            b')' => self.push_obj(Obj::Tuple(Vec::new())),
            b']' => self.push_obj(Obj::List(Vec::new())),
            b'}' => self.push_obj(Obj::Dict(Vec::new())),
            0x8f => self.push_obj(Obj::Set(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < self.floor() + n {
                    return Err(self.bad("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_obj(Obj::Tuple(items));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::List(items));
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push_obj(Obj::Dict(pairs));
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::FrozenSet(items));
            }
            b'a' => {
                let v = self.pop()?;
                let t = self.top()?;
                self.list_mut(t, "APPEND")?.push(v);
            }
            b'e' => self.extend_from_mark(Container::List)?,
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let t = self.top()?;
                self.dict_mut(t, "SETITEM")?.push((k, v));
            }
            b'u' => self.extend_from_mark(Container::Dict)?,
            0x90 => self.extend_from_mark(Container::Set)?,
            b'0' => {
                if self.stack.len() == self.floor() && !self.marks.is_empty() {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let t = self.top()?;
                self.push(t);
            }
            b'q' => {
                let i = self.u8("BINPUT")?;
                self.put(i.into())?;
            }
            b'r' => {
                let i = self.u32("LONG_BINPUT")?;
                self.put(i.into())?;
            }
            b'p' => {
                let l = self.line_str("PUT")?;
                let i = l.trim().parse().map_err(|_| self.bad("PUT: bad index"))?;
                self.put(i)?;
            }
            0x94 => {
                let i = self.memo.len as u64;
                self.put(i)?;
            }
            b'h' => {
                let i = self.u8("BINGET")?;
                self.get(i.into())?;
            }
            b'j' => {
                let i = self.u32("LONG_BINGET")?;
                self.get(i.into())?;
            }
            b'g' => {
                let l = self.line_str("GET")?;
                let i = l.trim().parse().map_err(|_| self.bad("GET: bad index"))?;
                self.get(i)?;
            }
            b'c' => {
                let module = self.line_str("GLOBAL")?;
                let name = self.line_str("GLOBAL")?;
                self.global(module, name)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.str_of(module), self.str_of(name)) else {
                    return Err(self.bad("STACK_GLOBAL: module and name must be str"));
                };
                let (m, n) = (m.to_owned(), n.to_owned());
                self.global(&m, &n)?;
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let args = self.tuple_items(args, "REDUCE")?;
                let node = self.call(callable, args, "REDUCE")?;
                self.push(node);
            }
            0x81 => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_items(args, "NEWOBJ")?;
                let node = self.call(cls, args, "NEWOBJ")?;
                self.push(node);
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let empty = matches!(self.obj(kwargs), Some(Obj::Dict(d)) if d.is_empty());
                if !empty {
                    return Err(self.bad("NEWOBJ_EX with keyword arguments is not supported"));
                }
                let args = self.tuple_items(args, "NEWOBJ_EX")?;
                let node = self.call(cls, args, "NEWOBJ_EX")?;
                self.push(node);
            }
            b'i' => {
                let module = self.line_str("INST")?;
                let name = self.line_str("INST")?;
                let args = self.pop_mark()?;
                self.global(module, name)?;
                let cls = self.pop()?;
                let node = self.call(cls, args, "INST")?;
                self.push(node);
            }
            b'o' => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(self.bad("OBJ without a class"));
                }
                let cls = items.remove(0);
                let node = self.call(cls, items, "OBJ")?;
                self.push(node);
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let node = self.persistent(pid)?;
                self.push(node);
            }
            b'P' => return Err(self.bad("text PERSID is not supported")),
            0x82..=0x84 => {
                return Err(self.bad("EXT opcodes (copyreg extension registry) are not supported"))
            }
            0x97 | 0x98 => {
                return Err(self.bad("out-of-band buffers (NEXT_BUFFER) are not supported"))
            }
            other => return Err(self.bad(format!("unknown opcode 0x{other:02x}"))),
        }
        Ok(())
    }

    // ---- helpers for opcodes ----------------------------------------------------------------

    fn long(&mut self, b: &[u8]) -> Node {
        if b.is_empty() {
            return Node::Int(0);
        }
        let neg = b[b.len() - 1] & 0x80 != 0;
        let fill = if neg { 0xff } else { 0 };
        // Trim redundant sign bytes, then fit into i64 if possible.
        let mut n = b.len();
        while n > 1 && b[n - 1] == fill && (b[n - 2] & 0x80 != 0) == neg {
            n -= 1;
        }
        if n <= 8 {
            let mut a = [fill; 8];
            a[..n].copy_from_slice(&b[..n]);
            Node::Int(i64::from_le_bytes(a))
        } else {
            self.alloc(Obj::Val(PyValue::BigInt(b[..n].to_vec())))
        }
    }

    /// APPENDS / SETITEMS / ADDITEMS: moves the items above the last MARK into the list, dict or
    /// set below it, straight from the stack (these run once per container of a large pickle).
    fn extend_from_mark(&mut self, into: Container) -> Result<()> {
        let (op, kind) = match into {
            Container::List => ("APPENDS", "list"),
            Container::Set => ("ADDITEMS", "set"),
            Container::Dict => ("SETITEMS", "dict"),
        };
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.bad("no MARK on the stack"))?
            .min(self.stack.len());
        if m <= self.floor() {
            return Err(self.bad("stack underflow"));
        }
        let n = self.stack.len() - m;
        let target = match self.stack[m - 1] {
            Node::Obj(i) => self.arena.get_mut(i),
            _ => None,
        };
        let mut items = self.stack.drain(m..);
        match (into, target) {
            (Container::List, Some(Obj::List(l))) => l.extend(items),
            (Container::Set, Some(Obj::Set(s))) => s.extend(items),
            (Container::Dict, Some(Obj::Dict(d))) if n.is_multiple_of(2) => {
                d.reserve(n / 2);
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    d.push((k, v));
                }
            }
            (Container::Dict, Some(Obj::Dict(_))) => {
                drop(items);
                return Err(self.bad("odd number of items for a dict"));
            }
            _ => {
                drop(items);
                return Err(self.bad(format!("{op} on a non-{kind}")));
            }
        }
        Ok(())
    }

    fn pairs(&self, items: Vec<Node>) -> Result<Vec<(Node, Node)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("odd number of items for a dict"));
        }
        let mut it = items.into_iter();
        let mut out = Vec::with_capacity(it.len() / 2);
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn list_mut(&mut self, t: Node, what: &str) -> Result<&mut Vec<Node>> {
        let bad = self.bad(format!("{what} on a non-list"));
        match self.obj_mut_opt(t) {
            Some(Obj::List(l)) => Ok(l),
            _ => Err(bad),
        }
    }

    fn dict_mut(&mut self, t: Node, what: &str) -> Result<&mut Vec<(Node, Node)>> {
        let bad = self.bad(format!("{what} on a non-dict"));
        match self.obj_mut_opt(t) {
            Some(Obj::Dict(d)) => Ok(d),
            _ => Err(bad),
        }
    }

    fn put(&mut self, i: u64) -> Result<()> {
        let t = self.top()?;
        self.memo.insert(i, t);
        Ok(())
    }

    fn get(&mut self, i: u64) -> Result<()> {
        let n = self
            .memo
            .get(i)
            .ok_or_else(|| self.bad(format!("memo index {i} is not defined")))?;
        self.push(n);
        Ok(())
    }

    /// GLOBAL / STACK_GLOBAL / INST: pushes `module.name` when it is allowlisted.
    fn global(&mut self, module: &str, name: &str) -> Result<()> {
        let i = self.interned(module, name);
        if !self.globals[i].1 {
            if !self.allow.allows(module, name) {
                return Err(TorchError::DisallowedGlobal {
                    path: self.path.to_path_buf(),
                    module: module.to_owned(),
                    name: name.to_owned(),
                });
            }
            self.globals[i].1 = true;
        }
        self.push(Node::Global(i));
        Ok(())
    }

    /// The index of `module.name` in [`Machine::globals`] (added, not yet allowed, on first use).
    fn interned(&mut self, module: &str, name: &str) -> usize {
        // Names first: they tell the classes of one module apart at the first bytes.
        let known = self
            .globals
            .iter()
            .position(|(g, _)| g.name == name && g.module == module);
        known.unwrap_or_else(|| {
            let g = PyGlobal {
                module: module.to_owned(),
                name: name.to_owned(),
            };
            self.globals.push((Arc::new(g), false));
            self.globals.len() - 1
        })
    }

    fn tuple_items(&self, n: Node, what: &str) -> Result<Vec<Node>> {
        match self.obj(n) {
            Some(Obj::Tuple(t)) => Ok(t.clone()),
            _ => Err(self.bad(format!("{what}: arguments are not a tuple"))),
        }
    }

    /// The global at `n` and whether the allowlist passed it.
    fn global_of(&self, n: Node) -> Option<(Arc<PyGlobal>, bool)> {
        match n {
            Node::Global(i) => self.globals.get(i).cloned(),
            _ => None,
        }
    }

    /// REDUCE / NEWOBJ / INST / OBJ of an allowlisted global, interpreted as data.
    fn call(&mut self, callable: Node, args: Vec<Node>, what: &str) -> Result<Node> {
        let (class, allowed) = self
            .global_of(callable)
            .ok_or_else(|| self.bad(format!("{what}: callable is not a global")))?;
        if !allowed {
            // A layout named in data (`_get_layout`) is a value, never a class to instantiate.
            return Err(TorchError::DisallowedGlobal {
                path: self.path.to_path_buf(),
                module: class.module.clone(),
                name: class.name.clone(),
            });
        }
        match (class.module.as_str(), class.name.as_str()) {
            ("collections", "OrderedDict") => {
                let args = self.resolve_all(&args)?;
                let pairs = match args.as_slice() {
                    [] => Vec::new(),
                    [PyValue::List(items) | PyValue::Tuple(items)] => {
                        let mut out = Vec::with_capacity(items.len());
                        for it in items {
                            match it.as_seq() {
                                Some([k, v]) => {
                                    let (k, v) = (self.intern(k.clone()), self.intern(v.clone()));
                                    out.push((k, v));
                                }
                                _ => return Err(self.bad("OrderedDict: items must be pairs")),
                            }
                        }
                        out
                    }
                    [PyValue::Dict(d)] => d
                        .iter()
                        .map(|(k, v)| (self.intern(k.clone()), self.intern(v.clone())))
                        .collect(),
                    _ => return Err(self.bad("OrderedDict: unsupported arguments")),
                };
                Ok(self.alloc(Obj::Dict(pairs)))
            }
            ("torch", "Size") => {
                // A tuple is immutable: the Size is that tuple (no copy; 10⁶ of them in a `.metadata`).
                if let [n @ Node::Obj(_)] = args.as_slice() {
                    if matches!(self.obj(*n), Some(Obj::Tuple(_))) {
                        return Ok(*n);
                    }
                }
                let args = self.resolve_all(&args)?;
                match args.as_slice() {
                    [] => Ok(self.alloc(Obj::Tuple(Vec::new()))),
                    [PyValue::Tuple(d) | PyValue::List(d)] => {
                        let v = PyValue::Tuple(d.clone());
                        Ok(self.intern(v))
                    }
                    _ => Err(self.bad("torch.Size: expected one tuple argument")),
                }
            }
            ("deepspeed.runtime.zero.config", "ZeroStageEnum") => {
                let args = self.resolve_all(&args)?;
                match args.as_slice() {
                    [PyValue::Int(i)] => Ok(Node::Int(*i)),
                    _ => Err(self.bad("ZeroStageEnum: expected one int argument")),
                }
            }
            ("torch.serialization", "_get_layout") => {
                let args = self.resolve_all(&args)?;
                match args.as_slice() {
                    [PyValue::Str(s)] => {
                        let (m, n) = s.rsplit_once('.').unwrap_or(("torch", s.as_str()));
                        Ok(Node::Global(self.interned(m, n)))
                    }
                    _ => Err(self.bad("_get_layout: expected one str argument")),
                }
            }
            (m, n) if is_tensor_rebuilder(m, n) => {
                let args = self.resolve_all(&args)?;
                let t = self.rebuild(m, n, &args)?;
                Ok(self.alloc(Obj::Val(PyValue::Tensor(Box::new(t)))))
            }
            _ => Ok(self.alloc(Obj::Object(Box::new(ObjInstance {
                class,
                args,
                state: None,
            })))),
        }
    }

    /// Applies one of the torch tensor rebuild functions to resolved arguments.
    fn rebuild(&self, module: &str, name: &str, args: &[PyValue]) -> Result<TensorRef> {
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                self.rebuild_tensor(args, name)
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => {
                let mut t = match args.first() {
                    Some(PyValue::Tensor(t)) => (**t).clone(),
                    _ => return Err(self.bad(format!("{name}: first argument is not a tensor"))),
                };
                t.requires_grad = args.get(1).and_then(PyValue::as_bool).unwrap_or(false);
                if let Some(state) = args.get(3).filter(|s| !is_empty_state(s)) {
                    t.attrs = Some(Box::new(state.clone()));
                }
                Ok(t)
            }
            _ => {
                // torch._tensor._rebuild_from_type_v2(func, new_type, args, state)
                let [func, _new_type, fargs, state] = args else {
                    return Err(self.bad("_rebuild_from_type_v2: expected 4 arguments"));
                };
                let (fm, fname) = match func {
                    PyValue::Global(g) if is_tensor_rebuilder(&g.module, &g.name) => {
                        (g.module.as_str(), g.name.as_str())
                    }
                    _ => {
                        return Err(self
                            .bad("_rebuild_from_type_v2: func is not a tensor rebuild function"))
                    }
                };
                if fname == "_rebuild_from_type_v2" {
                    return Err(self.bad("_rebuild_from_type_v2: nested rebuild is not supported"));
                }
                let fargs = fargs
                    .as_seq()
                    .ok_or_else(|| self.bad("_rebuild_from_type_v2: args is not a tuple"))?;
                let mut t = self.rebuild(fm, fname, fargs)?;
                if !is_empty_state(state) {
                    t.attrs = Some(Box::new(state.clone()));
                }
                Ok(t)
            }
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, ...)`.
    fn rebuild_tensor(&self, args: &[PyValue], name: &str) -> Result<TensorRef> {
        let [storage, offset, size, stride, rest @ ..] = args else {
            return Err(self.bad(format!("{name}: expected at least 4 arguments")));
        };
        let PyValue::Storage(s) = storage else {
            return Err(self.bad(format!(
                "{name}: first argument is a {}, not a storage",
                storage.type_name()
            )));
        };
        let offset = offset
            .as_int()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| self.bad(format!("{name}: storage offset is not a non-negative int")))?;
        let shape = size
            .as_shape()
            .ok_or_else(|| self.bad(format!("{name}: size is not a shape")))?;
        let stride = stride
            .as_shape()
            .ok_or_else(|| self.bad(format!("{name}: stride is not a shape")))?;
        if shape.len() != stride.len() {
            return Err(self.bad(format!(
                "{name}: size has {} dims but stride {}",
                shape.len(),
                stride.len()
            )));
        }
        if shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .is_none()
        {
            return Err(self.bad(format!("{name}: element count overflows")));
        }
        let requires_grad = rest.first().and_then(PyValue::as_bool).unwrap_or(false);
        Ok(TensorRef {
            storage: s.key.clone(),
            dtype: s.dtype,
            storage_numel: s.numel,
            offset,
            shape,
            stride,
            requires_grad,
            attrs: None,
        })
    }

    /// BUILD: sets an object's state (a second dict state merges into a new dict, like
    /// `__dict__.update`); tensors keep it as attrs; dict targets (OrderedDict attrs) drop it.
    fn build(&mut self, target: Node, state: Node) -> Result<()> {
        enum Act {
            Set,
            Merge(Vec<(Node, Node)>),
            Drop,
            Tensor,
        }
        let act = match self.obj(target) {
            Some(Obj::Object(o)) => match o.state {
                Some(old) => match (self.dict_items(old), self.dict_items(state)) {
                    (Some(mut merged), Some(new)) => {
                        merged.extend(new);
                        Act::Merge(merged)
                    }
                    _ => Act::Set,
                },
                None => Act::Set,
            },
            Some(Obj::Dict(_)) => Act::Drop,
            Some(Obj::Val(PyValue::Tensor(_))) => Act::Tensor,
            Some(o) => return Err(self.bad(format!("BUILD on a {} (no state)", obj_kind(o)))),
            None if matches!(target, Node::Global(_)) => {
                return Err(self.bad("BUILD on a global (no state)"))
            }
            None => return Err(self.bad("BUILD on a scalar")),
        };
        let new_state = match act {
            Act::Drop => return Ok(()),
            Act::Tensor => {
                let v = self.resolve(state, 0)?;
                if let Some(Obj::Val(PyValue::Tensor(t))) = self.obj_mut_opt(target) {
                    t.attrs = (!is_empty_state(&v)).then(|| Box::new(v));
                }
                return Ok(());
            }
            Act::Set => state,
            Act::Merge(items) => self.alloc(Obj::Dict(items)),
        };
        if let Some(Obj::Object(o)) = self.obj_mut_opt(target) {
            o.state = Some(new_state);
        }
        Ok(())
    }

    fn obj(&self, n: Node) -> Option<&Obj> {
        match n {
            Node::Obj(i) => self.arena.get(i),
            _ => None,
        }
    }

    fn obj_mut_opt(&mut self, n: Node) -> Option<&mut Obj> {
        match n {
            Node::Obj(i) => self.arena.get_mut(i),
            _ => None,
        }
    }

    fn dict_items(&self, n: Node) -> Option<Vec<(Node, Node)>> {
        match self.obj(n) {
            Some(Obj::Dict(d)) => Some(d.clone()),
            _ => None,
        }
    }

    /// BINPERSID `('storage', torch.<T>Storage, key, location, numel)` → a storage reference.
    fn persistent(&mut self, pid: Node) -> Result<Node> {
        let v = self.resolve(pid, 0)?;
        let bad = || self.bad(format!("unsupported persistent id {}", short(&v)));
        let Some([PyValue::Str(tag), PyValue::Global(class), key, PyValue::Str(location), numel]) =
            v.as_seq()
        else {
            return Err(bad());
        };
        if tag != "storage" {
            return Err(bad());
        }
        let dtype = storage_dtype(&class.module, &class.name).ok_or_else(|| {
            self.bad(format!(
                "persistent id names unknown storage type {}.{}",
                class.module, class.name
            ))
        })?;
        let key = match key {
            PyValue::Str(s) => s.clone(),
            PyValue::Int(i) => i.to_string(),
            _ => return Err(bad()),
        };
        let numel = numel
            .as_int()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(bad)?;
        let s = StorageRef {
            key,
            dtype,
            location: location.clone(),
            numel,
        };
        Ok(self.alloc(Obj::Val(PyValue::Storage(Box::new(s)))))
    }

    /// Puts an already-built value into the arena (scalars inline).
    fn intern(&mut self, v: PyValue) -> Node {
        match v {
            PyValue::None => Node::None,
            PyValue::Bool(b) => Node::Bool(b),
            PyValue::Int(i) => Node::Int(i),
            PyValue::Float(f) => Node::Float(f),
            other => self.alloc(Obj::Val(other)),
        }
    }

    // ---- resolution -------------------------------------------------------------------------

    fn spend(&self, n: u64) -> Result<()> {
        let left = self.budget.get();
        if n > left {
            return Err(
                self.bad("object graph too large (shared references expand beyond the size limit)")
            );
        }
        self.budget.set(left - n);
        Ok(())
    }

    /// Refuses nesting past [`MAX_DEPTH`] (a recursive structure gets there too).
    fn check_depth(&self, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.bad(format!(
                "nesting deeper than {MAX_DEPTH} (or a recursive structure)"
            )));
        }
        Ok(())
    }

    fn resolve_all(&self, items: &[Node]) -> Result<Vec<PyValue>> {
        items.iter().map(|n| self.resolve(*n, 1)).collect()
    }

    /// Turns a node into an owned value tree, bounded in depth and total work.
    /// Kept lean (one small frame per nesting level) so deep input cannot exhaust the stack.
    fn resolve(&self, n: Node, depth: usize) -> Result<PyValue> {
        self.spend(1)?;
        let i = match n {
            Node::None => return Ok(PyValue::None),
            Node::Bool(b) => return Ok(PyValue::Bool(b)),
            Node::Int(i) => return Ok(PyValue::Int(i)),
            Node::Float(f) => return Ok(PyValue::Float(f)),
            Node::Global(g) => {
                return self
                    .globals
                    .get(g)
                    .map(|(g, _)| PyValue::Global(g.clone()))
                    .ok_or_else(|| self.bad("internal: dangling global"))
            }
            Node::Obj(i) => i,
        };
        self.check_depth(depth)?;
        match self.arena.get(i) {
            Some(Obj::Val(v)) => {
                self.spend(approx_size(v))?;
                Ok(v.clone())
            }
            Some(Obj::List(v)) => self.resolve_seq(v, depth).map(PyValue::List),
            Some(Obj::Tuple(v)) => self.resolve_seq(v, depth).map(PyValue::Tuple),
            Some(Obj::Set(v)) => self.resolve_seq(v, depth).map(PyValue::Set),
            Some(Obj::FrozenSet(v)) => self.resolve_seq(v, depth).map(PyValue::FrozenSet),
            Some(Obj::Dict(d)) => self.resolve_dict(d, depth),
            Some(Obj::Object(_)) => self.resolve_object(i, depth),
            Some(Obj::Taken) => Err(self.bad("internal: a moved value is read again")),
            None => Err(self.bad("internal: dangling object")),
        }
    }

    fn resolve_seq(&self, v: &[Node], depth: usize) -> Result<Vec<PyValue>> {
        let mut out = Vec::with_capacity(v.len());
        for x in v {
            out.push(self.resolve(*x, depth + 1)?);
        }
        Ok(out)
    }

    #[inline(never)]
    fn resolve_dict(&self, d: &[(Node, Node)], depth: usize) -> Result<PyValue> {
        let mut pairs = Vec::with_capacity(d.len());
        for (k, v) in d {
            pairs.push((self.resolve(*k, depth + 1)?, self.resolve(*v, depth + 1)?));
        }
        Ok(dict_of(pairs))
    }

    #[inline(never)]
    fn resolve_object(&self, i: usize, depth: usize) -> Result<PyValue> {
        let Some(Obj::Object(o)) = self.arena.get(i) else {
            return Err(self.bad("internal: not an object"));
        };
        let args = self.resolve_seq(&o.args, depth)?;
        let state = match o.state {
            Some(s) => Some(self.resolve(s, depth + 1)?),
            None => None,
        };
        Ok(PyValue::Object(Box::new(PyObject {
            class: o.class.clone(),
            args,
            state,
        })))
    }

    // ---- the result tree --------------------------------------------------------------------

    /// The tree under the STOP value. Objects referenced once in it are moved out of the arena
    /// rather than copied (a `.metadata` of 10⁶ chunks would otherwise be held twice); shared
    /// ones are copied per reference by [`Machine::resolve`], as before.
    fn resolve_root(&mut self, root: Node) -> Result<PyValue> {
        let refs = self.count_refs(root);
        self.move_out(root, 0, &refs)
    }

    /// How many times each arena object is referenced from the objects reachable from `root`
    /// (`root` itself counts once).
    fn count_refs(&self, root: Node) -> Vec<u32> {
        fn visit(n: &Node, refs: &mut [u32], todo: &mut Vec<usize>) {
            if let Node::Obj(i) = *n {
                if let Some(r) = refs.get_mut(i) {
                    *r = r.saturating_add(1);
                    if *r == 1 {
                        todo.push(i);
                    }
                }
            }
        }
        let mut refs = vec![0u32; self.arena.len()];
        let mut todo = Vec::new();
        visit(&root, &mut refs, &mut todo);
        while let Some(i) = todo.pop() {
            match &self.arena[i] {
                Obj::List(v) | Obj::Tuple(v) | Obj::Set(v) | Obj::FrozenSet(v) => {
                    v.iter().for_each(|n| visit(n, &mut refs, &mut todo));
                }
                Obj::Dict(d) => d.iter().for_each(|(k, v)| {
                    visit(k, &mut refs, &mut todo);
                    visit(v, &mut refs, &mut todo);
                }),
                Obj::Object(o) => {
                    for n in o.args.iter().chain(&o.state) {
                        visit(n, &mut refs, &mut todo);
                    }
                }
                Obj::Val(_) | Obj::Taken => {}
            }
        }
        refs
    }

    /// Moves node `n` into the result when it is referenced once (and so is every object on
    /// the way to it: children of a shared object are copied with it); copies it otherwise.
    fn move_out(&mut self, n: Node, depth: usize, refs: &[u32]) -> Result<PyValue> {
        let i = match n {
            Node::Obj(i) if refs.get(i) == Some(&1) => i,
            _ => return self.resolve(n, depth),
        };
        self.check_depth(depth)?;
        self.spend(1)?;
        let take_all = |m: &mut Self, v: Vec<Node>| -> Result<Vec<PyValue>> {
            v.into_iter()
                .map(|x| m.move_out(x, depth + 1, refs))
                .collect()
        };
        match std::mem::replace(&mut self.arena[i], Obj::Taken) {
            Obj::Val(v) => Ok(v),
            Obj::List(v) => take_all(self, v).map(PyValue::List),
            Obj::Tuple(v) => take_all(self, v).map(PyValue::Tuple),
            Obj::Set(v) => take_all(self, v).map(PyValue::Set),
            Obj::FrozenSet(v) => take_all(self, v).map(PyValue::FrozenSet),
            Obj::Dict(d) => {
                let mut pairs = Vec::with_capacity(d.len());
                for (k, v) in d {
                    pairs.push((
                        self.move_out(k, depth + 1, refs)?,
                        self.move_out(v, depth + 1, refs)?,
                    ));
                }
                Ok(dict_of(pairs))
            }
            Obj::Object(o) => {
                let ObjInstance { class, args, state } = *o;
                let args = take_all(self, args)?;
                let state = match state {
                    Some(s) => Some(self.move_out(s, depth + 1, refs)?),
                    None => None,
                };
                Ok(PyValue::Object(Box::new(PyObject { class, args, state })))
            }
            Obj::Taken => Err(self.bad("internal: a moved value is read again")),
        }
    }
}

/// A dict of `pairs` with Python's semantics: a key set twice keeps its first position and its
/// last value; keys are equal when their [`HKey`]s are. Small dicts (dataclass states, millions of
/// them in a large `.metadata`) compare keys in place; larger ones go through a hash index.
fn dict_of(mut pairs: Vec<(PyValue, PyValue)>) -> PyValue {
    if pairs.len() <= 16 {
        // In place: entries 0..kept are the dict so far, the rest is not yet seen or spent.
        let mut kept = 0;
        for i in 0..pairs.len() {
            let at = HKey::of(&pairs[i].0).and_then(|h| {
                pairs[..kept]
                    .iter()
                    .position(|(k, _)| HKey::of(k).as_ref() == Some(&h))
            });
            match at {
                Some(at) => pairs[at].1 = std::mem::replace(&mut pairs[i].1, PyValue::None),
                None => {
                    pairs.swap(kept, i);
                    kept += 1;
                }
            }
        }
        pairs.truncate(kept);
        return PyValue::Dict(pairs.into());
    }
    // Each entry's first equal key (itself when new; unhashable keys are always new).
    let mut first = Vec::with_capacity(pairs.len());
    {
        let mut index: HashMap<HKey, usize> = HashMap::with_capacity(pairs.len());
        for (i, (k, _)) in pairs.iter().enumerate() {
            first.push(HKey::of(k).map_or(i, |h| *index.entry(h).or_insert(i)));
        }
    }
    let mut out: Vec<(PyValue, PyValue)> = Vec::with_capacity(pairs.len());
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        match first[i] {
            // A new key: `first[i]` becomes its position in `out`, for later duplicates.
            j if j == i => {
                first[i] = out.len();
                out.push((k, v));
            }
            j => out[first[j]].1 = v,
        }
    }
    PyValue::Dict(out.into())
}

/// True for the torch functions that return a tensor view of a storage.
fn is_tensor_rebuilder(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("torch._utils", "_rebuild_tensor_v2")
            | ("torch._utils", "_rebuild_tensor")
            | ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state")
            | ("torch._tensor", "_rebuild_from_type_v2")
    )
}

/// True for a `None` / empty-dict tensor state (nothing worth keeping).
fn is_empty_state(v: &PyValue) -> bool {
    match v {
        PyValue::None => true,
        PyValue::Dict(d) => d.is_empty(),
        _ => false,
    }
}

/// Work units a leaf costs when copied into the result tree.
fn approx_size(v: &PyValue) -> u64 {
    match v {
        PyValue::Str(s) => (s.len() / 16) as u64,
        PyValue::Bytes(b) | PyValue::BigInt(b) => (b.len() / 16) as u64,
        PyValue::Tensor(t) => (t.shape.len() * 2) as u64 + 4,
        _ => 1,
    }
}

/// A short rendering of a value for error messages.
fn short(v: &PyValue) -> String {
    let s = format!("{v:?}");
    if s.len() > 120 {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

/// A hashable form of a dict key, borrowed from it (Python equality: `True == 1 == 1.0`).
#[derive(Debug, PartialEq, Eq, Hash)]
enum HKey<'a> {
    None,
    Int(i64),
    Float(u64),
    Str(&'a str),
    Bytes(&'a [u8]),
    Big(&'a [u8]),
    Tuple(Vec<HKey<'a>>),
    Global(&'a PyGlobal),
}

impl HKey<'_> {
    /// The key form of `v`; `None` for an unhashable value (equal to nothing).
    fn of(v: &PyValue) -> Option<HKey<'_>> {
        Some(match v {
            PyValue::None => HKey::None,
            PyValue::Bool(b) => HKey::Int(i64::from(*b)),
            PyValue::Int(i) => HKey::Int(*i),
            PyValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => HKey::Int(*f as i64),
            PyValue::Float(f) => HKey::Float(f.to_bits()),
            PyValue::Str(s) => HKey::Str(s),
            PyValue::Bytes(b) => HKey::Bytes(b),
            PyValue::BigInt(b) => HKey::Big(b),
            PyValue::Tuple(t) => HKey::Tuple(t.iter().map(HKey::of).collect::<Option<_>>()?),
            PyValue::Global(g) => HKey::Global(g),
            _ => return None,
        })
    }
}

/// BINSTRING payloads: text when UTF-8 (Python 3 reads them as str), bytes otherwise.
fn str_or_bytes(b: Vec<u8>) -> PyValue {
    match String::from_utf8(b) {
        Ok(s) => PyValue::Str(s),
        Err(e) => PyValue::Bytes(e.into_bytes()),
    }
}

/// Undoes Python's `repr()` quoting of a protocol-0 STRING argument.
fn unquote(l: &[u8]) -> Option<Vec<u8>> {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let q = *l.first()?;
    if !(q == b'\'' || q == b'"') || l.len() < 2 || l[l.len() - 1] != q {
        return None;
    }
    let body = &l[1..l.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'0' => out.push(0),
            b'\\' | b'\'' | b'"' => out.push(e),
            b'x' => {
                let h = std::str::from_utf8(body.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    Some(out)
}

/// Decodes Python's raw-unicode-escape (protocol-0 UNICODE): latin-1 plus `\uXXXX` / `\UXXXXXXXX`.
fn raw_unicode_escape(l: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(l.len());
    let mut i = 0;
    while i < l.len() {
        let c = l[i];
        if c == b'\\' && matches!(l.get(i + 1), Some(b'u') | Some(b'U')) {
            let n = if l[i + 1] == b'u' { 4 } else { 8 };
            let h = std::str::from_utf8(l.get(i + 2..i + 2 + n)?).ok()?;
            out.push(char::from_u32(u32::from_str_radix(h, 16).ok()?)?);
            i += 2 + n;
        } else {
            out.push(char::from(c));
            i += 1;
        }
    }
    Some(out)
}

/// Kind of an arena object, for error messages.
fn obj_kind(o: &Obj) -> &'static str {
    match o {
        Obj::Val(v) => v.type_name(),
        Obj::List(_) => "list",
        Obj::Tuple(_) => "tuple",
        Obj::Dict(_) => "dict",
        Obj::Set(_) => "set",
        Obj::FrozenSet(_) => "frozenset",
        Obj::Object(_) => "object",
        Obj::Taken => "moved value",
    }
}
