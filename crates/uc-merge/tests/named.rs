//! Named resharding cases from real training setups, each checked bit for bit.

mod common;
use common::{iota, meta, naive_gather};
use uc_merge::{gather, pieces, plan, reshard, scatter, MergeError, ReplicaPolicy};
use uc_schema::{ExpertStorage, Layout, Placement, SchemaError, Split, SubParam};

fn qkv(parts: u32, split: Split) -> Layout {
    Layout::Fused {
        dim: 0,
        parts,
        subs: [4096, 1024, 1024]
            .iter()
            .map(|&size| SubParam {
                size,
                split: split.clone(),
            })
            .collect(),
    }
}

#[test]
fn gqa_qkv_tp_1_2_4_and_uneven_3() {
    let shape = [6144, 2];
    let full = iota(&shape);
    let tp1 = meta("qkv", &shape, qkv(1, Split::Even));
    let tp2 = meta("qkv", &shape, qkv(2, Split::Even));
    let tp4 = meta("qkv", &shape, qkv(4, Split::Even));
    // 128-wide heads: 32 q heads → 11/11/10, 8 kv heads → 3/3/2.
    let tp3 = meta("qkv", &shape, qkv(3, Split::Grain { grain: 128 }));
    assert_eq!(
        uc_schema::local_shape(&shape, &tp2.layout, 0),
        vec![2048 + 512 + 512, 2]
    );
    assert_eq!(
        uc_schema::local_shape(&shape, &tp3.layout, 2),
        vec![1280 + 256 + 256, 2]
    );

    let b1 = scatter(&tp1, &full).unwrap();
    let b2 = reshard(&tp1, &b1, &tp2, ReplicaPolicy::First).unwrap();
    // TP rank 1 starts with q rows 2048..4096, then k rows 4096+512.., then v rows 5120+512..
    let r1 = &b2[&(1, 0)];
    let row = |b: &[u8], i: usize| f32::from_le_bytes(b[i * 8..i * 8 + 4].try_into().unwrap());
    assert_eq!(row(r1, 0), (2048 * 2 + 1) as f32);
    assert_eq!(row(r1, 2048), ((4096 + 512) * 2 + 1) as f32);
    assert_eq!(row(r1, 2560), ((5120 + 512) * 2 + 1) as f32);
    let b4 = reshard(&tp2, &b2, &tp4, ReplicaPolicy::First).unwrap();
    let b3 = reshard(&tp4, &b4, &tp3, ReplicaPolicy::First).unwrap();
    assert_eq!(b3[&(0, 0)].len(), (1408 + 384 + 384) * 2 * 4);
    let back = reshard(&tp3, &b3, &tp1, ReplicaPolicy::First).unwrap();
    assert_eq!(back[&(0, 0)], full);
    assert_eq!(gather(&tp3, &b3, ReplicaPolicy::Verify).unwrap(), full);
    assert_eq!(naive_gather(&tp3, &b3), full);
}

#[test]
fn embedding_sharded_on_dim_1() {
    let shape = [96, 32];
    let full = iota(&shape);
    let m = meta(
        "embed.weight",
        &shape,
        Layout::Shard {
            dim: 1,
            parts: 2,
            split: Split::Even,
        },
    );
    let b = scatter(&m, &full).unwrap();
    assert_eq!(b[&(1, 0)].len(), 96 * 16 * 4);
    // rank 1 row 0 = columns 16..32 of row 0
    assert_eq!(&b[&(1, 0)][..4], &17f32.to_le_bytes());
    assert_eq!(gather(&m, &b, ReplicaPolicy::First).unwrap(), full);
    let dim0 = meta(
        "embed.weight",
        &shape,
        Layout::Shard {
            dim: 0,
            parts: 3,
            split: Split::Even,
        },
    );
    let moved = reshard(&m, &b, &dim0, ReplicaPolicy::First).unwrap();
    assert_eq!(gather(&dim0, &moved, ReplicaPolicy::First).unwrap(), full);
}

