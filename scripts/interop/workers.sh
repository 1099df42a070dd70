#!/usr/bin/env bash
# Cooperating workers of `uc convert` (--format native) started by torchrun and by flags, and a SIGKILL one:
#   (a) torchrun --nproc_per_node 3 --no-python uc convert INPUT OUT --json: torchrun exits 0; 3 JSON lines,
#       world_size 3, ranks 0,1,2, exactly one "published": true; output byte-identical (find + cmp, every file)
#       to a single-process `uc convert` of INPUT; `uc verify` passes; nothing else in the output's parent;
#   (b) the same for 2 workers started at once with --world-size 2 --rank R;
#   (c) kill: 2 workers by flags, one (random rank) SIGKILLed after a random delay (10-90 % of the
#       time (b) took): the other exits 0, and no output appears unless the job had already finished
#       (then it must be complete and identical); a rerun of both publishes an output identical to the
#       single-process one that `uc verify` accepts, rewrites none of the survivor's share, and leaves nothing
#       stale (no `.<name>.uc-*` staging folder) beside the output. When the kill comes after the finish (tiny
#       inputs), the kill is retried with half the delay, then with none (4 tries at most).
# Exit status 0 iff every check passes. A rerun worker that joins while (or after) the other publishes the job
# reports it already published and exits 0 (an earlier uc failed such a late worker; this script found it).
# Takes ~3 s on the small default fixture, ~20 s on the 2 GB benchmark checkpoint (5 conversions + byte
# compares of 1.5 GB outputs). CPU only; needs a venv with torch (for torchrun; 2.15.0 here).
#
#   bash scripts/interop/workers.sh VENV [INPUT]
#     INPUT: any checkpoint `uc convert` reads (default <UC_FIXTURES>/deepspeed/tp2_dp2_zero2_bf16); pass the
#     2 GB benchmark checkpoint for a run where workers really overlap and the kill lands mid-write
#   env: UC (uc binary; default target/release/uc, built if missing), OUT (default /tmp/uc-workers),
#        UC_FIXTURES (default ../shared/fixtures), PORT_BASE (default 29970), NICE (default 10),
#        KILL_DELAY_MS / KILL_RANK (replay a kill), KEEP=1 (keep the outputs after a pass; removed by default)
set -uo pipefail
VENV=${1:?usage: workers.sh VENV [INPUT]}
if [[ $# -ge 2 ]]; then INPUT=$(cd "$2" && pwd) || exit 1; fi
source "$(dirname "$0")/setup.sh" deepspeed /tmp/uc-workers 29970
INPUT=${INPUT:-$FIX/tp2_dp2_zero2_bf16}
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log
T0=$SECONDS
[[ -d "$INPUT" ]] || { echo "!!! FAIL: input $INPUT is not a folder"; exit 1; }
command -v torchrun > /dev/null || { echo "!!! FAIL: no torchrun in $VENV/bin"; exit 1; }
# Worker variables of an enclosing launcher would override nothing here (flags win) but would confuse the
# single-process reference and torchrun: this check is self-contained.
unset WORLD_SIZE RANK LOCAL_RANK LOCAL_WORLD_SIZE OMPI_COMM_WORLD_SIZE OMPI_COMM_WORLD_RANK PMI_SIZE PMI_RANK
for v in $(compgen -e | grep '^SLURM_'); do unset "$v"; done
rm -rf "$OUT/ref" "$OUT/torchrun" "$OUT/flags" "$OUT/kill" "$LOG"
mkdir -p "$OUT/ref" "$OUT/torchrun" "$OUT/flags" "$OUT/kill" "$LOG"

step() { echo; echo "=== $* ($((SECONDS - T0)) s)"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
RESULTS=()
check() { # NAME STATUS DETAIL
  local s=PASS; [[ $2 -eq 0 ]] || s=FAIL
  RESULTS+=("$(printf '%-4s  %-44s %s' "$s" "$1" "$3")")
  echo "$s  $1: $3"
}
# errs TAG: the last stderr line of each worker that printed one
errs() { local r; for r in 0 1; do [[ -s "$LOG/$1.r$r.err" ]] && echo -n "rank $r: $(tail -n 1 "$LOG/$1.r$r.err"); "; done; }
source "$(dirname "${BASH_SOURCE[0]}")/worker_checks.sh"
# output checks: identical to the reference, `uc verify`, nothing else in its parent
out_checks() { # LABEL DIR (DIR's parent must hold only DIR)
  local d r left
  d=$(same_tree "$REF" "$2"); check "$1: byte-identical to 1 process" $? "$d"
  d=$(nice -n "$NICE" "$UC" verify "$2" 2>&1); r=$?; check "$1: uc verify" $r "$(tail -n 1 <<< "$d")"
  left=$(ls -A "$(dirname "$2")" | tr '\n' ' ')
  [[ "$left" == "$(basename "$2") " ]]; check "$1: nothing beside the output" $? "$(dirname "$2") holds: ${left:-nothing}"
}
# workers2 DIR TAG: 2 workers by flags, started at once; JSON in LOG/TAG.r<R>.json; sets PID_R[r]
workers2() {
  local r
  PID_R=()
  for r in 0 1; do
    nice -n "$NICE" "$UC" convert "$INPUT" "$1" --world-size 2 --rank $r --json \
      > "$LOG/$2.r$r.json" 2> "$LOG/$2.r$r.err" &
    PID_R[r]=$!
  done
}
sum_field() { # FIELD FILE...: sum of an integer field over JSON lines
  local k=$1; shift
  grep -ho "\"$k\": *[0-9]*" "$@" | grep -o '[0-9]*$' | awk '{s += $1} END {print s + 0}'
}

# ---------------------------------------------------------------------------------------------------------------
step "[1/5] reference: single-process uc convert $INPUT"
REF=$OUT/ref/out
t=$(now_ms)
nice -n "$NICE" "$UC" convert "$INPUT" "$REF" --world-size 1 --rank 0 --json > "$LOG/ref.json" 2> "$LOG/ref.err" \
  || { cat "$LOG/ref.err"; echo "!!! FAIL: single-process uc convert failed"; exit 1; }
echo "$(cat "$LOG/ref.json") ($(($(now_ms) - t)) ms)"

# ---------------------------------------------------------------------------------------------------------------
step "[2/5] torchrun --nproc_per_node 3 --no-python uc convert ... --json"
t=$(now_ms)
nice -n "$NICE" torchrun --nnodes 1 --nproc_per_node 3 --master_addr 127.0.0.1 --master_port $((PORT++)) --no-python \
  "$UC" convert "$INPUT" "$OUT/torchrun/out" --json > "$LOG/torchrun.jsonl" 2> "$LOG/torchrun.err"
rc=$?
cat "$LOG/torchrun.jsonl"; echo "(torchrun rc $rc, $(($(now_ms) - t)) ms)"
[[ $rc -eq 0 ]] || tail -20 "$LOG/torchrun.err"
d=$(json_check "$LOG/torchrun.jsonl" 3); r=$?
[[ $rc -eq 0 ]] || { r=1; d="torchrun rc $rc; $d"; }
check "(a) torchrun: 3 workers, one published" $r "$d"
out_checks "(a) torchrun" "$OUT/torchrun/out"

# ---------------------------------------------------------------------------------------------------------------
step "[3/5] 2 workers by flags (--world-size 2 --rank 0|1), started at once"
t=$(now_ms)
workers2 "$OUT/flags/out" flags
wait "${PID_R[0]}"; rc0=$?; wait "${PID_R[1]}"; rc1=$?
FLAGS_MS=$(($(now_ms) - t))
cat "$LOG"/flags.r*.json; echo "(rc $rc0 $rc1, $FLAGS_MS ms)"
cat "$LOG/flags.r0.json" "$LOG/flags.r1.json" > "$LOG/flags.jsonl"
d=$(json_check "$LOG/flags.jsonl" 2); r=$?
[[ $rc0 -eq 0 && $rc1 -eq 0 ]] || { r=1; d="rc $rc0 $rc1; $d; $(errs flags)"; }
check "(b) flags: 2 workers, one published" $r "$d"
out_checks "(b) flags" "$OUT/flags/out"

# ---------------------------------------------------------------------------------------------------------------
step "[4/5] kill: 2 workers, SIGKILL one after a random delay, then rerun both"
KD=$OUT/kill
delay=${KILL_DELAY_MS:-$((FLAGS_MS / 10 + RANDOM % (FLAGS_MS * 8 / 10 + 1)))}
victim=${KILL_RANK:-$((RANDOM % 2))}
resumed=0
for try in 1 2 3 4; do
  rm -rf "$KD" && mkdir -p "$KD"
  [[ $try -eq 4 ]] && { delay=0; victim=1; }   # rank 1 is started last: killed right after its start
  survivor=$((1 - victim))
  echo "try $try: SIGKILL rank $victim after $delay ms (replay: KILL_DELAY_MS=$delay KILL_RANK=$victim)"
  workers2 "$KD/out" kill
  [[ $delay -gt 0 ]] && sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  kill -KILL "${PID_R[victim]}" 2> /dev/null
  { wait "${PID_R[victim]}"; } 2> /dev/null; rc_v=$?
  wait "${PID_R[survivor]}"; rc_s=$?
  echo "rank $victim (killed) rc $rc_v, rank $survivor rc $rc_s: $(cat "$LOG/kill.r$survivor.json")"
  echo "left in $KD: $(ls -A "$KD" | tr '\n' ' ')"
  if [[ -e "$KD/out" ]]; then
    # The job published before the kill took effect (rank $victim had finished its share, or was itself
    # publishing): the output must be complete.
    [[ $rc_s -eq 0 && ( $rc_v -eq 0 || $rc_v -eq 137 ) ]]
    check "(c) kill after the finish (try $try): exits" $? "rank $victim rc $rc_v, rank $survivor rc $rc_s"
    d=$(same_tree "$REF" "$KD/out"); check "(c) kill after the finish (try $try): complete" $? "$d"
    stale=$(ls -A "$KD" | grep -vx out | tr '\n' ' ')
    if [[ -n "$stale" ]]; then
      # SIGKILL between the publishing rename and the removal of the staging folder leaves that folder; the
      # next `uc convert` of this output removes it (and refuses, the output existing).
      echo "note: the kill hit the publisher after its rename, before its cleanup: $stale left; rerunning once"
      nice -n "$NICE" "$UC" convert "$INPUT" "$KD/out" --world-size 2 --rank 0 --json > "$LOG/stale.json" 2> "$LOG/stale.err"
      echo "rerun rc $?: $(tr '\n' ' ' < "$LOG/stale.err")"
      left=$(ls -A "$KD" | tr '\n' ' ')
      [[ "$left" == "out " ]]
      check "(c) stale staging removed by the next run" $? "$KD holds: $left"
    fi
    echo "(the kill came after the publish: retrying with a shorter delay, to exercise the rerun)"
    delay=$((delay / 2)); victim=$((RANDOM % 2))
    continue
  fi
  [[ $rc_v -eq 137 && $rc_s -eq 0 ]]
  check "(c) kill: victim killed, survivor exits 0" $? "rank $victim rc $rc_v, rank $survivor rc $rc_s $(errs kill)"
  check "(c) kill: no output appeared" 0 "survivor: published false, $(sum_field missing_tensors "$LOG/kill.r$survivor.json") tensors missing; left: $(ls -A "$KD" | tr '\n' ' ')"
  share=$(sum_field share_bytes "$LOG/kill.r$survivor.json")
  total=$(sum_field bytes "$LOG/ref.json")
  workers2 "$KD/out" rerun
  wait "${PID_R[0]}"; rc0=$?; wait "${PID_R[1]}"; rc1=$?
  cat "$LOG"/rerun.r*.json
  cat "$LOG/rerun.r0.json" "$LOG/rerun.r1.json" > "$LOG/rerun.jsonl"
  d=$(json_check "$LOG/rerun.jsonl" 2); r=$?
  [[ $rc0 -eq 0 && $rc1 -eq 0 ]] || { r=1; d="rc $rc0 $rc1; $d; $(errs rerun)"; }
  check "(c) rerun: 2 workers exit 0, one published" $r "$d"
  written=$(sum_field bytes_written "$LOG/rerun.jsonl")
  [[ $written -le $((total - share)) ]]
  check "(c) rerun keeps the survivor's share" $? "rerun wrote $written of $total bytes (survivor's share: $share bytes; $(sum_field reused_tensors "$LOG/rerun.jsonl") tensors reused)"
  out_checks "(c) kill + rerun" "$KD/out"
  resumed=1
  break
done
[[ $resumed -eq 1 ]] || check "(c) a kill before the finish" 1 "every kill came after the publish, even with no delay"

# ---------------------------------------------------------------------------------------------------------------
step "[5/5] summary (input $INPUT)"
printf '%s\n' "${RESULTS[@]}"
if printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'; then
  echo "FAIL: workers.sh ($((SECONDS - T0)) s; logs in $LOG)"
  exit 1
fi
[[ "${KEEP:-0}" == 1 ]] || rm -rf "$OUT/ref" "$OUT/torchrun" "$OUT/flags" "$OUT/kill"
echo "PASS: workers.sh — torchrun x3, flags x2 and kill + rerun = 1 process, byte for byte ($((SECONDS - T0)) s)"
