//! The native universal format: `<dir>/uc.json` (a [`uc_schema::Manifest`]), full logical tensors in
//! bounded `<dir>/tensors/NNNNN.safetensors` files, and `<dir>/COMPLETE` (holding uc.json's sha256) last.
//!
//! Keys inside the safetensors files: a parameter's primary tensor (its fp32 master, else its working
//! weights, else a buffer) under its bare name (`layers.0.attn.qkv.weight`), every other role under
//! `<name>/<role key>` (`…/exp_avg`, `…/exp_avg_sq`, `…/step`, `…/param`). [`NativeWriter`] plans every
//! file and offset up front, then takes tensors in any order (also in parallel, also in pieces);
//! [`NativeCheckpoint`] reads them back by mmap.
//!
//! Each tensor is stored whole, in its logical (unpadded) `shape`, contiguous little-endian. A manifest
//! entry's [`uc_schema::StorageRef`] names the file (relative, `/`-separated), the key, and the absolute
//! byte range of the data in that file (header included in the offset), so a reader can `pread` or mmap
//! exactly the bytes it needs. Within a file tensors are ordered by descending element size and the
//! header is space-padded to 8 bytes, so every tensor is aligned to its element size.

mod reader;
mod writer;

pub use reader::NativeCheckpoint;
pub(crate) use writer::{layout_safetensors, write_all_at, StEntry};
pub use writer::{NativeWriter, TensorSink};

use crate::error::{io_err, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use uc_schema::{Role, TensorMeta};

/// The manifest file of a native checkpoint.
pub const MANIFEST_FILE: &str = "uc.json";
/// The folder holding the safetensors files.
pub const TENSORS_DIR: &str = "tensors";
/// Default bound on the data bytes of one safetensors file (2 GiB); a larger tensor gets a file of its own.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 << 30;
/// Default bound on the tensors of one file (keeps each JSON header far below safetensors' 100 MB limit).
pub const DEFAULT_MAX_FILE_TENSORS: usize = 65_536;
/// The checksum algorithm prefix used in the manifest and `COMPLETE`.
pub const CHECKSUM_PREFIX: &str = "sha256:";

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

/// `sha256:<hex>` of a byte slice.
pub(crate) fn sha256_bytes(b: &[u8]) -> String {
    hex_digest(&Sha256::digest(b))
}

/// `sha256:<hex>` of a file's contents, read in chunks.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex_digest(&h.finalize()))
}

/// `sha256:` + lowercase hex.
fn hex_digest(d: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(CHECKSUM_PREFIX.len() + 2 * d.len());
    s.push_str(CHECKSUM_PREFIX);
    for b in d {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
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
        assert_eq!(
            sha256_bytes(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
