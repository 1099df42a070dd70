//! `s3://` end to end against a real S3 server on 127.0.0.1 (s3s-fs, SigV4 auth): every fixture
//! family converted from and to S3 equal to the local conversion, export, verify, inspect, the
//! bytes-fetched ratio, a missing object, a refused credential, a server that dies mid-run, resume;
//! and `gs://` through object_store's GCS client against the same server answering GCS's XML API.

mod common;

use common::{fixture, fixtures, ok, s, tree};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use uc_object::test_server::{S3Server, SECRET_KEY};

/// A server with bucket `ckpt`, the environment a client needs, and a cache folder the runs must
/// leave empty.
struct Env {
    server: S3Server,
    vars: Vec<(String, String)>,
    cache: tempfile::TempDir,
}

impl Env {
    /// The S3 server with SigV4 authentication, for `s3://` URLs.
    fn new() -> Env {
        let server = S3Server::start().expect("start the S3 server");
        let vars = server.env();
        Env::with(server, vars)
    }

    /// The server without authentication answering GCS's XML API, for `gs://` URLs.
    fn gcs() -> Env {
        let server = S3Server::start_anonymous().expect("start the server");
        let vars = server.gcs_env();
        Env::with(server, vars)
    }

    fn with(server: S3Server, vars: Vec<(String, String)>) -> Env {
        server.bucket("ckpt").unwrap();
        Env {
            server,
            vars,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `uc` against the server, with `extra` environment on top.
    fn uc(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_uc"));
        c.args(args)
            .envs(self.vars.iter().cloned())
            .env("UC_CACHE_DIR", self.cache.path())
            .env("UC_OBJECT_RETRY_TIMEOUT", "2")
            .env("UC_OBJECT_TIMEOUT", "5");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().expect("run uc")
    }

    /// Copies the files of `src` (those `keep` accepts, by relative path) to `s3://ckpt/<prefix>`.
    fn put(&self, src: &Path, prefix: &str, keep: impl Fn(&Path) -> bool) {
        for (rel, bytes) in tree(src) {
            if keep(&rel) {
                let dst = self.obj(prefix).join(rel);
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                std::fs::write(dst, bytes).unwrap();
            }
        }
    }

    /// Where object prefix `ckpt/<prefix>` lives on the server's disk.
    fn obj(&self, prefix: &str) -> PathBuf {
        self.server.root().join("ckpt").join(prefix)
    }

    /// What the runs left in the cache folder (stand-ins, work folders; not the stamps of
    /// finished uploads).
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".done"))
            .collect()
    }
}

/// Asserts two folders hold the same files with the same bytes, naming the ones that differ.
fn same(a: &Path, b: &Path, what: &str) {
    let (ta, tb) = (tree(a), tree(b));
    let differ: Vec<_> = ta
        .keys()
        .chain(tb.keys())
        .filter(|k| ta.get(*k) != tb.get(*k))
        .map(|k| (k.clone(), ta.get(k).map(Vec::len), tb.get(k).map(Vec::len)))
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: files differ (path, bytes here, bytes there): {differ:?}"
    );
}

