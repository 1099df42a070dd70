#!/usr/bin/env bash
# Megatron interop: `uc convert <Megatron torch_dist fixture (TP 2)> --format torch_dist` -> real megatron-core
# 0.16.1 `dist_checkpointing.load` into a GPTModel at another TP size (1) and at TP 2, checked by
# megatron_load.py: (a) loads, (b) params + Adam moments == expected.safetensors bit for bit, (c) Adam step,
# iteration, lr / weight decay restored. Exit status 0 iff every row passes (a), (b) and (c).
# CPU only (gloo, 127.0.0.1). Needs a venv with torch 2.15.0 + megatron-core 0.16.1 + safetensors + numpy
# (`pip install megatron-core==0.16.1`); the CPU shims are the fixture generator's (fixtures/megatron/generator).
#
#   bash scripts/interop/megatron_load.sh VENV [case:reader_tp ...]
#     default: gpt_tp2:1 gpt_tp2:2 gpt_tp2_dp2:1 gpt_tp2_swiglu_tied:1 gpt_tp2_swiglu_tied:2
#   env: UC (uc binary; default target/release/uc, built if missing), OUT (default /tmp/uc-megatron),
#        UC_FIXTURES (default ../shared/fixtures), PORT_BASE (default 29980), NICE (default 10)
set -uo pipefail
VENV=${1:?usage: megatron_load.sh VENV [case:reader_tp ...]}
shift
source "$(dirname "$0")/setup.sh" megatron /tmp/uc-megatron 29980
CASES=("$@")
[[ ${#CASES[@]} -eq 0 ]] && CASES=(gpt_tp2:1 gpt_tp2:2 gpt_tp2_dp2:1 gpt_tp2_swiglu_tied:1 gpt_tp2_swiglu_tied:2)
RESULTS=()
for spec in "${CASES[@]}"; do
  IFS=: read -r case_ tp <<< "$spec"
  d=$OUT/$case_
  if [[ ! -d "$d/torch_dist" ]]; then
    uc_convert "$FIX/$case_/checkpoint" "$d/torch_dist" torch_dist || continue
  fi
  res=$d/_tp${tp}.json
  echo "=== $case_: dist_checkpointing.load at TP $tp from $d/torch_dist"
  on_ranks "$tp" "$res" "$ROOT/scripts/interop/megatron_load.py" --case "$FIX/$case_" --ckpt "$d/torch_dist"
  RESULTS+=("$spec|$res")
done

"$VENV/bin/python" - "${RESULTS[@]}" <<'PY'
import json, sys
ok = True
f = lambda x: "-" if x is None else ("pass" if x else "FAIL")
print(f"{'case:reader_tp':<26} {'(a)load':<8} {'(b)bits':<8} {'tensors':<8} {'(c)state':<9} detail")
for item in sys.argv[1:]:
    spec, path = item.split("|")
    r = json.load(open(path))
    a, b, c = r.get("a_loaded", False), r.get("b_bitwise"), r.get("c_ok")
    det = r.get("load_error") or (f"mismatching: {r['b_mismatching'][:5]}" if r.get("b_mismatching") else
                                  f"step {r.get('c_adam_step')} iteration {r.get('c_iteration')}")
    print(f"{spec:<26} {f(a):<8} {f(b):<8} {str(r.get('b_compared', '-')) + '/' + str(r.get('b_expected', '-')):<8} "
          f"{f(c):<9} {det[:300]}")
    ok &= bool(a and b and c)
sys.exit(0 if ok else 1)
PY
