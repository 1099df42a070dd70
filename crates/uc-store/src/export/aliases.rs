//! DeepSpeed `module` tensors that are no weights of their own: a trained parameter registered a
//! second time under another module name (e.g. a router also reachable as `…mlp.gate`).

use crate::deepspeed::{DsCheckpoint, ReadTrace};
use crate::error::Result;
use std::collections::BTreeSet;
use uc_schema::{Role, TensorMeta};

/// The names among `metas` to leave out of an export. A module tensor the optimizer does not train
/// is kept when the model states list it as a buffer or a frozen parameter; when they list both
/// kinds and it is in neither it is left out; when they do not (ZeRO-1 and the BF16 optimizer save
/// no frozen list) it is left out only if it is bit-identical to a trained parameter's module tensor.
pub(crate) fn aliases(
    c: &DsCheckpoint,
    metas: &[TensorMeta],
    trace: ReadTrace<'_>,
) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if c.params().is_empty() {
        return Ok(out); // saved before the first step: every module tensor is a weight
    }
    let trained: BTreeSet<&str> = c.params().iter().map(|p| p.name.as_str()).collect();
    let (buffers, frozen) = (c.buffer_names(), c.frozen_names());
    let listed =
        |set: &Option<BTreeSet<String>>, n: &String| set.as_ref().is_some_and(|s| s.contains(n));
    for m in metas {
        if !matches!(m.role, Role::Param | Role::Buffer) || trained.contains(m.name.as_str()) {
            continue;
        }
        if listed(&buffers, &m.name) || listed(&frozen, &m.name) || out.contains(&m.name) {
            continue;
        }
        let alias = if buffers.is_some() && frozen.is_some() {
            true
        } else {
            c.module_twin(&m.name, trace)?.is_some()
        };
        if alias {
            out.insert(m.name.clone());
        }
    }
    Ok(out)
}
