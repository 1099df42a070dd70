//! `uc convert`.

use crate::input::InputArgs;
use crate::progress::{human, timed};
use crate::remote::{upload_only, Remote};
use crate::workers::{label, unpublished, WorkerArgs};
use crate::CliError;
use clap::{Args as ClapArgs, ValueEnum};
use std::path::PathBuf;
use uc_store::convert::{convert, ConvertOptions, Format};
use uc_store::source::OpenOptions;
use uc_store::staging::Worker;

/// Output layout.
#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// unicheck's own: `uc.json` + safetensors files + `COMPLETE`.
    Native,
    /// DeepSpeed's universal layout (`zero/<param>/fp32.pt`, …) for `load_universal`.
    Deepspeed,
    /// Both, in one folder.
    Both,
    /// A PyTorch Distributed Checkpoint (`.metadata` + `__<r>_0.distcp`) that `dcp.load` reads.
    Dcp,
    /// A Megatron-Core `torch_dist` checkpoint (layers stacked per key, `common.pt`,
    /// `metadata.json`) that `dist_checkpointing.load` reads at any TP size.
    #[value(name = "torch_dist", alias = "torch-dist")]
    TorchDist,
}

#[derive(ClapArgs)]
pub struct Args {
    /// Checkpoint folder: DeepSpeed (with `latest`, or a tag folder), PyTorch DCP (`.metadata`),
    /// Megatron `torch_dist` (`.metadata` + `metadata.json`) or native; or the same under an
    /// `s3://bucket/prefix` (`gs://`, `az://`, `file://`) URL, read by ranged GETs.
    input: PathBuf,
    /// Output folder (must not exist), or a URL prefix holding no finished checkpoint (written
    /// locally first, then uploaded with its completion markers last).
    output: PathBuf,
    /// Output layout.
    #[arg(long, value_enum, default_value = "native")]
    format: FormatArg,
    #[command(flatten)]
    input_args: InputArgs,
    /// `--format dcp|torch_dist`: number of `.distcp` files (default: one per thread).
    #[arg(long = "dcp-files", value_name = "N")]
    dcp_files: Option<usize>,
    #[command(flatten)]
    workers: WorkerArgs,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(mut a: Args) -> Result<(), CliError> {
    let w = a.workers.worker()?;
    let fresh = a.workers.fresh();
    let mut remote = Remote::resolve(&mut a.input, Some((&mut a.output, w, fresh)))?;
    run_with(a, w, fresh, &mut remote).map_err(|e| remote.explain(e))
}

fn run_with(a: Args, w: Worker, fresh: bool, remote: &mut Remote) -> Result<(), CliError> {
    let opts = ConvertOptions {
        format: match a.format {
            FormatArg::Native => Format::Native,
            FormatArg::Deepspeed => Format::DeepSpeed,
            FormatArg::Both => Format::Both,
            FormatArg::Dcp => Format::Dcp,
            FormatArg::TorchDist => Format::TorchDist,
        },
        input: OpenOptions {
            label: remote.input_label(),
            ..a.input_args.open_options()
        },
        threads: a.input_args.threads,
        native: Default::default(),
        dcp_files: a.dcp_files,
        worker: w,
        fresh,
    };
    if remote.already() || remote.converted_earlier() {
        return upload_only(remote, a.json, w);
    }
    let what = label("convert", w);
    let converting = remote.converting()?;
    let (report, secs) = timed(&what, |progress| {
        convert(&a.input, &a.output, &opts, progress)
    });
    drop(converting);
    let report = report?;
    let upload = remote.upload(w, report.published || report.already)?;
    if a.json {
        let j = serde_json::json!({
            "output": remote.show(&report.output),
            "remote": remote.json(),
            "upload": upload.json(),
            "published": report.published,
            "tensors": report.tensors,
            "bytes": report.bytes,
            "rank": w.rank,
            "world_size": w.world,
            "share_tensors": report.share_tensors,
            "share_bytes": report.share_bytes,
            "bytes_read": report.bytes_read,
            "bytes_written": report.bytes,
            "reused_tensors": report.reused_tensors,
            "reused_bytes": report.reused_bytes,
            "missing_tensors": report.missing_tensors,
            "already": report.already,
            "seconds": secs,
        });
        say!("{j}");
        return Ok(());
    }
    if report.reused_tensors > 0 {
        say!(
            "resumed: {} tensors ({}) of an earlier run verified and kept",
            report.reused_tensors,
            human(report.reused_bytes)
        );
    }
    if report.already {
        say!(
            "{} already holds this conversion's {} tensors (published by another worker or an earlier \
             run); nothing to do",
            remote.show(&report.output),
            report.tensors
        );
    } else if report.published {
        say!(
            "converted {} tensors ({}) into {} in {secs:.2} s",
            report.tensors,
            human(report.bytes),
            remote.show(&report.output)
        );
    } else {
        let (n, b, m) = (
            report.share_tensors,
            report.share_bytes,
            report.missing_tensors,
        );
        let shown = std::path::PathBuf::from(remote.show(&report.output));
        say!("{}", unpublished(w, n, b, m, secs, &shown, upload));
    }
    if let Some(line) = remote.summary() {
        say!("{line}");
    }
    Ok(())
}
