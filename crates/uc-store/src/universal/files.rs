//! DeepSpeed's universal layout files: `zero/<param>/<state>.pt` written key for key as
//! `ds_to_universal` writes them, inside a folder that appears atomically.

use crate::atomic::{create_dir_if_missing, safe_join, AtomicDir};
use crate::durable::{start_writeback, WRITEBACK_MIN};
use crate::error::{Result, StoreError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use uc_torch::{write_pt_file, PtTensor, PtValue};

/// Which keys DeepSpeed's `ds_to_universal` puts into a `zero/<param>/<state>.pt`, in its key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniversalKind {
    /// `{'cat_dim': d, 'param': t}`: ZeRO data parallel, pipeline, row-parallel embedding (`d` = 1).
    CatDim(i64),
    /// `{'param': t}`: AutoTP params rebuilt from their affine map; the router alias's `fp32.pt`.
    ParamOnly,
    /// `{'vocab_tensor': True, 'param': t}`: AutoTP vocabulary tensors (`lm_head`).
    Vocab,
    /// `{'param': t, 'cat_dim': 0, 'is_expert_param': True, 'ep_num_experts': n}`: AutoEP experts.
    Expert { num_experts: i64 },
    /// A bare tensor: ZeRO-3 flat 1-D states.
    Bare,
}

/// The value DeepSpeed pickles for one universal state file of `kind`.
pub(crate) fn universal_value(kind: UniversalKind, tensor: PtTensor<'_>) -> PtValue<'_> {
    let t = PtValue::Tensor(tensor);
    let s = |k: &str| k.to_string();
    match kind {
        UniversalKind::CatDim(d) => {
            PtValue::Dict(vec![(s("cat_dim"), PtValue::Int(d)), (s("param"), t)])
        }
        UniversalKind::ParamOnly => PtValue::Dict(vec![(s("param"), t)]),
        UniversalKind::Vocab => PtValue::Dict(vec![
            (s("vocab_tensor"), PtValue::Bool(true)),
            (s("param"), t),
        ]),
        UniversalKind::Expert { num_experts } => PtValue::Dict(vec![
            (s("param"), t),
            (s("cat_dim"), PtValue::Int(0)),
            (s("is_expert_param"), PtValue::Bool(true)),
            (s("ep_num_experts"), PtValue::Int(num_experts)),
        ]),
        UniversalKind::Bare => t,
    }
}

/// Writes `zero_dir/<param>/<state>.pt` (creating the param folder when it is missing) and returns its path.
///
/// `param` and `state` are checked with [`safe_join`]. The folder is created only when the first file
/// written into it finds it missing, so each is made once (MoE models have 10⁴–10⁵ of them). DeepSpeed writes `fp32` tensors with
/// `requires_grad=True` and moments with `False`; set it on `tensor` accordingly.
pub fn write_universal_state(
    zero_dir: &Path,
    param: &str,
    state: &str,
    kind: UniversalKind,
    tensor: PtTensor<'_>,
) -> Result<PathBuf> {
    let dir = safe_join(zero_dir, param)?;
    let file = safe_join(&dir, &format!("{}.pt", checked_state(&dir, state)?))?;
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
    };
    let f = match create() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            create_dir_if_missing(&dir)?;
            create()
        }
        r => r,
    }
    .map_err(|e| match e.kind() {
        ErrorKind::AlreadyExists => StoreError::OutputExists { path: file.clone() },
        _ => StoreError::Io {
            path: file.clone(),
            source: e,
        },
    })?;
    // Large files start their write-back now, so the one sync before `latest` has little left to do.
    let large = tensor.nbytes().is_some_and(|n| n >= WRITEBACK_MIN);
    let writeback = large.then(|| f.try_clone().ok()).flatten();
    write_pt_file(f, &file, universal_value(kind, tensor))?;
    if let Some(w) = writeback {
        start_writeback(&w, 0, 0);
    }
    Ok(file)
}

/// Writes `zero_dir/<param>/step.pt`: a bare 0-d float32 tensor, as DeepSpeed does.
pub fn write_universal_step(zero_dir: &Path, param: &str, step: f32) -> Result<PathBuf> {
    write_universal_state(
        zero_dir,
        param,
        "step",
        UniversalKind::Bare,
        PtTensor::scalar_f32(step),
    )
}

/// A state name is a file stem: it must itself be a safe single name.
fn checked_state<'s>(dir: &Path, state: &'s str) -> Result<&'s str> {
    safe_join(dir, state)?;
    Ok(state)
}

/// A DeepSpeed universal checkpoint folder (`global_step<N>_universal/`) written atomically: its
/// `zero/<param>/<state>.pt` files go into a temporary sibling that [`UniversalDir::commit`] renames
/// into place (with a `COMPLETE` marker, which DeepSpeed ignores). Dropped uncommitted, it leaves nothing.
#[derive(Debug)]
pub struct UniversalDir {
    out: AtomicDir,
    zero: PathBuf,
}

impl UniversalDir {
    /// Starts the folder at `target` (which must not exist) with an empty `zero/` inside.
    pub fn create(target: impl AsRef<Path>) -> Result<UniversalDir> {
        let out = AtomicDir::create(target)?;
        let zero = out.subdir("zero")?;
        Ok(UniversalDir { out, zero })
    }

    /// The temporary root, for the files beside `zero/` (`mp_rank_00_model_states.pt`, …).
    pub fn root(&self) -> &Path {
        self.out.path()
    }

    /// The temporary `zero/` folder.
    pub fn zero_dir(&self) -> &Path {
        &self.zero
    }

    /// Writes `zero/<param>/<state>.pt` (see [`write_universal_state`]); callable from many threads.
    pub fn write_state(
        &self,
        param: &str,
        state: &str,
        kind: UniversalKind,
        tensor: PtTensor<'_>,
    ) -> Result<PathBuf> {
        write_universal_state(&self.zero, param, state, kind, tensor)
    }

    /// Writes `zero/<param>/step.pt` (see [`write_universal_step`]).
    pub fn write_step(&self, param: &str, step: f32) -> Result<PathBuf> {
        write_universal_step(&self.zero, param, step)
    }

    /// Writes `COMPLETE` and renames the folder into place; returns its final path.
    pub fn commit(self) -> Result<PathBuf> {
        self.out.commit(b"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universal_value_key_orders() {
        let keys = |v: &PtValue| match v {
            PtValue::Dict(items) => items.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            _ => vec!["<bare>".to_string()],
        };
        let t = || PtTensor::scalar_f32(1.0);
        assert_eq!(
            keys(&universal_value(UniversalKind::CatDim(0), t())),
            ["cat_dim", "param"]
        );
        assert_eq!(
            keys(&universal_value(UniversalKind::Vocab, t())),
            ["vocab_tensor", "param"]
        );
        assert_eq!(
            keys(&universal_value(UniversalKind::ParamOnly, t())),
            ["param"]
        );
        assert_eq!(
            keys(&universal_value(
                UniversalKind::Expert { num_experts: 4 },
                t()
            )),
            ["param", "cat_dim", "is_expert_param", "ep_num_experts"]
        );
        assert_eq!(keys(&universal_value(UniversalKind::Bare, t())), ["<bare>"]);
    }
}
