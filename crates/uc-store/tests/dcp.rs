//! DCP reader: every torch DCP fixture merges bit-exactly to `expected.safetensors` (directly and
//! through `convert`), and every bad-input case fails with its typed error and leaves no output.

mod common;

use common::DCP;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use uc_merge::MergeError;
use uc_schema::{Role, Value};
use uc_store::convert::{convert, ConvertOptions};
use uc_store::dcp::{DcpCheckpoint, DcpOptions, Flavor};
use uc_store::native::NativeCheckpoint;
use uc_store::source::{OpenOptions, Source};
use uc_store::StoreError;
use uc_torch::dcp_metadata::to_pickle;
use uc_torch::dcp_metadata::{self as metadata, Item};
use uc_torch::pickle::Allowlist;

const CASES: &[&str] = &["fsdp2_dp2", "fsdp2_tp_2x2", "ep_mesh_empty_shard"];

fn case(name: &str) -> PathBuf {
    Path::new(DCP).join(name)
}

fn open(dir: &Path) -> Result<DcpCheckpoint, StoreError> {
    DcpCheckpoint::open(dir, &DcpOptions::default())
}

/// Compares every expected tensor with what `read` gives; returns how many were compared.
fn compare(label: &str, expected: &Path, read: &dyn Fn(&str, &Role) -> Vec<u8>) -> usize {
    let bytes = std::fs::read(expected).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut n = 0;
    for name in st.names() {
        let (param, key) = name.rsplit_once('/').unwrap();
        let got = read(param, &Role::from_key(key));
        assert!(
            got == st.tensor(name).unwrap().data(),
            "{label}: {name} differs"
        );
        n += 1;
    }
    n
}

#[test]
fn every_dcp_fixture_merges_exactly() {
    for name in CASES {
        let ck = open(&case(name).join("checkpoint")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ck.flavor(), Flavor::Torch);
        let outs = ck.outputs();
        let n = compare(name, &case(name).join("expected.safetensors"), &|p, r| {
            let meta = outs
                .iter()
                .find(|m| m.name == p && &m.role == r)
                .unwrap_or_else(|| panic!("{name}: no output {p} {r:?}"));
            ck.read(meta).unwrap_or_else(|e| panic!("{name}: {e}"))
        });
        // Every output besides the steps is an expected tensor: nothing extra, nothing missing.
        let steps: Vec<_> = outs.iter().filter(|m| m.role == Role::Step).collect();
        assert_eq!(outs.len() - steps.len(), n, "{name}");
        for s in steps {
            assert!(s.shape.is_empty());
            assert_eq!(
                ck.read(s).unwrap(),
                3.0f32.to_le_bytes(),
                "{name}: {}",
                s.name
            );
        }
        let world = if *name == "fsdp2_dp2" { 2 } else { 4 };
        assert_eq!(ck.topology().world_size(), world, "{name}");
    }
}

#[test]
fn param_groups_are_state() {
    let ck = open(&case("fsdp2_dp2").join("checkpoint")).unwrap();
    let Some(Value::List(groups)) = ck.state.get("param_groups") else {
        panic!("no param_groups: {:?}", ck.state.keys());
    };
    assert_eq!(groups.len(), 2);
    let Value::Map(g0) = &groups[0] else { panic!() };
    assert_eq!(g0.get("lr"), Some(&Value::Float(0.01)));
    assert_eq!(g0.get("weight_decay"), Some(&Value::Float(0.1)));
    assert_eq!(
        g0.get("betas"),
        Some(&Value::List(vec![Value::Float(0.9), Value::Float(0.95)]))
    );
    let Some(Value::List(params)) = g0.get("params") else {
        panic!()
    };
    assert_eq!(params[0], Value::Str("embed.weight".into()));
    let Value::Map(g1) = &groups[1] else { panic!() };
    assert_eq!(g1.get("weight_decay"), Some(&Value::Float(0.0)));
    // Roles: every model tensor is a trained fp32 master here.
    for m in ck.outputs() {
        assert!(
            matches!(
                m.role,
                Role::Fp32Master | Role::ExpAvg | Role::ExpAvgSq | Role::Step
            ),
            "{} {:?}",
            m.name,
            m.role
        );
    }
}

#[test]
fn only_the_needed_chunks_are_read_for_a_box() {
    // The `_StridedShard` qkv of fsdp2_tp_2x2: rows 16..48 lie in two chunks of different ranks.
    let ck = open(&case("fsdp2_tp_2x2").join("checkpoint")).unwrap();
    let full = ck
        .read_region(
            "model.blocks.0.qkv.weight",
            &uc_merge::Region::full(&[64, 32]),
        )
        .unwrap();
    let mid = ck
        .read_region(
            "model.blocks.0.qkv.weight",
            &uc_merge::Region::new(vec![16, 0], vec![32, 32]),
        )
        .unwrap();
    assert_eq!(mid, full[16 * 32 * 4..48 * 32 * 4]);
}

