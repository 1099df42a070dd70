//! `validate()` of layouts, tensors, topologies and manifests.

use crate::{
    zero_padded, Layout, Manifest, Placement, SchemaError, Split, TensorMeta, Topology,
    MANIFEST_VERSION,
};

type Result<T = ()> = std::result::Result<T, SchemaError>;

/// Rejects names that could escape a directory when used as a path component:
/// empty, containing `/`, `\`, NUL or `..`.
///
/// ```
/// assert!(uc_schema::validate_name("blocks.0.qkv.weight").is_ok());
/// assert!(uc_schema::validate_name("../../etc/passwd").is_err());
/// ```
pub fn validate_name(name: &str) -> Result {
    let why = if name.is_empty() {
        "empty"
    } else if name.contains('/') || name.contains('\\') {
        "contains a path separator"
    } else if name.contains('\0') {
        "contains NUL"
    } else if name.contains("..") {
        "contains `..`"
    } else {
        return Ok(());
    };
    Err(SchemaError::UnsafeName {
        name: name.to_string(),
        why,
    })
}

/// Checks that `split` cuts a dim of `size` elements over `parts` ranks exactly.
pub fn validate_split(tensor: &str, dim: usize, size: u64, parts: u32, split: &Split) -> Result {
    if parts == 0 {
        return Err(SchemaError::ZeroRanks {
            tensor: tensor.into(),
        });
    }
    // Sums are computed without building per-rank lists: `parts` may be huge on bad input.
    let sum = match split {
        Split::Even if !size.is_multiple_of(parts as u64) => {
            return Err(SchemaError::UnevenSplit {
                tensor: tensor.into(),
                dim,
                size,
                parts,
            })
        }
        Split::Sizes(s) if s.len() != parts as usize => {
            return Err(SchemaError::SizesCount {
                tensor: tensor.into(),
                parts,
                got: s.len(),
            })
        }
        Split::Sizes(s) => checked_sum(s.iter().copied()).unwrap_or(u64::MAX),
        Split::Even | Split::Chunk => size,
        Split::Grain { grain } if size >= (*grain).max(1) => size - size % (*grain).max(1),
        Split::Grain { .. } => size,
    };
    if sum != size {
        let sizes = if parts <= 4096 {
            split.sizes(size, parts)
        } else {
            Vec::new()
        };
        return Err(SchemaError::SizesDontSum {
            tensor: tensor.into(),
            dim,
            sizes,
            sum,
            expected: size,
        });
    }
    Ok(())
}

/// Checks `layout` against a tensor of stored shape `shape`.
pub fn validate_layout(tensor: &str, shape: &[u64], layout: &Layout) -> Result {
    let t = || tensor.to_string();
    let dim_check = |dim: usize| {
        if dim >= shape.len() {
            Err(SchemaError::DimOutOfRange {
                tensor: t(),
                dim,
                ndim: shape.len(),
            })
        } else {
            Ok(())
        }
    };
    match layout.checked_ranks() {
        None => {
            return Err(SchemaError::TooManyRanks {
                what: format!("tensor `{tensor}`"),
            })
        }
        Some(0) => return Err(SchemaError::ZeroRanks { tensor: t() }),
        Some(_) => {}
    }
    match layout {
        Layout::Replicated { .. } => Ok(()),
        Layout::Shard { dim, parts, split } => {
            dim_check(*dim)?;
            validate_split(tensor, *dim, shape[*dim], *parts, split)
        }
        Layout::Fused { dim, parts, subs } => {
            dim_check(*dim)?;
            let sizes: Vec<u64> = subs.iter().map(|s| s.size).collect();
            let sum = checked_sum(sizes.iter().copied()).unwrap_or(u64::MAX);
            if sum != shape[*dim] {
                return Err(SchemaError::SubParamMismatch {
                    tensor: t(),
                    dim: *dim,
                    sizes,
                    sum,
                    expected: shape[*dim],
                });
            }
            subs.iter()
                .try_for_each(|s| validate_split(tensor, *dim, s.size, *parts, &s.split))
        }
        Layout::Experts {
            num_experts, ep, ..
        } => {
            let dim0 = shape.first().copied().unwrap_or(0);
            if dim0 != *num_experts {
                return Err(SchemaError::ExpertDimMismatch {
                    tensor: t(),
                    dim0,
                    experts: *num_experts,
                });
            }
            if *num_experts % *ep as u64 != 0 {
                return Err(SchemaError::ExpertsNotDivisible {
                    tensor: t(),
                    experts: *num_experts,
                    ep: *ep,
                });
            }
            Ok(())
        }
        Layout::Mesh { mesh, placements } => {
            if mesh.len() != placements.len() {
                return Err(SchemaError::MeshPlacementMismatch {
                    tensor: t(),
                    mesh_axes: mesh.len(),
                    placements: placements.len(),
                });
            }
            for (axis, p) in placements.iter().enumerate() {
                if let Placement::Shard(dim) = p {
                    if *dim >= shape.len() {
                        return Err(SchemaError::PlacementDimOutOfRange {
                            tensor: t(),
                            axis,
                            dim: *dim,
                            ndim: shape.len(),
                        });
                    }
                }
            }
            Ok(())
        }
        Layout::ZeroFlat {
            dp,
            offset,
            group_numel,
            alignment,
        } => {
            let end = shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .and_then(|n| n.checked_add(*offset))
                .unwrap_or(u64::MAX);
            if end > *group_numel {
                return Err(SchemaError::ZeroRangeOutsideGroup {
                    tensor: t(),
                    offset: *offset,
                    end,
                    group_numel: *group_numel,
                });
            }
            let padded = zero_padded(*group_numel, *alignment);
            if !padded.is_multiple_of(*dp as u64) {
                return Err(SchemaError::ZeroPaddingUneven {
                    tensor: t(),
                    padded,
                    dp: *dp,
                });
            }
            Ok(())
        }
        Layout::Zero3 { .. } => Ok(()),
        Layout::Nested { outer, inner } => {
            validate_layout(tensor, shape, outer)?;
            if inner.len() != outer.ranks() as usize {
                return Err(SchemaError::NestedCount {
                    tensor: t(),
                    outer: outer.ranks(),
                    inner: inner.len(),
                });
            }
            let counts: Vec<u32> = inner.iter().map(Layout::ranks).collect();
            if counts.windows(2).any(|w| w[0] != w[1]) {
                return Err(SchemaError::NestedRanksDiffer {
                    tensor: t(),
                    counts,
                });
            }
            for (o, l) in inner.iter().enumerate() {
                validate_layout(tensor, &local_shape(shape, outer, o as u32), l)?;
            }
            Ok(())
        }
    }
}

