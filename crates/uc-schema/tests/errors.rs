//! Every `SchemaError` variant that uc-schema produces: each is provoked through the public API,
//! matched exactly (variant and numbers) and its message checked for the tensor and the numbers.
//! `every_variant_is_covered` fails to compile when a variant is added without a case here.

use serde_json::json;
use uc_schema::deepspeed::{
    parse_autoep_layers, validate_autoep_layers, AutoEpLayer, AutoTpParamMeta,
    UniversalCheckpointInfo,
};
use uc_schema::{
    validate_layout, validate_manifest, validate_name, validate_split, validate_tensor,
    validate_topology, DType, Entry, ExpertStorage, Layout, Manifest, PatternSet, Placement, Role,
    SchemaError, Split, SubParam, TensorMeta, Topology,
};

/// Unwraps an expected error, asserts its exact variant, and checks the message names every needle.
macro_rules! case {
    ($res:expr, $pat:pat, $($needle:expr),+ $(,)?) => {{
        let err: SchemaError = match $res {
            Err(e) => e,
            Ok(v) => panic!("`{}` succeeded: {:?}", stringify!($res), v),
        };
        assert!(matches!(err, $pat), "`{}` gave {:?}", stringify!($res), err);
        let msg = err.to_string();
        for needle in [$($needle),+] {
            assert!(msg.contains(needle), "message `{msg}` does not name `{needle}`");
        }
        err
    }};
}

fn t(name: &str, shape: &[u64], layout: Layout) -> TensorMeta {
    TensorMeta::new(name, DType::F32, shape.to_vec(), Role::Param).with_layout(layout)
}

fn shard(dim: usize, parts: u32, split: Split) -> Layout {
    Layout::Shard { dim, parts, split }
}

fn experts(num_experts: u64, ep: u32) -> Layout {
    Layout::Experts {
        num_experts,
        ep,
        storage: ExpertStorage::Stacked,
    }
}

