//! AutoEP expert files and AutoEP folded with AutoTP: which model-parallel rank holds each EP rank's
//! experts. Without folding every expert lives on model-parallel rank 0; with folding
//! (`folding` in every file: EP and TP share ranks) EP rank e lives on the TP rank whose model states
//! say `folding.ep_rank == e`, and its per-expert files carry that rank as `mp_rank_<tt>`.

use super::files::DsFiles;
use crate::error::{Result, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::deepspeed::AutoEpLayer;
use uc_torch::pickle::{Allowlist, Cursor};
use uc_torch::PtFile;

/// The folding table: EP rank → the model-parallel (TP) rank holding its experts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Folding {
    mp_of_ep: Vec<u32>,
}

/// The non-negative int under `key` of a `folding` dict, or [`StoreError::BadValue`] / a missing key.
fn rank_at(folding: &Cursor, key: &str) -> Result<u32> {
    let c = folding.key(key)?;
    c.value()
        .as_int()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| StoreError::BadValue {
            path: c.path().to_path_buf(),
            key: c.trail().to_string(),
            value: format!("{:?}", c.value()),
            expected: "a rank or size in 0..2³²",
        })
}

/// [`StoreError::BadValue`]: `key` of the `folding` dict at `c` is `found`, not what `expected` says.
fn mismatch(c: &Cursor, key: &str, found: u32, expected: &'static str) -> StoreError {
    StoreError::BadValue {
        path: c.path().to_path_buf(),
        key: format!("{}.{key}", c.trail()),
        value: found.to_string(),
        expected,
    }
}

impl Folding {
    /// Reads `folding` from every model-states file (`model`, by model-parallel rank; `tp` ranks):
    /// `None` when no file has one. Each file's `tp_rank` must be its own mp rank, `tp_size` and
    /// `ep_size` the checkpoint's, and the EP ranks a permutation of 0..ep, else an error naming the file.
    pub fn read(model: &BTreeMap<u32, PtFile>, tp: u32) -> Result<Option<Folding>> {
        let mut table: BTreeMap<u32, (u32, &Path)> = BTreeMap::new();
        let mut ep_size = None;
        for (&m, f) in model {
            let Some(c) = f.cursor().get("folding").filter(|c| !c.is_none()) else {
                continue;
            };
            let (t, ts) = (rank_at(&c, "tp_rank")?, rank_at(&c, "tp_size")?);
            let (e, es) = (rank_at(&c, "ep_rank")?, rank_at(&c, "ep_size")?);
            if t != m {
                return Err(mismatch(
                    &c,
                    "tp_rank",
                    t,
                    "the model-parallel rank in the file name",
                ));
            }
            if ts != tp {
                return Err(mismatch(
                    &c,
                    "tp_size",
                    ts,
                    "the checkpoint's tensor-parallel degree",
                ));
            }
            if *ep_size.get_or_insert(es) != es || e >= es {
                return Err(mismatch(
                    &c,
                    "ep_rank",
                    e,
                    "an EP rank below the same ep_size in every file",
                ));
            }
            if table.insert(e, (m, f.path())).is_some() {
                return Err(mismatch(
                    &c,
                    "ep_rank",
                    e,
                    "an EP rank no other model-parallel rank has",
                ));
            }
        }
        let Some(ep) = ep_size else {
            return Ok(None);
        };
        if table.len() as u64 != u64::from(ep) || table.len() != model.len() {
            let (_, f) = model.iter().next().ok_or_else(|| StoreError::Format {
                path: Path::new(".").to_path_buf(),
                why: "no model states".into(),
            })?;
            return Err(StoreError::Format {
                path: f.path().to_path_buf(),
                why: format!(
                    "folding: {} model-parallel ranks give EP ranks {:?} of ep_size {ep}; every \
                     model-parallel rank must hold exactly one EP rank",
                    model.len(),
                    table.keys().collect::<Vec<_>>()
                ),
            });
        }
        Ok(Some(Folding {
            mp_of_ep: table.values().map(|(m, _)| *m).collect(),
        }))
    }

    /// The model-parallel rank holding EP rank `e`'s experts.
    pub fn mp_of(&self, e: u32) -> Option<u32> {
        self.mp_of_ep.get(e as usize).copied()
    }

