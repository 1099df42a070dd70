//! A parallel topology as the viewer's form edits it: tp / dp / ep / pp sizes and the ZeRO stage.

use crate::error::{Result, ViewError};
use serde::{Deserialize, Serialize};
use uc_schema::Topology;

/// Most ranks a topology (or a layout) may have to be drawn.
pub const MAX_RANKS: u32 = 16384;

/// Sizes of the parallel axes. Expert parallelism is carved out of data parallelism (`ep` divides `dp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topo {
    pub tp: u32,
    pub dp: u32,
    pub ep: u32,
    pub pp: u32,
    pub zero_stage: u8,
}

impl Default for Topo {
    fn default() -> Topo {
        Topo {
            tp: 1,
            dp: 1,
            ep: 1,
            pp: 1,
            zero_stage: 0,
        }
    }
}

impl Topo {
    /// Parses `{"tp":3,"dp":1,"ep":1,"pp":1,"zero_stage":0}` (missing keys default to 1 / stage 0).
    pub fn from_json(text: &str) -> Result<Topo> {
        serde_json::from_str(text).map_err(|e| ViewError::Format {
            what: "topology".into(),
            error: e.to_string(),
        })
    }

    /// The sizes of a uc-schema topology (absent axes are 1).
    pub fn of(t: &Topology) -> Topo {
        Topo {
            tp: t.size("tp"),
            dp: t.size("dp"),
            ep: t.size("ep"),
            pp: t.size("pp"),
            zero_stage: t.zero_stage,
        }
    }

    /// As a uc-schema topology (axes `pp`, `dp`, `tp`, outermost first, like DeepSpeed's rank order).
    pub fn topology(&self) -> Topology {
        Topology::new(
            &[("pp", self.pp), ("dp", self.dp), ("tp", self.tp)],
            self.zero_stage,
        )
    }

    /// Checks the sizes with uc-schema's rules, that `ep` divides `dp`, and the viewer's rank limit.
    pub fn validate(&self) -> Result<()> {
        self.topology().validate()?;
        let world = self.topology().world_size();
        if world > MAX_RANKS {
            return Err(ViewError::Topology(format!(
                "{world} ranks are more than the viewer draws ({MAX_RANKS})"
            )));
        }
        if self.ep == 0 {
            return Err(ViewError::Topology("ep is 0".into()));
        }
        if !self.dp.is_multiple_of(self.ep) {
            return Err(ViewError::Topology(format!(
                "ep {} does not divide dp {} (experts are spread over data-parallel ranks)",
                self.ep, self.dp
            )));
        }
        Ok(())
    }

    /// Short text: `tp=2 dp=1 ep=1 pp=1 zero=0`.
    pub fn label(&self) -> String {
        format!(
            "tp={} dp={} ep={} pp={} zero={}",
            self.tp, self.dp, self.ep, self.pp, self.zero_stage
        )
    }
}
