//! Native universal format: round trips, file splitting, safetensors validity, checksums, and that a
//! failed or refused write leaves nothing behind.

use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use uc_schema::{DType, Role, TensorMeta, Topology, Value};
use uc_store::native::{NativeCheckpoint, NativeOptions, NativeWriter};
use uc_store::universal::{write_universal_state, write_universal_step, UniversalKind};
use uc_store::StoreError;
use uc_torch::{write_pt, PtTensor, PtValue};

/// A small model: params, fp32 masters, Adam moments and steps of several dtypes and shapes.
fn metas() -> Vec<TensorMeta> {
    let m = |n: &str, d: DType, s: &[u64], r: Role| TensorMeta::new(n, d, s.to_vec(), r);
    vec![
        m("embed.weight", DType::BF16, &[10, 4], Role::Param),
        m("embed.weight", DType::F32, &[10, 4], Role::Fp32Master),
        m("embed.weight", DType::F32, &[10, 4], Role::ExpAvg),
        m("embed.weight", DType::F32, &[10, 4], Role::ExpAvgSq),
        m("embed.weight", DType::F32, &[], Role::Step),
        m(
            "layers.0.attn.qkv.weight",
            DType::F32,
            &[12, 4],
            Role::Fp32Master,
        ),
        m(
            "layers.0.attn.qkv.weight",
            DType::F32,
            &[12, 4],
            Role::ExpAvg,
        ),
        m(
            "layers.0.attn.qkv.weight",
            DType::F32,
            &[12, 4],
            Role::ExpAvgSq,
        ),
        m("layers.0.attn.qkv.weight", DType::F32, &[], Role::Step),
        m("norm.bias", DType::F16, &[3], Role::Param),
        m("rope.inv_freq", DType::F64, &[2], Role::Buffer),
        m("tokens_seen", DType::I64, &[], Role::Buffer),
        m("mask", DType::Bool, &[5], Role::Buffer),
        m("empty", DType::U8, &[0, 3], Role::Param),
    ]
}

/// Deterministic distinct bytes for each tensor.
fn bytes_of(i: usize, m: &TensorMeta) -> Vec<u8> {
    (0..m.nbytes())
        .map(|j| (j as usize * 31 + i * 7 + 1) as u8)
        .collect()
}

fn state() -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("step".to_string(), Value::Int(3)),
        ("lr".to_string(), Value::Float(0.01)),
    ])
}

