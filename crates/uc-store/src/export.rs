//! `export`: the trained weights of any checkpoint [`Source`] reads, as a Hugging Face model folder.
//!
//! Output, as `transformers`' `save_pretrained(safe_serialization=True)` writes it: `model.safetensors`,
//! or when the weights exceed the shard size `model-00001-of-0000N.safetensors` … plus
//! `model.safetensors.index.json` (`{"metadata": {"total_parameters", "total_size"}, "weight_map"}`).
//! Each file is byte-for-byte what `safetensors.torch.save_file(…, metadata={"format": "pt"})` writes.
//!
//! - One tensor per parameter, full logical shape: its fp32 master if the checkpoint has one, else its
//!   working weights; frozen parameters and buffers too; optimizer moments never. For DeepSpeed, a
//!   parameter's alias under a second module name is left out (see `aliases`), as `zero_to_fp32` does. Named as the
//!   checkpoint names it ([`weight_name`]), then `--rename` regex replacements in order; `--only`
//!   (a regex matched against the name before renaming) exports a subset.
//! - Floating tensors become `dtype` (fp32: bit for bit; bf16/fp16: rounded to nearest even like
//!   torch's `.to()`); integer and bool buffers keep their type.
//! - Streams tensor by tensor over a rayon pool (memory: a few tensors), each written at its planned
//!   offset; reads only the byte ranges holding the weights (for ZeRO, the fp32 partitions inside the
//!   optimizer files, never the moments) and reports how many bytes that was.
//! - Atomic (see [`output`]): the output folder must not exist (then it appears whole at the end), or
//!   be a folder without Hugging Face weights in it (then the files appear at the end, index last).
//! - Staged (see [`crate::staging`]): cooperating workers each write a share, balanced by bytes; a
//!   killed run leaves its finished tensors, which a rerun verifies and keeps.

mod aliases;
mod output;
mod select;
mod shard;

pub use regex::Regex;
pub use select::weight_name;
pub use shard::{parse_size, shard_name, DEFAULT_MAX_SHARD_SIZE, INDEX_NAME, WEIGHTS_NAME};

use crate::atomic::safe_join;
use crate::deepspeed::DsCheckpoint;
use crate::durable::{start_writeback, WRITEBACK_MIN};
use crate::error::{io_err, Result, StoreError};
use crate::native::{hash_range, open_planned, write_all_at};
use crate::source::{thread_pool, OpenOptions, Progress, Source};
use crate::staging::{job_key, JobEnd, ShareReport, Staging, Units, Worker};
use select::Item;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use uc_schema::{DType, TensorMeta, Value};

/// Elements converted per chunk when the output dtype differs (bounds the extra memory).
const CONVERT_CHUNK: usize = 1 << 20;

/// Options of [`export`].
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Type of floating-point outputs (`F32`, `BF16`, `F16`).
    pub dtype: DType,
    /// Bytes of tensor data per shard before a new one starts (`huggingface_hub` semantics).
    pub max_shard_size: u64,
    /// Export only the tensors whose name (before renaming) this matches.
    pub only: Option<Regex>,
    /// `(pattern, replacement)` applied in order with `Regex::replace_all` (`$1` for groups).
    pub rename: Vec<(Regex, String)>,
    /// How to read the input (tag, TP metadata).
    pub input: OpenOptions,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// This process's place among cooperating workers.
    pub worker: Worker,
    /// Discard the work an earlier run of the same job left in its staging folder.
    pub fresh: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            dtype: DType::F32,
            max_shard_size: DEFAULT_MAX_SHARD_SIZE,
            only: None,
            rename: Vec::new(),
            input: OpenOptions::default(),
            threads: None,
            worker: Worker::default(),
            fresh: false,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub output: PathBuf,
    /// Files written, weights first (the index last when there is one).
    pub files: Vec<String>,
    pub tensors: usize,
    /// Bytes of tensor data written (the index's `total_size`).
    pub total_size: u64,
    /// Bytes of the exported tensors as the checkpoint stores them (fp32 masters: 4 per element).
    pub source_bytes: u64,
    /// Bytes of tensor data read from the input files (each byte once; file headers and pickles not
    /// included); `None` when the input format does not report its reads.
    pub bytes_read: Option<u64>,
    /// This worker's share, and what of it an earlier run had finished (verified, kept).
    pub share: ShareReport,
    /// Bytes the tensors of this worker's share take in the checkpoint.
    pub share_source_bytes: u64,
    /// True when this process published the output (false: another worker will, or has).
    pub published: bool,
    /// Tensors of other workers' shares not finished when this worker was the last one alive.
    pub missing_tensors: usize,
    /// True when another worker of this job (or an earlier run of it) had already published exactly
    /// these files; nothing was done.
    pub already: bool,
}

