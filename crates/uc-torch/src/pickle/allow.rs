//! Which pickle globals may appear: the DeepSpeed / torch.save set and the DCP `.metadata` set.

use std::collections::{HashMap, HashSet};
use uc_schema::DType;

/// Globals of a plain `torch.save` archive of tensors (also the archives inside `.distcp` files).
pub const TORCH_SAVE_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch", "FloatStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "HalfStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
];

/// What DeepSpeed checkpoints name beyond [`TORCH_SAVE_GLOBALS`] (README "Pickle details").
pub const DEEPSPEED_EXTRA_GLOBALS: &[(&str, &str)] = &[
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Tensor"),
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    // fp16 with dynamic loss scaling (DeepSpeed's default for fp16) pickles this scaler, whose
    // state names its dtype.
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("torch", "float32"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
    ("argparse", "Namespace"),
];

/// Globals of a DCP `.metadata` pickle (dataclasses, `torch.Size`, dtypes, layout, `PosixPath`).
pub const DCP_METADATA_GLOBALS: &[(&str, &str)] = &[
    ("torch.distributed.checkpoint.metadata", "Metadata"),
    (
        "torch.distributed.checkpoint.metadata",
        "TensorStorageMetadata",
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "BytesStorageMetadata",
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "ChunkStorageMetadata",
    ),
    ("torch.distributed.checkpoint.metadata", "TensorProperties"),
    (
        "torch.distributed.checkpoint.metadata",
        "_MEM_FORMAT_ENCODING",
    ),
    ("torch.distributed.checkpoint.metadata", "MetadataIndex"),
    ("torch.distributed.checkpoint.metadata", "StorageMeta"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch", "strided"),
    ("pathlib", "PosixPath"),
    ("torch", "float32"),
    ("torch", "bfloat16"),
    ("torch", "float16"),
    ("torch", "float64"),
    ("torch", "int64"),
    ("torch", "int32"),
    ("torch", "int16"),
    ("torch", "int8"),
    ("torch", "uint8"),
    ("torch", "bool"),
];

/// Extra `.metadata` globals Megatron-Core adds (`Metadata.all_local_plans`).
pub const MEGATRON_PLANNER_GLOBALS: &[(&str, &str)] = &[
    ("torch.distributed.checkpoint.planner", "SavePlan"),
    ("torch.distributed.checkpoint.planner", "WriteItem"),
    ("torch.distributed.checkpoint.planner", "WriteItemType"),
    ("torch.distributed.checkpoint.planner", "TensorWriteData"),
];

/// The set of `(module, name)` globals a pickle may name; anything else is refused.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    /// module → names in it.
    names: HashMap<String, HashSet<String>>,
}

impl Allowlist {
    /// An allowlist of exactly `pairs`.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Allowlist {
        Allowlist::default().with_all(pairs)
    }

    /// No globals at all (plain data pickles).
    pub fn empty() -> Allowlist {
        Allowlist::default()
    }

    /// DeepSpeed checkpoints, DeepSpeed universal files, Megatron `common.pt`, plain torch.save.
    pub fn deepspeed() -> Allowlist {
        Allowlist::from_pairs(TORCH_SAVE_GLOBALS).with_all(DEEPSPEED_EXTRA_GLOBALS)
    }

    /// torch.save archives inside `.distcp` files.
    pub fn dcp_archive() -> Allowlist {
        Allowlist::from_pairs(TORCH_SAVE_GLOBALS)
    }

    /// A plain DCP `.metadata` pickle.
    pub fn dcp_metadata() -> Allowlist {
        Allowlist::from_pairs(DCP_METADATA_GLOBALS)
    }

    /// A Megatron-Core `torch_dist` `.metadata` pickle (DCP set + planner classes).
    pub fn megatron_dcp_metadata() -> Allowlist {
        Allowlist::dcp_metadata().with_all(MEGATRON_PLANNER_GLOBALS)
    }

    /// Adds one global.
    pub fn with(mut self, module: &str, name: &str) -> Allowlist {
        self.names
            .entry(module.to_owned())
            .or_default()
            .insert(name.to_owned());
        self
    }

    /// Adds several globals.
    pub fn with_all(mut self, pairs: &[(&str, &str)]) -> Allowlist {
        for (m, n) in pairs {
            self = self.with(m, n);
        }
        self
    }

    /// True when `module.name` may appear.
    pub fn allows(&self, module: &str, name: &str) -> bool {
        self.names
            .get(module)
            .is_some_and(|names| names.contains(name))
    }
}

/// Element type of a `torch.<T>Storage` class (`torch.FloatStorage` → F32).
pub fn storage_dtype(module: &str, name: &str) -> Option<DType> {
    if module != "torch" {
        return None;
    }
    Some(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}
