//! `export` on every DeepSpeed fixture: the weights equal expected.safetensors' `<name>/fp32` bit for
//! bit (bf16/fp16: rounded to nearest even), shards and index agree, `only`/`rename` work, only the
//! fp32 weights are read, and bad input leaves nothing behind.

mod common;

use common::{DCP, DEEPSPEED, MEGATRON};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use uc_schema::DType;
use uc_store::convert::{convert, ConvertOptions};
use uc_store::export::{export, ExportOptions, Regex, INDEX_NAME, WEIGHTS_NAME};
use uc_store::source::{OpenOptions, Source};
use uc_store::StoreError;

/// Our own real-DeepSpeed fixtures (frozen parameters, buffers, ZeRO-3 + TP, SGD, step 0).
const OWN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/deepspeed"
);

fn fixture(case: &str) -> PathBuf {
    Path::new(DEEPSPEED).join(case)
}

/// `<name>` → fp32 bytes of every `<name>/fp32` in a fixture's expected.safetensors.
fn expected(dir: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let b = fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&b).unwrap();
    st.names()
        .into_iter()
        .filter_map(|n| {
            let p = n.strip_suffix("/fp32")?;
            let t = st.tensor(n).unwrap();
            Some((p.to_string(), (t.shape().to_vec(), t.data().to_vec())))
        })
        .collect()
}

/// Every tensor of an export folder: name → (dtype, shape, bytes), checking files, index and header.
fn load(out: &Path) -> BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let index = out.join(INDEX_NAME);
    let files: Vec<String> = if index.is_file() {
        let j: serde_json::Value = serde_json::from_slice(&fs::read(&index).unwrap()).unwrap();
        let map = j["weight_map"].as_object().unwrap();
        let set: BTreeSet<String> = map
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        set.into_iter().collect()
    } else {
        vec![WEIGHTS_NAME.to_string()]
    };
    let mut all = BTreeMap::new();
    for f in files {
        let b = fs::read(out.join(&f)).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&b).unwrap();
        let md = meta.metadata().as_ref().unwrap();
        assert_eq!(md.get("format").map(String::as_str), Some("pt"), "{f}");
        let st = SafeTensors::deserialize(&b).unwrap();
        for (n, t) in st.tensors() {
            let v = (t.dtype(), t.shape().to_vec(), t.data().to_vec());
            assert!(all.insert(n.clone(), v).is_none(), "{n} in two files");
        }
    }
    all
}

/// torch's float32 → bfloat16: round to nearest even (NaN stays NaN).
fn bf16(x: [u8; 4]) -> [u8; 2] {
    let b = u32::from_le_bytes(x);
    if f32::from_bits(b).is_nan() {
        return [0xc0, 0x7f];
    }
    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    (r as u16).to_le_bytes()
}

fn run(case_dir: &Path, out: &Path, opts: &ExportOptions) -> uc_store::export::ExportReport {
    export(case_dir, out, opts, &|_, _, _| {})
        .unwrap_or_else(|e| panic!("{}: {e}", case_dir.display()))
}

fn opts() -> ExportOptions {
    ExportOptions {
        threads: Some(2),
        ..Default::default()
    }
}

#[test]
fn every_deepspeed_fixture_exports_its_fp32_weights_exactly() {
    for case in common::DEEPSPEED_CASES {
        let dir = fixture(case);
        let want = expected(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("hf");
        let r = run(&dir, &out, &opts());
        assert_eq!(r.files, vec![WEIGHTS_NAME], "{case}");
        let got = load(&out);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{case}: tensor names"
        );
        for (name, (shape, data)) in &want {
            let (dt, s, d) = &got[name];
            assert_eq!(*dt, safetensors::Dtype::F32, "{case}: {name}");
            assert_eq!(s, shape, "{case}: {name}");
            assert!(d == data, "{case}: {name} differs");
        }
        let total: u64 = want.values().map(|v| v.1.len() as u64).sum();
        assert_eq!(r.total_size, total, "{case}");
        assert_eq!(r.tensors, want.len(), "{case}");
    }
}