/// Errors of the core validators.
fn validation_errors() -> Vec<SchemaError> {
    let w = "blocks.0.w";
    let mut out = vec![
        case!(
            validate_layout(w, &[7, 4], &shard(0, 2, Split::Sizes(vec![3, 3]))),
            SchemaError::SizesDontSum {
                dim: 0,
                sum: 6,
                expected: 7,
                ..
            },
            w,
            "[3, 3]",
            "6",
            "7"
        ),
        case!(
            validate_split(w, 0, 24 + 4, 2, &Split::Grain { grain: 8 }),
            SchemaError::SizesDontSum {
                sum: 24,
                expected: 28,
                ..
            },
            w,
            "24",
            "28"
        ),
        case!(
            validate_layout(w, &[8, 4], &shard(0, 2, Split::Sizes(vec![8]))),
            SchemaError::SizesCount {
                parts: 2,
                got: 1,
                ..
            },
            w,
            "1 split sizes",
            "2 ranks"
        ),
        case!(
            validate_layout(w, &[10, 4], &shard(0, 4, Split::Even)),
            SchemaError::UnevenSplit {
                dim: 0,
                size: 10,
                parts: 4,
                ..
            },
            w,
            "10",
            "4 ranks"
        ),
        case!(
            validate_layout(w, &[8, 4], &shard(2, 2, Split::Even)),
            SchemaError::DimOutOfRange {
                dim: 2,
                ndim: 2,
                ..
            },
            w,
            "dim 2",
            "2-d"
        ),
        case!(
            validate_tensor(&t(w, &[8], shard(0, 0, Split::Even))),
            SchemaError::ZeroRanks { .. },
            w,
            "0 ranks"
        ),
        case!(
            validate_layout(
                w,
                &[48, 8],
                &Layout::Fused {
                    dim: 0,
                    parts: 2,
                    subs: vec![
                        SubParam {
                            size: 32,
                            split: Split::Even
                        },
                        SubParam {
                            size: 8,
                            split: Split::Even
                        }
                    ],
                }
            ),
            SchemaError::SubParamMismatch {
                dim: 0,
                sum: 40,
                expected: 48,
                ..
            },
            w,
            "[32, 8]",
            "40",
            "48"
        ),
        case!(
            validate_layout(w, &[6, 4], &experts(8, 2)),
            SchemaError::ExpertDimMismatch {
                dim0: 6,
                experts: 8,
                ..
            },
            w,
            "6",
            "8 experts"
        ),
        case!(
            validate_layout(
                w,
                &[8, 4],
                &Layout::Mesh {
                    mesh: vec![2, 2],
                    placements: vec![Placement::Shard(0)]
                }
            ),
            SchemaError::MeshPlacementMismatch {
                mesh_axes: 2,
                placements: 1,
                ..
            },
            w,
            "2 axes",
            "1 placements"
        ),
        case!(
            validate_layout(
                w,
                &[8, 4],
                &Layout::Mesh {
                    mesh: vec![2, 2],
                    placements: vec![Placement::Replicate, Placement::Shard(2)],
                }
            ),
            SchemaError::PlacementDimOutOfRange {
                axis: 1,
                dim: 2,
                ndim: 2,
                ..
            },
            w,
            "Shard(2)",
            "axis 1",
            "2 dims"
        ),
        case!(
            validate_layout(
                w,
                &[8, 4],
                &Layout::ZeroFlat {
                    dp: 2,
                    offset: 10,
                    group_numel: 40,
                    alignment: 2
                }
            ),
            SchemaError::ZeroRangeOutsideGroup {
                offset: 10,
                end: 42,
                group_numel: 40,
                ..
            },
            w,
            "10..42",
            "40"
        ),
        case!(
            validate_layout(
                w,
                &[2, 5],
                &Layout::ZeroFlat {
                    dp: 4,
                    offset: 0,
                    group_numel: 10,
                    alignment: 1
                }
            ),
            SchemaError::ZeroPaddingUneven {
                padded: 10,
                dp: 4,
                ..
            },
            w,
            "10",
            "dp 4"
        ),
        case!(
            validate_layout(
                w,
                &[8, 4],
                &Layout::Nested {
                    outer: Box::new(shard(0, 2, Split::Even)),
                    inner: vec![Layout::single()],
                }
            ),
            SchemaError::NestedCount {
                outer: 2,
                inner: 1,
                ..
            },
            w,
            "1 inner",
            "2 outer"
        ),
        case!(
            validate_layout(
                w,
                &[8, 4],
                &Layout::Nested {
                    outer: Box::new(shard(0, 2, Split::Even)),
                    inner: vec![
                        Layout::Replicated { ranks: 2 },
                        Layout::Replicated { ranks: 3 }
                    ],
                }
            ),
            SchemaError::NestedRanksDiffer { .. },
            w,
            "[2, 3]"
        ),
        case!(
            validate_tensor(&t(w, &[100, 8], Layout::single()).with_padded(vec![96, 8])),
            SchemaError::PaddedShape { .. },
            w,
            "[96, 8]",
            "[100, 8]"
        ),
        case!(
            validate_tensor(&t(w, &[100, 8], Layout::single()).with_padded(vec![104])),
            SchemaError::PaddedShape { .. },
            w,
            "[104]"
        ),
        case!(
            PatternSet::new(vec![r"ok\.weight$".into(), "(unclosed".into()]),
            SchemaError::BadPattern { .. },
            "(unclosed"
        ),
        case!(
            validate_topology(&Topology::new(&[("dp", 2)], 4)),
            SchemaError::BadZeroStage { stage: 4 },
            "stage 4"
        ),
        case!(
            validate_topology(&Topology::new(&[("dp", 2), ("tp", 0)], 1)),
            SchemaError::ZeroAxis { .. },
            "`tp`",
            "size 0"
        ),
    ];
    out.push(case!(
        validate_layout(
            w,
            &[8],
            &Layout::Mesh {
                mesh: vec![1 << 16, 1 << 16],
                placements: vec![Placement::Replicate; 2]
            }
        ),
        SchemaError::TooManyRanks { .. },
        w,
        "4294967295"
    ));
    out.push(case!(
        validate_topology(&Topology::new(&[("dp", 1 << 16), ("tp", 1 << 16)], 1)),
        SchemaError::TooManyRanks { .. },
        "topology",
        "4294967295"
    ));
    for (name, why) in [
        ("..", "`..`"),
        ("../../etc/passwd", "separator"),
        ("a/b", "separator"),
        ("a\\b", "separator"),
        ("", "empty"),
        ("a\0b", "NUL"),
    ] {
        out.push(case!(
            validate_name(name),
            SchemaError::UnsafeName { .. },
            why
        ));
    }
    out.push(case!(
        validate_tensor(&t("blocks..0", &[1], Layout::single())),
        SchemaError::UnsafeName {
            why: "contains `..`",
            ..
        },
        "blocks..0"
    ));
    // 8 experts divide over ep 1, 2, 4, 8 but not 3.
    for ep in [1, 2, 4, 8] {
        validate_layout(w, &[8, 16, 4], &experts(8, ep)).expect("divisible");
    }
    out.push(case!(
        validate_layout("moe.w1", &[8, 16, 4], &experts(8, 3)),
        SchemaError::ExpertsNotDivisible {
            experts: 8,
            ep: 3,
            ..
        },
        "moe.w1",
        "8 experts",
        "ep 3"
    ));
    // Manifest-level: version, topology, then every tensor.
    let mut m = Manifest::new(Topology::new(&[("dp", 2)], 1));
    m.version = 2;
    out.push(case!(
        validate_manifest(&m),
        SchemaError::UnsupportedVersion {
            version: 2,
            supported: 1
        },
        "version 2",
        "1..=1"
    ));
    m.version = 0;
    out.push(case!(
        validate_manifest(&m),
        SchemaError::UnsupportedVersion { version: 0, .. },
        "version 0"
    ));
    m.version = 1;
    m.source.zero_stage = 7;
    out.push(case!(
        validate_manifest(&m),
        SchemaError::BadZeroStage { stage: 7 },
        "stage 7"
    ));
    m.source.zero_stage = 1;
    m.tensors.push(Entry {
        meta: t("x/y", &[4], Layout::single()),
        storage: None,
    });
    out.push(case!(
        validate_manifest(&m),
        SchemaError::UnsafeName { .. },
        "x/y"
    ));
    m.tensors[0].meta = t("x", &[4], shard(0, 3, Split::Even));
    out.push(case!(
        validate_manifest(&m),
        SchemaError::UnevenSplit {
            size: 4,
            parts: 3,
            ..
        },
        "`x`",
        "4",
        "3 ranks"
    ));
    out
}

