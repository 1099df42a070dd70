//! Every public type survives serde_json and bincode unchanged; DTensor meshes with several axes
//! sharding one dim validate and give torch.chunk local shapes.

mod common;

use common::assert_round_trips;
use serde_json::json;
use std::collections::BTreeMap;
use uc_schema::deepspeed::{
    AffineMap, AutoEpLayer, AutoTpParamMeta, Num, PartitionType, SubDim, SubParamSpec, TpKind,
    UniversalCheckpointInfo, UniversalFileFlags,
};
use uc_schema::{
    local_shape, validate_layout, DType, Entry, ExpertStorage, FileSum, Layout, Manifest, MeshAxis,
    PatternSet, Placement, Role, Split, StorageRef, SubParam, TensorMeta, Topology, Value,
};

/// One layout of every kind (nested included).
fn layouts() -> Vec<(Vec<u64>, Layout)> {
    let fused = Layout::Fused {
        dim: 0,
        parts: 2,
        subs: vec![
            SubParam {
                size: 32,
                split: Split::Grain { grain: 8 },
            },
            SubParam {
                size: 16,
                split: Split::Sizes(vec![8, 8]),
            },
            SubParam {
                size: 16,
                split: Split::Even,
            },
        ],
    };
    vec![
        (vec![8, 4], Layout::single()),
        (vec![8, 4], Layout::Replicated { ranks: 4 }),
        (
            vec![8, 4],
            Layout::Shard {
                dim: 1,
                parts: 2,
                split: Split::Even,
            },
        ),
        (
            vec![10, 4],
            Layout::Shard {
                dim: 0,
                parts: 4,
                split: Split::Chunk,
            },
        ),
        (
            vec![7, 4],
            Layout::Shard {
                dim: 0,
                parts: 2,
                split: Split::Sizes(vec![4, 3]),
            },
        ),
        (vec![64, 32], fused.clone()),
        (
            vec![8, 16, 4],
            Layout::Experts {
                num_experts: 8,
                ep: 4,
                storage: ExpertStorage::Stacked,
            },
        ),
        (
            vec![8, 16, 4],
            Layout::Experts {
                num_experts: 8,
                ep: 2,
                storage: ExpertStorage::PerExpert,
            },
        ),
        (
            vec![10, 4],
            Layout::Mesh {
                mesh: vec![2, 2],
                placements: vec![Placement::Shard(0), Placement::Shard(0)],
            },
        ),
        (
            vec![10, 4],
            Layout::Mesh {
                mesh: vec![2, 3],
                placements: vec![Placement::Replicate, Placement::Shard(1)],
            },
        ),
        (
            vec![8, 4],
            Layout::ZeroFlat {
                dp: 2,
                offset: 3,
                group_numel: 41,
                alignment: 2,
            },
        ),
        (vec![8, 4], Layout::Zero3 { dp: 3, offset: 12 }),
        (
            vec![64, 32],
            Layout::Nested {
                outer: Box::new(fused),
                inner: vec![
                    Layout::ZeroFlat {
                        dp: 2,
                        offset: 0,
                        group_numel: 1024,
                        alignment: 2,
                    },
                    Layout::ZeroFlat {
                        dp: 2,
                        offset: 0,
                        group_numel: 1024,
                        alignment: 2,
                    },
                ],
            },
        ),
    ]
}

fn state() -> BTreeMap<String, Value> {
    let mut group = BTreeMap::new();
    group.insert("lr".to_string(), Value::Float(1e-2));
    group.insert(
        "betas".to_string(),
        Value::List(vec![Value::Float(0.9), Value::Float(0.95)]),
    );
    group.insert("amsgrad".to_string(), Value::Bool(false));
    group.insert("name".to_string(), Value::Str("decay".into()));
    group.insert("foreach".to_string(), Value::Null);
    let mut s = BTreeMap::new();
    s.insert("step".to_string(), Value::Int(3));
    s.insert(
        "param_groups".to_string(),
        Value::List(vec![Value::Map(group)]),
    );
    s
}

#[test]
fn tensor_meta_with_every_layout_round_trips_and_validates() {
    for (shape, layout) in layouts() {
        let t = TensorMeta::new("blocks.0.w", DType::BF16, shape.clone(), Role::ExpAvg)
            .with_layout(layout.clone());
        t.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", layout.kind()));
        assert_round_trips(&t);
        assert_round_trips(&layout);
    }
    let padded = TensorMeta::new("embed", DType::F32, vec![100, 8], Role::Fp32Master)
        .with_padded(vec![104, 8])
        .with_layout(Layout::Shard {
            dim: 0,
            parts: 2,
            split: Split::Even,
        });
    padded.validate().expect("valid");
    assert_round_trips(&padded);
}

