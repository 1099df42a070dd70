//! `uc verify`.

use crate::progress::bar;
use crate::remote::Remote;
use crate::{is_native, CliError};
use std::path::Path;
use uc_store::native::NativeCheckpoint;
use uc_store::source::{OpenOptions, Source};

pub fn run(
    path: &Path,
    opts: &OpenOptions,
    as_json: bool,
    remote: &Remote,
) -> Result<(), CliError> {
    let (kind, tensors) = if is_native(path) {
        let ck = NativeCheckpoint::open(path)?;
        ck.verify()?;
        ("native", ck.manifest().tensors.len())
    } else {
        // DeepSpeed / DCP: every file present and every tensor merges.
        let src = Source::open(path, opts)?;
        let outs = src.outputs();
        let pb = bar(outs.len(), "verify");
        for o in &outs {
            src.bytes(o)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
        (src.format(), outs.len())
    };
    if as_json {
        say!(
            "{}",
            serde_json::json!({"ok": true, "format": kind, "tensors": tensors, "remote": remote.json()})
        );
    } else {
        say!(
            "ok: {kind} checkpoint {} ({tensors} tensors)",
            remote.show(path)
        );
    }
    Ok(())
}
