#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET seconds each (default 60) with
# libFuzzer + AddressSanitizer, seeded from ../shared/fixtures. Exits non-zero on any crash, panic,
# leak, out-of-memory or timeout; each failing input is copied to crates/uc-fuzz/regressions/<target>/,
# where `cargo test -p uc-fuzz` replays it from then on.
#
# Installs cargo-fuzz when missing. Uses the nightly toolchain when the machine has one; otherwise
# builds on stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs the -Z sanitizer flags); UC_FUZZ_STABLE=1
# forces that path.
#
#   bash scripts/fuzz.sh 20           # every target, 20 s each
#   bash scripts/fuzz.sh 3600 pickle  # one target for an hour
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-60}
shift || true
case "$secs" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;; esac

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi
if [ "${UC_FUZZ_STABLE:-}" != 1 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
  echo "== toolchain: nightly"
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
  echo "== toolchain: stable with RUSTC_BOOTSTRAP=1 (no nightly on this machine)"
fi

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
echo "== seed corpus from ../shared/fixtures"
cargo run --quiet -p uc-fuzz --bin uc-fuzz-corpus -- "$seeds"

# The fuzz crate keeps its own (sanitizer-built) target folder, whatever the caller set.
unset CARGO_TARGET_DIR
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
echo "== building ${#targets[@]} targets"
cargo "${toolchain[@]}" fuzz build --release

failed=()
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  mkdir -p "corpus/$t" "artifacts/$t"
  before=$(ls "artifacts/$t" | wc -l)
  if ! cargo "${toolchain[@]}" fuzz run --release "$t" "corpus/$t" "$seeds/$t" -- \
      -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
      -print_final_stats=1 2>"artifacts/$t.log"; then
    failed+=("$t")
  fi
  tail -n 12 "artifacts/$t.log" | grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|ERROR|panicked|Done' || true
  if [ "$(ls "artifacts/$t" | wc -l)" -gt "$before" ]; then
    mkdir -p "$root/crates/uc-fuzz/regressions/$t"
    for a in "artifacts/$t"/*; do
      cp -n "$a" "$root/crates/uc-fuzz/regressions/$t/"
      echo "   failing input: fuzz/$a (copied to crates/uc-fuzz/regressions/$t/)"
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (logs in fuzz/artifacts/<target>.log)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${secs}s each without a crash"
