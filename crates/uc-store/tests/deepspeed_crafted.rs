//! Crafted DeepSpeed input (fixture copies with one value changed): out-of-range values are typed
//! errors naming the file, never clamped; inputs that used to panic are typed errors.

mod common;
use common::{copy_case, edit_pt, pt_at};
use std::path::Path;
use uc_store::deepspeed::{Assume, DsCheckpoint};
use uc_store::StoreError;
use uc_torch::PtValue;

fn open_err(tag: &Path) -> StoreError {
    DsCheckpoint::open(tag, None, &Assume::default()).expect_err("crafted input must be refused")
}

/// Asserts `e` is [`StoreError::BadValue`] for `file` and `key`, with the value `value`.
fn assert_bad_value(e: &StoreError, file: &Path, key: &str, value: &str) {
    match e {
        StoreError::BadValue {
            path,
            key: k,
            value: v,
            ..
        } => {
            assert_eq!(path, file, "{e}");
            assert!(k.ends_with(key), "{e}");
            assert_eq!(v, value, "{e}");
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}

#[test]
fn zero_stage_7_is_an_error_not_stage_3() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "zero2");
    for r in 0..2 {
        let f = tag.join(format!("zero_pp_rank_{r}_mp_rank_00_optim_states.pt"));
        edit_pt(&f, |v| {
            *pt_at(v, &["optimizer_state_dict", "zero_stage"]) = PtValue::Int(7)
        });
    }
    let f = tag.join("zero_pp_rank_0_mp_rank_00_optim_states.pt");
    assert_bad_value(&open_err(&tag), &f, "zero_stage", "7");
}

#[test]
fn negative_zero_stage_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "zero1");
    let f = tag.join("zero_pp_rank_0_mp_rank_00_optim_states.pt");
    edit_pt(&f, |v| {
        *pt_at(v, &["optimizer_state_dict", "zero_stage"]) = PtValue::Int(-1)
    });
    assert_bad_value(&open_err(&tag), &f, "zero_stage", "-1");
}

/// `tp_degree` 2³² + 2 used to be truncated to 2 (`as u32`), which this checkpoint's two model
/// files then confirmed: a silently wrong degree.
#[test]
fn tp_degree_past_u32_is_an_error_not_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "tp2_zero1");
    let f = tag.join("mp_rank_00_model_states.pt");
    edit_pt(&f, |v| {
        *pt_at(v, &["checkpoint_parallel_dimensions", "tp_degree"]) = PtValue::Int((1 << 32) + 2)
    });
    assert_bad_value(&open_err(&tag), &f, "tp_degree", "4294967298");
}

/// `tp_degree` 0 used to become 1.
#[test]
fn tp_degree_0_is_an_error_not_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "zero1");
    let f = tag.join("mp_rank_00_model_states.pt");
    edit_pt(&f, |v| {
        *pt_at(v, &["checkpoint_parallel_dimensions", "tp_degree"]) = PtValue::Int(0)
    });
    assert_bad_value(&open_err(&tag), &f, "tp_degree", "0");
}

#[test]
fn negative_pp_degree_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "zero1");
    let f = tag.join("mp_rank_00_model_states.pt");
    edit_pt(&f, |v| {
        *pt_at(v, &["checkpoint_parallel_dimensions", "pp_degree"]) = PtValue::Int(-3)
    });
    assert_bad_value(&open_err(&tag), &f, "pp_degree", "-3");
}

/// A ZeRO partition count of 0 used to become 1.
#[test]
fn partition_count_0_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "zero2");
    let f = tag.join("zero_pp_rank_0_mp_rank_00_optim_states.pt");
    edit_pt(&f, |v| {
        *pt_at(v, &["optimizer_state_dict", "partition_count", "1"]) = PtValue::Int(0)
    });
    assert_bad_value(&open_err(&tag), &f, "partition_count[1]", "0");
}

/// An expert (moe) param group of model-parallel rank 1 whose names rank 0 lists nowhere: the
/// expert's ZeRO layout is looked up on rank 0 (this used to index a missing map entry).
#[test]
fn expert_group_only_rank_1_lists_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "tp2_zero1");
    // rank 1's group 1 (the 1-d params) renamed, so rank 0 lists none of them, and made a moe group
    let model1 = tag.join("mp_rank_01_model_states.pt");
    edit_pt(&model1, |v| {
        let (PtValue::OrderedDict(g) | PtValue::Dict(g)) = pt_at(v, &["param_shapes", "1"]) else {
            panic!("param_shapes[1] is not a dict");
        };
        for (name, _) in g.iter_mut() {
            *name = format!("moe_only.{name}");
        }
    });
    let optim1 = tag.join("zero_pp_rank_0_mp_rank_01_optim_states.pt");
    edit_pt(&optim1, |v| {
        let PtValue::Dict(g) = pt_at(
            v,
            &[
                "optimizer_state_dict",
                "base_optimizer_state",
                "param_groups",
                "1",
            ],
        ) else {
            panic!("param group 1 is not a dict");
        };
        g.push(("moe".into(), PtValue::Bool(true)));
    });
    match open_err(&tag) {
        StoreError::Format { path, why } => {
            assert_eq!(path, model1);
            assert!(
                why.contains("moe_only.logit_scale")
                    && why.contains("no optimizer param group of model-parallel rank 0"),
                "{why}"
            );
        }
        other => panic!("expected Format, got {other:?}"),
    }
}

