//! `convert`: a checkpoint (DeepSpeed, DCP, Megatron `torch_dist` or native) → a universal one (native,
//! DeepSpeed's universal layout, or both in one folder), a PyTorch DCP or a Megatron `torch_dist`
//! checkpoint, streaming tensor by
//! tensor over a rayon pool, written atomically.

use crate::atomic::AtomicDir;
use crate::dcp::{write_dcp, write_torch_dist, DcpWriteOptions, TorchDistOptions};
use crate::error::{io_err, Result, StoreError};
use crate::native::{NativeCheckpoint, NativeOptions, NativeWriter};
use crate::source::{input_unit, thread_pool, OpenOptions, Source};
use crate::staging::{check_space, job_key, JobEnd, Staging, Units, Worker};
use crate::universal::Origin;
use crate::universal::UniversalDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use uc_schema::TensorMeta;

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
    /// This process's place among cooperating workers (native output only when more than one).
    pub worker: Worker,
    /// Discard the work an earlier run of the same job left in its staging folder.
    pub fresh: bool,
}

/// What a conversion (or one worker's share of it) did.
#[derive(Debug, Clone, Default)]
pub struct ConvertReport {
    pub output: PathBuf,
    /// Tensors in the whole output.
    pub tensors: usize,
    /// Bytes of tensor data this process produced (logical tensors, once per tensor).
    pub bytes: u64,
    /// Tensors of this worker's share, and their bytes.
    pub share_tensors: usize,
    pub share_bytes: u64,
    /// Tensor bytes this process took from the input.
    pub bytes_read: u64,
    /// Tensors (and bytes) of the share found finished by an earlier run and verified, not redone.
    pub reused_tensors: usize,
    pub reused_bytes: u64,
    /// True when this process published the output (false: another worker will, or has).
    pub published: bool,
    /// Tensors of other workers' shares not finished when this worker was the last one alive (a worker
    /// not started yet, or killed: running it again finishes the job).
    pub missing_tensors: usize,
    /// True when another worker of this job (or an earlier run of it) had already published the
    /// output, which holds exactly the tensors this conversion writes; nothing was done.
    pub already: bool,
}

pub use crate::source::Progress;

impl ConvertReport {
    /// The report of a conversion one process did whole and published.
    fn whole(output: PathBuf, tensors: usize, bytes: u64) -> ConvertReport {
        ConvertReport {
            output,
            tensors,
            bytes,
            share_tensors: tensors,
            share_bytes: bytes,
            bytes_read: bytes,
            published: true,
            ..Default::default()
        }
    }
}

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
    if opts.format == Format::Native {
        return pool.install(|| convert_staged(&src, input, output, opts, progress));
    }
    if opts.worker.world > 1 {
        return Err(StoreError::Format {
            path: output.to_path_buf(),
            why:
                "several workers (--world-size > 1) write --format native only; convert to native \
                  first, then from it to the other format"
                    .into(),
        });
    }
    let outs = src.outputs();
    let per_format = match opts.format {
        Format::Both => 2,
        _ => 1,
    };
    let tensor_bytes: u64 = outs.iter().map(|m| m.nbytes()).sum();
    // Tensor data plus a page for each file's header and pickle.
    let needed = tensor_bytes
        .saturating_mul(per_format)
        .saturating_add(outs.len() as u64 * 8192);
    check_space(&crate::staging::parent_of(output)?, needed)?;
    if matches!(opts.format, Format::Dcp | Format::TorchDist) {
        return pool.install(|| convert_to_dcp(&src, &outs, output, opts, progress));
    }
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
        crate::schedule::try_largest_first(&outs, TensorMeta::nbytes, |meta| -> Result<()> {
            let n = input_unit(|| {
                let data = src.bytes(meta)?;
                if let Some(w) = &native {
                    w.write_tensor_with(&meta.name, &meta.role, |sink| {
                        data.runs().try_for_each(|r| sink.write_all(r))
                    })?;
                }
                if let (Some(root), Some(o)) = (&ds_root, &origin) {
                    o.write_tensor(&root.join("zero"), meta, &data)?;
                }
                Ok(data.len() as u64)
            })?;
            let b = bytes.fetch_add(n, Ordering::Relaxed) + n;
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
            w.finish(src.topology(), native_state(&src, &outs)?)?;
            output.to_path_buf()
        }
        (None, Some(u)) => u.commit()?,
        (None, None) => output.to_path_buf(),
    };
    Ok(ConvertReport::whole(out, total, bytes.into_inner()))
}

