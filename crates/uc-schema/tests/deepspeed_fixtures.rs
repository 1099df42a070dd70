//! DeepSpeed metadata written by real DeepSpeed 0.19.8 (shared fixtures): parse → emit is the
//! identity, the typed values survive serde_json and bincode, and the TP rules derived from
//! `universal_checkpoint_info` agree with DeepSpeed's own per-parameter metadata and affine maps.

mod common;

use common::{assert_round_trips, manifest};
use serde_json::{json, Value as J};
use std::collections::BTreeMap;
use uc_schema::deepspeed::{
    autoep_layers_in, autoep_layers_to_json, parse_autoep_layers, validate_autoep_layers,
    AffineParam, AutoTpParamMeta, TpKind, UniversalCheckpointInfo, UniversalFileFlags,
};
use uc_schema::{local_shape, ExpertStorage, Layout, PatternSet, Split, Value};

const TP_CASES: [&str; 2] = ["tp2_zero1", "tp2_dp2_zero2_bf16"];

/// The real AutoTP `universal_checkpoint_info` of a case.
fn autotp_info(case: &str) -> J {
    manifest(case)["universal_checkpoint_info_in_files"].clone()
}

/// `name -> [local shape of tp rank 0, rank 1, …]` from the files' `param_shapes`.
fn local_shapes(case: &str) -> BTreeMap<String, Vec<Vec<u64>>> {
    let m = manifest(case);
    let per_rank = m["param_shapes_per_tp_rank_from_files"]
        .as_object()
        .expect("per-rank shapes");
    let mut out: BTreeMap<String, Vec<Vec<u64>>> = BTreeMap::new();
    for (_rank, groups) in per_rank {
        for group in groups.as_array().expect("groups") {
            for (name, shape) in group.as_object().expect("group") {
                let shape = shape
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|d| d.as_u64().expect("dim"))
                    .collect();
                out.entry(name.clone()).or_default().push(shape);
            }
        }
    }
    out
}

/// Boxes `(offsets, extents)` rank `rank` holds under a TP layout, in local order.
fn tp_boxes(layout: &Layout, shape: &[u64], rank: u32) -> Vec<(Vec<u64>, Vec<u64>)> {
    let cut = |dim: usize, off: u64, len: u64| {
        let mut o = vec![0; shape.len()];
        let mut e = shape.to_vec();
        o[dim] = off;
        e[dim] = len;
        (o, e)
    };
    let r = rank as usize;
    match layout {
        Layout::Replicated { .. } => vec![(vec![0; shape.len()], shape.to_vec())],
        Layout::Shard { dim, parts, split } => {
            let s = split.sizes(shape[*dim], *parts);
            vec![cut(*dim, s[..r].iter().sum(), s[r])]
        }
        Layout::Fused { dim, parts, subs } => {
            let mut base = 0;
            let mut out = Vec::new();
            for sub in subs {
                let s = sub.split.sizes(sub.size, *parts);
                out.push(cut(*dim, base + s[..r].iter().sum::<u64>(), s[r]));
                base += sub.size;
            }
            out
        }
        other => panic!("not a TP layout: {other:?}"),
    }
}

#[test]
fn autotp_info_round_trips_exactly() {
    for case in TP_CASES {
        let j = autotp_info(case);
        let uci = UniversalCheckpointInfo::parse(&j).expect("parse");
        assert_eq!(uci.to_json(), j, "{case}: to_json(parse(x)) == x");
        assert!(
            uci.extra.is_empty(),
            "{case}: every key is typed: {:?}",
            uci.extra.keys()
        );
        assert_round_trips(&uci);
        assert_eq!(uci.version_f64(), 0.4);
        assert_eq!(uci.original_vocab_size, Some(96));
        let affine = uci.affine_map.as_ref().expect("affine_map");
        assert_eq!(
            affine.params.len(),
            26,
            "every parameter but embed.weight has a map"
        );
        assert!(!affine.params.contains_key(r"^embed\.weight$"));
    }
}

