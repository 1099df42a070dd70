//! One DeepSpeed optimizer-states file as typed accessors: every stage-specific key path (where ZeRO
//! 1/2, the BF16 optimizer and ZeRO-3 keep fp32 partitions, per-group state, param groups, partition
//! counts and slice mappings) lives here and nowhere else.

use crate::error::{Result, StoreError};
use uc_torch::pickle::{Cursor, PyValue};
use uc_torch::PtFile;

/// `optimizer_state_dict` of one `[bf16_]zero_pp_rank_<d>_mp_rank_<m>_optim_states.pt`.
#[derive(Debug, Clone)]
pub(crate) struct OptimFile<'a> {
    root: Cursor<'a>,
    /// ZeRO-3 layout (`fp32_flat_groups`, nested `optimizer_state_dict`) rather than ZeRO-1/2's.
    zero3: bool,
}

/// The dict of group `g` under a `state` dict whose keys are ints (or their strings).
fn group_key<'a>(c: &Cursor<'a>, g: usize) -> Result<Cursor<'a>> {
    Ok(c.int_key(g as i64).or_else(|_| c.key(&g.to_string()))?)
}

/// [`StoreError::BadValue`] for the value at `c`.
pub(crate) fn bad_value(c: &Cursor, expected: &'static str) -> StoreError {
    let v = c.value();
    let int = v.as_int().or_else(|| match v {
        PyValue::Object(o) => o.args.first().and_then(PyValue::as_int),
        _ => None,
    });
    let value = int.map_or_else(|| format!("a {}", v.type_name()), |i| i.to_string());
    StoreError::BadValue {
        path: c.path().to_path_buf(),
        key: c.trail().to_string(),
        value,
        expected,
    }
}

/// A count at `c` (a parallel degree, a partition count): an int in 1..2³², never clamped.
pub(crate) fn positive_u32(c: &Cursor, expected: &'static str) -> Result<u32> {
    c.value()
        .as_int()
        .and_then(|i| u32::try_from(i).ok())
        .filter(|&i| i >= 1)
        .ok_or_else(|| bad_value(c, expected))
}

impl<'a> OptimFile<'a> {
    /// The view of `f` (`zero3`: the ZeRO-3 key layout).
    pub fn new(f: &'a PtFile, zero3: bool) -> Result<OptimFile<'a>> {
        Ok(OptimFile {
            root: f.cursor().key("optimizer_state_dict")?,
            zero3,
        })
    }

    /// `optimizer_state_dict` itself.
    pub fn root(&self) -> &Cursor<'a> {
        &self.root
    }

    /// `zero_stage` (an int or `ZeroStageEnum(n)`), 0–3; `None` when absent (the BF16 optimizer).
    pub fn zero_stage(&self) -> Result<Option<u8>> {
        let Some(c) = self.root.get("zero_stage") else {
            return Ok(None);
        };
        let n = c.value().as_int().or_else(|| match c.value() {
            PyValue::Object(o) => o.args.first().and_then(PyValue::as_int),
            _ => None,
        });
        n.and_then(|n| u8::try_from(n).ok())
            .filter(|n| *n <= 3)
            .map(Some)
            .ok_or_else(|| bad_value(&c, "a ZeRO stage 0–3"))
    }

    /// Group `g`'s fp32 master partition.
    pub fn fp32(&self, g: usize) -> Result<Cursor<'a>> {
        let key = if self.zero3 {
            "fp32_flat_groups"
        } else {
            "single_partition_of_fp32_groups"
        };
        Ok(self.root.key(key)?.index(g)?)
    }

    /// The base optimizer's `state` dict (param group → its state).
    fn states(&self) -> Result<Cursor<'a>> {
        let inner = if self.zero3 {
            "optimizer_state_dict"
        } else {
            "base_optimizer_state"
        };
        Ok(self.root.key(inner)?.key("state")?)
    }

    /// Group `g`'s optimizer state dict (`exp_avg`, `step`, …); `None` when it has none.
    pub fn group_state(&self, g: usize) -> Result<Option<Cursor<'a>>> {
        Ok(group_key(&self.states()?, g).ok())
    }

    /// State `key` of group `g` (a partition, or the scalar `step`).
    pub fn state(&self, g: usize, key: &str) -> Result<Cursor<'a>> {
        Ok(group_key(&self.states()?, g)?.key(key)?)
    }

    /// The base optimizer's `param_groups` (hyper-parameters, `name`, `moe`, `params`).
    pub fn param_groups(&self) -> Option<Cursor<'a>> {
        self.root
            .get("base_optimizer_state")
            .and_then(|b| b.get("param_groups"))
            .or_else(|| {
                self.root
                    .get("optimizer_state_dict")
                    .and_then(|b| b.get("param_groups"))
            })
    }

    /// Param group `g` of [`OptimFile::param_groups`].
    pub fn param_group(&self, g: usize) -> Option<Cursor<'a>> {
        self.param_groups()?.index(g).ok()
    }

    /// How group `g` is partitioned: (partition count, is an expert group); `dp` when the file
    /// gives no count. A count that is no int ≥ 1 is an error.
    pub fn partitioning(&self, g: usize, dp: u32) -> Result<(u32, bool)> {
        let count = |c: Option<Cursor>| -> Result<u32> {
            c.map_or(Ok(dp), |c| positive_u32(&c, "a partition count ≥ 1"))
        };
        if self.zero3 {
            if let Some(pg) = self
                .root
                .get("ds_zero_partition_groups")
                .and_then(|c| c.index(g).ok())
            {
                let moe = pg.get("families").is_some_and(|f| {
                    f.value()
                        .as_seq()
                        .is_some_and(|v| v.iter().any(|x| x.as_str() == Some("autoep_expert")))
                });
                return Ok((count(pg.get("partition_count"))?, moe));
            }
            return Ok((count(self.root.get("partition_count"))?, false));
        }
        let n = count(
            self.root
                .get("partition_count")
                .and_then(|c| c.index(g).ok()),
        )?;
        let moe = self
            .param_group(g)
            .and_then(|pg| pg.get("moe"))
            .is_some_and(|x| x.value().as_bool() == Some(true));
        Ok((n, moe))
    }

    /// ZeRO-1/2 `param_slice_mappings[g]` (name → `fragment_address(start, numel)`), if saved.
    pub fn slice_mappings(&self, g: usize) -> Result<Option<Cursor<'a>>> {
        match self.root.get("param_slice_mappings") {
            Some(m) => Ok(Some(m.index(g)?)),
            None => Ok(None),
        }
    }
}