/// A native conversion through a staging folder shared by every worker of the job and by reruns:
/// this worker writes its share (reusing verified parts of earlier runs), and the last worker alive
/// checks that every tensor is recorded and publishes.
fn convert_staged(
    src: &Source,
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: Progress,
) -> Result<ConvertReport> {
    let outs = src.outputs();
    let options = format!(
        "format {:?}\nnative {:?}\nopen {:?}",
        opts.format, opts.native, opts.input
    );
    let units = outs
        .iter()
        .map(|m| format!("{} {} {:?} {:?}", m.name, m.role.key(), m.dtype, m.shape));
    let key = job_key(opts.input.key_path(input), output, &options, units);
    // Checked before anything is created: tensor data plus a few hundred bytes a tensor for headers
    // and the manifest, less what an earlier run of this job already wrote.
    let planned = outs
        .iter()
        .map(|m| m.nbytes().saturating_add(512))
        .fold(0u64, u64::saturating_add);
    Staging::check_room(output, &key, planned)?;
    let already = || {
        Ok(ConvertReport {
            output: output.to_path_buf(),
            tensors: outs.len(),
            already: true,
            ..Default::default()
        })
    };
    if output.exists() && native_done(output, &outs) {
        Staging::clear_dead(output, &key)?;
        return already();
    }
    let Some(staging) = Staging::open(output, &key, opts.fresh, false, opts.worker.world == 1)?
    else {
        return match native_done(output, &outs) {
            true => already(),
            false => Err(StoreError::OutputExists {
                path: output.to_path_buf(),
            }),
        };
    };
    let run = || -> Result<ConvertReport> {
        let dir = AtomicDir::resumable(staging.out(), output.to_path_buf());
        let w = NativeWriter::resume(dir, &outs, &opts.native)?;
        let sizes: Vec<u64> = (0..outs.len()).map(|u| w.unit_len(u)).collect();
        let units = NativeUnits {
            src,
            outs: &outs,
            w: &w,
            read: AtomicU64::new(0),
        };
        let share = staging.run_share(&sizes, opts.worker, &units, progress)?;
        let mut report = ConvertReport {
            output: output.to_path_buf(),
            tensors: outs.len(),
            bytes: share.bytes - share.reused_bytes,
            share_tensors: share.units,
            share_bytes: share.bytes,
            bytes_read: units.read.load(Ordering::Relaxed),
            reused_tensors: share.reused,
            reused_bytes: share.reused_bytes,
            published: false,
            missing_tensors: 0,
            already: false,
        };
        match staging.finish_job(outs.len(), &units)? {
            JobEnd::Others => staging.keep(),
            JobEnd::Missing(m) => {
                staging.keep();
                report.missing_tensors = m
            }
            JobEnd::Complete => {
                w.finish(src.topology(), native_state(src, &outs)?)?;
                staging.finish()?;
                report.published = true;
            }
        }
        Ok(report)
    };
    staging.keep_if_disk_full(run())
}

/// The tensors of a native output as staged units.
struct NativeUnits<'a> {
    src: &'a Source,
    outs: &'a [TensorMeta],
    w: &'a NativeWriter,
    /// Tensor bytes taken from the input.
    read: AtomicU64,
}

impl Units for NativeUnits<'_> {
    fn verify(&self, u: usize, digest: &blake3::Hash) -> Result<bool> {
        self.w.verify_unit(u, digest)
    }

    fn write(&self, u: usize) -> Result<blake3::Hash> {
        let meta = &self.outs[u];
        let data = self.src.bytes(meta)?;
        self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.w.write_tensor_with(&meta.name, &meta.role, |sink| {
            data.runs().try_for_each(|r| sink.write_all(r))
        })
    }

    fn adopt(&self, u: usize, digest: blake3::Hash) -> Result<()> {
        self.w.adopt_unit(u, digest)
    }
}

/// Whether `output` is a finished native checkpoint of exactly `outs` (name, role, dtype, shape, in
/// order): what a worker that arrives after its job was published finds.
fn native_done(output: &Path, outs: &[TensorMeta]) -> bool {
    let Ok(c) = NativeCheckpoint::open(output) else {
        return false;
    };
    let t = &c.manifest().tensors;
    t.len() == outs.len()
        && t.iter().zip(outs).all(|(e, m)| {
            (&e.meta.name, &e.meta.role, e.meta.dtype, &e.meta.shape)
                == (&m.name, &m.role, m.dtype, &m.shape)
        })
}

/// The training state a native output records: the source's, plus DeepSpeed's module aliases.
fn native_state(src: &Source, outs: &[TensorMeta]) -> Result<BTreeMap<String, uc_schema::Value>> {
    let mut state = src.state();
    if let Source::DeepSpeed(c) = src {
        let aliases = crate::export::deepspeed_aliases(c, outs)?;
        if !aliases.is_empty() {
            let names = aliases.into_iter().map(uc_schema::Value::Str).collect();
            state.insert(crate::export::ALIASES.into(), uc_schema::Value::List(names));
        }
    }
    Ok(state)
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
    outs: &[TensorMeta],
    output: &Path,
    opts: &ConvertOptions,
    progress: Progress,
) -> Result<ConvertReport> {
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
        write_torch_dist(output, outs, &read, &src.state(), &topts, &tick)?
    } else {
        let wopts = DcpWriteOptions {
            files: opts.dcp_files,
            groups: deepspeed_groups(src),
        };
        write_dcp(output, outs, &read, &src.state(), &wopts, &tick)?
    };
    Ok(ConvertReport::whole(out, total, bytes.into_inner()))
}
