//! Any checkpoint unicheck reads, behind one interface: the tensors a universal checkpoint of it
//! holds, each merged into full row-major bytes on demand.

use crate::dcp::{DcpCheckpoint, DcpOptions};
use crate::deepspeed::{Assume, DsCheckpoint};
use crate::error::Result;
use crate::native::{NativeCheckpoint, MANIFEST_FILE};
use crate::tensor_bytes::TensorBytes;
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::{Layout, TensorMeta, Topology, Value};

/// Progress of a conversion or export: tensors done, tensors in all, bytes done.
pub type Progress<'a> = &'a (dyn Fn(usize, usize, u64) + Sync);

/// Runs one unit of work that reads input bytes (a tensor read and written) under a
/// [`uc_torch::lazy::hold`], then lets a remote input's stand-ins drop their bytes when they hold more
/// than the cache budget. `f` must not wait on other units (no rayon calls inside).
pub(crate) fn input_unit<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let out = {
        let _hold = uc_torch::lazy::hold();
        f()
    };
    if out.is_ok() {
        uc_torch::lazy::relieve()?;
    }
    out
}

/// An open input checkpoint.
#[derive(Debug)]
pub enum Source {
    DeepSpeed(Box<DsCheckpoint>),
    Native(Box<NativeCheckpoint>),
    Dcp(Box<DcpCheckpoint>),
}

/// How to open an input.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// DeepSpeed tag (default: the one `latest` names).
    pub tag: Option<String>,
    /// TP metadata for DeepSpeed checkpoints saved without `universal_checkpoint_info`.
    pub assume: Assume,
    /// What names the input in a job's key instead of its path: a remote input's URL and object
    /// versions, whose local stand-in folder differs from process to process.
    pub label: Option<String>,
}

impl OpenOptions {
    /// The path that names the input in a job key (`/` when a label names it; the label is part
    /// of the options text then).
    pub(crate) fn key_path<'a>(&self, input: &'a Path) -> &'a Path {
        match self.label {
            Some(_) => Path::new("/"),
            None => input,
        }
    }
}

impl Source {
    /// Opens `path`, recognising the format from its files: `uc.json` → native, `.metadata` → DCP
    /// (torch or Megatron `torch_dist`), else DeepSpeed.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Source> {
        if path.join(MANIFEST_FILE).is_file() {
            return Ok(Source::Native(Box::new(NativeCheckpoint::open(path)?)));
        }
        if DcpCheckpoint::is_dcp(path) {
            let o = DcpOptions {
                vocab_size: opts.assume.vocab_size,
                ..Default::default()
            };
            return Ok(Source::Dcp(Box::new(DcpCheckpoint::open(path, &o)?)));
        }
        Ok(Source::DeepSpeed(Box::new(DsCheckpoint::open(
            path,
            opts.tag.as_deref(),
            &opts.assume,
        )?)))
    }

    /// Short name of the format (`deepspeed`, `native`, `dcp`).
    pub fn format(&self) -> &'static str {
        match self {
            Source::DeepSpeed(_) => "deepspeed",
            Source::Native(_) => "native",
            Source::Dcp(_) => "dcp",
        }
    }

    /// Every output tensor (full logical shape, `Layout::single()`), in a stable order.
    pub fn outputs(&self) -> Vec<TensorMeta> {
        match self {
            Source::DeepSpeed(c) => c.outputs(),
            Source::Native(c) => c
                .manifest()
                .tensors
                .iter()
                .map(|e| TensorMeta {
                    layout: Layout::single(),
                    padded_shape: None,
                    ..e.meta.clone()
                })
                .collect(),
            Source::Dcp(c) => c.outputs(),
        }
    }

    /// Full row-major bytes of one output tensor.
    pub fn read(&self, meta: &TensorMeta) -> Result<Vec<u8>> {
        Ok(self.bytes(meta)?.into_vec())
    }

    /// Full row-major bytes of one output tensor, borrowed from the input where it lies contiguously.
    pub fn bytes(&self, meta: &TensorMeta) -> Result<TensorBytes<'_>> {
        match self {
            Source::DeepSpeed(c) => c.bytes(meta),
            Source::Native(c) => Ok(TensorBytes::Runs(vec![c.tensor(&meta.name, &meta.role)?])),
            Source::Dcp(c) => c.bytes(meta),
        }
    }

    /// The topology the checkpoint was saved with.
    pub fn topology(&self) -> Topology {
        match self {
            Source::DeepSpeed(c) => c.topology(),
            Source::Native(c) => c.manifest().source.clone(),
            Source::Dcp(c) => c.topology(),
        }
    }

    /// Training state (steps, hyper-parameters, …).
    pub fn state(&self) -> BTreeMap<String, Value> {
        match self {
            Source::DeepSpeed(c) => c.state().clone(),
            Source::Native(c) => c.manifest().state.clone(),
            Source::Dcp(c) => c.state.clone(),
        }
    }
}

/// A rayon pool of `threads` workers (all cores when `None`) for work writing to `output`.
pub fn thread_pool(threads: Option<usize>, output: &Path) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| crate::StoreError::Format {
            path: output.to_path_buf(),
            why: format!("thread pool: {e}"),
        })
}
