//! DCP and Megatron `torch_dist` → DeepSpeed's universal layout: every expected tensor is the
//! `param` of its `zero/<name>/<state>.pt`, bit for bit, and the synthesized model states and
//! `optimizer_state.pt` carry what DeepSpeed's `load_universal` reads (checked against real DeepSpeed
//! by scripts/interop/dcp_to_deepspeed.sh).

mod common;

use common::{universal_param, DCP, MEGATRON};
use safetensors::SafeTensors;
use std::path::Path;
use uc_schema::{DType, Role, TensorMeta};
use uc_store::convert::{convert, ConvertOptions, Format};
use uc_store::dcp::{write_dcp, DcpWriteOptions};
use uc_store::universal::MODEL_STATES;
use uc_store::StoreError;
use uc_torch::pickle::{Allowlist, PyValue};
use uc_torch::PtFile;

fn to_deepspeed(input: &Path, out: &Path, format: Format) {
    let opts = ConvertOptions {
        format,
        threads: Some(2),
        ..Default::default()
    };
    convert(input, out, &opts, &|_, _, _| {}).unwrap_or_else(|e| panic!("{input:?}: {e}"));
}

/// Every tensor of `expected.safetensors` equals its universal file; returns how many.
fn check_expected(case: &Path, out: &Path) -> usize {
    let bytes = std::fs::read(case.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for name in st.names() {
        let (p, state) = name.rsplit_once('/').unwrap();
        let file = out.join("zero").join(p).join(format!("{state}.pt"));
        let (dtype, shape, data) = universal_param(&file);
        let want = st.tensor(name).unwrap();
        assert_eq!(dtype, DType::F32, "{file:?}");
        let want_shape: Vec<u64> = want.shape().iter().map(|&d| d as u64).collect();
        assert_eq!(shape, want_shape, "{file:?}");
        assert!(data == want.data(), "{file:?} differs from {name}");
    }
    st.names().len()
}

/// `step.pt` of every parameter, the optimizer state and both model-states files.
fn check_common(out: &Path, groups: usize, step: f32) {
    let f = PtFile::open(out.join("zero/optimizer_state.pt"), &Allowlist::deepspeed()).unwrap();
    let c = f.cursor();
    assert_eq!(
        c.key("ds_version").unwrap().value().as_str(),
        Some(uc_store::universal::DS_VERSION)
    );
    let gs = c.key("param_groups").unwrap();
    assert_eq!(gs.len().unwrap(), groups);
    for g in 0..groups {
        let group = gs.index(g).unwrap();
        assert!(group.key("params").is_err(), "params must be dropped");
        assert!(matches!(
            group.key("betas").unwrap().value(),
            PyValue::Tuple(_)
        ));
        assert!(group.key("lr").is_ok());
    }
    let inner = c.key("optimizer_state_dict").unwrap();
    let s = inner
        .key("state")
        .unwrap()
        .int_key(0)
        .unwrap()
        .key("step")
        .unwrap();
    let t = s.value().as_tensor().unwrap();
    assert_eq!(f.tensor_bytes("step", t).unwrap(), step.to_le_bytes());
    for name in MODEL_STATES {
        let m = PtFile::open(out.join(name), &Allowlist::deepspeed()).unwrap();
        let c = m.cursor();
        assert_eq!(
            c.key("global_steps").unwrap().value().as_int(),
            Some(step as i64)
        );
        assert_eq!(c.key("mp_world_size").unwrap().value().as_int(), Some(1));
        assert_eq!(c.key("skipped_steps").unwrap().value().as_int(), Some(0));
    }
    for entry in std::fs::read_dir(out.join("zero")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.is_dir() {
            let (_, shape, data) = universal_param(&dir.join("step.pt"));
            assert!(shape.is_empty(), "{dir:?}");
            assert_eq!(data, step.to_le_bytes(), "{dir:?}");
        }
    }
}

#[test]
fn every_dcp_fixture_converts_to_the_deepspeed_layout() {
    for name in ["fsdp2_dp2", "fsdp2_tp_2x2", "ep_mesh_empty_shard"] {
        let case = Path::new(DCP).join(name);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        to_deepspeed(&case.join("checkpoint"), &out, Format::DeepSpeed);
        assert!(check_expected(&case, &out) > 0);
        check_common(&out, 2, 3.0);
    }
}

#[test]
fn every_megatron_fixture_converts_to_the_deepspeed_layout() {
    for name in ["gpt_tp2", "gpt_tp2_dp2", "gpt_tp2_swiglu_tied"] {
        let case = Path::new(MEGATRON).join(name);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        to_deepspeed(&case.join("checkpoint"), &out, Format::Both);
        assert!(check_expected(&case, &out) > 0);
        check_common(&out, 2, 3.0);
        assert!(out.join("uc.json").is_file(), "--format both keeps native");
    }
}

/// Without optimizer groups DeepSpeed would restore nothing: refused up front, nothing written.
#[test]
fn model_only_checkpoint_is_refused_for_deepspeed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model_only");
    let meta = TensorMeta::new("w", DType::F32, vec![2], Role::Fp32Master);
    let data = [1f32, 2.0].map(f32::to_le_bytes).concat();
    write_dcp(
        &src,
        &[meta],
        &|_| Ok(uc_store::TensorBytes::Owned(data.clone())),
        &Default::default(),
        &DcpWriteOptions::default(),
        &|_| {},
    )
    .unwrap();
    let out = tmp.path().join("out");
    let opts = ConvertOptions {
        format: Format::DeepSpeed,
        ..Default::default()
    };
    let err = convert(&src, &out, &opts, &|_, _, _| {}).unwrap_err();
    assert!(
        matches!(&err, StoreError::Format { path, why } if path == &src && why.contains("param_groups")),
        "{err}"
    );
    assert!(!out.exists());
}
