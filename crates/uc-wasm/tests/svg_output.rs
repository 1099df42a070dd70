//! The SVG output, natively: piece counts, coordinates, overlays, reads vs uc-merge's plan, errors.

use serde_json::Value as J;
use uc_merge::{pieces, plan, ReplicaPolicy};
use uc_wasm::{Topo, Viewer};

fn example(name: &str) -> String {
    let p = format!("{}/../../web/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn index(v: &Viewer, name: &str) -> usize {
    v.doc
        .items
        .iter()
        .position(|i| i.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// The `<g …>` start tags of elements of `kind`.
fn groups<'a>(svg: &'a str, kind: &str) -> Vec<&'a str> {
    let pat = format!("data-kind=\"{kind}\"");
    svg.match_indices("<g ")
        .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap()])
        .filter(|g| g.contains(&pat))
        .collect()
}

fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let k = format!(" {name}=\"");
    let i = tag.find(&k).unwrap_or_else(|| panic!("{name} in {tag}")) + k.len();
    &tag[i..i + tag[i..].find('"').unwrap()]
}

fn gqa() -> (Viewer, usize) {
    let v = Viewer::new(&example("gqa_tp2_deepspeed.json")).unwrap();
    let i = index(&v, "blocks.0.qkv.weight");
    (v, i)
}

#[test]
fn fused_qkv_source_has_six_pieces_at_their_rows() {
    let (v, i) = gqa();
    let svg = v.tensor(i).unwrap().svg;
    let ps = groups(&svg, "piece");
    assert_eq!(ps.len(), 6, "2 ranks × q, k, v");
    let boxes: Vec<(&str, &str)> = ps
        .iter()
        .map(|g| (attr(g, "data-rank"), attr(g, "data-box")))
        .collect();
    assert_eq!(
        boxes,
        vec![
            ("0", "0,0:16,32"),
            ("1", "16,0:16,32"),
            ("0", "32,0:8,32"),
            ("1", "40,0:8,32"),
            ("0", "48,0:8,32"),
            ("1", "56,0:8,32")
        ]
    );
    // 64×32 in a 440-px-wide panel at (16, 58), height clamped to 440: 6.875 px per row.
    assert!(svg.contains(
        "data-box=\"16,0:16,32\" data-buffer=\"0\" data-offset=\"0\" fill=\"#f28e2b\"><title>r1: box 16,0:16,32 · local offset 0 in buffer 0</title><rect x=\"16\" y=\"168\" width=\"440\" height=\"110\"/>"
    ), "{svg}");
    assert_eq!(svg.matches("data-kind=\"label\"").count(), 6);
    let subs: Vec<(&str, &str)> = groups(&svg, "subparam")
        .iter()
        .map(|g| (attr(g, "data-sub"), attr(g, "data-box")))
        .collect();
    assert_eq!(
        subs,
        vec![("q", "0,0:32,32"), ("k", "32,0:16,32"), ("v", "48,0:16,32")]
    );
}

#[test]
fn one_d_tensor_is_a_bar() {
    let (v, _) = gqa();
    let svg = v.tensor(index(&v, "blocks.0.qkv.bias")).unwrap().svg;
    assert!(svg.contains("data-rows=\"1\" data-cols=\"64\""));
    // Elements 16..32 (rank 1's q) of a 64-element bar 440 px wide and 36 px high.
    assert!(
        svg.contains("<rect x=\"126\" y=\"58\" width=\"110\" height=\"36\"/>"),
        "{svg}"
    );
}

