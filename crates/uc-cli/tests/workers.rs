//! Cooperating workers and restarts of `uc convert`: N processes give the bytes one process gives,
//! launcher variables are honoured, a SIGKILL at any moment leaves nothing that looks complete and a
//! rerun finishes with nothing stale beside the output, live writers of another job and a full disk
//! are refused with typed errors.

mod common;

use common::{fixture, ok, s, tree};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use uc_schema::{DType, Role, TensorMeta, Topology};
use uc_store::native::{NativeOptions, NativeWriter};

fn uc_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uc"));
    c.args(args);
    for v in [
        "WORLD_SIZE",
        "RANK",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_RANK",
        "PMI_SIZE",
        "PMI_RANK",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("run uc")
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn uc")
}

/// Names in `dir` other than `keep` (what a run left beside its output).
fn beside(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

/// Asserts a run left nothing in `dir` beside the names in `keep` (`what` labels a failure).
fn assert_nothing_beside(dir: &Path, keep: &[&str], what: &str) {
    assert_eq!(beside(dir, keep), Vec::<String>::new(), "{what}");
}

/// Converts `input` by one process into `<tmp>/single`: what every worker run must equal.
fn single_conversion(tmp: &Path, input: &Path) -> std::path::PathBuf {
    let single = tmp.join("single");
    ok(&run(uc_cmd(&["convert", s(input), s(&single)])));
    single
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (tree(a), tree(b));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        assert!(v == &tb[k], "{} differs", k.display());
    }
}

fn verify_ok(dir: &Path) -> bool {
    run(uc_cmd(&["verify", s(dir)])).status.success()
}

/// A native checkpoint of `n` fp32 tensors of `elems` elements each, with distinct contents.
fn synthetic_input(dir: &Path, n: usize, elems: u64) {
    let metas: Vec<TensorMeta> = (0..n)
        .map(|i| {
            TensorMeta::new(
                format!("layers.{i}.weight"),
                DType::F32,
                vec![elems],
                Role::Fp32Master,
            )
        })
        .collect();
    let w = NativeWriter::create(dir, &metas, &NativeOptions::default()).unwrap();
    for (i, m) in metas.iter().enumerate() {
        let bytes: Vec<u8> = (0..elems)
            .flat_map(|j| ((i as f32) * 0.5 + j as f32 * 1e-3).to_le_bytes())
            .collect();
        w.write_tensor(&m.name, &m.role, &bytes).unwrap();
    }
    w.finish(Topology::default(), BTreeMap::new()).unwrap();
}

#[test]
fn workers_by_flags_give_the_single_process_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("zero2");
    let single = single_conversion(tmp.path(), &input);
    for world in [2usize, 3] {
        let out = tmp.path().join(format!("w{world}"));
        let children: Vec<Child> = (0..world)
            .map(|r| {
                spawn(uc_cmd(&[
                    "convert",
                    s(&input),
                    s(&out),
                    "--world-size",
                    &world.to_string(),
                    "--rank",
                    &r.to_string(),
                    "--json",
                ]))
            })
            .collect();
        let mut published = 0;
        let mut share = 0u64;
        for c in children {
            let o = c.wait_with_output().unwrap();
            let j: serde_json::Value = serde_json::from_str(ok(&o).trim()).unwrap();
            published += j["published"].as_bool().unwrap() as usize;
            share += j["share_tensors"].as_u64().unwrap();
            assert_eq!(j["world_size"], world);
        }
        assert_eq!(published, 1, "exactly one worker publishes");
        assert_eq!(share, 108, "shares cover every tensor once");
        assert_same_tree(&single, &out);
        assert!(verify_ok(&out));
    }
    assert_nothing_beside(tmp.path(), &["single", "w2", "w3"], "");
}

#[test]
fn launcher_variables_pick_rank_and_size_and_late_workers_finish_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("tp2_zero1");
    let single = single_conversion(tmp.path(), &input);
    let launchers = [
        ("WORLD_SIZE", "RANK"),
        ("SLURM_NTASKS", "SLURM_PROCID"),
        ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
        ("PMI_SIZE", "PMI_RANK"),
    ];
    for (size, rank) in launchers {
        // One after the other: the first workers find shares still missing and leave the output
        // unpublished; the last one to run publishes.
        let out = tmp.path().join(size);
        for r in 0..3 {
            let mut c = uc_cmd(&["convert", s(&input), s(&out), "--json"]);
            c.env(size, "3").env(rank, r.to_string());
            let j: serde_json::Value = serde_json::from_str(ok(&run(c)).trim()).unwrap();
            assert_eq!(j["rank"], r, "{size}");
            assert_eq!(j["world_size"], 3);
            assert_eq!(j["published"], r == 2);
            assert_eq!(out.exists(), r == 2);
            if r < 2 {
                assert!(j["missing_tensors"].as_u64().unwrap() > 0);
            }
        }
        assert_same_tree(&single, &out);
    }
    let mut c = uc_cmd(&["convert", s(&input), s(&tmp.path().join("x"))]);
    c.env("WORLD_SIZE", "2").env("RANK", "2");
    let o = run(c);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("rank 2 is not in 0..2"));
}

