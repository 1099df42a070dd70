//! The mirror and the upload against the in-process S3 server: concurrent fills of overlapping
//! ranges fetch each byte once and read back exact; uploads put the markers last.

use std::io::Read;
use std::sync::Once;
use uc_object::test_server::S3Server;
use uc_object::{upload_dir, Location, Mirror, ObjectError};

/// One server for this test binary, its environment set once for the store clients; the guard
/// keeps tests that make it fail from overlapping the others.
fn server() -> (&'static S3Server, std::sync::MutexGuard<'static, ()>) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    static S: std::sync::OnceLock<S3Server> = std::sync::OnceLock::new();
    static ENV: Once = Once::new();
    let s = S.get_or_init(|| {
        let s = S3Server::start().unwrap();
        s.bucket("mirror").unwrap();
        s
    });
    ENV.call_once(|| {
        for (k, v) in s.env() {
            // SAFETY (edition 2021: safe): set once, before any client of this binary reads it.
            std::env::set_var(k, v);
        }
        std::env::set_var("UC_OBJECT_RETRY_TIMEOUT", "2");
    });
    (s, guard)
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
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

#[test]
fn concurrent_fills_fetch_each_byte_once_and_read_back_exact() {
    let (s, _one) = server();
    let data = bytes(20 << 20, 7);
    let dir = s.root().join("mirror/a");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("blob.bin"), &data).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let m = Mirror::open(
        Location::parse("s3://mirror/a").unwrap(),
        Some(cache.path()),
    )
    .unwrap();
    let path = m.path().join("blob.bin");
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let (path, data) = (&path, &data);
            sc.spawn(move || {
                for i in 0..6u64 {
                    let start = ((t * 7 + i * 13) % 17) << 20;
                    let end = (start + (3 << 20) + t * 1000).min(data.len() as u64);
                    uc_torch::lazy::need(path, std::slice::from_ref(&(start..end))).unwrap();
                    let mut f = std::fs::File::open(path).unwrap();
                    let mut got = vec![0u8; (end - start) as usize];
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start)).unwrap();
                    f.read_exact(&mut got).unwrap();
                    assert!(
                        got == data[start as usize..end as usize],
                        "range {start}..{end}"
                    );
                }
            });
        }
    });
    let st = m.stats();
    assert!(st.bytes_fetched >= st.bytes_needed && st.bytes_needed > 0);
    assert!(st.ratio() <= 1.05, "{st:?}");
    assert!(
        st.bytes_fetched <= data.len() as u64,
        "a byte was fetched twice: {st:?}"
    );
    let stand_in = m.path().to_path_buf();
    drop(m);
    assert!(
        !stand_in.exists(),
        "the stand-in folder is removed with the mirror"
    );
    assert!(uc_torch::lazy::lookup(&path).is_none());
}

#[test]
fn an_empty_prefix_is_not_found() {
    let _one = server();
    let e = Mirror::open(Location::parse("s3://mirror/none").unwrap(), None).unwrap_err();
    assert!(
        matches!(e, ObjectError::NotFound { ref url } if url == "s3://mirror/none"),
        "{e}"
    );
    let e = Mirror::open(Location::parse("s3://no-such-bucket/x").unwrap(), None).unwrap_err();
    assert!(
        matches!(e, ObjectError::NotFound { .. } | ObjectError::Failed { .. }),
        "{e}"
    );
}

#[test]
fn uploads_put_markers_last_and_a_failure_publishes_none() {
    let (s, _one) = server();
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join("tensors")).unwrap();
    std::fs::write(
        local.path().join("tensors/00000.safetensors"),
        bytes(20 << 20, 1),
    )
    .unwrap();
    std::fs::write(local.path().join("uc.json"), b"{}").unwrap();
    std::fs::write(local.path().join("COMPLETE"), b"x").unwrap();
    // The server dies after a few requests: the large file's parts fail, no marker appears.
    let dest = Location::parse("s3://mirror/up").unwrap();
    s.fail_after(2);
    let e = upload_dir(local.path(), &dest, &|_, _| {}).unwrap_err();
    s.revive();
    assert!(matches!(e, ObjectError::Unreachable { .. }), "{e}");
    let up = s.root().join("mirror/up");
    assert!(!up.join("COMPLETE").exists() && !up.join("uc.json").exists());
    let st = upload_dir(local.path(), &dest, &|_, _| {}).unwrap();
    assert_eq!(st.files, 3);
    assert_eq!(st.bytes, (20 << 20) + 3);
    for rel in ["tensors/00000.safetensors", "uc.json", "COMPLETE"] {
        assert_eq!(
            std::fs::read(up.join(rel)).unwrap(),
            std::fs::read(local.path().join(rel)).unwrap()
        );
    }
    // COMPLETE was written after everything else.
    let t = |rel: &str| std::fs::metadata(up.join(rel)).unwrap().modified().unwrap();
    assert!(t("COMPLETE") >= t("uc.json") && t("uc.json") >= t("tensors/00000.safetensors"));
    assert!(matches!(
        uc_object::check_free(&dest).unwrap_err(),
        ObjectError::Exists { .. }
    ));
}
