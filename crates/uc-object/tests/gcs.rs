//! `gs://` through object_store's Google Cloud Storage client, against the test server answering
//! GCS's XML API: listing, ranged reads, whole and multipart uploads, markers last.

use uc_object::test_server::S3Server;
use uc_object::{upload_shared, Location, Mirror, UploadEnd};

#[test]
fn gs_urls_list_read_and_upload() {
    let s = S3Server::start_anonymous().unwrap();
    s.bucket("gbucket").unwrap();
    for (k, v) in s.gcs_env() {
        // SAFETY (edition 2021: safe): the only test of this binary sets it before any client reads it.
        std::env::set_var(k, v);
    }
    let local = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(20u32 << 20))
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    std::fs::create_dir_all(local.path().join("tensors")).unwrap();
    std::fs::write(local.path().join("tensors/00000.safetensors"), &big).unwrap();
    std::fs::write(local.path().join("uc.json"), b"{}").unwrap();
    std::fs::write(local.path().join("COMPLETE"), b"x").unwrap();
    let dest = Location::parse("gs://gbucket/ckpt").unwrap();
    let state = local.path().join("upload-state");
    let all = |sizes: &[u64]| (0..sizes.len()).collect::<Vec<_>>();
    let end = upload_shared(
        &local.path().join("tensors"),
        &dest,
        &state,
        &all,
        &|_, _| {},
    );
    assert!(matches!(end, Ok(UploadEnd::Finished(_))), "{end:?}");
    let on_disk = s.root().join("gbucket/ckpt/00000.safetensors");
    assert_eq!(std::fs::read(on_disk).unwrap(), big);
    let m = Mirror::open(dest, None).unwrap();
    let path = m.path().join("00000.safetensors");
    let range = (5 << 20)..(5 << 20) + 1000;
    uc_torch::lazy::need(&path, std::slice::from_ref(&range)).unwrap();
    let got = std::fs::read(&path).unwrap();
    assert_eq!(
        got[5 << 20..(5 << 20) + 1000],
        big[5 << 20..(5 << 20) + 1000]
    );
    assert_eq!(m.stats().bytes_fetched, 1000);
}
