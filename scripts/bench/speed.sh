#!/usr/bin/env bash
# The README's performance table in one run: unicheck against `cp -r` of the same files (the floor through
# the page cache; `cp -r + sync` also waits for the disk, as every uc output does before it is published),
# DeepSpeed's `ds_to_universal` and `zero_to_fp32`, and torch's `dcp_to_torch_save`, on three real
# checkpoints, each step after `sync` from a warm page cache, median of REPEAT (default 3) runs.
#
# Usage: [VENV=/tmp/torchvenv] [REPEAT=3] [ROOT=/tmp/uc-bench] bash scripts/bench/speed.sh
# Checkpoints (made with VENV when absent; every byte written by real DeepSpeed / torch on CPU):
#   ROOT/big      ZeRO-2 fp32, dp 2, 8 layers × hidden 1024, vocab 16000: ~125 M params, ~2 GB, 374 tensors
#   ROOT/many     ZeRO-2 fp32, dp 2, 1,500 blocks of LayerNorm(32) + Linear(32, 32): 6,001 tensors, ~30 MB
#   ROOT/dcp_big  FSDP2 dp 2 + AdamW, 96 layers × hidden 1024: ~126 M params, ~1.5 GB
# Writes a markdown table to stdout and ROOT/speed.md; logs in ROOT/logs/speed_*.log.
# Needs GNU time; VENV with torch==2.15.0 deepspeed==0.19.8 safetensors numpy ninja huggingface_hub.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${VENV:-/tmp/torchvenv}
ROOT=${ROOT:-/tmp/uc-bench}
REPEAT=${REPEAT:-3}
LOGS=$ROOT/logs; mkdir -p "$LOGS"
export PATH=$VENV/bin:$PATH DS_ACCELERATOR=cpu DS_BUILD_OPS=0 PYTHONWARNINGS=ignore
(cd "$REPO" && cargo build -q --release -p uc-cli)
UC=${UC:-${CARGO_TARGET_DIR:-$REPO/target}/release/uc}
OUTS=$ROOT/speed-out; rm -rf "$OUTS"; mkdir -p "$OUTS"

[[ -f $ROOT/big/latest ]] || bash "$HERE/make_zero2_checkpoint.sh" "$ROOT/big" --hidden 1024 --layers 8 --vocab 16000
[[ -f $ROOT/many/latest ]] || PORT=29573 bash "$HERE/make_zero2_checkpoint.sh" "$ROOT/many" --many-blocks 1500
[[ -f $ROOT/dcp_big/checkpoint/.metadata ]] || PORT=29575 bash "$HERE/make_dcp_checkpoint.sh" "$ROOT/dcp_big" --layers 96

# t LABEL CMD...: REPEAT runs of CMD (@OUT@ in it: a fresh output path), each after `sync`; prints "LABEL median_s maxrss_mib".
# Outputs are removed after each run, except while KEEP=1: ext4 does not reuse an inode for a minute after it
# was freed and scans past every recently freed one (`recently_deleted`), so creating 24,000 files right after
# removing 24,000 others costs many times more than creating them on a clean disk. The many-file section keeps
# its outputs until it ends; every tool there writes where nothing was just removed.
RUN=0
t() {
  local label=$1; shift
  local times=() rss=0 i s e log=$LOGS/speed_${label// /_}.log
  : > "$log"
  for i in $(seq "$REPEAT"); do
    RUN=$((RUN + 1)); OUT=$OUTS/$RUN
    prep "$@"
    sync
    s=$(date +%s.%N)
    local args=("${@//@OUT@/$OUT}")
    /usr/bin/time -f "maxrss_kb %M" -a -o "$log" "${args[@]}" >> "$log" 2>&1 || { echo "FAILED: $label (see $log)" >&2; exit 1; }
    e=$(date +%s.%N)
    times+=("$(echo "$e - $s" | bc)")
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$OUT"
  done
  rss=$(awk '/maxrss_kb/ { if ($2 > m) m = $2 } END { printf "%.0f", m / 1024 }' "$log")
  printf '%s %s %s\n' "$label" "$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p")" "$rss"
}