/// Runs `args`, SIGKILLs it after `after`; returns whether it had already exited by itself, and when.
fn kill_after(args: &[&str], after: Duration) -> (bool, Duration) {
    let mut c = spawn(uc_cmd(args));
    let t = Instant::now();
    while t.elapsed() < after {
        if c.try_wait().unwrap().is_some() {
            return (true, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = c.kill();
    c.wait().unwrap();
    (false, t.elapsed())
}

/// A tiny deterministic generator for kill moments.
fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn killed_single_process_and_killed_worker_resume_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    synthetic_input(&input, 64, 1 << 20); // 64 × 4 MiB
    let single = single_conversion(tmp.path(), &input);
    let t = Instant::now();
    ok(&run(uc_cmd(&[
        "convert",
        s(&input),
        s(&tmp.path().join("timed")),
    ])));
    let full = t.elapsed();
    std::fs::remove_dir_all(tmp.path().join("timed")).unwrap();

    // One process killed at 8 random moments: never an output that fails verify; the 9th run finishes.
    // A run that ends before its moment comes shortens the span the next moments are drawn from (its
    // finished output is checked and removed, so the next run starts over).
    let out = tmp.path().join("out");
    let (mut seed, mut span, mut kills) = (11, full, 0);
    for _ in 0..60 {
        let at = span.mul_f64(0.02 + 0.9 * lcg(&mut seed));
        let (finished, took) = kill_after(&["convert", s(&input), s(&out)], at);
        if out.exists() {
            assert!(verify_ok(&out), "a run left an output that fails verify");
            assert_same_tree(&single, &out);
            std::fs::remove_dir_all(&out).unwrap();
        }
        if finished {
            span = took;
        } else {
            kills += 1;
            if kills == 8 {
                break;
            }
        }
    }
    assert_eq!(kills, 8, "kills that landed inside a run");
    ok(&run(uc_cmd(&["convert", s(&input), s(&out)])));
    assert_same_tree(&single, &out);
    assert_nothing_beside(tmp.path(), &["input", "single", "out"], "");

    // Two workers, one SIGKILLed mid-way: no output; rerunning both finishes with the same bytes.
    let out2 = tmp.path().join("out2");
    let args = |r: &'static str| {
        vec![
            "convert".to_string(),
            s(&input).to_string(),
            s(&out2).to_string(),
            "--world-size".into(),
            "2".into(),
            "--rank".into(),
            r.into(),
        ]
    };
    let a0 = args("0");
    let a1 = args("1");
    let survivor = spawn(uc_cmd(&a0.iter().map(String::as_str).collect::<Vec<_>>()));
    let a1s: Vec<&str> = a1.iter().map(String::as_str).collect();
    let (finished, _) = kill_after(&a1s, full.mul_f64(0.3));
    let o = survivor.wait_with_output().unwrap();
    ok(&o);
    if !finished && out2.exists() {
        // The kill landed after the killed worker had written and synced its whole share (it was on
        // its way out): then the output may appear, and it must be the complete one.
        assert!(
            verify_ok(&out2),
            "a killed worker's job published an output that fails verify"
        );
        assert_same_tree(&single, &out2);
    }
    let rerun: Vec<Child> = [a0, a1]
        .iter()
        .map(|a| spawn(uc_cmd(&a.iter().map(String::as_str).collect::<Vec<_>>())))
        .collect();
    for c in rerun {
        // A worker that arrives after the output appeared finds it holds this job's tensors: exit 0.
        ok(&c.wait_with_output().unwrap());
    }
    assert_same_tree(&single, &out2);
    assert!(verify_ok(&out2));
    assert_nothing_beside(tmp.path(), &["input", "single", "out", "out2"], "");
}

#[test]
fn a_rerun_reuses_verified_parts_and_redoes_corrupted_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("zero1");
    let single = single_conversion(tmp.path(), &input);
    let out = tmp.path().join("out");
    // Rank 0 of 2 alone: its share is recorded, nothing is published.
    let o = ok(&run(uc_cmd(&[
        "convert",
        s(&input),
        s(&out),
        "--world-size",
        "2",
        "--rank",
        "0",
        "--json",
    ])));
    let j: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
    assert_eq!(j["published"], false);
    let staged: Vec<String> = beside(tmp.path(), &["single"]);
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(staged[0].starts_with(".out.uc-"));
    // Corrupt one byte of the staged tensors: the rerun must not trust that part.
    let file = tmp
        .path()
        .join(&staged[0])
        .join("out/tensors/00000.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    // One worker now (another world size): reuses every verified tensor, redoes the corrupted one.
    let o = ok(&run(uc_cmd(&["convert", s(&input), s(&out), "--json"])));
    let j: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
    assert_eq!(j["published"], true);
    let reused = j["reused_tensors"].as_u64().unwrap();
    assert!(reused > 0 && reused < j["tensors"].as_u64().unwrap(), "{j}");
    assert_same_tree(&single, &out);
    assert_nothing_beside(tmp.path(), &["single", "out"], "");
    // --fresh discards a staging folder instead of reusing it.
    let out3 = tmp.path().join("out3");
    ok(&run(uc_cmd(&[
        "convert",
        s(&input),
        s(&out3),
        "--world-size",
        "2",
        "--rank",
        "1",
    ])));
    let o = ok(&run(uc_cmd(&[
        "convert",
        s(&input),
        s(&out3),
        "--fresh",
        "--json",
    ])));
    let j: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
    assert_eq!(j["reused_tensors"], 0);
    assert_same_tree(&single, &out3);
}

/// `flock(1)` holding a shared lock on `path` for a while (a live writer of another job).
fn hold_lock(path: &Path) -> Child {
    let c = Command::new("flock")
        .args(["--no-fork", "-s", s(path), "sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux");
    std::thread::sleep(Duration::from_millis(300));
    c
}

#[test]
fn live_writers_of_another_job_are_refused_and_dead_ones_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("zero1");
    let out = tmp.path().join("out");
    // A staging folder of another job whose worker is alive.
    let other = tmp.path().join(".out.uc-0123456789abcdef");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("lock"), b"").unwrap();
    let mut holder = hold_lock(&other.join("lock"));
    for format in ["native", "deepspeed"] {
        let o = run(uc_cmd(&["convert", s(&input), s(&out), "--format", format]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("live workers of another conversion"), "{err}");
        assert!(err.contains(".out.uc-0123456789abcdef"), "{err}");
        assert!(!out.exists());
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    // Now dead: removed (and said so), like the temporary folder of a killed single-process run.
    let stale_tmp = tmp.path().join(".out.tmp-999999");
    std::fs::create_dir(&stale_tmp).unwrap();
    std::fs::write(stale_tmp.join("junk"), b"half written").unwrap();
    let o = run(uc_cmd(&[
        "convert",
        s(&input),
        s(&out),
        "--format",
        "deepspeed",
    ]));
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("note: removed"), "{err}");
    assert!(err.contains(".out.uc-0123456789abcdef") && err.contains(".out.tmp-999999"));
    assert_nothing_beside(tmp.path(), &["out"], "");
}

/// Mounts a tmpfs of `size` at `dir` (root only); false when this machine does not allow it.
fn mount_tmpfs(dir: &Path, size: &str, remount: bool) -> bool {
    let opts = if remount {
        format!("remount,size={size}")
    } else {
        format!("size={size}")
    };
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "tmpfs", s(dir)])
        .stderr(Stdio::null())
        .status()
        .map(|st| st.success())
        .unwrap_or(false)
}

