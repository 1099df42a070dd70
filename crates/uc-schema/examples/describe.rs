//! Prints the metadata of a GQA fused QKV at TP=2 with ZeRO-2 inside, validated, as JSON.
//!
//! `cargo run -p uc-schema --example describe`

use uc_schema::{DType, Layout, Role, Split, SubParam, TensorMeta, Topology};

fn main() {
    let topo = Topology::new(&[("dp", 2), ("tp", 2)], 2);
    let qkv = Layout::Fused {
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
    let local: u64 = uc_schema::local_shape(&[6144, 4096], &qkv, 0)
        .iter()
        .product();
    let zero = Layout::ZeroFlat {
        dp: 2,
        offset: 0,
        group_numel: local,
        alignment: 4,
    };
    let meta = TensorMeta::new(
        "layers.0.attn.qkv.weight",
        DType::BF16,
        vec![6144, 4096],
        Role::Param,
    )
    .with_layout(Layout::Nested {
        outer: Box::new(qkv),
        inner: vec![zero.clone(), zero],
    });
    match (topo.validate(), meta.validate()) {
        (Ok(()), Ok(())) => {
            let doc = serde_json::json!({ "topology": topo, "tensor": meta });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("serializable")
            );
            eprintln!(
                "valid: {} over {} ranks",
                meta.layout.kind(),
                meta.layout.ranks()
            );
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("invalid: {e}");
            std::process::exit(1);
        }
    }
}
