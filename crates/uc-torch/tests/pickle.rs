//! The safe unpickler on hand-built streams: values, sharing, allowlist refusals, malformed input.

mod common;

use common::{global, int, tensor_pickle, unicode, DEEPSPEED};
use std::path::Path;
use uc_torch::pickle::{unpickle, Allowlist, PyValue};
use uc_torch::TorchError;

fn load(bytes: &[u8]) -> Result<PyValue, TorchError> {
    unpickle(bytes, &Allowlist::deepspeed(), Path::new("test.pkl"))
}

fn ok(bytes: &[u8]) -> PyValue {
    load(bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn s(x: &str) -> PyValue {
    PyValue::Str(x.into())
}

/// A real protocol-2 data.pkl from a DeepSpeed optimizer file (LossScaler, ZeroStageEnum, fragments…).
fn real_pickle() -> Vec<u8> {
    let path =
        Path::new(DEEPSPEED).join("zero1/global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt");
    let pt = uc_torch::PtFile::open(&path, &Allowlist::deepspeed()).unwrap();
    pt.entry_bytes(&format!("{}/data.pkl", pt.prefix()))
        .unwrap()
        .to_vec()
}

#[test]
fn scalars_and_containers() {
    // [None, True, False, -2, 255, 65535, 1.5, 'é', b'ab', (1,), {'k': 2}]
    let mut p = vec![0x80, 2, b']', b'('];
    p.extend([b'N', 0x88, 0x89]);
    p.extend((-2i32).to_le_bytes().iter().fold(vec![b'J'], |mut v, b| {
        v.push(*b);
        v
    }));
    p.extend([b'K', 255, b'M', 255, 255]);
    p.push(b'G');
    p.extend(1.5f64.to_be_bytes());
    p.extend(unicode("é"));
    p.extend([b'C', 2, b'a', b'b']);
    p.extend([b'K', 1, 0x85]);
    p.push(b'}');
    p.extend(unicode("k"));
    p.extend([b'K', 2, b's']);
    p.extend([b'e', b'.']);
    let v = ok(&p);
    assert_eq!(
        v,
        PyValue::List(vec![
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Bool(false),
            PyValue::Int(-2),
            PyValue::Int(255),
            PyValue::Int(65535),
            PyValue::Float(1.5),
            s("é"),
            PyValue::Bytes(b"ab".to_vec()),
            PyValue::Tuple(vec![PyValue::Int(1)]),
            PyValue::Dict(vec![(s("k"), PyValue::Int(2))].into()),
        ])
    );
}

#[test]
fn long_ints() {
    assert_eq!(ok(&[0x80, 2, 0x8a, 1, 0xff, b'.']), PyValue::Int(-1));
    assert_eq!(ok(&[0x80, 2, 0x8a, 0, b'.']), PyValue::Int(0));
    // 2^31 as LONG1 (needs 5 bytes with a sign byte).
    assert_eq!(
        ok(&[0x80, 2, 0x8a, 5, 0, 0, 0, 0x80, 0, b'.']),
        PyValue::Int(1 << 31)
    );
    // 2^64 does not fit in i64.
    let mut p = vec![0x80, 2, 0x8a, 9];
    p.extend([0, 0, 0, 0, 0, 0, 0, 0, 1, b'.']);
    assert_eq!(ok(&p), PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]));
    let mut p = vec![0x80, 2, 0x8b];
    p.extend(2i32.to_le_bytes());
    p.extend([0x00, 0x01, b'.']);
    assert_eq!(ok(&p), PyValue::Int(256));
}

#[test]
fn protocol_4_strings_frames_and_memoize() {
    let mut p = vec![0x80, 4, 0x95];
    p.extend(20u64.to_le_bytes());
    p.extend([0x8c, 3, b'a', b'b', b'c', 0x94]); // 'abc' memo 0
    p.extend([0x8d]);
    p.extend(1u64.to_le_bytes());
    p.push(b'x');
    p.extend([0x8e]);
    p.extend(2u64.to_le_bytes());
    p.extend([1, 2]);
    p.extend([b'h', 0, 0x87, b'.']);
    assert_eq!(
        ok(&p),
        PyValue::Tuple(vec![s("x"), PyValue::Bytes(vec![1, 2]), s("abc")])
    );
}