fn failed(o: &Output) -> String {
    assert!(!o.status.success(), "uc should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A DeepSpeed fixture's checkpoint files only (its tag and `latest`, not the expected outputs).
fn ds_files(rel: &Path) -> bool {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first == "latest" || (first.starts_with("global_step") && !first.ends_with("_universal"))
}

/// A fixture: its name, its folder, which of its files to upload.
type Case = (&'static str, PathBuf, fn(&Path) -> bool);

/// The DCP fixture `fsdp2_tp_2x2`, the Megatron one `gpt_tp2_dp2`, else a DeepSpeed one.
fn case(name: &'static str) -> Case {
    match name {
        "fsdp2_tp_2x2" => (name, fixtures("dcp").join(name).join("checkpoint"), |_| {
            true
        }),
        "gpt_tp2_dp2" => (
            name,
            fixtures("megatron").join(name).join("checkpoint"),
            |_| true,
        ),
        _ => (name, fixture(name), ds_files),
    }
}

#[test]
fn every_family_converts_from_and_to_s3_like_local() {
    let env = Env::new();
    let local = tempfile::tempdir().unwrap();
    let cases = [
        "zero2",
        "tp2_dp2_zero2_bf16",
        "moe_ep2_zero2",
        "ep2_tp2_zero1",
        "fsdp2_tp_2x2",
        "gpt_tp2_dp2",
    ]
    .map(case);
    for (name, src, keep) in cases {
        env.put(&src, &format!("in/{name}"), keep);
        let url = format!("s3://ckpt/in/{name}");
        for format in ["native", "deepspeed", "dcp", "torch_dist"] {
            if (format == "deepspeed" && !name.contains("zero"))
                || (format == "torch_dist" && !name.starts_with("gpt"))
            {
                continue;
            }
            let want = local.path().join(format!("{name}-{format}-local"));
            ok(&env.uc(&["convert", s(&src), s(&want), "--format", format], &[]));
            // S3 → local.
            let got = local.path().join(format!("{name}-{format}-s3"));
            ok(&env.uc(&["convert", &url, s(&got), "--format", format], &[]));
            same(&got, &want, &format!("{name} {format}: s3 → local"));
            // S3 → S3.
            let out = format!("out/{name}-{format}");
            let j = ok(&env.uc(
                &[
                    "convert",
                    &url,
                    &format!("s3://ckpt/{out}"),
                    "--format",
                    format,
                    "--json",
                ],
                &[],
            ));
            let j: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
            assert_eq!(j["output"], format!("s3://ckpt/{out}"));
            assert!(j["remote"]["upload"]["objects"].as_u64().unwrap() > 0);
            same(&env.obj(&out), &want, &format!("{name} {format}: s3 → s3"));
        }
        // A native checkpoint in S3 as input: like the same checkpoint read locally.
        let native = format!("s3://ckpt/out/{name}-native");
        let local_native = local.path().join(format!("{name}-native-local"));
        let want = local.path().join(format!("{name}-again-local"));
        ok(&env.uc(
            &["convert", s(&local_native), s(&want), "--format", "dcp"],
            &[],
        ));
        let got = local.path().join(format!("{name}-again-s3"));
        ok(&env.uc(&["convert", &native, s(&got), "--format", "dcp"], &[]));
        same(&got, &want, &format!("{name}: native in s3 → dcp"));
        let o = ok(&env.uc(&["verify", &native, "--json"], &[]));
        let j: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
        assert_eq!(j["ok"], true, "{o}");
        ok(&env.uc(&["inspect", &url], &[]));
    }
    // One flipped bit in an object of a native checkpoint in S3: verify fails naming the file.
    let f = env.obj("out/zero2-native/tensors/00000.safetensors");
    let mut b = std::fs::read(&f).unwrap();
    let at = b.len() - 5;
    b[at] ^= 1;
    std::fs::write(&f, b).unwrap();
    let e = failed(&env.uc(&["verify", "s3://ckpt/out/zero2-native"], &[]));
    assert!(e.contains("tensors/00000.safetensors"), "{e}");
    // A remote output that already holds a finished checkpoint is refused, untouched.
    let e = failed(&env.uc(
        &[
            "convert",
            "s3://ckpt/in/zero2",
            "s3://ckpt/out/zero2-native",
        ],
        &[],
    ));
    assert!(e.contains("already holds a finished checkpoint"), "{e}");
    assert!(
        env.leftovers().is_empty(),
        "left in the cache: {:?}",
        env.leftovers()
    );
}

#[test]
fn gs_urls_convert_verify_and_export_like_local() {
    let env = Env::gcs();
    let local = tempfile::tempdir().unwrap();
    let cases = ["zero2", "fsdp2_tp_2x2", "gpt_tp2_dp2"].map(case);
    for (name, src, keep) in cases {
        env.put(&src, &format!("in/{name}"), keep);
        let url = format!("gs://ckpt/in/{name}");
        let want = local.path().join(format!("{name}-local"));
        ok(&env.uc(&["convert", s(&src), s(&want)], &[]));
        let got = local.path().join(format!("{name}-gs"));
        ok(&env.uc(&["convert", &url, s(&got)], &[]));
        same(&got, &want, &format!("{name}: gs → local"));
        let out = format!("gs://ckpt/out/{name}");
        ok(&env.uc(&["convert", &url, &out], &[]));
        same(
            &env.obj(&format!("out/{name}")),
            &want,
            &format!("{name}: gs → gs"),
        );
        let v = ok(&env.uc(&["verify", &out, "--json"], &[]));
        assert!(v.contains(r#""ok":true"#), "{v}");
    }
    let src = fixture("zero2");
    let want = local.path().join("hf");
    ok(&env.uc(&["export", s(&src), s(&want)], &[]));
    let j = ok(&env.uc(
        &["export", "gs://ckpt/in/zero2", "gs://ckpt/hf", "--json"],
        &[],
    ));
    same(&env.obj("hf"), &want, "export gs → gs");
    let j: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
    assert!(
        j["remote"]["fetch"]["ratio"].as_f64().unwrap() <= 1.05,
        "{j}"
    );
    let e = failed(&env.uc(&["inspect", "gs://ckpt/nothing-here"], &[]));
    assert!(e.contains("gs://ckpt/nothing-here: no such object"), "{e}");
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn file_urls_convert_verify_and_export_like_local() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let url = |p: &Path| format!("file://{}", p.display());
    for name in ["zero2", "fsdp2_tp_2x2", "gpt_tp2_dp2"] {
        let (_, src, _) = case(name);
        let want = dir.path().join(format!("{name}-local"));
        ok(&env.uc(&["convert", s(&src), s(&want), "--format", "dcp"], &[]));
        let out = dir.path().join(format!("{name}-url"));
        ok(&env.uc(&["convert", &url(&src), &url(&out), "--format", "dcp"], &[]));
        same(&out, &want, &format!("{name}: file:// → file://"));
    }
    let src = fixture("zero2");
    let native = dir.path().join("native");
    ok(&env.uc(&["convert", &url(&src), &url(&native)], &[]));
    let v = ok(&env.uc(&["verify", &url(&native), "--json"], &[]));
    assert!(v.contains(r#""ok":true"#), "{v}");
    let (want, got) = (dir.path().join("hf-local"), dir.path().join("hf-url"));
    ok(&env.uc(&["export", s(&src), s(&want)], &[]));
    ok(&env.uc(&["export", &url(&src), &url(&got)], &[]));
    same(&got, &want, "export file:// → file://");
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn export_from_s3_to_s3_equals_local_and_fetches_what_it_needs() {
    let (env, local) = zero2_env();
    let src = fixture("zero2");
    let want = local.path().join("hf");
    ok(&env.uc(&["export", s(&src), s(&want)], &[]));
    let j = ok(&env.uc(&["export", "s3://ckpt/in", "s3://ckpt/hf", "--json"], &[]));
    let j: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
    same(&env.obj("hf"), &want, "export");
    let f = &j["remote"]["fetch"];
    let (fetched, needed) = (
        f["bytes_fetched"].as_u64().unwrap(),
        f["bytes_needed"].as_u64().unwrap(),
    );
    assert!(needed > 0 && fetched >= needed, "{j}");
    assert!(f["ratio"].as_f64().unwrap() <= 1.05, "{j}");
    assert!(f["requests"].as_u64().unwrap() > 0);
    // Export reads the weights only: far less than the checkpoint holds.
    let total: u64 = tree(&env.obj("in")).values().map(|b| b.len() as u64).sum();
    assert!(fetched < total / 2, "fetched {fetched} of {total}");
    // One tensor: only its runs of the ZeRO flat partitions are fetched.
    let one = local.path().join("one");
    ok(&env.uc(&["export", s(&src), s(&one), "--only", "^lm_head"], &[]));
    let j1 = ok(&env.uc(
        &[
            "export",
            "s3://ckpt/in",
            "s3://ckpt/one",
            "--only",
            "^lm_head",
            "--json",
        ],
        &[],
    ));
    let j1: serde_json::Value = serde_json::from_str(j1.trim()).unwrap();
    same(&env.obj("one"), &one, "export --only");
    let f1 = &j1["remote"]["fetch"];
    let weights = std::fs::metadata(one.join("model.safetensors"))
        .unwrap()
        .len();
    let fetched1 = f1["bytes_fetched"].as_u64().unwrap();
    assert!(fetched1 < fetched / 2, "{fetched1} of {fetched}: {j1}");
    assert!(fetched1 >= weights / 2, "{j1}");
    let v = tempfile::tempdir().unwrap();
    let page = v.path().join("view.html");
    ok(&env.uc(&["view", "s3://ckpt/in", "--out", s(&page)], &[]));
    assert!(std::fs::read_to_string(&page).unwrap().contains("<svg"));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn missing_objects_and_refused_credentials_are_typed_errors() {
    let env = Env::new();
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("x");
    let e = failed(&env.uc(&["convert", "s3://ckpt/nothing-here", s(&dst)], &[]));
    assert!(e.contains("s3://ckpt/nothing-here: no such object"), "{e}");
    assert!(!dst.exists());
    // A rank file missing from the remote checkpoint: the local error, naming the object's URL.
    env.put(&fixture("zero2"), "in", ds_files);
    std::fs::remove_file(env.obj("in/global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt"))
        .unwrap();
    let e = failed(&env.uc(&["convert", "s3://ckpt/in", s(&dst)], &[]));
    assert!(e.contains("s3://ckpt/in/global_step3"), "{e}");
    assert!(!dst.exists());
    // A wrong secret: refused, and no secret in the message.
    env.put(&fixture("zero2"), "in", ds_files);
    let e = failed(&env.uc(
        &["convert", "s3://ckpt/in", s(&dst)],
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret-key-abcdef")],
    ));
    assert!(e.contains("access refused"), "{e}");
    assert!(
        !e.contains("wrong-secret-key-abcdef") && !e.contains(SECRET_KEY),
        "{e}"
    );
    let e = failed(&env.uc(
        &["export", s(&fixture("zero2")), "s3://ckpt/hf"],
        &[("AWS_ACCESS_KEY_ID", "nobody")],
    ));
    assert!(e.contains("access refused"), "{e}");
    assert!(!env.obj("hf").exists());
    // The stand-in folder of a killed run (its lock free, a few minutes old) is removed by the next.
    let dead = env.cache.path().join(".uc-remote-dead1");
    std::fs::create_dir_all(dead.join("global_step3")).unwrap();
    std::fs::write(dead.join("global_step3/x.pt"), b"stale").unwrap();
    let lock = std::fs::File::create(env.cache.path().join(".uc-remote-dead1.lock")).unwrap();
    lock.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(300))
        .unwrap();
    drop(lock);
    ok(&env.uc(&["inspect", "s3://ckpt/in"], &[]));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    // Credentials in the URL are refused without echoing them.
    let e = failed(&env.uc(&["inspect", "s3://AKIAX:hunter22@ck/in"], &[]));
    assert!(
        e.contains("credentials in the URL") && !e.contains("hunter22"),
        "{e}"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

/// A server holding the zero2 fixture at `s3://ckpt/in`, and a temp folder.
fn zero2_env() -> (Env, tempfile::TempDir) {
    let env = Env::new();
    env.put(&fixture("zero2"), "in", ds_files);
    (env, tempfile::tempdir().unwrap())
}

/// [`zero2_env`] with the fixture's local native conversion in the temp folder (what every remote
/// run must equal).
fn zero2_in_s3() -> (Env, tempfile::TempDir, PathBuf) {
    let (env, local) = zero2_env();
    let want = local.path().join("want");
    ok(&env.uc(&["convert", s(&fixture("zero2")), s(&want)], &[]));
    (env, local, want)
}

#[test]
fn a_server_dying_mid_run_publishes_nothing_and_the_rerun_finishes() {
    let (env, local, want) = zero2_in_s3();
    // How many requests a whole run makes.
    let before = env.server.served();
    ok(&env.uc(&["convert", "s3://ckpt/in", "s3://ckpt/probe"], &[]));
    let whole = env.server.served() - before;
    // Dying while reading: an error, no local output.
    let dst = local.path().join("x");
    env.server.fail_after(3);
    let e = failed(&env.uc(&["convert", "s3://ckpt/in", s(&dst)], &[]));
    assert!(e.contains("did not answer"), "{e}");
    assert!(!dst.exists());
    // A stalled server (the connection open, no answer): each request times out, then an error.
    env.server.revive();
    env.server.stall_after(3);
    let t = std::time::Instant::now();
    let e = failed(&env.uc(
        &["convert", "s3://ckpt/in", s(&dst)],
        &[("UC_OBJECT_TIMEOUT", "1")],
    ));
    assert!(e.contains("did not answer"), "{e}");
    assert!(t.elapsed().as_secs() < 60, "took {:?}", t.elapsed());
    assert!(!dst.exists());
    // Dying while uploading (the last requests are the markers): no marker, then a rerun finishes.
    env.server.revive();
    env.server.fail_after(whole - 2);
    let e = failed(&env.uc(&["convert", "s3://ckpt/in", "s3://ckpt/out"], &[]));
    assert!(
        e.contains("rerunning the same command uploads them again"),
        "{e}"
    );
    env.server.revive();
    assert!(!env.obj("out/COMPLETE").exists());
    let o = ok(&env.uc(&["convert", "s3://ckpt/in", "s3://ckpt/out"], &[]));
    assert!(o.contains("earlier run"), "{o}");
    same(&env.obj("out"), &want, "resumed upload");
    // A flaky network (every third request dropped unanswered): reads, uploads and multipart
    // calls are retried with backoff, and the result is the same.
    env.server.drop_every(3);
    let flaky = env.uc(
        &["convert", "s3://ckpt/in", "s3://ckpt/flaky"],
        &[("UC_OBJECT_RETRY_TIMEOUT", "30")],
    );
    env.server.revive();
    ok(&flaky);
    same(&env.obj("flaky"), &want, "through a flaky network");
    // `--fresh` after a failed upload: the earlier run's work folder is discarded (its recorded
    // uploads aborted) and the conversion runs again.
    env.server.fail_after(whole - 2);
    failed(&env.uc(&["convert", "s3://ckpt/in", "s3://ckpt/fresh"], &[]));
    env.server.revive();
    // Not while a process of the job runs (here: holds the converting lock).
    let work = std::fs::read_dir(env.cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".uc-upload-")
        })
        .expect("the failed run's work folder");
    let running = std::fs::File::open(work.join("converting.lock")).unwrap();
    running.lock_shared().unwrap();
    let e = failed(&env.uc(
        &["convert", "s3://ckpt/in", "s3://ckpt/fresh", "--fresh"],
        &[],
    ));
    assert!(e.contains("still runs"), "{e}");
    drop(running);
    let o = ok(&env.uc(
        &["convert", "s3://ckpt/in", "s3://ckpt/fresh", "--fresh"],
        &[],
    ));
    assert!(o.contains("converted") && !o.contains("earlier run"), "{o}");
    same(&env.obj("fresh"), &want, "--fresh after a failed upload");
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn cooperating_workers_read_from_and_write_to_s3() {
    let (env, local, want) = zero2_in_s3();
    // `uc convert s3://ckpt/in OUT --world-size 2 --rank R [--json]`, to run on a thread.
    let run = |out: &str, rank: &str, json: bool| {
        let mut args: Vec<String> = [
            "convert",
            "s3://ckpt/in",
            out,
            "--world-size",
            "2",
            "--rank",
            rank,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if json {
            args.push("--json".into());
        }
        let env = &env;
        move || env.uc(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    // S3 in, local out: each worker fetches what its share reads.
    let out = local.path().join("two");
    let outs = std::thread::scope(|sc| {
        let a = sc.spawn(run(s(&out), "0", false));
        let b = sc.spawn(run(s(&out), "1", false));
        [a.join().unwrap(), b.join().unwrap()]
    });
    outs.iter().for_each(|o| drop(ok(o)));
    same(&out, &want, "2 workers, s3 → local");
    // S3 in, S3 out: each worker that is still there once the conversion is complete uploads its
    // share of the pieces, the last one the markers; every byte goes up once.
    let outs = std::thread::scope(|sc| {
        let a = sc.spawn(run("s3://ckpt/two", "0", true));
        let b = sc.spawn(run("s3://ckpt/two", "1", true));
        [a.join().unwrap(), b.join().unwrap()]
    });
    let sent: u64 = outs
        .iter()
        .map(|o| {
            let j: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
            j["remote"]["upload"]["bytes"].as_u64().unwrap_or(0)
        })
        .sum();
    same(&env.obj("two"), &want, "2 workers, s3 → s3");
    let whole: u64 = tree(&want).values().map(|b| b.len() as u64).sum();
    assert_eq!(sent, whole, "bytes uploaded by the two workers");
    let late = ok(&run("s3://ckpt/two", "1", false)());
    assert!(late.contains("already"), "{late}");
    // One worker after the other: the first finds no one else converting and uploads nothing;
    // the second completes the conversion and the upload.
    let json = |o: &Output| -> serde_json::Value { serde_json::from_str(&ok(o)).unwrap() };
    let first = json(&run("s3://ckpt/seq", "0", true)());
    assert_eq!(first["upload"], "others_stopped", "{first}");
    assert!(!env.obj("seq").exists());
    let second = json(&run("s3://ckpt/seq", "1", true)());
    assert_eq!(second["upload"], "finished", "{second}");
    same(
        &env.obj("seq"),
        &want,
        "2 workers one after the other, s3 → s3",
    );
    // Workers on several hosts need one work folder: without UC_CACHE_DIR they are refused.
    let args = [
        "convert",
        "s3://ckpt/in",
        "s3://ckpt/three",
        "--world-size",
        "2",
        "--rank",
        "0",
    ];
    let mut c = Command::new(env!("CARGO_BIN_EXE_uc"));
    let o = c
        .args(args)
        .envs(env.vars.iter().cloned())
        .output()
        .unwrap();
    let e = failed(&o);
    assert!(e.contains("UC_CACHE_DIR"), "{e}");
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_cache_budget_drops_fetched_bytes_between_tensors_and_converts_alike() {
    let (env, local, want) = zero2_in_s3();
    let total: u64 = tree(&env.obj("in")).values().map(|b| b.len() as u64).sum();
    // A budget of 0: every stand-in is punched back to a hole after every tensor.
    let zero = [("UC_CACHE_MAX", "0")];
    let fetch = |out: &str| -> serde_json::Value {
        let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        j["remote"]["fetch"].clone()
    };
    let native = local.path().join("native");
    let f = fetch(&ok(
        &env.uc(&["convert", "s3://ckpt/in", s(&native), "--json"], &zero)
    ));
    same(&native, &want, "native under UC_CACHE_MAX=0");
    let (peak, released, fetched) = (
        f["peak_cached"].as_u64().unwrap(),
        f["bytes_released"].as_u64().unwrap(),
        f["bytes_fetched"].as_u64().unwrap(),
    );
    assert!(released > 0 && peak > 0, "{f}");
    assert!(
        peak < total / 2,
        "held {peak} of {total} bytes at once: {f}"
    );
    assert!(fetched >= released, "{f}");
    // Without a budget nothing is dropped, and the stand-ins hold everything fetched.
    let all = fetch(&ok(&env.uc(
        &[
            "convert",
            "s3://ckpt/in",
            s(&local.path().join("all")),
            "--json",
        ],
        &[("UC_CACHE_MAX", "unlimited")],
    )));
    assert_eq!(all["bytes_released"].as_u64(), Some(0), "{all}");
    assert!(all["peak_cached"].as_u64().unwrap() > peak, "{all} vs {f}");
    // `src` (uploaded as `s3://ckpt/<prefix>`) converted to `fmt` under `budget` equals its local
    // conversion, and the stand-ins released bytes on the way.
    let alike = |src: &Path, prefix: &str, fmt: &str, budget: &str, what: &str| {
        let want = local.path().join(format!("{prefix}-{fmt}-local"));
        ok(&env.uc(&["convert", s(src), s(&want), "--format", fmt], &[]));
        let got = local.path().join(format!("{prefix}-{fmt}-s3"));
        let url = format!("s3://ckpt/{prefix}");
        let args = ["convert", &url, s(&got), "--format", fmt, "--json"];
        let f = fetch(&ok(&env.uc(&args, &[("UC_CACHE_MAX", budget)])));
        same(
            &got,
            &want,
            &format!("{what} → {fmt} under UC_CACHE_MAX={budget}"),
        );
        assert!(f["bytes_released"].as_u64().unwrap() > 0, "{what}: {f}");
    };
    for fmt in ["deepspeed", "dcp", "torch_dist"] {
        alike(&fixture("zero2"), "in", fmt, "0", "ZeRO-2");
    }
    let (hf_want, hf) = (local.path().join("hf-local"), local.path().join("hf-s3"));
    ok(&env.uc(&["export", s(&fixture("zero2")), s(&hf_want)], &[]));
    ok(&env.uc(&["export", "s3://ckpt/in", s(&hf)], &zero));
    same(&hf, &hf_want, "export under UC_CACHE_MAX=0");
    // Native DeepSpeed MoE: each local expert slot (its members stacked) is a unit of its own.
    let moe = fixture("moe_ep2_zero2");
    env.put(&moe, "moe", ds_files);
    alike(&moe, "moe", "deepspeed", "0", "native MoE");
    // A DCP input, chunk archives dropped and fetched again as tensors need them.
    let (_, dcp, _) = case("fsdp2_tp_2x2");
    env.put(&dcp, "dcp", |_| true);
    alike(&dcp, "dcp", "native", "1K", "FSDP2 DCP");
    // Megatron's torch_dist (TP 2 × DP 2) back to torch_dist: TP shards merged and cut again.
    let (_, meg, _) = case("gpt_tp2_dp2");
    env.put(&meg, "meg", |_| true);
    alike(&meg, "meg", "torch_dist", "0", "Megatron");
    // `uc verify` hashes runs of parts as units: it drops bytes too, and still catches a flipped bit.
    let v = ok(&env.uc(
        &["verify", &format!("file://{}", native.display()), "--json"],
        &zero,
    ));
    let vj: serde_json::Value = serde_json::from_str(v.trim()).unwrap();
    assert_eq!(vj["ok"], true, "{v}");
    assert!(
        vj["remote"]["fetch"]["bytes_released"].as_u64().unwrap() > 0,
        "{v}"
    );
    let file = native.join("tensors").join("00000.safetensors");
    let mut b = std::fs::read(&file).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&file, b).unwrap();
    let e = failed(&env.uc(&["verify", &format!("file://{}", native.display())], &zero));
    assert!(e.contains("checksum mismatch"), "{e}");
    // A value that is not a size: refused before anything is read or written.
    let bad = local.path().join("bad");
    let e = failed(&env.uc(
        &["convert", "s3://ckpt/in", s(&bad)],
        &[("UC_CACHE_MAX", "lots")],
    ));
    assert!(e.contains("UC_CACHE_MAX") && e.contains("`lots`"), "{e}");
    assert!(!bad.exists());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}
