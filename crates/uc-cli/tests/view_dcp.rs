//! `uc view` on DCP and Megatron `torch_dist` checkpoints: the page's metadata carries the layouts
//! the chunks fit and a `dcp` section (inferred mesh, placements, chunks with writer rank, file and
//! byte range), and the viewer draws the chunks by writer rank.

mod common;

use common::{fixtures, s, uc};
use serde_json::{json, Value as J};
use std::fs;
use std::path::Path;

/// Decodes standard base64 (with padding), as `uc_wasm::html` embeds it.
fn unbase64(text: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for q in text.trim().as_bytes().chunks(4) {
        let n = q
            .iter()
            .enumerate()
            .filter(|(_, &c)| c != b'=')
            .fold(0u32, |a, (i, &c)| a | (val(c) as u32) << (18 - 6 * i));
        let keep = q.iter().filter(|&&c| c != b'=').count() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + keep]);
    }
    out
}

/// Runs `uc view` on `checkpoint` with a fake viewer build; returns the page and its metadata.
fn view(checkpoint: &Path) -> (String, J) {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    fs::create_dir(&pkg).unwrap();
    fs::write(pkg.join("uc_wasm_bg.wasm"), b"\0asm-test").unwrap();
    fs::write(pkg.join("uc_wasm.js"), b"export default function init() {}").unwrap();
    let out = tmp.path().join("view.html");
    let o = uc(&["view", s(checkpoint), "--out", s(&out), "--pkg", s(&pkg)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = fs::read_to_string(&out).unwrap();
    let start = html.find("id=\"uc-meta\">").expect("uc-meta block") + "id=\"uc-meta\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let meta = serde_json::from_slice(&unbase64(&html[start..end])).unwrap();
    (html, meta)
}

/// The `dcp` entry of tensor `name` / `role`.
fn facts<'a>(meta: &'a J, name: &str, role: &str) -> &'a J {
    meta["dcp"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name && t["role"] == role)
        .unwrap_or_else(|| panic!("no dcp facts for {name} {role}"))
}

/// The layout of tensor `name` / `role` in `tensors`.
fn layout<'a>(meta: &'a J, name: &str, role: &str) -> &'a J {
    &meta["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["meta"]["name"] == name && t["meta"]["role"] == role)
        .unwrap_or_else(|| panic!("no tensor {name} {role}"))["meta"]["layout"]
}

/// `(rank, offsets, sizes, file)` of every chunk, sorted by offsets.
fn chunks(f: &J) -> Vec<(u64, J, J, String)> {
    let mut v: Vec<_> = f["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["rank"].as_u64().unwrap(),
                c["offsets"].clone(),
                c["sizes"].clone(),
                c["file"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort_by_key(|c| c.1.to_string());
    v
}

#[test]
fn view_of_fsdp2_tp_2x2_carries_mesh_placements_and_chunks() {
    let (html, meta) = view(&fixtures("dcp").join("fsdp2_tp_2x2/checkpoint"));
    assert!(html.contains("id=\"uc-wasm\""));
    assert_eq!(meta["dcp"]["world"], 4);

    let qkv = facts(&meta, "blocks.0.qkv.weight", "fp32_master");
    assert_eq!(qkv["key"], "model.blocks.0.qkv.weight");
    assert_eq!(qkv["mesh"], json!([4]));
    assert_eq!(qkv["placements"], json!([{"shard": 0}]));
    let rows: Vec<(u64, J)> = chunks(qkv).into_iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(
        rows,
        [
            (0, json!([0, 0])),
            (2, json!([16, 0])),
            (1, json!([32, 0])),
            (3, json!([48, 0]))
        ]
    );
    for c in qkv["chunks"].as_array().unwrap() {
        assert_eq!(c["file"], format!("__{}_0.distcp", c["rank"]));
        assert!(c["length"].as_u64().unwrap() > 16 * 32 * 4, "{c}");
    }
    assert_eq!(
        layout(&meta, "blocks.0.qkv.weight", "fp32_master"),
        &json!({"shard": {"dim": 0, "parts": 4, "split": {"sizes": [16, 16, 16, 16]}}})
    );

    let fc2 = facts(&meta, "blocks.0.fc2.weight", "fp32_master");
    assert_eq!(fc2["mesh"], json!([2, 2]));
    assert_eq!(fc2["placements"], json!([{"shard": 0}, {"shard": 1}]));
    assert_eq!(
        layout(&meta, "blocks.0.fc2.weight", "fp32_master"),
        &json!({"mesh": {"mesh": [2, 2], "placements": [{"shard": 0}, {"shard": 1}]}})
    );
    let bias = facts(&meta, "blocks.0.fc2.bias", "exp_avg");
    assert_eq!(bias["placements"], json!([{"shard": 0}, "replicate"]));

    // The viewer reads this metadata: the qkv rows are drawn by writer rank.
    let v = uc_wasm::Viewer::new(&meta.to_string()).unwrap();
    let i = v
        .doc
        .items
        .iter()
        .position(|it| it.name == "blocks.0.qkv.weight")
        .unwrap();
    let t = v.tensor(i).unwrap();
    assert_eq!(t.summary["dcp"]["mesh_label"], "mesh (4) · (Shard(0))");
    assert!(t
        .svg
        .contains("data-rank=\"2\" data-ranks=\"2\" data-box=\"16,0:16,32\""));
    assert!(v.summary()["errors"].as_array().unwrap().is_empty());
}

#[test]
fn view_of_megatron_gpt_tp2_slices_the_stacked_chunks_per_layer() {
    let (_, meta) = view(&fixtures("megatron").join("gpt_tp2/checkpoint"));
    assert_eq!(meta["dcp"]["world"], 2);
    let name = "decoder.layers.1.self_attention.linear_qkv.weight";
    let role = meta["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["meta"]["name"] == name)
        .unwrap()["meta"]["role"]
        .as_str()
        .unwrap()
        .to_string();
    let qkv = facts(&meta, name, &role);
    assert_eq!(
        qkv["key"],
        "decoder.layers.self_attention.linear_qkv.weight"
    );
    let c = chunks(qkv);
    assert_eq!(
        c.iter()
            .map(|c| (c.0, c.1.clone(), c.2.clone()))
            .collect::<Vec<_>>(),
        [
            (0, json!([0, 0]), json!([32, 32])),
            (1, json!([32, 0]), json!([32, 32]))
        ]
    );
    let stored: Vec<&J> = qkv["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["stored_offsets"])
        .collect();
    assert!(stored.contains(&&json!([1, 32, 0])), "{stored:?}");
    assert_eq!(
        layout(&meta, name, &role),
        &json!({"shard": {"dim": 0, "parts": 2, "split": {"sizes": [32, 32]}}})
    );
    let norm = facts(&meta, "decoder.layers.0.input_layernorm.weight", &role);
    assert_eq!(norm["chunks"].as_array().unwrap().len(), 1);
    assert_eq!(norm["placements"], json!(["replicate"]));
    let v = uc_wasm::Viewer::new(&meta.to_string()).unwrap();
    assert!(v.summary()["errors"].as_array().unwrap().is_empty());
}
