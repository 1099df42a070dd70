#!/usr/bin/env bash
# Write a real PyTorch DCP checkpoint (FSDP2, 2 CPU ranks, AdamW state) for benchmarks: OUT/checkpoint/.
#
# Usage: [VENV=/path/to/venv] bash scripts/bench/make_dcp_checkpoint.sh [OUT] [make_dcp_checkpoint.py flags]
#   OUT defaults to /tmp/uc-bench/dcp (wiped). Default model: 46 M params → ~0.55 GB of .distcp files.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-/tmp/torchvenv}
OUT=${1:-/tmp/uc-bench/dcp}
[[ $# -gt 0 ]] && shift
case "$OUT" in
  "$(cd "$HERE/../.." && pwd)"/*) echo "refusing to write a checkpoint inside the repository: $OUT" >&2; exit 2 ;;
esac
rm -rf "$OUT"; mkdir -p "$OUT"
export OMP_NUM_THREADS=1
nice -n "${NICE:-10}" "$VENV/bin/torchrun" --nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 \
    --master_port "${PORT:-29581}" "$HERE/make_dcp_checkpoint.py" --out "$OUT" "$@"
du -sb "$OUT/checkpoint"