#[test]
fn vocab_padding_removed_and_readded() {
    let logical = [96u64, 8];
    let full = iota(&logical);
    let padded = meta(
        "lm_head.weight",
        &logical,
        Layout::Shard {
            dim: 0,
            parts: 4,
            split: Split::Even,
        },
    )
    .with_padded(vec![100, 8]);
    let b = scatter(&padded, &full).unwrap();
    // the last rank holds rows 75..100, of which 96..100 are padding (zero, belonging to no piece)
    assert!(pieces(&padded)
        .unwrap()
        .iter()
        .all(|p| p.global.end(0) <= 96));
    assert_eq!(
        b[&(3, 0)].len(),
        21 * 8 * 4,
        "buffer ends at the last real row"
    );
    let unpadded = gather(&padded, &b, ReplicaPolicy::First).unwrap();
    assert_eq!(unpadded, full);
    // re-add a different padding (128 rows over tp 2)
    let repadded = meta(
        "lm_head.weight",
        &logical,
        Layout::Shard {
            dim: 0,
            parts: 2,
            split: Split::Even,
        },
    )
    .with_padded(vec![128, 8]);
    let b2 = reshard(&padded, &b, &repadded, ReplicaPolicy::First).unwrap();
    assert_eq!(b2[&(0, 0)], full[..64 * 8 * 4]);
    assert_eq!(b2[&(1, 0)], full[64 * 8 * 4..]);
}

#[test]
fn experts_ep_1_2_4_8_and_3_refused() {
    let shape = [8, 3, 2];
    let full = iota(&shape);
    for storage in [ExpertStorage::Stacked, ExpertStorage::PerExpert] {
        for ep in [1, 2, 4, 8] {
            let m = meta(
                "experts.w1",
                &shape,
                Layout::Experts {
                    num_experts: 8,
                    ep,
                    storage,
                },
            );
            let b = scatter(&m, &full).unwrap();
            let bufs_per_rank = if storage == ExpertStorage::Stacked {
                1
            } else {
                8 / ep as usize
            };
            assert_eq!(b.len(), ep as usize * bufs_per_rank);
            assert_eq!(gather(&m, &b, ReplicaPolicy::First).unwrap(), full);
            let other = meta(
                "experts.w1",
                &shape,
                Layout::Experts {
                    num_experts: 8,
                    ep: 8 / ep,
                    storage: ExpertStorage::Stacked,
                },
            );
            let moved = reshard(&m, &b, &other, ReplicaPolicy::First).unwrap();
            assert_eq!(gather(&other, &moved, ReplicaPolicy::First).unwrap(), full);
        }
        let bad = meta(
            "experts.w1",
            &shape,
            Layout::Experts {
                num_experts: 8,
                ep: 3,
                storage,
            },
        );
        let err = scatter(&bad, &full).unwrap_err();
        assert!(
            matches!(
                err,
                MergeError::Schema(SchemaError::ExpertsNotDivisible {
                    experts: 8,
                    ep: 3,
                    ..
                })
            ),
            "{err}"
        );
    }
}

