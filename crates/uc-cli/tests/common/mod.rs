//! Helpers the `uc` end-to-end tests share: running the binary and finding the shared fixtures.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `uc` binary with `args`.
pub fn uc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uc"))
        .args(args)
        .output()
        .expect("run uc")
}

/// A folder of `../shared/fixtures` (`deepspeed`, `dcp`, `megatron`).
pub fn fixtures(kind: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
    .join(kind)
}

/// One DeepSpeed fixture case.
pub fn fixture(case: &str) -> PathBuf {
    fixtures("deepspeed").join(case)
}

/// A path as `&str` for command arguments.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every file under `dir` (relative path → bytes).
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// The stdout of a run that must have succeeded (else a panic showing both streams).
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "uc failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
