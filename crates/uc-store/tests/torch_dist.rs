//! `--format torch_dist`: a Megatron fixture converted back to Megatron's `torch_dist` has the same
//! keys, shapes and bytes items as the file Megatron wrote, reads back bit-exactly, and its
//! `common.pt` holds the shared Adam step and param groups (megatron-core's own
//! `dist_checkpointing.load` at TP 1 and 2 is checked by scripts/interop/megatron_load.sh).
//! Tensors that cannot be stacked over the layer axis are refused with nothing written.

mod common;

use common::MEGATRON;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uc_schema::{DType, Role, TensorMeta};
use uc_store::convert::{convert, ConvertOptions, Format};
use uc_store::dcp::{write_torch_dist, DcpCheckpoint, DcpOptions, Flavor, Item, TorchDistOptions};
use uc_store::StoreError;
use uc_torch::pickle::{Allowlist, PyValue};
use uc_torch::PtFile;

const CASES: &[&str] = &["gpt_tp2", "gpt_tp2_dp2", "gpt_tp2_swiglu_tied"];

fn case(name: &str) -> PathBuf {
    Path::new(MEGATRON).join(name)
}

fn to_torch_dist(input: &Path, out: &Path) {
    let opts = ConvertOptions {
        format: Format::TorchDist,
        threads: Some(2),
        ..Default::default()
    };
    convert(input, out, &opts, &|_, _, _| {}).unwrap_or_else(|e| panic!("{input:?}: {e}"));
}

/// Every item of a `.metadata`: tensors with their dtype and size, bytes items as `None`.
fn items(ck: &DcpCheckpoint) -> BTreeMap<String, Option<(DType, Vec<u64>)>> {
    ck.metadata()
        .items
        .iter()
        .map(|(k, i)| {
            let v = match i {
                Item::Tensor(t) => Some((t.dtype, t.size.clone())),
                Item::Bytes => None,
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn megatron_fixtures_round_trip_through_torch_dist() {
    for name in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        to_torch_dist(&case(name).join("checkpoint"), &out);
        let theirs =
            DcpCheckpoint::open(&case(name).join("checkpoint"), &DcpOptions::default()).unwrap();
        let ours = DcpCheckpoint::open(&out, &DcpOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours.flavor(), Flavor::Megatron);
        assert_eq!(items(&ours), items(&theirs), "{name}: keys and shapes");
        // One chunk per layer of a stacked key, one per other tensor.
        for (key, item) in &ours.metadata().items {
            if let Item::Tensor(t) = item {
                let want = if key.contains("layers.") {
                    t.size[0]
                } else {
                    1
                };
                assert_eq!(t.chunks.len() as u64, want, "{name}: {key}");
            }
        }
        common::dcp_equals_expected(name, &ours, &case(name).join("expected.safetensors"));
        assert_eq!(ours.state, theirs.state, "{name}: common.pt state");
    }
}

#[test]
fn common_pt_holds_step_groups_and_iteration() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    to_torch_dist(&case("gpt_tp2").join("checkpoint"), &out);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(json["sharded_backend"], "torch_dist");
    assert_eq!(json["common_backend"], "torch");
    let f = PtFile::open(out.join("common.pt"), &Allowlist::deepspeed()).unwrap();
    let c = f.cursor();
    assert_eq!(c.key("iteration").unwrap().as_int().unwrap(), 3);
    let step = c.key("optimizer").unwrap().key("state").unwrap();
    let t = step
        .key("common_step")
        .unwrap()
        .value()
        .as_tensor()
        .unwrap();
    assert!(t.shape.is_empty());
    assert_eq!(
        f.tensor_bytes("common_step", t).unwrap(),
        3f32.to_le_bytes()
    );
    let groups = c.key("optimizer").unwrap().key("param_groups").unwrap();
    assert_eq!(groups.len().unwrap(), 2);
    for g in 0..2 {
        let group = groups.index(g).unwrap();
        assert!(group.key("params").is_err());
        assert!(matches!(
            group.key("betas").unwrap().value(),
            PyValue::Tuple(_)
        ));
    }
}

fn meta(name: &str, shape: Vec<u64>) -> TensorMeta {
    TensorMeta::new(name, DType::F32, shape, Role::Fp32Master)
}

fn write(outs: &[TensorMeta], out: &Path) -> Result<PathBuf, StoreError> {
    write_torch_dist(
        out,
        outs,
        &|m| Ok(uc_store::TensorBytes::Owned(vec![0u8; m.nbytes() as usize])),
        &Default::default(),
        &TorchDistOptions::default(),
        &|_| {},
    )
}

#[test]
fn a_layer_without_the_tensor_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let outs = [
        meta("decoder.layers.0.mlp.linear_fc1.weight", vec![4, 2]),
        meta("decoder.layers.1.mlp.linear_fc2.weight", vec![2, 4]),
    ];
    let err = write(&outs, &out).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadTensor { tensor, why, .. }
            if tensor == "decoder.layers.0.mlp.linear_fc1.weight" && why.contains("layer 1 of 2")),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn layers_of_different_shapes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let outs = [
        meta("decoder.layers.0.mlp.linear_fc1.weight", vec![4, 2]),
        meta("decoder.layers.1.mlp.linear_fc1.weight", vec![6, 2]),
    ];
    let err = write(&outs, &out).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadTensor { tensor, .. }
            if tensor == "decoder.layers.1.mlp.linear_fc1.weight"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Local-spec LayerNorm names go under TransformerEngine's fused keys, stacked.
#[test]
fn local_names_are_stacked_under_te_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let outs = [
        meta("decoder.layers.0.input_layernorm.weight", vec![3]),
        meta("decoder.layers.1.input_layernorm.weight", vec![3]),
        meta("decoder.final_layernorm.weight", vec![3]),
    ];
    write(&outs, &out).unwrap();
    let ck = DcpCheckpoint::open(&out, &DcpOptions::default()).unwrap();
    let t = ck
        .metadata()
        .tensor("decoder.layers.self_attention.linear_qkv.layer_norm_weight")
        .unwrap();
    assert_eq!(t.size, vec![2, 3]);
    assert!(ck
        .metadata()
        .tensor("decoder.final_layernorm.weight")
        .is_some());
}

