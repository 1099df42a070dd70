# Sourced by the interop drivers after `set -uo pipefail` with VENV as $1:
#   source "$(dirname "$0")/setup.sh" <fixture kind> <default OUT> <default PORT_BASE>
# Sets VENV (absolute), ROOT (repo root, the working directory), FIX (<UC_FIXTURES>/<kind>), OUT, PORT, NICE,
# UC (target/release/uc, built if missing), puts the venv first on PATH (DeepSpeed JIT-builds its CPU op with
# its ninja) and exports the CPU / gloo / 127.0.0.1 settings. Env overrides: UC, OUT, UC_FIXTURES, PORT_BASE, NICE.
# Defines uc_convert and on_ranks (below).
VENV=$(cd "$VENV" && pwd) || exit 1
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
ROOT=$(pwd)
FIX=${UC_FIXTURES:-$(cd .. && pwd)/shared/fixtures}/$1
OUT=${OUT:-$2}
PORT=${PORT_BASE:-$3}
NICE=${NICE:-10}
UC=${UC:-$ROOT/target/release/uc}
export PATH=$VENV/bin:$PATH
export DS_ACCELERATOR=cpu DS_BUILD_OPS=0 OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore MASTER_ADDR=127.0.0.1
[[ -x "$UC" ]] || nice -n "$NICE" cargo build --release -q -p uc-cli || exit 1
mkdir -p "$OUT"

# uc_convert SRC DST FORMAT: `uc convert SRC DST --format FORMAT`, log in DST's folder as _convert.log;
# on failure prints the log and returns 1.
uc_convert() {
  local log
  log=$(dirname "$2")/_convert.log
  mkdir -p "$(dirname "$2")"
  nice -n "$NICE" "$UC" convert "$1" "$2" --format "$3" > "$log" 2>&1 && return 0
  echo "!!! uc convert failed for $1:"; cat "$log"; return 1
}

# on_ranks N RESULT.json SCRIPT ARGS...: torchrun SCRIPT ARGS --result RESULT.json on N local ranks (next port),
# log in RESULT.log; a crash that leaves no result is recorded as a failed load.
on_ranks() {
  local n=$1 res=$2
  shift 2
  rm -f "$res"
  nice -n "$NICE" torchrun --nnodes 1 --nproc_per_node "$n" --master_addr 127.0.0.1 --master_port $((PORT++)) \
      "$@" --result "$res" > "${res%.json}.log" 2>&1
  [[ -f "$res" ]] || echo "{\"a_loaded\": false, \"load_error\": \"no result (crash), see ${res%.json}.log\"}" > "$res"
}
