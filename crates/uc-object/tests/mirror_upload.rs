//! The mirror and the upload against the in-process S3 server: concurrent fills of overlapping
//! ranges fetch each byte once and read back exact; uploads put the markers last.

use std::io::Read;
use std::sync::Once;
use uc_object::test_server::S3Server;
mod common;

use common::{
    all, all_sent_by_one_while_another_runs, bytes, checkpoint, split_between_two, FILES,
};
use uc_object::{upload_shared, Location, Mirror, ObjectError, UploadEnd, UploadStats};

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
fn an_object_rewritten_during_a_read_is_refused_not_mixed() {
    // file:// lists ETags (inode, modification time, size) and honours If-Match, as the clouds do.
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("blob.bin");
    std::fs::write(&blob, bytes(1 << 20, 3)).unwrap();
    let url = format!("file://{}", dir.path().display());
    let m = Mirror::open(Location::parse(&url).unwrap(), None).unwrap();
    let path = m.path().join("blob.bin");
    uc_torch::lazy::need(&path, std::slice::from_ref(&(0..1000))).unwrap();
    // Rewritten with other bytes of the same size: the next range is not taken from it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&blob, bytes(1 << 20, 4)).unwrap();
    let e = uc_torch::lazy::need(&path, std::slice::from_ref(&(500_000..501_000))).unwrap_err();
    let uc_torch::TorchError::Io { source, .. } = &e else {
        panic!("{e}")
    };
    let e = uc_object::find_in_io(source).expect("the store's error inside the I/O error");
    assert!(
        matches!(e, ObjectError::Changed { url: u, .. } if *u == format!("{url}/blob.bin")),
        "{e}"
    );
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

/// Every file of `local` is under the server's `up` folder with the same bytes, COMPLETE last.
fn uploaded_like(up: &std::path::Path, local: &std::path::Path) {
    for rel in FILES {
        assert_eq!(
            std::fs::read(up.join(rel)).unwrap(),
            std::fs::read(local.join(rel)).unwrap(),
            "{rel}"
        );
    }
    let t = |rel: &str| std::fs::metadata(up.join(rel)).unwrap().modified().unwrap();
    assert!(t("COMPLETE") >= t("uc.json") && t("uc.json") >= t("tensors/00000.safetensors"));
}

#[test]
fn uploads_put_markers_last_and_a_failure_publishes_none() {
    let (s, _one) = server();
    let local = checkpoint();
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("upload");
    // The server dies after a few requests: the large file's parts fail, no marker appears.
    let dest = Location::parse("s3://mirror/up").unwrap();
    s.fail_after(2);
    let e = upload_shared(local.path(), &dest, &state, &all, &|_, _| {}).unwrap_err();
    s.revive();
    assert!(matches!(e, ObjectError::Unreachable { .. }), "{e}");
    let up = s.root().join("mirror/up");
    assert!(!up.join("COMPLETE").exists() && !up.join("uc.json").exists());
    // The failed run left no records: the rerun sends everything.
    let end = upload_shared(local.path(), &dest, &state, &all, &|_, _| {}).unwrap();
    let UploadEnd::Finished(st) = end else {
        panic!("{end:?}")
    };
    assert_eq!(st.files, 4);
    assert_eq!(st.bytes, (20 << 20) + 1000 + 3);
    uploaded_like(&up, local.path());
    assert!(matches!(
        uc_object::check_free(&dest).unwrap_err(),
        ObjectError::Exists { .. }
    ));
    // A process joining after the upload finished finds nothing to do.
    let late = upload_shared(local.path(), &dest, &state, &all, &|_, _| {}).unwrap();
    assert_eq!(late, UploadEnd::Gone);
    // Every third request dropped: creating, sending and completing the parts are retried.
    s.drop_every(3);
    let dest = Location::parse("s3://mirror/flaky").unwrap();
    let flaky_state = tempfile::tempdir().unwrap();
    let state = flaky_state.path().join("upload");
    let end = upload_shared(local.path(), &dest, &state, &all, &|_, _| {});
    s.revive();
    assert!(matches!(end, Ok(UploadEnd::Finished(_))), "{end:?}");
    uploaded_like(&s.root().join("mirror/flaky"), local.path());
}

#[test]
fn two_processes_split_an_upload_and_the_last_one_completes_it() {
    let (s, _one) = server();
    let local = checkpoint();
    let dir = tempfile::tempdir().unwrap();
    let dest = Location::parse("s3://mirror/split").unwrap();
    let up = s.root().join("mirror/split");
    split_between_two(local.path(), &dest, &dir.path().join("upload"), || {
        assert!(!up.join("uc.json").exists() && !up.join("tensors/00000.safetensors").exists())
    });
    uploaded_like(&up, local.path());
    // A process whose share another one already sent (it was killed after sending) sends
    // nothing and, being the last, finishes.
    let dest = Location::parse("s3://mirror/resent").unwrap();
    let state = dir.path().join("again");
    all_sent_by_one_while_another_runs(local.path(), &dest, &state);
    let end = upload_shared(local.path(), &dest, &state, &all, &|_, _| {}).unwrap();
    assert_eq!(end, UploadEnd::Finished(UploadStats { files: 3, bytes: 3 }));
    uploaded_like(&s.root().join("mirror/resent"), local.path());
    // Records of parts sent into uploads whose ids are gone (a crash while clearing them) do not
    // count: the next run makes new uploads and sends everything into them.
    let dest = Location::parse("s3://mirror/stale").unwrap();
    let state = dir.path().join("stale");
    all_sent_by_one_while_another_runs(local.path(), &dest, &state);
    std::fs::remove_file(state.join("ids")).unwrap();
    let end = upload_shared(local.path(), &dest, &state, &all, &|_, _| {}).unwrap();
    let whole = (20 << 20) + 1000 + 3;
    assert_eq!(
        end,
        UploadEnd::Finished(UploadStats {
            files: 4,
            bytes: whole
        })
    );
    uploaded_like(&s.root().join("mirror/stale"), local.path());
}