    /// Number of EP ranks.
    pub fn ep(&self) -> u32 {
        self.mp_of_ep.len() as u32
    }
}

/// The EP rank owning global expert `e` of `layer`: its `expert_placement`, else blocks of
/// `num_local_experts`.
fn owner(layer: &AutoEpLayer, e: u64) -> Option<u32> {
    match &layer.expert_placement {
        Some(p) => p
            .ranks
            .iter()
            .find(|r| r.experts.contains(&e))
            .map(|r| r.rank),
        None => (layer.num_local_experts > 0)
            .then(|| e / layer.num_local_experts)
            .and_then(|r| u32::try_from(r).ok()),
    }
}

/// Checks AutoEP per-expert files (`checkpoint_format` `per_expert_files`): exactly one file per
/// (layer, expert), on the model-parallel rank of the EP rank owning it (0 without folding); with
/// folding each file's own `folding` must name that TP and EP rank. A file on the wrong rank, or a
/// file whose table disagrees, is an error naming it; a missing file is `Io` NotFound naming it.
pub(crate) fn check_expert_files(
    files: &DsFiles,
    layers: &[AutoEpLayer],
    folding: Option<&Folding>,
) -> Result<()> {
    let allow = Allowlist::deepspeed();
    if !layers.is_empty() {
        let ids: Vec<u64> = layers.iter().map(|l| l.moe_layer_id).collect();
        if let Some((&(l, _, _), p)) = files
            .experts
            .iter()
            .find(|((l, _, _), _)| !ids.contains(&u64::from(*l)))
        {
            return Err(StoreError::Format {
                path: p.clone(),
                why: format!("no AutoEP layer has moe_layer_id {l} (the layers are {ids:?})"),
            });
        }
    }
    for l in layers {
        if l.checkpoint_format.as_deref() != Some("per_expert_files") {
            continue;
        }
        let lid = u32::try_from(l.moe_layer_id).unwrap_or(u32::MAX);
        let mp_of = |e: u64| -> Option<(u32, u32)> {
            let r = owner(l, e)?;
            Some((r, folding.map_or(Some(0), |f| f.mp_of(r))?))
        };
        for (&(fl, fe, fm), p) in files.experts.range((lid, 0, 0)..=(lid, u32::MAX, u32::MAX)) {
            debug_assert_eq!(fl, lid);
            let want = (u64::from(fe) < l.num_experts)
                .then(|| mp_of(u64::from(fe)))
                .flatten();
            match want {
                Some((_, m)) if m == fm => {}
                Some((r, m)) => {
                    return Err(StoreError::Format {
                        path: p.clone(),
                        why: format!(
                            "expert {fe} of AutoEP layer {lid} belongs to EP rank {r}, which model-parallel \
                             rank {m} holds{}, not mp_rank_{fm:02}",
                            if folding.is_some() { " (folding table)" } else { "" }
                        ),
                    })
                }
                None => {
                    return Err(StoreError::Format {
                        path: p.clone(),
                        why: format!(
                            "AutoEP layer {lid} has {} experts and no EP rank owning expert {fe}",
                            l.num_experts
                        ),
                    })
                }
            }
        }
        for e in 0..l.num_experts {
            let (r, m) = mp_of(e).ok_or_else(|| StoreError::Format {
                path: files.dir.clone(),
                why: format!("AutoEP layer {lid}: no EP rank owns expert {e}"),
            })?;
            let name = format!("layer_{lid}_expert_{e}_mp_rank_{m:02}_model_states.pt");
            let Some(p) = files.experts.get(&(lid, e as u32, m)) else {
                return Err(StoreError::Io {
                    path: files.dir.join(name),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "expert file missing",
                    ),
                });
            };
            if folding.is_some() {
                let f = PtFile::open(p, &allow)?;
                if let Some(c) = f.cursor().get("folding").filter(|c| !c.is_none()) {
                    let (t, er) = (rank_at(&c, "tp_rank")?, rank_at(&c, "ep_rank")?);
                    if t != m {
                        return Err(mismatch(
                            &c,
                            "tp_rank",
                            t,
                            "the model-parallel rank in the file name",
                        ));
                    }
                    if er != r {
                        return Err(mismatch(
                            &c,
                            "ep_rank",
                            er,
                            "the EP rank owning this expert",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
