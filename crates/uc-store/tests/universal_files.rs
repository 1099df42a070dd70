//! DeepSpeed universal files (`zero/<param>/<state>.pt`) compared byte for byte with the ones
//! DeepSpeed wrote in `../shared/fixtures/deepspeed`, and the atomic universal folder.

mod common;

use common::zip_entries as entries;
use std::path::{Path, PathBuf};
use uc_schema::DType;
use uc_store::universal::{
    write_universal_state, write_universal_step, UniversalDir, UniversalKind,
};
use uc_store::StoreError;
use uc_torch::PtTensor;

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

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
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
