//! Test helpers shared by uc-torch's and uc-store's tests: fixture paths, a stored-zip writer and
//! pickle byte builders (uc-store's tests include this file by path).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Root of the DeepSpeed fixtures.
pub const DEEPSPEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/deepspeed"
);
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

/// Every entry of a zip: (name, data offset, bytes), checking each is stored and CRC-valid.
pub fn zip_entries(path: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            assert_eq!(f.compression(), zip::CompressionMethod::Stored);
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut buf).unwrap(); // verifies the CRC
            (f.name().unwrap().to_string(), f.data_start().unwrap(), buf)
        })
        .collect()
}