#[test]
fn text_opcodes_of_protocol_0() {
    let p = b"(lp0\nI1\naI01\naL5L\naF2.5\naS'a\\nb'\naVcaf\\u00e9\na.";
    let v = ok(p);
    let PyValue::List(items) = &v else {
        panic!("{v:?}")
    };
    assert_eq!(
        items.as_slice(),
        &[
            PyValue::Int(1),
            PyValue::Bool(true),
            PyValue::Int(5),
            PyValue::Float(2.5),
            s("a\nb"),
            s("café"),
        ]
    );
}

#[test]
fn sets_and_frozensets() {
    let p = [
        0x80, 4, 0x8f, b'(', b'K', 1, b'K', 2, 0x90, b'(', b'K', 3, 0x91, 0x86, b'.',
    ];
    assert_eq!(
        ok(&p),
        PyValue::Tuple(vec![
            PyValue::Set(vec![PyValue::Int(1), PyValue::Int(2)]),
            PyValue::FrozenSet(vec![PyValue::Int(3)])
        ])
    );
}

#[test]
fn memo_shares_identity_like_python() {
    // A = []; t = (A,); A.append(7); return t  → ([7],)
    let p = [
        0x80, 2, b']', b'q', 0, 0x85, b'q', 1, b'0', b'h', 0, b'K', 7, b'a', b'0', b'h', 1, b'.',
    ];
    assert_eq!(
        ok(&p),
        PyValue::Tuple(vec![PyValue::List(vec![PyValue::Int(7)])])
    );
}

#[test]
fn a_shared_value_keeps_its_children_in_every_copy() {
    // A = [[1]]; return (A, A): the inner list is referenced once, but from a shared list, so
    // resolving must copy it into both places rather than move it into the first.
    let p = [
        0x80, 2, b']', b'q', 0, b']', b'K', 1, b'a', b'a', b'h', 0, 0x86, b'.',
    ];
    let a = PyValue::List(vec![PyValue::List(vec![PyValue::Int(1)])]);
    assert_eq!(ok(&p), PyValue::Tuple(vec![a.clone(), a]));
}

#[test]
fn memo_ids_far_apart_and_memoize_numbering() {
    // ([1], [2], [3], [3]): MEMOIZE numbers by the count of distinct ids (0, then 2 after id 5000).
    let mut p = vec![
        0x80, 4, b'(', b']', b'K', 1, b'a', 0x94, b']', b'K', 2, b'a', b'r',
    ];
    p.extend(5000u32.to_le_bytes());
    p.extend([b']', b'K', 3, b'a', 0x94, b'h', 2, b't', b'.']);
    let l = |i| PyValue::List(vec![PyValue::Int(i)]);
    assert_eq!(ok(&p), PyValue::Tuple(vec![l(1), l(2), l(3), l(3)]));
    // A run of PUTs each 1,000 past the previous one stays in memory proportional to the run.
    let mut p = vec![0x80, 2, b']'];
    for k in 1..=20_000u32 {
        p.push(b'r');
        p.extend((k * 1000).to_le_bytes());
    }
    p.extend([b'j']);
    p.extend(20_000_000u32.to_le_bytes());
    p.push(b'.');
    assert_eq!(ok(&p), PyValue::List(vec![]));
    // An id near u32::MAX is kept in a map, not a vector of that length.
    let mut p = vec![0x80, 2, b']', b'r'];
    p.extend(4_000_000_000u32.to_le_bytes());
    p.extend([b'0', b'j']);
    p.extend(4_000_000_000u32.to_le_bytes());
    p.push(b'.');
    assert_eq!(ok(&p), PyValue::List(vec![]));
}

