# Sourced by the interop drivers after `set -uo pipefail` with VENV as $1:
#   source "$(dirname "$0")/setup.sh" <fixture kind> <default OUT> <default PORT_BASE>
# Sets VENV (absolute), ROOT (repo root, the working directory), FIX (<UC_FIXTURES>/<kind>), OUT, PORT, NICE,
# UC (target/release/uc, built if missing), puts the venv first on PATH (DeepSpeed JIT-builds its CPU op with
# its ninja) and exports the CPU / gloo / 127.0.0.1 settings. Env overrides: UC, OUT, UC_FIXTURES, PORT_BASE, NICE.
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
