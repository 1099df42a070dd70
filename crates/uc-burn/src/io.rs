//! Host ⇄ device: little-endian f32 bytes to flat tensors and back (the only host crossings).

use crate::error::{BurnError, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// A flat f32 tensor's values on the host.
pub fn to_f32<B: Backend>(name: &str, t: Tensor<B, 1>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| BurnError::Data {
            tensor: name.to_string(),
            why: format!("cannot read back as f32: {e:?}"),
        })
}

/// A flat f32 tensor's little-endian bytes on the host.
pub fn to_bytes<B: Backend>(name: &str, t: Tensor<B, 1>) -> Result<Vec<u8>> {
    Ok(to_f32(name, t)?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

/// A flat tensor on `device` from f32 values.
pub fn from_f32<B: Backend>(v: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// A flat tensor on `device` from owned little-endian f32 bytes, without converting them on the host.
pub fn from_bytes_vec<B: Backend>(
    name: &str,
    b: Vec<u8>,
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    if !b.len().is_multiple_of(4) {
        return Err(BurnError::Data {
            tensor: name.to_string(),
            why: format!("{} bytes is not a whole number of f32", b.len()),
        });
    }
    let n = b.len() / 4;
    let data = TensorData::from_bytes_vec(b, [n], burn::tensor::DType::F32);
    Ok(Tensor::from_data(data, device))
}

/// A flat tensor on `device` from little-endian f32 bytes.
pub fn from_bytes<B: Backend>(name: &str, b: &[u8], device: &B::Device) -> Result<Tensor<B, 1>> {
    if !b.len().is_multiple_of(4) {
        return Err(BurnError::Data {
            tensor: name.to_string(),
            why: format!("{} bytes is not a whole number of f32", b.len()),
        });
    }
    let v = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(from_f32::<B>(v, device))
}