#[test]
fn convert_dcp_fixture_to_native() {
    for name in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let opts = ConvertOptions {
            threads: Some(2),
            ..Default::default()
        };
        let rep = convert(&case(name).join("checkpoint"), &out, &opts, &|_, _, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(rep.tensors > 0);
        let ck = NativeCheckpoint::open(&out).unwrap();
        ck.verify().unwrap();
        compare(name, &case(name).join("expected.safetensors"), &|p, r| {
            ck.tensor(p, r)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .to_vec()
        });
        assert!(ck.manifest().state.contains_key("param_groups"));
    }
}

#[test]
fn source_detects_dcp() {
    let s = Source::open(
        &case("ep_mesh_empty_shard").join("checkpoint"),
        &OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(s.format(), "dcp");
    assert_eq!(s.outputs().len(), 6 * 4);
}

#[test]
fn metadata_written_back_reads_the_same() {
    for name in CASES {
        let p = case(name).join("checkpoint/.metadata");
        let a = metadata::read(&p, &Allowlist::dcp_metadata()).unwrap();
        let bytes = to_pickle(&a);
        let b = metadata::parse(&bytes, &p, &Allowlist::dcp_metadata()).unwrap();
        let want: Vec<_> = a.items.iter().map(|(k, i)| (k.clone(), strip(i))).collect();
        assert_eq!(want, b.items, "{name}");
        assert_eq!(a.storage, b.storage);
        assert_eq!(a.planner_data, b.planner_data);
    }
}

/// An item as our writer writes it back (a 5-tuple TensorProperties: no strides).
fn strip(i: &Item) -> Item {
    match i {
        Item::Tensor(t) => Item::Tensor(metadata::TensorItem {
            strides: None,
            ..t.clone()
        }),
        Item::Bytes => Item::Bytes,
    }
}

// ---- bad input ------------------------------------------------------------------------------

/// A writable copy of a fixture checkpoint.
fn copy_case(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("ck");
    common::copy_dir(&case(name).join("checkpoint"), &dst);
    (tmp, dst)
}

/// Rewrites `.metadata` of `dir` after `edit` changes the parsed metadata.
fn edit_metadata(dir: &Path, edit: impl FnOnce(&mut metadata::Metadata)) {
    let p = dir.join(".metadata");
    let mut md = metadata::read(&p, &Allowlist::dcp_metadata()).unwrap();
    edit(&mut md);
    std::fs::write(&p, to_pickle(&md)).unwrap();
}

/// `convert` fails with `check` on the error and leaves nothing behind.
fn convert_fails(dir: &Path, check: impl Fn(&StoreError) -> bool) {
    let err = open(dir).expect_err("open must fail");
    assert!(check(&err), "open: {err:?}");
    let parent = dir.parent().unwrap();
    let out = parent.join("out");
    let err = convert(dir, &out, &ConvertOptions::default(), &|_, _, _| {})
        .expect_err("convert must fail");
    assert!(check(&err), "convert: {err:?}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "ck")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn chunks_mut<'a>(md: &'a mut metadata::Metadata, key: &str) -> &'a mut Vec<metadata::Chunk> {
    let i = md.index[key];
    match &mut md.items[i].1 {
        Item::Tensor(t) => &mut t.chunks,
        Item::Bytes => panic!("{key} is bytes"),
    }
}

#[test]
fn disallowed_global_in_metadata() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    // A pickle that would run `os.system('echo pwned')`.
    let mut p = vec![0x80, 2];
    p.extend(common::global("os", "system"));
    p.extend(common::unicode("echo pwned"));
    p.extend([0x85, b'R', b'.']);
    std::fs::write(dir.join(".metadata"), p).unwrap();
    convert_fails(&dir, |e| {
        matches!(e, StoreError::DisallowedGlobal { module, name, path }
            if module == "os" && name == "system" && path.ends_with(".metadata"))
    });
}

#[test]
fn disallowed_global_inside_real_metadata() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    let p = dir.join(".metadata");
    let mut b = std::fs::read(&p).unwrap();
    // `pathlib.PosixPath` (allowed) → `os.path.PosixPath` (not), same length.
    let at = b.windows(7).position(|w| w == b"pathlib").unwrap();
    b[at..at + 7].copy_from_slice(b"os.path");
    std::fs::write(&p, b).unwrap();
    convert_fails(
        &dir,
        |e| matches!(e, StoreError::DisallowedGlobal { module, .. } if module == "os.path"),
    );
}

