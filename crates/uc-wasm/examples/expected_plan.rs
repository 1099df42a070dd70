//! Prints, as JSON, what the browser test must find in the page for the GQA example at TP=2 → TP=3:
//! source and target pieces and uc-merge's copy ops, computed straight from uc-schema and uc-merge
//! (not through the viewer), plus an invalid variant of the document and uc-schema's error for it.
//!
//! `cargo run -p uc-wasm --example expected_plan -- web/examples/gqa_tp2_deepspeed.json`

use serde_json::{json, Value as J};
use uc_merge::{pieces, plan, Piece, ReplicaPolicy};
use uc_schema::deepspeed::UniversalCheckpointInfo;
use uc_schema::{DType, Layout, Role, Split, SubParam, TensorMeta};

const TENSOR: &str = "blocks.0.qkv.weight";

fn boxes(ps: &[Piece]) -> Vec<J> {
    ps.iter()
        .map(|p| json!({"rank": p.rank, "box": box_attr(&p.global)}))
        .collect()
}

fn box_attr(r: &uc_merge::Region) -> String {
    let j = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    format!("{}:{}", j(&r.off), j(&r.len))
}

/// Local shapes of `name` on every TP rank of the document.
fn local_shapes(doc: &J, name: &str) -> Vec<Vec<u64>> {
    doc["param_shapes"]
        .as_array()
        .expect("param_shapes")
        .iter()
        .map(|r| serde_json::from_value(r[name].clone()).expect("shape"))
        .collect()
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "web/examples/gqa_tp2_deepspeed.json".into());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: J = serde_json::from_str(&text).expect("example is JSON");
    let uci = UniversalCheckpointInfo::parse(&doc["universal_checkpoint_info"]).expect("uci");
    let rule = uci
        .tp_rule(TENSOR, &local_shapes(&doc, TENSOR))
        .expect("tp rule");
    let source = rule.tensor_meta(TENSOR, DType::BF16, Role::Param);
    // The viewer's convention for a new TP size: each sub-param cut near-evenly (DeepSpeed AutoTP's
    // get_shard_size), the first ranks taking the remainder.
    let target = TensorMeta::new(TENSOR, DType::BF16, source.shape.clone(), Role::Param)
        .with_layout(Layout::Fused {
            dim: 0,
            parts: 3,
            subs: [32, 16, 16]
                .iter()
                .map(|&size| SubParam {
                    size,
                    split: Split::Grain { grain: 1 },
                })
                .collect(),
        });
    let src = pieces(&source).expect("source pieces");
    let dst = pieces(&target).expect("target pieces");
    let p = plan(TENSOR, &source.shape, &src, &dst, ReplicaPolicy::First).expect("plan");
    let ops: Vec<J> = p
        .ops
        .iter()
        .map(|op| {
            json!({"src": op.srcs[0].rank, "dst": op.dst.rank, "box": box_attr(&op.global),
                   "bytes": op.numel() * 2})
        })
        .collect();
    let pairs = |m: std::collections::BTreeMap<u32, u64>| -> Vec<J> {
        m.into_iter().map(|(r, n)| json!([r, n * 2])).collect()
    };

    // An invalid document: rank 1's q width no longer sums with rank 0's to the 32 rows of q.
    let mut bad = doc.clone();
    let key = format!("^{}$", TENSOR.replace('.', "\\."));
    bad["universal_checkpoint_info"]["sub_param_shard_widths"][&key][0] = json!([16, 17]);
    let bad_uci = UniversalCheckpointInfo::parse(&bad["universal_checkpoint_info"]).expect("uci");
    let error = bad_uci
        .tp_rule(TENSOR, &local_shapes(&bad, TENSOR))
        .expect_err("widths 16 + 17 != 32");

    let out = json!({
        "tensor": TENSOR,
        "dtype": "BF16",
        "shape": source.shape,
        "source_topology": {"tp": 2},
        "target_topology": {"tp": 3},
        "source_pieces": boxes(&src),
        "target_pieces": boxes(&dst),
        "subparams": [["q", "0,0:32,32"], ["k", "32,0:16,32"], ["v", "48,0:16,32"]],
        "ops": ops,
        "read_bytes": pairs(p.read_per_source()),
        "written_bytes": pairs(p.written_per_target()),
        "invalid_doc": bad.to_string(),
        "invalid_error": error.to_string(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("serializable")
    );
}
