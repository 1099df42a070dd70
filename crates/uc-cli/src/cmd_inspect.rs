//! `uc inspect`.

use crate::progress::human;
use crate::{is_native, CliError};
use serde_json::json;
use std::path::Path;
use uc_store::dcp::{DcpCheckpoint, DcpOptions, Flavor, Item};
use uc_store::deepspeed::DsCheckpoint;
use uc_store::native::NativeCheckpoint;
use uc_store::source::OpenOptions;

pub fn run(path: &Path, opts: &OpenOptions, as_json: bool) -> Result<(), CliError> {
    let j = if is_native(path) {
        native(path)?
    } else if DcpCheckpoint::is_dcp(path) {
        dcp(path)?
    } else {
        deepspeed(path, opts)?
    };
    if as_json {
        say!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    say!(
        "{} checkpoint: {}",
        j["format"].as_str().unwrap_or("?"),
        path.display()
    );
    say!("topology: {}", j["topology"].as_str().unwrap_or("?"));
    if let Some(extra) = j.get("summary").and_then(|s| s.as_str()) {
        say!("{extra}");
    }
    say!(
        "{:<56} {:<10} {:<6} {:<16} {:>10}  layout",
        "tensor",
        "role",
        "dtype",
        "shape",
        "size"
    );
    for t in j["tensors"].as_array().into_iter().flatten() {
        say!(
            "{:<56} {:<10} {:<6} {:<16} {:>10}  {}",
            t["name"].as_str().unwrap_or(""),
            t["role"].as_str().unwrap_or(""),
            t["dtype"].as_str().unwrap_or(""),
            t["shape"].to_string(),
            human(t["bytes"].as_u64().unwrap_or(0)),
            t["layout"].as_str().unwrap_or("")
        );
    }
    say!(
        "{} tensors, {}",
        j["tensors"].as_array().map_or(0, Vec::len),
        human(j["bytes"].as_u64().unwrap_or(0))
    );
    Ok(())
}

fn native(path: &Path) -> Result<serde_json::Value, CliError> {
    let ck = NativeCheckpoint::open(path)?;
    let m = ck.manifest();
    let tensors: Vec<_> = m
        .tensors
        .iter()
        .map(|e| {
            json!({
                "name": e.meta.name, "role": e.meta.role.key(), "dtype": e.meta.dtype.name(),
                "shape": e.meta.shape, "bytes": e.meta.nbytes(),
                "layout": e.storage.as_ref().map(|s| format!("{} [{}..{})", s.file, s.start, s.end)).unwrap_or_default(),
            })
        })
        .collect();
    Ok(json!({
        "format": "native",
        "version": m.version,
        "topology": topo(&m.source),
        "tensors": tensors,
        "files": m.files.len(),
        "bytes": m.tensors.iter().map(|e| e.meta.nbytes()).sum::<u64>(),
        "state_keys": m.state.keys().collect::<Vec<_>>(),
    }))
}

fn topo(t: &uc_schema::Topology) -> String {
    let axes: Vec<String> = t
        .axes
        .iter()
        .map(|a| format!("{} {}", a.name, a.size))
        .collect();
    format!("{} · ZeRO {}", axes.join(" × "), t.zero_stage)
}

fn deepspeed(path: &Path, opts: &OpenOptions) -> Result<serde_json::Value, CliError> {
    let ck = DsCheckpoint::open(path, opts.tag.as_deref(), &opts.assume)?;
    let mut tensors = Vec::new();
    for p in ck.params() {
        tensors.push(json!({
            "name": p.name, "role": "fp32", "dtype": "F32", "shape": p.meta.shape,
            "bytes": p.meta.nbytes(), "layout": p.meta.layout.kind(), "ranks": p.meta.layout.ranks(),
            "padded_shape": p.meta.padded_shape, "states": p.states, "scalars": p.scalars,
        }));
    }
    for e in ck.extras() {
        tensors.push(json!({
            "name": e.meta.name, "role": e.meta.role.key(), "dtype": e.meta.dtype.name(), "shape": e.meta.shape,
            "bytes": e.meta.nbytes(), "layout": e.meta.layout.kind(), "ranks": e.meta.layout.ranks(),
        }));
    }
    Ok(json!({
        "format": "deepspeed",
        "tag": ck.files().tag,
        "topology": topo(&ck.topology()),
        "summary": format!(
            "tag {} · {} trained parameters · {} other tensors · {} optimizer files{}{}",
            ck.files().tag, ck.params().len(), ck.extras().len(), ck.files().optim.len() + ck.files().expp.len(),
            if ck.uci().is_some() { " · universal_checkpoint_info" } else { "" },
            if ck.autoep().is_empty() { String::new() } else { format!(" · {} AutoEP layers", ck.autoep().len()) },
        ),
        "tensors": tensors,
        "bytes": ck.params().iter().map(|p| p.meta.nbytes()).chain(ck.extras().iter().map(|e| e.meta.nbytes())).sum::<u64>(),
    }))
}

/// A DCP / Megatron `torch_dist` checkpoint: output tensors with the item and chunks they come from.
fn dcp(path: &Path) -> Result<serde_json::Value, CliError> {
    let ck = DcpCheckpoint::open(path, &DcpOptions::default())?;
    let md = ck.metadata();
    let outs = ck.outputs();
    let tensors: Vec<_> = outs
        .iter()
        .map(|m| {
            let (layout, chunks) = match ck.source_of(m) {
                Some((key, region)) => {
                    let t = md.tensor(key);
                    let n = t.map_or(0, |t| t.chunks.iter().filter(|c| !c.is_empty()).count());
                    let whole = t.is_some_and(|t| region.len.as_slice() == t.size.as_slice());
                    let at = if whole {
                        String::new()
                    } else {
                        format!(
                            " box {:?}+{:?}",
                            region.off.as_slice(),
                            region.len.as_slice()
                        )
                    };
                    let boxes: Vec<_> = t
                        .map(|t| {
                            t.chunks
                                .iter()
                                .map(|c| json!({"offsets": c.offsets, "sizes": c.sizes}))
                                .collect()
                        })
                        .unwrap_or_default();
                    (format!("{n} chunks of `{key}`{at}"), boxes)
                }
                None => ("constant".to_string(), Vec::new()),
            };
            json!({
                "name": m.name, "role": m.role.key(), "dtype": m.dtype.name(), "shape": m.shape,
                "bytes": m.nbytes(), "layout": layout, "chunks": chunks,
            })
        })
        .collect();
    let bytes_items = md
        .items
        .iter()
        .filter(|(_, i)| matches!(i, Item::Bytes))
        .count();
    let files: std::collections::BTreeSet<&str> =
        md.storage.values().map(|s| s.file.as_str()).collect();
    let format = match ck.flavor() {
        Flavor::Torch => "dcp",
        Flavor::Megatron => "megatron torch_dist",
    };
    Ok(json!({
        "format": format,
        "topology": topo(&ck.topology()),
        "summary": format!(
            "{} items ({} bytes items) · {} chunks · {} data files · state: {}",
            md.items.len(), bytes_items, md.storage.len(), files.len(),
            ck.state.keys().cloned().collect::<Vec<_>>().join(", "),
        ),
        "tensors": tensors,
        "bytes": outs.iter().map(|m| m.nbytes()).sum::<u64>(),
        "state_keys": ck.state.keys().collect::<Vec<_>>(),
    }))
}
