//! Shared test helpers: fixture paths, a stored-zip writer and pickle byte builders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Root of the DeepSpeed fixtures.
pub const DEEPSPEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/deepspeed"
);
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

/// Root of the DCP fixtures.
pub const DCP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/dcp");
/// Root of the Megatron fixtures.
pub const MEGATRON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/megatron"
);

/// Every file under `root` whose name satisfies `keep`, sorted.
pub fn walk(root: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).expect("read fixture dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if keep(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The `param` tensor (or the bare tensor) of a DeepSpeed universal `.pt` file: dtype, shape, bytes.
pub fn universal_param(path: &Path) -> (uc_schema::DType, Vec<u64>, Vec<u8>) {
    use uc_store::pickle::{Allowlist, PyValue};
    let f = uc_store::pt::PtFile::open(path, &Allowlist::deepspeed())
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let t = match f.root() {
        PyValue::Tensor(t) => t.clone(),
        v => v
            .get("param")
            .and_then(PyValue::as_tensor)
            .cloned()
            .unwrap_or_else(|| panic!("{path:?}: no param")),
    };
    let bytes = f.tensor_data("param", &t).unwrap().into_owned();
    (t.dtype, t.shape.clone(), bytes)
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

/// A stored (uncompressed) zip archive holding `entries`, like torch.save writes.
pub fn build_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let off = out.len() as u32;
        let crc = 0u32;
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        hdr.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        hdr.extend_from_slice(&crc.to_le_bytes());
        hdr.extend_from_slice(&(data.len() as u32).to_le_bytes());
        hdr.extend_from_slice(&(data.len() as u32).to_le_bytes());
        hdr.extend_from_slice(&(name.len() as u16).to_le_bytes());
        hdr.extend_from_slice(&0u16.to_le_bytes());
        hdr.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&hdr);
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// Pickle bytes for `GLOBAL module name` (protocol-2 text form).
pub fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

/// Pickle bytes for a BINUNICODE string.
pub fn unicode(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// Pickle bytes for a small non-negative int (BININT).
pub fn int(i: i32) -> Vec<u8> {
    let mut v = vec![b'J'];
    v.extend_from_slice(&i.to_le_bytes());
    v
}

/// Pickle bytes for a tuple of ints (MARK … TUPLE).
pub fn int_tuple(xs: &[i32]) -> Vec<u8> {
    let mut v = vec![b'('];
    for &x in xs {
        v.extend(int(x));
    }
    v.push(b't');
    v
}

/// A protocol-2 `data.pkl` holding one `_rebuild_tensor_v2` float32 tensor over storage `0`.
pub fn tensor_pickle(storage_numel: i32, offset: i32, shape: &[i32], stride: &[i32]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(global("torch._utils", "_rebuild_tensor_v2"));
    p.push(b'(');
    // persistent id ('storage', torch.FloatStorage, '0', 'cpu', numel)
    p.push(b'(');
    p.extend(unicode("storage"));
    p.extend(global("torch", "FloatStorage"));
    p.extend(unicode("0"));
    p.extend(unicode("cpu"));
    p.extend(int(storage_numel));
    p.push(b't');
    p.push(b'Q');
    p.extend(int(offset));
    p.extend(int_tuple(shape));
    p.extend(int_tuple(stride));
    p.push(0x89);
    p.extend(global("collections", "OrderedDict"));
    p.push(b')');
    p.push(b'R');
    p.push(b't');
    p.push(b'R');
    p.push(b'.');
    p
}

/// A torch.save-like archive with one float32 tensor whose storage holds `values`.
pub fn tensor_archive(
    values: &[f32],
    offset: i32,
    shape: &[i32],
    stride: &[i32],
    storage_numel: i32,
) -> Vec<u8> {
    let pkl = tensor_pickle(storage_numel, offset, shape, stride);
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    build_zip(&[
        ("archive/data.pkl", &pkl),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &data),
        ("archive/version", b"3\n"),
    ])
}