/// Writes the model with rayon (whole tensors, streamed tensors and tensors in parts).
fn write_model(dir: &Path, opts: &NativeOptions) -> uc_schema::Manifest {
    let metas = metas();
    let w = NativeWriter::create(dir, &metas, opts).unwrap();
    metas.par_iter().enumerate().for_each(|(i, m)| {
        let b = bytes_of(i, m);
        match i % 3 {
            0 => w.write_tensor(&m.name, &m.role, &b).unwrap(),
            1 => {
                let d = w
                    .write_tensor_with(&m.name, &m.role, |sink| {
                        for ch in b.chunks(5) {
                            sink.write_all(ch)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(d, blake3::hash(&b), "the digest of the bytes written");
            }
            _ => {
                let half = b.len() / 2;
                w.write_part(&m.name, &m.role, half as u64, &b[half..])
                    .unwrap();
                w.write_part(&m.name, &m.role, 0, &b[..half]).unwrap();
            }
        }
    });
    w.finish(Topology::new(&[("dp", 2), ("tp", 2)], 1), state())
        .unwrap()
}

#[test]
fn round_trip_bytes_equal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let opts = NativeOptions {
        max_file_bytes: 200,
        ..NativeOptions::default()
    };
    let written = write_model(&dir, &opts);
    assert!(dir.join("COMPLETE").is_file());
    assert!(
        written.files.len() > 2,
        "200-byte bound should give several files: {:?}",
        written.files
    );
    let ck = NativeCheckpoint::open(&dir).unwrap();
    assert_eq!(ck.manifest(), &written);
    ck.verify().unwrap();
    for (i, m) in metas().iter().enumerate() {
        assert_eq!(
            ck.tensor(&m.name, &m.role).unwrap(),
            bytes_of(i, m),
            "{} {:?}",
            m.name,
            m.role
        );
    }
    let key = |n: &str, r: Role| ck.entry(n, &r).unwrap().storage.clone().unwrap().key;
    assert_eq!(key("embed.weight", Role::Fp32Master), "embed.weight");
    assert_eq!(key("embed.weight", Role::Param), "embed.weight/param");
    assert_eq!(
        key("embed.weight", Role::ExpAvgSq),
        "embed.weight/exp_avg_sq"
    );
    assert_eq!(
        key("layers.0.attn.qkv.weight", Role::Step),
        "layers.0.attn.qkv.weight/step"
    );
    assert_eq!(key("norm.bias", Role::Param), "norm.bias");
    assert_eq!(ck.manifest().state.get("step"), Some(&Value::Int(3)));
    assert!(matches!(
        ck.tensor("nope", &Role::Param),
        Err(StoreError::MissingKey { .. })
    ));
    // no temporary directory left beside the output
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["ckpt"]);
}

#[test]
fn safetensors_files_follow_the_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let m = write_model(&dir, &NativeOptions::default());
    assert_eq!(m.files.len(), 1);
    let raw = std::fs::read(dir.join(&m.files[0].file)).unwrap();
    let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    let header = std::str::from_utf8(&raw[8..8 + n]).unwrap();
    assert!(header.starts_with('{') && header.trim_end().ends_with('}'));
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    for (i, meta) in metas().iter().enumerate() {
        let e = m.get(&meta.name, &meta.role).unwrap();
        let s = e.storage.as_ref().unwrap();
        let view = st.tensor(&s.key).unwrap();
        assert_eq!(view.data(), bytes_of(i, meta));
        assert_eq!(format!("{:?}", view.dtype()), meta.dtype.name());
        assert_eq!(
            view.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
            meta.shape
        );
        assert_eq!(&raw[s.start as usize..s.end as usize], view.data());
        assert_eq!(
            s.start % meta.dtype.size() as u64,
            0,
            "{} misaligned",
            s.key
        );
    }
    assert_eq!(
        m.files[0].checksum,
        parts_checksum(&raw, &m, &m.files[0].file)
    );
}

/// The README's checksum scheme, computed independently of the writer: the file cut at every tensor
/// start and end, BLAKE3 of each part, BLAKE3 over `len u64 LE ‖ digest` of the parts in order.
fn parts_checksum(raw: &[u8], m: &uc_schema::Manifest, file: &str) -> String {
    let mut cuts = vec![0, raw.len() as u64];
    for st in m.tensors.iter().filter_map(|e| e.storage.as_ref()) {
        if st.file == file {
            cuts.extend([st.start, st.end]);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut h = blake3::Hasher::new();
    for w in cuts.windows(2) {
        h.update(&(w[1] - w[0]).to_le_bytes());
        h.update(blake3::hash(&raw[w[0] as usize..w[1] as usize]).as_bytes());
    }
    format!("blake3-parts:{}", h.finalize().to_hex())
}

#[test]
fn every_file_checksum_follows_the_documented_scheme() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let opts = NativeOptions {
        max_file_bytes: 200,
        ..NativeOptions::default()
    };
    let m = write_model(&dir, &opts);
    assert!(m.files.len() > 1);
    for f in &m.files {
        let raw = std::fs::read(dir.join(&f.file)).unwrap();
        assert_eq!(f.checksum, parts_checksum(&raw, &m, &f.file), "{}", f.file);
    }
}

#[test]
fn any_flipped_bit_is_a_checksum_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let m = write_model(&dir, &NativeOptions::default());
    let f = dir.join(&m.files[0].file);
    let raw = std::fs::read(&f).unwrap();
    let header_end = 8 + u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    // the first and last byte of every part (header and each tensor), and a stride through the file
    let mut at: Vec<usize> = vec![0, 8, raw.len() - 1];
    for st in m.tensors.iter().filter_map(|e| e.storage.as_ref()) {
        if st.end > st.start {
            at.extend([st.start as usize, st.end as usize - 1]);
        }
    }
    at.extend((0..raw.len()).step_by(13));
    for (k, &i) in at.iter().enumerate() {
        let mut bad = raw.clone();
        bad[i] ^= 1 << (k % 8);
        std::fs::write(&f, &bad).unwrap();
        match NativeCheckpoint::open(&dir).map(|c| c.verify()) {
            Ok(Err(StoreError::Checksum { file, .. })) => assert_eq!(file, m.files[0].file),
            // a flip in the header may make it unreadable or disagree with uc.json: refused at open
            Err(_) if i < header_end => {}
            other => panic!("bit flip at byte {i} not caught: {other:?}"),
        }
    }
    std::fs::write(&f, &raw).unwrap();
    NativeCheckpoint::open(&dir).unwrap().verify().unwrap();
}

