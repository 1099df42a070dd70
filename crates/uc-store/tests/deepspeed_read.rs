//! Every DeepSpeed fixture merges bit-exactly into its expected tensors.

use safetensors::SafeTensors;
use std::path::PathBuf;
use uc_schema::Role;
use uc_store::deepspeed::{Assume, DsCheckpoint};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/deepspeed"
    ))
}

/// Opens `case`, merges every fp32 / exp_avg / exp_avg_sq and compares with expected.safetensors.
fn check(case: &str) -> usize {
    let dir = fixtures().join(case);
    let ck = DsCheckpoint::open(&dir, None, &Assume::default())
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&expected).unwrap();
    let mut checked = 0;
    for out in ck.outputs() {
        let key = match &out.role {
            Role::Fp32Master => "fp32",
            Role::ExpAvg => "exp_avg",
            Role::ExpAvgSq => "exp_avg_sq",
            Role::Step => {
                let b = ck.read(&out).unwrap();
                assert_eq!(b, 3f32.to_le_bytes(), "{case}: {} step", out.name);
                continue;
            }
            _ => continue,
        };
        let Ok(want) = st.tensor(&format!("{}/{key}", out.name)) else {
            panic!("{case}: {}/{key} is not in expected.safetensors", out.name)
        };
        let got = ck
            .read(&out)
            .unwrap_or_else(|e| panic!("{case}: {}/{key}: {e}", out.name));
        assert_eq!(
            want.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
            out.shape,
            "{case}: {}/{key} shape",
            out.name
        );
        assert!(got == want.data(), "{case}: {}/{key} differs", out.name);
        checked += 1;
    }
    let n_expected = st.names().len();
    assert_eq!(
        checked, n_expected,
        "{case}: merged {checked} of {n_expected} expected tensors"
    );
    checked
}

#[test]
fn bf16_zero1() {
    assert_eq!(check("bf16_zero1"), 81);
}

#[test]
fn tp2_dp2_zero2_bf16() {
    check("tp2_dp2_zero2_bf16");
}

#[test]
fn pipeline() {
    for case in [
        "pp2_zero1",
        "pp2_dp2_zero1_bf16",
        "pp2_tied_zero1",
        "pp2_dp2_tied_zero1",
    ] {
        check(case);
    }
}

#[test]
fn autoep() {
    for case in ["ep2_zero2", "ep2_zero1_bf16", "ep2_zero3"] {
        check(case);
    }
}

#[test]
fn zero_1_2_3_fp32() {
    for case in ["zero1", "zero2", "zero3"] {
        assert_eq!(check(case), 81, "{case}");
    }
}

#[test]
fn tp2_zero1() {
    check("tp2_zero1");
}
