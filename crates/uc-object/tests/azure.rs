//! `az://` uploads of large files against Azurite (block lists written part by part by two
//! processes), run by scripts/azure-test.sh, which starts Azurite and sets
//! `AZURITE_BLOB_STORAGE_URL`; skipped (with a message) without it.

mod common;

use common::{checkpoint, large, split_between_two};
use uc_object::{Location, Mirror};

#[test]
fn two_processes_split_an_azure_block_upload() {
    if std::env::var_os("AZURITE_BLOB_STORAGE_URL").is_none() {
        eprintln!("skipped: no AZURITE_BLOB_STORAGE_URL (scripts/azure-test.sh sets it)");
        return;
    }
    let local = checkpoint();
    let dest = Location::parse("az://ckpt/split").unwrap();
    let dir = tempfile::tempdir().unwrap();
    split_between_two(local.path(), &dest, &dir.path().join("upload"), || {});
    // Read back through ranged GETs: the block list puts every part where it belongs.
    let m = Mirror::open(dest, None).unwrap();
    for (rel, want) in [
        ("tensors/00000.safetensors", large()),
        ("uc.json", b"{}".to_vec()),
    ] {
        let path = m.path().join(rel);
        uc_torch::lazy::need_whole(&path).unwrap();
        assert!(std::fs::read(&path).unwrap() == want, "{rel} differs");
    }
}
