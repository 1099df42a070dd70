//! DCP fixtures: the `.metadata` pickle (DCP allowlist) and every torch.save archive embedded in `.distcp` files.

mod common;

use common::{walk, DCP, MEGATRON};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uc_schema::DType;
use uc_torch::pickle::{unpickle, Allowlist, Cursor, PyValue};
use uc_torch::PtFile;
use uc_torch::TorchError;

/// A storage_data key: (fqn, chunk offsets or None for bytes entries).
type Key = (String, Option<Vec<u64>>);
/// Key → (file, byte offset, length), from `storage_data`.
type Storage = BTreeMap<Key, (String, u64, u64)>;

fn storage_data(md: &Cursor<'_>) -> Storage {
    let mut out = Storage::new();
    for (k, v) in md.key("storage_data").unwrap().entries().unwrap() {
        let k = Cursor::new(md.path(), k);
        assert_eq!(k.class().unwrap().1, "MetadataIndex");
        let fqn = k.key("fqn").unwrap().as_str().unwrap().to_owned();
        let off = k
            .get("offset")
            .filter(|o| !o.is_none())
            .map(|o| o.as_shape().unwrap());
        assert_eq!(
            v.class().unwrap(),
            ("torch.distributed.checkpoint.filesystem", "_StorageInfo")
        );
        let rel = v.key("relative_path").unwrap().as_str().unwrap().to_owned();
        let (o, l) = (
            v.key("offset").unwrap().as_u64().unwrap(),
            v.key("length").unwrap().as_u64().unwrap(),
        );
        out.insert((fqn, off), (rel, o, l));
    }
    out
}

fn load_metadata(dir: &Path, allow: &Allowlist) -> PyValue {
    let p = dir.join(".metadata");
    let bytes = std::fs::read(&p).unwrap();
    unpickle(&bytes, allow, &p).unwrap_or_else(|e| panic!("{e}"))
}

/// Checks one DCP checkpoint dir: metadata tree, back-to-back ranges, every archive, chunk shapes.
fn check_checkpoint(dir: &Path, allow: &Allowlist) -> usize {
    let md_path = dir.join(".metadata");
    let md_val = load_metadata(dir, allow);
    let md = Cursor::new(&md_path, &md_val);
    assert_eq!(
        md.class().unwrap(),
        ("torch.distributed.checkpoint.metadata", "Metadata")
    );
    let storage = storage_data(&md);
    // Chunk shapes per (fqn, offsets).
    let mut chunk_sizes = BTreeMap::new();
    for (k, v) in md.key("state_dict_metadata").unwrap().entries().unwrap() {
        let fqn = k.as_str().unwrap().to_owned();
        match v.class().unwrap().1 {
            "TensorStorageMetadata" => {
                let props = v.key("properties").unwrap();
                let state = props.value().class().map(|_| props.value());
                let dtype = match state {
                    Some(PyValue::Object(o)) => {
                        o.state.as_ref().unwrap().as_seq().unwrap()[0].clone()
                    }
                    other => panic!("{fqn}: properties {other:?}"),
                };
                assert_eq!(dtype.class().unwrap(), ("torch", "float32"));
                let size = v.key("size").unwrap().as_shape().unwrap();
                for ch in v.key("chunks").unwrap().items().unwrap() {
                    let off = ch.key("offsets").unwrap().as_shape().unwrap();
                    let sz = ch.key("sizes").unwrap().as_shape().unwrap();
                    assert_eq!(off.len(), size.len());
                    chunk_sizes.insert((fqn.clone(), Some(off)), sz);
                }
            }
            "BytesStorageMetadata" => {
                chunk_sizes.insert((fqn, None), Vec::new());
            }
            other => panic!("{fqn}: unexpected {other}"),
        }
    }
    // Ranges of each file are back to back from 0 and end at the file size.
    let mut by_file: BTreeMap<String, Vec<(Key, u64, u64)>> = BTreeMap::new();
    for (key, (rel, o, l)) in &storage {
        by_file
            .entry(rel.clone())
            .or_default()
            .push((key.clone(), *o, *l));
    }
    let mut archives = 0;
    for (rel, mut items) in by_file {
        items.sort_by_key(|i| i.1);
        let path = dir.join(&rel);
        let mut end = 0;
        for (_, o, l) in &items {
            assert_eq!(*o, end, "{rel}: gap");
            end = o + l;
        }
        assert_eq!(end, std::fs::metadata(&path).unwrap().len(), "{rel}");
        let ranges: Vec<(u64, u64)> = items.iter().map(|i| (i.1, i.2)).collect();
        let files = PtFile::open_ranges(&path, &ranges, &Allowlist::dcp_archive())
            .unwrap_or_else(|e| panic!("{e}"));
        for ((key, _, _), pt) in items.iter().zip(&files) {
            let want = chunk_sizes
                .get(key)
                .unwrap_or_else(|| panic!("{key:?} not in state_dict_metadata"));
            match pt.root() {
                PyValue::Tensor(t) => {
                    assert_eq!(&t.shape, want, "{key:?}");
                    assert_eq!(t.dtype, DType::F32);
                    assert_eq!((t.offset, t.storage_numel), (0, t.numel()));
                    assert_eq!(pt.tensor_bytes(&key.0, t).unwrap().len() as u64, t.nbytes());
                }
                other => {
                    assert!(
                        key.1.is_none(),
                        "{key:?}: bytes entry expected, got {other:?}"
                    );
                    assert!(pt.tensors().is_empty());
                }
            }
            archives += 1;
        }
    }
    archives
}

