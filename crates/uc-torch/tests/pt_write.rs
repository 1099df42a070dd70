//! `.pt` writer: torch's zip layout (read back with the `zip` crate, CRCs checked), Python-identical
//! pickles, size checks, zip64, and our own reader reading what we write.

mod common;

use common::zip_entries as entries;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use uc_schema::DType;
use uc_torch::{write_pt, write_pt_to, PtTensor, PtValue, TorchError};

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

#[test]
fn bad_sizes_fail_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.pt");
    let t = PtTensor::streamed(DType::F32, vec![4], |w| w.write_all(&[0u8; 12]));
    let err = write_pt(&short, PtValue::Tensor(t)).unwrap_err();
    assert!(matches!(err, TorchError::BadTensor { .. }), "{err}");
    assert!(!short.exists());

    let long = dir.path().join("long.pt");
    let t = PtTensor::streamed(DType::F32, vec![1], |w| w.write_all(&[0u8; 8]));
    assert!(write_pt(&long, PtValue::Tensor(t)).is_err());
    assert!(!long.exists());

    let wrong = dir.path().join("wrong.pt");
    let bytes = [0u8; 6];
    let t = PtTensor::from_bytes(DType::F16, vec![2, 2], &bytes);
    let err = write_pt(&wrong, PtValue::Tensor(t)).unwrap_err();
    assert!(matches!(err, TorchError::BadTensor { .. }), "{err}");
    assert!(!wrong.exists());
}

#[test]
fn refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.pt");
    std::fs::write(&p, b"keep").unwrap();
    let err = write_pt(&p, PtValue::Int(1)).unwrap_err();
    assert!(matches!(err, TorchError::OutputExists { .. }), "{err}");
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
    let pt = uc_torch::PtFile::open(&path, &uc_torch::pickle::Allowlist::deepspeed()).unwrap();
    let tensors = pt.tensors();
    assert_eq!(tensors[0].1.shape, vec![numel]);
    assert_eq!(
        &*pt.tensor_data(&tensors[1].0, tensors[1].1).unwrap(),
        &tail[..]
    );
}

/// What we write, the crate's own safe reader (`pt::PtFile`) reads back: names, dtypes, shapes, bytes.
#[test]
fn own_reader_reads_what_we_write() {
    use uc_torch::pickle::Allowlist;
    use uc_torch::PtFile;
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

/// A writer that records the largest write it was asked for and takes at most `max` bytes a call.
struct Short {
    inner: File,
    max: usize,
    largest: usize,
}

impl std::io::Write for Short {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.largest = self.largest.max(buf.len());
        self.inner.write(&buf[..buf.len().min(self.max)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Tensors larger than [`uc_torch::WRITE_PIECE`] go out a piece at a time, and their CRCs stay right
/// across pieces and short writes (the `zip` crate checks every CRC while reading).
#[test]
fn large_tensors_are_written_in_pieces_with_right_crcs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pt");
    let n = uc_torch::WRITE_PIECE * 5 / 2 + 12;
    let a: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
    let b: Vec<u8> = (0..n / 2).map(|i| (i * 7 % 253) as u8).collect();
    let b_stream = b.clone();
    let value = PtValue::Dict(vec![
        (
            "a".into(),
            PtValue::Tensor(PtTensor::from_bytes(DType::U8, vec![n as u64], &a)),
        ),
        (
            "b".into(),
            PtValue::Tensor(PtTensor::streamed(
                DType::U8,
                vec![b.len() as u64],
                move |w| w.write_all(&b_stream),
            )),
        ),
    ]);
    let sink = Short {
        inner: File::create(&path).unwrap(),
        max: 300_001,
        largest: 0,
    };
    let sink = write_pt_to(sink, "big", value, &path).unwrap();
    assert!(sink.largest <= uc_torch::WRITE_PIECE, "{}", sink.largest);
    drop(sink);
    let mut z = zip::ZipArchive::new(File::open(&path).unwrap()).unwrap();
    for (entry, want) in [("big/data/0", &a), ("big/data/1", &b)] {
        let mut got = Vec::new();
        z.by_name(entry).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == *want, "{entry} differs");
    }
}