#[test]
fn autotp_rules_match_deepspeed_layouts() {
    for case in TP_CASES {
        let uci = UniversalCheckpointInfo::parse(&autotp_info(case)).expect("parse");
        let shapes = local_shapes(case);
        assert_eq!(shapes.len(), 27);
        for (name, locals) in &shapes {
            let rule = uci
                .tp_rule(name, locals)
                .unwrap_or_else(|e| panic!("{case} {name}: {e}"));
            let expected_kind = if name.contains("qkv") {
                TpKind::SubParams
            } else if name.contains("ln") || name == "logit_scale" || name.ends_with("fc2.bias") {
                TpKind::Replicated
            } else if name.ends_with("o_proj.weight")
                || name.ends_with("fc2.weight")
                || name == "embed.weight"
            {
                TpKind::Row
            } else {
                TpKind::Column
            };
            assert_eq!(rule.kind, expected_kind, "{case} {name}");
            for (t, local) in locals.iter().enumerate() {
                assert_eq!(
                    &local_shape(&rule.shape, &rule.layout, t as u32),
                    local,
                    "{case} {name} rank {t}"
                );
            }
            let full: Vec<u64> = match name.as_str() {
                "embed.weight" | "lm_head.weight" => vec![96, 32],
                n if n.ends_with("qkv.weight") || n.ends_with("fc1.weight") => vec![64, 32],
                n if n.ends_with("qkv.bias") || n.ends_with("fc1.bias") => vec![64],
                n if n.ends_with("fc2.weight") => vec![32, 64],
                n if n.ends_with("o_proj.weight") => vec![32, 32],
                "logit_scale" => vec![1],
                _ => vec![32],
            };
            assert_eq!(rule.shape, full, "{case} {name}");
            assert_eq!(
                rule.vocab,
                (name == "lm_head.weight").then_some(96),
                "{case} {name}"
            );
        }
        let qkv = uci
            .tp_rule("blocks.0.qkv.weight", &shapes["blocks.0.qkv.weight"])
            .expect("qkv");
        let subs: Vec<(u64, Split)> = match &qkv.layout {
            Layout::Fused {
                dim: 0,
                parts: 2,
                subs,
            } => subs.iter().map(|s| (s.size, s.split.clone())).collect(),
            other => panic!("qkv layout {other:?}"),
        };
        assert_eq!(
            subs,
            vec![
                (32, Split::Sizes(vec![16, 16])),
                (16, Split::Sizes(vec![8, 8])),
                (16, Split::Sizes(vec![8, 8]))
            ]
        );
    }
}

#[test]
fn autotp_rules_agree_with_affine_map_pieces() {
    for case in TP_CASES {
        let uci = UniversalCheckpointInfo::parse(&autotp_info(case)).expect("parse");
        let shapes = local_shapes(case);
        let affine = uci.affine_map.as_ref().expect("affine_map");
        for (pattern, param) in &affine.params {
            let set = PatternSet::new(vec![pattern.clone()]).expect("pattern");
            let name = shapes
                .keys()
                .find(|n| set.matches(n))
                .unwrap_or_else(|| panic!("no param for {pattern}"));
            let rule = uci.tp_rule(name, &shapes[name]).expect("rule");
            assert_eq!(param.logical_shape, rule.logical_shape(), "{case} {name}");
            check_affine(
                param,
                &rule.layout,
                &rule.shape,
                &shapes[name],
                &format!("{case} {name}"),
            );
        }
    }
}

/// Every rank's affine pieces are exactly the boxes our layout gives it, with the same shard shape.
fn check_affine(
    param: &AffineParam,
    layout: &Layout,
    shape: &[u64],
    locals: &[Vec<u64>],
    what: &str,
) {
    assert_eq!(param.ranks.len(), locals.len(), "{what}");
    for (&rank, shard) in &param.ranks {
        assert_eq!(
            &shard.shard_shape, &locals[rank as usize],
            "{what} rank {rank}"
        );
        let got: Vec<_> = shard
            .pieces
            .iter()
            .map(|p| {
                p.source_box(&param.logical_shape)
                    .unwrap_or_else(|| panic!("{what}: strided piece"))
            })
            .collect();
        assert_eq!(got, tp_boxes(layout, shape, rank), "{what} rank {rank}");
        for p in &shard.pieces {
            assert!(
                p.locations.contains(&rank),
                "{what}: piece of rank {rank} lists {:?}",
                p.locations
            );
            assert_eq!(p.scale, None);
        }
    }
}

