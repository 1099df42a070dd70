//! `uc` end to end: conversions of real DeepSpeed checkpoints, and bad input → a typed error naming
//! the file, exit code ≠ 0, no panic, no partial output.

mod common;
use common::{fixture, s, uc};

use std::fs;
use std::path::{Path, PathBuf};

/// A writable copy of a fixture's checkpoint (`latest` + tag folder).
fn copy_case(case: &str, dst: &Path) -> PathBuf {
    let src = fixture(case);
    let out = dst.join(case);
    fs::create_dir_all(out.join("global_step3")).unwrap();
    fs::copy(src.join("latest"), out.join("latest")).unwrap();
    for e in fs::read_dir(src.join("global_step3")).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, out.join("global_step3").join(p.file_name().unwrap())).unwrap();
    }
    out
}

/// Runs `uc convert` expecting failure; checks the message names `needle`, no panic, no output left.
fn refuse(input: &Path, needle: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = uc(&["convert", s(input), s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(needle),
        "error does not name `{needle}`: {err}"
    );
    assert!(!out.exists(), "partial output left behind");
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    err
}

#[test]
fn convert_inspect_verify_round() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("uni");
    let o = uc(&[
        "convert",
        s(&fixture("tp2_dp2_zero2_bf16")),
        s(&out),
        "--format",
        "both",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["tensors"], 108);
    assert!(out.join("COMPLETE").is_file() && out.join("zero/embed.weight/fp32.pt").is_file());
    let v = uc(&["verify", s(&out), "--json"]);
    assert!(v.status.success());
    let i = uc(&["inspect", s(&out), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(j["format"], "native");
    let d = uc(&["inspect", s(&fixture("ep2_zero2")), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    assert_eq!(j["format"], "deepspeed");
    assert!(uc(&["verify", s(&fixture("pp2_dp2_tied_zero1"))])
        .status
        .success());
    // a flipped byte in a native checkpoint fails verify
    let f = out.join("tensors/00000.safetensors");
    let mut b = fs::read(&f).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&f, b).unwrap();
    let v = uc(&["verify", s(&out)]);
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stderr).contains("checksum"));
}

#[test]
fn output_that_exists_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = uc(&["convert", s(&fixture("zero1")), s(tmp.path())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}

#[test]
fn truncated_pt_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("zero2", tmp.path());
    let f = ck.join("global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt");
    let b = fs::read(&f).unwrap();
    fs::write(&f, &b[..b.len() / 2]).unwrap();
    refuse(&ck, "zero_pp_rank_1_mp_rank_00_optim_states.pt");
}

#[test]
fn corrupt_zip_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("zero1", tmp.path());
    let f = ck.join("global_step3/mp_rank_00_model_states.pt");
    fs::write(&f, vec![0x5a; 4096]).unwrap();
    refuse(&ck, "mp_rank_00_model_states.pt");
}

#[test]
fn disallowed_global_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("zero1", tmp.path());
    let f = ck.join("global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt");
    // Same length as `collections\nOrderedDict`: the archive stays valid, the global does not.
    let mut b = fs::read(&f).unwrap();
    let from = b"collections\nOrderedDict\n";
    let mut to = b"os\nsystem\n".to_vec();
    to.resize(from.len(), b'\n'); // the GLOBAL is refused before the padding is read
    assert_eq!(from.len(), to.len());
    let at = b
        .windows(from.len())
        .position(|w| w == from)
        .expect("pickle names OrderedDict");
    b[at..at + from.len()].copy_from_slice(&to);
    fs::write(&f, b).unwrap();
    let err = refuse(&ck, "zero_pp_rank_0_mp_rank_00_optim_states.pt");
    assert!(err.contains("os.system"), "{err}");
}

#[test]
fn missing_rank_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("tp2_dp2_zero2_bf16", tmp.path());
    fs::remove_file(ck.join("global_step3/bf16_zero_pp_rank_1_mp_rank_01_optim_states.pt"))
        .unwrap();
    refuse(&ck, "bf16_zero_pp_rank_1_mp_rank_01_optim_states.pt");
}

#[test]
fn shapes_that_do_not_add_up_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("zero1", tmp.path());
    // rank 1's partitions come from a run with another layout (tp 2): fragments no longer add up
    let other = fixture("tp2_zero1").join("global_step3/zero_pp_rank_0_mp_rank_01_optim_states.pt");
    fs::copy(
        other,
        ck.join("global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt"),
    )
    .unwrap();
    refuse(&ck, "zero_pp_rank_1_mp_rank_00_optim_states.pt");
}