#[test]
fn dict_keys_compare_as_python_does_in_small_and_large_dicts() {
    // {1: 10, True: 20, 1.0: 30} == {1: 30}; unhashable keys (lists) are kept apart.
    for filler in [0usize, 20] {
        let mut p = vec![0x80, 2, b'}', b'('];
        for i in 0..filler {
            p.extend(unicode(&format!("k{i}")));
            p.extend([b'K', 0]);
        }
        p.extend([b'K', 1, b'K', 10, 0x88, b'K', 20, b'G']);
        p.extend(1.0f64.to_be_bytes());
        p.extend([b'K', 30, b']', b'K', 1, b']', b'K', 2, b'u', b'.']);
        let d = ok(&p);
        let entries = d.as_dict().unwrap();
        assert_eq!(entries.len(), filler + 3, "filler {filler}");
        assert_eq!(entries[filler], (PyValue::Int(1), PyValue::Int(30)));
        assert_eq!(entries[filler + 1].0, PyValue::List(vec![]));
        assert_eq!(entries[filler + 2].1, PyValue::Int(2));
    }
    // Duplicates before a later duplicate shift positions: {"a", "a", "b", k0..k19, "b"} keeps
    // "a" at 0 and "b" at 1, each with its last value.
    let mut p = vec![0x80, 2, b'}', b'('];
    for (i, k) in ["a", "a", "b"].iter().enumerate() {
        p.extend(unicode(k));
        p.extend([b'K', i as u8]);
    }
    for i in 0..20 {
        p.extend(unicode(&format!("k{i}")));
        p.extend([b'K', 0]);
    }
    p.extend(unicode("b"));
    p.extend([b'K', 9, b'u', b'.']);
    let d = ok(&p);
    let entries = d.as_dict().unwrap();
    assert_eq!(entries.len(), 22);
    assert_eq!(entries[0], (s("a"), PyValue::Int(1)));
    assert_eq!(entries[1], (s("b"), PyValue::Int(9)));
    assert_eq!(entries[21].0, s("k19"));
}

#[test]
fn a_layout_named_in_data_does_not_allow_that_global() {
    // _get_layout("os.system") is a value; a later GLOBAL os.system is still refused.
    let mut p = vec![0x80, 2];
    p.extend(global("torch.serialization", "_get_layout"));
    p.push(b'(');
    p.extend(unicode("os.system"));
    p.extend([b't', b'R', b'0']);
    p.extend(global("os", "system"));
    p.push(b'.');
    let e = unpickle(&p, &Allowlist::dcp_metadata(), Path::new("m")).unwrap_err();
    assert!(
        matches!(&e, TorchError::DisallowedGlobal { module, name, .. } if module == "os" && name == "system"),
        "{e}"
    );
    // Nor can that layout be called: REDUCE on it is refused like the global itself.
    let mut p = vec![0x80, 2];
    p.extend(global("torch.serialization", "_get_layout"));
    p.push(b'(');
    p.extend(unicode("os.system"));
    p.extend([b't', b'R', b'(']);
    p.extend(unicode("ls"));
    p.extend([b't', b'R', b'.']);
    let e = unpickle(&p, &Allowlist::dcp_metadata(), Path::new("m")).unwrap_err();
    assert!(
        matches!(&e, TorchError::DisallowedGlobal { module, name, .. } if module == "os" && name == "system"),
        "{e}"
    );
}

#[test]
fn torch_size_is_a_tuple() {
    let mut p = vec![0x80, 2];
    p.extend(global("torch", "Size"));
    p.extend([
        b'(', b'K', 2, b'K', 3, b't', 0x85, b'R', b'q', 0, b'h', 0, 0x86,
    ]);
    p.extend(global("torch", "Size"));
    p.extend([b']', b'K', 4, b'a', 0x85, b'R', 0x86, b'.']);
    let t = PyValue::Tuple(vec![PyValue::Int(2), PyValue::Int(3)]);
    assert_eq!(
        ok(&p),
        PyValue::Tuple(vec![
            PyValue::Tuple(vec![t.clone(), t]),
            PyValue::Tuple(vec![PyValue::Int(4)])
        ])
    );
}