#[test]
fn a_full_disk_is_refused_before_writing_and_a_rerun_after_freeing_space_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    synthetic_input(&input, 8, 1 << 18); // 8 MiB of tensors
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    if !mount_tmpfs(&mnt, "4m", false) {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    let out = mnt.join("out");
    for format in ["native", "deepspeed", "dcp"] {
        let o = run(uc_cmd(&["convert", s(&input), s(&out), "--format", format]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("not enough free space"), "{err}");
        assert!(err.contains(s(&mnt)), "{err}");
        assert_nothing_beside(&mnt, &[], format);
    }
    assert!(mount_tmpfs(&mnt, "64m", true));
    ok(&run(uc_cmd(&["convert", s(&input), s(&out)])));
    assert!(verify_ok(&out));
    assert_nothing_beside(&mnt, &["out"], "");
}

#[test]
fn export_by_workers_and_after_a_kill_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    synthetic_input(&input, 32, 1 << 18); // 32 × 1 MiB
    let single = tmp.path().join("single");
    let shard = ["--max-shard-size", "5MB"];
    let export = |out: &Path, extra: &[&str]| {
        let mut a = vec!["export", s(&input), s(out)];
        a.extend_from_slice(&shard);
        a.extend_from_slice(extra);
        uc_cmd(
            &a.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    };
    ok(&run(export(&single, &[])));
    assert!(single.join("model.safetensors.index.json").is_file());
    // Two workers into a folder that already holds config.json: the files join it, index last.
    let w2 = tmp.path().join("w2");
    std::fs::create_dir(&w2).unwrap();
    std::fs::write(w2.join("config.json"), b"{}").unwrap();
    let children: Vec<Child> = ["0", "1"]
        .iter()
        .map(|r| spawn(export(&w2, &["--world-size", "2", "--rank", r, "--json"])))
        .collect();
    let mut published = 0;
    for c in children {
        let j: serde_json::Value =
            serde_json::from_str(ok(&c.wait_with_output().unwrap()).trim()).unwrap();
        published += j["published"].as_bool().unwrap() as usize;
    }
    assert_eq!(published, 1);
    std::fs::remove_file(w2.join("config.json")).unwrap();
    assert_same_tree(&single, &w2);
    // A single export killed mid-way, then rerun: the same files, nothing stale beside them.
    let k = tmp.path().join("k");
    let mut killed = false;
    for ms in [5u64, 10, 20, 40, 80] {
        let mut c = spawn(export(&k, &[]));
        std::thread::sleep(Duration::from_millis(ms));
        killed |= c.try_wait().unwrap().is_none();
        let _ = c.kill();
        c.wait().unwrap();
        if k.exists() {
            break;
        }
    }
    // The rerun finishes the job, or (killed after publishing) finds it done and clears what is left.
    let j: serde_json::Value =
        serde_json::from_str(ok(&run(export(&k, &["--json"]))).trim()).unwrap();
    assert!(j["published"] == true || j["already"] == true, "{j}");
    eprintln!("export killed mid-way: {killed}");
    assert_same_tree(&single, &k);
    assert_nothing_beside(tmp.path(), &["input", "single", "w2", "k"], "");
}

#[test]
fn workers_rerun_on_a_finished_but_unpublished_job_all_succeed() {
    // Every share done, nothing published (the last worker died before publishing): the rerun's
    // first worker publishes at once, and one that starts while it does (or after) succeeds too.
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("tp2_dp2_zero2_bf16");
    let single = single_conversion(tmp.path(), &input);
    for delay_ms in 0..10u64 {
        let d = tmp.path().join(format!("r{delay_ms}"));
        std::fs::create_dir(&d).unwrap();
        let out = d.join("out");
        let rank = |r: &str| {
            uc_cmd(&[
                "convert",
                s(&input),
                s(&out),
                "--world-size",
                "2",
                "--rank",
                r,
            ])
        };
        ok(&run(rank("0")));
        let staged = d.join(&beside(&d, &[])[0]);
        let mut holder = hold_lock(&staged.join("lock")); // keeps rank 1 from being last
        ok(&run(rank("1")));
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(!out.exists());
        let a = spawn(rank("0"));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let b = spawn(rank("1"));
        ok(&a.wait_with_output().unwrap());
        ok(&b.wait_with_output().unwrap());
        assert_same_tree(&single, &out);
        assert_nothing_beside(&d, &["out"], &format!("delay {delay_ms} ms"));
    }
}

#[test]
fn a_disk_that_fills_mid_run_keeps_the_finished_tensors_for_the_rerun() {
    // A tmpfs with room for the bytes but few inodes: the run fails with ENOSPC after writing its
    // tensors (creating uc.json or COMPLETE); the staging folder is kept, and the rerun after the limit
    // is raised reuses every tensor instead of redoing them.
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    synthetic_input(&input, 8, 1 << 16);
    let single = single_conversion(tmp.path(), &input);
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mut failed_late = false;
    for inodes in 6..16 {
        if !mount_tmpfs(&mnt, &format!("64m,nr_inodes={inodes}"), false) {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        }
        let out = mnt.join("out");
        let o = run(uc_cmd(&["convert", s(&input), s(&out), "--json"]));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let staged = beside(&mnt, &["out"]);
        if !o.status.success() && err.contains("No space left") && staged.len() == 1 {
            assert!(!out.exists());
            assert!(mount_tmpfs(&mnt, "64m,nr_inodes=1000", true));
            let o = ok(&run(uc_cmd(&["convert", s(&input), s(&out), "--json"])));
            let j: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
            if j["reused_tensors"] == 8 {
                failed_late = true;
                assert_same_tree(&single, &out);
                assert_nothing_beside(&mnt, &["out"], "");
            }
        }
        let _ = Command::new("umount").arg(&mnt).status();
        if failed_late {
            break;
        }
    }
    assert!(
        failed_late,
        "no inode limit made the run fail after its tensors"
    );
}