#[test]
fn sha256_checksums_of_older_checkpoints_still_verify() {
    use sha2::{Digest, Sha256};
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let mut m = write_model(&dir, &NativeOptions::default());
    for f in &mut m.files {
        let raw = std::fs::read(dir.join(&f.file)).unwrap();
        f.checksum = format!("sha256:{}", hex(&Sha256::digest(&raw)));
    }
    let json = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(dir.join("uc.json"), &json).unwrap();
    let marker = format!("sha256:{}\n", hex(&Sha256::digest(&json)));
    std::fs::write(dir.join("COMPLETE"), marker).unwrap();
    NativeCheckpoint::open(&dir).unwrap().verify().unwrap();
    let f = dir.join(&m.files[0].file);
    let mut raw = std::fs::read(&f).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 2;
    std::fs::write(&f, &raw).unwrap();
    let err = NativeCheckpoint::open(&dir).unwrap().verify().unwrap_err();
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
}

#[test]
fn flipped_byte_is_a_checksum_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let m = write_model(&dir, &NativeOptions::default());
    let f = dir.join(&m.files[0].file);
    let mut raw = std::fs::read(&f).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x40;
    std::fs::write(&f, &raw).unwrap();
    let ck = NativeCheckpoint::open(&dir).unwrap();
    match ck.verify() {
        Err(StoreError::Checksum {
            file,
            expected,
            found,
            ..
        }) => {
            assert_eq!(file, m.files[0].file);
            assert_ne!(expected, found);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn edited_manifest_is_a_checksum_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    write_model(&dir, &NativeOptions::default());
    let p = dir.join("uc.json");
    let json = std::fs::read_to_string(&p).unwrap().replace("0.01", "0.02");
    std::fs::write(&p, json).unwrap();
    let err = NativeCheckpoint::open(&dir).unwrap().verify().unwrap_err();
    assert!(
        matches!(err, StoreError::Checksum { ref file, .. } if file == "uc.json"),
        "{err}"
    );
}

#[test]
fn missing_complete_is_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    write_model(&dir, &NativeOptions::default());
    std::fs::remove_file(dir.join("COMPLETE")).unwrap();
    let err = NativeCheckpoint::open(&dir).unwrap_err();
    assert!(matches!(err, StoreError::Incomplete { .. }), "{err}");
}

#[test]
fn truncated_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let m = write_model(&dir, &NativeOptions::default());
    let f = dir.join(&m.files[0].file);
    let raw = std::fs::read(&f).unwrap();
    std::fs::write(&f, &raw[..raw.len() - 4]).unwrap();
    let err = NativeCheckpoint::open(&dir).unwrap_err();
    assert!(matches!(err, StoreError::Truncated { .. }), "{err}");
}

