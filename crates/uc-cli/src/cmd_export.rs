//! `uc export`.

use crate::input::InputArgs;
use crate::progress::{human, timed};
use crate::remote::{upload_only, Remote};
use crate::workers::{label, unpublished, WorkerArgs};
use crate::CliError;
use clap::{Args as ClapArgs, ValueEnum};
use std::path::PathBuf;
use uc_schema::DType;
use uc_store::export::{export, parse_size, ExportOptions, Regex};
use uc_store::source::OpenOptions;
use uc_store::staging::Worker;

/// Type of the exported floating-point weights.
#[derive(Clone, Copy, ValueEnum)]
pub enum DTypeArg {
    /// float32: the fp32 master weights bit for bit.
    Fp32,
    /// bfloat16, rounded to nearest even (as torch's `.to(torch.bfloat16)`).
    Bf16,
    /// float16, rounded to nearest even (as torch's `.to(torch.float16)`).
    Fp16,
}

#[derive(ClapArgs)]
pub struct Args {
    /// Checkpoint: DeepSpeed folder (with `latest`) or tag folder, native unicheck checkpoint, …; or
    /// an `s3://` (`gs://`, `az://`, `file://`) URL of one.
    checkpoint: PathBuf,
    /// Output folder: must not exist, or be a folder without Hugging Face weights in it (e.g. one
    /// holding `config.json`); the files appear only when the export succeeded. Or a URL prefix
    /// (uploaded after the export, the shard index last).
    out_dir: PathBuf,
    /// Type of floating-point weights (integer buffers keep theirs).
    #[arg(long, value_enum, default_value = "fp32")]
    dtype: DTypeArg,
    /// Largest shard before a new one starts: bytes, or `5GB` (10^9), `500MB`, `2GiB` (2^30), …
    #[arg(long = "max-shard-size", value_name = "SIZE", default_value = "5GB", value_parser = size)]
    max_shard_size: u64,
    /// Export only the tensors whose checkpoint name matches this regex (unanchored).
    #[arg(long, value_name = "REGEX", value_parser = regex)]
    only: Option<Regex>,
    /// Rename: replace matches of the regex FROM by TO (`$1` for groups); repeatable, applied in order.
    #[arg(long, value_name = "FROM=TO", value_parser = rename)]
    rename: Vec<(Regex, String)>,
    #[command(flatten)]
    input_args: InputArgs,
    #[command(flatten)]
    workers: WorkerArgs,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

/// Parses `--max-shard-size`.
fn size(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("`{s}` is not a size (bytes, or e.g. 5GB, 500MB, 2GiB)"))
}

/// Parses a regex argument.
fn regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| e.to_string())
}

/// Parses `FROM=TO` (split at the first `=`).
fn rename(s: &str) -> Result<(Regex, String), String> {
    let (from, to) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not FROM=TO"))?;
    Ok((regex(from)?, to.to_string()))
}

pub fn run(mut a: Args) -> Result<(), CliError> {
    let w = a.workers.worker()?;
    let fresh = a.workers.fresh();
    let mut remote = Remote::resolve(&mut a.checkpoint, Some((&mut a.out_dir, w, fresh)))?;
    run_with(a, w, fresh, &mut remote).map_err(|e| remote.explain(e))
}

fn run_with(a: Args, w: Worker, fresh: bool, remote: &mut Remote) -> Result<(), CliError> {
    let opts = ExportOptions {
        dtype: match a.dtype {
            DTypeArg::Fp32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::Fp16 => DType::F16,
        },
        max_shard_size: a.max_shard_size,
        only: a.only,
        rename: a.rename,
        input: OpenOptions {
            label: remote.input_label(),
            ..a.input_args.open_options()
        },
        threads: a.input_args.threads,
        worker: w,
        fresh,
    };
    if remote.already() || remote.converted_earlier() {
        return upload_only(remote, a.json, w);
    }
    let converting = remote.converting()?;
    let (report, secs) = timed(&label("export", w), |progress| {
        export(&a.checkpoint, &a.out_dir, &opts, progress)
    });
    drop(converting);
    let report = report?;
    let upload = remote.upload(w, report.published || report.already)?;
    // Read ÷ the checkpoint bytes of the tensors this worker exported (a resumed run reads less).
    let exported = report.share_source_bytes.saturating_sub(
        report.share_source_bytes * report.share.reused_bytes / report.share.bytes.max(1),
    );
    let ratio = report.bytes_read.map(|r| r as f64 / exported.max(1) as f64);
    if a.json {
        let j = serde_json::json!({
            "output": remote.show(&report.output),
            "remote": remote.json(),
            "upload": upload.json(),
            "files": report.files,
            "tensors": report.tensors,
            "total_size": report.total_size,
            "source_bytes": report.source_bytes,
            "bytes_read": report.bytes_read,
            "read_ratio": ratio,
            "published": report.published,
            "rank": w.rank,
            "world_size": w.world,
            "share_tensors": report.share.units,
            "share_bytes": report.share.bytes,
            "reused_tensors": report.share.reused,
            "reused_bytes": report.share.reused_bytes,
            "missing_tensors": report.missing_tensors,
            "already": report.already,
            "seconds": secs,
        });
        say!("{j}");
    } else if report.already {
        say!(
            "{} already holds this export's files ({}); nothing to do",
            remote.show(&report.output),
            report.files.join(", ")
        );
    } else if !report.published {
        let (n, b, m) = (
            report.share.units,
            report.share.bytes,
            report.missing_tensors,
        );
        let shown = std::path::PathBuf::from(remote.show(&report.output));
        say!("{}", unpublished(w, n, b, m, secs, &shown, upload));
    } else {
        say!(
            "exported {} tensors ({}) into {} ({}) in {secs:.2} s",
            report.tensors,
            human(report.total_size),
            remote.show(&report.output),
            report.files.join(", ")
        );
        if let (Some(r), Some(x)) = (report.bytes_read, ratio) {
            say!(
                "read {} of tensor data: {x:.3} × the {} the exported weights take in the checkpoint",
                human(r),
                human(exported)
            );
        }
    }
    if let Some(line) = remote.summary().filter(|_| !a.json) {
        say!("{line}");
    }
    Ok(())
}
