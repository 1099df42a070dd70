//! Shared test helpers: uc-torch's fixture paths and byte builders, plus uc-store's own.
#![allow(dead_code)]

#[path = "../../../uc-torch/tests/common/mod.rs"]
mod support;

use std::path::Path;
#[allow(unused_imports)]
pub use support::*;

/// Every case of the shared DeepSpeed fixtures.
pub const DEEPSPEED_CASES: &[&str] = &[
    "zero1",
    "zero2",
    "zero3",
    "bf16_zero1",
    "tp2_zero1",
    "tp2_dp2_zero2_bf16",
    "pp2_zero1",
    "pp2_dp2_zero1_bf16",
    "pp2_tied_zero1",
    "pp2_dp2_tied_zero1",
    "ep2_zero2",
    "ep2_zero1_bf16",
    "ep2_zero3",
];

/// The DeepSpeed fixtures `ds_to_universal` cannot convert (no `global_step3_universal/`): native
/// DeepSpeed MoE with and without ZeRO, AutoEP folded with AutoTP.
pub const DEEPSPEED_MOE_CASES: &[&str] = &[
    "moe_ep2_zero2",
    "moe_ep2_zero1",
    "moe_ep2_nozero",
    "ep2_tp2_zero1",
];

/// The `param` tensor (or the bare tensor) of a DeepSpeed universal `.pt` file: dtype, shape, bytes.
pub fn universal_param(path: &Path) -> (uc_schema::DType, Vec<u64>, Vec<u8>) {
    use uc_torch::{Allowlist, PyValue};
    let f = uc_torch::PtFile::open(path, &Allowlist::deepspeed())
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let t = match f.root() {
        PyValue::Tensor(t) => (**t).clone(),
        v => v
            .get("param")
            .and_then(PyValue::as_tensor)
            .cloned()
            .unwrap_or_else(|| panic!("{path:?}: no param")),
    };
    let bytes = f.tensor_data("param", &t).unwrap().into_owned();
    (t.dtype, t.shape.clone(), bytes)
}

/// The keys of a DeepSpeed universal `.pt` file's dict, in order, each with its value when it is not
/// a tensor (`cat_dim`, `vocab_tensor`, …); `None` for a bare tensor.
pub fn universal_keys(path: &Path) -> Option<Vec<(String, Option<String>)>> {
    use uc_torch::{Allowlist, PyValue};
    let f = uc_torch::PtFile::open(path, &Allowlist::deepspeed())
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    match f.root() {
        PyValue::Dict(d) => Some(
            d.iter()
                .map(|(k, v)| {
                    let k = k
                        .as_str()
                        .unwrap_or_else(|| panic!("{path:?}: non-string key"));
                    let v = (!matches!(v, PyValue::Tensor(_))).then(|| format!("{v:?}"));
                    (k.to_string(), v)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Every file under `dir`, as paths relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Copies the folder `src` to `dst` (created), recursively, files made writable.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create copy dir");
    for e in std::fs::read_dir(src).expect("read fixture dir") {
        let p = e.expect("dir entry").path();
        let to = dst.join(p.file_name().expect("file name"));
        if p.is_dir() {
            copy_dir(&p, &to);
        } else {
            std::fs::copy(&p, &to).expect("copy fixture file");
            let mut perm = std::fs::metadata(&to).expect("metadata").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&to, perm).expect("make writable");
        }
    }
}

/// A `.pt` file's value as a writable tree, for crafting bad input: tensors copied (contiguous),
/// objects with constructor arguments (`ZeroStageEnum(n)`) as their first argument, other objects
/// (`fragment_address`, the loss scaler) with their state.
pub fn pt_value(path: &Path) -> uc_torch::PtValue<'static> {
    let f = uc_torch::PtFile::open(path, &uc_torch::Allowlist::deepspeed())
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    to_pt(&f, f.root())
}

fn to_pt(f: &uc_torch::PtFile, v: &uc_torch::PyValue) -> uc_torch::PtValue<'static> {
    use uc_torch::{PtTensor, PtValue, PyValue};
    match v {
        PyValue::None => PtValue::None,
        PyValue::Bool(b) => PtValue::Bool(*b),
        PyValue::Int(i) => PtValue::Int(*i),
        PyValue::Float(x) => PtValue::Float(*x),
        PyValue::Str(s) => PtValue::Str(s.clone()),
        PyValue::List(l) => PtValue::List(l.iter().map(|x| to_pt(f, x)).collect()),
        PyValue::Tuple(l) => PtValue::Tuple(l.iter().map(|x| to_pt(f, x)).collect()),
        PyValue::Dict(d) if d.iter().all(|(k, _)| k.as_int().is_some()) && !d.is_empty() => {
            PtValue::IntDict(
                d.iter()
                    .map(|(k, v)| (k.as_int().expect("int key"), to_pt(f, v)))
                    .collect(),
            )
        }
        PyValue::Dict(d) => PtValue::Dict(
            d.iter()
                .map(|(k, v)| (k.as_str().expect("str key").to_string(), to_pt(f, v)))
                .collect(),
        ),
        PyValue::Global(g) => PtValue::Global {
            module: g.module.clone(),
            name: g.name.clone(),
        },
        PyValue::Tensor(t) => {
            let bytes: &'static [u8] = Box::leak(
                f.tensor_data("t", t)
                    .expect("tensor data")
                    .into_owned()
                    .into_boxed_slice(),
            );
            PtValue::Tensor(
                PtTensor::from_bytes(t.dtype, t.shape.clone(), bytes)
                    .with_requires_grad(t.requires_grad),
            )
        }
        PyValue::Object(o) if !o.args.is_empty() => to_pt(f, &o.args[0]),
        PyValue::Object(o) => PtValue::Object {
            module: o.class.module.clone(),
            name: o.class.name.clone(),
            state: Box::new(o.state.as_ref().map_or(PtValue::None, |s| to_pt(f, s))),
        },
        other => panic!("{:?}: cannot rewrite a {}", f.path(), other.type_name()),
    }
}

