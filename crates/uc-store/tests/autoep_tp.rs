//! AutoEP folded with AutoTP (fixture `ep2_tp2_zero1`: ep 2 and tp 2 on the same 2 ranks): experts
//! placed by the folding table (not by AutoTP's metadata, which calls them TP-replicated), dense
//! params by AutoTP's rules, all bit for bit equal to expected.safetensors through `convert` (native
//! and DeepSpeed layout) and `export`; bad input is a typed error naming the file, no output.

mod common;
use common::{convert_err, copy_case, edit_pt, export_equals_expected, pt_at, DEEPSPEED};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use uc_schema::Role;
use uc_store::convert::{convert, ConvertOptions, Format};
use uc_store::native::NativeCheckpoint;
use uc_store::StoreError;
use uc_torch::PtValue;

const CASE: &str = "ep2_tp2_zero1";

fn fixture() -> PathBuf {
    Path::new(DEEPSPEED).join(CASE)
}

fn opts() -> ConvertOptions {
    ConvertOptions {
        format: Format::Both,
        threads: Some(2),
        ..Default::default()
    }
}

#[test]
fn every_tensor_converts_exactly() {
    let src = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    convert(&src, &out, &opts(), &|_, _, _| {}).unwrap_or_else(|e| panic!("{e}"));
    let ck = NativeCheckpoint::open(&out).unwrap();
    ck.verify().unwrap();
    let bytes = std::fs::read(src.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names().len(), 69);
    for name in st.names() {
        let (param, key) = name.rsplit_once('/').unwrap();
        let want = st.tensor(name).unwrap();
        let got = ck
            .tensor(param, &Role::from_key(key))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == want.data(), "native {name} differs");
        let f = out.join("zero").join(param).join(format!("{key}.pt"));
        let (_, shape, data) = common::universal_param(&f);
        let want_shape: Vec<u64> = want.shape().iter().map(|&d| d as u64).collect();
        assert_eq!(shape, want_shape, "{name}");
        assert!(data == want.data(), "universal {name} differs");
        let keys: Vec<String> = common::universal_keys(&f)
            .unwrap()
            .into_iter()
            .map(|k| k.0)
            .collect();
        if param.contains(".experts.w") {
            assert_eq!(
                keys,
                ["param", "cat_dim", "is_expert_param", "ep_num_experts"],
                "{name}"
            );
        } else {
            assert!(keys.contains(&"param".to_string()), "{name}");
        }
    }
    // the router alias registered under the old HF name is whole (replicated), not concatenated
    let alias = ck
        .manifest()
        .tensors
        .iter()
        .find(|t| t.meta.name == "model.layers.0.mlp.gate.gate.weight")
        .expect("the alias is carried");
    assert_eq!(alias.meta.shape, vec![4, 32]);
}

#[test]
fn export_writes_every_weight_exactly() {
    // The fp32 weights' bytes (87,680), plus the second TP rank's copy of the replicated tensors
    // (embedding, head, norms, routers: 13,952, read to verify the copies are equal) and the module
    // router aliases compared with the routers (2,048) to leave them out.
    assert_eq!(
        export_equals_expected(&fixture(), 1.25),
        23,
        "the 23 weights, no alias"
    );
}

/// Expert 3 lives on TP rank 1 (`mp_rank_01`): its missing file is named as such.
#[test]
fn a_missing_expert_file_is_named_with_its_tp_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), CASE);
    let gone = tag.join("layer_0_expert_3_mp_rank_01_model_states.pt");
    std::fs::remove_file(&gone).unwrap();
    match convert_err(tmp.path(), &dir, Format::Both) {
        StoreError::Io { path, source } => {
            assert_eq!(path, gone);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io NotFound, got {other:?}"),
    }
}

/// Expert 3 (EP rank 1) filed under TP rank 0, which holds EP rank 0.
#[test]
fn an_expert_file_of_the_wrong_ep_rank_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), CASE);
    let wrong = tag.join("layer_0_expert_3_mp_rank_00_model_states.pt");
    std::fs::rename(
        tag.join("layer_0_expert_3_mp_rank_01_model_states.pt"),
        &wrong,
    )
    .unwrap();
    match convert_err(tmp.path(), &dir, Format::Both) {
        StoreError::Format { path, why } => {
            assert_eq!(path, wrong);
            assert!(why.contains("EP rank 1"), "{why}");
        }
        other => panic!("expected Format, got {other:?}"),
    }
}

/// An expert file whose own folding table names another EP rank than its owner.
#[test]
fn an_expert_file_whose_folding_disagrees_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), CASE);
    let f = tag.join("layer_1_expert_2_mp_rank_01_model_states.pt");
    edit_pt(&f, |v| *pt_at(v, &["folding", "ep_rank"]) = PtValue::Int(0));
    match convert_err(tmp.path(), &dir, Format::Both) {
        StoreError::BadValue {
            path, key, value, ..
        } => {
            assert_eq!(path, f);
            assert_eq!((key.as_str(), value.as_str()), ("folding.ep_rank", "0"));
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}

/// The model states of TP rank 1 claiming TP rank 0 in their folding table.
#[test]
fn a_folding_table_disagreeing_with_the_file_names_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), CASE);
    let f = tag.join("mp_rank_01_model_states.pt");
    edit_pt(&f, |v| *pt_at(v, &["folding", "tp_rank"]) = PtValue::Int(0));
    match convert_err(tmp.path(), &dir, Format::Both) {
        StoreError::BadValue {
            path, key, value, ..
        } => {
            assert_eq!(path, f);
            assert_eq!((key.as_str(), value.as_str()), ("folding.tp_rank", "0"));
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}

/// Both TP ranks claiming EP rank 0.
#[test]
fn two_tp_ranks_with_one_ep_rank_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), CASE);
    let f = tag.join("mp_rank_01_model_states.pt");
    edit_pt(&f, |v| *pt_at(v, &["folding", "ep_rank"]) = PtValue::Int(0));
    match convert_err(tmp.path(), &dir, Format::Both) {
        StoreError::BadValue { path, key, .. } => {
            assert_eq!(path, f);
            assert_eq!(key, "folding.ep_rank");
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}

#[test]
fn an_expert_group_name_that_does_not_parse_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = copy_case(tmp.path(), CASE);
    for t in 0..2 {
        let f = tag.join(format!("zero_pp_rank_0_mp_rank_{t:02}_optim_states.pt"));
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
            ) = PtValue::str("ep_size_")
        });
    }
    match convert_err(tmp.path(), &dir, Format::Both) {
        StoreError::BadValue { path, value, .. } => {
            assert_eq!(path, tag.join("zero_pp_rank_0_mp_rank_00_optim_states.pt"));
            assert_eq!(value, "\"ep_size_\"");
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}
