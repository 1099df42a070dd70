//! Lays a document's tensors out on a topology: TP / EP cuts, then ZeRO or DP replication inside.
//!
//! ZeRO-1/2 flattens, per pipeline stage, per role, and per TP (or EP) rank, every trainable tensor in
//! document order into one group, padded to a multiple of `2·dp` (DeepSpeed's NCCL alignment) and
//! split evenly over dp. ZeRO-3 splits each tensor on its own (`ceil(numel/dp)` per rank). Expert
//! tensors use the expert-data-parallel size `dp/ep`. Ranks number `dp_rank·tp + tp_rank`
//! (`edp_rank·ep + ep_rank` for experts) within a pipeline stage.

use crate::cut::Cut;
use crate::doc::Item;
use crate::error::Result;
use crate::topo::Topo;
use std::collections::BTreeMap;
use uc_schema::{local_shape, ExpertStorage, Layout, Split, SubParam, TensorMeta};

/// Pipeline stage of every item: layers spread evenly; unnumbered tensors before the first layer go
/// to stage 0, the rest to the last stage.
pub fn stages(items: &[Item], pp: u32) -> Vec<u32> {
    let pp = pp.max(1) as u64;
    let layers = items
        .iter()
        .filter_map(|i| i.layer)
        .max()
        .map_or(1, |m| m + 1);
    let first = items.iter().position(|i| i.layer.is_some());
    items
        .iter()
        .enumerate()
        .map(|(idx, it)| match it.layer {
            Some(l) => (l.saturating_mul(pp) / layers) as u32,
            None if first.is_none_or(|f| idx < f) => 0,
            None => (pp - 1) as u32,
        })
        .collect()
}

/// The TP / EP layout of an item on `topo`, with its stored (padded) shape.
fn outer(it: &Item, topo: &Topo) -> TensorMeta {
    let mut stored = it.shape.clone();
    if let (Some(m), Some(rows)) = (it.pad_multiple, stored.first_mut()) {
        let unit = m.max(1).saturating_mul(topo.tp.max(1) as u64);
        *rows = rows.div_ceil(unit).saturating_mul(unit);
    }
    let layout = match &it.cut {
        Cut::Replicated => Layout::Replicated { ranks: topo.tp },
        Cut::Shard { dim, grain } => Layout::Shard {
            dim: *dim,
            parts: topo.tp,
            split: Split::Grain { grain: *grain },
        },
        Cut::Fused { dim, subs } => Layout::Fused {
            dim: *dim,
            parts: topo.tp,
            subs: subs
                .iter()
                .map(|s| SubParam {
                    size: s.size,
                    split: Split::Grain { grain: s.grain },
                })
                .collect(),
        },
        Cut::Experts { num_experts, .. } => Layout::Experts {
            num_experts: *num_experts,
            ep: topo.ep,
            storage: ExpertStorage::Stacked,
        },
    };
    let mut meta =
        TensorMeta::new(&it.name, it.dtype, it.shape.clone(), it.role.clone()).with_layout(layout);
    meta.frozen = it.frozen;
    if stored != it.shape {
        meta = meta.with_padded(stored);
    }
    meta
}

/// Size of the data-parallel group that shares one TP (or EP) rank's tensor.
fn inner_size(it: &Item, topo: &Topo) -> u32 {
    match it.cut {
        Cut::Experts { .. } => topo.dp / topo.ep.max(1),
        _ => topo.dp,
    }
}

/// Elements of outer rank `o`'s local tensor.
fn local_numel(meta: &TensorMeta, o: u32) -> u64 {
    local_shape(meta.stored_shape(), &meta.layout, o)
        .iter()
        .fold(1u64, |a, &d| a.saturating_mul(d))
}

/// A ZeRO group: pipeline stage, expert or not, role key.
type GroupKey = (u32, bool, String);

