//! A DCP document (`uc view` of the fsdp2_tp_2x2 fixture, `web/examples/dcp_fsdp2_tp_2x2.json`):
//! pieces drawn from the chunks by writer rank, the mesh / placements line, the chunk table, and
//! typed errors for a bad `dcp` section.

use serde_json::Value as J;
use uc_wasm::svg::color;
use uc_wasm::{Format, Topo, ViewError, Viewer};

fn example() -> String {
    let p = format!(
        "{}/../../web/examples/dcp_fsdp2_tp_2x2.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn index(v: &Viewer, name: &str) -> usize {
    v.doc
        .items
        .iter()
        .position(|i| i.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// `(data-rank, data-box, fill)` of every piece group of the SVG.
fn pieces(svg: &str) -> Vec<(String, String, String)> {
    let attr = |tag: &str, name: &str| {
        let k = format!(" {name}=\"");
        let i = tag.find(&k).unwrap() + k.len();
        tag[i..i + tag[i..].find('"').unwrap()].to_string()
    };
    svg.match_indices("<g ")
        .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap()])
        .filter(|g| g.contains("data-kind=\"piece\""))
        .map(|g| (attr(g, "data-rank"), attr(g, "data-box"), attr(g, "fill")))
        .collect()
}

#[test]
fn qkv_rows_are_drawn_by_writer_rank_with_mesh_and_chunks() {
    let v = Viewer::new(&example()).unwrap();
    assert_eq!(v.doc.format, Format::Dcp);
    let s = v.summary();
    assert_eq!(s["format"], "dcp");
    assert!(s["notes"][0]
        .as_str()
        .unwrap()
        .contains("4 ranks wrote files"));
    assert!(
        s["errors"].as_array().unwrap().is_empty(),
        "{}",
        s["errors"]
    );
    let i = index(&v, "blocks.0.qkv.weight");
    assert_eq!(s["tensors"][i]["dcp"], "mesh (4) · (Shard(0)) · 4 chunks");

    let view = v.tensor(i).unwrap();
    // r0 0..15, r2 16..31, r1 32..47, r3 48..63 (tp splits first, dp splits the tp block).
    let want = [
        (0, "0,0:16,32"),
        (2, "16,0:16,32"),
        (1, "32,0:16,32"),
        (3, "48,0:16,32"),
    ];
    let got = pieces(&view.svg);
    assert_eq!(got.len(), 4);
    for ((r, b, fill), (wr, wb)) in got.iter().zip(want) {
        assert_eq!((r.as_str(), b.as_str()), (wr.to_string().as_str(), wb));
        assert_eq!(fill, &color(wr));
    }
    assert!(view
        .svg
        .contains("mesh (4) · (Shard(0)) · 4 chunks · layout shard(dim 0)"));
    assert!(view.svg.contains("r2 · 16,0:16,32 · __2_0.distcp @"));
    let d = &view.summary["dcp"];
    assert_eq!(d["key"], "model.blocks.0.qkv.weight");
    assert_eq!(d["mesh"], serde_json::json!([4]));
    assert_eq!(d["placements"], serde_json::json!(["Shard(0)"]));
    assert_eq!(d["layout_fits"], true);
    let chunks = d["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 4);
    for c in chunks {
        let r = c["rank"].as_u64().unwrap();
        assert_eq!(c["file"], format!("__{r}_0.distcp"));
        assert!(c["length"].as_u64().unwrap() >= 16 * 32 * 4);
    }
}

#[test]
fn grid_replicated_bias_and_empty_chunk() {
    let v = Viewer::new(&example()).unwrap();
    let fc2 = v.tensor(index(&v, "blocks.0.fc2.weight")).unwrap();
    assert_eq!(
        fc2.summary["dcp"]["mesh_label"],
        "mesh (2, 2) · (Shard(0), Shard(1))"
    );
    assert_eq!(fc2.summary["layout"], "mesh");
    let ranks: Vec<String> = pieces(&fc2.svg).into_iter().map(|p| p.0).collect();
    assert_eq!(ranks, ["0", "1", "2", "3"]);

    let bias = v.tensor(index(&v, "blocks.0.fc2.bias")).unwrap();
    assert_eq!(
        bias.summary["dcp"]["mesh_label"],
        "mesh (2, 2) · (Shard(0), Replicate)"
    );
    assert_eq!(pieces(&bias.svg).len(), 2);

    let scale = v.tensor(index(&v, "logit_scale")).unwrap();
    let chunks = scale.summary["dcp"]["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 2, "the empty chunk is listed");
    assert_eq!(chunks[1]["empty"], true);
    assert_eq!(chunks[1]["box"], "1:0");
    assert_eq!(pieces(&scale.svg).len(), 1, "and not drawn");
    assert!(scale.svg.contains("(empty)"));
}

#[test]
fn reshard_reads_from_the_writer_ranks() {
    let v = Viewer::new(&example()).unwrap();
    let i = index(&v, "blocks.0.qkv.weight");
    let view = v.reshard(i, &Topo::default(), None).unwrap();
    let read: Vec<u64> = view.summary["read_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[0].as_u64().unwrap())
        .collect();
    assert_eq!(read, [0, 1, 2, 3]);
    let src = &view.summary["source"]["pieces"];
    assert_eq!(src[1]["box"], "16,0:16,32");
    assert_eq!(src[1]["ranks"], serde_json::json!([2]));
    assert!(view.summary["dcp"]["chunks"].is_array());
    assert!(view.svg.contains("source · DCP, 4 ranks wrote files"));
}

#[test]
fn bad_dcp_sections_are_typed_errors() {
    let mut j: J = serde_json::from_str(&example()).unwrap();
    j["dcp"]["tensors"][2]["chunks"][0]["sizes"] = serde_json::json!([99, 32]);
    let name = j["dcp"]["tensors"][2]["name"].as_str().unwrap().to_string();
    let v = Viewer::new(&j.to_string()).unwrap();
    let e = v.tensor(index(&v, &name)).unwrap_err();
    assert!(matches!(e, ViewError::Tensor { .. }), "{e}");
    assert!(e.to_string().contains("lies outside"), "{e}");

    let mut j: J = serde_json::from_str(&example()).unwrap();
    j["dcp"]["tensors"][0]["chunkz"] = J::Null;
    let e = Viewer::new(&j.to_string()).unwrap_err().to_string();
    assert!(e.starts_with("dcp section: unknown field `chunkz`"), "{e}");
}
