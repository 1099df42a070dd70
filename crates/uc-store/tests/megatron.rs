//! Megatron-Core `torch_dist` fixtures: per-layer tensors split from the stacked layer axis, moments,
//! `common.pt` state, padded vocabulary kept or cut — bit-exact against `expected.safetensors`.

mod common;

use common::MEGATRON;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use uc_schema::{Role, Value};
use uc_store::convert::{convert, ConvertOptions};
use uc_store::dcp::{DcpCheckpoint, DcpOptions, Flavor};
use uc_store::native::NativeCheckpoint;
use uc_store::StoreError;

const CASES: &[&str] = &["gpt_tp2", "gpt_tp2_dp2", "gpt_tp2_swiglu_tied"];

fn case(name: &str) -> PathBuf {
    Path::new(MEGATRON).join(name)
}

fn expected(name: &str) -> Vec<u8> {
    std::fs::read(case(name).join("expected.safetensors")).unwrap()
}

#[test]
fn every_megatron_fixture_merges_exactly() {
    for name in CASES {
        let ck = DcpCheckpoint::open(&case(name).join("checkpoint"), &DcpOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ck.flavor(), Flavor::Megatron);
        let outs = ck.outputs();
        let bytes = expected(name);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for key in st.names() {
            let (param, role) = key.rsplit_once('/').unwrap();
            let role = Role::from_key(role);
            let meta = outs
                .iter()
                .find(|m| m.name == param && m.role == role)
                .unwrap_or_else(|| panic!("{name}: no output {key}"));
            let want = st.tensor(key).unwrap();
            assert_eq!(
                meta.shape,
                want.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
                "{name}: {key}"
            );
            let got = ck
                .read(meta)
                .unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
            assert!(got == want.data(), "{name}: {key} differs");
        }
        // Nothing but the expected tensors and one Adam step (3.0, from common.pt) per parameter.
        let steps: Vec<_> = outs.iter().filter(|m| m.role == Role::Step).collect();
        assert_eq!(outs.len() - steps.len(), st.names().len(), "{name}");
        assert_eq!(steps.len() * 3, st.names().len(), "{name}");
        for s in steps {
            assert_eq!(ck.read(s).unwrap(), 3.0f32.to_le_bytes());
        }
        let world = if *name == "gpt_tp2_dp2" { 4 } else { 2 };
        assert_eq!(ck.topology().world_size(), world, "{name}");
    }
}

#[test]
fn common_pt_is_state() {
    let ck =
        DcpCheckpoint::open(&case("gpt_tp2").join("checkpoint"), &DcpOptions::default()).unwrap();
    assert_eq!(ck.state.get("iteration"), Some(&Value::Int(3)));
    assert_eq!(ck.state.get("checkpoint_version"), Some(&Value::Float(3.0)));
    assert_eq!(ck.state.get("step"), Some(&Value::Float(3.0)));
    let Some(Value::Map(sched)) = ck.state.get("opt_param_scheduler") else {
        panic!("{:?}", ck.state.keys())
    };
    assert_eq!(sched.get("num_steps"), Some(&Value::Int(3)));
    let Some(Value::List(groups)) = ck.state.get("param_groups") else {
        panic!()
    };
    assert_eq!(groups.len(), 2);
    let Value::Map(g1) = &groups[1] else { panic!() };
    assert_eq!(g1.get("wd_mult"), Some(&Value::Float(0.0)));
    assert_eq!(g1.get("weight_decay"), Some(&Value::Float(0.0)));
    // No `_extra_state` entries leak into the state or the tensors.
    assert!(ck.state.keys().all(|k| !k.contains("_extra_state")));
    assert!(ck
        .outputs()
        .iter()
        .all(|m| !m.name.contains("_extra_state")));
}

#[test]
fn te_names_keep_the_fused_layernorm_keys() {
    let opts = DcpOptions {
        te_names: true,
        ..Default::default()
    };
    let ck = DcpCheckpoint::open(&case("gpt_tp2").join("checkpoint"), &opts).unwrap();
    let names: Vec<String> = ck.outputs().into_iter().map(|m| m.name).collect();
    assert!(names.contains(&"decoder.layers.1.self_attention.linear_qkv.layer_norm_weight".into()));
    assert!(!names.iter().any(|n| n.contains("input_layernorm")));
}

#[test]
fn vocab_size_cuts_the_padded_rows() {
    let name = "gpt_tp2_swiglu_tied";
    let dir = case(name).join("checkpoint");
    let opts = DcpOptions {
        vocab_size: Some(90),
        ..Default::default()
    };
    let ck = DcpCheckpoint::open(&dir, &opts).unwrap();
    let bytes = expected(name);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for role in [Role::Fp32Master, Role::ExpAvg, Role::ExpAvgSq] {
        let meta = ck
            .outputs()
            .into_iter()
            .find(|m| m.name == "embedding.word_embeddings.weight" && m.role == role)
            .unwrap();
        assert_eq!(meta.shape, vec![90, 32]);
        let key = format!("embedding.word_embeddings.weight/{}", role.key());
        let full = st.tensor(&key).unwrap();
        assert_eq!(full.shape(), &[96, 32]);
        assert!(ck.read(&meta).unwrap() == full.data()[..90 * 32 * 4]);
    }
    let too_big = DcpOptions {
        vocab_size: Some(97),
        ..Default::default()
    };
    let err = DcpCheckpoint::open(&dir, &too_big).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadTensor { tensor, .. } if tensor == "embedding.word_embeddings.weight"),
        "{err}"
    );
}

#[test]
fn convert_megatron_fixture_to_native() {
    for name in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let opts = ConvertOptions {
            threads: Some(2),
            ..Default::default()
        };
        convert(&case(name).join("checkpoint"), &out, &opts, &|_, _, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ck = NativeCheckpoint::open(&out).unwrap();
        ck.verify().unwrap();
        let bytes = expected(name);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for key in st.names() {
            let (param, role) = key.rsplit_once('/').unwrap();
            let got = ck.tensor(param, &Role::from_key(role)).unwrap();
            assert!(got == st.tensor(key).unwrap().data(), "{name}: {key}");
        }
        assert_eq!(ck.manifest().state.get("iteration"), Some(&Value::Int(3)));
    }
}

#[test]
fn megatron_metadata_in_a_plain_dcp_folder_is_refused() {
    // Without metadata.json the folder is read as plain DCP, whose allowlist lacks the planner classes.
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("ck");
    std::fs::create_dir(&dst).unwrap();
    for e in std::fs::read_dir(case("gpt_tp2").join("checkpoint")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "metadata.json" {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    let err = DcpCheckpoint::open(&dst, &DcpOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StoreError::DisallowedGlobal { module, .. } if module == "torch.distributed.checkpoint.planner"),
        "{err}"
    );
}
