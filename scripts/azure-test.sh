#!/usr/bin/env bash
# az:// end to end against Azurite, Azure's storage emulator (installed from npm into
# scripts/azure/node_modules when missing): DeepSpeed, DCP and Megatron fixtures uploaded, converted
# from az:// to local and to az://, verified, exported; every result equal to the local one.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; }

if [ ! -f scripts/azure/node_modules/azurite/package.json ] \
  || [ scripts/azure/package-lock.json -nt scripts/azure/node_modules/.package-lock.json ]; then
  step "npm ci (scripts/azure: azurite, @azure/storage-blob)"
  (cd scripts/azure && npm ci --no-audit --no-fund --silent)
fi
step "cargo build -p uc-cli"
cargo build -q -p uc-cli
UC="${CARGO_TARGET_DIR:-target}/debug/uc"
BLOB="node scripts/azure/blob.js"
FIX=../shared/fixtures

tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
scripts/azure/node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$port" \
  --inMemoryPersistence --silent --skipApiVersionCheck --disableTelemetry &
pid=$!
export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$port" AZURE_STORAGE_USE_EMULATOR=true
export UC_CACHE_DIR="$tmp/cache" UC_OBJECT_RETRY_TIMEOUT=5
mkdir -p "$UC_CACHE_DIR"
for _ in $(seq 60); do
  kill -0 "$pid" 2>/dev/null || { echo "azurite exited"; exit 1; }
  timeout 10 $BLOB mkcontainer ckpt 2>/dev/null && break
  sleep 0.5
done
timeout 10 $BLOB mkcontainer ckpt

step "upload the fixtures"
mkdir -p "$tmp/zero2"
cp -r "$FIX/deepspeed/zero2/global_step3" "$FIX/deepspeed/zero2/latest" "$tmp/zero2/"
declare -A src=([zero2]="$tmp/zero2" [fsdp2]="$FIX/dcp/fsdp2_tp_2x2/checkpoint"
                [gpt]="$FIX/megatron/gpt_tp2_dp2/checkpoint")
for name in zero2 fsdp2 gpt; do $BLOB put ckpt "in/$name" "${src[$name]}"; done

for name in zero2 fsdp2 gpt; do
  for format in native dcp; do
    step "$name → $format: az:// → local and az:// → az:// equal local"
    "$UC" convert "${src[$name]}" "$tmp/$name-$format-local" --format "$format" >/dev/null
    "$UC" convert "az://ckpt/in/$name" "$tmp/$name-$format-az" --format "$format" >/dev/null
    diff -r "$tmp/$name-$format-local" "$tmp/$name-$format-az"
    "$UC" convert "az://ckpt/in/$name" "az://ckpt/out/$name-$format" --format "$format" >/dev/null
    $BLOB get ckpt "out/$name-$format" "$tmp/$name-$format-back"
    diff -r "$tmp/$name-$format-local" "$tmp/$name-$format-back"
  done
  "$UC" verify "az://ckpt/out/$name-native" >/dev/null
done

step "export az:// → az:// equals the local export; fetch ratio"
"$UC" export "$tmp/zero2" "$tmp/hf-local" >/dev/null
json=$("$UC" export az://ckpt/in/zero2 az://ckpt/hf --json)
$BLOB get ckpt hf "$tmp/hf-back"
diff -r "$tmp/hf-local" "$tmp/hf-back"
node -e 'const j=JSON.parse(process.argv[1]); const r=j.remote.fetch.ratio;
  if (!(r >= 1 && r <= 1.05)) { console.error("fetch ratio", r); process.exit(1) }
  console.log("fetch ratio", r.toFixed(4), "in", j.remote.fetch.requests, "requests")' "$json"

step "a 20 MiB block upload split between two processes (cargo test -p uc-object --test azure)"
cargo test -q -p uc-object --test azure 2>&1 | tail -20

step "a missing prefix is an error naming it; nothing is left in the cache"
if out=$("$UC" inspect az://ckpt/nothing 2>&1); then echo "should have failed: $out"; exit 1; fi
grep -q "az://ckpt/nothing: no such object" <<<"$out" || { echo "$out"; exit 1; }
left=$(ls -A "$UC_CACHE_DIR" | grep -v '\.done$' || true)
[ -z "$left" ] || { echo "left in the cache: $left"; exit 1; }

echo
echo "azure checks passed"
