//! Reading DeepSpeed's pickled dicts (as serde_json) into typed fields, keeping what we do not interpret.

use crate::{PatternSet, SchemaError, Value};
use serde_json::Value as J;
use std::collections::BTreeMap;

pub(crate) type Result<T> = std::result::Result<T, SchemaError>;

/// Short description of a JSON value for error messages.
pub(crate) fn describe(j: &J) -> String {
    let s = match j {
        J::Null => return "null".into(),
        J::Bool(b) => return format!("bool {b}"),
        J::Number(n) => return format!("number {n}"),
        J::String(s) => format!("string {s:?}"),
        J::Array(a) => format!("list of {}", a.len()),
        J::Object(o) => format!("dict of {} keys", o.len()),
    };
    if s.len() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// A type error at `key`.
pub(crate) fn wrong(key: &str, expected: &'static str, j: &J) -> SchemaError {
    SchemaError::DeepSpeedType {
        key: key.to_string(),
        expected,
        found: describe(j),
    }
}

/// One dict being read: typed fields are taken out, the rest (and known keys holding `null`) become `extra`.
pub(crate) struct Obj<'a> {
    path: String,
    rest: BTreeMap<&'a str, &'a J>,
}

impl<'a> Obj<'a> {
    /// Starts reading `j`, which must be a dict; `path` names it in errors.
    pub(crate) fn new(path: &str, j: &'a J) -> Result<Obj<'a>> {
        match j {
            J::Object(o) => Ok(Obj {
                path: path.to_string(),
                rest: o.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            }),
            _ => Err(wrong(path, "a dict", j)),
        }
    }

    /// Path of a key of this dict, for errors (`universal_checkpoint_info.original_vocab_size`).
    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Converts `key` if present and not null; a null stays behind so that it is emitted again.
    pub(crate) fn opt<T>(
        &mut self,
        key: &str,
        conv: impl FnOnce(&'a J, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        match self.rest.get(key) {
            None | Some(J::Null) => Ok(None),
            Some(j) => {
                let j: &'a J = j;
                let out = conv(j, &self.key_path(key))?;
                self.rest.remove(key);
                Ok(Some(out))
            }
        }
    }

    /// Converts `key`, which must be present and not null.
    pub(crate) fn req<T>(
        &mut self,
        key: &str,
        conv: impl FnOnce(&'a J, &str) -> Result<T>,
    ) -> Result<T> {
        let path = self.key_path(key);
        self.opt(key, conv)?
            .ok_or(SchemaError::DeepSpeedMissing { key: path })
    }

    /// Drops `key` without keeping it (used for tensor payloads such as `param`).
    pub(crate) fn skip(&mut self, key: &str) {
        self.rest.remove(key);
    }

    /// Everything not taken, as free-form values.
    pub(crate) fn extra(self) -> BTreeMap<String, Value> {
        self.rest
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::from_json(v)))
            .collect()
    }
}

/// Builds a dict: `extra` first, typed fields on top (a typed field wins over a stale extra key).
pub(crate) struct Out(serde_json::Map<String, J>);

impl Out {
    /// Starts from the kept unknown keys.
    pub(crate) fn new(extra: &BTreeMap<String, Value>) -> Out {
        Out(extra
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect())
    }

    /// Sets `key`.
    pub(crate) fn put(&mut self, key: &str, j: J) {
        self.0.insert(key.to_string(), j);
    }

    /// Sets `key` when the field is present.
    pub(crate) fn opt<T>(&mut self, key: &str, v: &Option<T>, conv: impl FnOnce(&T) -> J) {
        if let Some(v) = v {
            self.put(key, conv(v));
        }
    }

    /// The finished dict.
    pub(crate) fn done(self) -> J {
        J::Object(self.0)
    }
}

/// A non-negative integer.
pub(crate) fn u64_of(j: &J, key: &str) -> Result<u64> {
    j.as_u64()
        .ok_or_else(|| wrong(key, "a non-negative integer", j))
}

/// A signed integer.
pub(crate) fn i64_of(j: &J, key: &str) -> Result<i64> {
    j.as_i64().ok_or_else(|| wrong(key, "an integer", j))
}

/// A non-negative integer that fits u32 (ranks, ep sizes).
pub(crate) fn u32_of(j: &J, key: &str) -> Result<u32> {
    j.as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| wrong(key, "an integer in 0..2^32", j))
}

/// A dimension index.
pub(crate) fn usize_of(j: &J, key: &str) -> Result<usize> {
    j.as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| wrong(key, "a dimension index", j))
}

/// A bool.
pub(crate) fn bool_of(j: &J, key: &str) -> Result<bool> {
    j.as_bool().ok_or_else(|| wrong(key, "a bool", j))
}

/// A string.
pub(crate) fn string_of(j: &J, key: &str) -> Result<String> {
    j.as_str()
        .map(str::to_string)
        .ok_or_else(|| wrong(key, "a string", j))
}

/// A list, each element converted.
pub(crate) fn list_of<'a, T>(
    j: &'a J,
    key: &str,
    conv: impl Fn(&'a J, &str) -> Result<T>,
) -> Result<Vec<T>> {
    let a = j.as_array().ok_or_else(|| wrong(key, "a list", j))?;
    a.iter()
        .enumerate()
        .map(|(i, e)| conv(e, &format!("{key}[{i}]")))
        .collect()
}

/// A dict with string keys, each value converted.
pub(crate) fn map_of<'a, T>(
    j: &'a J,
    key: &str,
    conv: impl Fn(&'a J, &str) -> Result<T>,
) -> Result<BTreeMap<String, T>> {
    let o = j.as_object().ok_or_else(|| wrong(key, "a dict", j))?;
    o.iter()
        .map(|(k, v)| Ok((k.clone(), conv(v, &format!("{key}.{k}"))?)))
        .collect()
}

/// A shape or size list.
pub(crate) fn u64s_of(j: &J, key: &str) -> Result<Vec<u64>> {
    list_of(j, key, u64_of)
}

/// A list of size lists (`sub_param_shard_widths`: `[sub-param][tp rank]`).
pub(crate) fn u64ss_of(j: &J, key: &str) -> Result<Vec<Vec<u64>>> {
    list_of(j, key, u64s_of)
}

/// A list of regex strings, compiled.
pub(crate) fn patterns_of(j: &J, key: &str) -> Result<PatternSet> {
    PatternSet::new(list_of(j, key, string_of)?)
}

/// Emits a list of integers.
pub(crate) fn u64s_json(v: &[u64]) -> J {
    J::Array(v.iter().map(|&x| J::from(x)).collect())
}

/// Emits a list of integer lists.
pub(crate) fn u64ss_json(v: &[Vec<u64>]) -> J {
    J::Array(v.iter().map(|x| u64s_json(x)).collect())
}

/// Emits a pattern set as its source strings.
pub(crate) fn patterns_json(p: &PatternSet) -> J {
    J::Array(p.sources().iter().map(|s| J::String(s.clone())).collect())
}
