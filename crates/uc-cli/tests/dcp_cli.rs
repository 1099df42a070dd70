//! `uc` on DCP and Megatron checkpoints: convert to native and to DCP, inspect, verify; bad input →
//! exit code 1, an error naming the file and tensor, no output.

mod common;
use common::{fixtures, s, uc};

use std::fs;
use std::process::Output;
use uc_store::dcp::{DcpCheckpoint, DcpOptions};
use uc_store::deepspeed::{Assume, DsCheckpoint};
use uc_store::native::NativeCheckpoint;

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn convert_dcp_and_megatron_to_native() {
    for ck in [
        fixtures("dcp").join("fsdp2_tp_2x2/checkpoint"),
        fixtures("megatron").join("gpt_tp2_dp2/checkpoint"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        ok(&uc(&["convert", s(&ck), s(&out)]));
        ok(&uc(&["verify", s(&out)]));
        let src = DcpCheckpoint::open(&ck, &DcpOptions::default()).unwrap();
        let native = NativeCheckpoint::open(&out).unwrap();
        for m in src.outputs() {
            assert!(
                native.tensor(&m.name, &m.role).unwrap() == src.read(&m).unwrap(),
                "{}",
                m.name
            );
        }
    }
}

#[test]
fn convert_deepspeed_to_dcp_then_inspect_and_verify() {
    let input = fixtures("deepspeed").join("tp2_dp2_zero2_bf16");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dcp");
    ok(&uc(&[
        "convert",
        "--format",
        "dcp",
        "--dcp-files",
        "3",
        s(&input),
        s(&out),
    ]));
    for r in 0..3 {
        assert!(out.join(format!("__{r}_0.distcp")).is_file());
    }
    let v = uc(&["verify", "--json", s(&out)]);
    ok(&v);
    assert!(String::from_utf8_lossy(&v.stdout).contains("\"format\":\"dcp\""));
    let i = uc(&["inspect", "--json", s(&out)]);
    ok(&i);
    let j: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(j["format"], "dcp");
    let ds = DsCheckpoint::open(&input, None, &Assume::default()).unwrap();
    let dcp = DcpCheckpoint::open(&out, &DcpOptions::default()).unwrap();
    let outs = dcp.outputs();
    for m in ds.outputs() {
        let mine = outs
            .iter()
            .find(|o| o.name == m.name && o.role == m.role)
            .unwrap_or_else(|| panic!("{} {:?}", m.name, m.role));
        assert!(
            ds.read(&m).unwrap() == dcp.read(mine).unwrap(),
            "{}",
            m.name
        );
    }
}

#[test]
fn megatron_vocab_size_flag() {
    let ck = fixtures("megatron").join("gpt_tp2_swiglu_tied/checkpoint");
    let i = uc(&["inspect", "--json", s(&ck)]);
    ok(&i);
    let j: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(j["format"], "megatron torch_dist");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    ok(&uc(&["convert", "--vocab-size", "90", s(&ck), s(&out)]));
    let native = NativeCheckpoint::open(&out).unwrap();
    let e = native
        .manifest()
        .tensors
        .iter()
        .find(|e| e.meta.name == "embedding.word_embeddings.weight")
        .unwrap();
    assert_eq!(e.meta.shape, vec![90, 32]);
}

#[test]
fn missing_distcp_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    fs::create_dir(&ck).unwrap();
    for e in fs::read_dir(fixtures("dcp").join("fsdp2_dp2/checkpoint")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "__1_0.distcp" {
            fs::copy(&p, ck.join(p.file_name().unwrap())).unwrap();
        }
    }
    let out = tmp.path().join("out");
    for format in ["native", "dcp", "deepspeed", "torch_dist"] {
        let o = uc(&["convert", "--format", format, s(&ck), s(&out)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            err.contains("__1_0.distcp") && err.contains("tensor `"),
            "{err}"
        );
        assert!(!out.exists());
    }
    let v = uc(&["verify", s(&ck)]);
    assert_eq!(v.status.code(), Some(1));
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn convert_dcp_to_deepspeed_and_megatron_to_torch_dist() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("ds");
    let dcp = fixtures("dcp").join("fsdp2_dp2/checkpoint");
    ok(&uc(&["convert", "--format", "deepspeed", s(&dcp), s(&ds)]));
    for f in [
        "mp_rank_00_model_states.pt",
        "zero_pp_rank_0_mp_rank_00_model_states.pt",
        "zero/optimizer_state.pt",
        "zero/embed.weight/fp32.pt",
        "zero/embed.weight/exp_avg.pt",
        "zero/embed.weight/exp_avg_sq.pt",
        "zero/embed.weight/step.pt",
    ] {
        assert!(ds.join(f).is_file(), "{f}");
    }
    let td = tmp.path().join("td");
    let meg = fixtures("megatron").join("gpt_tp2_swiglu_tied/checkpoint");
    ok(&uc(&["convert", "--format", "torch_dist", s(&meg), s(&td)]));
    ok(&uc(&["verify", s(&td)]));
    let (a, b) = (
        DcpCheckpoint::open(&meg, &DcpOptions::default()).unwrap(),
        DcpCheckpoint::open(&td, &DcpOptions::default()).unwrap(),
    );
    let outs = a.outputs();
    assert_eq!(outs, b.outputs());
    for m in &outs {
        assert!(a.read(m).unwrap() == b.read(m).unwrap(), "{}", m.name);
    }
}

/// A DCP checkpoint without optimizer groups cannot become a DeepSpeed universal folder: DeepSpeed
/// restores parameters group by group.
#[test]
fn model_only_dcp_to_deepspeed_is_refused() {
    use uc_schema::{DType, Role, TensorMeta};
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let meta = TensorMeta::new("w", DType::F32, vec![2], Role::Fp32Master);
    uc_store::dcp::write_dcp(
        &ck,
        &[meta],
        &|_| Ok(uc_store::TensorBytes::Owned(vec![0u8; 8])),
        &Default::default(),
        &Default::default(),
        &|_| {},
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = uc(&["convert", "--format", "deepspeed", s(&ck), s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("param_groups"), "{err}");
    assert!(!out.exists());
}
