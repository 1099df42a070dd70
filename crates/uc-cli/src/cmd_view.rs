//! `uc view`: one self-contained HTML file that draws a checkpoint's partitioning from its metadata.

use crate::CliError;
use clap::Args as ClapArgs;
use std::path::{Path, PathBuf};
use uc_schema::{Entry, Manifest};
use uc_store::source::{OpenOptions, Source};

#[derive(ClapArgs)]
pub struct Args {
    /// Checkpoint folder (DeepSpeed, DCP / Megatron, or native).
    checkpoint: PathBuf,
    /// HTML file to write (must not exist).
    #[arg(long, default_value = "uc-view.html")]
    out: PathBuf,
    /// The built viewer: wasm-bindgen `--target web` output with `uc_wasm_bg.wasm` and `uc_wasm.js`
    /// (`bash scripts/web-test.sh` builds it into `web/pkg`).
    #[arg(long, env = "UC_WEB_PKG", default_value = "web/pkg")]
    pkg: PathBuf,
    /// DeepSpeed tag to read.
    #[arg(long)]
    tag: Option<String>,
}

/// The checkpoint's tensors with their real source layouts (ZeRO partitions, TP, experts, …).
fn metadata(src: &Source) -> Manifest {
    let metas = match src {
        Source::DeepSpeed(c) => c
            .params
            .iter()
            .map(|p| p.meta.clone())
            .chain(c.extras.iter().map(|e| e.meta.clone()))
            .collect(),
        Source::Native(c) => c
            .manifest()
            .tensors
            .iter()
            .map(|e| e.meta.clone())
            .collect(),
        other => other.outputs(),
    };
    let mut m = Manifest::new(src.topology());
    m.tensors = metas
        .into_iter()
        .map(|meta| Entry {
            meta,
            storage: None,
        })
        .collect();
    m
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| {
        CliError::Failed(format!(
            "{}: {e}; the viewer is not built — run `bash scripts/web-test.sh` (builds web/pkg) or pass --pkg",
            path.display()
        ))
    })
}

pub fn run(a: Args) -> Result<(), CliError> {
    if a.out.exists() {
        return Err(uc_store::StoreError::OutputExists { path: a.out }.into());
    }
    let wasm = read(&a.pkg.join("uc_wasm_bg.wasm"))?;
    let glue = String::from_utf8_lossy(&read(&a.pkg.join("uc_wasm.js"))?).into_owned();
    let src = Source::open(
        &a.checkpoint,
        &OpenOptions {
            tag: a.tag,
            ..Default::default()
        },
    )?;
    let meta =
        serde_json::to_string(&metadata(&src)).map_err(|e| CliError::Failed(e.to_string()))?;
    let name = a
        .checkpoint
        .file_name()
        .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let html = uc_wasm::html::standalone(&wasm, &glue, &meta, &name);
    let tmp = a.out.with_extension("html.tmp");
    std::fs::write(&tmp, html).map_err(|e| CliError::Failed(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &a.out)
        .map_err(|e| CliError::Failed(format!("{}: {e}", a.out.display())))?;
    say!(
        "wrote {} ({} tensors)",
        a.out.display(),
        src.outputs().len()
    );
    Ok(())
}
