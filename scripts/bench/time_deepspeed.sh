#!/usr/bin/env bash
# Time DeepSpeed's own converters on a checkpoint written by make_zero2_checkpoint.sh.
#
# Usage: [VENV=/tmp/torchvenv] [NICE=10] [REPEAT=3] bash scripts/bench/time_deepspeed.sh [CKPT_ROOT] [TAG]
#   CKPT_ROOT defaults to /tmp/uc-bench/zero2, TAG to the contents of CKPT_ROOT/latest.
# Writes (next to CKPT_ROOT, i.e. in its parent P):
#   P/<name>_ds_universal/   output of ds_to_universal (last run: 2 extract / 2 merge workers)
#   P/<name>_fp32/           output of zero_to_fp32.py --safe_serialization (model.safetensors)
#   P/logs/<name>_*.log      full logs incl. /usr/bin/time -v and the process-tree peak from rss_tree.py
# Needs GNU time (/usr/bin/time) and, for zero_to_fp32.py's default --max_shard_size, huggingface_hub in VENV.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-/tmp/torchvenv}
CKPT=$(cd "${1:-/tmp/uc-bench/zero2}" && pwd)
TAG=${2:-$(cat "$CKPT/latest")}
P=$(dirname "$CKPT"); NAME=$(basename "$CKPT")
UCP_OUT=$P/${NAME}_ds_universal
FP32_OUT=$P/${NAME}_fp32
LOGS=$P/logs; mkdir -p "$LOGS"
export PATH=$VENV/bin:$PATH DS_ACCELERATOR=cpu DS_BUILD_OPS=0
NICE=${NICE:-10}
REPEAT=${REPEAT:-3}

# DeepSpeed's ds_to_universal refuses checkpoints without `universal_checkpoint_info` in the model states
# (only Megatron-DeepSpeed / AutoTP / AutoEP write it); --inject_missing_state adds the version key in memory.
UCP=(python -m deepspeed.checkpoint.ds_to_universal --input_folder "$CKPT/$TAG" --output_folder "$UCP_OUT"
     --inject_missing_state)

source "$HERE/timing.sh"

echo "checkpoint: $CKPT/$TAG  $(du -sb "$CKPT/$TAG" | cut -f1) bytes"
cat "$CKPT/$TAG"/*.pt > /dev/null   # warm the page cache: every run below reads from RAM
for r in $(seq 1 "$REPEAT"); do   # interleaved, so drifting load from other users hits every variant alike
  run ucp_w1_m1_r$r "$UCP_OUT" "${UCP[@]}" --num_extract_workers 1 --num_merge_workers 1
  run zero_to_fp32_safetensors_r$r "$FP32_OUT" python "$CKPT/zero_to_fp32.py" "$CKPT" "$FP32_OUT" --safe_serialization
  run ucp_w2_m2_r$r "$UCP_OUT" "${UCP[@]}" --num_extract_workers 2 --num_merge_workers 2
done
echo "=== summary (wall s from GNU time; max RSS = largest single process; tree = summed over the process tree)"
summary "$LOGS/${NAME}"_*_r*.log
echo "ds universal: $UCP_OUT  $(du -sb "$UCP_OUT" | cut -f1) bytes, $(find "$UCP_OUT" -type f | wc -l) files"
echo "zero_to_fp32: $FP32_OUT  $(du -sb "$FP32_OUT" | cut -f1) bytes"
