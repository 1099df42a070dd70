#!/usr/bin/env python3
"""`uc export` vs DeepSpeed's `zero_to_fp32 --safe_serialization`, fixture by fixture (run by hand, not in cargo test).

For every ZeRO fixture zero_to_fp32 understands (dense and AutoEP, ZeRO 1/2/3, fp32 and bf16 training), on a copy of
the checkpoint:
  1. fp32, one file: the same tensor names, dtypes, shapes and bytes, and `model.safetensors` byte-identical;
  2. fp32, sharded (--max-shard-size 20KB vs max_shard_size="20KB"): the same shard files byte for byte and an
     index with the same weight_map and total_size;
  3. bf16 and fp16 (zero_to_fp32's `dtype=` argument): the same bytes;
  4. our files re-saved with `safetensors.torch.save_file(…, metadata={"format": "pt"})` are byte-identical.

Usage: VENV=/tmp/torchvenv; $VENV/bin/python scripts/export/compare_zero_to_fp32.py [--uc target/release/uc]
Needs torch, deepspeed (its utils/zero_to_fp32.py), safetensors, huggingface_hub.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "..", "shared", "fixtures", "deepspeed")
# zero_to_fp32 knows nothing of tensor or pipeline parallelism, so only dp-only ZeRO fixtures.
CASES = ["zero1", "zero2", "zero3", "bf16_zero1", "ep2_zero2", "ep2_zero1_bf16", "ep2_zero3"]


def files(d):
    return sorted(f for f in os.listdir(d) if not f.startswith("."))


def read(p):
    with open(p, "rb") as f:
        return f.read()


def deepspeed_export(ck, out, dtype=torch.float32, max_shard_size="5GB"):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        convert_zero_checkpoint_to_state_dict(ck, out, dtype=dtype, max_shard_size=max_shard_size,
                                              safe_serialization=True)


def uc_export(uc, ck, out, *args):
    subprocess.run([uc, "export", ck, out, *args], check=True, stdout=subprocess.DEVNULL)


def same_tensors(a_dir, b_dir, what):
    a, b = {}, {}
    for d, m in ((a_dir, a), (b_dir, b)):
        for f in files(d):
            if f.endswith(".safetensors"):
                m.update(load_file(os.path.join(d, f)))
    assert a.keys() == b.keys(), f"{what}: names differ: {sorted(a.keys() ^ b.keys())}"
    for k in a:
        x, y = a[k], b[k]
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: {k}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"
        assert x.view(torch.uint8).equal(y.view(torch.uint8)), f"{what}: {k}: values differ"
    return len(a)


def same_files(a_dir, b_dir, what):
    fa, fb = files(a_dir), files(b_dir)
    assert fa == fb, f"{what}: files {fa} vs {fb}"
    for f in fa:
        pa, pb = os.path.join(a_dir, f), os.path.join(b_dir, f)
        if f.endswith(".json"):
            ja, jb = json.loads(read(pa)), json.loads(read(pb))
            # transformers also writes total_parameters; zero_to_fp32 (huggingface_hub) only total_size
            assert ja["weight_map"] == jb["weight_map"], f"{what}: {f}: weight_map differs"
            assert ja["metadata"]["total_size"] == jb["metadata"]["total_size"], f"{what}: {f}: total_size"
        else:
            assert read(pa) == read(pb), f"{what}: {f} is not byte-identical"
    return len(fa)


def resaved_identical(d, what):
    for f in files(d):
        if f.endswith(".safetensors"):
            p = os.path.join(d, f)
            q = p + ".resaved"
            save_file(load_file(p), q, metadata={"format": "pt"})
            assert read(p) == read(q), f"{what}: {f} differs from save_file's bytes"
            os.remove(q)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uc", default=os.path.join(ROOT, "target", "release", "uc"))
    a = ap.parse_args()
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            ck = os.path.join(tmp, case)
            shutil.copytree(os.path.join(FIXTURES, case), ck,
                            ignore=shutil.ignore_patterns("*_universal", "latest_universal"))
            ds, ours = os.path.join(tmp, "ds"), os.path.join(tmp, "uc")
            try:
                deepspeed_export(ck, ds)
            except Exception as e:  # e.g. the BF16_Optimizer layout: "… is not a zero checkpoint"
                print(f"{case:16} zero_to_fp32 cannot read it: {type(e).__name__}: {e}")
                continue
            uc_export(a.uc, ck, ours)
            n = same_tensors(ds, ours, f"{case} fp32")
            same_files(ds, ours, f"{case} fp32")
            resaved_identical(ours, f"{case} fp32")
            ds_s, ours_s = ds + "_sharded", ours + "_sharded"
            deepspeed_export(ck, ds_s, max_shard_size="20KB")
            uc_export(a.uc, ck, ours_s, "--max-shard-size", "20KB")
            shards = same_files(ds_s, ours_s, f"{case} sharded")
            same_tensors(ds_s, ours_s, f"{case} sharded")
            for dt, flag in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
                d1, d2 = ds + "_" + flag, ours + "_" + flag
                deepspeed_export(ck, d1, dtype=dt)
                uc_export(a.uc, ck, d2, "--dtype", flag)
                same_tensors(d1, d2, f"{case} {flag}")
                same_files(d1, d2, f"{case} {flag}")
            print(f"{case:16} {n:3} tensors: fp32/bf16/fp16 byte-identical to zero_to_fp32, "
                  f"{shards - 1} shards + index identical, = save_file bytes")
    print("all equal")


if __name__ == "__main__":
    sys.exit(main())
