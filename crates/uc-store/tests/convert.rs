//! `convert` on every DeepSpeed fixture: native output equals expected.safetensors, and the
//! DeepSpeed-layout output equals DeepSpeed's own `ds_to_universal` output file for file, key for
//! key and tensor for tensor.

mod common;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use uc_schema::Role;
use uc_store::convert::{convert, ConvertOptions, Format};
use uc_store::native::NativeCheckpoint;
use uc_torch::pickle::{Allowlist, PyValue};
use uc_torch::PtFile;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/deepspeed"
    ))
}

fn check(case: &str) {
    let src = fixtures().join(case);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let opts = ConvertOptions {
        format: Format::Both,
        threads: Some(2),
        ..Default::default()
    };
    let report =
        convert(&src, &out, &opts, &|_, _, _| {}).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert!(report.tensors > 0);

    // native: every expected tensor, bit for bit
    let ck = NativeCheckpoint::open(&out).unwrap();
    ck.verify().unwrap();
    let expected = std::fs::read(src.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&expected).unwrap();
    for name in st.names() {
        let (param, key) = name.rsplit_once('/').unwrap();
        let role = Role::from_key(key);
        let got = ck
            .tensor(param, &role)
            .unwrap_or_else(|e| panic!("{case}: {name}: {e}"));
        assert!(
            got == st.tensor(name).unwrap().data(),
            "{case}: native {name} differs"
        );
    }

    // DeepSpeed layout: every file DeepSpeed's converter wrote, tensor for tensor
    let theirs = src.join("global_step3_universal/zero");
    let mut compared = 0;
    for entry in std::fs::read_dir(&theirs).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let param = dir.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let ours = out.join("zero").join(&param).join(f.file_name().unwrap());
            assert!(ours.is_file(), "{case}: we wrote no {ours:?}");
            let (ka, kb) = (common::universal_keys(&ours), common::universal_keys(&f));
            assert!(
                ka == kb,
                "{case}: {param}/{:?}: our keys {ka:?} vs DeepSpeed's {kb:?}",
                f.file_name().unwrap()
            );
            let (a, b) = (common::universal_param(&ours), common::universal_param(&f));
            assert!(
                a == b,
                "{case}: {param}/{:?}: ours {:?} vs DeepSpeed's {:?}",
                f.file_name().unwrap(),
                (a.0, &a.1),
                (b.0, &b.1)
            );
            compared += 1;
        }
    }
    let (ours, theirs) = (
        common::files_under(&out.join("zero")),
        common::files_under(&theirs),
    );
    assert!(
        ours == theirs,
        "{case}: zero/ file sets differ: only ours {:?}, only DeepSpeed's {:?}",
        ours.iter()
            .filter(|f| !theirs.contains(f))
            .collect::<Vec<_>>(),
        theirs
            .iter()
            .filter(|f| !ours.contains(f))
            .collect::<Vec<_>>()
    );
    assert!(
        compared >= st.names().len(),
        "{case}: compared only {compared} files"
    );
    assert!(out.join("zero/optimizer_state.pt").is_file());
}

#[test]
fn every_deepspeed_fixture_converts_exactly() {
    for case in common::DEEPSPEED_CASES {
        check(case);
    }
}

/// DeepSpeed's ZeRO-3 `load_universal` reads `optimizer_state_dict.state[0].step` and
/// `optimizer_state_dict.param_groups` from `zero/optimizer_state.pt` (checked against real DeepSpeed
/// by scripts/interop/deepspeed_resume.sh).
#[test]
fn zero3_optimizer_state_has_what_the_loader_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let opts = ConvertOptions {
        format: Format::DeepSpeed,
        ..Default::default()
    };
    convert(&fixtures().join("zero3"), &out, &opts, &|_, _, _| {}).unwrap();
    let f = PtFile::open(out.join("zero/optimizer_state.pt"), &Allowlist::deepspeed()).unwrap();
    let inner = f.cursor().key("optimizer_state_dict").unwrap();
    for g in 0..2 {
        let step = inner
            .key("state")
            .unwrap()
            .int_key(g)
            .unwrap()
            .key("step")
            .unwrap();
        let t = step.value().as_tensor().unwrap();
        assert!(t.shape.is_empty());
        assert_eq!(f.tensor_bytes("step", t).unwrap(), 3f32.to_le_bytes());
    }
    assert_eq!(inner.key("param_groups").unwrap().len().unwrap(), 2);
}

/// fp16 with dynamic loss scaling pickles a `DynamicLossScaler` (state: scale, iteration, dtype
/// `torch.float16`) in every optimizer-states file: it is read (allowlisted, never executed) and
/// carried into `zero/optimizer_state.pt` with its class and state, as `ds_to_universal` keeps it,
/// so `load_universal` resumes at the saved scale. Data: tests/fixtures/generator/make_dynamic_scaler.py.
#[test]
fn dynamic_loss_scaler_is_carried_into_the_universal_optimizer_state() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("zero2");
    common::copy_dir(&fixtures().join("zero2"), &input);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/zero2_dynamic_scaler");
    for r in 0..2 {
        let name = format!("zero_pp_rank_{r}_mp_rank_00_optim_states.pt");
        std::fs::copy(data.join(&name), input.join("global_step3").join(&name)).unwrap();
    }
    let out = tmp.path().join("out");
    let opts = ConvertOptions {
        format: Format::Both,
        ..Default::default()
    };
    convert(&input, &out, &opts, &|_, _, _| {}).unwrap();
    let native = NativeCheckpoint::open(&out).unwrap();
    let bytes = std::fs::read(fixtures().join("zero2/expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for name in st.names() {
        let (p, role) = name.rsplit_once('/').unwrap();
        let got = native.tensor(p, &Role::from_key(role)).unwrap();
        assert!(got == st.tensor(name).unwrap().data(), "{name}");
    }
    let f = PtFile::open(out.join("zero/optimizer_state.pt"), &Allowlist::deepspeed()).unwrap();
    let c = f.cursor();
    assert_eq!(
        c.key("dynamic_loss_scale").unwrap().value(),
        &PyValue::Bool(true)
    );
    let PyValue::Object(o) = c.key("loss_scaler").unwrap().value() else {
        panic!("loss_scaler is not an object");
    };
    assert_eq!(
        (o.class.module.as_str(), o.class.name.as_str()),
        ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler")
    );
    let state = o.state.as_ref().expect("loss_scaler state");
    assert_eq!(state.get("cur_scale"), Some(&PyValue::Float(1024.0)));
    assert_eq!(state.get("cur_iter"), Some(&PyValue::Int(3)));
    assert_eq!(state.get("last_overflow_iter"), Some(&PyValue::Int(1)));
    assert!(matches!(
        state.get("dtype"),
        Some(PyValue::Global(g)) if g.module == "torch" && g.name == "float16"
    ));
}
