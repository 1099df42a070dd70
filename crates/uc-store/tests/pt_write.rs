//! `.pt` writer: torch zip layout, Python-identical pickles, and DeepSpeed universal files compared byte
//! for byte with the ones DeepSpeed wrote in `../shared/fixtures/deepspeed`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use uc_schema::DType;
use uc_store::pt_write::{
    universal_value, write_pt, write_pt_to, write_universal_state, write_universal_step, PtTensor,
    PtValue, UniversalDir, UniversalKind,
};
use uc_store::StoreError;

/// `../shared/fixtures/deepspeed` (or `$UC_SHARED/fixtures/deepspeed`), if present.
fn fixtures() -> Option<PathBuf> {
    let base = std::env::var_os("UC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let p = base.join("fixtures/deepspeed");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: no fixtures at {}", p.display());
        None
    }
}

/// Every entry of a zip: (name, data offset, bytes), checking each is stored and CRC-valid.
fn entries(path: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            assert_eq!(f.compression(), zip::CompressionMethod::Stored);
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).unwrap(); // verifies the CRC
            (f.name().unwrap().to_string(), f.data_start().unwrap(), buf)
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn zip_layout_matches_torch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pt");
    let a = f32_bytes(&(0..15).map(|i| i as f32).collect::<Vec<_>>());
    let b: Vec<u8> = (0..7u16)
        .flat_map(|i| half::bf16::from_f32(i as f32).to_le_bytes())
        .collect();
    let value = PtValue::OrderedDict(vec![
        (
            "a".into(),
            PtValue::Tensor(PtTensor::from_bytes(DType::F32, vec![3, 5], &a)),
        ),
        ("n".into(), PtValue::Int(7)),
        (
            "b".into(),
            PtValue::Tensor(PtTensor::streamed(DType::BF16, vec![7], |w| {
                w.write_all(&b[..5])?;
                w.write_all(&b[5..])
            })),
        ),
    ]);
    write_pt(&path, value).unwrap();
    let e = entries(&path);
    let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "model/data.pkl",
            "model/.format_version",
            "model/.storage_alignment",
            "model/byteorder",
            "model/data/0",
            "model/data/1",
            "model/version",
            "model/.data/serialization_id"
        ]
    );
    for (name, start, _) in &e {
        assert_eq!(start % 64, 0, "{name} data at {start}");
    }
    assert_eq!(e[1].2, b"1");
    assert_eq!(e[2].2, b"64");
    assert_eq!(e[3].2, b"little");
    assert_eq!(e[4].2, a);
    assert_eq!(e[5].2, b);
    assert_eq!(e[6].2, b"3\n");
    assert_eq!(e[7].2.len(), 40);
    assert!(e[7].2.iter().all(u8::is_ascii_digit));
    let pkl = &e[0].2;
    assert!(pkl.starts_with(&[0x80, 2]) && pkl.ends_with(b"."));
    let needle = b"ctorch\nBFloat16Storage\n";
    assert!(pkl.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn plain_values_pickle_like_python() {
    // pickle.dumps(OrderedDict([...]), protocol=2) from CPython 3.11 (see the test body for the value).
    let expected = "800263636f6c6c656374696f6e730a4f726465726564446963740a7100295271012858020000006c727102473f847ae147ae147b580500000062657461737103473feccccccccccccd473fee6666666666668671045805000000737465707371055d7106284b014d2c014a701101004afbffffff8a060000000000018a060000000000ff655805000000666c61677371072888894e580100000078710874710958060000006e6573746564710a7d710b28580100000061710c5d710d580100000062710e7d710f58010000006371102975580300000062696771118a050000008000752e";
    let v = PtValue::OrderedDict(vec![
        ("lr".into(), PtValue::Float(0.01)),
        (
            "betas".into(),
            PtValue::Tuple(vec![PtValue::Float(0.9), PtValue::Float(0.95)]),
        ),
        (
            "steps".into(),
            PtValue::List(
                [1, 300, 70000, -5, 1 << 40, -(1 << 40)]
                    .into_iter()
                    .map(PtValue::Int)
                    .collect(),
            ),
        ),
        (
            "flags".into(),
            PtValue::Tuple(vec![
                PtValue::Bool(true),
                PtValue::Bool(false),
                PtValue::None,
                PtValue::str("x"),
            ]),
        ),
        (
            "nested".into(),
            PtValue::Dict(vec![
                ("a".into(), PtValue::List(vec![])),
                ("b".into(), PtValue::Dict(vec![])),
                ("c".into(), PtValue::Tuple(vec![])),
            ]),
        ),
        ("big".into(), PtValue::Int(1 << 31)),
    ]);
    let mut out = Vec::new();
    write_pt_to(&mut out, "x", v, Path::new("mem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.pt");
    std::fs::write(&p, &out).unwrap();
    let pkl = &entries(&p)[0].2;
    let hex: String = pkl.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expected);
}

/// One fixture universal file and how to rebuild it.
struct Case {
    rel: &'static str,
    kind: UniversalKind,
    shape: &'static [u64],
    requires_grad: bool,
}

const CASES: &[Case] = &[
    Case {
        rel: "bf16_zero1/global_step3_universal/zero/blocks.0.qkv.weight/fp32.pt",
        kind: UniversalKind::CatDim(0),
        shape: &[64, 32],
        requires_grad: true,
    },
    Case {
        rel: "zero2/global_step3_universal/zero/logit_scale/exp_avg_sq.pt",
        kind: UniversalKind::CatDim(0),
        shape: &[1],
        requires_grad: false,
    },
    Case {
        rel: "tp2_zero1/global_step3_universal/zero/lm_head.weight/fp32.pt",
        kind: UniversalKind::Vocab,
        shape: &[96, 32],
        requires_grad: true,
    },
    Case {
        rel: "tp2_zero1/global_step3_universal/zero/embed.weight/exp_avg.pt",
        kind: UniversalKind::CatDim(1),
        shape: &[96, 32],
        requires_grad: false,
    },
    Case {
        rel: "tp2_zero1/global_step3_universal/zero/blocks.0.qkv.weight/fp32.pt",
        kind: UniversalKind::ParamOnly,
        shape: &[64, 32],
        requires_grad: true,
    },
    Case {
        rel: "ep2_zero2/global_step3_universal/zero/model.layers.0.mlp.experts.w1/fp32.pt",
        kind: UniversalKind::Expert { num_experts: 4 },
        shape: &[4, 16, 32],
        requires_grad: true,
    },
    Case {
        rel: "ep2_zero2/global_step3_universal/zero/model.layers.0.mlp.experts.w2/exp_avg.pt",
        kind: UniversalKind::Expert { num_experts: 4 },
        shape: &[4, 32, 16],
        requires_grad: false,
    },
    Case {
        rel: "ep2_zero2/global_step3_universal/zero/model.layers.0.mlp.gate.gate.weight/fp32.pt",
        kind: UniversalKind::ParamOnly,
        shape: &[4, 32],
        requires_grad: false,
    },
    Case {
        rel: "zero3/global_step3_universal/zero/blocks.0.qkv.weight/fp32.pt",
        kind: UniversalKind::Bare,
        shape: &[2048],
        requires_grad: true,
    },
    Case {
        rel: "zero3/global_step3_universal/zero/blocks.0.qkv.weight/exp_avg.pt",
        kind: UniversalKind::Bare,
        shape: &[2048],
        requires_grad: false,
    },
];

/// Asserts our file equals DeepSpeed's except the 40-digit serialization id (and its CRC).
fn assert_same_as_fixture(ours: &Path, theirs: &Path) {
    let (a, b) = (entries(ours), entries(theirs));
    assert_eq!(a.len(), b.len(), "{}", theirs.display());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x.0, x.1),
            (&y.0, y.1),
            "entry name/offset in {}",
            theirs.display()
        );
        if !x.0.ends_with("serialization_id") {
            assert!(
                x.2 == y.2,
                "entry {} differs from {}",
                x.0,
                theirs.display()
            );
        }
    }
    let (ra, rb) = (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap());
    assert_eq!(ra.len(), rb.len(), "file length vs {}", theirs.display());
    let diff = ra.iter().zip(&rb).filter(|(p, q)| p != q).count();
    assert!(diff <= 48, "{diff} bytes differ from {}", theirs.display());
}

