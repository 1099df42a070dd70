//! The input flags every reading command shares (`--tag`, `--threads`, `--assume-*`).

use clap::Args as ClapArgs;
use uc_store::deepspeed::Assume;
use uc_store::source::OpenOptions;

/// How to read the input checkpoint.
#[derive(ClapArgs)]
pub struct InputArgs {
    /// DeepSpeed tag to read (default: the one `latest` names).
    #[arg(long)]
    pub tag: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Without `universal_checkpoint_info`: regex of row-parallel parameters (merged on dim 1).
    #[arg(long = "assume-row", value_name = "REGEX")]
    pub assume_row: Vec<String>,
    /// Without `universal_checkpoint_info`: regex of parameters every TP rank holds whole.
    #[arg(long = "assume-replicated", value_name = "REGEX")]
    pub assume_replicated: Vec<String>,
    /// Without `universal_checkpoint_info`: regex of vocabulary parameters (padding rows cut).
    #[arg(long = "assume-vocab", value_name = "REGEX")]
    pub assume_vocab: Vec<String>,
    /// Original vocabulary size for `--assume-vocab`; for Megatron input, keep only the first N rows
    /// of the padded vocabulary tensors (default: keep the padded rows).
    #[arg(long = "vocab-size", value_name = "N")]
    pub vocab_size: Option<u64>,
}

impl InputArgs {
    /// How to open the input: the tag and the user-supplied TP metadata.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            tag: self.tag.clone(),
            assume: Assume {
                row: self.assume_row.clone(),
                replicated: self.assume_replicated.clone(),
                vocab: self.assume_vocab.clone(),
                vocab_size: self.vocab_size,
            },
            label: None,
        }
    }
}
