#!/usr/bin/env bash
# DeepSpeed interop: `uc convert <fixture> --format deepspeed` -> real DeepSpeed `load_universal` resume
# (engine.load_checkpoint(dir, tag="global_step3_universal"), exactly as the fixture generators resume
# DeepSpeed's own universal output), checked by deepspeed_resume.py:
#   (a) loads, (b) fp32 params + Adam moments == expected.safetensors bit for bit, (c) step-4 loss == manifest.
# DeepSpeed's own global_step3_universal of the same fixture is resumed the same way as a control, and
#   (d) the uc resume must equal the control: same step-4 loss and bit-identical full state after step 4.
# Exit status 0 iff every uc row passes (a), (b) and (d). (c) compares with numbers recorded on the fixture
# machine; a (c) failure the control shares is machine numerics (seen: tp2_zero1 and ep2_zero1_bf16:2 differ by
# 1 ulp here, for uc and control alike), not the conversion.
# CPU only (DS_ACCELERATOR=cpu, gloo, 127.0.0.1). Needs a venv with torch 2.15.0 + deepspeed 0.19.8 + ninja +
# safetensors + numpy.
#
#   bash scripts/interop/deepspeed_resume.sh VENV [case[:n] ...]
#     default cases: zero1 zero2 zero3 bf16_zero1 tp2_zero1:1 tp2_zero1:2, plus ep2_zero2:1 ep2_zero2:2 when
#     the venv imports transformers (AutoEP needs transformers==5.22.2; a `pip install --target DIR` copy on
#     PYTHONPATH works too)
#     tp*:n = AutoTP fixture resumed with autotp_size n on n ranks (dp 1, gas 2)
#     ep*:n = AutoEP fixture resumed with autoep_size n on n ranks (n=1: dp 1, gas 2; n=2: dp 2, gas 1)
#   env: UC (uc binary; default target/release/uc, built if missing), OUT (default /tmp/ucu),
#        UC_FIXTURES (default ../shared/fixtures), PORT_BASE (default 29900), NICE (default 10)
set -uo pipefail
VENV=${1:?usage: deepspeed_resume.sh VENV [case[:n] ...]}
shift
source "$(dirname "$0")/setup.sh" deepspeed /tmp/ucu 29900
CASES=("$@")
if [[ ${#CASES[@]} -eq 0 ]]; then
  CASES=(zero1 zero2 zero3 bf16_zero1 tp2_zero1:1 tp2_zero1:2)
  "$VENV/bin/python" -c "import transformers" 2>/dev/null && CASES+=(ep2_zero2:1 ep2_zero2:2) \
    || echo "(transformers not importable: AutoEP cases skipped)"
fi
PYS=$ROOT/scripts/interop/deepspeed_resume.py
TAG=global_step3_universal

RESULTS=()
for spec in "${CASES[@]}"; do
  case_=${spec%%:*}; n=1; [[ "$spec" == *:* ]] && n=${spec##*:}
  par=tp; [[ "$case_" == ep* ]] && par=ep
  fx=$FIX/$case_
  d=$OUT/$case_
  rm -rf "$d/$TAG" "$d/latest_universal"   # uc refuses an existing output folder
  uc_convert "$fx" "$d/$TAG" deepspeed || continue
  echo "$TAG" > "$d/latest_universal"
  for src in uc deepspeed; do
    ld=$d; [[ $src == deepspeed ]] && ld=$fx
    res=$d/_resume_${src}_${par}${n}.json
    echo "=== $case_ (resume $par=$n on $n rank(s)) from $src universal: $ld/$TAG"
    rm -f "${res%.json}.state4.pt"
    on_ranks "$n" "$res" "$PYS" --fixture "$fx" --load-dir "$ld" --tag "$TAG" --$par "$n" \
        --save-state4 "${res%.json}.state4.pt"
    RESULTS+=("$spec|$src|$res")
  done
done

"$VENV/bin/python" - "${RESULTS[@]}" <<'PY'
# (a) load, (b) loaded == expected.safetensors bitwise, (c) step-4 loss == manifest,
# (d) uc resume == DeepSpeed-universal resume (control, same machine): same step-4 loss and bit-identical
#     full state after step 4. Exit 1 unless every uc row passes (a), (b) and (d); (c) is reported, and a
#     (c) failure that the control shares is machine numerics, not the conversion.
import json, os, sys
import torch
rows = [i.split("|") for i in sys.argv[1:]]
res = {(spec, src): json.load(open(p)) for spec, src, p in rows}
f = lambda x: "-" if x is None else ("pass" if x else "FAIL")
ok = True
print(f"{'case':<14} {'source':<10} {'(a)load':<8} {'(b)bits':<8} {'(c)loss4':<9} {'(d)=ctrl':<9} detail")
for spec, src, path in rows:
    r = res[(spec, src)]
    a, b, c = r.get("a_loaded", False), r.get("b_loaded_equals_expected_bitwise"), r.get("c_loss_step4_equal")
    d = None
    ctrl = res.get((spec, "deepspeed"))
    if src == "uc" and ctrl and r.get("state4_file") and ctrl.get("state4_file"):
        s, t = torch.load(r["state4_file"]), torch.load(ctrl["state4_file"])
        d = (r.get("c_loss_step4") == ctrl.get("c_loss_step4") and s.keys() == t.keys()
             and all(torch.equal(s[k], t[k]) for k in s))
    elif src == "uc":
        d = False
    det = r.get("load_error") or r.get("b_error") or r.get("c_error") or (
        f"loss4 {r.get('c_loss_step4')!r} vs manifest {r.get('c_loss_step4_manifest')!r}")
    if r.get("b_mismatching_keys"):
        det += f"; {len(r['b_mismatching_keys'])} mismatching (max |d| {r.get('b_max_abs_diff')})"
    print(f"{spec:<14} {src:<10} {f(a):<8} {f(b):<8} {f(c):<9} {f(d):<9} {det[:300]}")
    if src == "uc":
        ok &= bool(a and b and d)
sys.exit(0 if ok else 1)
PY
