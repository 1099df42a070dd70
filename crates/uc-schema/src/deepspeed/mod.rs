//! DeepSpeed compatibility: `universal_checkpoint_info`, AutoTP per-parameter metadata, AutoEP layer
//! metadata and the flags of DeepSpeed's universal `zero/<param>/<state>.pt` files.
//!
//! Every type here derives Serialize/Deserialize for our own formats (JSON and bincode). DeepSpeed's
//! own dict form — the pickled dict as serde_json, tuples as lists, keys as strings — goes through
//! explicit `parse` / `to_json` functions using DeepSpeed's key names ([`keys`]). Keys we do not
//! interpret, and known keys holding `None`, are kept in each type's `extra` map, so
//! `to_json(parse(x)) == x`.
//!
//! [`UniversalCheckpointInfo::tp_rule`] turns the info plus each TP rank's local shape into one of
//! our [`Layout`](crate::Layout)s, following `ds_to_universal.merge_tp_slices`.

mod affine;
mod autoep;
mod autotp;
mod file_flags;
mod json;
pub mod keys;
mod tp_rule;
mod ucp_info;

pub use affine::{AffineMap, AffineParam, AffinePiece, AffineShard, Strided};
pub use autoep::{
    autoep_layers_in, autoep_layers_to_json, parse_autoep_layers, validate_autoep_layers,
    AutoEpLayer, ExpertPlacement, RankExperts,
};
pub use autotp::{AutoTpConversion, AutoTpParamMeta, PartitionType};
pub use file_flags::UniversalFileFlags;
pub use tp_rule::{TpKind, TpRule};
pub use ucp_info::{SubDim, SubParamSpec, UniversalCheckpointInfo};

use serde::{Deserialize, Serialize};
use serde_json::Value as J;

/// A Python number that must come back exactly as it was written (`0.4` stays a float, `1` an int).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    /// The value as f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Reads a JSON number.
    pub(crate) fn parse(j: &J, key: &str) -> json::Result<Num> {
        match (j.as_i64(), j.as_f64()) {
            (Some(i), _) if !j.is_f64() => Ok(Num::Int(i)),
            (_, Some(f)) => Ok(Num::Float(f)),
            _ => Err(json::wrong(key, "a number", j)),
        }
    }

    /// Emits a JSON number (a non-finite float becomes `null`).
    pub fn to_json(self) -> J {
        match self {
            Num::Int(i) => J::from(i),
            Num::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}
