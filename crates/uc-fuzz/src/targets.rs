//! One function per fuzz target. Each runs the real parsing code on `data` and everything a caller
//! would do with what it returns (walk the tree, read every tensor, build layouts and plans); an
//! error is a fine answer, a panic is a bug.

use serde_json::Value as J;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use uc_schema::deepspeed::{autoep_layers_in, UniversalCheckpointInfo};
use uc_schema::{DType, ExpertStorage, Layout, Role, TensorMeta};
use uc_torch::{dcp_metadata, plain, unpickle, Allowlist, PtFile};

/// A target body: arbitrary bytes in, never a panic.
pub type Body = fn(&[u8]);

/// Every target: its name (as cargo-fuzz and the corpus folders call it) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("pickle", pickle),
    ("torch_zip", torch_zip),
    ("dcp_metadata", dcp_metadata),
    ("native", native),
    ("deepspeed_metadata", deepspeed_metadata),
    ("deepspeed_states", deepspeed_states),
];

const LABEL: &str = "fuzz-input";

/// A pickle under every allowlist, then the value tree as JSON and as plain values.
pub fn pickle(data: &[u8]) {
    for allow in [
        Allowlist::deepspeed(),
        Allowlist::dcp_metadata(),
        Allowlist::megatron_dcp_metadata(),
    ] {
        if let Ok(v) = unpickle(data, &allow, Path::new(LABEL)) {
            let _ = plain::to_json(&v);
            let _ = plain::to_value(&v);
        }
    }
}

/// A torch.save archive: the zip index, the pickle, every member and every tensor's bytes.
pub fn torch_zip(data: &[u8]) {
    let Ok(pt) = PtFile::from_bytes(LABEL, data.to_vec(), &Allowlist::deepspeed()) else {
        return;
    };
    for e in pt.entries() {
        let _ = pt.entry_bytes(&e.name);
    }
    for (name, t) in pt.tensors() {
        let _ = pt.tensor_data(&name, t);
        let _ = pt.tensor_file_range(&name, t);
    }
    let _ = plain::to_json(pt.root());
}

/// A DCP `.metadata`: parsed, written back and parsed again.
pub fn dcp_metadata(data: &[u8]) {
    let path = Path::new(LABEL);
    let Ok(md) = dcp_metadata::parse(data, path, &Allowlist::megatron_dcp_metadata()) else {
        return;
    };
    let again = dcp_metadata::to_pickle(&md);
    let _ = dcp_metadata::parse(&again, path, &Allowlist::megatron_dcp_metadata());
}

/// A native checkpoint: `[u32 LE n][n bytes of uc.json][one safetensors file]`, the safetensors
/// file written where the manifest's first file entry says; opened, verified, every tensor read.
pub fn native(data: &[u8]) {
    let Some((json, st)) = split_len_prefixed(data) else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else { return };
    let root = dir.path();
    let write = |rel: &str, bytes: &[u8]| {
        let p = root.join(rel);
        p.parent().map(std::fs::create_dir_all);
        let _ = std::fs::write(p, bytes);
    };
    write("uc.json", json);
    write("COMPLETE", b"");
    let rel = serde_json::from_slice::<J>(json)
        .ok()
        .and_then(|j| j["files"][0]["file"].as_str().map(str::to_owned));
    // Only a plain relative name is materialised: the fuzzer must not write outside its temp dir.
    if let Some(rel) = rel.filter(|r| is_plain_rel(r)) {
        write(&rel, st);
    }
    let Ok(ck) = uc_store::native::NativeCheckpoint::open(root) else {
        return;
    };
    let _ = ck.verify();
    for e in &ck.manifest().tensors {
        let _ = ck.tensor(&e.meta.name, &e.meta.role);
    }
}

