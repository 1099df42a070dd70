//! `UniversalCheckpointInfo::tp_rule` on hand-written infos: every DeepSpeed merge rule, GQA with
//! equal and unequal head groups, legacy (pre-0.4) sub-param counts, vocabulary padding, and the
//! AutoTP per-parameter metadata view of the same layouts.

mod common;

use common::assert_round_trips;
use serde_json::json;
use uc_schema::deepspeed::{AutoTpParamMeta, TpKind, UniversalCheckpointInfo};
use uc_schema::{local_shape, validate_layout, DType, Layout, Role, Split, SubParam};

/// Parses a hand-written info, checking it emits itself again.
fn info(j: serde_json::Value) -> UniversalCheckpointInfo {
    let uci = UniversalCheckpointInfo::parse(&j).expect("parse");
    assert_eq!(uci.to_json(), j);
    assert_round_trips(&uci);
    uci
}

/// A GQA attention info: q/k/v rows fused on dim 0, per-rank widths given explicitly.
fn gqa_info(sizes: [u64; 3], widths: serde_json::Value) -> UniversalCheckpointInfo {
    info(json!({
        "universal_checkpoint_version": 0.4,
        "parameter_with_sub_params": [
            {"patterns": [r".*\.qkv\.weight$"], "shape": [sizes, -1], "partition_dim": 0}
        ],
        "sub_param_shard_widths": {r".*\.qkv\.weight$": widths},
        "parameter_with_row_parallelism_patterns": [r".*\.o_proj\.weight$"],
        "tp_replicated_parameter_patterns": [r".*norm\.weight$"],
    }))
}

#[test]
fn gqa_qkv_4096_1024_1024_at_tp2() {
    let uci = gqa_info(
        [4096, 1024, 1024],
        json!([[2048, 2048], [512, 512], [512, 512]]),
    );
    let locals = vec![vec![3072, 4096], vec![3072, 4096]];
    let rule = uci
        .tp_rule("layers.0.attn.qkv.weight", &locals)
        .expect("rule");
    assert_eq!(rule.kind, TpKind::SubParams);
    assert_eq!(rule.shape, vec![6144, 4096]);
    let by_sizes = Layout::Fused {
        dim: 0,
        parts: 2,
        subs: vec![
            SubParam {
                size: 4096,
                split: Split::Sizes(vec![2048, 2048]),
            },
            SubParam {
                size: 1024,
                split: Split::Sizes(vec![512, 512]),
            },
            SubParam {
                size: 1024,
                split: Split::Sizes(vec![512, 512]),
            },
        ],
    };
    assert_eq!(rule.layout, by_sizes);
    // The same layout written with head-sized grains (head dim 128): 32 q heads, 8 kv heads.
    let by_grain = Layout::Fused {
        dim: 0,
        parts: 2,
        subs: [4096, 1024, 1024]
            .iter()
            .map(|&size| SubParam {
                size,
                split: Split::Grain { grain: 128 },
            })
            .collect(),
    };
    validate_layout("qkv", &rule.shape, &by_grain).expect("grain layout valid");
    for rank in 0..2 {
        assert_eq!(
            local_shape(&rule.shape, &rule.layout, rank),
            vec![2048 + 512 + 512, 4096]
        );
        assert_eq!(local_shape(&rule.shape, &by_grain, rank), vec![3072, 4096]);
    }
    let meta = rule.tensor_meta("layers.0.attn.qkv.weight", DType::BF16, Role::Param);
    assert_eq!(meta.padded_shape, None);
    meta.validate().expect("valid tensor");
    assert_round_trips(&rule);

    // Row-parallel o_proj and replicated norms of the same model.
    let o = uci
        .tp_rule(
            "layers.0.attn.o_proj.weight",
            &[vec![4096, 2048], vec![4096, 2048]],
        )
        .expect("o_proj");
    assert_eq!((o.kind, o.shape.clone()), (TpKind::Row, vec![4096, 4096]));
    assert_eq!(
        o.layout,
        Layout::Shard {
            dim: 1,
            parts: 2,
            split: Split::Sizes(vec![2048, 2048])
        }
    );
    let n = uci
        .tp_rule("layers.0.input_norm.weight", &[vec![4096], vec![4096]])
        .expect("norm");
    assert_eq!(
        (n.kind, n.replicated, n.average),
        (TpKind::Replicated, true, false)
    );
    assert_eq!(n.layout, Layout::Replicated { ranks: 2 });
    let c = uci
        .tp_rule("layers.0.mlp.up.weight", &[vec![7, 4096], vec![6, 4096]])
        .expect("column");
    assert_eq!((c.kind, c.shape.clone()), (TpKind::Column, vec![13, 4096]));
    assert_eq!(
        c.layout,
        Layout::Shard {
            dim: 0,
            parts: 2,
            split: Split::Sizes(vec![7, 6])
        }
    );
}

#[test]
fn uneven_gqa_three_kv_heads_at_tp2() {
    // DeepSpeed's own uneven example: q 48 / k 24 / v 24 rows (3 kv heads of 8), hidden 24.
    let uci = gqa_info([48, 24, 24], json!([[32, 16], [16, 8], [16, 8]]));
    let rule = uci
        .tp_rule("b.qkv.weight", &[vec![64, 24], vec![32, 24]])
        .expect("rule");
    assert_eq!(rule.shape, vec![96, 24]);
    assert_eq!(local_shape(&rule.shape, &rule.layout, 0), vec![64, 24]);
    assert_eq!(local_shape(&rule.shape, &rule.layout, 1), vec![32, 24]);
    // Split::Grain with one kv head (8 rows) per grain gives the same widths.
    for (size, w) in [(48, vec![32, 16]), (24, vec![16, 8])] {
        assert_eq!(
            Split::Grain {
                grain: 8 * (size / 24)
            }
            .sizes(size, 2),
            w
        );
    }
}

