//! Malformed `.pt` archives: every failure is a typed error naming the file (and tensor), never a panic.

mod common;

use common::{build_zip, global, tensor_archive, unicode, DEEPSPEED};
use std::path::Path;
use uc_torch::pickle::Allowlist;
use uc_torch::PtFile;
use uc_torch::TorchError;

const SMALL_PT: &str = "zero1/global_step3_universal/zero/blocks.0.fc1.bias/fp32.pt";

fn small_pt() -> Vec<u8> {
    std::fs::read(Path::new(DEEPSPEED).join(SMALL_PT)).unwrap()
}

fn from_bytes(b: Vec<u8>) -> Result<PtFile, TorchError> {
    PtFile::from_bytes("mem.pt", b, &Allowlist::deepspeed())
}

#[test]
fn truncated_file_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let full = small_pt();
    let p = dir.path().join("half.pt");
    std::fs::write(&p, &full[..full.len() / 2]).unwrap();
    match PtFile::open(&p, &Allowlist::deepspeed()) {
        Err(TorchError::Truncated { path, .. }) => assert_eq!(path, p),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_is_bad_zip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage.pt");
    std::fs::write(
        &p,
        b"this is not a zip archive at all, just some text bytes....",
    )
    .unwrap();
    assert!(matches!(
        PtFile::open(&p, &Allowlist::deepspeed()),
        Err(TorchError::BadZip { .. })
    ));
    let empty = dir.path().join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        PtFile::open(&empty, &Allowlist::deepspeed()),
        Err(TorchError::BadZip { .. })
    ));
    // Central directory offset pointing past the end.
    let mut z = build_zip(&[("archive/data.pkl", &[0x80, 2, b'N', b'.'])]);
    let n = z.len();
    z[n - 6..n - 2].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(from_bytes(z), Err(TorchError::BadZip { .. })));
}

#[test]
fn missing_file_is_io() {
    assert!(matches!(
        PtFile::open("/nonexistent/x.pt", &Allowlist::deepspeed()),
        Err(TorchError::Io { .. })
    ));
}

#[test]
fn legacy_format_is_refused() {
    // The legacy format starts with a pickled magic number.
    let b = vec![
        0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ];
    assert!(matches!(from_bytes(b), Err(TorchError::Format { why, .. }) if why.contains("legacy")));
}