/// Errors of the DeepSpeed parsers.
fn parser_errors() -> Vec<SchemaError> {
    let layer = json!({"moe_layer_id": 0, "module_path": "m.0.mlp", "num_experts": 8, "num_local_experts": 4,
        "ep_size": 2, "expert_key_prefix": "m.0.mlp.experts"});
    let mut no_ep = layer.clone();
    no_ep.as_object_mut().expect("dict").remove("ep_size");
    vec![
        case!(
            UniversalCheckpointInfo::parse(&json!({"original_vocab_size": "96"})),
            SchemaError::DeepSpeedType {
                expected: "a non-negative integer",
                ..
            },
            "universal_checkpoint_info.original_vocab_size",
            "\"96\""
        ),
        case!(
            UniversalCheckpointInfo::parse(&json!([1, 2])),
            SchemaError::DeepSpeedType {
                expected: "a dict",
                ..
            },
            "universal_checkpoint_info",
            "list of 2"
        ),
        case!(
            UniversalCheckpointInfo::parse(
                &json!({"tp_replicated_parameter_patterns": ["^a$", 3]})
            ),
            SchemaError::DeepSpeedType {
                expected: "a string",
                ..
            },
            "tp_replicated_parameter_patterns[1]",
            "number 3"
        ),
        case!(
            UniversalCheckpointInfo::parse(
                &json!({"parameter_with_sub_params": [{"patterns": ["^q$"], "shape": [[1, "x"]], "partition_dim": 0}]})
            ),
            SchemaError::DeepSpeedType { .. },
            "parameter_with_sub_params[0].shape[0][1]"
        ),
        case!(
            UniversalCheckpointInfo::parse(&json!({"vocabulary_parameter_patterns": ["(?<=x)y"]})),
            SchemaError::BadPattern { .. },
            "(?<=x)y"
        ),
        case!(
            UniversalCheckpointInfo::parse(
                &json!({"parameter_with_sub_params": [{"patterns": ["^q$"], "shape": [3]}]})
            ),
            SchemaError::DeepSpeedMissing { .. },
            "parameter_with_sub_params[0].partition_dim"
        ),
        case!(
            parse_autoep_layers(&json!([layer, no_ep])),
            SchemaError::DeepSpeedMissing { .. },
            "ds_autoep_layers[1].ep_size"
        ),
        case!(
            AutoTpParamMeta::parse(&json!({"partition_type": "diagonal"})),
            SchemaError::DeepSpeedType {
                expected: "\"row\" or \"column\"",
                ..
            },
            "partition_type",
            "diagonal"
        ),
        case!(
            AutoTpParamMeta::parse(&json!({"conversion": "<note>"})),
            SchemaError::DeepSpeedType {
                expected: "a dict",
                ..
            },
            "conversion"
        ),
        case!(
            UniversalCheckpointInfo::parse(
                &json!({"affine_map": {"params": {"^w$": {"logical_shape": [2],
                "ranks": {"r0": {"shard_shape": [2], "pieces": []}}}}}})
            ),
            SchemaError::DeepSpeedType {
                expected: "a rank number as key",
                ..
            },
            "affine_map.params.^w$.ranks.r0"
        ),
        case!(
            UniversalCheckpointInfo::parse(
                &json!({"affine_map": {"params": {"^w$": {"logical_shape": [2],
                "ranks": {"0": {"shard_shape": [2], "pieces": [{"shape": [2], "source": [0], "dest": [0, [1]], "locations": [0]}]}}}}}})
            ),
            SchemaError::DeepSpeedType {
                expected: "[offset, [strides]]",
                ..
            },
            "affine_map.params.^w$.ranks.0.pieces[0].source"
        ),
    ]
}