#[test]
fn existing_output_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    let err = NativeWriter::create(&dir, &metas(), &NativeOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::OutputExists { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn unsafe_names_are_refused_before_anything_is_written() {
    for bad in ["../x", "a/b", "..", "x\\y", "/abs"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ckpt");
        let metas = vec![TensorMeta::new(bad, DType::F32, vec![2], Role::Param)];
        let err = NativeWriter::create(&dir, &metas, &NativeOptions::default()).unwrap_err();
        assert!(matches!(err, StoreError::Schema { .. }), "{bad}: {err}");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{bad}: something was created"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let metas = vec![TensorMeta::new(
        "w",
        DType::F32,
        vec![2],
        Role::OptimState("../m".into()),
    )];
    assert!(NativeWriter::create(tmp.path().join("c"), &metas, &NativeOptions::default()).is_err());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn unfinished_or_failed_writes_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let metas = metas();
    // dropped before finish
    {
        let w = NativeWriter::create(&dir, &metas, &NativeOptions::default()).unwrap();
        w.write_tensor(&metas[0].name, &metas[0].role, &bytes_of(0, &metas[0]))
            .unwrap();
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    // finish with a tensor missing
    let w = NativeWriter::create(&dir, &metas, &NativeOptions::default()).unwrap();
    for (i, m) in metas.iter().enumerate().skip(1) {
        w.write_tensor(&m.name, &m.role, &bytes_of(i, m)).unwrap();
    }
    let err = w.finish(Topology::default(), BTreeMap::new()).unwrap_err();
    assert!(matches!(err, StoreError::Unwritten { .. }), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn wrong_sizes_and_unknown_tensors_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let metas = vec![TensorMeta::new("w", DType::F32, vec![2], Role::Param)];
    let w = NativeWriter::create(tmp.path().join("c"), &metas, &NativeOptions::default()).unwrap();
    assert!(matches!(
        w.write_tensor("w", &Role::Param, &[0; 7]),
        Err(StoreError::BadTensor { .. })
    ));
    assert!(matches!(
        w.write_part("w", &Role::Param, 4, &[0; 5]),
        Err(StoreError::BadTensor { .. })
    ));
    assert!(matches!(
        w.write_tensor("v", &Role::Param, &[0; 8]),
        Err(StoreError::BadTensor { .. })
    ));
    assert!(matches!(
        w.write_tensor("w", &Role::ExpAvg, &[0; 8]),
        Err(StoreError::BadTensor { .. })
    ));
    let short = w.write_tensor_with("w", &Role::Param, |s| s.write_all(&[1; 4]));
    assert!(matches!(short, Err(StoreError::BadTensor { .. })));
    let over = w.write_tensor_with("w", &Role::Param, |s| s.write_all(&[1; 9]));
    assert!(matches!(over, Err(StoreError::BadTensor { .. })));
    let dup = vec![metas[0].clone(), metas[0].clone()];
    assert!(matches!(
        NativeWriter::create(tmp.path().join("d"), &dup, &NativeOptions::default()),
        Err(StoreError::BadTensor { .. })
    ));
}

#[test]
fn empty_checkpoint_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let w = NativeWriter::create(&dir, &[], &NativeOptions::default()).unwrap();
    let m = w.finish(Topology::default(), BTreeMap::new()).unwrap();
    assert!(m.files.is_empty());
    let ck = NativeCheckpoint::open(&dir).unwrap();
    ck.verify().unwrap();
    assert!(ck.manifest().tensors.is_empty());
}

/// With `UC_INTEROP_DIR` set, writes a native checkpoint and DeepSpeed universal files there for the
/// Python checks in `tests/interop/` (`check_native.py`, `check_pt.py`).
#[test]
fn interop_outputs() {
    let Some(out) = std::env::var_os("UC_INTEROP_DIR") else {
        return;
    };
    let out = Path::new(&out);
    let native = out.join("native");
    let _ = std::fs::remove_dir_all(&native);
    write_model(
        &native,
        &NativeOptions {
            max_file_bytes: 200,
            ..NativeOptions::default()
        },
    );
    let zero = out.join("universal/zero");
    let _ = std::fs::remove_dir_all(out.join("universal"));
    std::fs::create_dir_all(&zero).unwrap();
    let vals: Vec<f32> = (0..4 * 3 * 2).map(|i| i as f32 * 0.5 - 3.0).collect();
    let b: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
    let t = |shape: Vec<u64>, rg: bool| {
        PtTensor::from_bytes(DType::F32, shape, &b).with_requires_grad(rg)
    };
    write_universal_state(
        &zero,
        "w.cat",
        "fp32",
        UniversalKind::CatDim(0),
        t(vec![4, 6], true),
    )
    .unwrap();
    write_universal_state(
        &zero,
        "w.cat",
        "exp_avg",
        UniversalKind::CatDim(0),
        t(vec![4, 6], false),
    )
    .unwrap();
    write_universal_step(&zero, "w.cat", 3.0).unwrap();
    write_universal_state(
        &zero,
        "w.vocab",
        "fp32",
        UniversalKind::Vocab,
        t(vec![6, 4], true),
    )
    .unwrap();
    write_universal_state(
        &zero,
        "w.only",
        "fp32",
        UniversalKind::ParamOnly,
        t(vec![24], true),
    )
    .unwrap();
    let expert = UniversalKind::Expert { num_experts: 4 };
    write_universal_state(&zero, "w.experts", "fp32", expert, t(vec![4, 3, 2], true)).unwrap();
    write_universal_state(
        &zero,
        "w.flat",
        "exp_avg_sq",
        UniversalKind::Bare,
        t(vec![24], false),
    )
    .unwrap();
    let bf: Vec<u8> = vals
        .iter()
        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
        .collect();
    let big = PtTensor::streamed(DType::BF16, vec![2, 3, 4], move |w| w.write_all(&bf));
    write_universal_state(&zero, "w.bf16", "fp32", UniversalKind::CatDim(1), big).unwrap();
    // the same value check_pt.py builds and saves with torch.save (multi.torch.pt) to compare bytes
    let a: Vec<u8> = (0..15).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let b: Vec<u8> = (0..7)
        .flat_map(|i| half::bf16::from_f32(i as f32).to_le_bytes())
        .collect();
    let multi = PtValue::OrderedDict(vec![
        (
            "a".into(),
            PtValue::Tensor(PtTensor::from_bytes(DType::F32, vec![3, 5], &a)),
        ),
        ("n".into(), PtValue::Int(7)),
        (
            "b".into(),
            PtValue::Tensor(PtTensor::from_bytes(DType::BF16, vec![7], &b)),
        ),
        (
            "t".into(),
            PtValue::Tuple(vec![
                PtValue::Int(1),
                PtValue::Float(2.5),
                PtValue::str("x"),
                PtValue::None,
                PtValue::List(vec![PtValue::Bool(true)]),
            ]),
        ),
    ]);
    write_pt(out.join("universal/multi.pt"), multi).unwrap();
    std::fs::File::create(out.join("universal/values.txt"))
        .unwrap()
        .write_all(format!("{vals:?}").as_bytes())
        .unwrap();
}

#[test]
fn manifest_disagreeing_with_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    write_model(&dir, &NativeOptions::default());
    let p = dir.join("uc.json");
    let orig: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = orig.clone();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        NativeCheckpoint::open(&dir).unwrap_err()
    };
    let e = edit(&|v| {
        v["tensors"][0]["storage"]["start"] =
            (4 + v["tensors"][0]["storage"]["start"].as_u64().unwrap()).into()
    });
    assert!(matches!(e, StoreError::BadTensor { .. }), "{e}");
    let e = edit(&|v| v["tensors"][0]["storage"]["key"] = "nope".into());
    assert!(matches!(e, StoreError::MissingKey { .. }), "{e}");
    let e = edit(&|v| v["tensors"][0]["meta"]["dtype"] = "F16".into());
    assert!(matches!(e, StoreError::BadTensor { .. }), "{e}");
    let e = edit(&|v| v["files"][0]["file"] = "../outside.safetensors".into());
    assert!(matches!(e, StoreError::Schema { .. }), "{e}");
    let e = edit(&|v| v["version"] = 99.into());
    assert!(matches!(e, StoreError::Schema { .. }), "{e}");
    std::fs::write(&p, b"{ not json").unwrap();
    let e = NativeCheckpoint::open(&dir).unwrap_err();
    assert!(matches!(e, StoreError::Format { .. }), "{e}");
}