#[test]
fn universal_files_match_deepspeed_byte_for_byte() {
    let Some(fx) = fixtures() else { return };
    let out = tempfile::tempdir().unwrap();
    for (n, c) in CASES.iter().enumerate() {
        let theirs = fx.join(c.rel);
        let fe = entries(&theirs);
        let data = &fe.iter().find(|e| e.0.ends_with("/data/0")).unwrap().2;
        let zero = out.path().join(n.to_string());
        std::fs::create_dir(&zero).unwrap();
        let parts: Vec<&str> = c.rel.rsplitn(3, '/').collect();
        let (state, param) = (parts[0].trim_end_matches(".pt"), parts[1]);
        let t = PtTensor::from_bytes(DType::F32, c.shape.to_vec(), data)
            .with_requires_grad(c.requires_grad);
        let ours = write_universal_state(&zero, param, state, c.kind, t).unwrap();
        assert_eq!(ours, zero.join(param).join(format!("{state}.pt")));
        assert_same_as_fixture(&ours, &theirs);
    }
    for case in ["zero1", "bf16_zero1", "tp2_zero1", "pp2_zero1", "ep2_zero2"] {
        let zero = fx.join(case).join("global_step3_universal/zero");
        let param = std::fs::read_dir(&zero)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("step.pt").is_file())
            .unwrap();
        let pname = param.file_name().unwrap().to_str().unwrap();
        let mine = out.path().join(format!("step-{case}"));
        std::fs::create_dir(&mine).unwrap();
        let ours = write_universal_step(&mine, pname, 3.0).unwrap();
        assert_same_as_fixture(&ours, &param.join("step.pt"));
    }
}

