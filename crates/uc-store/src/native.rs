//! The native universal format: `<dir>/uc.json` (a [`uc_schema::Manifest`]), full logical tensors in
//! bounded `<dir>/tensors/NNNNN.safetensors` files, and `<dir>/COMPLETE` (holding uc.json's sha256) last.
//!
//! Keys inside the safetensors files: a parameter's primary tensor (its fp32 master, else its working
//! weights, else a buffer) under its bare name (`layers.0.attn.qkv.weight`), every other role under
//! `<name>/<role key>` (`…/exp_avg`, `…/exp_avg_sq`, `…/step`, `…/param`). [`NativeWriter`] plans every
//! file and offset up front, then takes tensors in any order (also in parallel, also in pieces);
//! [`NativeCheckpoint`] reads them back by mmap.
//!
//! Checksums: each file's `blake3-parts:` digest is built from BLAKE3 digests of its
//! header and of each tensor's bytes, hashed as they are written; `COMPLETE` holds uc.json's sha256.
//!
//! Each tensor is stored whole, in its logical (unpadded) `shape`, contiguous little-endian. A manifest
//! entry's [`uc_schema::StorageRef`] names the file (relative, `/`-separated), the key, and the absolute
//! byte range of the data in that file (header included in the offset), so a reader can `pread` or mmap
//! exactly the bytes it needs. Within a file tensors are ordered by descending element size and the
//! header is space-padded to 8 bytes, so every tensor is aligned to its element size.

mod checksum;
mod reader;
mod writer;

pub use checksum::{PARTS_PREFIX, SHA256_PREFIX};

pub use reader::NativeCheckpoint;
pub(crate) use writer::{hash_range, layout_safetensors, open_planned, write_all_at, StEntry};
pub use writer::{NativeWriter, TensorSink};

use std::collections::HashMap;
use uc_schema::{Role, TensorMeta};

/// The manifest file of a native checkpoint.
pub const MANIFEST_FILE: &str = "uc.json";
/// The folder holding the safetensors files.
pub const TENSORS_DIR: &str = "tensors";
/// Default bound on the data bytes of one safetensors file (2 GiB); a larger tensor gets a file of its own.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 << 30;
/// Default bound on the tensors of one file (keeps each JSON header far below safetensors' 100 MB limit).
pub const DEFAULT_MAX_FILE_TENSORS: usize = 65_536;

/// How a native checkpoint is cut into files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeOptions {
    /// Data bytes per safetensors file before a new one is started.
    pub max_file_bytes: u64,
    /// Tensors per safetensors file before a new one is started.
    pub max_file_tensors: usize,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_file_tensors: DEFAULT_MAX_FILE_TENSORS,
        }
    }
}

/// The safetensors key of each tensor of `metas` (same order), as described in the module docs.
pub fn tensor_keys(metas: &[TensorMeta]) -> Vec<String> {
    let rank = |r: &Role| match r {
        Role::Fp32Master => 0,
        Role::Param => 1,
        Role::Buffer => 2,
        _ => 3,
    };
    let mut primary: HashMap<&str, &Role> = HashMap::new();
    for m in metas {
        let e = primary.entry(m.name.as_str()).or_insert(&m.role);
        if rank(&m.role) < rank(e) {
            *e = &m.role;
        }
    }
    metas
        .iter()
        .map(|m| match primary.get(m.name.as_str()) {
            Some(&r) if r == &m.role && rank(r) < 3 => m.name.clone(),
            _ => format!("{}/{}", m.name, m.role.key()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uc_schema::DType;

    #[test]
    fn keys_prefer_fp32_then_param() {
        let m = |n: &str, r: Role| TensorMeta::new(n, DType::F32, vec![2], r);
        let metas = vec![
            m("a", Role::Param),
            m("a", Role::Fp32Master),
            m("a", Role::ExpAvg),
            m("b", Role::Param),
            m("b", Role::Step),
            m("c", Role::ExpAvg),
        ];
        assert_eq!(
            tensor_keys(&metas),
            vec!["a/param", "a", "a/exp_avg", "b", "b/step", "c/exp_avg"]
        );
    }
}
