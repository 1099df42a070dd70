//! Helpers on a checkpoint's training state shared by the writers of every output format.

use crate::error::{Result, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::{DType, TensorMeta, Value};

fn bad_tensor(zero: &Path, meta: &TensorMeta, why: impl Into<String>) -> StoreError {
    StoreError::BadTensor {
        path: zero.to_path_buf(),
        tensor: meta.name.clone(),
        why: why.into(),
    }
}

/// `data` (one element of `meta.dtype`, e.g. a step) as a float32; errors name `path`.
pub(crate) fn scalar_f32(zero: &Path, meta: &TensorMeta, data: &[u8]) -> Result<f32> {
    if meta.numel() != 1 {
        return Err(bad_tensor(zero, meta, "step is not a single number"));
    }
    let mut out = [0u8; 4];
    uc_merge::convert::convert(data, meta.dtype, &mut out, DType::F32)
        .map_err(|e| bad_tensor(zero, meta, e.to_string()))?;
    Ok(f32::from_le_bytes(out))
}

/// The training state's optimizer groups without `params` (DeepSpeed and Megatron's `common.pt`
/// keep hyper-parameters only; DCP lists FQNs there). `None` when the state has no `param_groups`.
pub(crate) fn groups_without_params(state: &BTreeMap<String, Value>) -> Option<Vec<Value>> {
    let Some(Value::List(gs)) = state.get("param_groups") else {
        return None;
    };
    Some(
        gs.iter()
            .map(|g| match g {
                Value::Map(m) => {
                    let mut m = m.clone();
                    m.remove("params");
                    Value::Map(m)
                }
                other => other.clone(),
            })
            .collect(),
    )
}