#[test]
fn frozen_parameters_and_buffers_are_exported_as_floats_of_the_chosen_type() {
    for case in [
        "zero1_frozen",
        "zero2_sgd_momentum",
        "zero2_step0",
        "zero3_tp2",
    ] {
        let dir = Path::new(OWN).join(case);
        let b = fs::read(dir.join("expected.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&b).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("hf");
        let r = run(&dir, &out, &opts());
        let got = load(&out);
        let mut names = BTreeSet::new();
        for (key, t) in st.tensors() {
            let Some((name, kind)) = key.rsplit_once('/') else {
                continue;
            };
            if kind != "fp32" && kind != "param" {
                continue;
            }
            names.insert(name.to_string());
            let (dt, shape, data) = &got[name];
            assert_eq!(shape, t.shape(), "{case}: {name}");
            // Floats become float32 (as zero_to_fp32 / `model.float()` do), integers stay as they are.
            let want: Vec<u8> = match t.dtype() {
                safetensors::Dtype::F64 => t
                    .data()
                    .chunks_exact(8)
                    .flat_map(|c| (f64::from_le_bytes(c.try_into().unwrap()) as f32).to_le_bytes())
                    .collect(),
                safetensors::Dtype::BF16 => t
                    .data()
                    .chunks_exact(2)
                    .flat_map(|c| {
                        half::bf16::from_le_bytes([c[0], c[1]])
                            .to_f32()
                            .to_le_bytes()
                    })
                    .collect(),
                _ => t.data().to_vec(),
            };
            let want_dt = match t.dtype() {
                d @ (safetensors::Dtype::I64 | safetensors::Dtype::I32) => d,
                _ => safetensors::Dtype::F32,
            };
            assert_eq!(*dt, want_dt, "{case}: {name}");
            assert!(*data == want, "{case}: {name} differs");
        }
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            names,
            "{case}"
        );
        assert_eq!(r.tensors, names.len());
    }
}

#[test]
fn zero3_frozen_fragments_and_buffers_equal_zero_to_fp32_byte_for_byte() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/zero3_frozen_bf16");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let r = run(&dir, &out, &opts());
    assert_eq!(r.tensors, 7); // 3 trained, 2 frozen, 2 buffers
    let ours = fs::read(out.join(WEIGHTS_NAME)).unwrap();
    assert!(ours == fs::read(dir.join("zero_to_fp32.safetensors")).unwrap());
    // a dp rank's model states hold fragments of the frozen parameters: without them, a typed error
    let ck = tmp.path().join("ck");
    fs::create_dir_all(ck.join("global_step1")).unwrap();
    fs::copy(dir.join("latest"), ck.join("latest")).unwrap();
    for e in fs::read_dir(dir.join("global_step1")).unwrap() {
        let p = e.unwrap().path();
        if !p.ends_with("zero_pp_rank_1_mp_rank_00_model_states.pt") {
            fs::copy(&p, ck.join("global_step1").join(p.file_name().unwrap())).unwrap();
        }
    }
    let bad = tmp.path().join("bad");
    let e = export(&ck, &bad, &opts(), &|_, _, _| {}).unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("zero_pp_rank_1_mp_rank_00_model_states.pt"),
        "{e}"
    );
    assert!(!bad.exists());
}

#[test]
fn bf16_and_fp16_are_rounded_to_nearest_even() {
    for case in ["zero2", "bf16_zero1", "tp2_dp2_zero2_bf16", "ep2_zero3"] {
        let dir = fixture(case);
        let want = expected(&dir);
        for (dtype, st) in [
            (DType::BF16, safetensors::Dtype::BF16),
            (DType::F16, safetensors::Dtype::F16),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("hf");
            let r = run(&dir, &out, &ExportOptions { dtype, ..opts() });
            let got = load(&out);
            let mut total = 0;
            for (name, (_, data)) in &want {
                let (dt, _, d) = &got[name];
                assert_eq!(*dt, st, "{case}: {name}");
                let rounded: Vec<u8> = data
                    .chunks_exact(4)
                    .flat_map(|c| {
                        let x: [u8; 4] = c.try_into().unwrap();
                        match dtype {
                            DType::BF16 => bf16(x),
                            _ => half::f16::from_f32(f32::from_le_bytes(x)).to_le_bytes(),
                        }
                    })
                    .collect();
                assert!(d == &rounded, "{case}: {name} {dtype:?} differs");
                total += rounded.len() as u64;
            }
            assert_eq!(r.total_size, total);
        }
    }
}