#[test]
fn legacy_sub_param_count_splits_evenly() {
    // Before 0.4 the partition_dim entry is the number of equal sub-params and widths are even.
    let uci = info(json!({
        "universal_checkpoint_version": 0.3,
        "parameter_with_sub_params": [{"patterns": [r"^qkv$"], "shape": [3, -1], "partition_dim": 0}],
    }));
    let rule = uci.tp_rule("qkv", &[vec![6, 4], vec![6, 4]]).expect("rule");
    let sub = SubParam {
        size: 4,
        split: Split::Sizes(vec![2, 2]),
    };
    assert_eq!(
        rule.layout,
        Layout::Fused {
            dim: 0,
            parts: 2,
            subs: vec![sub.clone(), sub.clone(), sub]
        }
    );
    assert_eq!(rule.shape, vec![12, 4]);
}

#[test]
fn two_sub_params_average_and_vocabulary() {
    let uci = info(json!({
        "universal_checkpoint_version": 0.2,
        "parameter_with_2_sub_params_cat_dim_0": [r".*h_to_4h\.weight$"],
        "parameter_to_average_patterns": [r".*\.alpha$"],
        "vocabulary_parameter_patterns": [r"^embed\.weight$"],
        "pipeline_replicated_parameter_patterns": [r"^embed\.weight$"],
        "original_vocab_size": 100,
        "padded_vocab_size": 104,
    }));
    assert!(uci.is_pipeline_replicated("embed.weight"));
    assert!(
        uci.extra.contains_key("padded_vocab_size"),
        "unknown keys are kept"
    );

    let swiglu = uci
        .tp_rule("l.h_to_4h.weight", &[vec![8, 4], vec![8, 4]])
        .expect("swiglu");
    assert_eq!(swiglu.kind, TpKind::TwoSubParams);
    let half = SubParam {
        size: 8,
        split: Split::Sizes(vec![4, 4]),
    };
    assert_eq!(
        swiglu.layout,
        Layout::Fused {
            dim: 0,
            parts: 2,
            subs: vec![half.clone(), half]
        }
    );

    let alpha = uci.tp_rule("l.alpha", &[vec![1], vec![1]]).expect("alpha");
    assert_eq!(
        (alpha.kind, alpha.average, alpha.replicated),
        (TpKind::Averaged, true, false)
    );

    let embed = uci
        .tp_rule("embed.weight", &[vec![52, 8], vec![52, 8]])
        .expect("embed");
    assert_eq!(
        (embed.shape.clone(), embed.vocab),
        (vec![104, 8], Some(100))
    );
    assert_eq!(embed.logical_shape(), vec![100, 8]);
    let meta = embed.tensor_meta("embed.weight", DType::F32, Role::Fp32Master);
    assert_eq!(
        (meta.shape.clone(), meta.padded_shape.clone()),
        (vec![100, 8], Some(vec![104, 8]))
    );
    meta.validate().expect("valid padded tensor");
}

#[test]
fn autotp_meta_layouts() {
    let meta = |j: serde_json::Value| {
        let m = AutoTpParamMeta::parse(&j).expect("meta");
        assert_eq!(m.to_json(), j);
        assert_round_trips(&m);
        m
    };
    let column = meta(
        json!({"universal_checkpoint_version": 0.4, "partition_type": "column", "partition_dim": 0,
        "logical_shape": [81, 24], "partition_sizes": [41, 40], "is_bias": false, "replicated": false}),
    );
    assert_eq!(
        column.layout("lm_head.weight", 2).expect("ok"),
        Some(Layout::Shard {
            dim: 0,
            parts: 2,
            split: Split::Sizes(vec![41, 40])
        })
    );
    let even = meta(json!({"partition_type": "row", "partition_dim": 1, "logical_shape": [8, 8]}));
    assert_eq!(
        even.layout("o", 4).expect("ok"),
        Some(Layout::Shard {
            dim: 1,
            parts: 4,
            split: Split::Even
        })
    );
    let bias = meta(
        json!({"partition_type": "row", "partition_dim": null, "logical_shape": [32],
        "is_bias": true, "replicated": true}),
    );
    assert_eq!(
        bias.layout("fc2.bias", 2).expect("ok"),
        Some(Layout::Replicated { ranks: 2 })
    );
    let legacy = meta(
        json!({"universal_checkpoint_version": 0.3, "partition_type": "column", "partition_dim": 0,
        "logical_shape": [12, 4], "sub_param_sizes": [4, 4, 4]}),
    );
    let sub = SubParam {
        size: 4,
        split: Split::Sizes(vec![2, 2]),
    };
    assert_eq!(
        legacy.layout("qkv", 2).expect("ok"),
        Some(Layout::Fused {
            dim: 0,
            parts: 2,
            subs: vec![sub.clone(), sub.clone(), sub]
        })
    );
    let none = meta(json!({"partition_type": "column"}));
    assert_eq!(none.layout("x", 2).expect("ok"), None);
}