#[test]
fn mesh_with_two_axes_sharding_dim_0() {
    let mesh = Layout::Mesh {
        mesh: vec![2, 2],
        placements: vec![Placement::Shard(0), Placement::Shard(0)],
    };
    assert_round_trips(&mesh);
    assert_eq!(
        serde_json::to_value(&mesh).expect("json"),
        json!({"mesh": {"mesh": [2, 2], "placements": [{"shard": 0}, {"shard": 0}]}})
    );
    validate_layout("w", &[10, 4], &mesh).expect("valid");
    // Axis 0 chunks 10 rows into 5 | 5, axis 1 chunks each 5 into 3 | 2 (row-major ranks).
    let shapes: Vec<Vec<u64>> = (0..4).map(|r| local_shape(&[10, 4], &mesh, r)).collect();
    assert_eq!(shapes, vec![vec![3, 4], vec![2, 4], vec![3, 4], vec![2, 4]]);
    // 3 rows: 2 | 1, then 1 | 1 and 1 | 0 — the last rank is empty, which is allowed.
    let shapes: Vec<Vec<u64>> = (0..4).map(|r| local_shape(&[3, 4], &mesh, r)).collect();
    assert_eq!(shapes, vec![vec![1, 4], vec![1, 4], vec![1, 4], vec![0, 4]]);
    validate_layout("w", &[3, 4], &mesh).expect("empty shards are valid");
}

#[test]
fn manifest_topology_and_small_types_round_trip() {
    let mut topo = Topology::new(&[("pp", 2), ("dp", 2), ("tp", 2)], 2);
    topo.stages = vec![vec!["0".into(), "1".into()], vec!["2".into(), "3".into()]];
    topo.validate().expect("valid");
    assert_round_trips(&topo);
    assert_round_trips(&MeshAxis {
        name: "ep".into(),
        size: 4,
    });

    let mut m = Manifest::new(topo);
    for (i, (shape, layout)) in layouts().into_iter().enumerate() {
        let meta =
            TensorMeta::new(format!("t{i}"), DType::F32, shape, Role::Param).with_layout(layout);
        let storage = (i % 2 == 0).then(|| StorageRef {
            file: "tensors/00000.safetensors".into(),
            key: format!("t{i}"),
            start: 64 * i as u64,
            end: 64 * i as u64 + 64,
        });
        m.tensors.push(Entry { meta, storage });
    }
    m.files.push(FileSum {
        file: "tensors/00000.safetensors".into(),
        bytes: 4096,
        checksum: "sha256:00ff".into(),
    });
    m.state = state();
    m.validate().expect("valid manifest");
    assert_round_trips(&m);
    assert_round_trips(&m.tensors[0]);
    assert_round_trips(&m.files[0]);
    assert_round_trips(&m.state);

    for d in [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::Bool,
    ] {
        assert_round_trips(&d);
        assert_eq!(DType::parse(d.name()), Some(d));
    }
    for r in [
        Role::Param,
        Role::Fp32Master,
        Role::ExpAvg,
        Role::ExpAvgSq,
        Role::Step,
        Role::Buffer,
        Role::OptimState("momentum_buffer".into()),
    ] {
        assert_round_trips(&r);
        assert_eq!(Role::from_key(r.key()), r);
    }
    for s in [
        Split::Even,
        Split::Chunk,
        Split::Sizes(vec![1, 0, 2]),
        Split::Grain { grain: 128 },
    ] {
        assert_round_trips(&s);
    }
    assert_round_trips(&Placement::Replicate);
    assert_round_trips(&ExpertStorage::PerExpert);
    assert_round_trips(
        &PatternSet::new(vec![r".*\.qkv\.weight$".into(), "^lm_head".into()]).expect("patterns"),
    );
}

