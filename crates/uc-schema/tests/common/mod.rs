//! Helpers shared by the integration tests: serializer round trips and fixture loading.
#![allow(dead_code)]

use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

/// Root of the shared DeepSpeed fixtures (`/work/shared/fixtures/deepspeed` beside the workspace).
pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/deepspeed"
);

/// Reads `<case>/manifest.json` of a fixture case.
pub fn manifest(case: &str) -> serde_json::Value {
    let path = format!("{FIXTURES}/{case}/manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// Encodes and decodes with bincode 2 (standard config), checking every byte is consumed.
pub fn bincode_trip<T: Serialize + DeserializeOwned>(x: &T) -> T {
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(x, cfg).expect("bincode encode");
    let (y, n): (T, usize) =
        bincode::serde::decode_from_slice(&bytes, cfg).expect("bincode decode");
    assert_eq!(n, bytes.len(), "bincode left bytes unread");
    y
}

/// Encodes and decodes with serde_json.
pub fn json_trip<T: Serialize + DeserializeOwned>(x: &T) -> T {
    let text = serde_json::to_string(x).expect("json encode");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("json decode {text}: {e}"))
}

/// Asserts that `x` survives both serde_json and bincode unchanged.
pub fn assert_round_trips<T: Serialize + DeserializeOwned + PartialEq + Debug>(x: &T) {
    assert_eq!(&json_trip(x), x, "serde_json round trip");
    assert_eq!(&bincode_trip(x), x, "bincode round trip");
}
