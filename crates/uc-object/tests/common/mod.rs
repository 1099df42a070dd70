//! What the upload tests share: a finished local checkpoint, and one upload split between two
//! processes.

#![allow(dead_code)] // each test binary uses its part

use std::path::Path;
use uc_object::{upload_shared, Location, UploadEnd, UploadStats};

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The large file of [`checkpoint`]: 20 MiB, 3 parts of 8 MiB.
pub fn large() -> Vec<u8> {
    bytes(20 << 20, 1)
}

/// A finished local checkpoint: [`large`], a small file, two markers.
pub fn checkpoint() -> tempfile::TempDir {
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join("tensors")).unwrap();
    std::fs::write(local.path().join("tensors/00000.safetensors"), large()).unwrap();
    std::fs::write(
        local.path().join("tensors/00001.safetensors"),
        bytes(1000, 2),
    )
    .unwrap();
    std::fs::write(local.path().join("uc.json"), b"{}").unwrap();
    std::fs::write(local.path().join("COMPLETE"), b"x").unwrap();
    local
}

/// The files of [`checkpoint`].
pub const FILES: [&str; 4] = [
    "tensors/00000.safetensors",
    "tensors/00001.safetensors",
    "uc.json",
    "COMPLETE",
];

/// Every piece: what one process alone sends.
pub fn all(sizes: &[u64]) -> Vec<usize> {
    (0..sizes.len()).collect()
}

/// Uploads [`checkpoint`] `local` to `dest` as two processes sharing `state`: the pieces (3 parts
/// of the large file: 8, 8, 4 MiB, and the small file) alternate between them. The first sends its
/// share while the other holds its lock (still uploading) and so publishes nothing (`between`
/// checks that); the other, rerun after being killed before sending anything, sends only its own
/// share, is the last one, completes the multipart upload and puts the markers.
pub fn split_between_two(local: &Path, dest: &Location, state: &Path, between: impl FnOnce()) {
    let half = |r: usize| move |sizes: &[u64]| (r..sizes.len()).step_by(2).collect::<Vec<_>>();
    let other = another_uploading(state);
    let end = upload_shared(local, dest, state, &half(0), &|_, _| {}).unwrap();
    let sent0 = (8 << 20) + (4 << 20);
    assert_eq!(
        end,
        UploadEnd::Others(UploadStats {
            files: 0,
            bytes: sent0
        })
    );
    between();
    drop(other);
    let end = upload_shared(local, dest, state, &half(1), &|_, _| {}).unwrap();
    let sent1 = (8 << 20) + 1000;
    assert_eq!(
        end,
        UploadEnd::Finished(UploadStats {
            files: 4,
            bytes: sent1 + 3
        })
    );
}

/// Creates the state folder `state` and holds its lock as a process that is still uploading does
/// (until the file is dropped: that process ends or is killed).
pub fn another_uploading(state: &Path) -> std::fs::File {
    std::fs::create_dir(state).unwrap();
    let f = std::fs::File::create(state.join("lock")).unwrap();
    f.lock_shared().unwrap();
    f
}

/// One process sends every piece of `local` while another holds the lock (so it publishes
/// nothing); then that other one goes away without having sent anything (killed).
pub fn all_sent_by_one_while_another_runs(local: &Path, dest: &Location, state: &Path) {
    let other = another_uploading(state);
    let end = upload_shared(local, dest, state, &all, &|_, _| {}).unwrap();
    assert!(matches!(end, UploadEnd::Others(_)), "{end:?}");
    drop(other);
}
