//! Checksums of a native checkpoint's files, computed while the bytes are written.
//!
//! A file's checksum is `blake3-parts:<hex>`: the file is cut at the start and end of every tensor the
//! manifest places in it (so its parts are the header and each tensor's data), each part is hashed with
//! BLAKE3, and the checksum is the BLAKE3 of the sequence `len (u64 LE) ‖ digest` of the parts in file
//! order. Each part is hashed by the thread that writes it, while its bytes are in cache, so no pass
//! reads the output back; `uc verify` recomputes the parts in parallel. A flipped bit changes its part's
//! digest and so the file's. `sha256:<hex>` of the whole file (written before) is still verified.

use crate::error::{Result, StoreError};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Prefix of a file checksum over BLAKE3-hashed parts (see the module docs).
pub const PARTS_PREFIX: &str = "blake3-parts:";
/// Prefix of a SHA-256 digest (of `uc.json` in `COMPLETE`, and of whole files in older checkpoints).
pub const SHA256_PREFIX: &str = "sha256:";

/// `sha256:<hex>` of a byte slice.
pub(crate) fn sha256_bytes(b: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex(&Sha256::digest(b)))
}

/// True for a checksum this reader can check: a known prefix followed by 64 lowercase hex digits.
pub(crate) fn is_checksum(s: &str) -> bool {
    [PARTS_PREFIX, SHA256_PREFIX].iter().any(|p| {
        s.strip_prefix(p).is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    })
}

/// The cut points of a file of `len` bytes holding tensors at `ranges`: 0, every start and end, `len`;
/// sorted, without repeats. Consecutive points bound the parts.
pub(crate) fn cuts(len: u64, ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<u64> {
    let mut c = vec![0, len];
    for (s, e) in ranges {
        c.push(s.min(len));
        c.push(e.min(len));
    }
    c.sort_unstable();
    c.dedup();
    c
}

/// The file checksum from its parts' `(length, digest)` in file order.
pub(crate) fn combine(parts: impl IntoIterator<Item = (u64, blake3::Hash)>) -> String {
    let mut h = blake3::Hasher::new();
    for (len, d) in parts {
        h.update(&len.to_le_bytes());
        h.update(d.as_bytes());
    }
    format!("{PARTS_PREFIX}{}", h.finalize().to_hex())
}

/// The byte ranges of a file of `len` bytes that `uc verify` hashes for checksum `expected`: its parts
/// between `cuts` for `blake3-parts:`, the whole file for `sha256:`.
pub(crate) fn verify_ranges(cuts: &[u64], expected: &str, len: u64) -> Vec<(u64, u64)> {
    if expected.starts_with(SHA256_PREFIX) {
        return vec![(0, len)];
    }
    cuts.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The digest of one range [`verify_ranges`] named.
#[derive(Debug)]
pub(crate) enum RangeDigest {
    Part(u64, blake3::Hash),
    Whole(String),
}

/// Hashes bytes `s..e` of `bytes` (the file at `path`) in the scheme `expected` names.
pub(crate) fn digest_range(
    path: &Path,
    bytes: &[u8],
    (s, e): (u64, u64),
    expected: &str,
) -> Result<RangeDigest> {
    let b = usize::try_from(s)
        .ok()
        .zip(usize::try_from(e).ok())
        .and_then(|(s, e)| bytes.get(s..e))
        .ok_or_else(|| StoreError::Truncated {
            path: path.to_path_buf(),
            why: format!("bytes {s}..{e} past the end ({} bytes)", bytes.len()),
        })?;
    Ok(if expected.starts_with(SHA256_PREFIX) {
        RangeDigest::Whole(sha256_bytes(b))
    } else {
        RangeDigest::Part(e - s, blake3::hash(b))
    })
}

/// A file's checksum from the digests of its [`verify_ranges`], in order.
pub(crate) fn file_checksum(digests: Vec<RangeDigest>) -> String {
    match digests.as_slice() {
        [RangeDigest::Whole(w)] => w.clone(),
        _ => combine(digests.into_iter().filter_map(|d| match d {
            RangeDigest::Part(n, h) => Some((n, h)),
            RangeDigest::Whole(_) => None,
        })),
    }
}

/// The checksum of `bytes` (a whole file) in the scheme `expected` names, on this thread.
#[cfg(test)]
fn recompute(path: &Path, bytes: &[u8], cuts: &[u64], expected: &str) -> Result<String> {
    let digests = verify_ranges(cuts, expected, bytes.len() as u64)
        .into_iter()
        .map(|r| digest_range(path, bytes, r, expected))
        .collect::<Result<Vec<_>>>()?;
    Ok(file_checksum(digests))
}

/// Lowercase hex of a digest.
fn hex(d: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * d.len());
    for b in d {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_cuts() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(cuts(10, [(2, 6), (6, 10)]), vec![0, 2, 6, 10]);
        assert_eq!(cuts(4, []), vec![0, 4]);
        let bytes = b"headerdata1data2";
        let c = cuts(16, [(6, 11), (11, 16)]);
        let want = combine([
            (6, blake3::hash(b"header")),
            (5, blake3::hash(b"data1")),
            (5, blake3::hash(b"data2")),
        ]);
        assert!(is_checksum(&want));
        assert_eq!(recompute(Path::new("f"), bytes, &c, &want).unwrap(), want);
        let mut flipped = bytes.to_vec();
        flipped[13] ^= 1;
        assert_ne!(
            recompute(Path::new("f"), &flipped, &c, &want).unwrap(),
            want
        );
        assert!(!is_checksum("blake3-parts:00"));
        assert!(!is_checksum(
            "md5:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        ));
    }
}
