//! `az://` uploads of large files against Azurite (block lists written part by part by two
//! processes), run by scripts/azure-test.sh, which starts Azurite and sets
//! `AZURITE_BLOB_STORAGE_URL`; skipped (with a message) without it.

use uc_object::{upload_shared, Location, Mirror, UploadEnd, UploadStats};

#[test]
fn two_processes_split_an_azure_block_upload() {
    if std::env::var_os("AZURITE_BLOB_STORAGE_URL").is_none() {
        eprintln!("skipped: no AZURITE_BLOB_STORAGE_URL (scripts/azure-test.sh sets it)");
        return;
    }
    let local = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(20u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::create_dir_all(local.path().join("tensors")).unwrap();
    std::fs::write(local.path().join("tensors/00000.safetensors"), &big).unwrap();
    std::fs::write(local.path().join("uc.json"), b"{}").unwrap();
    std::fs::write(local.path().join("COMPLETE"), b"x").unwrap();
    let dest = Location::parse("az://ckpt/split").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("upload");
    std::fs::create_dir(&state).unwrap();
    // Parts 0 and 2 of the large file by one process (another holds the lock: it finishes).
    let half = |r: usize| move |sizes: &[u64]| (r..sizes.len()).step_by(2).collect::<Vec<_>>();
    let other = std::fs::File::create(state.join("lock")).unwrap();
    other.lock_shared().unwrap();
    let end = upload_shared(local.path(), &dest, &state, &half(0), &|_, _| {}).unwrap();
    let sent0 = (8 << 20) + (4 << 20);
    assert_eq!(
        end,
        UploadEnd::Others(UploadStats {
            files: 0,
            bytes: sent0
        })
    );
    drop(other);
    let end = upload_shared(local.path(), &dest, &state, &half(1), &|_, _| {}).unwrap();
    let sent1 = 8 << 20;
    assert_eq!(
        end,
        UploadEnd::Finished(UploadStats {
            files: 3,
            bytes: sent1 + 3
        })
    );
    // Read back through ranged GETs: the block list puts every part where it belongs.
    let m = Mirror::open(dest, None).unwrap();
    let path = m.path().join("tensors/00000.safetensors");
    uc_torch::lazy::need_whole(&path).unwrap();
    assert!(std::fs::read(&path).unwrap() == big, "the blob differs");
    let marker = m.path().join("uc.json");
    uc_torch::lazy::need_whole(&marker).unwrap();
    assert_eq!(std::fs::read(&marker).unwrap(), b"{}");
}
