//! Native DeepSpeed MoE (`deepspeed.moe.layer.MoE`, fixtures `moe_ep2_*`): every expert's fp32
//! weights and Adam moments under global names, bit for bit equal to expected.safetensors through
//! `convert` (native and DeepSpeed layout) and `export`; bad input is a typed error naming the file
//! and leaves no output.

mod common;
use common::{convert_err, copy_case, edit_pt, export_equals_expected, pt_at, DEEPSPEED};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use uc_schema::Role;
use uc_store::convert::{convert, ConvertOptions, Format};
use uc_store::deepspeed::{Assume, DsCheckpoint};
use uc_store::native::NativeCheckpoint;
use uc_store::StoreError;
use uc_torch::PtValue;

const CASES: [&str; 3] = ["moe_ep2_zero2", "moe_ep2_zero1", "moe_ep2_nozero"];

fn fixture(case: &str) -> PathBuf {
    Path::new(DEEPSPEED).join(case)
}

fn opts(format: Format) -> ConvertOptions {
    ConvertOptions {
        format,
        threads: Some(2),
        ..Default::default()
    }
}

#[test]
fn every_expert_and_moment_converts_exactly() {
    for case in CASES {
        let src = fixture(case);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        convert(&src, &out, &opts(Format::Native), &|_, _, _| {})
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let ck = NativeCheckpoint::open(&out).unwrap();
        ck.verify().unwrap();
        let bytes = std::fs::read(src.join("expected.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.names().len(), 180, "{case}");
        for name in st.names() {
            let (param, key) = name.rsplit_once('/').unwrap();
            let want = st.tensor(name).unwrap();
            let got = ck
                .tensor(param, &Role::from_key(key))
                .unwrap_or_else(|e| panic!("{case}: {name}: {e}"));
            assert!(got == want.data(), "{case}: native {name} differs");
        }
        // 60 parameters (36 dense + 24 experts under global names), nothing else trained
        let params: Vec<_> = ck
            .manifest()
            .tensors
            .iter()
            .filter(|t| t.meta.role == Role::Fp32Master)
            .collect();
        assert_eq!(params.len(), 60, "{case}");
    }
}

/// DeepSpeed's layout of native MoE (what real DeepSpeed 0.19.8 `load_universal` restores bit-exactly,
/// scripts/interop/moe_resume.sh): expert folders under the EP-local name `…deepspeed_experts.<j>.…`
/// holding `[ep, …]`, row e = global expert `e·num_local + j`, tagged as expert params; no folder under
/// a global id past the local count. Without ZeRO it is refused (DeepSpeed cannot resume that from a
/// universal folder).
#[test]
fn deepspeed_layout_stacks_each_local_expert_over_the_ep_ranks() {
    for case in ["moe_ep2_zero2", "moe_ep2_zero1"] {
        let src = fixture(case);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        convert(&src, &out, &opts(Format::DeepSpeed), &|_, _, _| {})
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let bytes = std::fs::read(src.join("expected.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let zero = out.join("zero");
        let prefix = "blocks.2.mlp.deepspeed_moe.experts.deepspeed_experts.";
        assert!(
            !zero.join(format!("{prefix}2.fc1.weight")).exists(),
            "{case}"
        );
        for j in 0..2u32 {
            for (state, key) in [
                ("fp32", "fp32"),
                ("exp_avg", "exp_avg"),
                ("exp_avg_sq", "exp_avg_sq"),
            ] {
                let f = zero.join(format!("{prefix}{j}.fc1.weight/{state}.pt"));
                let (dtype, shape, data) = common::universal_param(&f);
                assert_eq!(dtype, uc_schema::DType::F32);
                assert_eq!(shape, vec![2, 32, 16], "{case}: {}", f.display());
                let mut want = Vec::new();
                for e in 0..2u32 {
                    let g = e * 2 + j;
                    let t = st.tensor(&format!("{prefix}{g}.fc1.weight/{key}")).unwrap();
                    want.extend_from_slice(t.data());
                }
                assert!(data == want, "{case}: local expert {j} {state}");
                let keys: Vec<String> = common::universal_keys(&f)
                    .unwrap()
                    .into_iter()
                    .map(|k| k.0)
                    .collect();
                assert!(keys.contains(&"is_expert_param".to_string()), "{keys:?}");
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let e = convert(
        &fixture("moe_ep2_nozero"),
        &out,
        &opts(Format::DeepSpeed),
        &|_, _, _| {},
    )
    .expect_err("refused");
    assert!(
        matches!(&e, StoreError::Format { why, .. } if why.contains("load_universal")),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// Expert 3 of MoE layer 1 is EP rank 1's local expert 1 of `blocks.2` (MoE layers count MoE modules).
#[test]
fn experts_get_global_names_from_their_ep_rank() {
    for case in CASES {
        let ck = DsCheckpoint::open(&fixture(case), None, &Assume::default()).unwrap();
        assert_eq!(
            ck.degrees(),
            (1, 1, 2),
            "{case}: tp, pp, dp (no ZeRO: dp_world_size)"
        );
        let names: Vec<&str> = ck.params().iter().map(|p| p.name.as_str()).collect();
        for e in 0..4 {
            let n = format!("blocks.2.mlp.deepspeed_moe.experts.deepspeed_experts.{e}.fc2.bias");
            assert!(names.contains(&n.as_str()), "{case}: {n}");
        }
        assert_eq!(names.len(), 60, "{case}");
        let p = ck
            .param("blocks.2.mlp.deepspeed_moe.experts.deepspeed_experts.3.fc1.weight")
            .unwrap();
        assert_eq!(p.meta.shape, vec![32, 16]);
        if case != "moe_ep2_nozero" {
            assert_eq!(p.sources, vec![(0, 1)], "{case}: EP rank 1's file");
        }
    }
}

#[test]
fn export_writes_every_expert_weight_exactly() {
    for case in CASES {
        // Only the fp32 weights' bytes are read.
        assert_eq!(export_equals_expected(&fixture(case), 1.1), 60, "{case}");
    }
}

#[test]
fn a_missing_expert_file_is_named() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, tag) = copy_case(tmp.path(), case);
        let gone = tag.join("layer_1_expert_3_mp_rank_00_model_states.pt");
        std::fs::remove_file(&gone).unwrap();
        match convert_err(tmp.path(), &dir, Format::Native) {
            StoreError::Io { path, source } => {
                assert_eq!(path, gone, "{case}");
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{case}");
            }
            other => panic!("{case}: expected Io NotFound, got {other:?}"),
        }
    }
}

/// EP rank 0's expert 0 in the file of expert 2 (EP rank 1).
#[test]
fn an_expert_file_of_the_wrong_ep_rank_is_named() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, tag) = copy_case(tmp.path(), case);
        let wrong = tag.join("layer_0_expert_2_mp_rank_00_model_states.pt");
        std::fs::copy(
            tag.join("layer_0_expert_0_mp_rank_00_model_states.pt"),
            &wrong,
        )
        .unwrap();
        match convert_err(tmp.path(), &dir, Format::Native) {
            StoreError::WrongExpert {
                path,
                tensor,
                expected,
                found,
            } => {
                assert_eq!(path, wrong, "{case}");
                assert_eq!((expected, found), (2, 0), "{case}");
                assert!(
                    tensor.starts_with("blocks.0.mlp.deepspeed_moe.experts.deepspeed_experts.0.")
                );
            }
            other => panic!("{case}: expected WrongExpert, got {other:?}"),
        }
    }
}

/// An expert file for an expert the model states do not have.
#[test]
fn an_expert_file_past_the_expert_count_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), "moe_ep2_zero2");
    let extra = tag.join("layer_0_expert_4_mp_rank_00_model_states.pt");
    std::fs::copy(
        tag.join("layer_0_expert_0_mp_rank_00_model_states.pt"),
        &extra,
    )
    .unwrap();
    match convert_err(tmp.path(), &dir, Format::Native) {
        StoreError::Format { path, .. } => assert_eq!(path, extra),
        other => panic!("expected Format, got {other:?}"),
    }
}

