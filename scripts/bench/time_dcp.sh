#!/usr/bin/env bash
# Times `uc convert` of a DCP checkpoint (native and --format dcp) against torch's own
# `torch.distributed.checkpoint.format_utils.dcp_to_torch_save` on the same files, REPEAT times each,
# with the peak RSS of the whole process tree (rss_tree.py).
#
# Usage: [VENV=/tmp/torchvenv] [REPEAT=3] [NICE=10] bash scripts/bench/time_dcp.sh [ROOT]
#   ROOT defaults to /tmp/uc-bench/dcp (made by make_dcp_checkpoint.sh); outputs go to ROOT/out-*.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${VENV:-/tmp/torchvenv}
ROOT=$(cd "${1:-/tmp/uc-bench/dcp}" && pwd)
CKPT=$ROOT/checkpoint
REPEAT=${REPEAT:-3}
NICE=${NICE:-10}
(cd "$REPO" && cargo build -q --release -p uc-cli)
UC=$REPO/target/release/uc
echo "checkpoint: $CKPT  $(du -sb "$CKPT" | cut -f1) bytes"
run() {  # name out cmd...
  local name=$1 out=$2; shift 2
  for i in $(seq "$REPEAT"); do
    rm -rf "$out"; sync
    local r
    r=$(nice -n "$NICE" "$VENV/bin/python" "$HERE/rss_tree.py" -- "$@" 2>&1 >/dev/null | grep peak_tree)
    echo "$name #$i: $r"
  done
}
run "uc convert -> native" "$ROOT/out-native" "$UC" convert --threads 2 "$CKPT" "$ROOT/out-native"
run "uc convert -> dcp" "$ROOT/out-dcp" "$UC" convert --threads 2 --format dcp "$CKPT" "$ROOT/out-dcp"
run "torch dcp_to_torch_save" "$ROOT/out.pt" "$VENV/bin/python" -c \
  "import sys; from torch.distributed.checkpoint.format_utils import dcp_to_torch_save as f; f(sys.argv[1], sys.argv[2])" \
  "$CKPT" "$ROOT/out.pt"