#[test]
fn disallowed_global_in_archive() {
    let mut pkl = vec![0x80, 2];
    pkl.extend(global("os", "system"));
    pkl.extend(unicode("echo pwned"));
    pkl.extend([0x85, b'R', b'.']);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("evil.pt");
    std::fs::write(
        &p,
        build_zip(&[("archive/data.pkl", &pkl), ("archive/version", b"3\n")]),
    )
    .unwrap();
    match PtFile::open(&p, &Allowlist::deepspeed()) {
        Err(TorchError::DisallowedGlobal { path, module, name }) => {
            assert_eq!((path, module.as_str(), name.as_str()), (p, "os", "system"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tensor_past_its_storage_entry() {
    // View [2, 6) of a 4-element storage.
    let z = tensor_archive(&[1.0, 2.0, 3.0, 4.0], 2, &[4], &[1], 4);
    match from_bytes(z) {
        Err(TorchError::BadTensor { tensor, why, .. }) => {
            assert_eq!(tensor, "<root>");
            assert!(why.contains("runs past the end of storage"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Storage claims 10 elements, entry holds 4.
    let z = tensor_archive(&[1.0, 2.0, 3.0, 4.0], 0, &[4], &[1], 10);
    assert!(
        matches!(from_bytes(z), Err(TorchError::BadTensor { why, .. }) if why.contains("entry holds 16 bytes"))
    );
    // Storage entry missing altogether.
    let pkl = common::tensor_pickle(4, 0, &[4], &[1]);
    let z = build_zip(&[("archive/data.pkl", &pkl)]);
    assert!(
        matches!(from_bytes(z), Err(TorchError::BadTensor { why, .. }) if why.contains("missing"))
    );
}

#[test]
fn truncated_pickle_inside_archive() {
    let pkl = common::tensor_pickle(4, 0, &[4], &[1]);
    let cut = &pkl[..pkl.len() - 5];
    let data = [0u8; 16];
    let z = build_zip(&[("archive/data.pkl", cut), ("archive/data/0", &data)]);
    assert!(matches!(from_bytes(z), Err(TorchError::Truncated { .. })));
}

#[test]
fn no_data_pkl_and_big_endian() {
    let z = build_zip(&[("archive/version", b"3\n")]);
    assert!(matches!(from_bytes(z), Err(TorchError::Format { .. })));
    let pkl = [0x80, 2, b'N', b'.'];
    let z = build_zip(&[("archive/data.pkl", &pkl), ("archive/byteorder", b"big")]);
    assert!(matches!(from_bytes(z), Err(TorchError::Format { why, .. }) if why.contains("little")));
}

#[test]
fn strided_tensor_is_gathered() {
    // Storage 0..6 viewed as the transpose of a [2,3] matrix: shape [3,2], stride [1,3].
    let vals = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
    let pt = from_bytes(tensor_archive(&vals, 0, &[3, 2], &[1, 3], 6)).unwrap();
    let t = pt.root().as_tensor().unwrap();
    assert!(!t.is_contiguous());
    assert!(
        matches!(pt.tensor_bytes("t", t), Err(TorchError::BadTensor { tensor, .. }) if tensor == "t")
    );
    let got: Vec<f32> = pt
        .tensor_data("t", t)
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // A contiguous view with an offset borrows.
    let pt = from_bytes(tensor_archive(&vals, 2, &[2, 2], &[2, 1], 6)).unwrap();
    let t = pt.root().as_tensor().unwrap();
    let b = pt.tensor_bytes("t", t).unwrap();
    assert_eq!(
        b,
        vals[2..6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>()
    );
    assert!(matches!(
        pt.tensor_data("t", t).unwrap(),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn open_range_checks_bounds_and_embedded_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let inner = small_pt();
    let mut outer = b"0123456789".to_vec();
    outer.extend(&inner);
    outer.extend(b"tail");
    let p = dir.path().join("blob.distcp");
    std::fs::write(&p, &outer).unwrap();
    let pt = PtFile::open_range(&p, 10, inner.len() as u64, &Allowlist::deepspeed()).unwrap();
    let t = pt.cursor().key("param").unwrap().as_tensor().unwrap();
    let r = pt.tensor_file_range("param", t).unwrap();
    assert_eq!(
        &outer[r.start as usize..r.end as usize],
        pt.tensor_bytes("param", t).unwrap()
    );
    let err = PtFile::open_range(&p, 10, outer.len() as u64, &Allowlist::deepspeed()).unwrap_err();
    assert!(matches!(err, TorchError::Truncated { .. }));
    // A range that cuts the archive short.
    let err =
        PtFile::open_range(&p, 10, inner.len() as u64 - 30, &Allowlist::deepspeed()).unwrap_err();
    assert!(
        matches!(
            err,
            TorchError::Truncated { .. } | TorchError::BadZip { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn every_prefix_of_a_real_file_fails_cleanly() {
    let full = small_pt();
    for cut in 0..full.len() {
        if from_bytes(full[..cut].to_vec()).is_ok() {
            panic!("prefix of {cut} bytes opened");
        }
    }
}

#[test]
fn corrupted_real_files_never_panic() {
    let full = small_pt();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        let mut q = full.clone();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed % q.len() as u64) as usize;
        q[i] ^= (seed >> 40) as u8 | 1;
        if let Ok(pt) = from_bytes(q) {
            for (name, t) in pt.tensors() {
                let _ = pt.tensor_data(&name, t);
            }
        }
    }
}
