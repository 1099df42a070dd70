#!/usr/bin/env bash
# `uc export` vs DeepSpeed's zero_to_fp32 on real checkpoints with frozen parameters and buffers (run by hand).
#
# Usage: [UC=target/release/uc] [VENV=/tmp/torchvenv] [WORK=/tmp/uc-export-fb] bash scripts/export/compare_frozen_buffers.sh
# Writes ZeRO-1/2/3 × fp32/bf16 checkpoints of make_frozen_buffer_checkpoint.py's model (2 ranks, CPU, gloo) into
# WORK, exports each with both tools and compares tensor for tensor and file bytes. Expected: identical everywhere
# except ZeRO-1 (and the BF16 optimizer), where DeepSpeed saves no `frozen_param_shapes` and zero_to_fp32 silently
# drops the frozen parameters (`frozen.weight`, `odd`); uc exports them from the model states.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
UC=${UC:-$ROOT/target/release/uc}
VENV=${VENV:-/tmp/torchvenv}
WORK=${WORK:-/tmp/uc-export-fb}
export PATH=$VENV/bin:$PATH DS_ACCELERATOR=cpu DS_BUILD_OPS=0 OMP_NUM_THREADS=1 MASTER_ADDR=127.0.0.1
mkdir -p "$WORK"
for v in "z1 --stage 1" "z1b --stage 1 --bf16" "z2 --stage 2" "z2b --stage 2 --bf16" "z3 --stage 3" "z3b --stage 3 --bf16"; do
  set -- $v; n=$1; shift
  rm -rf "${WORK:?}/$n"
  torchrun --nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 --master_port "${PORT:-29581}" \
    "$HERE/make_frozen_buffer_checkpoint.py" --out "$WORK/$n" "$@" > "$WORK/$n.log" 2>&1 || { tail -20 "$WORK/$n.log"; exit 1; }
done
python - "$UC" "$WORK" <<'PY'
import contextlib, io, shutil, subprocess, sys
import torch
from safetensors.torch import load_file
from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_state_dict
uc, work = sys.argv[1:]
for n in ["z1", "z1b", "z2", "z2b", "z3", "z3b"]:
    ck = f"{work}/{n}"
    ds, ours = ck + "_ds", ck + "_uc"
    shutil.rmtree(ds, ignore_errors=True); shutil.rmtree(ours, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        convert_zero_checkpoint_to_state_dict(ck, ds, safe_serialization=True)
    subprocess.run([uc, "export", ck, ours], check=True, stdout=subprocess.DEVNULL)
    a, b = load_file(ds + "/model.safetensors"), load_file(ours + "/model.safetensors")
    same = all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
               and a[k].view(torch.uint8).equal(b[k].view(torch.uint8)) for k in a.keys() & b.keys())
    ident = open(ds + "/model.safetensors", "rb").read() == open(ours + "/model.safetensors", "rb").read()
    print(f"{n:4} uc {sorted(b)}\n     only zero_to_fp32: {sorted(a.keys() - b.keys())}  only uc: {sorted(b.keys() - a.keys())}"
          f"  common tensors equal: {same}  files byte-identical: {ident}")
PY