/// The value under `keys` (dict keys, list indices or int-dict keys as decimal text) of `v`.
pub fn pt_at<'v>(
    v: &'v mut uc_torch::PtValue<'static>,
    keys: &[&str],
) -> &'v mut uc_torch::PtValue<'static> {
    use uc_torch::PtValue;
    let mut cur = v;
    for k in keys {
        cur = match cur {
            PtValue::Dict(d) | PtValue::OrderedDict(d) => {
                &mut d
                    .iter_mut()
                    .find(|(n, _)| n == k)
                    .unwrap_or_else(|| panic!("no key {k}"))
                    .1
            }
            PtValue::IntDict(d) => {
                let i: i64 = k.parse().expect("int key");
                &mut d
                    .iter_mut()
                    .find(|(n, _)| *n == i)
                    .unwrap_or_else(|| panic!("no key {k}"))
                    .1
            }
            PtValue::List(l) | PtValue::Tuple(l) => &mut l[k.parse::<usize>().expect("index")],
            PtValue::Object { state, .. } => pt_at(state, &[k]),
            _ => panic!("cannot index with {k}"),
        };
    }
    cur
}

/// Rewrites the `.pt` file at `path` after `edit` changed its value.
pub fn edit_pt(path: &Path, edit: impl FnOnce(&mut uc_torch::PtValue<'static>)) {
    let mut v = pt_value(path);
    edit(&mut v);
    std::fs::remove_file(path).expect("remove the old file");
    uc_torch::write_pt(path, v).unwrap_or_else(|e| panic!("{path:?}: {e}"));
}

/// Exports DeepSpeed fixture folder `src` to `model.safetensors` and checks it against the fixture's
/// `expected.safetensors`: every `<param>/fp32` tensor bit for bit under `<param>`, nothing else in
/// the file, and the bytes read within `max_read` × the weights' bytes. Returns the tensor count.
pub fn export_equals_expected(src: &Path, max_read: f64) -> usize {
    use safetensors::SafeTensors;
    use uc_store::export::{export, ExportOptions, WEIGHTS_NAME};
    let what = src.display();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let o = ExportOptions {
        threads: Some(2),
        ..Default::default()
    };
    let r = export(src, &out, &o, &|_, _, _| {}).unwrap_or_else(|e| panic!("{what}: {e}"));
    let read = r.bytes_read.expect("DeepSpeed reports its reads");
    let ratio = read as f64 / r.source_bytes as f64;
    assert!(
        (1.0..=max_read).contains(&ratio),
        "{what}: read {read} bytes for {} of weights",
        r.source_bytes
    );
    let got = std::fs::read(out.join(WEIGHTS_NAME)).unwrap();
    let got = SafeTensors::deserialize(&got).unwrap();
    let bytes = std::fs::read(src.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut n = 0;
    for name in st.names() {
        let Some(param) = name.strip_suffix("/fp32") else {
            continue;
        };
        let t = got
            .tensor(param)
            .unwrap_or_else(|e| panic!("{what}: {param}: {e}"));
        assert!(
            t.data() == st.tensor(name).unwrap().data(),
            "{what}: {param}"
        );
        n += 1;
    }
    assert_eq!(got.names().len(), n, "{what}: only the weights");
    n
}

/// A writable copy of DeepSpeed fixture `case` in `tmp`: (case folder, its `global_step3` tag folder).
pub fn copy_case(tmp: &Path, case: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dst = tmp.join(case);
    copy_dir(&Path::new(DEEPSPEED).join(case), &dst);
    let tag = dst.join("global_step3");
    (dst, tag)
}

/// Converts `input` into `tmp/out` as `format`, expecting failure; checks that nothing starting with
/// `out` (the output, a temporary or staging sibling) was left in `tmp`.
pub fn convert_err(
    tmp: &Path,
    input: &Path,
    format: uc_store::convert::Format,
) -> uc_store::StoreError {
    use uc_store::convert::{convert, ConvertOptions};
    let out = tmp.join("out");
    let opts = ConvertOptions {
        format,
        threads: Some(2),
        ..Default::default()
    };
    let e = convert(input, &out, &opts, &|_, _, _| {}).expect_err("bad input must be refused");
    assert!(!out.exists(), "output left behind after: {e}");
    let leftovers: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| {
            let n = n.to_string_lossy();
            n.starts_with("out") || n.starts_with(".out")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?} after: {e}");
    e
}

/// Every tensor of `expected` equals what the DCP checkpoint gives for it.
pub fn dcp_equals_expected(label: &str, ck: &uc_store::dcp::DcpCheckpoint, expected: &Path) {
    let bytes = std::fs::read(expected).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let outs = ck.outputs();
    for name in st.names() {
        let (param, key) = name.rsplit_once('/').unwrap();
        let role = uc_schema::Role::from_key(key);
        let meta = outs
            .iter()
            .find(|m| m.name == param && m.role == role)
            .unwrap_or_else(|| panic!("{label}: no {name}"));
        let got = ck.read(meta).unwrap();
        assert!(got == st.tensor(name).unwrap().data(), "{label}: {name}");
    }
}
