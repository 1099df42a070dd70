//! Seed inputs for every target, taken from the real checkpoints in `../shared/fixtures`: pickles,
//! whole `.pt` archives, DCP `.metadata` files, a native checkpoint converted from a fixture, and
//! DeepSpeed model-state metadata as JSON.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use uc_torch::{plain, Allowlist, PtFile};

/// Largest seed kept: small inputs fuzz fastest.
const MAX_SEED: usize = 1 << 20;
/// Seeds kept per target.
const MAX_SEEDS: usize = 64;

/// `$UC_SHARED/fixtures`, else `../shared/fixtures` beside the workspace, when it exists.
pub fn fixtures_root() -> Option<PathBuf> {
    let base = std::env::var_os("UC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let p = base.join("fixtures");
    p.is_dir().then_some(p)
}

/// Seeds by target name, each a list of inputs (deduplicated, small first).
pub fn build(fixtures: &Path) -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut out: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut files = Vec::new();
    walk(fixtures, &mut files);
    files.sort();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == ".metadata" {
            if let Ok(b) = std::fs::read(f) {
                out.entry("pickle").or_default().push(b.clone());
                out.entry("dcp_metadata").or_default().push(b);
            }
        } else if name.ends_with(".pt") && !f.components().any(|c| c.as_os_str() == "generator") {
            let Ok(bytes) = std::fs::read(f) else {
                continue;
            };
            let Ok(pt) = PtFile::from_bytes(f, bytes.clone(), &Allowlist::deepspeed()) else {
                continue;
            };
            if let Ok(pkl) = pt.entry_bytes(&format!("{}/data.pkl", pt.prefix())) {
                out.entry("pickle").or_default().push(pkl.to_vec());
            }
            out.entry("torch_zip").or_default().push(bytes.clone());
            if name.ends_with("model_states.pt") {
                let json = plain::to_json(pt.root()).to_string();
                out.entry("deepspeed_metadata")
                    .or_default()
                    .push(json.into_bytes());
            }
            if name == "mp_rank_00_model_states.pt"
                && f.parent()
                    .is_some_and(|p| p.ends_with("zero1/global_step3"))
            {
                out.entry("deepspeed_states").or_default().push(bytes);
            }
        }
    }
    if let Some(seed) = native_seed(fixtures) {
        out.entry("native").or_default().push(seed);
    }
    for seeds in out.values_mut() {
        let mut seen = HashSet::new();
        seeds.retain(|s| s.len() <= MAX_SEED && seen.insert(s.clone()));
        seeds.sort_by_key(Vec::len);
        seeds.truncate(MAX_SEEDS);
    }
    out
}

/// The `zero1` fixture converted to native, packed as the `native` target reads it.
fn native_seed(fixtures: &Path) -> Option<Vec<u8>> {
    let tmp = tempfile::tempdir().ok()?;
    let out = tmp.path().join("native");
    let opts = uc_store::convert::ConvertOptions {
        threads: Some(1),
        ..Default::default()
    };
    uc_store::convert::convert(
        &fixtures.join("deepspeed/zero1"),
        &out,
        &opts,
        &|_, _, _| {},
    )
    .ok()?;
    let json = std::fs::read(out.join("uc.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let st = std::fs::read(out.join(manifest["files"][0]["file"].as_str()?)).ok()?;
    let mut seed = (json.len() as u32).to_le_bytes().to_vec();
    seed.extend_from_slice(&json);
    seed.extend_from_slice(&st);
    Some(seed)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Writes `seeds` as `<dir>/<target>/seed-<i>` and returns how many files it wrote.
pub fn write(dir: &Path, seeds: &BTreeMap<&'static str, Vec<Vec<u8>>>) -> std::io::Result<usize> {
    let mut n = 0;
    for (target, list) in seeds {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        for (i, s) in list.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i:03}")), s)?;
            n += 1;
        }
    }
    Ok(n)
}