warm() { find "$@" -type f -exec cat {} + > /dev/null; }

# prep CMD...: the page cache warm again before a timed step: the step's input (WARM, set per checkpoint)
# and, for a Python tool, the modules it imports. Needed here because this machine class runs DAMON with a
# `pageout` scheme (/sys/kernel/mm/damon/admin): file pages that look cold for a minute (touched in at
# most one of ten 0.5 s samples per 5 s) are evicted at up to 128 MB/s, so an input read only once per
# step drains from the cache during a long run, and the steps after it paid for disk reads (seen with
# `perf sched`: conversions waiting in `filemap_fault`). Untimed; the same for every tool.
prep() {
  warm "${WARM[@]}"
  if [[ "$*" == *python* ]]; then python -c 'import torch, deepspeed' > /dev/null 2>&1; fi
}

results=$(
  B=$ROOT/big; TAG=$(cat "$B/latest"); WARM=("$B/$TAG")
  t "big: cp -r" cp -r "$B/$TAG" @OUT@
  t "big: cp -r + sync" sh -c 'cp -r "$1" "$2" && sync' _ "$B/$TAG" @OUT@
  t "big: uc convert native" "$UC" convert "$B" @OUT@
  t "big: uc convert deepspeed" "$UC" convert "$B" @OUT@ --format deepspeed
  t "big: ds_to_universal" python -m deepspeed.checkpoint.ds_to_universal --input_folder "$B/$TAG" \
      --output_folder @OUT@ --inject_missing_state
  # The same with its output on disk when it ends, as uc's is (uc syncs before `latest` / `COMPLETE`).
  t "big: ds_to_universal + sync" sh -c 'python -m deepspeed.checkpoint.ds_to_universal --input_folder "$1" \
      --output_folder "$2" --inject_missing_state && sync' _ "$B/$TAG" @OUT@
  t "big: uc export" "$UC" export "$B" @OUT@
  t "big: zero_to_fp32" python "$B/zero_to_fp32.py" "$B" @OUT@ --safe_serialization
  sleep 65   # let the inodes freed above age past ext4's "recently deleted" window
  M=$ROOT/many; TAG=$(cat "$M/latest"); WARM=("$M/$TAG"); KEEP=1
  t "many: cp -r" cp -r "$M/$TAG" @OUT@
  t "many: uc convert native" "$UC" convert "$M" @OUT@
  t "many: uc convert deepspeed" "$UC" convert "$M" @OUT@ --format deepspeed
  t "many: ds_to_universal" python -m deepspeed.checkpoint.ds_to_universal --input_folder "$M/$TAG" \
      --output_folder @OUT@ --inject_missing_state
  KEEP=0; rm -rf "$OUTS"; mkdir -p "$OUTS"; sync
  D=$ROOT/dcp_big/checkpoint; WARM=("$D")
  t "dcp: cp -r" cp -r "$D" @OUT@
  t "dcp: cp -r + sync" sh -c 'cp -r "$1" "$2" && sync' _ "$D" @OUT@
  t "dcp: uc convert native" "$UC" convert "$D" @OUT@
  t "dcp: uc convert dcp" "$UC" convert "$D" @OUT@ --format dcp
  t "dcp: dcp_to_torch_save" python -c \
    "import sys; from torch.distributed.checkpoint.format_utils import dcp_to_torch_save as f; f(sys.argv[1], sys.argv[2])" \
    "$D" @OUT@
)
rm -rf "$OUTS"
{
  echo "| step | median s (of $REPEAT) | peak RSS MiB |"
  echo "|---|---|---|"
  while read -r line; do
    rss=${line##* }; rest=${line% *}; sec=${rest##* }; label=${rest% *}
    echo "| $label | $sec | $rss |"
  done <<< "$results"
} | tee "$ROOT/speed.md"
echo "(peak RSS counts mapped input pages still in the page tables: uc drops each tensor's once it is written; heap: cargo bench -p uc-benches --bench convert)"
