#!/usr/bin/env bash
# Runs every check unicheck has: format, lints, tests, wasm builds. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (deny warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "fuzz every parser target for 3 s (scripts/fuzz.sh; installs cargo-fuzz if missing)"
bash scripts/fuzz.sh 3

step "wasm32 builds of the pure crates"
cargo build -p uc-schema -p uc-merge -p uc-wasm --target wasm32-unknown-unknown

step "uc-burn with the cuda feature compiles (CUDA is loaded at run time; tests need a GPU)"
cargo check -p uc-burn --features cuda --all-targets

step "az:// against Azurite, Azure's storage emulator (scripts/azure-test.sh; installs it from npm if missing)"
bash scripts/azure-test.sh

step "browser test of the web viewer (installs wasm-bindgen-cli, chromium, playwright-core if missing)"
bash scripts/web-test.sh

echo
echo "all checks passed"