#[test]
fn deepspeed_types_round_trip() {
    let full = json!({
        "universal_checkpoint_version": 0.4,
        "vocabulary_parameter_patterns": [r"^lm_head\.weight$"],
        "pipeline_replicated_parameter_patterns": [r"^tied\..*"],
        "parameter_to_average_patterns": [r".*\.alpha$"],
        "parameter_with_row_parallelism_patterns": [r".*\.o_proj\.weight$"],
        "tp_replicated_parameter_patterns": [r".*norm.*"],
        "parameter_with_2_sub_params_cat_dim_0": [r".*h_to_4h.*"],
        "parameter_with_sub_params": [{"patterns": [r".*\.qkv\.weight$"], "shape": [[32, 16, 16], -1], "partition_dim": 0}],
        "sub_param_shard_widths": {r".*\.qkv\.weight$": [[16, 16], [8, 8], [8, 8]]},
        "original_vocab_size": 96,
        "autotp_unsupported_parameter_patterns": {r"^conv$": "why"},
        "affine_map": {"version": 1, "params": {r"^o$": {"logical_shape": [4, 4], "ranks": {
            "0": {"shard_shape": [4, 2], "pieces": [{"shape": [4, 2], "source": [0, [4, 1]], "dest": [0, [2, 1]], "locations": [0], "scale": 0.5}]},
            "1": {"shard_shape": [4, 2], "pieces": [{"shape": [4, 2], "source": [2, [4, 1]], "dest": [0, [2, 1]], "locations": [1]}]}}}}},
        "expert_parameter_patterns": [r".*\.experts\.w[123]$"],
        "ds_autoep_layers": [{"moe_layer_id": 0, "module_path": "m", "num_experts": 4, "num_local_experts": 2, "ep_size": 2,
            "expert_key_prefix": "m.experts", "checkpoint_format": "zero3_partitioned", "checkpoint_format_version": 1,
            "ep_group_name": "ep_size_2", "ep_rank": 1, "expert_data_parallel_rank": 0, "expert_data_parallel_world_size": 1,
            "global_expert_start": 2, "global_expert_end": 4, "future_field": [1, "x", null]}],
        "future_key": {"nested": 1.5},
    });
    let uci = UniversalCheckpointInfo::parse(&full).expect("parse");
    assert_eq!(uci.to_json(), full);
    assert_round_trips(&uci);
    assert_eq!(uci.extra.keys().collect::<Vec<_>>(), vec!["future_key"]);
    assert!(uci.version.is_some() && uci.affine_map.is_some() && uci.ds_autoep_layers.is_some());
    let pieces = &uci.affine_map.as_ref().expect("map").params[r"^o$"].ranks[&1].pieces;
    assert_eq!(
        pieces[0].source_box(&[4, 4]),
        Some((vec![0, 2], vec![4, 2]))
    );

    // An integer version stays an integer; an empty info stays empty.
    let int_version = json!({"universal_checkpoint_version": 1});
    assert_eq!(
        UniversalCheckpointInfo::parse(&int_version)
            .expect("int")
            .to_json(),
        int_version
    );
    assert_eq!(
        UniversalCheckpointInfo::parse(&json!({})).expect("empty"),
        UniversalCheckpointInfo::default()
    );
    assert_eq!(UniversalCheckpointInfo::default().to_json(), json!({}));

    let spec = SubParamSpec::parse(
        &json!({"patterns": ["^b$"], "shape": [[32, 16, 16]], "partition_dim": 0}),
    )
    .expect("spec");
    assert_round_trips(&spec);
    assert_round_trips(&SubDim::Size(-1));
    assert_round_trips(&SubDim::Subs(vec![1, 2]));
    assert_round_trips(&Num::Int(1));
    assert_round_trips(&Num::Float(0.4));
    assert_round_trips(&PartitionType::Row);
    assert_round_trips(&TpKind::TwoSubParams);
    assert_round_trips(uci.affine_map.as_ref().expect("map"));
    let map = AffineMap::parse(&full["affine_map"]).expect("map");
    assert_eq!(map.to_json(), full["affine_map"]);

    let layer = AutoEpLayer::parse(&full["ds_autoep_layers"][0]).expect("layer");
    assert_eq!(layer.to_json(), full["ds_autoep_layers"][0]);
    assert_round_trips(&layer);

    let meta_json = json!({"universal_checkpoint_version": 0.4, "partition_type": "column", "partition_dim": 0,
        "logical_shape": [64, 32], "output_shape": [64], "sub_param_shape": [[32, 16, 16], -1], "sub_param_sizes": [32, 16, 16],
        "sub_param_shard_widths": [[16, 16], [8, 8], [8, 8]], "partition_sizes": null, "target_partition_shape": [32, 32],
        "original_shape": [64, 32], "is_bias": false, "replicated": false,
        "conversion": {"partition_type": "column", "partition_dim": 0, "sub_param_shape": [[32, 16, 16], -1],
            "sub_param_shard_widths": [[16, 16], [8, 8], [8, 8]], "original_shape": [64, 32], "is_bias": false,
            "replicated": false, "unsupported_reason": null, "affine_map": {"logical_shape": [64, 32]}}});
    let meta = AutoTpParamMeta::parse(&meta_json).expect("meta");
    assert_eq!(meta.to_json(), meta_json);
    assert_round_trips(&meta);
    assert_round_trips(meta.conversion.as_ref().expect("conversion"));

    let flags = UniversalFileFlags::parse(
        &json!({"cat_dim": 0, "param_n_sub_params": 2, "vocab_tensor": true,
        "sub_param_shape": {"patterns": ["^q$"], "shape": [[2, 2], -1], "partition_dim": 0}}),
    )
    .expect("flags");
    assert_round_trips(&flags);

    let rule = uci
        .tp_rule("l.qkv.weight", &[vec![32, 4], vec![32, 4]])
        .expect("rule");
    assert_round_trips(&rule);
}
