//! Element type conversion via `half`: widening is exact, narrowing rounds to nearest even.

use crate::MergeError;
use half::{bf16, f16};
use uc_schema::DType;

fn read(src: &[u8], i: usize, t: DType) -> f64 {
    let b = |n: usize| &src[i * n..(i + 1) * n];
    match t {
        DType::F64 => f64::from_le_bytes(b(8).try_into().expect("8 bytes")),
        DType::F32 => f32::from_le_bytes(b(4).try_into().expect("4 bytes")) as f64,
        DType::F16 => f16::from_le_bytes(b(2).try_into().expect("2 bytes")).to_f64(),
        DType::BF16 => bf16::from_le_bytes(b(2).try_into().expect("2 bytes")).to_f64(),
        _ => f64::NAN,
    }
}

/// Converts a dense run of `from` elements into `to` elements (float types only).
///
/// f32 → bf16/f16 rounds to nearest even like torch's `.to()`; f64 → bf16/f16 goes through
/// f64 directly (single rounding).
pub fn convert(src: &[u8], from: DType, dst: &mut [u8], to: DType) -> Result<(), MergeError> {
    if from == to {
        dst.copy_from_slice(src);
        return Ok(());
    }
    if !from.is_float() || !to.is_float() {
        return Err(MergeError::Unconvertible { from, to });
    }
    let n = src.len() / from.size();
    match (from, to) {
        // Fast paths for the common cases.
        (DType::BF16, DType::F32) => {
            for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(4)) {
                let v = bf16::from_le_bytes([s[0], s[1]]).to_f32();
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        (DType::F32, DType::BF16) => {
            for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(2)) {
                let v = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                d.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
            }
        }
        (DType::F32, DType::F16) => {
            for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(2)) {
                let v = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                d.copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        _ => {
            for i in 0..n {
                let v = read(src, i, from);
                let out = &mut dst[i * to.size()..(i + 1) * to.size()];
                match to {
                    DType::F64 => out.copy_from_slice(&v.to_le_bytes()),
                    DType::F32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
                    DType::F16 => out.copy_from_slice(&f16::from_f64(v).to_le_bytes()),
                    DType::BF16 => out.copy_from_slice(&bf16::from_f64(v).to_le_bytes()),
                    _ => unreachable!("checked is_float above"),
                }
            }
        }
    }
    Ok(())
}