#[test]
fn universal_value_key_orders() {
    let keys = |v: &PtValue| match v {
        PtValue::Dict(items) => items.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        _ => vec!["<bare>".to_string()],
    };
    let t = || PtTensor::scalar_f32(1.0);
    assert_eq!(
        keys(&universal_value(UniversalKind::CatDim(0), t())),
        ["cat_dim", "param"]
    );
    assert_eq!(
        keys(&universal_value(UniversalKind::Vocab, t())),
        ["vocab_tensor", "param"]
    );
    assert_eq!(
        keys(&universal_value(UniversalKind::ParamOnly, t())),
        ["param"]
    );
    assert_eq!(
        keys(&universal_value(
            UniversalKind::Expert { num_experts: 4 },
            t()
        )),
        ["param", "cat_dim", "is_expert_param", "ep_num_experts"]
    );
    assert_eq!(keys(&universal_value(UniversalKind::Bare, t())), ["<bare>"]);
}

#[test]
fn unsafe_names_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero");
    std::fs::create_dir(&zero).unwrap();
    for (param, state) in [
        ("../x", "fp32"),
        ("a/b", "fp32"),
        ("ok", "../fp32"),
        ("ok", "a/b"),
        ("..", "fp32"),
        ("", "fp32"),
    ] {
        let t = PtTensor::scalar_f32(1.0);
        let err = write_universal_state(&zero, param, state, UniversalKind::Bare, t).unwrap_err();
        assert!(
            matches!(err, StoreError::Schema { .. }),
            "{param}/{state}: {err}"
        );
    }
    assert_eq!(std::fs::read_dir(&zero).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn bad_sizes_fail_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.pt");
    let t = PtTensor::streamed(DType::F32, vec![4], |w| w.write_all(&[0u8; 12]));
    let err = write_pt(&short, PtValue::Tensor(t)).unwrap_err();
    assert!(matches!(err, StoreError::BadTensor { .. }), "{err}");
    assert!(!short.exists());

    let long = dir.path().join("long.pt");
    let t = PtTensor::streamed(DType::F32, vec![1], |w| w.write_all(&[0u8; 8]));
    assert!(write_pt(&long, PtValue::Tensor(t)).is_err());
    assert!(!long.exists());

    let wrong = dir.path().join("wrong.pt");
    let bytes = [0u8; 6];
    let t = PtTensor::from_bytes(DType::F16, vec![2, 2], &bytes);
    let err = write_pt(&wrong, PtValue::Tensor(t)).unwrap_err();
    assert!(matches!(err, StoreError::BadTensor { .. }), "{err}");
    assert!(!wrong.exists());
}

#[test]
fn refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.pt");
    std::fs::write(&p, b"keep").unwrap();
    let err = write_pt(&p, PtValue::Int(1)).unwrap_err();
    assert!(matches!(err, StoreError::OutputExists { .. }), "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), b"keep");
}

/// A file writer that turns all-zero writes into seeks, so a multi-GiB tensor of zeros costs no disk.
struct Sparse(File);