/// A Megatron input's extra-state bytes items are parsed (allowlist, never executed) before being
/// carried over: a corrupt one fails the conversion with nothing written.
#[test]
fn a_corrupt_extra_state_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    common::copy_dir(&case("gpt_tp2").join("checkpoint"), &ck);
    let md = DcpCheckpoint::open(&ck, &DcpOptions::default()).unwrap();
    let key = "decoder.layers.self_attention.linear_proj._extra_state/shard_0_2";
    let info = md.metadata().storage[&(key.to_string(), None)].clone();
    drop(md);
    let path = ck.join(&info.file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[info.offset as usize..info.offset as usize + 4].copy_from_slice(b"JUNK");
    std::fs::write(&path, bytes).unwrap();
    let out = tmp.path().join("out");
    let opts = ConvertOptions {
        format: Format::TorchDist,
        ..Default::default()
    };
    let err = convert(&ck, &out, &opts, &|_, _, _| {}).unwrap_err();
    assert!(err.to_string().contains(&info.file), "{err}");
    assert!(!out.exists());
}

/// Native MoE and AutoEP × AutoTP DeepSpeed fixtures written as `torch_dist` read back equal to their
/// expected.safetensors (experts under their global names).
#[test]
fn moe_fixtures_read_back_from_torch_dist() {
    for name in common::DEEPSPEED_MOE_CASES {
        let src = Path::new(common::DEEPSPEED).join(name);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        to_torch_dist(&src, &out);
        let ck = DcpCheckpoint::open(&out, &DcpOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        common::dcp_equals_expected(name, &ck, &src.join("expected.safetensors"));
    }
}
