#!/usr/bin/env bash
# FINDINGS: what real DeepSpeed 0.19.8 `load_universal` accepts from `uc convert --format deepspeed` outputs of the
# MoE fixtures. For each case: `uc convert <fixture> <OUT>/<case>/global_step3_universal --format deepspeed`, then
# under torchrun (2 ranks, ep 2) the fixture's own model + optimizer groups + ds_config (shared generator
# fixtures/deepspeed/generator/moe/make_moe_fixtures.py) with `"checkpoint": {"load_universal": true}`,
# `engine.load_checkpoint(<OUT>/<case>, tag="global_step3_universal")`, and every fp32 param + Adam exp_avg /
# exp_avg_sq (safe_get_full_*; experts gathered over EP and renamed to global ids) against expected.safetensors
# bit for bit (moe_resume.py). Mismatches are classified (== init: not restored; == expected of another tensor:
# restored from the wrong file).
# A refusal by DeepSpeed is a FINDING, recorded in the table, not a failure. Exit 1 only when a load that
# DeepSpeed reported as successful leaves wrong numbers (a silent mis-load), or a conversion / run crashes.
# Native MoE (moe_*): this check found that experts under their global names were loaded without an error but
# gave EP rank 1 the experts of rank 0; uc now writes expert folders under the EP-local name with `param` stacked
# over the EP ranks ([ep, ...], is_expert_param, ep_num_experts = ep), which DeepSpeed restores (resuming at the
# same EP size only). Without ZeRO (moe_ep2_nozero) uc refuses: DeepSpeed resumes that from expp_rank_* files only.
#
#   bash scripts/interop/moe_resume.sh VENV [case[:stage] ...]
#     default cases: moe_ep2_zero2 moe_ep2_zero1 moe_ep2_nozero moe_ep2_nozero:1 moe_ep2_nozero:2, plus
#     ep2_tp2_zero1 when the venv imports transformers. :stage = ZeRO stage to resume with (default: the fixture's).
#   env: UC, OUT (default /tmp/ucmoe), UC_FIXTURES (default ../shared/fixtures), PORT_BASE (default 29950), NICE
set -uo pipefail
VENV=${1:?usage: moe_resume.sh VENV [case[:stage] ...]}
shift
source "$(dirname "$0")/setup.sh" deepspeed /tmp/ucmoe 29950
CASES=("$@")
if [[ ${#CASES[@]} -eq 0 ]]; then
  CASES=(moe_ep2_zero2 moe_ep2_zero1 moe_ep2_nozero)
  "$VENV/bin/python" -c "import transformers" 2>/dev/null && CASES+=(ep2_tp2_zero1) \
    || echo "(transformers not importable: ep2_tp2_zero1 skipped)"
fi
PYS=$ROOT/scripts/interop/moe_resume.py
TAG=global_step3_universal

RESULTS=()
declare -A CONVERTED=()
for spec in "${CASES[@]}"; do
  base=${spec%%:*}; st=(); [[ "$spec" == *:* ]] && st=(--stage "${spec##*:}")
  case_=$base
  fx=$FIX/$case_
  d=$OUT/$case_
  if [[ $case_ == moe_ep2_nozero ]]; then   # no ZeRO: uc must refuse (DeepSpeed resumes it from expp files only)
    rm -rf "$d"; mkdir -p "$d"
    if "$UC" convert "$fx" "$d/$TAG" --format deepspeed > "$d/_convert.log" 2>&1; then
      RESULTS+=("$spec|not-refused")   # a universal folder DeepSpeed cannot resume from
    elif grep -q load_universal "$d/_convert.log" && [[ ! -e "$d/$TAG" ]]; then
      RESULTS+=("$spec|refused")
    else
      RESULTS+=("$spec|convert-failed")
    fi
    continue
  fi
  if [[ -z "${CONVERTED[$case_]:-}" ]]; then   # convert each fixture once per run
    rm -rf "$d/$TAG" "$d/latest_universal"   # uc refuses an existing output folder
    uc_convert "$fx" "$d/$TAG" deepspeed || { RESULTS+=("$spec|convert-failed"); continue; }
    echo "$TAG" > "$d/latest_universal"
    CONVERTED[$case_]=1
  fi
  res=$d/_resume_${spec//:/_s}.json
  echo "=== $spec: load_universal of $d/$TAG (log ${res%.json}.log)"
  on_ranks 2 "$res" "$PYS" --fixture "$fx" --load-dir "$d" --tag "$TAG" "${st[@]}"
  RESULTS+=("$spec|$res")
done

"$VENV/bin/python" - "${RESULTS[@]}" <<'PY'
import json, sys
ok = True
W = max([18] + [len(i.split("|", 1)[0]) + 1 for i in sys.argv[1:]])
print(f"{'case[:stage]':<{W}} {'stage':<5} {'loaded':<7} {'matched':<8} {'fp32':<6} {'exp_avg':<8} {'exp_avg_sq':<10} "
      f"{'experts':<8} detail")
for item in sys.argv[1:]:
    spec, path = item.split("|", 1)
    if path == "convert-failed":
        print(f"{spec:<{W}} uc convert failed"); ok = False; continue
    if path == "refused":
        print(f"{spec:<{W}} -     uc refuses --format deepspeed for native MoE without ZeRO (as it must)"); continue
    if path == "not-refused":
        print(f"{spec:<{W}} uc wrote a DeepSpeed layout DeepSpeed cannot resume from"); ok = False; continue
    r = json.load(open(path))
    st = r.get("resume_zero_stage", "?")
    if not r.get("a_loaded"):
        err = r.get("load_error") or r.get("setup_error") or "?"
        crash = err.startswith("no result (crash)") or "setup_error" in r
        ok &= not crash
        print(f"{spec:<{W}} {st!s:<5} {'NO':<7} {'-':<8} {'-':<6} {'-':<8} {'-':<10} {'-':<8} "
              f"{'(script/setup) ' if crash else ''}DeepSpeed: {err[:400]}")
        continue
    n, N = r.get("n_matched", 0), r.get("n_expected", 0)
    mk, ek = r.get("matched_by_kind", {}), r.get("expected_by_kind", {})
    kind = lambda k: f"{mk.get(k, 0)}/{ek.get(k, 0)}"
    mism = r.get("mismatching", {})
    why = {}
    for k, v in mism.items():
        w = ("wrong expert's values" if v.startswith("== expected of") and ("experts" in k)
             else "== init (not restored)" if v.startswith("== pre-load") else v.split(" ")[0])
        why[w] = why.get(w, 0) + 1
    det = "bit-exact" if not mism else "; ".join(f"{c} x {w}" for w, c in why.items())
    import re
    got = sorted({(m[1], m[2], re.search(r"deepspeed_experts\.(\d+)\.", v)[1]) for k, v in mism.items()
                  for m in [re.match(r"^(blocks\.\d+)\.mlp\.deepspeed_moe\.experts\.deepspeed_experts\.(\d+)\.", k)]
                  if m and v.startswith("== expected of") and "deepspeed_experts." in v})
    if got:
        det += " (" + ", ".join(f"{b} expert {e} holds expert {o}" for b, e, o in got) + ")"
    if r.get("b_error"):
        det += f"; gather error: {r['b_error'][:200]}"
    print(f"{spec:<{W}} {st!s:<5} {'yes':<7} {f'{n}/{N}':<8} {kind('fp32'):<6} {kind('exp_avg'):<8} "
          f"{kind('exp_avg_sq'):<10} {str(r.get('matched_experts'))+'/'+str(r.get('expected_experts')):<8} {det}")
    if mism:
        ok = False
        for k, v in list(mism.items())[:4]:
            print(f"{'':<{W}}   e.g. {k}: {v}")
print("RESULT:", "no silent mis-load" if ok else "a load DeepSpeed accepted gave WRONG numbers (or a run crashed)")
sys.exit(0 if ok else 1)
PY