fn checkpoint_dirs(root: &str) -> Vec<PathBuf> {
    walk(Path::new(root), &|p| {
        p.file_name().is_some_and(|n| n == ".metadata")
    })
    .into_iter()
    .map(|p| p.parent().unwrap().to_path_buf())
    .collect()
}

#[test]
fn every_dcp_checkpoint_reads() {
    let dirs = checkpoint_dirs(DCP);
    assert_eq!(dirs.len(), 5, "{dirs:?}");
    let mut n = 0;
    for d in dirs {
        n += check_checkpoint(&d, &Allowlist::dcp_metadata());
    }
    assert!(n > 200, "{n} archives");
}

#[test]
fn every_megatron_checkpoint_reads() {
    let dirs = checkpoint_dirs(MEGATRON);
    assert_eq!(dirs.len(), 3);
    for d in dirs {
        assert!(check_checkpoint(&d, &Allowlist::megatron_dcp_metadata()) > 10);
    }
}

#[test]
fn megatron_metadata_needs_the_planner_globals() {
    let dir = Path::new(MEGATRON).join("gpt_tp2/checkpoint");
    let p = dir.join(".metadata");
    let err = unpickle(&std::fs::read(&p).unwrap(), &Allowlist::dcp_metadata(), &p).unwrap_err();
    assert!(
        matches!(&err, TorchError::DisallowedGlobal { module, .. } if module == "torch.distributed.checkpoint.planner"),
        "{err}"
    );
}

#[test]
fn fsdp2_embed_chunk_hand_read() {
    // README "Hand read": model.embed.weight chunk [48,0]+[48,32] -> __1_0.distcp [32417, 40138),
    // data at file offset 33121, 6144 bytes == expected[embed.weight/fp32][48:96].
    let dir = Path::new(DCP).join("fsdp2_dp2/checkpoint");
    let md_path = dir.join(".metadata");
    let md_val = load_metadata(&dir, &Allowlist::dcp_metadata());
    let storage = storage_data(&Cursor::new(&md_path, &md_val));
    let (rel, o, l) = storage[&("model.embed.weight".to_owned(), Some(vec![48, 0]))].clone();
    assert_eq!((rel.as_str(), o, o + l), ("__1_0.distcp", 32417, 40138));
    let pt = PtFile::open_range(dir.join(&rel), o, l, &Allowlist::dcp_archive()).unwrap();
    assert_eq!(pt.prefix(), "archive");
    let t = pt.root().as_tensor().unwrap();
    assert_eq!(t.shape, vec![48, 32]);
    let r = pt.tensor_file_range("model.embed.weight", t).unwrap();
    assert_eq!((r.start, r.end - r.start), (33121, 6144));
    let exp = std::fs::read(Path::new(DCP).join("fsdp2_dp2/expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&exp).unwrap();
    let want = st.tensor("embed.weight/fp32").unwrap();
    assert_eq!(
        pt.tensor_bytes("model.embed.weight", t).unwrap(),
        &want.data()[48 * 32 * 4..96 * 32 * 4]
    );
}

#[test]
fn empty_shard_chunk_reads_as_empty() {
    let dir = Path::new(DCP).join("fsdp2_dp2/checkpoint");
    let md_path = dir.join(".metadata");
    let md_val = load_metadata(&dir, &Allowlist::dcp_metadata());
    let storage = storage_data(&Cursor::new(&md_path, &md_val));
    let (rel, o, l) = storage[&("model.logit_scale".to_owned(), Some(vec![1]))].clone();
    let pt = PtFile::open_range(dir.join(rel), o, l, &Allowlist::dcp_archive()).unwrap();
    let t = pt.root().as_tensor().unwrap();
    assert_eq!(t.shape, vec![0]);
    assert!(pt.tensor_bytes("model.logit_scale", t).unwrap().is_empty());
}

#[test]
fn a_chunk_stored_twice_is_a_typed_error() {
    use uc_torch::dcp_metadata::{self, Chunk, Item, Metadata, StorageInfo, TensorItem};
    let mut md = Metadata::default();
    let item = TensorItem {
        dtype: DType::F32,
        size: vec![4],
        chunks: vec![Chunk {
            offsets: vec![0],
            sizes: vec![4],
        }],
        strides: Some(vec![1]),
    };
    md.index.insert("w".into(), 0);
    md.items.push(("w".into(), Item::Tensor(item)));
    let info = StorageInfo {
        file: "__0_0.distcp".into(),
        offset: 0,
        length: 16,
    };
    md.storage.insert(("w".into(), Some(vec![0])), info);
    md.planner_data = Some(Default::default());
    let bytes = dcp_metadata::to_pickle(&md);
    let path = Path::new("m/.metadata");
    let allow = Allowlist::dcp_metadata();
    assert_eq!(
        dcp_metadata::parse(&bytes, path, &allow)
            .unwrap()
            .storage
            .len(),
        1
    );
    // `X storage_data } (` pair `u X planner_data`: the pair is memo-less, so it can be repeated.
    let find = |needle: &[u8]| {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let start = find(b"storage_data") + b"storage_data".len() + 2;
    let close = find(b"planner_data") - 6;
    assert_eq!((&bytes[start - 2..start], bytes[close]), (&b"}("[..], b'u'));
    let mut twice = bytes[..close].to_vec();
    twice.extend_from_slice(&bytes[start..close]);
    twice.extend_from_slice(&bytes[close..]);
    let e = dcp_metadata::parse(&twice, path, &allow).unwrap_err();
    assert!(
        matches!(&e, TorchError::BadTensor { tensor, why, .. } if tensor == "w" && why.contains("two storage_data entries")),
        "{e}"
    );
}