/// The live per-parameter AutoTP metadata with its `conversion` placeholder (a note in the
/// manifest) rebuilt the way DeepSpeed builds it from the other fields.
fn live_metas(case: &str) -> Vec<(u32, String, J)> {
    let m = manifest(case);
    let mut out = Vec::new();
    for rank in m["per_rank_live"].as_array().expect("per_rank_live") {
        let t = rank["tp_rank"].as_u64().expect("tp_rank") as u32;
        for (name, p) in rank["params"].as_object().expect("params") {
            let mut meta = p["ds_autotp_universal_checkpoint_meta"].clone();
            if meta.is_null() {
                continue;
            }
            let c: serde_json::Map<String, J> = [
                "partition_type",
                "partition_dim",
                "sub_param_shape",
                "sub_param_shard_widths",
                "original_shape",
                "is_bias",
                "replicated",
            ]
            .iter()
            .map(|k| (k.to_string(), meta[*k].clone()))
            .chain([("unsupported_reason".to_string(), J::Null)])
            .collect();
            meta["conversion"] = J::Object(c);
            out.push((t, name.clone(), meta));
        }
    }
    out
}

#[test]
fn autotp_param_meta_round_trips_and_gives_the_same_layout() {
    for case in TP_CASES {
        let uci = UniversalCheckpointInfo::parse(&autotp_info(case)).expect("parse");
        let shapes = local_shapes(case);
        let metas = live_metas(case);
        assert_eq!(
            metas.len(),
            2 * 16,
            "{case}: 16 AutoTP params per rank (7 per block, embed, lm_head)"
        );
        for (t, name, j) in metas {
            let meta = AutoTpParamMeta::parse(&j).unwrap_or_else(|e| panic!("{case} {name}: {e}"));
            assert_eq!(meta.to_json(), j, "{case} {name}");
            assert_round_trips(&meta);
            if let Some(target) = &meta.target_partition_shape {
                assert_eq!(target, &shapes[&name][t as usize], "{case} {name}");
            } else {
                assert_eq!(
                    meta.replicated,
                    Some(true),
                    "{case} {name}: only replicated params lack a target"
                );
            }
            let layout = meta
                .layout(&name, 2)
                .expect("layout")
                .expect("meta pins the layout");
            let rule = uci.tp_rule(&name, &shapes[&name]).expect("rule");
            assert_eq!(
                layout, rule.layout,
                "{case} {name}: restore meta vs universal_checkpoint_info"
            );
        }
    }
}

#[test]
fn universal_file_flags_of_the_fixtures() {
    let m = manifest("tp2_zero1");
    for (name, extra) in m["ucp_per_param_extra_keys"]
        .as_object()
        .expect("extra keys")
    {
        let f = UniversalFileFlags::parse(extra).expect("flags");
        assert_eq!(&f.to_json(), extra, "{name}");
        assert_round_trips(&f);
        assert_eq!(f.cat_dim, (name == "embed.weight").then_some(1));
        assert_eq!(f.vocab_tensor, (name == "lm_head.weight").then_some(true));
    }
    let expert = json!({"param": "<[4, 16, 32] torch.float32>", "cat_dim": 0, "is_expert_param": true, "ep_num_experts": 4});
    let f = UniversalFileFlags::parse(&expert).expect("expert flags");
    assert_eq!(f, UniversalFileFlags::expert(4));
    assert_eq!(
        f.to_json(),
        json!({"cat_dim": 0, "is_expert_param": true, "ep_num_experts": 4})
    );
    let layout = f.experts_layout(2).expect("expert layout");
    assert_eq!(
        layout,
        Layout::Experts {
            num_experts: 4,
            ep: 2,
            storage: ExpertStorage::Stacked
        }
    );
    assert_eq!(local_shape(&[4, 16, 32], &layout, 1), vec![2, 16, 32]);
    assert!(layout.validate("w1", &[4, 16, 32]).is_ok());
}