/// Exports the weights of the checkpoint at `input` (any format [`Source`] reads) into `output`.
pub fn export(
    input: &Path,
    output: &Path,
    opts: &ExportOptions,
    progress: Progress,
) -> Result<ExportReport> {
    let src = Source::open(input, &opts.input)?;
    export_source(&src, input, output, opts, progress)
}

/// Native state key listing the module tensors of a DeepSpeed input that are aliases of trained
/// parameters (no weights of their own), so an export from the native checkpoint leaves them out too.
pub const ALIASES: &str = "aliases";

/// The module tensors of `c` that are aliases of trained parameters (see `aliases`).
pub(crate) fn deepspeed_aliases(
    c: &DsCheckpoint,
    metas: &[TensorMeta],
) -> Result<BTreeSet<String>> {
    aliases::aliases(c, metas, &mut |_, _| {})
}

/// [`export`] from an open source (`input` names it in errors).
pub fn export_source(
    src: &Source,
    input: &Path,
    output: &Path,
    opts: &ExportOptions,
    progress: Progress,
) -> Result<ExportReport> {
    if !opts.dtype.is_float() {
        return Err(StoreError::Format {
            path: output.to_path_buf(),
            why: format!("cannot export weights as {}", opts.dtype.name()),
        });
    }
    let meter = Meter::default();
    let metas = src.outputs();
    let skip = match src {
        Source::DeepSpeed(c) => {
            let mut reads = Vec::new();
            let s = aliases::aliases(c, &metas, &mut |p, r| reads.push((p.to_path_buf(), r)))?;
            meter.add(reads);
            s
        }
        Source::Native(c) => match c.manifest().state.get(ALIASES) {
            Some(Value::List(names)) => names
                .iter()
                .filter_map(|n| match n {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Default::default(),
        },
        Source::Dcp(_) => Default::default(),
    };
    let items = select::select(&metas, src.format(), &skip, opts, input)?;
    let plan = shard::plan(&items, opts.max_shard_size, output)?;
    let index = (plan.shards.len() > 1)
        .then(|| shard::index_json(&items, &plan, output))
        .transpose()?;
    let pool = thread_pool(opts.threads, output)?;
    let names: Vec<String> = plan.shards.iter().map(|s| s.name.clone()).collect();
    let already = || ExportReport {
        output: output.to_path_buf(),
        files: names.clone(),
        tensors: items.len(),
        total_size: items.iter().map(|i| i.bytes).sum(),
        source_bytes: items.iter().map(|i| i.src.nbytes()).sum(),
        bytes_read: Some(0),
        share: ShareReport::default(),
        share_source_bytes: 0,
        published: false,
        missing_tensors: 0,
        already: true,
    };
    let rename: Vec<(&str, &String)> = opts.rename.iter().map(|(r, t)| (r.as_str(), t)).collect();
    let options = format!(
        "export {:?} {} {:?} {:?} {:?}",
        opts.dtype,
        opts.max_shard_size,
        opts.only.as_ref().map(|r| r.as_str()),
        rename,
        opts.input
    );
    let units = items
        .iter()
        .map(|i| format!("{} {:?} {}", i.name, i.dtype, i.bytes));
    let key = job_key(opts.input.key_path(input), output, &options, units);
    if export_done(output, &plan, index.as_deref()) {
        Staging::clear_dead(output, &key)?;
        return Ok(already());
    }
    let existing = output::existing_target(output)?;
    let planned = plan
        .shards
        .iter()
        .map(|s| s.len)
        .chain(index.as_ref().map(|j| j.len() as u64))
        .fold(0u64, u64::saturating_add);
    Staging::check_room(output, &key, planned)?;
    let Some(staging) = Staging::open(output, &key, opts.fresh, existing, opts.worker.world == 1)?
    else {
        return match export_done(output, &plan, index.as_deref()) {
            true => Ok(already()),
            false => Err(StoreError::OutputExists {
                path: output.to_path_buf(),
            }),
        };
    };
    let run = || -> Result<ExportReport> {
        let out_dir = staging.out();
        let mut files = Vec::with_capacity(plan.shards.len());
        for s in &plan.shards {
            let path = safe_join(&out_dir, &s.name)?;
            let f = open_planned(&path, s.len, &s.header)?;
            files.push((f, path));
        }
        let units = ExportUnits {
            src,
            items: &items,
            slots: &plan.slots,
            files: &files,
            meter: &meter,
        };
        let sizes: Vec<u64> = items.iter().map(|i| i.bytes).collect();
        let share = pool.install(|| staging.run_share(&sizes, opts.worker, &units, progress))?;
        let mut names = names;
        let mut report = ExportReport {
            output: output.to_path_buf(),
            files: names.clone(),
            tensors: items.len(),
            total_size: items.iter().map(|i| i.bytes).sum(),
            source_bytes: items.iter().map(|i| i.src.nbytes()).sum(),
            bytes_read: None,
            share,
            share_source_bytes: crate::staging::share(&sizes, opts.worker)
                .iter()
                .map(|&u| items[u].src.nbytes())
                .sum(),
            published: false,
            missing_tensors: 0,
            already: false,
        };
        match pool.install(|| staging.finish_job(items.len(), &units))? {
            JobEnd::Others => staging.keep(),
            JobEnd::Missing(m) => {
                staging.keep();
                report.missing_tensors = m
            }
            JobEnd::Complete => {
                drop(files);
                if let Some(json) = index {
                    let path = safe_join(&out_dir, INDEX_NAME)?;
                    std::fs::write(&path, &json).map_err(io_err(&path))?;
                    names.push(INDEX_NAME.to_string());
                }
                report.output = output::publish(&out_dir, output, existing, &names)?;
                report.files = names;
                staging.finish()?;
                report.published = true;
            }
        }
        report.bytes_read = meter.total();
        Ok(report)
    };
    staging.keep_if_disk_full(run())
}

/// Whether `output` already holds this export's files: every shard with its planned length and header,
/// and the index when there is one (what a worker that arrives after its job was published finds).
fn export_done(output: &Path, plan: &shard::ShardPlan, index: Option<&[u8]>) -> bool {
    use std::io::Read;
    let shard_ok = |s: &shard::Shard| {
        let Ok(mut f) = File::open(output.join(&s.name)) else {
            return false;
        };
        let mut head = vec![0u8; s.header.len()];
        f.metadata().is_ok_and(|m| m.len() == s.len)
            && f.read_exact(&mut head).is_ok()
            && head == s.header
    };
    let index_ok = match index {
        Some(j) => std::fs::read(output.join(INDEX_NAME)).is_ok_and(|b| b == j),
        None => true,
    };
    !plan.shards.is_empty() && plan.shards.iter().all(shard_ok) && index_ok
}

/// The tensors of an export as staged units.
struct ExportUnits<'a> {
    src: &'a Source,
    items: &'a [Item],
    /// (file, absolute offset) of each item.
    slots: &'a [(usize, u64)],
    files: &'a [(File, PathBuf)],
    meter: &'a Meter,
}

impl Units for ExportUnits<'_> {
    fn verify(&self, u: usize, digest: &blake3::Hash) -> Result<bool> {
        let (fi, at) = self.slots[u];
        let (f, path) = &self.files[fi];
        let d = hash_range(f, at, at + self.items[u].bytes).map_err(io_err(path))?;
        Ok(d == *digest)
    }

    fn write(&self, u: usize) -> Result<blake3::Hash> {
        let item = &self.items[u];
        let data = read(self.src, &item.src, self.meter)?;
        let (fi, at) = self.slots[u];
        let (f, path) = &self.files[fi];
        let d = write_tensor(f, path, at, item, &data)?;
        if item.bytes >= WRITEBACK_MIN {
            start_writeback(f, at, item.bytes);
        }
        Ok(d)
    }

    fn adopt(&self, _: usize, _: blake3::Hash) -> Result<()> {
        Ok(())
    }
}

