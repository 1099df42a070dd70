//! DCP writer: DeepSpeed, DCP and Megatron fixtures converted with `--format dcp` read back through
//! our DCP reader equal to each fixture's expected tensors (torch's own `dcp.load` check:
//! `scripts/interop/dcp_load_check.py`).

mod common;

use common::{DCP, DEEPSPEED, MEGATRON};
use std::path::{Path, PathBuf};
use uc_schema::Value;
use uc_store::convert::{convert, ConvertOptions, Format};
use uc_store::dcp::{DcpCheckpoint, DcpOptions, Flavor};

/// Converts `input` to DCP in a temp dir with `files` data files and opens the result.
fn to_dcp(input: &Path, files: usize) -> (tempfile::TempDir, DcpCheckpoint) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dcp");
    let opts = ConvertOptions {
        format: Format::Dcp,
        threads: Some(2),
        dcp_files: Some(files),
        ..Default::default()
    };
    convert(input, &out, &opts, &|_, _, _| {}).unwrap_or_else(|e| panic!("{input:?}: {e}"));
    assert!(out.join(".metadata").is_file());
    assert!(out.join("__0_0.distcp").is_file());
    let ck = DcpCheckpoint::open(&out, &DcpOptions::default()).unwrap();
    assert_eq!(ck.flavor(), Flavor::Torch);
    (tmp, ck)
}

#[test]
fn deepspeed_fixtures_to_dcp() {
    for case in common::DEEPSPEED_CASES {
        let src = Path::new(DEEPSPEED).join(case);
        let (_t, ck) = to_dcp(&src, 2);
        common::dcp_equals_expected(case, &ck, &src.join("expected.safetensors"));
        // Param groups carry `params` (names from DeepSpeed's groups) for torch's set_state_dict.
        let Some(Value::List(groups)) = ck.state.get("param_groups") else {
            panic!("{case}: no param_groups")
        };
        for g in groups {
            let Value::Map(g) = g else { panic!() };
            assert!(
                matches!(g.get("params"), Some(Value::List(p)) if !p.is_empty()),
                "{case}"
            );
        }
    }
}

#[test]
fn deepspeed_moe_fixtures_to_dcp() {
    for case in common::DEEPSPEED_MOE_CASES {
        let src = Path::new(DEEPSPEED).join(case);
        let (_t, ck) = to_dcp(&src, 2);
        common::dcp_equals_expected(case, &ck, &src.join("expected.safetensors"));
    }
}

#[test]
fn dcp_fixtures_round_trip() {
    for case in ["fsdp2_dp2", "fsdp2_tp_2x2", "ep_mesh_empty_shard"] {
        let src: PathBuf = Path::new(DCP).join(case);
        for files in [1, 3] {
            let (_t, ck) = to_dcp(&src.join("checkpoint"), files);
            common::dcp_equals_expected(case, &ck, &src.join("expected.safetensors"));
            let orig =
                DcpCheckpoint::open(&src.join("checkpoint"), &DcpOptions::default()).unwrap();
            assert_eq!(ck.state, orig.state, "{case}");
            assert_eq!(ck.outputs(), orig.outputs(), "{case}");
        }
    }
}

#[test]
fn megatron_fixture_to_dcp() {
    let src = Path::new(MEGATRON).join("gpt_tp2_swiglu_tied");
    let (_t, ck) = to_dcp(&src.join("checkpoint"), 2);
    common::dcp_equals_expected("swiglu", &ck, &src.join("expected.safetensors"));
}