/// Every item laid out on `topo` (validated; an item that does not fit gets its typed error).
pub fn layouts(items: &[Item], topo: &Topo) -> Result<Vec<Result<TensorMeta>>> {
    topo.validate()?;
    let stage = stages(items, topo.pp);
    let outers: Vec<Result<TensorMeta>> = items
        .iter()
        .map(|it| {
            let m = outer(it, topo);
            m.validate()?;
            Ok(m)
        })
        .collect();
    // Offsets of each tensor in its ZeRO group, per outer rank, and the groups' totals.
    let mut running: BTreeMap<GroupKey, Vec<u64>> = BTreeMap::new();
    let mut offsets: Vec<Option<(Vec<u64>, GroupKey)>> = vec![None; items.len()];
    for (i, (it, m)) in items.iter().zip(&outers).enumerate() {
        let Ok(m) = m else { continue };
        let n = inner_size(it, topo);
        if topo.zero_stage == 0 || it.frozen || n <= 1 {
            continue;
        }
        let key = (
            stage[i],
            matches!(it.cut, Cut::Experts { .. }),
            it.role.key().to_string(),
        );
        let ranks = m.layout.ranks();
        let run = running
            .entry(key.clone())
            .or_insert_with(|| vec![0; ranks as usize]);
        let offs: Vec<u64> = run.clone();
        for (o, r) in run.iter_mut().enumerate() {
            let numel = local_numel(m, o as u32);
            *r = r.saturating_add(if topo.zero_stage == 3 {
                numel.div_ceil(n as u64)
            } else {
                numel
            });
        }
        offsets[i] = Some((offs, key));
    }
    Ok(items
        .iter()
        .zip(outers)
        .zip(offsets)
        .map(|((it, m), off)| {
            let mut m = m?;
            let n = inner_size(it, topo);
            if n <= 1 {
                return Ok(m);
            }
            let ranks = m.layout.ranks();
            let inner: Vec<Layout> = match off {
                None => vec![Layout::Replicated { ranks: n }; ranks as usize],
                Some((offs, key)) => offs
                    .iter()
                    .enumerate()
                    .map(|(o, &offset)| match topo.zero_stage {
                        3 => Layout::Zero3 { dp: n, offset },
                        _ => Layout::ZeroFlat {
                            dp: n,
                            offset,
                            group_numel: running[&key][o],
                            alignment: 2 * n as u64,
                        },
                    })
                    .collect(),
            };
            m.layout = Layout::Nested {
                outer: Box::new(m.layout),
                inner,
            };
            m.validate()?;
            Ok(m)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cut::Sub;
    use uc_schema::{DType, Role};

    fn item(name: &str, shape: &[u64], cut: Cut) -> Item {
        Item {
            name: name.into(),
            role: Role::Param,
            dtype: DType::F32,
            shape: shape.to_vec(),
            frozen: false,
            cut,
            pad_multiple: None,
            layer: crate::doc::layer_of(name),
            source: Err(crate::error::ViewError::Unknown),
            dcp: None,
        }
    }

    fn qkv() -> Item {
        let subs = [("q", 32), ("k", 16), ("v", 16)]
            .iter()
            .map(|&(n, s)| Sub {
                name: n.into(),
                size: s,
                grain: 1,
            })
            .collect();
        item(
            "blocks.0.qkv.weight",
            &[64, 32],
            Cut::Fused { dim: 0, subs },
        )
    }

    #[test]
    fn tp3_fused_splits_each_sub_near_evenly() {
        let topo = Topo {
            tp: 3,
            ..Topo::default()
        };
        let m = layouts(&[qkv()], &topo).unwrap().remove(0).unwrap();
        let Layout::Fused { parts, subs, .. } = &m.layout else {
            panic!("{:?}", m.layout)
        };
        assert_eq!(*parts, 3);
        assert_eq!(subs[0].split.sizes(32, 3), vec![11, 11, 10]);
        assert_eq!(subs[1].split.sizes(16, 3), vec![6, 5, 5]);
    }

    #[test]
    fn zero2_groups_tensors_per_tp_rank() {
        let topo = Topo {
            tp: 2,
            dp: 2,
            zero_stage: 2,
            ..Topo::default()
        };
        let bias = item("blocks.0.ln.bias", &[30], Cut::Replicated);
        let ls = layouts(&[qkv(), bias], &topo).unwrap();
        let Layout::Nested { inner, .. } = &ls[1].as_ref().unwrap().layout else {
            panic!()
        };
        // qkv's local tensor is 32×32 = 1024 on each TP rank; the bias follows it.
        assert_eq!(
            inner[1],
            Layout::ZeroFlat {
                dp: 2,
                offset: 1024,
                group_numel: 1054,
                alignment: 4
            }
        );
    }

    #[test]
    fn vocab_padding_rounds_to_tp() {
        let mut emb = item("embed", &[50, 8], Cut::Shard { dim: 0, grain: 1 });
        emb.pad_multiple = Some(4);
        let topo = Topo {
            tp: 3,
            ..Topo::default()
        };
        let m = layouts(&[emb], &topo).unwrap().remove(0).unwrap();
        assert_eq!(m.padded_shape, Some(vec![60, 8]));
    }

    #[test]
    fn experts_that_do_not_divide_give_the_schema_error() {
        let e = item(
            "moe.w",
            &[6, 4, 4],
            Cut::Experts {
                num_experts: 6,
                storage: ExpertStorage::Stacked,
            },
        );
        let topo = Topo {
            dp: 4,
            ep: 4,
            ..Topo::default()
        };
        let err = layouts(&[e], &topo).unwrap().remove(0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor `moe.w`: 6 experts do not divide over ep 4"
        );
    }

    #[test]
    fn stages_spread_layers() {
        let items: Vec<Item> = [
            "embed",
            "blocks.0.w",
            "blocks.1.w",
            "blocks.2.w",
            "blocks.3.w",
            "head",
        ]
        .iter()
        .map(|n| item(n, &[2], Cut::Replicated))
        .collect();
        assert_eq!(stages(&items, 2), vec![0, 0, 0, 1, 1, 1]);
    }
}