/// Writes one tensor's bytes (`item.src.dtype`) at `at`, converted to `item.dtype` chunk by chunk;
/// returns the BLAKE3 of the bytes written.
fn write_tensor(f: &File, path: &Path, at: u64, item: &Item, data: &[u8]) -> Result<blake3::Hash> {
    let from = item.src.dtype;
    let bad = |why: String| StoreError::BadTensor {
        path: path.to_path_buf(),
        tensor: item.src.name.clone(),
        why,
    };
    let n = data.len() / from.size();
    if !data.len().is_multiple_of(from.size()) || n as u64 * item.dtype.size() as u64 != item.bytes
    {
        return Err(bad(format!(
            "{} bytes read for {} bytes of {}",
            data.len(),
            item.bytes,
            item.dtype.name()
        )));
    }
    if from == item.dtype {
        // Hashed and written a piece at a time, while the piece is in cache.
        let mut h = blake3::Hasher::new();
        let mut to = at;
        for piece in data.chunks(uc_torch::WRITE_PIECE) {
            h.update(piece);
            write_all_at(f, piece, to).map_err(io_err(path))?;
            to += piece.len() as u64;
        }
        return Ok(h.finalize());
    }
    let mut h = blake3::Hasher::new();
    let to = item.dtype.size();
    let mut buf = vec![0u8; CONVERT_CHUNK.min(n) * to];
    for (i, chunk) in data.chunks(CONVERT_CHUNK * from.size()).enumerate() {
        let dst = &mut buf[..chunk.len() / from.size() * to];
        uc_merge::convert::convert(chunk, from, dst, item.dtype).map_err(|e| bad(e.to_string()))?;
        h.update(dst);
        write_all_at(f, dst, at + (i * CONVERT_CHUNK * to) as u64).map_err(io_err(path))?;
    }
    Ok(h.finalize())
}

