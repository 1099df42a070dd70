#!/usr/bin/env bash
# DCP / Megatron -> DeepSpeed interop: `uc convert <DCP or Megatron fixture> --format deepspeed` -> real
# DeepSpeed `load_universal` (engine.load_checkpoint(dir, tag)) into the fixture's own model (Megatron: its
# GPTModel at TP 1) under ZeRO 1 / 2 / 3, checked by dcp_to_deepspeed.py: (a) loads, (b) fp32 params + Adam
# moments == expected.safetensors bit for bit, (c) DCP: one more step runs (its loss is printed beside the
# fixture's FSDP2 step-4 loss; not a pass criterion). Exit status 0 iff every row passes (a) and (b).
# CPU only (DS_ACCELERATOR=cpu, gloo, 127.0.0.1). Needs a venv with torch 2.15.0 + deepspeed 0.19.8 + ninja +
# safetensors + numpy (+ megatron-core 0.16.1 for the Megatron cases).
#
#   bash scripts/interop/dcp_to_deepspeed.sh VENV [[kind/]case:stage:ranks ...]   (kind: dcp (default) | megatron)
#     default: fsdp2_dp2:1:1 fsdp2_dp2:2:2 fsdp2_tp_2x2:1:2 fsdp2_tp_2x2:3:2 ep_mesh_empty_shard:1:1
#              ep_mesh_empty_shard:3:2, and with megatron-core importable megatron/gpt_tp2:1:1
#              megatron/gpt_tp2_dp2:2:2 megatron/gpt_tp2_swiglu_tied:1:1
#   env: UC (uc binary; default target/release/uc, built if missing), OUT (default /tmp/uc-dcp-ds),
#        UC_FIXTURES (default ../shared/fixtures), PORT_BASE (default 29950), NICE (default 10)
set -uo pipefail
VENV=${1:?usage: dcp_to_deepspeed.sh VENV [case:stage:ranks ...]}
shift
source "$(dirname "$0")/setup.sh" . /tmp/uc-dcp-ds 29950
CASES=("$@")
if [[ ${#CASES[@]} -eq 0 ]]; then
  CASES=(fsdp2_dp2:1:1 fsdp2_dp2:2:2 fsdp2_tp_2x2:1:2 fsdp2_tp_2x2:3:2 ep_mesh_empty_shard:1:1 ep_mesh_empty_shard:3:2)
  "$VENV/bin/python" -c "import megatron.core" 2>/dev/null \
    && CASES+=(megatron/gpt_tp2:1:1 megatron/gpt_tp2_dp2:2:2 megatron/gpt_tp2_swiglu_tied:1:1) \
    || echo "(megatron-core not importable: Megatron cases skipped)"
fi
TAG=global_step3_universal
RESULTS=()
for spec in "${CASES[@]}"; do
  IFS=: read -r case_ stage n <<< "$spec"
  [[ "$case_" == */* ]] || case_=dcp/$case_
  d=$OUT/${case_//\//_}
  if [[ ! -d "$d/$TAG" ]]; then
    uc_convert "$FIX/$case_/checkpoint" "$d/$TAG" deepspeed || continue
    echo "$TAG" > "$d/latest_universal"
  fi
  res=$d/_zero${stage}_ranks${n}.json
  echo "=== $case_: ZeRO-$stage on $n rank(s) from $d/$TAG"
  on_ranks "$n" "$res" "$ROOT/scripts/interop/dcp_to_deepspeed.py" --case "$FIX/$case_" --load-dir "$d" \
      --tag "$TAG" --stage "$stage"
  RESULTS+=("$spec|$res")
done

"$VENV/bin/python" - "${RESULTS[@]}" <<'PY'
import json, sys
ok = True
f = lambda x: "-" if x is None else ("pass" if x else "FAIL")
print(f"{'case:stage:ranks':<36} {'(a)load':<8} {'(b)bits':<8} {'tensors':<8} {'(c)loss4 / fixture FSDP2'}")
for item in sys.argv[1:]:
    spec, path = item.split("|")
    r = json.load(open(path))
    a, b = r.get("a_loaded", False), r.get("b_loaded_equals_expected_bitwise")
    c = r.get("c_error") or r.get("c_skipped") or f"{r.get('c_loss_step4')!r} / {r.get('c_loss_step4_fixture')!r}"
    det = r.get("load_error") or r.get("b_error") or ""
    if r.get("b_mismatching_keys"):
        det += f" mismatching: {r['b_mismatching_keys'][:5]}"
    print(f"{spec:<36} {f(a):<8} {f(b):<8} {r.get('b_compared', '-')!s:<8} {c} {det[:300]}")
    ok &= bool(a and b)
sys.exit(0 if ok else 1)
PY