#[test]
fn an_expert_group_name_that_does_not_parse_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), "moe_ep2_zero2");
    for r in 0..2 {
        let f = tag.join(format!("zero_pp_rank_{r}_mp_rank_00_optim_states.pt"));
        edit_pt(&f, |v| {
            *pt_at(
                v,
                &[
                    "optimizer_state_dict",
                    "base_optimizer_state",
                    "param_groups",
                    "2",
                    "name",
                ],
            ) = PtValue::str("ep_size_two")
        });
    }
    match convert_err(tmp.path(), &dir, Format::Native) {
        StoreError::BadValue {
            path, key, value, ..
        } => {
            assert_eq!(path, tag.join("zero_pp_rank_0_mp_rank_00_optim_states.pt"));
            assert!(key.ends_with("param_groups[2].name"), "{key}");
            assert_eq!(value, "\"ep_size_two\"");
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}

/// Without ZeRO the EP size is the number of `expp_rank_*` files; a group naming another is refused.
#[test]
fn a_no_zero_group_name_disagreeing_with_the_files_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), "moe_ep2_nozero");
    let f = tag.join("expp_rank_1_mp_rank_00_optim_states.pt");
    edit_pt(&f, |v| {
        *pt_at(v, &["optimizer", "param_groups", "3", "name"]) = PtValue::str("ep_size_4")
    });
    match convert_err(tmp.path(), &dir, Format::Native) {
        StoreError::BadValue { path, value, .. } => {
            assert_eq!(path, f);
            assert_eq!(value, "ep_size_4");
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}

#[test]
fn a_missing_expp_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), "moe_ep2_nozero");
    std::fs::rename(
        tag.join("expp_rank_0_mp_rank_00_optim_states.pt"),
        tag.join("expp_rank_2_mp_rank_00_optim_states.pt"),
    )
    .unwrap();
    match convert_err(tmp.path(), &dir, Format::Native) {
        StoreError::Io { path, .. } => {
            assert_eq!(path, tag.join("expp_rank_0_mp_rank_00_optim_states.pt"))
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

/// Without ZeRO every EP rank's file holds the dense moments; copies that differ are an error.
#[test]
fn dense_moments_that_differ_between_ep_ranks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), "moe_ep2_nozero");
    let f = tag.join("expp_rank_1_mp_rank_00_optim_states.pt");
    // index 0: the first dense matrix in module order, embed.weight [48, 16]
    edit_pt(&f, |v| {
        let zeros: &'static [u8] = Box::leak(vec![0u8; 48 * 16 * 4].into_boxed_slice());
        *pt_at(v, &["optimizer", "state", "0", "exp_avg"]) = PtValue::Tensor(
            uc_torch::PtTensor::from_bytes(uc_schema::DType::F32, vec![48, 16], zeros),
        );
    });
    match convert_err(tmp.path(), &dir, Format::Native) {
        StoreError::BadTensor { tensor, .. } => assert_eq!(tensor, "embed.weight"),
        other => panic!("expected BadTensor, got {other:?}"),
    }
}