impl std::io::Write for Sparse {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::io::{Seek, SeekFrom};
        if buf.iter().all(|&b| b == 0) {
            self.0.seek(SeekFrom::Current(buf.len() as i64))?;
            Ok(buf.len())
        } else {
            self.0.write(buf)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A tensor over 4 GiB forces zip64 fields (sizes and a later entry's offset). Slow (CRC of 4.4 GB), so
/// ignored by default: `cargo test -p uc-store --test pt_write -- --ignored`. With `UC_INTEROP_DIR` set the
/// file is kept there as `big.pt` for `torch.load`.
#[test]
#[ignore]
fn zip64_for_tensors_over_4_gib() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("UC_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("big.pt");
    let _ = std::fs::remove_file(&path);
    let numel: u64 = 1_100_000_000;
    let chunk = vec![0u8; 8 << 20];
    let big = PtTensor::streamed(DType::F32, vec![numel], move |w| {
        let mut left = numel * 4;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    let tail: Vec<u8> = f32_bytes(&[1.0, 2.0, 3.0]);
    let value = PtValue::Dict(vec![
        ("big".into(), PtValue::Tensor(big)),
        (
            "after".into(),
            PtValue::Tensor(PtTensor::from_bytes(DType::F32, vec![3], &tail)),
        ),
    ]);
    let file = File::create(&path).unwrap();
    let Sparse(file) = write_pt_to(Sparse(file), "big", value, &path).unwrap();
    file.sync_all().unwrap();
    let mut z = zip::ZipArchive::new(File::open(&path).unwrap()).unwrap();
    let names: Vec<String> = z.file_names().map(|n| n.unwrap().to_string()).collect();
    assert_eq!(names[4], "big/data/0");
    let f = z.by_index(4).unwrap();
    assert_eq!(f.size(), numel * 4);
    assert_eq!(f.data_start().unwrap() % 64, 0);
    drop(f);
    let mut f = z.by_index(5).unwrap();
    assert!(f.header_start() > u32::MAX as u64);
    assert_eq!(f.data_start().unwrap() % 64, 0);
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, tail);
    drop(f);
    let pt = uc_store::pt::PtFile::open(&path, &uc_store::pickle::Allowlist::deepspeed()).unwrap();
    let tensors = pt.tensors();
    assert_eq!(tensors[0].1.shape, vec![numel]);
    assert_eq!(
        &*pt.tensor_data(&tensors[1].0, tensors[1].1).unwrap(),
        &tail[..]
    );
}

#[test]
fn universal_dir_is_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("global_step3_universal");
    {
        let u = UniversalDir::create(&target).unwrap();
        u.write_step("w", 3.0).unwrap();
        assert!(!target.exists());
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "dropped output left files"
    );
    let u = UniversalDir::create(&target).unwrap();
    let b = f32_bytes(&[1.0, 2.0]);
    let t = PtTensor::from_bytes(DType::F32, vec![2], &b).with_requires_grad(true);
    u.write_state("w", "fp32", UniversalKind::CatDim(0), t)
        .unwrap();
    u.write_step("w", 3.0).unwrap();
    assert!(u.write_step("../w", 3.0).is_err());
    let done = u.commit().unwrap();
    assert_eq!(done, target);
    for f in ["COMPLETE", "zero/w/fp32.pt", "zero/w/step.pt"] {
        assert!(target.join(f).is_file(), "{f}");
    }
    assert!(matches!(
        UniversalDir::create(&target),
        Err(StoreError::OutputExists { .. })
    ));
}

/// What we write, the crate's own safe reader (`pt::PtFile`) reads back: names, dtypes, shapes, bytes.
#[test]
fn own_reader_reads_what_we_write() {
    use uc_store::pickle::Allowlist;
    use uc_store::pt::PtFile;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.pt");
    let a = f32_bytes(&(0..24).map(|i| i as f32 - 4.0).collect::<Vec<_>>());
    let b: Vec<u8> = (0..6u16)
        .flat_map(|i| half::bf16::from_f32(i as f32).to_le_bytes())
        .collect();
    let value = PtValue::Dict(vec![
        (
            "param".into(),
            PtValue::Tensor(PtTensor::from_bytes(DType::F32, vec![2, 3, 4], &a)),
        ),
        ("cat_dim".into(), PtValue::Int(0)),
        (
            "inner".into(),
            PtValue::OrderedDict(vec![(
                "w".into(),
                PtValue::Tensor(PtTensor::from_bytes(DType::BF16, vec![6], &b)),
            )]),
        ),
    ]);
    write_pt(&path, value).unwrap();
    let pt = PtFile::open(&path, &Allowlist::deepspeed()).unwrap();
    assert_eq!(pt.prefix(), "m");
    let tensors = pt.tensors();
    assert_eq!(tensors.len(), 2);
    let (name, t) = &tensors[0];
    assert!(name.ends_with("param"), "{name}");
    assert_eq!((t.dtype, t.shape.clone()), (DType::F32, vec![2, 3, 4]));
    assert_eq!(&*pt.tensor_data(name, t).unwrap(), &a[..]);
    let (name, t) = &tensors[1];
    assert_eq!((t.dtype, t.shape.clone()), (DType::BF16, vec![6]));
    assert_eq!(&*pt.tensor_data(name, t).unwrap(), &b[..]);
}
