#!/usr/bin/env bash
# Write a real DeepSpeed ZeRO checkpoint for benchmarks (CPU only, gloo, 2 ranks on 127.0.0.1).
#
# Usage: [VENV=/path/to/venv] bash scripts/bench/make_zero2_checkpoint.sh [OUT] [extra make_zero2_checkpoint.py flags]
#   OUT defaults to /tmp/uc-bench/zero2; it is wiped and rewritten (OUT/global_step1/, OUT/latest,
#   OUT/zero_to_fp32.py, OUT/bench_info.json). Keep it out of the repository.
#   Examples:
#     bash scripts/bench/make_zero2_checkpoint.sh                                   # ZeRO-2 fp32, ~0.62 GB
#     bash scripts/bench/make_zero2_checkpoint.sh /tmp/uc-bench/zero2_bf16 --bf16   # ZeRO-2 bf16, ~0.54 GB
#     bash scripts/bench/make_zero2_checkpoint.sh /tmp/uc-bench/zero1_bf16 --stage 1 --bf16   # BF16_Optimizer
# VENV (default /tmp/torchvenv) needs torch==2.15.0 deepspeed==0.19.8 numpy ninja (see README.md).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-/tmp/torchvenv}
OUT=${1:-/tmp/uc-bench/zero2}
[[ $# -gt 0 ]] && shift
NPROC=${NPROC:-2}
PORT=${PORT:-29571}

export PATH=$VENV/bin:$PATH   # ninja must be on PATH: DeepSpeed's CPU accelerator JIT-builds its shm_comm op
export DS_ACCELERATOR=cpu DS_BUILD_OPS=0 OMP_NUM_THREADS=1 MASTER_ADDR=127.0.0.1

case "$OUT" in
  "$HERE"/*|"$(cd "$HERE/../.." && pwd)"/*) echo "refusing to write a checkpoint inside the repository: $OUT" >&2; exit 2 ;;
esac
rm -rf "$OUT"; mkdir -p "$OUT"
LOG=$OUT.train.log
echo "=== training + save_checkpoint -> $OUT (log: $LOG)"
nice -n "${NICE:-10}" torchrun --nnodes 1 --nproc_per_node "$NPROC" --master_addr 127.0.0.1 --master_port "$PORT" \
    "$HERE/make_zero2_checkpoint.py" --out "$OUT" "$@" > "$LOG" 2>&1 || { tail -40 "$LOG"; exit 1; }
grep -E "^params=|^saved " "$LOG" || true
ls -l "$OUT"/global_step*/
du -sb "$OUT"/global_step*