#[test]
fn dtensor_two_axes_on_dim0_with_empty_shard() {
    let shape = [3, 4];
    let full = iota(&shape);
    let m = meta(
        "w",
        &shape,
        Layout::Mesh {
            mesh: vec![2, 2],
            placements: vec![Placement::Shard(0), Placement::Shard(0)],
        },
    );
    let ps = pieces(&m).unwrap();
    // chunk(3, 2) = [2, 1]; then [2] → [1, 1] and [1] → [1, 0]: rank 3 is empty.
    let rows: Vec<(u32, u64, u64)> = ps
        .iter()
        .map(|p| (p.rank, p.global.off[0], p.global.len[0]))
        .collect();
    assert_eq!(rows, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
    let b = scatter(&m, &full).unwrap();
    assert!(!b.contains_key(&(3, 0)));
    assert_eq!(gather(&m, &b, ReplicaPolicy::First).unwrap(), full);
    let repl = meta(
        "w",
        &shape,
        Layout::Mesh {
            mesh: vec![2, 2],
            placements: vec![Placement::Replicate, Placement::Shard(1)],
        },
    );
    let moved = reshard(&m, &b, &repl, ReplicaPolicy::First).unwrap();
    assert_eq!(gather(&repl, &moved, ReplicaPolicy::Verify).unwrap(), full);
}

/// A ZeRO-1/2 group of params: shapes, their flat offsets and the group size.
fn zero_group(dp: u32, shapes: &[&[u64]]) -> Vec<uc_schema::TensorMeta> {
    let total: u64 = shapes.iter().map(|s| s.iter().product::<u64>()).sum();
    let mut off = 0;
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let l = Layout::ZeroFlat {
                dp,
                offset: off,
                group_numel: total,
                alignment: 2 * dp as u64,
            };
            off += s.iter().product::<u64>();
            meta(&format!("p{i}"), s, l)
        })
        .collect()
}

#[test]
fn zero_1_2_and_3_dp2_to_dp3_with_padding() {
    let shapes: [&[u64]; 4] = [&[5, 3], &[7], &[1], &[2, 2, 3]];
    let (g2, g3) = (zero_group(2, &shapes), zero_group(3, &shapes));
    // group of 35 elements: dp 2 pads to 36 (18 each), dp 3 pads to 36 (12 each)
    let ps: Vec<_> = g2.iter().flat_map(|m| pieces(m).unwrap()).collect();
    assert!(ps.iter().all(|p| p.local_end() <= 18));
    for (a, b) in g2.iter().zip(&g3) {
        let full = iota(&a.shape);
        let bufs = scatter(a, &full).unwrap();
        let moved = reshard(a, &bufs, b, ReplicaPolicy::First).unwrap();
        assert_eq!(gather(b, &moved, ReplicaPolicy::First).unwrap(), full);
        assert_eq!(naive_gather(b, &moved), full);
        // ZeRO-3: each param split on its own with tail padding
        let z3a = meta(&a.name, &a.shape, Layout::Zero3 { dp: 2, offset: 0 });
        let z3b = meta(&a.name, &a.shape, Layout::Zero3 { dp: 3, offset: 5 });
        let moved3 = reshard(b, &moved, &z3a, ReplicaPolicy::First).unwrap();
        let moved3b = reshard(&z3a, &moved3, &z3b, ReplicaPolicy::First).unwrap();
        assert_eq!(gather(&z3b, &moved3b, ReplicaPolicy::First).unwrap(), full);
    }
}

#[test]
fn zero2_inside_tp_of_fused_qkv_maps_to_global_boxes() {
    let shape = [12, 4]; // q 6, k 3, v 3 rows
    let subs = vec![
        SubParam {
            size: 6,
            split: Split::Even,
        },
        SubParam {
            size: 3,
            split: Split::Sizes(vec![2, 1]),
        },
        SubParam {
            size: 3,
            split: Split::Sizes(vec![2, 1]),
        },
    ];
    let outer = Layout::Fused {
        dim: 0,
        parts: 2,
        subs,
    };
    // TP rank 0 holds 7 rows (28 elems) at offset 3 of a 40-elem group; TP rank 1 holds 5 rows (20).
    let inner = vec![
        Layout::ZeroFlat {
            dp: 2,
            offset: 3,
            group_numel: 40,
            alignment: 4,
        },
        Layout::ZeroFlat {
            dp: 2,
            offset: 0,
            group_numel: 21,
            alignment: 4,
        },
    ];
    let m = meta(
        "qkv",
        &shape,
        Layout::Nested {
            outer: Box::new(outer),
            inner,
        },
    );
    let full = iota(&shape);
    let b = scatter(&m, &full).unwrap();
    assert_eq!(b.len(), 4, "2 tp × 2 dp ranks");
    assert_eq!(gather(&m, &b, ReplicaPolicy::First).unwrap(), full);
    assert_eq!(naive_gather(&m, &b), full);
    // global rank = dp * tp + tp: rank 1 = (tp 1, dp 0) starts with q rows 3.. of the global tensor
    assert_eq!(&b[&(1, 0)][..4], &(3.0f32 * 4.0 + 1.0).to_le_bytes());
}

