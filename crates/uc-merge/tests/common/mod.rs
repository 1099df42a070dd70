//! Shared test helpers: distinct-valued tensors and a naive reference merge.
#![allow(dead_code)]

use uc_merge::{pieces, Buffers};
use uc_schema::{DType, Layout, Role, TensorMeta};

/// A float32 tensor meta with a layout.
pub fn meta(name: &str, shape: &[u64], layout: Layout) -> TensorMeta {
    TensorMeta::new(name, DType::F32, shape.to_vec(), Role::Fp32Master).with_layout(layout)
}

/// Row-major f32 bytes whose every element is distinct (its index + 1).
pub fn iota(shape: &[u64]) -> Vec<u8> {
    let n: u64 = shape.iter().product();
    (0..n)
        .flat_map(|i| ((i + 1) as f32).to_le_bytes())
        .collect()
}

/// Builds the full tensor element by element from the pieces (slow, obviously right).
pub fn naive_gather(meta: &TensorMeta, bufs: &Buffers) -> Vec<u8> {
    let ps = pieces(meta).expect("valid layout");
    let e = meta.dtype.size();
    let n: u64 = meta.shape.iter().product();
    let mut out = vec![0u8; n as usize * e];
    let mut seen = vec![false; n as usize];
    for i in 0..n {
        let x = uc_merge::unravel(&meta.shape, i);
        for p in &ps {
            let inside = x
                .iter()
                .zip(&p.global.off)
                .zip(&p.global.len)
                .all(|((x, o), l)| *x >= *o && *x < o + l);
            if inside {
                let li = p.local_index(&x) as usize;
                let b = &bufs[&(p.rank, p.buffer)];
                out[i as usize * e..(i as usize + 1) * e].copy_from_slice(&b[li * e..(li + 1) * e]);
                seen[i as usize] = true;
                break;
            }
        }
    }
    assert!(seen.iter().all(|s| *s), "naive gather: element not covered");
    out
}
