#!/usr/bin/env bash
# Builds the browser viewer (uc-wasm → web/pkg/) and runs its headless-Chromium test.
#
# Installs what it needs when missing: the wasm32 target, wasm-bindgen-cli at exactly the version of
# the wasm-bindgen crate in Cargo.lock (~4 min to build), Debian's chromium (apt-get), and web/'s npm
# packages (playwright-core, pinned in web/package-lock.json; it never downloads a browser).
# Output: target/web-test/ (expected plan, self-contained page, the pages `uc view` writes without a
# viewer build, screenshots). Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
took() { printf '   (%ss)\n' "$((SECONDS - $1))"; }
export PATH="$HOME/.cargo/bin:$PATH"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="$TARGET_DIR/web-test"
start=$SECONDS

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

ver=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$ver" ]; then
  echo "wasm-bindgen is not in Cargo.lock" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $ver" ]; then
  step "cargo install wasm-bindgen-cli $ver (takes a few minutes)"
  t=$SECONDS
  # --locked first; when the registry lacks a locked dependency version, resolve afresh.
  cargo install wasm-bindgen-cli --version "=$ver" --locked \
    || cargo install wasm-bindgen-cli --version "=$ver"
  took $t
fi

if [ ! -x /usr/bin/chromium ] && [ -z "${UC_CHROMIUM:-}" ]; then
  step "apt-get install chromium"
  t=$SECONDS
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  took $t
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "the browser test needs Node.js 20 or newer (playwright-core); found: $(node --version 2>/dev/null || echo none)" >&2
  exit 1
fi
if [ ! -f web/node_modules/playwright-core/package.json ] \
  || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  step "npm ci (web/)"
  (cd web && npm ci --no-audit --no-fund)
fi

step "cargo build -p uc-wasm --target wasm32-unknown-unknown --release"
t=$SECONDS
cargo build -p uc-wasm --target wasm32-unknown-unknown --release
rm -rf web/pkg
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  "$TARGET_DIR/wasm32-unknown-unknown/release/uc_wasm.wasm"
took $t

step "expected plan and self-contained page"
mkdir -p "$OUT"
cargo run -q -p uc-wasm --example expected_plan -- web/examples/gqa_tp2_deepspeed.json >"$OUT/expected.json"
cargo run -q -p uc-wasm --example standalone -- web/pkg/uc_wasm_bg.wasm web/pkg/uc_wasm.js \
  web/examples/gqa_tp2_deepspeed.json "$OUT/standalone.html"

step "uc view without a viewer build, run from an empty directory"
# The pre-rendered page must need no web/pkg: uc runs in a fresh temp dir with no --pkg / UC_WEB_PKG.
cargo build -q -p uc-cli
uc="$(cd "$TARGET_DIR/debug" && pwd)/uc"
repo=$PWD
away=$(mktemp -d)
trap 'rm -rf "$away"' EXIT
(cd "$away" && env -u UC_WEB_PKG "$uc" view "$repo/examples/checkpoints/tp2_dp2_zero2_bf16")
mv "$away/uc-view.html" "$OUT/view_static.html"
rm -f "$OUT/view_static_dcp.html"
dcp="$repo/../shared/fixtures/dcp/fsdp2_tp_2x2/checkpoint"
if [ -d "$dcp" ]; then
  (cd "$away" && env -u UC_WEB_PKG "$uc" view "$dcp" --out dcp.html)
  mv "$away/dcp.html" "$OUT/view_static_dcp.html"
fi

step "browser test (headless chromium)"
t=$SECONDS
node web/test/browser-test.mjs "$OUT"
took $t
echo "web test done in $((SECONDS - start))s; screenshots in $OUT/"
