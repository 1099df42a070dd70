//! `gs://` through object_store's Google Cloud Storage client, against the test server answering
//! GCS's XML API: listing, ranged reads, an upload split between two processes (parts of one
//! multipart upload from each), markers last.

mod common;

use common::{checkpoint, large, split_between_two};
use uc_object::test_server::S3Server;
use uc_object::{Location, Mirror};

#[test]
fn gs_urls_list_read_and_upload() {
    let s = S3Server::start_anonymous().unwrap();
    s.bucket("gbucket").unwrap();
    for (k, v) in s.gcs_env() {
        // SAFETY (edition 2021: safe): the only test of this binary sets it before any client reads it.
        std::env::set_var(k, v);
    }
    let local = checkpoint();
    let dest = Location::parse("gs://gbucket/ckpt").unwrap();
    let state = tempfile::tempdir().unwrap();
    split_between_two(local.path(), &dest, &state.path().join("upload"), || {});
    let big = large();
    let on_disk = s.root().join("gbucket/ckpt/tensors/00000.safetensors");
    assert_eq!(std::fs::read(on_disk).unwrap(), big);
    let m = Mirror::open(dest, None).unwrap();
    let path = m.path().join("tensors/00000.safetensors");
    let range = (5 << 20)..(5 << 20) + 1000;
    uc_torch::lazy::need(&path, std::slice::from_ref(&range)).unwrap();
    let got = std::fs::read(&path).unwrap();
    assert_eq!(
        got[5 << 20..(5 << 20) + 1000],
        big[5 << 20..(5 << 20) + 1000]
    );
    assert_eq!(m.stats().bytes_fetched, 1000);
}