/// A 0-d expert tensor in a layer of 0 experts: the expert count check reads dim 0 of the local
/// shape (this used to index an empty shape).
#[test]
fn zero_d_expert_with_no_experts_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "ep2_zero2");
    let model = tag.join("mp_rank_00_model_states.pt");
    let no_experts = |layer: &mut PtValue<'static>| {
        *pt_at(layer, &["num_experts"]) = PtValue::Int(0);
        *pt_at(layer, &["num_local_experts"]) = PtValue::Int(0);
        *pt_at(layer, &["global_expert_start"]) = PtValue::Int(0);
        *pt_at(layer, &["global_expert_end"]) = PtValue::Int(0);
        *pt_at(layer, &["expert_placement", "num_experts"]) = PtValue::Int(0);
        for r in ["0", "1"] {
            *pt_at(layer, &["expert_placement", "ranks", r, "experts"]) = PtValue::List(vec![]);
        }
        *pt_at(layer, &["affine_maps"]) = PtValue::None;
    };
    edit_pt(&model, |v| {
        no_experts(pt_at(v, &["ds_autoep_layers", "0"]));
        no_experts(pt_at(
            v,
            &["universal_checkpoint_info", "ds_autoep_layers", "0"],
        ));
        *pt_at(v, &["param_shapes", "2", "model.layers.0.mlp.experts.w1"]) = PtValue::Tuple(vec![]);
    });
    // a layer of 0 experts has no expert files (one would be an error naming it)
    for e in 0..4 {
        std::fs::remove_file(tag.join(format!("layer_0_expert_{e}_mp_rank_00_model_states.pt")))
            .unwrap();
    }
    match open_err(&tag) {
        StoreError::Format { path, why } => {
            assert_eq!(path, model);
            assert!(
                why.contains("model.layers.0.mlp.experts.w1") && why.contains("local shape []"),
                "{why}"
            );
        }
        other => panic!("expected Format, got {other:?}"),
    }
}

/// An AutoEP layer with ep_size 0 (this used to index the holder of EP rank 0 of none).
#[test]
fn autoep_ep_size_0_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "ep2_zero2");
    let model = tag.join("mp_rank_00_model_states.pt");
    edit_pt(&model, |v| {
        *pt_at(v, &["ds_autoep_layers", "0", "ep_size"]) = PtValue::Int(0);
    });
    match open_err(&tag) {
        StoreError::Schema {
            path,
            source: uc_schema::SchemaError::ZeroAxis { axis },
        } => {
            assert_eq!(path, model);
            assert!(axis.contains("model.layers.0.mlp.experts"), "{axis}");
        }
        other => panic!("expected Schema ZeroAxis, got {other:?}"),
    }
}

/// A param shape whose element count overflows u64 (this used to overflow a product).
#[test]
fn shape_past_u64_elements_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "zero1");
    let model = tag.join("mp_rank_00_model_states.pt");
    edit_pt(&model, |v| {
        let big = || PtValue::Int(1 << 33);
        *pt_at(v, &["param_shapes", "0", "embed.weight"]) =
            PtValue::Tuple(vec![big(), big(), big()]);
    });
    match open_err(&tag) {
        StoreError::Format { path, why } => {
            assert_eq!(path, model);
            assert!(why.contains("embed.weight"), "{why}");
        }
        other => panic!("expected Format, got {other:?}"),
    }
}

/// A ZeRO-3 param shape far larger than its partitions: reading it is a typed error, not a
/// terabyte allocation (which aborted the process).
#[test]
fn zero3_shape_larger_than_its_partitions_is_an_error_not_an_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tag) = copy_case(tmp.path(), "zero3");
    for r in 0..2 {
        let model = tag.join(format!("zero_pp_rank_{r}_mp_rank_00_model_states.pt"));
        edit_pt(&model, |v| {
            *pt_at(v, &["param_shapes", "0", "embed.weight"]) =
                PtValue::Tuple(vec![PtValue::Int(1 << 20), PtValue::Int(1 << 18)]);
        });
    }
    let ck =
        DsCheckpoint::open(&tag, None, &Assume::default()).expect("opens: only reads check data");
    let out = ck
        .outputs()
        .into_iter()
        .find(|o| o.name == "embed.weight")
        .unwrap();
    match ck.read(&out) {
        Err(StoreError::BadTensor { tensor, why, .. }) => {
            assert_eq!(tensor, "embed.weight", "{why}");
        }
        other => panic!("expected BadTensor, got {:?}", other.map(|b| b.len())),
    }
}

/// An AutoEP expert file of a layer no `ds_autoep_layers` entry has, or of the wrong model-parallel
/// rank, is an error naming it (they used to be ignored).
#[test]
fn autoep_expert_file_of_no_layer_or_rank_is_named() {
    for (bad, from) in [
        (
            "layer_5_expert_0_mp_rank_00_model_states.pt",
            "layer_0_expert_0_mp_rank_00_model_states.pt",
        ),
        (
            "layer_1_expert_2_mp_rank_01_model_states.pt",
            "layer_1_expert_2_mp_rank_00_model_states.pt",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (_, tag) = copy_case(tmp.path(), "ep2_zero2");
        std::fs::copy(tag.join(from), tag.join(bad)).unwrap();
        match open_err(&tag) {
            StoreError::Format { path, .. } => assert_eq!(path, tag.join(bad)),
            other => panic!("{bad}: expected Format, got {other:?}"),
        }
    }
}
