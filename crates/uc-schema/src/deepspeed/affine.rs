//! DeepSpeed's affine maps: for each rank, which strided pieces of the full logical tensor it holds.
//! AutoTP writes one in `universal_checkpoint_info["affine_map"]` (keyed by parameter pattern), AutoEP one
//! per layer in `ds_autoep_layers[i]["affine_maps"]` (keyed by parameter name).

use super::json::{self, list_of, map_of, u32_of, u64_of, u64s_json, u64s_of, Obj, Out, Result};
use super::Num;
use crate::{SchemaError, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use std::collections::BTreeMap;

/// `torch.as_strided` view parameters: element offset and strides (`[offset, [strides]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strided {
    pub offset: u64,
    pub strides: Vec<u64>,
}

impl Strided {
    /// Reads `[offset, [strides]]`.
    fn parse(j: &J, key: &str) -> Result<Strided> {
        match j.as_array().map(Vec::as_slice) {
            Some([o, s]) => Ok(Strided {
                offset: u64_of(o, &format!("{key}[0]"))?,
                strides: u64s_of(s, &format!("{key}[1]"))?,
            }),
            _ => Err(json::wrong(key, "[offset, [strides]]", j)),
        }
    }

    /// Emits `[offset, [strides]]`.
    fn to_json(&self) -> J {
        J::Array(vec![J::from(self.offset), u64s_json(&self.strides)])
    }
}

/// One piece: a box of `shape` read from the full tensor at `source`, written into the shard at `dest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffinePiece {
    pub shape: Vec<u64>,
    pub source: Strided,
    pub dest: Strided,
    /// Ranks holding this piece (several for replicated parameters).
    pub locations: Vec<u32>,
    /// Multiplier applied on load; absent means 1.0.
    pub scale: Option<Num>,
    pub extra: BTreeMap<String, Value>,
}

impl AffinePiece {
    /// Reads one piece dict.
    fn parse(j: &J, key: &str) -> Result<AffinePiece> {
        let mut o = Obj::new(key, j)?;
        Ok(AffinePiece {
            shape: o.req("shape", u64s_of)?,
            source: o.req("source", Strided::parse)?,
            dest: o.req("dest", Strided::parse)?,
            locations: o.req("locations", |j, k| list_of(j, k, u32_of))?,
            scale: o.opt("scale", Num::parse)?,
            extra: o.extra(),
        })
    }

    /// Emits the piece dict.
    fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.put("shape", u64s_json(&self.shape));
        out.put("source", self.source.to_json());
        out.put("dest", self.dest.to_json());
        out.put(
            "locations",
            J::Array(self.locations.iter().map(|&r| J::from(r)).collect()),
        );
        out.opt("scale", &self.scale, |s| s.to_json());
        out.done()
    }

    /// The box of the full tensor this piece reads, as `(offsets, extents)`, when its source view is a
    /// plain box of a row-major `full_shape` tensor (strides equal the full tensor's); else `None`.
    pub fn source_box(&self, full_shape: &[u64]) -> Option<(Vec<u64>, Vec<u64>)> {
        if self.shape.len() != full_shape.len() || self.source.strides.len() != full_shape.len() {
            return None;
        }
        let mut strides = vec![1u64; full_shape.len()];
        for d in (0..full_shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1].checked_mul(full_shape[d + 1])?;
        }
        if strides != self.source.strides {
            return None;
        }
        let mut rest = self.source.offset;
        let mut offsets = Vec::with_capacity(full_shape.len());
        for (d, &s) in strides.iter().enumerate() {
            let o = rest.checked_div(s).unwrap_or(0);
            rest -= o * s;
            if o.checked_add(self.shape[d])? > full_shape[d] {
                return None;
            }
            offsets.push(o);
        }
        (rest == 0).then_some((offsets, self.shape.clone()))
    }
}

/// What one rank holds: its shard's shape and the pieces it is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffineShard {
    pub shard_shape: Vec<u64>,
    pub pieces: Vec<AffinePiece>,
    pub extra: BTreeMap<String, Value>,
}

impl AffineShard {
    /// Reads one rank's dict.
    fn parse(j: &J, key: &str) -> Result<AffineShard> {
        let mut o = Obj::new(key, j)?;
        Ok(AffineShard {
            shard_shape: o.req("shard_shape", u64s_of)?,
            pieces: o.req("pieces", |j, k| list_of(j, k, AffinePiece::parse))?,
            extra: o.extra(),
        })
    }

    /// Emits one rank's dict.
    fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.put("shard_shape", u64s_json(&self.shard_shape));
        out.put(
            "pieces",
            J::Array(self.pieces.iter().map(AffinePiece::to_json).collect()),
        );
        out.done()
    }
}

/// The map of one parameter: its full logical shape and each rank's shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffineParam {
    pub logical_shape: Vec<u64>,
    /// Rank → shard (DeepSpeed's dict keys are the ranks as strings).
    pub ranks: BTreeMap<u32, AffineShard>,
    pub extra: BTreeMap<String, Value>,
}

impl AffineParam {
    /// Reads one parameter's dict; `key` names it in errors.
    pub(crate) fn parse(j: &J, key: &str) -> Result<AffineParam> {
        let mut o = Obj::new(key, j)?;
        let logical_shape = o.req("logical_shape", u64s_of)?;
        let ranks = o.req("ranks", |j, k| {
            map_of(j, k, AffineShard::parse)?
                .into_iter()
                .map(|(r, s)| match r.parse::<u32>() {
                    Ok(n) if n.to_string() == r => Ok((n, s)),
                    _ => Err(SchemaError::DeepSpeedType {
                        key: format!("{k}.{r}"),
                        expected: "a rank number as key",
                        found: format!("key {r:?}"),
                    }),
                })
                .collect::<Result<BTreeMap<_, _>>>()
        })?;
        Ok(AffineParam {
            logical_shape,
            ranks,
            extra: o.extra(),
        })
    }

    /// Emits one parameter's dict.
    pub fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.put("logical_shape", u64s_json(&self.logical_shape));
        out.put(
            "ranks",
            J::Object(
                self.ranks
                    .iter()
                    .map(|(r, s)| (r.to_string(), s.to_json()))
                    .collect(),
            ),
        );
        out.done()
    }
}

/// A versioned set of per-parameter maps (`{"version": 1, "params": {…}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffineMap {
    pub version: Option<Num>,
    /// Keyed by parameter pattern (AutoTP) or parameter name (AutoEP).
    pub params: BTreeMap<String, AffineParam>,
    pub extra: BTreeMap<String, Value>,
}

impl AffineMap {
    /// Reads the map dict.
    pub fn parse(j: &J) -> Result<AffineMap> {
        AffineMap::parse_at(j, "affine_map")
    }

    /// Reads the map dict; `key` names it in errors.
    pub(crate) fn parse_at(j: &J, key: &str) -> Result<AffineMap> {
        let mut o = Obj::new(key, j)?;
        Ok(AffineMap {
            version: o.opt("version", Num::parse)?,
            params: o.req("params", |j, k| map_of(j, k, AffineParam::parse))?,
            extra: o.extra(),
        })
    }

    /// Emits the map dict.
    pub fn to_json(&self) -> J {
        let mut out = Out::new(&self.extra);
        out.opt("version", &self.version, |v| v.to_json());
        out.put(
            "params",
            J::Object(
                self.params
                    .iter()
                    .map(|(k, p)| (k.clone(), p.to_json()))
                    .collect(),
            ),
        );
        out.done()
    }
}
