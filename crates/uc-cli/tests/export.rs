//! `uc export` end to end: Hugging Face folders from real DeepSpeed checkpoints, and bad input → the
//! same error as `uc convert`, exit code 1, no panic, nothing left behind.

mod common;
use common::{fixture, s, uc};

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// The tensors of a safetensors file: name → (dtype, shape, data), parsed by hand.
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<u64>, Vec<u8>)> {
    let b = fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    h.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            let (a, e) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            let dt = v["dtype"].as_str().unwrap().to_string();
            (
                k.clone(),
                (dt, shape, data[a as usize..e as usize].to_vec()),
            )
        })
        .collect()
}

#[test]
fn exports_a_zero2_checkpoint_reading_only_its_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let o = uc(&["export", s(&fixture("zero2")), s(&out), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["tensors"], 27);
    assert_eq!(j["files"], serde_json::json!(["model.safetensors"]));
    let ratio = j["read_ratio"].as_f64().unwrap();
    assert!((1.0..=1.1).contains(&ratio), "{ratio}");
    let ours = tensors(&out.join("model.safetensors"));
    let want = tensors(&fixture("zero2").join("expected.safetensors"));
    for (name, t) in &ours {
        assert_eq!(t.0, "F32");
        assert!(want[&format!("{name}/fp32")] == *t, "{name}");
    }
    assert_eq!(ours.len(), 27);
    let names: Vec<_> = fs::read_dir(&out).unwrap().collect();
    assert_eq!(names.len(), 1, "only model.safetensors: {names:?}");
}

#[test]
fn shards_renames_and_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let o = uc(&[
        "export",
        s(&fixture("tp2_dp2_zero2_bf16")),
        s(&out),
        "--dtype",
        "bf16",
        "--max-shard-size",
        "10KB",
        "--only",
        r"^blocks\.",
        "--rename",
        r"^blocks\.(\d+)\.=model.layers.$1.",
        "--rename",
        r"\.fc1\.=.mlp.up_proj.",
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index: Value =
        serde_json::from_slice(&fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), 22);
    let mut total = 0;
    for (name, file) in map {
        assert!(name.starts_with("model.layers."), "{name}");
        let t = &tensors(&out.join(file.as_str().unwrap()))[name];
        assert_eq!(t.0, "BF16");
        total += t.2.len() as u64;
    }
    assert_eq!(index["metadata"]["total_size"], total);
    let up = &tensors(&out.join(map["model.layers.1.mlp.up_proj.weight"].as_str().unwrap()))
        ["model.layers.1.mlp.up_proj.weight"];
    let want = &tensors(&fixture("tp2_dp2_zero2_bf16").join("expected.safetensors"))
        ["blocks.1.fc1.weight/fp32"];
    assert_eq!(up.1, want.1);
    for (i, c) in want.2.chunks_exact(4).enumerate() {
        let b = u32::from_le_bytes(c.try_into().unwrap());
        let r = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        assert_eq!(up.2[2 * i..2 * i + 2], r.to_le_bytes(), "element {i}");
    }
}

#[test]
fn bad_input_fails_like_convert_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("zero2");
    fs::create_dir_all(ck.join("global_step3")).unwrap();
    fs::copy(fixture("zero2").join("latest"), ck.join("latest")).unwrap();
    for e in fs::read_dir(fixture("zero2").join("global_step3")).unwrap() {
        let p = e.unwrap().path();
        let mut b = fs::read(&p).unwrap();
        if p.ends_with("zero_pp_rank_1_mp_rank_00_optim_states.pt") {
            b.truncate(b.len() / 2);
        }
        fs::write(ck.join("global_step3").join(p.file_name().unwrap()), b).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let c = uc(&["convert", s(&ck), s(&work.path().join("a"))]);
    let e = uc(&["export", s(&ck), s(&work.path().join("b"))]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert_eq!(e.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        err.contains("zero_pp_rank_1_mp_rank_00_optim_states.pt"),
        "{err}"
    );
    assert_eq!(err, String::from_utf8_lossy(&c.stderr));
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0);
    // an output folder that already holds weights is refused and left as it was
    let full = work.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("model.safetensors"), b"x").unwrap();
    let e = uc(&["export", s(&fixture("zero1")), s(&full)]);
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("already exists"));
    assert_eq!(fs::read(full.join("model.safetensors")).unwrap(), b"x");
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);
}

#[test]
fn bad_arguments_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let zero1 = fixture("zero1");
    for args in [
        vec!["--max-shard-size", "5XB"],
        vec!["--rename", "no-equals-sign"],
        vec!["--rename", "(=x"],
        vec!["--only", "["],
        vec!["--dtype", "fp8"],
    ] {
        let mut a = vec!["export", s(&zero1), s(&out)];
        a.extend(args.iter());
        let o = uc(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!out.exists());
    }
    let o = uc(&["export", "--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--dtype",
        "--max-shard-size",
        "--only",
        "--rename",
        "--tag",
        "--threads",
        "--json",
    ] {
        assert!(h.contains(flag), "help lacks {flag}");
    }
}
