//! The sharding inferred from DCP chunks (grid, mesh, placements, layout, writer ranks) against the
//! fixtures' own per-rank placement tables, and one Megatron per-layer tensor.

mod common;

use common::{DCP, MEGATRON};
use serde_json::Value as J;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use uc_schema::{Layout, Placement, Role, Split, TensorMeta};
use uc_store::dcp::layout::{infer, DcpLayout};
use uc_store::dcp::{DcpCheckpoint, DcpOptions};

const CASES: &[&str] = &["fsdp2_dp2", "fsdp2_tp_2x2", "ep_mesh_empty_shard"];

/// A chunk box: (offsets, sizes).
type Box_ = (Vec<u64>, Vec<u64>);

fn open(dir: &Path) -> DcpCheckpoint {
    DcpCheckpoint::open(dir, &DcpOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn manifest(case: &str) -> J {
    let p = Path::new(DCP).join(case).join("manifest.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn u64s(j: &J) -> Vec<u64> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Per DCP model key: each chunk box with the ranks whose local shard it is.
fn rank_tables(m: &J) -> BTreeMap<String, BTreeMap<Box_, BTreeSet<u32>>> {
    let mut out = BTreeMap::new();
    for (key, ranks) in m["placements_per_rank"].as_object().unwrap() {
        let mut boxes: BTreeMap<Box_, BTreeSet<u32>> = BTreeMap::new();
        for (r, p) in ranks.as_object().unwrap() {
            let b = (u64s(&p["dcp_chunk_offsets"]), u64s(&p["dcp_chunk_sizes"]));
            boxes.entry(b).or_default().insert(r.parse().unwrap());
        }
        out.insert(key.clone(), boxes);
    }
    out
}

/// The inferred layout of the output `name` / `role`.
fn layout_of(ck: &DcpCheckpoint, name: &str, role: &Role) -> DcpLayout {
    let meta: TensorMeta = ck
        .outputs()
        .into_iter()
        .find(|m| m.name == name && &m.role == role)
        .unwrap_or_else(|| panic!("no output {name} {role:?}"));
    infer(ck, &meta).unwrap_or_else(|| panic!("{name}: nothing inferred"))
}

/// Writer rank of the chunk with box `offsets` / `sizes`.
fn writer(l: &DcpLayout, offsets: &[u64], sizes: &[u64]) -> Option<u32> {
    l.chunks
        .iter()
        .find(|c| c.offsets == offsets && c.sizes == sizes)
        .unwrap_or_else(|| panic!("{}: no chunk {offsets:?} {sizes:?}", l.key))
        .rank
}

#[test]
fn every_fixture_tensor_matches_the_rank_table() {
    for case in CASES {
        let m = manifest(case);
        let world = m["world_size"].as_u64().unwrap() as u32;
        let tables = rank_tables(&m);
        let ck = open(&Path::new(DCP).join(case).join("checkpoint"));
        let mut checked = 0;
        for meta in ck.outputs() {
            let l = infer(&ck, &meta).unwrap_or_else(|| panic!("{case} {}", meta.name));
            assert_eq!(l.world, world, "{case}");
            assert_eq!(l.shape, meta.shape);
            let layout = l.layout.as_ref();
            assert!(layout.is_some(), "{case} {}: no layout fits {l:?}", l.key);
            // Moments share their param's placements; the Adam step is a replicated scalar.
            let Some(table) = tables.get(&format!("model.{}", meta.name)) else {
                continue;
            };
            if meta.role == Role::Step {
                assert_eq!(l.layout, Some(Layout::single()));
                continue;
            }
            let got: BTreeSet<Box_> = l
                .chunks
                .iter()
                .map(|c| (c.offsets.clone(), c.sizes.clone()))
                .collect();
            let want: BTreeSet<Box_> = table.keys().cloned().collect();
            assert_eq!(got, want, "{case} {}", l.key);
            assert_eq!(
                got.len(),
                l.chunks.len(),
                "{case} {}: duplicate chunks",
                l.key
            );
            for c in &l.chunks {
                let holders = &table[&(c.offsets.clone(), c.sizes.clone())];
                match c.rank {
                    Some(r) => {
                        assert!(holders.contains(&r), "{case} {} {c:?}: {holders:?}", l.key);
                        assert_eq!(c.file.as_deref(), Some(format!("__{r}_0.distcp").as_str()));
                    }
                    None => assert!(c.is_empty(), "{case} {}: {c:?} has no writer", l.key),
                }
                if !c.is_empty() {
                    let numel: u64 = c.sizes.iter().product();
                    assert!(c.length >= numel * 4, "{case} {} {c:?}", l.key);
                }
            }
            let parts: u32 = l.grid.as_ref().unwrap().parts().iter().product();
            assert_eq!(parts as usize, l.chunks.len());
            assert_eq!(layout.unwrap().ranks() as usize, l.chunks.len());
            checked += 1;
        }
        assert!(checked >= 6, "{case}: {checked}");
    }
}

#[test]
fn fsdp2_tp_2x2_qkv_rows_fc2_grid_and_tp_replicated_bias() {
    let ck = open(&Path::new(DCP).join("fsdp2_tp_2x2/checkpoint"));
    let qkv = layout_of(&ck, "blocks.0.qkv.weight", &Role::Fp32Master);
    assert_eq!(qkv.key, "model.blocks.0.qkv.weight");
    assert_eq!(
        qkv.layout,
        Some(Layout::Shard {
            dim: 0,
            parts: 4,
            split: Split::Sizes(vec![16; 4])
        })
    );
    assert_eq!(qkv.mesh, vec![4]);
    assert_eq!(qkv.placements, vec![Placement::Shard(0)]);
    // r0 0..15, r1 32..47, r2 16..31, r3 48..63.
    for (row, rank) in [(0, 0), (16, 2), (32, 1), (48, 3)] {
        assert_eq!(writer(&qkv, &[row, 0], &[16, 32]), Some(rank), "row {row}");
    }
    // The moments share the layout.
    let m = layout_of(&ck, "blocks.0.qkv.weight", &Role::ExpAvg);
    assert!(m.key.ends_with("qkv.weight.exp_avg"), "{}", m.key);
    assert_eq!((&m.layout, &m.chunks.len()), (&qkv.layout, &4));

    let fc2 = layout_of(&ck, "blocks.0.fc2.weight", &Role::Fp32Master);
    assert_eq!(
        fc2.layout,
        Some(Layout::Mesh {
            mesh: vec![2, 2],
            placements: vec![Placement::Shard(0), Placement::Shard(1)]
        })
    );
    assert_eq!(fc2.mesh, vec![2, 2]);
    assert_eq!(
        fc2.grid.as_ref().unwrap().sizes,
        vec![vec![16, 16], vec![32, 32]]
    );
    for (off, rank) in [([0, 0], 0), ([0, 32], 1), ([16, 0], 2), ([16, 32], 3)] {
        assert_eq!(writer(&fc2, &off, &[16, 32]), Some(rank));
    }

    let bias = layout_of(&ck, "blocks.0.fc2.bias", &Role::Fp32Master);
    assert_eq!(bias.chunks.len(), 2);
    assert_eq!(bias.mesh, vec![2, 2]);
    assert_eq!(
        bias.placements,
        vec![Placement::Shard(0), Placement::Replicate]
    );
    // Written once per dp block, by a rank of that block (dedup across tp).
    assert!(matches!(writer(&bias, &[0], &[16]), Some(0 | 1)));
    assert!(matches!(writer(&bias, &[16], &[16]), Some(2 | 3)));
}

#[test]
fn empty_shards_are_kept() {
    let ck = open(&Path::new(DCP).join("ep_mesh_empty_shard/checkpoint"));
    let w1 = layout_of(&ck, "experts.w1", &Role::Fp32Master);
    assert_eq!(w1.chunks.len(), 4);
    assert_eq!(
        w1.layout,
        Some(Layout::Shard {
            dim: 0,
            parts: 4,
            split: Split::Sizes(vec![1, 1, 1, 0])
        })
    );
    let empty = w1.chunks.iter().find(|c| c.is_empty()).unwrap();
    assert_eq!(
        (empty.offsets.as_slice(), empty.sizes.as_slice()),
        (&[3, 0, 0][..], &[0, 8, 16][..])
    );
    for (e, rank) in [(0, 0), (1, 1), (2, 2)] {
        assert_eq!(writer(&w1, &[e, 0, 0], &[1, 8, 16]), Some(rank));
    }
    // torch stores the empty local shard too (an archive of a 0-element tensor), by its own rank.
    assert_eq!(empty.rank, Some(3));
    assert_eq!(empty.file.as_deref(), Some("__3_0.distcp"));

    let w2 = layout_of(&ck, "experts.w2", &Role::Fp32Master);
    assert_eq!(
        w2.grid.as_ref().unwrap().sizes,
        vec![vec![2, 1], vec![8, 8], vec![8]]
    );
    assert!(w2.layout.is_some());
    assert_eq!(
        w2.placements,
        vec![Placement::Shard(0), Placement::Shard(1)]
    );

    let router = layout_of(&ck, "router.weight", &Role::Fp32Master);
    assert_eq!(router.layout, Some(Layout::single()));
    assert_eq!(
        (router.mesh.as_slice(), router.placements.as_slice()),
        (&[4][..], &[Placement::Replicate][..])
    );

    let dp2 = open(&Path::new(DCP).join("fsdp2_dp2/checkpoint"));
    let scale = layout_of(&dp2, "logit_scale", &Role::Fp32Master);
    assert_eq!(
        scale.layout,
        Some(Layout::Shard {
            dim: 0,
            parts: 2,
            split: Split::Sizes(vec![1, 0])
        })
    );
    assert_eq!(writer(&scale, &[0], &[1]), Some(0));
    assert!(scale
        .chunks
        .iter()
        .any(|c| c.offsets == [1] && c.sizes == [0]));
}

#[test]
fn megatron_layer_is_a_slice_of_the_stacked_chunks() {
    let ck = open(&Path::new(MEGATRON).join("gpt_tp2/checkpoint"));
    for meta in ck.outputs() {
        match infer(&ck, &meta) {
            Some(l) => assert!(l.layout.is_some(), "{}: {l:?}", meta.name),
            None => assert_eq!(meta.role, Role::Step, "{}", meta.name),
        }
    }
    for layer in [0u64, 1] {
        let name = format!("decoder.layers.{layer}.self_attention.linear_qkv.weight");
        let role = ck
            .outputs()
            .into_iter()
            .find(|m| m.name == name)
            .unwrap()
            .role;
        let qkv = layout_of(&ck, &name, &role);
        assert_eq!(qkv.key, "decoder.layers.self_attention.linear_qkv.weight");
        assert_eq!(qkv.shape, vec![64, 32]);
        assert_eq!(
            qkv.layout,
            Some(Layout::Shard {
                dim: 0,
                parts: 2,
                split: Split::Sizes(vec![32, 32])
            })
        );
        assert_eq!(qkv.mesh, vec![2]);
        assert_eq!(writer(&qkv, &[0, 0], &[32, 32]), Some(0));
        assert_eq!(writer(&qkv, &[32, 0], &[32, 32]), Some(1));
        let stored: BTreeSet<Vec<u64>> = qkv
            .chunks
            .iter()
            .map(|c| c.stored_offsets.clone())
            .collect();
        assert_eq!(
            stored,
            BTreeSet::from([vec![layer, 0, 0], vec![layer, 32, 0]])
        );
        for c in &qkv.chunks {
            let f = c.file.as_deref().unwrap();
            assert!(f.starts_with(&format!("__{}_", c.rank.unwrap())), "{f}");
        }

        let norm_name = format!("decoder.layers.{layer}.input_layernorm.weight");
        let norm = ck
            .outputs()
            .into_iter()
            .find(|m| m.name == norm_name)
            .unwrap();
        let norm = infer(&ck, &norm).unwrap();
        assert_eq!(norm.shape, vec![32]);
        assert_eq!(norm.chunks.len(), 1);
        assert_eq!(norm.layout, Some(Layout::single()));
        assert_eq!(norm.chunks[0].rank, Some(0));
        assert_eq!(
            (norm.mesh.as_slice(), norm.placements.as_slice()),
            (&[2][..], &[Placement::Replicate][..])
        );
    }
}