/// The byte ranges of input files that reads touched.
#[derive(Debug, Default)]
struct Meter {
    ranges: Mutex<BTreeMap<PathBuf, Vec<Range<u64>>>>,
    unknown: AtomicBool,
}

impl Meter {
    fn add(&self, reads: Vec<(PathBuf, Range<u64>)>) {
        let mut m = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        for (p, r) in reads {
            m.entry(p).or_default().push(r);
        }
    }

    /// Bytes read, each byte once; `None` if some read went unreported.
    fn total(self) -> Option<u64> {
        if self.unknown.into_inner() {
            return None;
        }
        let m = self.ranges.into_inner().unwrap_or_else(|p| p.into_inner());
        Some(m.into_values().map(union_len).sum())
    }
}

/// Total length of the union of ranges.
fn union_len(mut v: Vec<Range<u64>>) -> u64 {
    v.sort_unstable_by_key(|r| (r.start, r.end));
    let (mut total, mut reach) = (0u64, 0u64);
    for r in v {
        let start = r.start.max(reach);
        if r.end > start {
            total += r.end - start;
            reach = r.end;
        }
    }
    total
}

/// Reads one tensor's full bytes, telling `meter` which byte ranges of which files it read.
fn read(src: &Source, meta: &TensorMeta, meter: &Meter) -> Result<Vec<u8>> {
    if let Source::DeepSpeed(c) = src {
        let mut reads = Vec::new();
        let data = c.read_traced(meta, &mut |p, r| reads.push((p.to_path_buf(), r)))?;
        meter.add(reads);
        return Ok(data);
    }
    if let Source::Native(c) = src {
        if let Some(s) = c
            .entry(&meta.name, &meta.role)
            .and_then(|e| e.storage.as_ref())
        {
            meter.add(vec![(c.dir().join(&s.file), s.start..s.end)]);
        }
        return src.read(meta);
    }
    meter.unknown.store(true, Ordering::Relaxed);
    src.read(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_counts_each_byte_once() {
        assert_eq!(union_len(vec![0..10, 5..15, 20..25, 21..22, 30..30]), 20);
        assert_eq!(union_len(vec![]), 0);
    }
}
