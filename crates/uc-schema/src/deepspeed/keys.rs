//! DeepSpeed's key names (`deepspeed/checkpoint/constants.py`), spelled exactly as DeepSpeed writes them.

/// Key of the info dict in `mp_rank_XX_model_states.pt` and on the model object.
pub const UNIVERSAL_CHECKPOINT_INFO: &str = "universal_checkpoint_info";
/// Version of the info dict (a float: 0.2, 0.3, 0.4 …).
pub const UNIVERSAL_CHECKPOINT_VERSION: &str = "universal_checkpoint_version";
/// The version this crate writes by default (DeepSpeed 0.19's `UNIVERSAL_CHECKPOINT_VERSION_VALUE`).
pub const UNIVERSAL_CHECKPOINT_VERSION_VALUE: f64 = 0.4;
/// First version that records `sub_param_shard_widths` (uneven fused sub-params).
pub const SHARD_WIDTHS_VERSION: f64 = 0.4;

pub const VOCABULARY_PARAMETER_PATTERNS: &str = "vocabulary_parameter_patterns";
pub const PIPELINE_REPLICATED_PARAMETER_PATTERNS: &str = "pipeline_replicated_parameter_patterns";
/// Note the singular `parameter_`: DeepSpeed's `PARAMETER_TO_AVERAGE_PATTERNS`.
pub const PARAMETER_TO_AVERAGE_PATTERNS: &str = "parameter_to_average_patterns";
pub const PARAMETER_WITH_ROW_PARALLELISM_PATTERNS: &str = "parameter_with_row_parallelism_patterns";
pub const TP_REPLICATED_PARAMETER_PATTERNS: &str = "tp_replicated_parameter_patterns";
pub const PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0: &str = "parameter_with_2_sub_params_cat_dim_0";
pub const PARAMETER_WITH_SUB_PARAMS: &str = "parameter_with_sub_params";
pub const SUB_PARAM_SHARD_WIDTHS: &str = "sub_param_shard_widths";
pub const ORIGINAL_VOCAB_SIZE: &str = "original_vocab_size";
pub const PADDED_VOCAB_SIZE: &str = "padded_vocab_size";
pub const AUTOTP_UNSUPPORTED_PARAMETER_PATTERNS: &str = "autotp_unsupported_parameter_patterns";
pub const AFFINE_MAP: &str = "affine_map";
pub const EXPERT_PARAMETER_PATTERNS: &str = "expert_parameter_patterns";

/// AutoEP layer list, in model_states and inside the info dict.
pub const AUTOEP_LAYERS: &str = "ds_autoep_layers";
/// Older name of [`AUTOEP_LAYERS`] in model_states.
pub const AUTOEP_LAYERS_LEGACY: &str = "autoep_layers";
/// `checkpoint_format` value of ZeRO-3 AutoEP checkpoints (experts live in the ZeRO-3 shards).
pub const AUTOEP_ZERO3_PARTITIONED: &str = "zero3_partitioned";
/// `checkpoint_format` value of ZeRO-1/2 AutoEP checkpoints (one file per expert).
pub const AUTOEP_PER_EXPERT_FILES: &str = "per_expert_files";

/// Per-parameter AutoTP metadata attribute on live torch Parameters.
pub const DS_AUTOTP_UC_META: &str = "ds_autotp_universal_checkpoint_meta";

/// Keys of a universal `zero/<param>/<state>.pt` dict.
pub const PARAM: &str = "param";
pub const CAT_DIM: &str = "cat_dim";
pub const VOCAB_TENSOR: &str = "vocab_tensor";
pub const PARAM_N_SUB_PARAMS: &str = "param_n_sub_params";
pub const SUB_PARAM_SHAPE: &str = "sub_param_shape";
pub const EP_IS_EXPERT_PARAM: &str = "is_expert_param";
pub const EP_NUM_EXPERTS: &str = "ep_num_experts";
