#!/usr/bin/env bash
# DCP interop with real torch: every DeepSpeed (native MoE and AutoEP × AutoTP included), DCP and Megatron fixture → `uc convert --format dcp` →
# torch's `dcp.load` (plain state dict; TinyLM in one process; TinyLM under FSDP2 on 2 ranks) → every
# tensor equal to the fixture's expected.safetensors. Needs a venv with torch (2.15) and safetensors.
#
#   VENV=/tmp/torchvenv bash scripts/interop/dcp_interop.sh [--no-fsdp2]
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-/tmp/torchvenv}
PY="$VENV/bin/python"
FIX=${UC_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
export UC_FIXTURES="$FIX"
FSDP2=--fsdp2
[[ "${1:-}" == "--no-fsdp2" ]] && FSDP2=

cargo build -q -p uc-cli
UC=target/debug/uc
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

fail=0
check() { # name input expected modes...
  local name=$1 input=$2 expected=$3
  shift 3
  "$UC" convert --format dcp --dcp-files 2 "$input" "$OUT/$name" >/dev/null
  if "$PY" scripts/interop/dcp_load_check.py "$OUT/$name" "$expected" "$@" 2>"$OUT/$name.err" >"$OUT/$name.json"; then
    echo "ok    $name: $(cut -c1-160 <"$OUT/$name.json" | tr '\n' ' ')"
  else
    echo "FAIL  $name"; cat "$OUT/$name.json"; tail -20 "$OUT/$name.err"; fail=1
  fi
}

for c in zero1 zero2 zero3 bf16_zero1 tp2_zero1 tp2_dp2_zero2_bf16 pp2_zero1 pp2_dp2_zero1_bf16 \
         pp2_tied_zero1 pp2_dp2_tied_zero1 ep2_zero2 ep2_zero1_bf16 ep2_zero3; do
  check "ds_$c" "$FIX/deepspeed/$c" "$FIX/deepspeed/$c/expected.safetensors" --plain --tinylm $FSDP2
done
# Native DeepSpeed MoE and AutoEP folded with AutoTP: no TinyLM of theirs here, so plain state dicts.
for c in moe_ep2_zero2 moe_ep2_zero1 moe_ep2_nozero ep2_tp2_zero1; do
  check "ds_$c" "$FIX/deepspeed/$c" "$FIX/deepspeed/$c/expected.safetensors" --plain
done
for c in fsdp2_dp2 fsdp2_tp_2x2 ep_mesh_empty_shard; do
  check "dcp_$c" "$FIX/dcp/$c/checkpoint" "$FIX/dcp/$c/expected.safetensors" --plain --tinylm $FSDP2
done
for c in gpt_tp2 gpt_tp2_dp2 gpt_tp2_swiglu_tied; do
  check "megatron_$c" "$FIX/megatron/$c/checkpoint" "$FIX/megatron/$c/expected.safetensors" --plain
done
exit $fail