#[test]
fn shards_and_index_are_consistent() {
    let dir = fixture("tp2_dp2_zero2_bf16");
    let want = expected(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let max = 10_000;
    let r = run(
        &dir,
        &out,
        &ExportOptions {
            max_shard_size: max,
            ..opts()
        },
    );
    let n = r.files.len() - 1;
    assert!(n > 2, "{:?}", r.files);
    assert_eq!(r.files.last().map(String::as_str), Some(INDEX_NAME));
    let j: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join(INDEX_NAME)).unwrap()).unwrap();
    let total: u64 = want.values().map(|v| v.1.len() as u64).sum();
    assert_eq!(j["metadata"]["total_size"], total);
    let params: usize = want.values().map(|v| v.0.iter().product::<usize>()).sum();
    assert_eq!(j["metadata"]["total_parameters"], params as u64);
    let map = j["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), want.len());
    let mut listed = BTreeSet::new();
    for (i, f) in r.files[..n].iter().enumerate() {
        assert_eq!(*f, format!("model-{:05}-of-{n:05}.safetensors", i + 1));
        let b = fs::read(out.join(f)).unwrap();
        let st = SafeTensors::deserialize(&b).unwrap();
        let bytes: usize = st.tensors().iter().map(|(_, t)| t.data().len()).sum();
        assert!(bytes as u64 <= max || st.len() == 1, "{f}: {bytes} bytes");
        for name in st.names() {
            let name: &str = name;
            assert_eq!(map[name], f.as_str(), "{name}");
            assert!(listed.insert(name.to_string()), "{name} in two shards");
            assert!(st.tensor(name).unwrap().data() == want[name].1);
        }
    }
    assert_eq!(listed.len(), want.len());
    assert!(!out.join(WEIGHTS_NAME).exists());
    // the index reads like Python's json.dumps(indent=2, sort_keys=True) + "\n"
    let text = fs::read_to_string(out.join(INDEX_NAME)).unwrap();
    assert!(text.starts_with("{\n  \"metadata\": {\n    \"total_parameters\": "));
    assert!(text.ends_with("}\n"));
}

#[test]
fn only_and_rename_pick_and_name() {
    let dir = fixture("zero1");
    let want = expected(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let r = run(
        &dir,
        &out,
        &ExportOptions {
            only: Some(Regex::new(r"^blocks\.1\.|^embed").unwrap()),
            rename: vec![
                (
                    Regex::new(r"^blocks\.(\d+)\.").unwrap(),
                    "model.layers.$1.".into(),
                ),
                (
                    Regex::new(r"^embed\.").unwrap(),
                    "model.embed_tokens.".into(),
                ),
            ],
            ..opts()
        },
    );
    let got = load(&out);
    let expect: BTreeSet<String> = want
        .keys()
        .filter(|k| k.starts_with("blocks.1.") || k.starts_with("embed"))
        .map(|k| {
            k.replace("blocks.1.", "model.layers.1.")
                .replace("embed.", "model.embed_tokens.")
        })
        .collect();
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expect);
    assert_eq!(r.tensors, expect.len());
    assert!(got["model.layers.1.fc1.weight"].2 == want["blocks.1.fc1.weight"].1);
    assert!(got["model.embed_tokens.weight"].2 == want["embed.weight"].1);
    let source_bytes: u64 = got.values().map(|v| v.2.len() as u64).sum();
    assert_eq!(r.source_bytes, source_bytes);

    // two names onto one, and a pattern that matches nothing: typed errors, nothing written
    for o in [
        ExportOptions {
            rename: vec![(Regex::new(r"\.(weight|bias)$").unwrap(), ".w".into())],
            ..opts()
        },
        ExportOptions {
            only: Some(Regex::new("^nothing$").unwrap()),
            ..opts()
        },
    ] {
        let out = tmp.path().join("bad");
        let e = export(&dir, &out, &o, &|_, _, _| {}).unwrap_err();
        assert!(
            matches!(e, StoreError::BadTensor { .. } | StoreError::Format { .. }),
            "{e}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn reads_only_the_fp32_weights() {
    for case in [
        "zero1",
        "zero2",
        "zero3",
        "bf16_zero1",
        "tp2_dp2_zero2_bf16",
        "ep2_zero2",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let r = run(&fixture(case), &tmp.path().join("hf"), &opts());
        let read = r.bytes_read.expect("DeepSpeed reports its reads");
        let ratio = read as f64 / r.source_bytes as f64;
        assert!(
            (1.0..=1.1).contains(&ratio),
            "{case}: read {read} bytes for {} bytes of weights",
            r.source_bytes
        );
    }
    // the whole optimizer files are 3× the fp32 weights and more
    let dir = fixture("zero2").join("global_step3");
    let optim: u64 = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("optim_states.pt"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    let tmp = tempfile::tempdir().unwrap();
    let r = run(&fixture("zero2"), &tmp.path().join("hf"), &opts());
    assert!(optim > 3 * r.bytes_read.unwrap());
}

#[test]
fn any_source_exports_the_same_files() {
    let dir = fixture("pp2_dp2_tied_zero1");
    let tmp = tempfile::tempdir().unwrap();
    let native = tmp.path().join("native");
    convert(&dir, &native, &ConvertOptions::default(), &|_, _, _| {}).unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(&dir, &a, &opts());
    let r = run(&native, &b, &opts());
    assert_eq!(r.bytes_read, Some(r.source_bytes));
    let read = |p: &Path| fs::read(p.join(WEIGHTS_NAME)).unwrap();
    assert!(read(&a) == read(&b));
}

#[test]
fn dcp_and_megatron_fixtures_export_without_the_model_prefix() {
    let cases = [
        (DCP, "fsdp2_dp2"),
        (DCP, "fsdp2_tp_2x2"),
        (DCP, "ep_mesh_empty_shard"),
        (MEGATRON, "gpt_tp2"),
        (MEGATRON, "gpt_tp2_dp2"),
        (MEGATRON, "gpt_tp2_swiglu_tied"),
    ];
    for (root, case) in cases {
        let dir = Path::new(root).join(case);
        let ck = dir.join("checkpoint");
        let src = Source::open(&ck, &OpenOptions::default()).unwrap();
        assert_eq!(src.format(), "dcp", "{case}");
        let want = expected(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("hf");
        run(&ck, &out, &opts());
        let got = load(&out);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{case}: tensor names"
        );
        for (name, (shape, data)) in &want {
            let (_, s, d) = &got[name];
            assert_eq!(s, shape, "{case}: {name}");
            assert!(d == data, "{case}: {name} differs");
        }
    }
}

#[test]
fn existing_folder_gets_the_weights_beside_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("config.json"), b"{}").unwrap();
    run(
        &fixture("zero3"),
        &out,
        &ExportOptions {
            max_shard_size: 20_000,
            ..opts()
        },
    );
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names[0], "config.json");
    assert!(names.contains(&INDEX_NAME.to_string()));
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    // a second export into it would mix two models: refused, nothing touched
    let e = export(&fixture("zero1"), &out, &opts(), &|_, _, _| {}).unwrap_err();
    assert!(matches!(e, StoreError::OutputExists { .. }), "{e}");
    let after = fs::read_dir(&out).unwrap().count();
    assert_eq!(after, names.len());
    // a file in the way
    let e = export(
        &fixture("zero1"),
        &out.join("config.json"),
        &opts(),
        &|_, _, _| {},
    );
    assert!(matches!(e, Err(StoreError::OutputExists { .. })));
}

