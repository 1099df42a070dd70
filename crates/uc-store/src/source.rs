//! Any checkpoint unicheck reads, behind one interface: the tensors a universal checkpoint of it
//! holds, each merged into full row-major bytes on demand.

use crate::deepspeed::{Assume, DsCheckpoint};
use crate::error::Result;
use crate::native::{NativeCheckpoint, MANIFEST_FILE};
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::{Layout, TensorMeta, Topology, Value};

/// An open input checkpoint.
#[derive(Debug)]
pub enum Source {
    DeepSpeed(Box<DsCheckpoint>),
    Native(Box<NativeCheckpoint>),
}

/// How to open an input.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// DeepSpeed tag (default: the one `latest` names).
    pub tag: Option<String>,
    /// TP metadata for DeepSpeed checkpoints saved without `universal_checkpoint_info`.
    pub assume: Assume,
}

impl Source {
    /// Opens `path`, recognising the format from its files: `uc.json` → native, else DeepSpeed.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Source> {
        if path.join(MANIFEST_FILE).is_file() {
            return Ok(Source::Native(Box::new(NativeCheckpoint::open(path)?)));
        }
        Ok(Source::DeepSpeed(Box::new(DsCheckpoint::open(
            path,
            opts.tag.as_deref(),
            &opts.assume,
        )?)))
    }

    /// Short name of the format (`deepspeed`, `native`).
    pub fn format(&self) -> &'static str {
        match self {
            Source::DeepSpeed(_) => "deepspeed",
            Source::Native(_) => "native",
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
        }
    }

    /// Full row-major bytes of one output tensor.
    pub fn read(&self, meta: &TensorMeta) -> Result<Vec<u8>> {
        match self {
            Source::DeepSpeed(c) => c.read(meta),
            Source::Native(c) => Ok(c.tensor(&meta.name, &meta.role)?.to_vec()),
        }
    }

    /// The topology the checkpoint was saved with.
    pub fn topology(&self) -> Topology {
        match self {
            Source::DeepSpeed(c) => c.topology(),
            Source::Native(c) => c.manifest().source.clone(),
        }
    }

    /// Training state (steps, hyper-parameters, …).
    pub fn state(&self) -> BTreeMap<String, Value> {
        match self {
            Source::DeepSpeed(c) => c.state.clone(),
            Source::Native(c) => c.manifest().state.clone(),
        }
    }
}
