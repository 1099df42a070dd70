//! Shared test helpers: scatter whole tensors over ranks, save them sharded and convert.
#![allow(dead_code)]

use burn::tensor::{backend::Backend, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use uc_burn::{shards, Shards};
use uc_schema::{Role, TensorMeta, Topology, Value};
use uc_store::native::NativeCheckpoint;

/// Every rank's local buffers of `metas`, cut from the whole tensors in `full`.
pub fn scatter_all<B: Backend>(
    metas: &[TensorMeta],
    full: &BTreeMap<(String, Role), Tensor<B, 1>>,
) -> Vec<Shards<B>> {
    let mut out = Vec::new();
    for m in metas {
        let t = full[&(m.name.clone(), m.role.clone())].clone();
        shards::scatter_into(&mut out, m, t).unwrap();
    }
    out
}

/// Saves every rank of `ranks` into `dir/s` (TP over `ranks.len()`, with `state`), converts them
/// into the universal checkpoint `dir/u` and opens it.
pub fn save_and_convert<B: Backend>(
    dir: &Path,
    metas: &[TensorMeta],
    ranks: &[Shards<B>],
    state: &BTreeMap<String, Value>,
) -> NativeCheckpoint {
    let topo = Topology::new(&[("tp", ranks.len() as u32)], 0);
    for (r, s) in ranks.iter().enumerate() {
        uc_burn::save_rank(&dir.join("s"), r as u32, metas, s, &topo, state).unwrap();
    }
    let man = uc_burn::convert_sharded(&dir.join("s"), &dir.join("u")).unwrap();
    for (k, v) in state {
        assert_eq!(man.state.get(k), Some(v), "state {k}");
    }
    NativeCheckpoint::open(dir.join("u")).unwrap()
}