/// A writable copy of a fixture's checkpoint (`latest` + tag folder).
fn copy_case(case: &str, dst: &Path) -> PathBuf {
    let src = fixture(case);
    let out = dst.join(case);
    fs::create_dir_all(&out).unwrap();
    fs::copy(src.join("latest"), out.join("latest")).unwrap();
    common::copy_dir(&src.join("global_step3"), &out.join("global_step3"));
    out
}

#[test]
fn bad_input_gets_convert_s_errors_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let truncated = copy_case("zero2", &tmp.path().join("t"));
    let f = truncated.join("global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt");
    let b = fs::read(&f).unwrap();
    fs::write(&f, &b[..b.len() / 2]).unwrap();
    let missing = copy_case("tp2_dp2_zero2_bf16", &tmp.path().join("m"));
    fs::remove_file(missing.join("global_step3/bf16_zero_pp_rank_1_mp_rank_01_optim_states.pt"))
        .unwrap();
    let mixed = copy_case("zero1", &tmp.path().join("x"));
    fs::copy(
        fixture("tp2_zero1").join("global_step3/zero_pp_rank_0_mp_rank_01_optim_states.pt"),
        mixed.join("global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt"),
    )
    .unwrap();
    let corrupt = copy_case("zero1", &tmp.path().join("c"));
    fs::write(
        corrupt.join("global_step3/mp_rank_00_model_states.pt"),
        vec![0x5a; 4096],
    )
    .unwrap();
    for input in [
        truncated,
        missing,
        mixed,
        corrupt,
        tmp.path().join("nothing"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let (a, b) = (work.path().join("a"), work.path().join("b"));
        let ce = convert(&input, &a, &ConvertOptions::default(), &|_, _, _| {}).unwrap_err();
        let ee = export(&input, &b, &opts(), &|_, _, _| {}).unwrap_err();
        assert_eq!(ee.to_string(), ce.to_string());
        assert_eq!(
            std::mem::discriminant(&ee),
            std::mem::discriminant(&ce),
            "{ee}"
        );
        assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "{ee}");
    }
}

/// A native conversion remembers which module tensors were aliases of trained parameters (AutoEP's
/// router under `…mlp.gate.gate`), so exporting from it gives exactly the files of exporting from
/// the DeepSpeed checkpoint.
#[test]
fn export_from_a_native_conversion_equals_export_from_deepspeed() {
    for case in ["ep2_zero2", "ep2_zero1_bf16", "zero1", "tp2_zero1"] {
        let tmp = tempfile::tempdir().unwrap();
        let native = tmp.path().join("native");
        uc_store::convert::convert(&fixture(case), &native, &Default::default(), &|_, _, _| {})
            .unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        run(&fixture(case), &a, &opts());
        run(&native, &b, &opts());
        assert_eq!(load(&a), load(&b), "{case}");
    }
}
