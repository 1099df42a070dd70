//! `uc`: convert, inspect and verify distributed-training checkpoints.

/// `println!` that ignores a closed stdout (`uc inspect … | head` must not panic).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod cmd_convert;
mod cmd_demo;
mod cmd_export;
mod cmd_inspect;
mod cmd_verify;
mod cmd_view;
mod input;
mod progress;
mod remote;
mod workers;

use clap::{Parser, Subcommand};
use input::InputArgs;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: opening a checkpoint of 10⁵ tensors makes and frees tens of millions of small values.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// unicheck: universal checkpoints for distributed training.
///
/// Reads sharded checkpoints — DeepSpeed (ZeRO 1/2/3, bf16, AutoTP tensor parallel, pipeline, AutoEP
/// experts), PyTorch DCP (FSDP2, DTensor meshes), Megatron-Core torch_dist — and unicheck's native
/// ones; writes a topology-independent checkpoint (or DeepSpeed's, DCP's or Megatron's own layout,
/// or Hugging Face weights); inspects, verifies and draws them.
#[derive(Parser)]
#[command(name = "uc", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a checkpoint (DeepSpeed, PyTorch DCP, Megatron torch_dist, native) into another layout.
    ///
    /// INPUT is the folder DeepSpeed saved into (holding `latest`) or a tag folder such as
    /// `global_step100`, a DCP or Megatron `torch_dist` folder, or a native checkpoint. OUTPUT is a
    /// universal checkpoint (native, DeepSpeed's universal layout, or both), a DCP or a `torch_dist`
    /// checkpoint; it must not exist and appears only when the conversion succeeded.
    ///
    /// Either may be an object-storage URL (`s3://bucket/prefix`, `gs://`, `az://`, `file://`),
    /// configured from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …; `GOOGLE_SERVICE_ACCOUNT`, …;
    /// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, …; `UC_OBJECT_TIMEOUT`,
    /// `UC_OBJECT_RETRY_TIMEOUT` in seconds, `UC_CACHE_DIR` for the local stand-ins and work
    /// folder, `UC_CACHE_MAX` for the fetched bytes kept there: e.g. `64G`, default half its free
    /// space, and less once it runs short). A URL input is read by ranged GETs of the bytes needed;
    /// a URL output is uploaded with its completion markers last (by every worker, each its share,
    /// when there are several).
    Convert(cmd_convert::Args),
    /// Export the trained weights as a Hugging Face model folder (safetensors, sharded, with index).
    ///
    /// One tensor per parameter: the fp32 master weights (not the bf16/fp16 working copy), frozen
    /// parameters and buffers; never optimizer moments. Reads only the bytes holding them.
    Export(cmd_export::Args),
    /// Show a checkpoint's topology, tensors, layouts and sizes (DeepSpeed, DCP, Megatron or native).
    Inspect {
        /// Checkpoint folder (DeepSpeed, DCP, Megatron torch_dist or native), or its s3:// (gs://,
        /// az://, file://) URL.
        checkpoint: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a checkpoint: complete and with matching checksums (native), or every file present
    /// and every tensor mergeable (DeepSpeed, DCP, Megatron). Exit code 0 when it is sound, 1 when not.
    Verify {
        /// Checkpoint folder (DeepSpeed, DCP, Megatron torch_dist or native), or its s3:// (gs://,
        /// az://, file://) URL.
        checkpoint: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write one self-contained HTML file (works offline) that draws how every tensor of a
    /// checkpoint is cut over ranks: every diagram pre-rendered as SVG (no wasm needed), or with
    /// --pkg the interactive viewer (wasm inlined) that also shows what a new topology would read.
    View(cmd_view::Args),
    /// Train a small transformer with really sharded tensor-parallel ranks (Burn, CPU) at TP=2, save it
    /// sharded, convert it, resume at TP=1 and TP=4, and write the three loss curves.
    Demo(cmd_demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Convert(a) => cmd_convert::run(a),
        Cmd::Export(a) => cmd_export::run(a),
        Cmd::View(a) => cmd_view::run(a),
        Cmd::Demo(a) => cmd_demo::run(a),
        Cmd::Inspect {
            checkpoint,
            input,
            json,
        } => remote::reading(checkpoint, |p, _| {
            cmd_inspect::run(p, &input.open_options(), json)
        }),
        Cmd::Verify {
            checkpoint,
            input,
            json,
        } => remote::reading(checkpoint, |p, r| {
            cmd_verify::run(p, &input.open_options(), json, r)
        }),
    };
    for p in uc_store::atomic::take_removed() {
        eprintln!(
            "note: removed {}, left by a killed run (its writer is gone)",
            p.display()
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors of the CLI: the store's typed errors, plus a few of its own.
#[derive(Debug)]
pub enum CliError {
    Store(uc_store::StoreError),
    Object(uc_object::ObjectError),
    Failed(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Store(e) => write!(f, "{e}"),
            CliError::Object(e) => write!(f, "{e}"),
            CliError::Failed(s) => f.write_str(s),
        }
    }
}

impl CliError {
    /// A closure turning an `io::Error` at `path` into [`CliError::Failed`] naming the path.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
        move |e| CliError::Failed(format!("{}: {e}", path.display()))
    }
}

impl From<uc_object::ObjectError> for CliError {
    fn from(e: uc_object::ObjectError) -> Self {
        CliError::Object(e)
    }
}

impl From<uc_store::StoreError> for CliError {
    fn from(e: uc_store::StoreError) -> Self {
        CliError::Store(e)
    }
}

/// Whether a folder holds a native unicheck checkpoint (else it is read as DeepSpeed).
pub fn is_native(path: &std::path::Path) -> bool {
    path.join(uc_store::native::MANIFEST_FILE).is_file()
}
