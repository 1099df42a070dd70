#!/usr/bin/env bash
# Time `uc export` beside DeepSpeed's `zero_to_fp32.py --safe_serialization` on a checkpoint written by
# make_zero2_checkpoint.sh, check the outputs are byte-identical, and measure the bytes each one reads.
#
# Usage: [UC=target/release/uc] [VENV=/tmp/torchvenv] [NICE=10] [REPEAT=3] bash scripts/bench/time_export.sh [CKPT_ROOT]
#   CKPT_ROOT defaults to /tmp/uc-bench/zero2. Writes P/<name>_uc_hf/ and P/<name>_fp32/ (P = parent of
#   CKPT_ROOT) and logs in P/logs/. Same wrapping as time_deepspeed.sh: nice, rss_tree.py, GNU time -v, warm cache.
# Bytes read: the input files are evicted from the page cache (posix_fadvise DONTNEED), the tool runs once cold,
#   and `fincore` counts the input pages now resident: every byte read from disk, readahead and pickles included.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
UC=${UC:-$ROOT/target/release/uc}
VENV=${VENV:-/tmp/torchvenv}
CKPT=$(cd "${1:-/tmp/uc-bench/zero2}" && pwd)
TAG=$(cat "$CKPT/latest")
P=$(dirname "$CKPT"); NAME=$(basename "$CKPT")
UC_OUT=$P/${NAME}_uc_hf
FP32_OUT=$P/${NAME}_fp32
LOGS=$P/logs; mkdir -p "$LOGS"
export PATH=$VENV/bin:$PATH DS_ACCELERATOR=cpu DS_BUILD_OPS=0
NICE=${NICE:-10}
REPEAT=${REPEAT:-3}
UCX=("$UC" export "$CKPT" "$UC_OUT" --json)
Z2F=(python "$CKPT/zero_to_fp32.py" "$CKPT" "$FP32_OUT" --safe_serialization)

source "$HERE/timing.sh"

evict() { python - "$@" <<'EOF'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
EOF
}

cold_read() {  # name cleanup_dir cmd... → bytes of the input files resident after one cold run
  local name=$1 clean=$2; shift 2
  rm -rf "$clean"; sync
  evict "$CKPT/$TAG"/*.pt
  local before; before=$(fincore --bytes --noheadings --output RES "$CKPT/$TAG"/*.pt | awk '{s+=$1} END {print s+0}')
  nice -n "$NICE" /usr/bin/time -f "cold_wall_s=%e" "$@" > "$LOGS/${NAME}_${name}_cold.log" 2>&1
  local after; after=$(fincore --bytes --noheadings --output RES "$CKPT/$TAG"/*.pt | awk '{s+=$1} END {print s+0}')
  echo "cold_read $name: $((after - before)) bytes of $(du -sb "$CKPT/$TAG" | cut -f1) read from the input," \
    "$(grep -o 'cold_wall_s=[0-9.]*' "$LOGS/${NAME}_${name}_cold.log")"
  fincore --bytes "$CKPT/$TAG"/*.pt | sed 's/^/    /'
}

echo "checkpoint: $CKPT/$TAG  $(du -sb "$CKPT/$TAG" | cut -f1) bytes"
cold_read uc_export "$UC_OUT" "${UCX[@]}"
cold_read zero_to_fp32 "$FP32_OUT" "${Z2F[@]}"
cat "$CKPT/$TAG"/*.pt > /dev/null   # warm the page cache: every timed run below reads from RAM
for r in $(seq 1 "$REPEAT"); do   # interleaved, so drifting load from other users hits both alike
  run uc_export_r$r "$UC_OUT" "${UCX[@]}"
  run zero_to_fp32_safetensors_r$r "$FP32_OUT" "${Z2F[@]}"
done
echo "=== summary (wall s from GNU time; max RSS = largest single process, file-backed mmap pages included)"
summary "$LOGS/${NAME}"_uc_export_r*.log "$LOGS/${NAME}"_zero_to_fp32_safetensors_r*.log
if cmp -s "$UC_OUT/model.safetensors" "$FP32_OUT/model.safetensors"; then
  echo "outputs: byte-identical model.safetensors ($(stat -c %s "$UC_OUT/model.safetensors") bytes)"
else
  echo "outputs: DIFFER"; exit 1
fi
