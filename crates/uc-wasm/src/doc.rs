//! A loaded metadata document: its tensors with their source layouts and tensor-parallel roles.

use crate::cut::Cut;
use crate::dcp::Dcp;
use crate::error::{Result, ViewError};
use crate::topo::Topo;
use uc_schema::{DType, Role, TensorMeta};

/// Which kind of metadata a document was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Our `uc.json` manifest.
    Manifest,
    /// DeepSpeed `universal_checkpoint_info` plus per-TP-rank local shapes.
    DeepSpeed,
    /// The viewer's own model + topology description.
    Model,
    /// A `uc.json` manifest with a `dcp` section (PyTorch DCP / Megatron `torch_dist` chunks).
    Dcp,
}

impl Format {
    /// Name shown in the page: `uc.json`, `deepspeed`, `model`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Manifest => "uc.json",
            Format::DeepSpeed => "deepspeed",
            Format::Model => "model",
            Format::Dcp => "dcp",
        }
    }
}

/// One tensor of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub role: Role,
    pub dtype: DType,
    /// Logical shape.
    pub shape: Vec<u64>,
    pub frozen: bool,
    /// Its tensor-parallel role, used to lay it out on another topology.
    pub cut: Cut,
    /// Vocabulary padding: dim 0 is padded up to a multiple of `pad_multiple × tp`.
    pub pad_multiple: Option<u64>,
    /// The first number in its dotted name (the layer index), for pipeline stages.
    pub layer: Option<u64>,
    /// Its layout in the source checkpoint, or why that layout is invalid.
    pub source: Result<TensorMeta>,
    /// DCP chunks with their writer ranks (then the source is drawn from them), when known.
    pub dcp: Option<Dcp>,
}

impl Item {
    /// The source layout, or its error (cloned).
    pub fn source(&self) -> Result<&TensorMeta> {
        self.source.as_ref().map_err(Clone::clone)
    }
}

/// A parsed document.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub format: Format,
    /// The topology the source layouts belong to.
    pub source: Topo,
    pub items: Vec<Item>,
    /// Remarks on what the metadata does not say (shown under the tensor list).
    pub notes: Vec<String>,
}

impl Doc {
    /// Parses any supported metadata JSON (see [`crate::input`]).
    pub fn parse(text: &str) -> Result<Doc> {
        crate::input::parse(text)
    }

    /// The tensor at `index`.
    pub fn item(&self, index: usize) -> Result<&Item> {
        self.items.get(index).ok_or(ViewError::NoTensor {
            index,
            count: self.items.len(),
        })
    }
}

/// The layer index in a dotted name: its first all-digit component (`blocks.3.attn` → 3).
pub fn layer_of(name: &str) -> Option<u64> {
    name.split('.')
        .find(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_index_is_the_first_number() {
        assert_eq!(layer_of("blocks.12.mlp.experts.3.w1"), Some(12));
        assert_eq!(layer_of("embed.weight"), None);
        assert_eq!(layer_of("h1.w"), None);
    }
}