#[test]
fn overlapping_chunks() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    edit_metadata(&dir, |md| {
        // embed.weight [96, 32]: chunks [0,0]+[48,32] and [48,0]+[48,32]; grow the first by a row.
        chunks_mut(md, "model.embed.weight")[0].sizes[0] = 49;
    });
    convert_fails(&dir, |e| {
        matches!(e, StoreError::Merge { tensor, source, path }
            if matches!(**source, MergeError::Overlap { .. })
                && tensor == "model.embed.weight" && path.ends_with(".metadata"))
    });
}

#[test]
fn chunks_with_a_hole() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    edit_metadata(&dir, |md| {
        chunks_mut(md, "optim.state.blocks.1.fc2.weight.exp_avg")[1].sizes[0] -= 1;
    });
    convert_fails(&dir, |e| {
        matches!(e, StoreError::Merge { tensor, source, .. }
            if matches!(**source, MergeError::Uncovered { missing, .. } if missing > 0)
                && tensor == "optim.state.blocks.1.fc2.weight.exp_avg")
    });
}

#[test]
fn missing_distcp_file() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    std::fs::remove_file(dir.join("__1_0.distcp")).unwrap();
    convert_fails(&dir, |e| {
        matches!(e, StoreError::MissingFile { path, tensor }
            if path.ends_with("__1_0.distcp") && !tensor.is_empty())
    });
}

#[test]
fn range_past_the_end_of_a_file() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    let f = dir.join("__0_0.distcp");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    convert_fails(&dir, |e| {
        matches!(e, StoreError::OutOfRange { path, size, start, len: n, tensor }
            if path.ends_with("__0_0.distcp") && start + n > *size && !tensor.is_empty())
    });
}

#[test]
fn storage_offset_past_the_end() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    edit_metadata(&dir, |md| {
        let key = ("model.ln_f.weight".to_string(), Some(vec![0]));
        md.storage.get_mut(&key).unwrap().offset = 1 << 40;
    });
    convert_fails(&dir, |e| {
        matches!(e, StoreError::OutOfRange { tensor, start, .. }
            if tensor == "model.ln_f.weight" && *start == 1 << 40)
    });
}

#[test]
fn truncated_metadata() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    let p = dir.join(".metadata");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    convert_fails(
        &dir,
        |e| matches!(e, StoreError::Truncated { path, .. } if path.ends_with(".metadata")),
    );
}

#[test]
fn corrupt_chunk_archive_fails_on_read_without_output() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    // Zero the archive of one chunk: open succeeds (reads are lazy), convert must fail atomically.
    let md = metadata::read(&dir.join(".metadata"), &Allowlist::dcp_metadata()).unwrap();
    let info = &md.storage[&("model.embed.weight".to_string(), Some(vec![48, 0]))];
    let f = dir.join(&info.file);
    let mut b = std::fs::read(&f).unwrap();
    let (s, n) = (info.offset as usize, info.length as usize);
    b[s..s + n].fill(0);
    std::fs::write(&f, b).unwrap();
    assert!(open(&dir).is_ok());
    let out = dir.parent().unwrap().join("out");
    let err = convert(&dir, &out, &ConvertOptions::default(), &|_, _, _| {}).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadZip { path, .. } if path.ends_with(&info.file)),
        "{err:?}"
    );
    assert!(!out.exists());
}

#[test]
fn chunk_range_too_small_for_its_data() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    edit_metadata(&dir, |md| {
        let key = ("model.embed.weight".to_string(), Some(vec![0, 0]));
        md.storage.get_mut(&key).unwrap().length = 100;
    });
    convert_fails(&dir, |e| {
        matches!(e, StoreError::BadTensor { tensor, path, .. }
            if tensor == "model.embed.weight" && path.extension().is_some_and(|x| x == "distcp"))
    });
}

#[test]
fn storage_path_outside_the_checkpoint() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    edit_metadata(&dir, |md| {
        for info in md.storage.values_mut() {
            info.file = format!("../{}", info.file);
        }
    });
    convert_fails(&dir, |e| matches!(e, StoreError::Schema { .. }));
}

#[test]
fn chunk_outside_the_shape() {
    let (_t, dir) = copy_case("fsdp2_dp2");
    edit_metadata(&dir, |md| {
        chunks_mut(md, "model.ln_f.bias")[0].offsets[0] = 1 << 62;
    });
    convert_fails(&dir, |e| {
        matches!(e, StoreError::BadTensor { tensor, path, .. }
            if tensor == "model.ln_f.bias" && path.ends_with(".metadata"))
    });
}