#[test]
fn missing_source_elements_are_a_typed_error() {
    let shape = [8, 2];
    let m = meta(
        "w",
        &shape,
        Layout::Shard {
            dim: 0,
            parts: 4,
            split: Split::Even,
        },
    );
    let mut src = pieces(&m).unwrap();
    src.retain(|p| p.rank != 2);
    let dst = pieces(&meta("w", &shape, Layout::single())).unwrap();
    let err = plan("w", &shape, &src, &dst, ReplicaPolicy::First).unwrap_err();
    assert_eq!(
        err,
        MergeError::Uncovered {
            tensor: "w".into(),
            rank: 0,
            region: Box::new(uc_merge::Region::full(&shape)),
            missing: 4
        }
    );
    assert!(err.to_string().contains("`w`"));
}

#[test]
fn replicas_verify_and_average() {
    let shape = [2, 2];
    let m = meta("ln.weight", &shape, Layout::Replicated { ranks: 3 });
    let full = iota(&shape);
    let mut b = scatter(&m, &full).unwrap();
    assert_eq!(gather(&m, &b, ReplicaPolicy::Verify).unwrap(), full);
    // corrupt replica 2: Verify refuses, Average takes the mean
    b.get_mut(&(2, 0)).unwrap()[..4].copy_from_slice(&4f32.to_le_bytes());
    let err = gather(&m, &b, ReplicaPolicy::Verify).unwrap_err();
    assert!(
        matches!(err, MergeError::ReplicaMismatch { a: 0, b: 2, .. }),
        "{err}"
    );
    let avg = gather(&m, &b, ReplicaPolicy::Average).unwrap();
    assert_eq!(&avg[..4], &2f32.to_le_bytes()); // (1 + 1 + 4) / 3
    assert_eq!(&avg[4..], &full[4..]);
}

#[test]
fn plan_costs_bytes_per_rank() {
    let shape = [8, 4];
    let a = pieces(&meta(
        "w",
        &shape,
        Layout::Shard {
            dim: 0,
            parts: 2,
            split: Split::Even,
        },
    ))
    .unwrap();
    let b = pieces(&meta(
        "w",
        &shape,
        Layout::Shard {
            dim: 1,
            parts: 4,
            split: Split::Even,
        },
    ))
    .unwrap();
    let p = plan("w", &shape, &a, &b, ReplicaPolicy::First).unwrap();
    assert_eq!(
        p.read_per_source().values().copied().collect::<Vec<_>>(),
        vec![16, 16]
    );
    assert_eq!(
        p.written_per_target().values().copied().collect::<Vec<_>>(),
        vec![8, 8, 8, 8]
    );
    assert_eq!(p.ops.len(), 8);
}

#[test]
fn dtype_conversion_rounds_to_nearest_even() {
    use uc_schema::DType;
    // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0)
    let x = [1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -2.5];
    let src: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut dst = vec![0u8; 6];
    uc_merge::convert::convert(&src, DType::F32, &mut dst, DType::BF16).unwrap();
    let got: Vec<u16> = dst
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(got, vec![0x3f80, 0x3f82, 0xc020]);
    let mut back = vec![0u8; 12];
    uc_merge::convert::convert(&dst, DType::BF16, &mut back, DType::F32).unwrap();
    assert_eq!(f32::from_le_bytes(back[8..12].try_into().unwrap()), -2.5);
}