/// A sub-param info over `pattern` with shape `shape`, widths `widths` (omitted when null).
fn sub_info(
    version: f64,
    shape: serde_json::Value,
    widths: serde_json::Value,
) -> UniversalCheckpointInfo {
    let mut j = json!({
        "universal_checkpoint_version": version,
        "parameter_with_sub_params": [{"patterns": [r"^qkv$"], "shape": shape, "partition_dim": 0}],
        "tp_replicated_parameter_patterns": [r"^norm$"],
        "parameter_with_row_parallelism_patterns": [r"^row$"],
        "vocabulary_parameter_patterns": [r"^embed$"],
        "autotp_unsupported_parameter_patterns": {r"^conv$": "grouped conv split is not described"},
    });
    if !widths.is_null() {
        j["sub_param_shard_widths"] = json!({r"^qkv$": widths});
    }
    UniversalCheckpointInfo::parse(&j).expect("info")
}

/// Errors of `tp_rule` and of the AutoTP metadata layout.
fn tp_rule_errors() -> Vec<SchemaError> {
    let ok = sub_info(
        0.4,
        json!([[32, 16, 16], -1]),
        json!([[16, 16], [8, 8], [8, 8]]),
    );
    let two = |a: Vec<u64>, b: Vec<u64>| vec![a, b];
    let mut with_vocab = ok.clone();
    with_vocab.original_vocab_size = Some(200);
    vec![
        case!(ok.tp_rule("qkv", &[]), SchemaError::ZeroRanks { .. }, "`qkv`", "0 ranks"),
        case!(
            ok.tp_rule("norm", &two(vec![32], vec![16])),
            SchemaError::ReplicaShapesDiffer { ranks: 2, .. },
            "`norm`", "2 ranks", "[[32], [16]]"
        ),
        case!(
            ok.tp_rule("fc1", &two(vec![4, 8], vec![4, 6])),
            SchemaError::LocalShapesDiffer { dim: 0, .. },
            "`fc1`", "[[4, 8], [4, 6]]", "dim 0"
        ),
        case!(
            ok.tp_rule("fc1", &two(vec![4, 8], vec![4])),
            SchemaError::LocalShapesDiffer { dim: 0, .. },
            "`fc1`", "[[4, 8], [4]]"
        ),
        case!(
            ok.tp_rule("row", &two(vec![8], vec![8])),
            SchemaError::DimOutOfRange { dim: 1, ndim: 1, .. },
            "`row`", "dim 1", "1-d"
        ),
        case!(
            sub_info(0.4, json!([[32, 16, 16], -1]), json!([[16, 16], [8, 8]])).tp_rule("qkv", &two(vec![32, 4], vec![32, 4])),
            SchemaError::SubParamWidthsCount { subs: 3, got: 2, .. },
            "`qkv`", "2 shard-width lists", "3 sub-params"
        ),
        case!(
            sub_info(0.4, json!([[32, 16, 16], -1]), json!([[16, 16], [8, 8, 0], [8, 8]])).tp_rule("qkv", &two(vec![32, 4], vec![32, 4])),
            SchemaError::SubParamWidthsRanks { sub: 1, got: 3, parts: 2, .. },
            "`qkv`", "sub-param 1", "3 shard widths", "2 TP ranks"
        ),
        case!(
            sub_info(0.4, json!([[32, 16, 16], -1]), json!([[16, 15], [8, 8], [8, 9]])).tp_rule("qkv", &two(vec![32, 4], vec![32, 4])),
            SchemaError::SubParamWidthsDontSum { sub: 0, sum: 31, expected: 32, .. },
            "`qkv`", "[16, 15]", "31", "32"
        ),
        case!(
            ok.tp_rule("qkv", &two(vec![33, 4], vec![31, 4])),
            SchemaError::LocalShapeMismatch { rank: 0, dim: 0, got: 33, expected: 32, .. },
            "`qkv`", "rank 0", "33", "32"
        ),
        case!(
            sub_info(0.4, json!([[32, 16, 16], -1]), serde_json::Value::Null).tp_rule("qkv", &two(vec![32, 4], vec![32, 4])),
            SchemaError::MissingShardWidths { .. },
            "`qkv`", "0.4", "^qkv$"
        ),
        case!(
            ok.tp_rule("qkv", &two(vec![32], vec![32])),
            SchemaError::SubParamShape { .. },
            "`qkv`", "[32]", "32, 16, 16"
        ),
        case!(
            sub_info(0.4, json!([3, -1]), json!([[16, 16], [8, 8], [8, 8]])).tp_rule("qkv", &two(vec![32, 4], vec![32, 4])),
            SchemaError::SubParamShape { .. },
            "`qkv`", "[3, -1]", "[32, 4]"
        ),
        case!(
            sub_info(0.4, json!([[32, 16, 16], 5]), json!([[16, 16], [8, 8], [8, 8]])).tp_rule("qkv", &two(vec![32, 4], vec![32, 4])),
            SchemaError::SubParamShape { .. },
            "`qkv`", "5", "[32, 4]"
        ),
        case!(
            sub_info(0.3, json!([3, -1]), serde_json::Value::Null).tp_rule("qkv", &two(vec![5, 4], vec![5, 4])),
            SchemaError::SubParamCount { count: 3, size: 10, .. },
            "`qkv`", "10 elements", "3 equal"
        ),
        case!(
            sub_info(0.3, json!([[5, 5, 6]]), serde_json::Value::Null).tp_rule("qkv", &two(vec![8], vec![8])),
            SchemaError::UnevenSplit { dim: 0, size: 5, parts: 2, .. },
            "`qkv`", "5", "2 ranks"
        ),
        case!(ok.tp_rule("embed", &two(vec![52, 8], vec![52, 8])), SchemaError::MissingVocabSize { .. }, "`embed`", "original_vocab_size"),
        case!(
            with_vocab.tp_rule("embed", &two(vec![52, 8], vec![52, 8])),
            SchemaError::VocabTooLarge { vocab: 200, rows: 104, .. },
            "`embed`", "200", "104"
        ),
        case!(
            ok.tp_rule("conv", &two(vec![4], vec![4])),
            SchemaError::AutoTpUnsupported { .. },
            "`conv`", "grouped conv"
        ),
        case!(
            AutoTpParamMeta::parse(&json!({"partition_type": "column", "partition_dim": 0, "logical_shape": [4],
                "conversion": {"unsupported_reason": "no widths"}})).expect("meta").layout("w", 2),
            SchemaError::AutoTpUnsupported { .. },
            "`w`", "no widths"
        ),
        case!(
            AutoTpParamMeta::parse(&json!({"universal_checkpoint_version": 0.3, "partition_dim": 0, "logical_shape": [10, 2],
                "sub_param_sizes": [5, 5]})).expect("meta").layout("qkv", 2),
            SchemaError::UnevenSplit { size: 5, parts: 2, .. },
            "`qkv`", "5"
        ),
        case!(
            AutoTpParamMeta::parse(&json!({"universal_checkpoint_version": 0.4, "partition_dim": 0, "logical_shape": [10, 2],
                "sub_param_sizes": [5, 5]})).expect("meta").layout("qkv", 2),
            SchemaError::MissingShardWidths { .. },
            "`qkv`", "0.4"
        ),
        case!(
            AutoTpParamMeta::parse(&json!({"partition_dim": 0, "logical_shape": [10, 2], "partition_sizes": [6, 3]}))
                .expect("meta")
                .layout("fc1", 2),
            SchemaError::SizesDontSum { sum: 9, expected: 10, .. },
            "`fc1`", "[6, 3]", "9", "10"
        ),
        case!(
            AutoTpParamMeta::parse(&json!({"partition_dim": 0})).expect("meta").layout("x", 0),
            SchemaError::ZeroRanks { .. },
            "`x`"
        ),
    ]
}

