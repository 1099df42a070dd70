//! `uc verify`.

use crate::progress::bar;
use crate::{is_native, CliError};
use std::path::Path;
use uc_store::dcp::{DcpCheckpoint, DcpOptions};
use uc_store::deepspeed::{Assume, DsCheckpoint};
use uc_store::native::NativeCheckpoint;

pub fn run(path: &Path, tag: Option<&str>, as_json: bool) -> Result<(), CliError> {
    let (kind, tensors) = if is_native(path) {
        let ck = NativeCheckpoint::open(path)?;
        ck.verify()?;
        ("native", ck.manifest().tensors.len())
    } else if DcpCheckpoint::is_dcp(path) {
        let ck = DcpCheckpoint::open(path, &DcpOptions::default())?;
        let outs = ck.outputs();
        let pb = bar(outs.len(), "verify");
        for o in &outs {
            ck.read(o)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
        ("dcp", outs.len())
    } else {
        let ck = DsCheckpoint::open(path, tag, &Assume::default())?;
        let outs = ck.outputs();
        let pb = bar(outs.len(), "verify");
        for o in &outs {
            ck.read(o)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
        ("deepspeed", outs.len())
    };
    if as_json {
        say!(
            "{}",
            serde_json::json!({"ok": true, "format": kind, "tensors": tensors})
        );
    } else {
        say!(
            "ok: {kind} checkpoint {} ({tensors} tensors)",
            path.display()
        );
    }
    Ok(())
}