#[test]
fn autoep_layers_round_trip_exactly() {
    let m = manifest("ep2_zero2");
    let j = m["ds_autoep_layers_verbatim(rank0 file)"].clone();
    let layers = parse_autoep_layers(&j).expect("parse");
    assert_eq!(autoep_layers_to_json(&layers), j);
    assert_round_trips(&layers);
    validate_autoep_layers(&layers).expect("valid");
    assert_eq!(layers.len(), 2);
    let l0 = &layers[0];
    assert_eq!(l0.checkpoint_format.as_deref(), Some("per_expert_files"));
    assert_eq!(
        l0.checkpoint_format_version, None,
        "null is None for the typed field"
    );
    let nulls: Vec<(&String, &Value)> = l0.extra.iter().collect();
    assert_eq!(
        nulls,
        vec![(&"checkpoint_format_version".to_string(), &Value::Null)],
        "only the null is kept aside"
    );
    assert_eq!(
        l0.expert_params(),
        vec![
            "model.layers.0.mlp.experts.w1",
            "model.layers.0.mlp.experts.w2",
            "model.layers.0.mlp.experts.w3"
        ]
    );
    let layout = l0.experts_layout(ExpertStorage::Stacked).expect("layout");
    assert_eq!(
        layout,
        Layout::Experts {
            num_experts: 4,
            ep: 2,
            storage: ExpertStorage::Stacked
        }
    );
    for (name, param) in &l0.affine_maps.as_ref().expect("affine_maps").params {
        for (&rank, shard) in &param.ranks {
            assert_eq!(
                shard.shard_shape,
                local_shape(&param.logical_shape, &layout, rank),
                "{name}"
            );
            let (off, ext) = shard.pieces[0]
                .source_box(&param.logical_shape)
                .expect("box");
            assert_eq!(off[0], 2 * rank as u64);
            assert_eq!(ext, shard.shard_shape);
        }
    }

    // Inside model_states: the current key, the legacy key, or neither.
    assert_eq!(
        autoep_layers_in(&json!({"ds_autoep_layers": j.clone()})).expect("current"),
        Some(layers.clone())
    );
    assert_eq!(
        autoep_layers_in(&json!({"ds_autoep_layers": null, "autoep_layers": j})).expect("legacy"),
        Some(layers)
    );
    assert_eq!(
        autoep_layers_in(&json!({"ds_autoep_layers": null})).expect("none"),
        None
    );
}

#[test]
fn autoep_universal_checkpoint_info_round_trips() {
    for case in ["ep2_zero2", "ep2_zero1_bf16", "ep2_zero3"] {
        let m = manifest(case);
        for (file, entry) in m["ucp_model_states"].as_object().expect("ucp_model_states") {
            let j = entry["universal_checkpoint_info"].clone();
            let uci =
                UniversalCheckpointInfo::parse(&j).unwrap_or_else(|e| panic!("{case} {file}: {e}"));
            assert_eq!(uci.to_json(), j, "{case} {file}");
            assert_round_trips(&uci);
            let layers = uci.ds_autoep_layers.as_ref().expect("layers");
            validate_autoep_layers(layers).expect("valid");
            assert!(uci.is_expert("model.layers.1.mlp.experts.w2"), "{case}");
            assert!(
                !uci.is_expert("model.layers.1.mlp.router.gate.weight"),
                "{case}"
            );
            let layer = uci
                .expert_layer("model.layers.1.mlp.experts.w2")
                .expect("layer");
            assert_eq!(
                (layer.moe_layer_id, layer.num_experts, layer.ep_size),
                (1, 4, 2)
            );
            assert_eq!(layer.is_zero3_partitioned(), case == "ep2_zero3");
            assert_eq!(
                uci.experts_layout("model.layers.0.mlp.experts.w3", ExpertStorage::PerExpert)
                    .expect("valid"),
                Some(Layout::Experts {
                    num_experts: 4,
                    ep: 2,
                    storage: ExpertStorage::PerExpert
                })
            );
            assert_eq!(
                uci.experts_layout("model.norm.weight", ExpertStorage::Stacked)
                    .expect("valid"),
                None
            );
        }
    }
}