/// Shape of rank `rank`'s local tensor under `layout`, for layouts whose local buffer is a tensor
/// (not a flat ZeRO partition). Used to validate nested layouts.
pub fn local_shape(shape: &[u64], layout: &Layout, rank: u32) -> Vec<u64> {
    let mut s = shape.to_vec();
    match layout {
        Layout::Shard { dim, parts, split } if *dim < s.len() => {
            s[*dim] = split.part(shape[*dim], *parts, rank);
        }
        Layout::Fused { dim, parts, subs } if *dim < s.len() => {
            s[*dim] = subs
                .iter()
                .map(|sp| sp.split.part(sp.size, *parts, rank))
                .fold(0u64, u64::saturating_add);
        }
        Layout::Experts {
            num_experts,
            ep,
            storage,
        } if !s.is_empty() => {
            let local = num_experts / (*ep).max(1) as u64;
            match storage {
                crate::ExpertStorage::Stacked => s[0] = local,
                crate::ExpertStorage::PerExpert => {
                    s.remove(0);
                }
            }
        }
        Layout::Mesh { mesh, placements } => {
            let mut rest = rank;
            let mut coords = vec![0u32; mesh.len()];
            for i in (0..mesh.len()).rev() {
                coords[i] = rest % mesh[i].max(1);
                rest /= mesh[i].max(1);
            }
            for (i, p) in placements.iter().enumerate() {
                if let Placement::Shard(d) = p {
                    if *d < s.len() {
                        s[*d] = Split::Chunk.part(s[*d], mesh[i], coords[i]);
                    }
                }
            }
        }
        _ => {}
    }
    s
}

/// Sum without overflow (`None` when it would overflow).
fn checked_sum(v: impl IntoIterator<Item = u64>) -> Option<u64> {
    v.into_iter().try_fold(0u64, |a, b| a.checked_add(b))
}

/// Checks a tensor: safe name, padded shape consistent, layout fits the stored shape.
pub fn validate_tensor(t: &TensorMeta) -> Result {
    validate_name(&t.name)?;
    if let Some(p) = &t.padded_shape {
        if p.len() != t.shape.len() || p.iter().zip(&t.shape).any(|(a, b)| a < b) {
            return Err(SchemaError::PaddedShape {
                tensor: t.name.clone(),
                shape: t.shape.clone(),
                padded: p.clone(),
            });
        }
    }
    validate_layout(&t.name, t.stored_shape(), &t.layout)
}

/// Checks a topology: ZeRO stage 0–3, no empty axes.
pub fn validate_topology(t: &Topology) -> Result {
    if t.zero_stage > 3 {
        return Err(SchemaError::BadZeroStage {
            stage: t.zero_stage,
        });
    }
    if let Some(a) = t.axes.iter().find(|a| a.size == 0) {
        return Err(SchemaError::ZeroAxis {
            axis: a.name.clone(),
        });
    }
    if t.axes
        .iter()
        .try_fold(1u32, |a, x| a.checked_mul(x.size))
        .is_none()
    {
        return Err(SchemaError::TooManyRanks {
            what: "topology".into(),
        });
    }
    Ok(())
}

/// Checks a whole manifest: version, topology, every tensor.
pub fn validate_manifest(m: &Manifest) -> Result {
    if m.version == 0 || m.version > MANIFEST_VERSION {
        return Err(SchemaError::UnsupportedVersion {
            version: m.version,
            supported: MANIFEST_VERSION,
        });
    }
    validate_topology(&m.source)?;
    m.tensors.iter().try_for_each(|e| validate_tensor(&e.meta))
}

impl TensorMeta {
    /// See [`validate_tensor`].
    pub fn validate(&self) -> Result {
        validate_tensor(self)
    }
}

impl Layout {
    /// See [`validate_layout`].
    pub fn validate(&self, tensor: &str, shape: &[u64]) -> Result {
        validate_layout(tensor, shape, self)
    }
}

impl Topology {
    /// See [`validate_topology`].
    pub fn validate(&self) -> Result {
        validate_topology(self)
    }
}

impl Manifest {
    /// See [`validate_manifest`].
    pub fn validate(&self) -> Result {
        validate_manifest(self)
    }
}
