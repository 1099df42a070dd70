//! A pickle interpreter (protocols 0–5) that never executes anything: opcodes build a plain
//! [`PyValue`] tree, globals must be on a caller-given [`Allowlist`], and allowlisted callables
//! (tensor rebuilders, `OrderedDict`, `torch.Size`, …) are interpreted structurally.

mod allow;
mod machine;
mod value;

pub use allow::{
    storage_dtype, Allowlist, DCP_METADATA_GLOBALS, DEEPSPEED_EXTRA_GLOBALS,
    MEGATRON_PLANNER_GLOBALS, TORCH_SAVE_GLOBALS,
};
pub use value::{Cursor, PyDict, PyGlobal, PyObject, PyValue, StorageRef, TensorRef};

use crate::error::Result;
use std::path::Path;

/// Deepest container nesting accepted. Checkpoints nest about 10 deep; the bound keeps the
/// recursive resolution (≈5 KiB of stack per level in debug builds) well inside a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 128;

/// Unpickles `data` (read from `path`, named in errors) accepting only globals in `allow`.
pub fn unpickle(data: &[u8], allow: &Allowlist, path: &Path) -> Result<PyValue> {
    machine::Machine::new(data, allow, path).run()
}
