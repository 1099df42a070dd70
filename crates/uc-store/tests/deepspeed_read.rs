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

/// Our own real-DeepSpeed fixtures (tests/fixtures/deepspeed): every expected key
/// (`<p>/fp32`, `<p>/<state>`, `<name>/param` for frozen params and buffers) merges bit-exactly.
fn check_ours(case: &str) -> usize {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/deepspeed"
    ))
    .join(case);
    let ck = DsCheckpoint::open(&dir, None, &Assume::default())
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let outs = ck.outputs();
    let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&expected).unwrap();
    for name in st.names() {
        let (param, key) = name.rsplit_once('/').unwrap();
        let out = outs
            .iter()
            .find(|o| {
                o.name == param
                    && match key {
                        "fp32" => o.role == Role::Fp32Master,
                        "param" => matches!(o.role, Role::Param | Role::Buffer),
                        k => o.role == Role::from_key(k),
                    }
            })
            .unwrap_or_else(|| panic!("{case}: no output for {name}"));
        let want = st.tensor(name).unwrap();
        let got = ck
            .read(out)
            .unwrap_or_else(|e| panic!("{case}: {name}: {e}"));
        assert_eq!(
            out.dtype.name(),
            format!("{:?}", want.dtype()),
            "{case}: {name} dtype"
        );
        assert!(got == want.data(), "{case}: {name} differs");
    }
    let trained_states = outs.iter().filter(|o| o.role != Role::Step).count();
    assert_eq!(
        trained_states,
        st.names().len(),
        "{case}: outputs beyond expected"
    );
    st.names().len()
}

#[test]
fn zero3_with_tp2() {
    assert_eq!(check_ours("zero3_tp2"), 81);
}

#[test]
fn momentum_only_optimizer() {
    assert_eq!(check_ours("zero2_sgd_momentum"), 54);
}

#[test]
fn frozen_params_and_buffers() {
    assert_eq!(check_ours("zero1_frozen"), 78);
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/deepspeed/zero1_frozen"
    ));
    let ck = DsCheckpoint::open(&dir, None, &Assume::default()).unwrap();
    let role = |n: &str| {
        ck.extras()
            .iter()
            .find(|e| e.meta.name == n)
            .map(|e| (e.meta.role.clone(), e.meta.frozen))
    };
    assert_eq!(role("embed.weight"), Some((Role::Param, true)));
    assert_eq!(role("blocks.0.ln2.bias"), Some((Role::Param, true)));
    assert_eq!(role("rotary_inv_freq"), Some((Role::Buffer, false)));
    assert_eq!(role("position_ids"), Some((Role::Buffer, false)));
}

#[test]
fn saved_before_the_first_step() {
    assert_eq!(check_ours("zero2_step0"), 27);
}
