//! Reading the real DeepSpeed / Megatron `.pt` fixtures with the safe unpickler.

mod common;

use common::{walk, DEEPSPEED, MEGATRON};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use uc_schema::DType;
use uc_torch::pickle::{Allowlist, PyValue};
use uc_torch::PtFile;

fn ds(rel: &str) -> PathBuf {
    Path::new(DEEPSPEED).join(rel)
}

fn open(rel: &str) -> PtFile {
    PtFile::open(ds(rel), &Allowlist::deepspeed()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn expected(case: &str) -> Vec<u8> {
    std::fs::read(ds(case).join("expected.safetensors")).expect("expected.safetensors")
}

#[test]
fn every_deepspeed_pt_opens_and_every_tensor_reads() {
    let files = walk(Path::new(DEEPSPEED), &|p| {
        p.extension().is_some_and(|e| e == "pt")
    });
    assert!(files.len() > 1400, "found only {} .pt files", files.len());
    let allow = Allowlist::deepspeed();
    let mut tensors = 0;
    for f in &files {
        let pt = PtFile::open(f, &allow).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (name, t) in pt.tensors() {
            let data = pt.tensor_data(&name, t).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(data.len() as u64, t.nbytes(), "{}: {name}", f.display());
            tensors += 1;
        }
    }
    assert!(tensors > 2000, "{tensors} tensors");
}

#[test]
fn megatron_common_pt_opens() {
    let files = walk(Path::new(MEGATRON), &|p| {
        p.file_name().is_some_and(|n| n == "common.pt")
    });
    assert_eq!(files.len(), 3);
    for f in files {
        let pt = PtFile::open(&f, &Allowlist::deepspeed()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pt.prefix(), "common");
        let c = pt.cursor();
        assert_eq!(c.key("iteration").unwrap().as_int().unwrap(), 3);
        let step = c
            .key("optimizer")
            .unwrap()
            .key("state")
            .unwrap()
            .key("common_step")
            .unwrap();
        let t = step.as_tensor().unwrap();
        assert!(t.shape.is_empty());
        let b = pt.tensor_bytes(step.trail(), t).unwrap();
        assert_eq!(f32::from_le_bytes(b.try_into().unwrap()), 3.0);
        assert!(
            c.key("optimizer")
                .unwrap()
                .key("param_groups")
                .unwrap()
                .len()
                .unwrap()
                == 2
        );
    }
}

#[test]
fn zero1_and_bf16_optim_partitions_and_fragments() {
    // (case file prefix, rank, stored group-1 length, group_paddings[1], ln1.bias start, numel)
    let cases = [
        ("zero1/global_step3/", 0, 322, 0, 321, 1),
        ("zero1/global_step3/", 1, 319, 3, 0, 31),
        // BF16_Optimizer keeps the padding in the saved partition (STRUCTURE.txt: 322 on both ranks).
        ("bf16_zero1/global_step3/bf16_", 0, 322, 0, 321, 1),
        ("bf16_zero1/global_step3/bf16_", 1, 322, 3, 0, 31),
    ];
    for (pre, rank, len, padding, start, numel) in cases {
        let pt = open(&format!(
            "{pre}zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
        ));
        let osd = pt.cursor().key("optimizer_state_dict").unwrap();
        let g1 = osd
            .key("single_partition_of_fp32_groups")
            .unwrap()
            .index(1)
            .unwrap();
        let t = g1.as_tensor().unwrap();
        assert_eq!(t.shape, vec![len], "{pre} rank {rank}");
        assert_eq!(t.dtype, DType::F32);
        assert_eq!(
            pt.tensor_bytes(g1.trail(), t).unwrap().len() as u64,
            len * 4
        );
        assert_eq!(
            osd.key("group_paddings")
                .unwrap()
                .index(1)
                .unwrap()
                .as_int()
                .unwrap(),
            padding
        );
        let frag = osd
            .key("param_slice_mappings")
            .unwrap()
            .index(1)
            .unwrap()
            .key("blocks.1.ln1.bias")
            .unwrap();
        assert_eq!(
            frag.class().unwrap(),
            ("deepspeed.utils.tensor_fragment", "fragment_address")
        );
        assert_eq!(frag.key("start").unwrap().as_int().unwrap(), start);
        assert_eq!(frag.key("numel").unwrap().as_int().unwrap(), numel);
        assert_eq!(
            frag.trail(),
            "optimizer_state_dict.param_slice_mappings[1].blocks.1.ln1.bias"
        );
        if pre.starts_with("bf16") {
            // Optimizer state is keyed by int group index.
            let st = osd
                .key("base_optimizer_state")
                .unwrap()
                .key("state")
                .unwrap()
                .int_key(1)
                .unwrap();
            assert_eq!(
                st.key("exp_avg").unwrap().as_tensor().unwrap().shape,
                vec![len]
            );
            assert!(
                osd.get("loss_scaler").is_none(),
                "bf16 files have no loss_scaler"
            );
        }
    }
}

#[test]
fn bf16_zero1_fragments_reassemble_to_expected() {
    // blocks.1.ln1.bias: rank 0 holds its first element at 321, rank 1 the other 31 at 0 (group 1).
    let mut got = Vec::new();
    for rank in 0..2 {
        let pt = open(&format!(
            "bf16_zero1/global_step3/bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
        ));
        let osd = pt.cursor().key("optimizer_state_dict").unwrap();
        let part = osd
            .key("single_partition_of_fp32_groups")
            .unwrap()
            .index(1)
            .unwrap();
        let bytes = pt
            .tensor_bytes(part.trail(), part.as_tensor().unwrap())
            .unwrap();
        let frag = osd
            .key("param_slice_mappings")
            .unwrap()
            .index(1)
            .unwrap()
            .key("blocks.1.ln1.bias")
            .unwrap();
        let s = frag.key("start").unwrap().as_u64().unwrap() as usize;
        let n = frag.key("numel").unwrap().as_u64().unwrap() as usize;
        got.extend_from_slice(&bytes[s * 4..(s + n) * 4]);
    }
    let exp = expected("bf16_zero1");
    let st = SafeTensors::deserialize(&exp).unwrap();
    assert_eq!(got, st.tensor("blocks.1.ln1.bias/fp32").unwrap().data());
}

#[test]
fn model_states_shapes_dtypes_and_enums() {
    let pt = open("bf16_zero1/global_step3/mp_rank_00_model_states.pt");
    let c = pt.cursor();
    let shapes = c.key("param_shapes").unwrap();
    assert_eq!(shapes.len().unwrap(), 2);
    assert_eq!(
        shapes
            .index(0)
            .unwrap()
            .key("embed.weight")
            .unwrap()
            .as_shape()
            .unwrap(),
        vec![96, 32]
    );
    assert_eq!(
        shapes
            .index(1)
            .unwrap()
            .key("logit_scale")
            .unwrap()
            .as_shape()
            .unwrap(),
        vec![1]
    );
    let w = c.key("module").unwrap().key("blocks.0.qkv.weight").unwrap();
    let t = w.as_tensor().unwrap();
    assert_eq!((t.dtype, t.shape.clone()), (DType::BF16, vec![64, 32]));
    assert_eq!(pt.tensor_bytes(w.trail(), t).unwrap().len(), 64 * 32 * 2);

    let pt = open("zero1/global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt");
    let osd = pt.cursor().key("optimizer_state_dict").unwrap();
    assert_eq!(osd.key("zero_stage").unwrap().as_int().unwrap(), 1);
    let ls = osd.key("loss_scaler").unwrap();
    assert_eq!(
        ls.class().unwrap(),
        ("deepspeed.runtime.fp16.loss_scaler", "LossScaler")
    );
    assert_eq!(ls.key("cur_scale").unwrap().as_f64().unwrap(), 1.0);
    assert!(!ls.key("dynamic").unwrap().as_bool().unwrap());
    let betas = osd
        .key("base_optimizer_state")
        .unwrap()
        .key("param_groups")
        .unwrap()
        .index(0)
        .unwrap();
    assert_eq!(
        betas
            .key("betas")
            .unwrap()
            .index(1)
            .unwrap()
            .as_f64()
            .unwrap(),
        0.95
    );
    let err = osd.key("no_such_key").unwrap_err();
    assert!(
        matches!(err, uc_torch::TorchError::MissingKey { ref key, .. } if key == "optimizer_state_dict.no_such_key")
    );
}

#[test]
fn zero3_flat_groups_keep_python_attrs() {
    let pt = open("zero3/global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt");
    let osd = pt.cursor().key("optimizer_state_dict").unwrap();
    assert_eq!(osd.key("zero_stage").unwrap().as_int().unwrap(), 3);
    let groups = osd.key("fp32_flat_groups").unwrap();
    let sizes: Vec<u64> = groups
        .items()
        .unwrap()
        .iter()
        .map(|g| g.as_tensor().unwrap().shape[0])
        .collect();
    assert_eq!(sizes, vec![10240, 321]);
    let t = groups.index(0).unwrap().as_tensor().unwrap();
    assert!(
        matches!(t.attr("ds_id"), Some(PyValue::Str(_))),
        "attrs: {:?}",
        t.attrs
    );
}

/// Checks every `zero/<p>/fp32.pt` of a case against `<p>/fp32` in expected.safetensors.
fn universal_fp32_matches(case: &str, bare: bool) {
    let exp = expected(case);
    let st = SafeTensors::deserialize(&exp).unwrap();
    let zero = ds(case).join("global_step3_universal/zero");
    let mut n = 0;
    for dir in std::fs::read_dir(&zero).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let p = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let Ok(want) = st.tensor(&format!("{p}/fp32")) else {
            continue;
        };
        let pt = PtFile::open(dir.join("fp32.pt"), &Allowlist::deepspeed()).unwrap();
        let c = pt.cursor();
        let param = if bare {
            c.clone()
        } else {
            c.key("param").unwrap()
        };
        let t = param.as_tensor().unwrap();
        if bare {
            assert_eq!(t.shape.len(), 1, "{p}: ZeRO-3 universal files are flat");
        } else {
            assert_eq!(
                t.shape,
                want.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
                "{p}"
            );
            assert_eq!(c.key("cat_dim").unwrap().as_int().unwrap(), 0);
        }
        assert_eq!(
            pt.tensor_bytes(p.as_str(), t).unwrap(),
            want.data(),
            "{case}: {p}"
        );
        let r = pt.tensor_file_range(&p, t).unwrap();
        let file = std::fs::read(dir.join("fp32.pt")).unwrap();
        assert_eq!(&file[r.start as usize..r.end as usize], want.data());
        n += 1;
    }
    assert_eq!(n, 27, "{case}: params checked");
}

#[test]
fn universal_fp32_equals_expected() {
    universal_fp32_matches("zero1", false);
    universal_fp32_matches("bf16_zero1", false);
    universal_fp32_matches("zero3", true);
}

#[test]
fn universal_step_is_zero_dim_three() {
    let pt = open("zero2/global_step3_universal/zero/blocks.0.fc1.bias/step.pt");
    let t = pt.root().as_tensor().unwrap();
    assert!(t.shape.is_empty() && t.stride.is_empty());
    let b = pt.tensor_bytes("step", t).unwrap();
    assert_eq!(f32::from_le_bytes(b.try_into().unwrap()), 3.0);
}

#[test]
fn shared_storage_views_have_offsets() {
    // zero1 model_states keeps several params as views into one storage.
    let pt = open("zero1/global_step3/mp_rank_00_model_states.pt");
    let m = pt.cursor().key("module").unwrap();
    let a = m.key("logit_scale").unwrap().as_tensor().unwrap();
    let b = m.key("blocks.0.ln1.weight").unwrap().as_tensor().unwrap();
    assert_eq!(a.storage, b.storage);
    assert_eq!((a.offset, b.offset), (0, 1));
    assert!(a.storage_numel >= 33);
}
