//! How tensor and expert parallelism cut a tensor, independent of the sizes; read back from layouts.

use uc_schema::{ExpertStorage, Layout, Placement, Split};

/// One fused sub-parameter: display name, extent along the fused dim, split grain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sub {
    pub name: String,
    pub size: u64,
    pub grain: u64,
}

/// The tensor-parallel role of a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Every TP rank holds the whole tensor.
    Replicated,
    /// Split along `dim` in units of `grain` elements (column parallel: dim 0, row parallel: dim 1).
    Shard { dim: usize, grain: u64 },
    /// Sub-parameters (Q, K, V) concatenated along `dim`, each split on its own.
    Fused { dim: usize, subs: Vec<Sub> },
    /// Dim 0 holds `num_experts` experts spread over the expert-parallel ranks.
    Experts {
        num_experts: u64,
        storage: ExpertStorage,
    },
}

/// Display names of `n` fused sub-parameters: q, k, v for three, else s0, s1, ….
pub fn sub_names(n: usize) -> Vec<String> {
    match n {
        3 => vec!["q".into(), "k".into(), "v".into()],
        _ => (0..n).map(|i| format!("s{i}")).collect(),
    }
}

/// The grain a split keeps on a new part count (`Grain` keeps its own, every other split 1).
fn grain_of(split: &Split) -> u64 {
    match split {
        Split::Grain { grain } => (*grain).max(1),
        _ => 1,
    }
}

impl Cut {
    /// The tensor-parallel role a layout expresses (ZeRO and replication inside are dropped).
    pub fn of(layout: &Layout) -> Cut {
        match layout {
            Layout::Replicated { .. } | Layout::ZeroFlat { .. } | Layout::Zero3 { .. } => {
                Cut::Replicated
            }
            Layout::Shard { dim, split, .. } => Cut::Shard {
                dim: *dim,
                grain: grain_of(split),
            },
            Layout::Fused { dim, subs, .. } => Cut::Fused {
                dim: *dim,
                subs: subs
                    .iter()
                    .zip(sub_names(subs.len()))
                    .map(|(s, name)| Sub {
                        name,
                        size: s.size,
                        grain: grain_of(&s.split),
                    })
                    .collect(),
            },
            Layout::Experts {
                num_experts,
                storage,
                ..
            } => Cut::Experts {
                num_experts: *num_experts,
                storage: *storage,
            },
            Layout::Mesh { placements, .. } => placements
                .iter()
                .find_map(|p| match p {
                    Placement::Shard(d) => Some(Cut::Shard { dim: *d, grain: 1 }),
                    Placement::Replicate => None,
                })
                .unwrap_or(Cut::Replicated),
            Layout::Nested { outer, .. } => Cut::of(outer),
        }
    }

    /// The sub-parameters and their dim, when fused.
    pub fn subs(&self) -> Option<(usize, &[Sub])> {
        match self {
            Cut::Fused { dim, subs } => Some((*dim, subs)),
            _ => None,
        }
    }

    /// Short name for lists: `replicated`, `shard(dim 1)`, `fused q/k/v (dim 0)`, `experts`.
    pub fn label(&self) -> String {
        match self {
            Cut::Replicated => "replicated".into(),
            Cut::Shard { dim, .. } => format!("shard(dim {dim})"),
            Cut::Fused { dim, subs } => {
                let names: Vec<&str> = subs.iter().map(|s| s.name.as_str()).collect();
                format!("fused {} (dim {dim})", names.join("/"))
            }
            Cut::Experts { num_experts, .. } => format!("{num_experts} experts"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uc_schema::SubParam;

    #[test]
    fn nested_fused_reads_back_its_subs() {
        let fused = Layout::Fused {
            dim: 0,
            parts: 2,
            subs: [32, 16, 16]
                .iter()
                .map(|&size| SubParam {
                    size,
                    split: Split::Even,
                })
                .collect(),
        };
        let l = Layout::Nested {
            outer: Box::new(fused),
            inner: vec![Layout::Zero3 { dp: 2, offset: 0 }; 2],
        };
        let (dim, subs) = Cut::of(&l).subs().map(|(d, s)| (d, s.to_vec())).unwrap();
        assert_eq!(dim, 0);
        assert_eq!(
            subs.iter()
                .map(|s| (s.name.as_str(), s.size))
                .collect::<Vec<_>>(),
            vec![("q", 32), ("k", 16), ("v", 16)]
        );
    }

    #[test]
    fn grain_survives_and_zero_is_replicated() {
        let l = Layout::Shard {
            dim: 1,
            parts: 4,
            split: Split::Grain { grain: 64 },
        };
        assert_eq!(Cut::of(&l), Cut::Shard { dim: 1, grain: 64 });
        assert_eq!(
            Cut::of(&Layout::Zero3 { dp: 4, offset: 0 }),
            Cut::Replicated
        );
    }
}