/// DeepSpeed model-state metadata as JSON (the form uc-schema's parsers read): the
/// `universal_checkpoint_info` → a TP rule and its layout → pieces → a plan for every
/// `param_shapes` entry at tp 1–3, and the AutoEP layers → expert layouts → pieces.
pub fn deepspeed_metadata(data: &[u8]) {
    let Ok(j) = serde_json::from_slice::<J>(data) else {
        return;
    };
    let shapes = param_shapes(&j);
    if let Ok(info) = UniversalCheckpointInfo::parse(&j["universal_checkpoint_info"]) {
        let _ = info.to_json();
        for (name, shape) in &shapes {
            for tp in 1..=3 {
                if let Ok(rule) = info.tp_rule(name, &vec![shape.clone(); tp]) {
                    plan_to_single(&rule.tensor_meta(name, DType::F32, Role::Fp32Master));
                }
            }
        }
    }
    if let Ok(Some(layers)) = autoep_layers_in(&j) {
        for l in &layers {
            for storage in [ExpertStorage::Stacked, ExpertStorage::PerExpert] {
                let Ok(layout) = l.experts_layout(storage) else {
                    continue;
                };
                for name in l.expert_params() {
                    let mut shape = vec![l.num_experts];
                    shape.extend(
                        shapes
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map_or(&[][..], |s| &s.1),
                    );
                    let mut meta = TensorMeta::new(&name, DType::F32, shape, Role::Fp32Master);
                    meta.layout = layout.clone();
                    plan_to_single(&meta);
                }
            }
        }
    }
}

/// A mutated `mp_rank_00_model_states.pt` beside the real optimizer files of the `zero1` fixture:
/// opened as a DeepSpeed checkpoint (param shapes, groups, partitions → layouts) and every tensor
/// merged. Nothing when the fixtures are not at hand.
pub fn deepspeed_states(data: &[u8]) {
    let Some(base) = zero1_tag() else { return };
    let Ok(dir) = tempfile::tempdir() else { return };
    let tag = dir.path().join("global_step3");
    if std::fs::create_dir(&tag).is_err() {
        return;
    }
    let Ok(files) = std::fs::read_dir(base) else {
        return;
    };
    for f in files.flatten() {
        let name = f.file_name();
        if name.to_string_lossy().ends_with("_optim_states.pt") {
            // A link, not a copy: the optimizer files are only read.
            let _ = std::os::unix::fs::symlink(f.path(), tag.join(&name));
        }
    }
    if std::fs::write(tag.join("mp_rank_00_model_states.pt"), data).is_err() {
        return;
    }
    let opts = uc_store::deepspeed::Assume::default();
    let Ok(ck) = uc_store::deepspeed::DsCheckpoint::open(&tag, None, &opts) else {
        return;
    };
    for out in ck.outputs() {
        let _ = ck.read(&out);
    }
}

/// The `zero1` fixture's tag folder, when `../shared` (or `$UC_SHARED`) has it.
pub fn zero1_tag() -> Option<&'static Path> {
    static TAG: OnceLock<Option<PathBuf>> = OnceLock::new();
    TAG.get_or_init(|| {
        let p = crate::corpus::fixtures_root()?.join("deepspeed/zero1/global_step3");
        p.is_dir().then_some(p)
    })
    .as_deref()
}

/// Sources → pieces → a plan into one rank; every step may fail, none may panic.
fn plan_to_single(meta: &TensorMeta) {
    let Ok(src) = uc_merge::pieces(meta) else {
        return;
    };
    // Bound the work a crafted shape can ask for (a plan is linear in the pieces, not the bytes).
    if src.len() > 1 << 16 {
        return;
    }
    let mut dst = Vec::new();
    uc_merge::layout_pieces(&meta.shape, &Layout::single(), &mut dst);
    let _ = uc_merge::plan(&meta.name, &meta.shape, &src, &dst, Default::default());
}

/// Every `name → shape` of `param_shapes` (a list of dicts, one per param group, or one dict).
fn param_shapes(j: &J) -> Vec<(String, Vec<u64>)> {
    let groups = match &j["param_shapes"] {
        J::Array(gs) => gs.iter().collect(),
        g @ J::Object(_) => vec![g],
        _ => vec![],
    };
    groups
        .into_iter()
        .filter_map(J::as_object)
        .flatten()
        .filter_map(|(name, s)| {
            let dims = s
                .as_array()?
                .iter()
                .map(J::as_u64)
                .collect::<Option<Vec<_>>>()?;
            Some((name.clone(), dims))
        })
        .collect()
}

/// `[u32 LE n][n bytes][rest]` → (the n bytes, the rest).
pub fn split_len_prefixed(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let body = data.get(4..)?;
    (n <= body.len()).then(|| body.split_at(n))
}

/// A relative path of plain components (no `..`, no root, no empty parts).
fn is_plain_rel(r: &str) -> bool {
    !r.is_empty()
        && r.len() < 256
        && r.split('/').all(|c| {
            !c.is_empty() && c != "." && c != ".." && !c.contains('\\') && !c.contains('\0')
        })
}