#[test]
fn dict_key_set_twice_keeps_last_value() {
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(unicode("a"));
    p.extend([b'K', 1]);
    p.extend(unicode("b"));
    p.extend([b'K', 2]);
    p.extend(unicode("a"));
    p.extend([b'K', 3, b'u', b'.']);
    assert_eq!(
        ok(&p),
        PyValue::Dict(vec![(s("a"), PyValue::Int(3)), (s("b"), PyValue::Int(2))].into())
    );
}

#[test]
fn ordered_dict_zero_stage_and_objects() {
    // OrderedDict() with BUILD state (like state_dict()._metadata) → plain dict, state dropped.
    let mut p = vec![0x80, 2];
    p.extend(global("collections", "OrderedDict"));
    p.extend([b')', b'R']);
    p.extend(unicode("x"));
    p.extend([b'K', 1, b's', b'}']);
    p.extend(unicode("_metadata"));
    p.extend([b'N', b's', b'b', b'.']);
    assert_eq!(
        ok(&p),
        PyValue::Dict(vec![(s("x"), PyValue::Int(1))].into())
    );

    let mut p = vec![0x80, 2];
    p.extend(global("deepspeed.runtime.zero.config", "ZeroStageEnum"));
    p.extend([b'K', 2, 0x85, b'R', b'.']);
    assert_eq!(ok(&p), PyValue::Int(2));

    // fragment_address via NEWOBJ + two BUILDs (dict states merge).
    let mut p = vec![0x80, 2];
    p.extend(global(
        "deepspeed.utils.tensor_fragment",
        "fragment_address",
    ));
    p.extend([b')', 0x81, b'}']);
    p.extend(unicode("numel"));
    p.extend([b'K', 31, b's', b'b', b'}']);
    p.extend(unicode("start"));
    p.extend([b'K', 0, b's', b'b', b'.']);
    let v = ok(&p);
    assert_eq!(
        v.class(),
        Some(("deepspeed.utils.tensor_fragment", "fragment_address"))
    );
    assert_eq!(v.get("numel"), Some(&PyValue::Int(31)));
    assert_eq!(v.get("start"), Some(&PyValue::Int(0)));
}

#[test]
fn tensor_rebuild_and_parameter() {
    let v = ok(&tensor_pickle(12, 2, &[2, 3], &[3, 1]));
    let t = v.as_tensor().unwrap();
    assert_eq!(
        (t.storage.as_str(), t.offset, t.storage_numel),
        ("0", 2, 12)
    );
    assert_eq!(
        (t.shape.clone(), t.stride.clone()),
        (vec![2, 3], vec![3, 1])
    );
    assert_eq!(t.dtype, uc_schema::DType::F32);
    assert!(t.is_contiguous());

    // _rebuild_parameter(tensor, True, OrderedDict()) sets requires_grad.
    let inner = tensor_pickle(4, 0, &[4], &[1]);
    let mut p = vec![0x80, 2];
    p.extend(global("torch._utils", "_rebuild_parameter"));
    p.push(b'(');
    p.extend(&inner[2..inner.len() - 1]);
    p.push(0x88);
    p.extend(global("collections", "OrderedDict"));
    p.extend([b')', b'R', b't', b'R', b'.']);
    assert!(ok(&p).as_tensor().unwrap().requires_grad);

    // A rebuild whose first argument is not a storage is malformed.
    let mut p = vec![0x80, 2];
    p.extend(global("torch._utils", "_rebuild_tensor_v2"));
    p.extend([b'(', b'N', b'K', 0, b')', b')', b't', b'R', b'.']);
    assert!(matches!(load(&p), Err(TorchError::BadPickle { .. })));
}

