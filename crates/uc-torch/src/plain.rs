//! Plain pickled data as JSON, so uc-schema's DeepSpeed parsers can read it.

use crate::pickle::PyValue;
use serde_json::{json, Map, Value as J};

/// Converts a value tree to JSON: tuples and lists become arrays, dict keys strings, objects their
/// BUILD state (or constructor args), tensors a short description.
pub fn to_json(v: &PyValue) -> J {
    match v {
        PyValue::None => J::Null,
        PyValue::Bool(b) => J::Bool(*b),
        PyValue::Int(i) => json!(i),
        PyValue::BigInt(_) => J::String("<bigint>".into()),
        PyValue::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        PyValue::Str(s) => J::String(s.clone()),
        PyValue::Bytes(b) => J::String(format!("<{} bytes>", b.len())),
        PyValue::List(l) | PyValue::Tuple(l) | PyValue::Set(l) | PyValue::FrozenSet(l) => {
            J::Array(l.iter().map(to_json).collect())
        }
        PyValue::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d {
                let key = match k {
                    PyValue::Str(s) => s.clone(),
                    PyValue::Int(i) => i.to_string(),
                    other => to_json(other).to_string(),
                };
                m.insert(key, to_json(v));
            }
            J::Object(m)
        }
        PyValue::Global(g) => J::String(format!("{}.{}", g.module, g.name)),
        PyValue::Storage(s) => J::String(format!("<storage {}>", s.key)),
        PyValue::Tensor(t) => J::String(format!("<tensor {} {:?}>", t.dtype, t.shape)),
        PyValue::Object(o) => match &o.state {
            Some(s) => to_json(s),
            None if o.args.len() == 1 => to_json(&o.args[0]),
            None => J::Array(o.args.iter().map(to_json).collect()),
        },
    }
}

/// Converts plain pickled data to our bincode-safe value (training state, hyper-parameters).
pub fn to_value(v: &PyValue) -> uc_schema::Value {
    uc_schema::Value::from_json(&to_json(v))
}
