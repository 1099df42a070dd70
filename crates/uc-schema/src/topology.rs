//! The parallel layout of a training run: named mesh axes, ZeRO stage, pipeline stages.

use serde::{Deserialize, Serialize};

/// One axis of the device mesh (`dp`, `tp`, `pp`, `ep`, `sp`, or any name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshAxis {
    pub name: String,
    pub size: u32,
}

/// A run's topology. `axes` are listed outermost first; the global rank is row-major over them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Topology {
    pub axes: Vec<MeshAxis>,
    /// ZeRO stage 0–3.
    pub zero_stage: u8,
    /// `stages[s]` = the layer names (or indices as strings) pipeline stage `s` holds; empty without pipeline.
    pub stages: Vec<Vec<String>>,
}

impl Topology {
    /// Builds a topology from `(name, size)` pairs, outermost first.
    ///
    /// ```
    /// let t = uc_schema::Topology::new(&[("dp", 2), ("tp", 4)], 1);
    /// assert_eq!(t.world_size(), 8);
    /// assert_eq!(t.size("tp"), 4);
    /// assert_eq!(t.size("pp"), 1);
    /// ```
    pub fn new(axes: &[(&str, u32)], zero_stage: u8) -> Topology {
        Topology {
            axes: axes
                .iter()
                .map(|(n, s)| MeshAxis {
                    name: n.to_string(),
                    size: *s,
                })
                .collect(),
            zero_stage,
            stages: Vec::new(),
        }
    }

    /// Size of the named axis, 1 when absent.
    pub fn size(&self, name: &str) -> u32 {
        self.axes
            .iter()
            .find(|a| a.name == name)
            .map_or(1, |a| a.size)
    }

    /// Product of all axis sizes (`u32::MAX` when that overflows; validation rejects such topologies).
    pub fn world_size(&self) -> u32 {
        self.axes.iter().fold(1u32, |a, x| a.saturating_mul(x.size))
    }

    /// Coordinates of a global rank on each axis (row-major, first axis outermost).
    pub fn coords(&self, rank: u32) -> Vec<u32> {
        let mut rest = rank;
        let mut out = vec![0; self.axes.len()];
        for (i, a) in self.axes.iter().enumerate().rev() {
            out[i] = rest % a.size.max(1);
            rest /= a.size.max(1);
        }
        out
    }

    /// Global rank of the given coordinates (inverse of [`Topology::coords`]).
    pub fn rank(&self, coords: &[u32]) -> u32 {
        self.axes.iter().zip(coords).fold(0u32, |acc, (a, c)| {
            acc.saturating_mul(a.size).saturating_add(*c)
        })
    }

    /// The pipeline stage holding `layer`, if the stage map names it.
    pub fn stage_of(&self, layer: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| s.iter().any(|l| l == layer))
    }
}