#[test]
fn unsafe_parameter_names_are_refused() {
    for (from, to) in [
        (&b"embed.weight"[..], &b"../../weight"[..]),
        (b"embed.weight", b"embed/weight"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let ck = copy_case("zero1", tmp.path());
        patch_all(&ck, from, to);
        let err = refuse(&ck, "unsafe");
        assert!(err.contains(std::str::from_utf8(to).unwrap()), "{err}");
    }
}

#[test]
fn top_level_help_describes_every_command() {
    let o = uc(&["--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    let line = |cmd: &str| {
        h.lines()
            .find(|l| l.trim_start().starts_with(&format!("{cmd} ")))
            .unwrap_or_else(|| panic!("no `{cmd}` in {h}"))
            .to_string()
    };
    assert!(line("verify").contains("Check a checkpoint"), "{h}");
    assert!(line("view").contains("HTML"), "{h}");
    assert!(line("inspect").contains("DCP"), "{h}");
    assert!(h.contains("PyTorch DCP") && h.contains("Megatron"), "{h}");
}

#[test]
fn help_explains() {
    let o = uc(&["convert", "--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && h.contains("--format")
            && h.contains("--assume-row")
            && h.contains("must not exist")
    );
}

/// Replaces every occurrence of `from` by the same-length `to` in every file of the tag folder.
fn patch_all(ck: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    for e in fs::read_dir(ck.join("global_step3")).unwrap() {
        let p = e.unwrap().path();
        let mut b = fs::read(&p).unwrap();
        let mut i = 0;
        while let Some(at) = b[i..].windows(from.len()).position(|w| w == from) {
            b[i + at..i + at + from.len()].copy_from_slice(to);
            i += at + from.len();
        }
        fs::write(&p, b).unwrap();
    }
}

#[test]
fn missing_expert_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("ep2_zero2", tmp.path());
    fs::remove_file(ck.join("global_step3/layer_1_expert_2_mp_rank_00_model_states.pt")).unwrap();
    refuse(&ck, "layer_1_expert_2_mp_rank_00_model_states.pt");
}

#[test]
fn expert_files_without_autoep_metadata_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("ep2_zero2", tmp.path());
    patch_all(&ck, b"ds_autoep_layers", b"xx_autoep_layers");
    let err = refuse(&ck, "without AutoEP metadata");
    assert!(
        err.contains("layer_0_expert_0_mp_rank_00_model_states.pt"),
        "{err}"
    );
}

#[test]
fn tensor_parallel_without_metadata_needs_assumptions() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("tp2_zero1", tmp.path());
    patch_all(
        &ck,
        b"universal_checkpoint_info",
        b"universal_checkpoint_xxxx",
    );
    let err = refuse(&ck, "universal_checkpoint_info");
    assert!(err.contains("--assume-row"), "{err}");
    // with the row / replicated patterns supplied, every non-fused tensor comes out exact
    let out = tmp.path().join("out");
    let o = uc(&[
        "convert",
        s(&ck),
        s(&out),
        "--assume-row",
        r"^embed\.weight$|.*\.o_proj\.weight$|.*\.fc2\.weight$",
        "--assume-replicated",
        r".*\.ln\d\..*|^ln_f\..*|.*\.fc2\.bias$|^logit_scale$",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = fs::read(fixture("tp2_zero1").join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&expected).unwrap();
    let ours = uc_store::native::NativeCheckpoint::open(&out).unwrap();
    let mut same = 0;
    for name in st.names() {
        let (param, key) = name.rsplit_once('/').unwrap();
        let got = ours.tensor(param, &uc_schema::Role::from_key(key)).unwrap();
        if param.contains("qkv") {
            continue; // fused q/k/v need sub-param metadata no flag supplies
        }
        assert!(got == st.tensor(name).unwrap().data(), "{name}");
        same += 1;
    }
    assert_eq!(same, 69);
    // inspect and verify take the same patterns the advice names
    let row = r"^embed\.weight$|.*\.o_proj\.weight$|.*\.fc2\.weight$";
    let rep = r".*\.ln\d\..*|^ln_f\..*|.*\.fc2\.bias$|^logit_scale$";
    for cmd in ["inspect", "verify"] {
        let o = uc(&[cmd, s(&ck)]);
        assert!(!o.status.success(), "{cmd} without patterns");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--assume-row"));
        let o = uc(&[cmd, s(&ck), "--assume-row", row, "--assume-replicated", rep]);
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn saved_before_first_step_keeps_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = copy_case("zero1", tmp.path());
    for r in 0..2 {
        fs::remove_file(ck.join(format!(
            "global_step3/zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
        )))
        .unwrap();
    }
    let out = tmp.path().join("out");
    let o = uc(&["convert", s(&ck), s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = uc_store::native::NativeCheckpoint::open(&out).unwrap();
    assert_eq!(ours.manifest().tensors.len(), 27);
    let expected = fs::read(fixture("zero1").join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&expected).unwrap();
    // the module's working weights equal the fp32 masters for an fp32 run
    let got = ours
        .tensor("embed.weight", &uc_schema::Role::Param)
        .unwrap();
    assert!(got == st.tensor("embed.weight/fp32").unwrap().data());
}

#[test]
fn view_writes_one_self_contained_page() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    fs::create_dir(&pkg).unwrap();
    fs::write(pkg.join("uc_wasm_bg.wasm"), b"\0asm-test").unwrap();
    fs::write(pkg.join("uc_wasm.js"), b"export default function init() {}").unwrap();
    let out = tmp.path().join("view.html");
    let o = uc(&[
        "view",
        s(&fixture("tp2_dp2_zero2_bf16")),
        "--out",
        s(&out),
        "--pkg",
        s(&pkg),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = fs::read_to_string(&out).unwrap();
    for id in ["uc-wasm", "uc-glue", "uc-meta", "uc-name"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id} missing");
    }
    // a second run refuses to overwrite; a missing viewer build says how to make it
    assert_eq!(
        uc(&[
            "view",
            s(&fixture("zero1")),
            "--out",
            s(&out),
            "--pkg",
            s(&pkg)
        ])
        .status
        .code(),
        Some(1)
    );
    let o = uc(&[
        "view",
        s(&fixture("zero1")),
        "--out",
        s(&tmp.path().join("x.html")),
        "--pkg",
        s(&tmp.path().join("none")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("scripts/web-test.sh"));
}

/// Native DeepSpeed MoE and AutoEP × AutoTP: inspect, verify, view, convert (+ verify of the output)
/// and export all succeed; a missing folded expert file is named with its real TP rank.
#[test]
fn moe_layouts_through_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    fs::create_dir(&pkg).unwrap();
    fs::write(pkg.join("uc_wasm_bg.wasm"), b"\0asm-test").unwrap();
    fs::write(pkg.join("uc_wasm.js"), b"export default function init() {}").unwrap();
    for (case, params) in [
        ("moe_ep2_zero2", 60),
        ("moe_ep2_zero1", 60),
        ("moe_ep2_nozero", 60),
        ("ep2_tp2_zero1", 23),
    ] {
        let ck = fixture(case);
        let i = uc(&["inspect", s(&ck), "--json"]);
        assert!(
            i.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&i.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
        let fp32 = j["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["role"] == "fp32")
            .count();
        assert_eq!(fp32, params, "{case}");
        assert!(
            j["summary"].as_str().unwrap().contains("2 optimizer files"),
            "{case}: {}",
            j["summary"]
        );
        assert!(uc(&["verify", s(&ck)]).status.success(), "{case}");
        let html = tmp.path().join(format!("{case}.html"));
        let v = uc(&["view", s(&ck), "--out", s(&html), "--pkg", s(&pkg)]);
        assert!(
            v.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        let out = tmp.path().join(case);
        // Native MoE without ZeRO into DeepSpeed's layout is refused (load_universal cannot resume it).
        let format = if case == "moe_ep2_nozero" {
            "native"
        } else {
            "both"
        };
        let c = uc(&["convert", s(&ck), s(&out), "--format", format]);
        assert!(
            c.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&c.stderr)
        );
        assert!(uc(&["verify", s(&out)]).status.success(), "{case}");
        if case == "moe_ep2_nozero" {
            let d = uc(&[
                "convert",
                s(&ck),
                s(&tmp.path().join("ds")),
                "--format",
                "deepspeed",
            ]);
            assert_eq!(d.status.code(), Some(1), "{case}");
            assert!(String::from_utf8_lossy(&d.stderr).contains("load_universal"));
        }
        let hf = tmp.path().join(format!("{case}-hf"));
        let e = uc(&["export", s(&ck), s(&hf)]);
        assert!(
            e.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&e.stderr)
        );
    }
    let ck = copy_case("ep2_tp2_zero1", &tmp.path().join("bad"));
    fs::remove_file(ck.join("global_step3/layer_0_expert_3_mp_rank_01_model_states.pt")).unwrap();
    refuse(&ck, "layer_0_expert_3_mp_rank_01_model_states.pt");
}