#[test]
fn disallowed_globals_are_refused() {
    // GLOBAL os.system, then REDUCE ('echo',): refused at the GLOBAL, nothing runs.
    let mut p = vec![0x80, 2];
    p.extend(global("os", "system"));
    p.extend(unicode("echo pwned"));
    p.extend([0x85, b'R', b'.']);
    match load(&p) {
        Err(TorchError::DisallowedGlobal { path, module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("os", "system"));
            assert_eq!(path, Path::new("test.pkl"));
        }
        other => panic!("{other:?}"),
    }
    // STACK_GLOBAL builtins.eval (protocol 4).
    let mut p = vec![0x80, 4, 0x8c, 8];
    p.extend(b"builtins");
    p.extend([0x8c, 4]);
    p.extend(b"eval");
    p.extend([0x93, b'.']);
    assert!(
        matches!(load(&p), Err(TorchError::DisallowedGlobal { module, name, .. })
        if module == "builtins" && name == "eval")
    );
    // INST names a class too.
    let p = b"(ibuiltins\nexec\n.";
    assert!(matches!(load(p), Err(TorchError::DisallowedGlobal { .. })));
    // The DCP metadata allowlist does not admit DeepSpeed classes.
    let mut p = vec![0x80, 2];
    p.extend(global("deepspeed.runtime.fp16.loss_scaler", "LossScaler"));
    p.push(b'.');
    let e = unpickle(&p, &Allowlist::dcp_metadata(), Path::new("m")).unwrap_err();
    assert!(matches!(e, TorchError::DisallowedGlobal { .. }));
    assert!(unpickle(&p, &Allowlist::empty(), Path::new("m")).is_err());
}

#[test]
fn malformed_streams_give_typed_errors() {
    let bad = |p: &[u8]| match load(p) {
        Err(TorchError::BadPickle { offset, why, .. }) => (offset, why),
        other => panic!("{p:?}: {other:?}"),
    };
    assert!(bad(&[0x80, 2, b'a', b'.']).1.contains("underflow"));
    assert!(bad(&[0x80, 2, b't', b'.']).1.contains("MARK"));
    assert_eq!(
        bad(&[0x80, 2, b'h', 5, b'.']),
        (2, "memo index 5 is not defined".into())
    );
    assert!(bad(&[0x80, 2, 0xff]).1.contains("unknown opcode 0xff"));
    assert!(bad(&[0x80, 9, b'N', b'.']).1.contains("protocol"));
    assert!(bad(&[0x80, 5, 0x97, b'.']).1.contains("out-of-band"));
    assert!(bad(&[0x80, 2, b'K', 1, b'K', 1, b'K', 1, b's', b'.'])
        .1
        .contains("non-dict"));
    assert!(bad(&[0x80, 2, b'(', b'K', 1, b'd', b'.']).1.contains("odd"));
    // APPENDS / SETITEMS / ADDITEMS: the wrong container, an odd item count, nothing under the MARK.
    assert!(bad(&[0x80, 2, b'}', b'(', b'K', 1, b'e', b'.'])
        .1
        .contains("APPENDS on a non-list"));
    assert!(bad(&[0x80, 2, b']', b'(', b'K', 1, b'K', 2, b'u', b'.'])
        .1
        .contains("SETITEMS on a non-dict"));
    assert!(bad(&[0x80, 2, b'}', b'(', b'K', 1, b'u', b'.'])
        .1
        .contains("odd"));
    assert!(bad(&[0x80, 4, b']', b'(', b'K', 1, 0x90, b'.'])
        .1
        .contains("ADDITEMS on a non-set"));
    assert!(bad(&[0x80, 2, b'(', b'K', 1, b'e', b'.'])
        .1
        .contains("underflow"));
    // …and the happy paths: [1, 2] extended, {1: 2, 3: 4} filled by one SETITEMS.
    assert_eq!(
        ok(&[0x80, 2, b']', b'(', b'K', 1, b'K', 2, b'e', b'.']),
        PyValue::List(vec![PyValue::Int(1), PyValue::Int(2)])
    );
    assert_eq!(
        ok(&[0x80, 2, b'}', b'(', b'K', 1, b'K', 2, b'K', 3, b'K', 4, b'u', b'.']),
        PyValue::Dict(
            vec![
                (PyValue::Int(1), PyValue::Int(2)),
                (PyValue::Int(3), PyValue::Int(4))
            ]
            .into()
        )
    );
    assert!(bad(&[0x80, 2, b'N', b'N', b'R', b'.'])
        .1
        .contains("not a tuple"));
    // Empty input, and a stream without STOP.
    assert!(matches!(load(&[]), Err(TorchError::Truncated { .. })));
    assert!(matches!(
        load(&[0x80, 2, b'N']),
        Err(TorchError::Truncated { .. })
    ));
}

