//! `uc view`: one self-contained HTML file that draws a checkpoint's partitioning from its metadata.

use crate::CliError;
use clap::Args as ClapArgs;
use std::path::{Path, PathBuf};
use uc_schema::{Entry, Layout, Manifest, TensorMeta};
use uc_store::dcp::layout::{self, DcpLayout};
use uc_store::dcp::DcpCheckpoint;
use uc_store::source::{OpenOptions, Source};
use uc_wasm::dcp::{DcpSection, DcpTensor};

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

/// The checkpoint's tensors with their real source layouts (ZeRO partitions, TP, experts, …), as
/// the viewer's JSON; a DCP checkpoint adds its `dcp` section (chunks, writer ranks, inferred mesh).
fn metadata(src: &Source) -> Result<serde_json::Value, CliError> {
    let json = |e: serde_json::Error| CliError::Failed(e.to_string());
    if let Source::Dcp(c) = src {
        let (m, section) = dcp_metadata(c);
        let mut j = serde_json::to_value(&m).map_err(json)?;
        if let Some(o) = j.as_object_mut() {
            o.insert("dcp".into(), serde_json::to_value(&section).map_err(json)?);
        }
        return Ok(j);
    }
    serde_json::to_value(manifest(src.topology(), metas(src))).map_err(json)
}

/// A manifest of `metas` (no storage: the viewer needs layouts only).
fn manifest(topology: uc_schema::Topology, metas: Vec<TensorMeta>) -> Manifest {
    let mut m = Manifest::new(topology);
    m.tensors = metas
        .into_iter()
        .map(|meta| Entry {
            meta,
            storage: None,
        })
        .collect();
    m
}

/// Every output of a DCP checkpoint with the layout its chunks fit (single rank when none fits),
/// and the chunk facts of each tensor read from a tensor item.
fn dcp_metadata(c: &DcpCheckpoint) -> (Manifest, DcpSection) {
    let world = layout::world_size(c.metadata());
    let mut metas = Vec::new();
    let mut tensors = Vec::new();
    for mut meta in c.outputs() {
        if let Some(l) = layout::infer_with_world(c, &meta, world) {
            meta.layout = l.layout.clone().unwrap_or_else(Layout::single);
            tensors.push(facts(&meta, l));
        }
        metas.push(meta);
    }
    (manifest(c.topology(), metas), DcpSection { world, tensors })
}

/// The viewer's form of one tensor's inferred DCP facts.
fn facts(meta: &TensorMeta, l: DcpLayout) -> DcpTensor {
    DcpTensor {
        name: meta.name.clone(),
        role: meta.role.clone(),
        key: l.key,
        grid: l.grid.map(|g| g.parts()),
        mesh: l.mesh,
        placements: l.placements,
        chunks: l.chunks,
    }
}

/// The tensors of a DeepSpeed or native checkpoint with their source layouts.
fn metas(src: &Source) -> Vec<TensorMeta> {
    match src {
        Source::DeepSpeed(c) => c
            .params()
            .iter()
            .map(|p| p.meta.clone())
            .chain(c.extras().iter().map(|e| e.meta.clone()))
            .collect(),
        Source::Native(c) => c
            .manifest()
            .tensors
            .iter()
            .map(|e| e.meta.clone())
            .collect(),
        other => other.outputs(),
    }
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
    let meta = metadata(&src)?.to_string();
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
