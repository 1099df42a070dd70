//! `convert`: a checkpoint (DeepSpeed, DCP, Megatron `torch_dist` or native) → a universal one (native,
//! DeepSpeed's universal layout, or both in one folder), a PyTorch DCP or a Megatron `torch_dist`
//! checkpoint, streaming tensor by
//! tensor over a rayon pool, written atomically.

use crate::dcp::{write_dcp, write_torch_dist, DcpWriteOptions, TorchDistOptions};
use crate::error::{io_err, Result};
use crate::native::{NativeOptions, NativeWriter};
use crate::source::{thread_pool, OpenOptions, Source};
use crate::universal::Origin;
use crate::universal::UniversalDir;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which universal layout(s) to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `uc.json` + safetensors + `COMPLETE`.
    #[default]
    Native,
    /// DeepSpeed's `zero/<param>/<state>.pt` + model states, loadable with `load_universal`.
    DeepSpeed,
    /// Both in one folder.
    Both,
    /// A PyTorch Distributed Checkpoint (`.metadata` + `__<r>_0.distcp`) for `dcp.load`.
    Dcp,
    /// A Megatron-Core `torch_dist` checkpoint (DCP with stacked layers, `common.pt`,
    /// `metadata.json`) for `dist_checkpointing.load` at any TP size.
    TorchDist,
}

/// Options of [`convert`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    pub format: Format,
    /// How to read the input (tag, TP metadata).
    pub input: OpenOptions,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    pub native: NativeOptions,
    /// `.distcp` files of a DCP output (default: one per thread).
    pub dcp_files: Option<usize>,
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub output: PathBuf,
    pub tensors: usize,
    /// Bytes of tensor data produced (logical tensors, once per tensor).
    pub bytes: u64,
}

pub use crate::source::Progress;

/// Converts the checkpoint at `input` (any format [`Source`] reads) into `output`, which must not
/// exist. On any error nothing is left at `output`.
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: Progress,
) -> Result<ConvertReport> {
    let src = Source::open(input, &opts.input)?;
    let pool = thread_pool(opts.threads, output)?;
    if matches!(opts.format, Format::Dcp | Format::TorchDist) {
        return pool.install(|| convert_to_dcp(&src, output, opts, progress));
    }
    let outs = src.outputs();
    let origin = match opts.format {
        Format::DeepSpeed | Format::Both => Some(Origin::of(&src, &outs, input)?),
        Format::Native | Format::Dcp | Format::TorchDist => None,
    };
    let native = match opts.format {
        Format::Native | Format::Both => Some(NativeWriter::create(output, &outs, &opts.native)?),
        Format::DeepSpeed | Format::Dcp | Format::TorchDist => None,
    };
    let udir = match opts.format {
        Format::DeepSpeed => Some(UniversalDir::create(output)?),
        _ => None,
    };
    let ds_root: Option<PathBuf> = match (&native, &udir, opts.format) {
        (_, Some(u), _) => Some(u.root().to_path_buf()),
        (Some(n), _, Format::Both) => Some(n.dir().to_path_buf()),
        _ => None,
    };
    if let Some(root) = &ds_root {
        std::fs::create_dir_all(root.join("zero")).map_err(io_err(root.join("zero")))?;
    }
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let total = outs.len();
    let write_tensors = || {
        outs.par_iter().try_for_each(|meta| -> Result<()> {
            let data = src.bytes(meta)?;
            if let Some(w) = &native {
                w.write_tensor_with(&meta.name, &meta.role, |sink| {
                    data.runs().try_for_each(|r| sink.write_all(r))
                })?;
            }
            if let (Some(root), Some(o)) = (&ds_root, &origin) {
                o.write_tensor(&root.join("zero"), meta, &data)?;
            }
            let b = bytes.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(n as usize, total, b);
            Ok(())
        })
    };
    // The model states and optimizer_state.pt do not depend on the tensors: written alongside them.
    let write_common = || match (&ds_root, &origin) {
        (Some(root), Some(o)) => o.write_common(&src, &outs, root),
        _ => Ok(()),
    };
    let (tensors, common) = pool.install(|| rayon::join(write_tensors, write_common));
    tensors?;
    common?;
    let out = match (native, udir) {
        (Some(w), _) => {
            let mut state = src.state();
            if let Source::DeepSpeed(c) = &src {
                let aliases = crate::export::deepspeed_aliases(c, &outs)?;
                if !aliases.is_empty() {
                    let names = aliases.into_iter().map(uc_schema::Value::Str).collect();
                    state.insert(crate::export::ALIASES.into(), uc_schema::Value::List(names));
                }
            }
            w.finish(src.topology(), state)?;
            output.to_path_buf()
        }
        (None, Some(u)) => u.commit()?,
        (None, None) => output.to_path_buf(),
    };
    Ok(ConvertReport {
        output: out,
        tensors: total,
        bytes: bytes.into_inner(),
    })
}

/// Parameter names of each DeepSpeed optimizer group (DCP's `params` of a param group).
fn deepspeed_groups(src: &Source) -> Option<Vec<Vec<String>>> {
    let Source::DeepSpeed(c) = src else {
        return None;
    };
    let mut g: Vec<Vec<String>> = Vec::new();
    for p in c.params() {
        if g.len() <= p.group {
            g.resize(p.group + 1, Vec::new());
        }
        g[p.group].push(p.name.clone());
    }
    Some(g)
}

/// Writes `src` as a DCP checkpoint (param groups get `params` from DeepSpeed's groups when missing)
/// or as a Megatron `torch_dist` one (module extra states of a Megatron input carried over).
fn convert_to_dcp(
    src: &Source,
    output: &Path,
    opts: &ConvertOptions,
    progress: Progress,
) -> Result<ConvertReport> {
    let outs = src.outputs();
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let total = outs.len();
    let tick = |b: u64| {
        let b = bytes.fetch_add(b, Ordering::Relaxed) + b;
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        progress(n as usize, total, b);
    };
    let read = |m: &uc_schema::TensorMeta| src.bytes(m);
    let out = if opts.format == Format::TorchDist {
        let extra = match src {
            Source::Dcp(c) => c.extra_states()?,
            _ => Vec::new(),
        };
        let topts = TorchDistOptions {
            files: opts.dcp_files,
            extra,
        };
        write_torch_dist(output, &outs, &read, &src.state(), &topts, &tick)?
    } else {
        let wopts = DcpWriteOptions {
            files: opts.dcp_files,
            groups: deepspeed_groups(src),
        };
        write_dcp(output, &outs, &read, &src.state(), &wopts, &tick)?
    };
    Ok(ConvertReport {
        output: out,
        tensors: total,
        bytes: bytes.into_inner(),
    })
}
