//! What `DsCheckpoint::open` reads before deriving any layout: every rank's model and optimizer
//! files opened, the parallel degrees, the ZeRO stage and the metadata (AutoTP, AutoEP, folding,
//! native MoE), each checked as it is read.

use super::checkpoint::Assume;
use super::files::DsFiles;
use super::folding::{check_expert_files, Folding};
use super::native_moe::NativeMoe;
use super::optim_file::{positive_u32, OptimFile};
use crate::error::{Result, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::deepspeed::{autoep_layers_in, AutoEpLayer, UniversalCheckpointInfo};
use uc_schema::PatternSet;
use uc_torch::pickle::{Allowlist, Cursor, TensorRef};
use uc_torch::plain::to_json;
use uc_torch::PtFile;

/// A DeepSpeed checkpoint's opened files and what they say about its topology.
#[derive(Debug)]
pub(super) struct Inputs {
    pub(super) files: DsFiles,
    /// ZeRO stage (1 for the BF16 optimizer).
    pub(super) stage: u8,
    pub(super) tp: u32,
    pub(super) pp: u32,
    pub(super) dp: u32,
    pub(super) uci: Option<UniversalCheckpointInfo>,
    /// The parameter patterns AutoTP's `affine_map` describes (empty without one).
    pub(super) affine: PatternSet,
    /// AutoEP layers (`ds_autoep_layers`, or the legacy `autoep_layers`).
    pub(super) autoep: Vec<AutoEpLayer>,
    /// Native DeepSpeed MoE files (per-expert files without AutoEP metadata).
    pub(super) moe: Option<NativeMoe>,
    /// AutoEP folded with AutoTP: which model-parallel rank holds each EP rank's experts.
    pub(super) folding: Option<Folding>,
    /// Model states by model-parallel rank (dp rank 0's under ZeRO-3).
    pub(super) model: BTreeMap<u32, PtFile>,
    /// Optimizer states by (model-parallel rank, dp rank).
    pub(super) optim: BTreeMap<(u32, u32), PtFile>,
}

/// [`StoreError::Format`] naming `path`.
pub(super) fn fmt_err(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::Format {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Wraps a metadata error with the file it came from.
pub(super) fn schema_err(path: &Path) -> impl FnOnce(uc_schema::SchemaError) -> StoreError + '_ {
    move |source| StoreError::Schema {
        path: path.to_path_buf(),
        source,
    }
}

impl Inputs {
    /// Opens every file of the checkpoint at `path` (a folder with `latest`, or a tag folder)
    /// and reads its degrees, ZeRO stage and metadata.
    pub(super) fn open(path: &Path, tag: Option<&str>, assume: &Assume) -> Result<Inputs> {
        let files = DsFiles::discover(path, tag)?;
        let allow = Allowlist::deepspeed();
        let zero3 = !files.zero3_model.is_empty();
        let stage = if zero3 { 3 } else { 0 };
        let mut model = BTreeMap::new();
        if zero3 {
            for ((m, d), p) in &files.zero3_model {
                if *d == 0 {
                    model.insert(*m, PtFile::open(p, &allow)?);
                }
            }
        } else {
            for (m, p) in &files.model {
                model.insert(*m, PtFile::open(p, &allow)?);
            }
        }
        let first = model
            .values()
            .next()
            .ok_or_else(|| fmt_err(&files.dir, "no model states"))?;
        let root = first.cursor();
        let dims = root.get("checkpoint_parallel_dimensions");
        let degree = |key: &str| -> Result<Option<u32>> {
            match dims.as_ref().and_then(|d| d.get(key)) {
                Some(c) if !c.value().is_none() => Ok(Some(positive_u32(&c, "a degree ≥ 1")?)),
                _ => Ok(None),
            }
        };
        let mp = u32::try_from(model.len()).unwrap_or(u32::MAX);
        let tp = degree("tp_degree")?.unwrap_or(mp);
        let pp = degree("pp_degree")?.unwrap_or(1);
        if tp.checked_mul(pp) != Some(mp) {
            return Err(fmt_err(
                &files.dir,
                format!(
                    "{mp} model-parallel ranks found but the checkpoint says tp {tp} × pp {pp}"
                ),
            ));
        }
        for m in 0..mp {
            if !model.contains_key(&m) {
                let name = if zero3 {
                    format!("zero_pp_rank_0_mp_rank_{m:02}_model_states.pt")
                } else {
                    format!("mp_rank_{m:02}_model_states.pt")
                };
                return Err(StoreError::Io {
                    path: files.dir.join(name),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "model states of this rank are missing",
                    ),
                });
            }
        }
        let dp = files.optim.keys().filter(|(m, _)| *m == 0).count() as u32;
        let mut optim = BTreeMap::new();
        if dp > 0 {
            for m in 0..mp {
                for d in 0..dp {
                    let p = files
                        .optim
                        .get(&(m, d))
                        .cloned()
                        .unwrap_or_else(|| files.optim_name(m, d));
                    optim.insert((m, d), PtFile::open(&p, &allow)?);
                }
            }
        }
        let uci_json = root
            .get("universal_checkpoint_info")
            .map(|c| to_json(c.value()));
        let uci = match (&uci_json, assume.is_empty()) {
            (_, false) => Some(assume.to_uci().map_err(schema_err(&files.dir))?),
            (Some(j), true) => {
                Some(UniversalCheckpointInfo::parse(j).map_err(schema_err(first.path()))?)
            }
            (None, true) => None,
        };
        let affine = match uci.as_ref().and_then(|u| u.affine_map.as_ref()) {
            Some(map) => PatternSet::new(map.params.keys().cloned().collect())
                .map_err(schema_err(first.path()))?,
            None => PatternSet::empty(),
        };
        let autoep = autoep_layers_in(&to_json(root.value()))
            .map_err(schema_err(first.path()))?
            .unwrap_or_default();
        let moe = if autoep.is_empty() && !(files.experts.is_empty() && files.expp.is_empty()) {
            if mp != 1 {
                return Err(fmt_err(
                    &files.dir,
                    format!("native DeepSpeed MoE (per-expert files without AutoEP metadata) at tp {tp} × pp {pp}: only tp 1, pp 1 is supported"),
                ));
            }
            if !files.optim.is_empty() && !files.expp.is_empty() {
                return Err(fmt_err(
                    &files.dir,
                    "both ZeRO optimizer files and no-ZeRO `expp_rank_*` optimizer files",
                ));
            }
            Some(NativeMoe::open(&files, first)?)
        } else {
            None
        };
        // without ZeRO (native MoE's `expp_rank_*` files) there are no dp-rank files to count
        let dp = match (&moe, root.get("dp_world_size")) {
            (Some(m), Some(c)) if dp == 0 && m.unsharded() => positive_u32(&c, "a degree ≥ 1")?,
            _ => dp.max(1),
        };
        let folding = Folding::read(&model, tp)?;
        check_expert_files(&files, &autoep, folding.as_ref())?;
        let mut inputs = Inputs {
            files,
            stage,
            tp,
            pp,
            dp,
            uci,
            affine,
            autoep,
            moe,
            folding,
            model,
            optim,
        };
        inputs.stage = inputs.detect_stage()?;
        Ok(inputs)
    }

    /// The optimizer-states file of (model-parallel rank `m`, dp rank `d`).
    pub(super) fn optim(&self, m: u32, d: u32) -> Result<OptimFile<'_>> {
        let f = self
            .optim
            .get(&(m, d))
            .ok_or_else(|| fmt_err(&self.files.optim_name(m, d), "missing optimizer states"))?;
        OptimFile::new(f, self.stage == 3)
    }

    pub(super) fn detect_stage(&self) -> Result<u8> {
        if self.stage == 3 || self.optim.is_empty() {
            return Ok(self.stage.max(if self.optim.is_empty() { 0 } else { 1 }));
        }
        // the BF16 optimizer is ZeRO-1 and writes no zero_stage
        Ok(self.optim(0, 0)?.zero_stage()?.unwrap_or(1))
    }

    /// The partition tensor of (m, d) for group `g`: the fp32 master (`key` None) or a state.
    pub(super) fn partition(
        &self,
        m: u32,
        d: u32,
        g: usize,
        key: Option<&str>,
    ) -> Result<(&PtFile, Cursor<'_>)> {
        let f = &self.optim[&(m, d)];
        let o = OptimFile::new(f, self.stage == 3)?;
        let c = match key {
            None => o.fp32(g)?,
            Some(k) => o.state(g, k)?,
        };
        Ok((f, c))
    }

    pub(super) fn tensor_of<'a>(c: &Cursor<'a>) -> Result<&'a TensorRef> {
        c.value().as_tensor().ok_or_else(|| {
            fmt_err(
                c.path(),
                format!(
                    "`{}`: expected a tensor, found {}",
                    c.trail(),
                    c.value().type_name()
                ),
            )
        })
    }
}