/// An AutoEP layer entry with the given counts.
fn layer(id: u64, prefix: &str, experts: u64, local: u64, ep: u32) -> serde_json::Value {
    json!({"moe_layer_id": id, "module_path": format!("{prefix}.mlp"), "num_experts": experts,
        "num_local_experts": local, "ep_size": ep, "expert_key_prefix": format!("{prefix}.mlp.experts")})
}

/// Errors of the AutoEP checks.
fn autoep_errors() -> Vec<SchemaError> {
    let parse = |j: serde_json::Value| AutoEpLayer::parse(&j).expect("layer");
    for ep in [1u32, 2, 4, 8] {
        let l = parse(layer(0, "m.0", 8, 8 / ep as u64, ep));
        assert_eq!(
            l.experts_layout(ExpertStorage::PerExpert)
                .expect("divisible"),
            Layout::Experts {
                num_experts: 8,
                ep,
                storage: ExpertStorage::PerExpert
            }
        );
    }
    let mut placed = layer(0, "m.0", 4, 2, 2);
    placed["expert_placement"] = json!({"version": 1, "num_experts": 4, "ep_size": 2,
        "ranks": [{"rank": 0, "experts": [0, 2]}, {"rank": 1, "experts": [1, 3]}]});
    let mut ranged = layer(0, "m.0", 4, 2, 2);
    ranged["ep_rank"] = json!(1);
    ranged["global_expert_start"] = json!(0);
    ranged["global_expert_end"] = json!(2);
    let both = parse_autoep_layers(&json!([layer(0, "m.0", 4, 2, 2), layer(0, "m.1", 4, 2, 2)]))
        .expect("layers");
    let same_prefix =
        parse_autoep_layers(&json!([layer(0, "m.0", 4, 2, 2), layer(1, "m.0", 4, 2, 2)]))
            .expect("layers");
    vec![
        case!(
            parse(layer(0, "m.0", 8, 3, 3)).experts_layout(ExpertStorage::Stacked),
            SchemaError::ExpertsNotDivisible {
                experts: 8,
                ep: 3,
                ..
            },
            "m.0.mlp",
            "8 experts",
            "ep 3"
        ),
        case!(
            parse(layer(0, "m.0", 8, 2, 2)).validate(),
            SchemaError::ExpertCountMismatch {
                num_experts: 8,
                num_local_experts: 2,
                ep: 2,
                ..
            },
            "m.0.mlp",
            "2 local experts",
            "ep 2",
            "8 experts"
        ),
        case!(
            parse(layer(0, "m.0", 8, 8, 0)).validate(),
            SchemaError::ZeroRanks { .. },
            "m.0.mlp",
            "0 ranks"
        ),
        case!(
            parse(placed).validate(),
            SchemaError::ExpertPlacement {
                rank: 0,
                local: 2,
                expected_start: 0,
                ..
            },
            "m.0.mlp",
            "rank 0",
            "[0, 2]",
            "2"
        ),
        case!(
            parse(ranged).validate(),
            SchemaError::ExpertRange {
                rank: 1,
                start: 0,
                end: 2,
                expected_start: 2,
                expected_end: 4,
                ..
            },
            "m.0.mlp",
            "0..2",
            "2..4",
            "rank 1"
        ),
        case!(
            validate_autoep_layers(&both),
            SchemaError::DuplicateExpertLayer {
                what: "moe_layer_id",
                ..
            },
            "moe_layer_id",
            "`0`"
        ),
        case!(
            validate_autoep_layers(&same_prefix),
            SchemaError::DuplicateExpertLayer {
                what: "expert_key_prefix",
                ..
            },
            "m.0.mlp.experts"
        ),
    ]
}

