//! `uc view`: one self-contained HTML file that draws a checkpoint's partitioning from its metadata.
//!
//! By default every tensor's diagram is pre-rendered here as inline SVG by uc-wasm's drawing code
//! run natively (`uc_wasm::page`): the page needs no wasm, so `uc view` works from any directory
//! right after `cargo build` / `cargo install`, with nothing else built or installed. Building the
//! wasm viewer into the binary instead (a build script running a nested wasm32 cargo build and
//! wasm-bindgen) would make every `cargo build` slower and depend on the wasm32 target being
//! installed. `--pkg` (or `UC_WEB_PKG`) names a wasm-bindgen build of uc-wasm and writes the full
//! interactive viewer instead (any target topology, the reads of each rank).

use crate::remote::Remote;
use crate::CliError;
use clap::Args as ClapArgs;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use uc_schema::{Entry, Layout, Manifest, TensorMeta};
use uc_store::dcp::layout::{self, DcpLayout};
use uc_store::dcp::DcpCheckpoint;
use uc_store::source::{OpenOptions, Source};
use uc_wasm::dcp::{DcpSection, DcpTensor};

#[derive(ClapArgs)]
pub struct Args {
    /// Checkpoint folder (DeepSpeed, DCP / Megatron, or native), or its s3:// (gs://, az://,
    /// file://) URL (only metadata is fetched).
    checkpoint: PathBuf,
    /// HTML file to write (must not exist).
    #[arg(long, default_value = "uc-view.html")]
    out: PathBuf,
    /// Write the interactive viewer from this wasm-bindgen `--target web` build (`uc_wasm_bg.wasm`,
    /// `uc_wasm.js`; `bash scripts/web-test.sh` builds it into `web/pkg`). Without it the page holds
    /// every tensor's diagram pre-rendered as SVG and needs no wasm.
    #[arg(long, env = "UC_WEB_PKG")]
    pkg: Option<PathBuf>,
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
            "{}: {e}; the interactive viewer is not built there — run `bash scripts/web-test.sh` (builds web/pkg), or leave out --pkg / UC_WEB_PKG for the pre-rendered page",
            path.display()
        ))
    })
}

/// A wasm-bindgen build of the viewer: `uc_wasm_bg.wasm` and the `uc_wasm.js` glue.
struct Build {
    wasm: Vec<u8>,
    glue: String,
}

/// Reads the build in `pkg`.
fn build(pkg: &Path) -> Result<Build, CliError> {
    Ok(Build {
        wasm: read(&pkg.join("uc_wasm_bg.wasm"))?,
        glue: String::from_utf8_lossy(&read(&pkg.join("uc_wasm.js"))?).into_owned(),
    })
}

/// Writes the page to `out`: the interactive viewer with `build` inlined, or every diagram
/// pre-rendered as SVG. Errors name `src` (metadata the viewer refuses) or `file` (a failed write).
fn page(
    out: &mut impl Write,
    build: Option<&Build>,
    meta: &str,
    name: &str,
    src: &Path,
    file: &Path,
) -> Result<(), CliError> {
    match build {
        Some(b) => out
            .write_all(uc_wasm::html::standalone(&b.wasm, &b.glue, meta, name).as_bytes())
            .map_err(CliError::io(file)),
        None => {
            let viewer = uc_wasm::Viewer::new(meta)
                .map_err(|e| CliError::Failed(format!("{}: {e}", src.display())))?;
            uc_wasm::page::write(out, &viewer, name).map_err(CliError::io(file))
        }
    }
}

/// Writes the page to `tmp` (removed on failure), then renames it to `out`.
fn write_page(
    tmp: &Path,
    out: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let result = File::create(tmp)
        .map_err(CliError::io(tmp))
        .and_then(|f| {
            let mut w = BufWriter::new(f);
            fill(&mut w)?;
            w.flush().map_err(CliError::io(tmp))
        })
        .and_then(|()| std::fs::rename(tmp, out).map_err(CliError::io(out)));
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

pub fn run(mut a: Args) -> Result<(), CliError> {
    if a.out.exists() {
        return Err(uc_store::StoreError::OutputExists { path: a.out }.into());
    }
    let remote = Remote::resolve(&mut a.checkpoint, None)?;
    let shown = PathBuf::from(remote.show(&a.checkpoint));
    run_with(a, &shown).map_err(|e| remote.explain(e))
}

fn run_with(a: Args, shown: &Path) -> Result<(), CliError> {
    // A missing build is reported before the checkpoint is read.
    let build = a.pkg.as_deref().map(build).transpose()?;
    let src = Source::open(
        &a.checkpoint,
        &OpenOptions {
            tag: a.tag,
            ..Default::default()
        },
    )?;
    let meta = metadata(&src)?;
    let count = meta["tensors"].as_array().map_or(0, Vec::len);
    let name = shown
        .file_name()
        .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let tmp = a.out.with_extension("html.tmp");
    write_page(&tmp, &a.out, |w| {
        page(w, build.as_ref(), &meta.to_string(), &name, shown, &tmp)
    })?;
    let kind = match build {
        Some(_) => "interactive viewer",
        None => "diagrams pre-rendered as SVG",
    };
    say!("wrote {} ({count} tensors, {kind})", a.out.display());
    Ok(())
}