#[test]
fn reshard_tp2_to_tp3_reads_match_the_plan() {
    let (v, i) = gqa();
    let topo = Topo {
        tp: 3,
        ..Topo::default()
    };
    let view = v.reshard(i, &topo, Some(0)).unwrap();
    let svg = &view.svg;
    assert_eq!(groups(svg, "piece").len(), 6 + 9);
    // The plan, straight from uc-merge on the same layouts.
    let src = pieces(v.doc.items[i].source().unwrap()).unwrap();
    let target = v.target(i, &topo).unwrap();
    let dst = pieces(&target).unwrap();
    let p = plan("qkv", &[64, 32], &src, &dst, ReplicaPolicy::First).unwrap();
    assert_eq!(p.ops.len(), 12);
    let reads = groups(svg, "read");
    assert_eq!(reads.len(), 2 * p.ops.len(), "each op on both sides");
    for side in ["source", "target"] {
        let mut got: Vec<(u32, u32, String)> = reads
            .iter()
            .filter(|g| attr(g, "data-side") == side)
            .map(|g| {
                (
                    attr(g, "data-src-rank").parse().unwrap(),
                    attr(g, "data-dst-rank").parse().unwrap(),
                    attr(g, "data-box").to_string(),
                )
            })
            .collect();
        let mut want: Vec<(u32, u32, String)> = p
            .ops
            .iter()
            .map(|o| {
                (
                    o.srcs[0].rank,
                    o.dst.rank,
                    uc_wasm::draw::box_attr(&o.global),
                )
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{side}");
    }
    let on = reads
        .iter()
        .filter(|g| attr(g, "class") == "read on")
        .count();
    assert_eq!(on, 2 * 3, "target r0 reads q, k and v from source r0");
    let s = &view.summary;
    assert_eq!(s["read_bytes"], serde_json::json!([[0, 2048], [1, 2048]]));
    assert_eq!(s["written_bytes"][0], serde_json::json!([0, 1472]));
    // The target panel sits right of the source one; target r1's q rows 11..22.
    assert!(svg.contains("data-kind=\"panel\" data-side=\"target\" data-x=\"400\" data-y=\"58\" data-w=\"320\" data-h=\"440\""));
    assert!(
        svg.contains("<rect x=\"400\" y=\"133.63\" width=\"320\" height=\"75.63\"/>"),
        "{svg}"
    );
}

#[test]
fn output_is_deterministic() {
    let (v, i) = gqa();
    let t = Topo {
        tp: 4,
        dp: 2,
        zero_stage: 2,
        ..Topo::default()
    };
    let a = v.reshard(i, &t, None).unwrap();
    let b = Viewer::new(&example("gqa_tp2_deepspeed.json"))
        .unwrap()
        .reshard(i, &t, None)
        .unwrap();
    assert_eq!(a, b);
    assert!(a.svg.contains("data-zero=\"1\""));
}

#[test]
fn padding_is_hatched_and_owned() {
    let v = Viewer::new(&example("uc_tp2_dp2_zero1.json")).unwrap();
    let svg = v.tensor(index(&v, "embed.weight")).unwrap().svg;
    let pads = groups(&svg, "padding");
    assert_eq!(pads.len(), 1);
    assert_eq!(attr(pads[0], "data-box"), "100,0:4,16");
    // Rows 52..104 of TP rank 1 are split over dp: the padding tail is in dp rank 1, global rank 3.
    assert_eq!(attr(pads[0], "data-rank"), "3");
    assert!(groups(&svg, "piece")
        .iter()
        .all(|g| attr(g, "data-zero") == "1"));
}

#[test]
fn experts_show_as_blocks_per_ep_rank() {
    let v = Viewer::new(&example("moe_model.json")).unwrap();
    let i = index(&v, "blocks.0.moe.experts.w1");
    let svg = v.tensor(i).unwrap().svg;
    assert_eq!(groups(&svg, "expert").len(), 8);
    assert!(
        svg.contains("data-rows=\"1024\" data-cols=\"64\""),
        "[8,128,64] folds to 1024×64"
    );
    let t = Topo {
        tp: 1,
        dp: 4,
        ep: 4,
        ..Topo::default()
    };
    let view = v.reshard(i, &t, None).unwrap();
    let tgt = &view.summary["target"]["pieces"];
    assert_eq!(tgt.as_array().unwrap().len(), 4);
    assert_eq!(tgt[1]["box"], "2,0,0:2,128,64");
}

#[test]
fn invalid_metadata_gives_uc_schema_text() {
    let mut doc: J = serde_json::from_str(&example("gqa_tp2_deepspeed.json")).unwrap();
    doc["universal_checkpoint_info"]["sub_param_shard_widths"]["^blocks\\.0\\.qkv\\.weight$"][0] =
        serde_json::json!([16, 17]);
    let v = Viewer::new(&doc.to_string()).unwrap();
    let i = index(&v, "blocks.0.qkv.weight");
    let e = v.tensor(i).unwrap_err().to_string();
    assert_eq!(
        e,
        "tensor `blocks.0.qkv.weight`: shard widths [16, 17] of sub-param 0 sum to 33, but the sub-param has 32"
    );
    assert_eq!(v.summary()["errors"][0], J::from(e));
    doc["universal_checkpoint_info"]["parameter_with_row_parallelism_patterns"] =
        J::from(vec!["("]);
    let e = Viewer::new(&doc.to_string()).unwrap_err().to_string();
    assert!(e.starts_with("pattern `(` is not a valid regex"), "{e}");
}

#[test]
fn too_many_ranks_is_an_error_not_a_hang() {
    let (v, i) = gqa();
    let t = Topo {
        tp: 4096,
        dp: 4096,
        ..Topo::default()
    };
    let e = v.reshard(i, &t, None).unwrap_err().to_string();
    assert_eq!(
        e,
        "topology: 16777216 ranks are more than the viewer draws (16384)"
    );
}

/// Replaces the `n`-th number of a JSON tree by `x`; returns whether there was one.
fn set_nth_number(j: &mut J, n: &mut usize, x: &J) -> bool {
    match j {
        J::Number(_) => {
            if *n == 0 {
                *j = x.clone();
                return true;
            }
            *n -= 1;
            false
        }
        J::Array(a) => a.iter_mut().any(|v| set_nth_number(v, n, x)),
        J::Object(o) => o.values_mut().any(|v| set_nth_number(v, n, x)),
        _ => false,
    }
}

#[test]
fn mutated_examples_never_panic() {
    let values = [
        J::from(0),
        J::from(3),
        J::from(1u64 << 40),
        J::from(u32::MAX),
        J::from(-1),
    ];
    let topos = [
        Topo {
            tp: 3,
            ..Topo::default()
        },
        Topo {
            tp: 2,
            dp: 2,
            ep: 2,
            zero_stage: 3,
            ..Topo::default()
        },
    ];
    let mut runs = 0;
    for name in [
        "gqa_tp2_deepspeed.json",
        "moe_model.json",
        "uc_tp2_dp2_zero1.json",
    ] {
        let base: J = serde_json::from_str(&example(name)).unwrap();
        let step = std::env::var("UC_FUZZ_STEP")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7);
        for (k, x) in (0..)
            .step_by(step)
            .flat_map(|k| values.iter().map(move |x| (k, x)))
        {
            let mut doc = base.clone();
            if !set_nth_number(&mut doc, &mut { k }, x) {
                break;
            }
            let Ok(v) = Viewer::new(&doc.to_string()) else {
                continue;
            };
            let _ = v.summary();
            for i in 0..v.doc.items.len().min(12) {
                let _ = v.tensor(i);
                for t in &topos {
                    let _ = v.reshard(i, t, Some(0));
                }
                runs += 1;
            }
        }
    }
    assert!(runs > 100, "{runs}");
}