#[test]
fn huge_lengths_do_not_allocate() {
    let mut p = vec![0x80, 4, 0x8d];
    p.extend(u64::MAX.to_le_bytes());
    assert!(matches!(load(&p), Err(TorchError::Truncated { .. })));
    let mut p = vec![0x80, 4, 0x8e];
    p.extend((1u64 << 40).to_le_bytes());
    assert!(matches!(load(&p), Err(TorchError::Truncated { .. })));
    let mut p = vec![0x80, 2, b'X'];
    p.extend(u32::MAX.to_le_bytes());
    assert!(matches!(load(&p), Err(TorchError::Truncated { .. })));
    // A huge memo index is fine (sparse memo).
    let p = [
        0x80, 2, b'N', b'r', 0xff, 0xff, 0xff, 0xff, b'j', 0xff, 0xff, 0xff, 0xff, b'.',
    ];
    assert_eq!(ok(&p), PyValue::None);
}

#[test]
fn deep_nesting_and_shared_blowup_are_refused() {
    // 5000 nested lists.
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', 5000));
    p.extend(std::iter::repeat_n(b'a', 4999));
    p.push(b'.');
    assert!(matches!(load(&p), Err(TorchError::BadPickle { .. })));
    // L0 = []; L(i+1) = [Li, Li] for 64 levels: 2^64 nodes when expanded.
    let mut p = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..64 {
        p.extend([b'0', b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
    }
    p.push(b'.');
    assert!(matches!(load(&p), Err(TorchError::BadPickle { .. })));
    // A list that contains itself.
    let p = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.'];
    assert!(matches!(load(&p), Err(TorchError::BadPickle { .. })));
}

#[test]
fn real_pickle_truncated_anywhere_is_an_error_not_a_panic() {
    let p = real_pickle();
    assert!(load(&p).is_ok());
    for cut in (0..p.len()).step_by(7) {
        match load(&p[..cut]) {
            Err(TorchError::Truncated { .. }) | Err(TorchError::BadPickle { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // Cut inside a string payload: Truncated.
    let at = p.windows(9).position(|w| w == b"loss_scal").unwrap();
    assert!(matches!(
        load(&p[..at + 3]),
        Err(TorchError::Truncated { .. })
    ));
}

#[test]
fn corrupted_real_pickle_never_panics() {
    let p = real_pickle();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        let mut q = p.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed % q.len() as u64) as usize;
            q[i] = (seed >> 32) as u8;
        }
        let _ = load(&q);
    }
    // Keep int() helper exercised for protocol-2 BININT.
    assert_eq!(ok(&[int(-5), vec![b'.']].concat()), PyValue::Int(-5));
}

#[test]
fn large_dicts_find_every_string_key_like_small_ones() {
    use uc_torch::PyDict;
    let s = |x: String| PyValue::Str(x);
    for n in [3usize, 33, 5000] {
        let mut entries: Vec<(PyValue, PyValue)> = (0..n)
            .map(|i| (s(format!("k{i}")), PyValue::Int(i as i64)))
            .collect();
        entries.push((PyValue::Int(7), PyValue::Int(-1)));
        let d = PyValue::Dict(PyDict::new(entries.clone()));
        for i in 0..n {
            assert_eq!(
                d.get(&format!("k{i}")),
                Some(&PyValue::Int(i as i64)),
                "n={n} i={i}"
            );
        }
        assert_eq!(d.get("k-missing"), None);
        assert_eq!(d.get("7"), None, "an int key is not a string key");
        // Equality is the entries', whether or not an index was built.
        assert_eq!(d, PyValue::Dict(entries.into()));
    }
}