#[test]
fn validation_errors_name_tensor_and_numbers() {
    assert!(!validation_errors().is_empty());
}

#[test]
fn parser_errors_name_key_and_value() {
    assert!(!parser_errors().is_empty());
}

#[test]
fn tp_rule_errors_name_tensor_and_numbers() {
    assert!(!tp_rule_errors().is_empty());
}

#[test]
fn autoep_errors_name_layer_and_numbers() {
    assert!(!autoep_errors().is_empty());
}

/// Index of a variant; exhaustive on purpose, so a new variant must be added (and provoked) here.
fn variant(e: &SchemaError) -> usize {
    use SchemaError as E;
    match e {
        E::SizesDontSum { .. } => 0,
        E::SizesCount { .. } => 1,
        E::UnevenSplit { .. } => 2,
        E::DimOutOfRange { .. } => 3,
        E::ZeroRanks { .. } => 4,
        E::SubParamMismatch { .. } => 5,
        E::ExpertsNotDivisible { .. } => 6,
        E::ExpertDimMismatch { .. } => 7,
        E::MeshPlacementMismatch { .. } => 8,
        E::PlacementDimOutOfRange { .. } => 9,
        E::ZeroRangeOutsideGroup { .. } => 10,
        E::ZeroPaddingUneven { .. } => 11,
        E::NestedCount { .. } => 12,
        E::NestedRanksDiffer { .. } => 13,
        E::PaddedShape { .. } => 14,
        E::UnsafeName { .. } => 15,
        E::BadPattern { .. } => 16,
        E::BadZeroStage { .. } => 17,
        E::ZeroAxis { .. } => 18,
        E::UnsupportedVersion { .. } => 19,
        E::DeepSpeedType { .. } => 20,
        E::DeepSpeedMissing { .. } => 21,
        E::ReplicaShapesDiffer { .. } => 22,
        E::LocalShapesDiffer { .. } => 23,
        E::SubParamWidthsCount { .. } => 24,
        E::SubParamWidthsRanks { .. } => 25,
        E::SubParamWidthsDontSum { .. } => 26,
        E::LocalShapeMismatch { .. } => 27,
        E::MissingShardWidths { .. } => 28,
        E::SubParamShape { .. } => 29,
        E::SubParamCount { .. } => 30,
        E::MissingVocabSize { .. } => 31,
        E::VocabTooLarge { .. } => 32,
        E::AutoTpUnsupported { .. } => 33,
        E::ExpertCountMismatch { .. } => 34,
        E::ExpertPlacement { .. } => 35,
        E::ExpertRange { .. } => 36,
        E::DuplicateExpertLayer { .. } => 37,
        E::TooManyRanks { .. } => 38,
        // A free-text variant for callers; nothing in uc-schema constructs it.
        E::DeepSpeed(_) => usize::MAX,
    }
}

/// Number of variants uc-schema constructs (all but `DeepSpeed(String)`).
const PRODUCED: usize = 39;

#[test]
fn every_variant_is_covered() {
    let all: Vec<SchemaError> = [
        validation_errors(),
        parser_errors(),
        tp_rule_errors(),
        autoep_errors(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let seen: std::collections::BTreeSet<usize> = all.iter().map(variant).collect();
    let missing: Vec<usize> = (0..PRODUCED).filter(|i| !seen.contains(i)).collect();
    assert!(missing.is_empty(), "variants never provoked: {missing:?}");
    assert!(!seen.contains(&usize::MAX));
}
