#!/usr/bin/env bash
# Cooperating workers under a real Slurm: starts a private one-node Slurm cluster on localhost (munged,
# slurmctld, slurmd; config, state, spool and logs under OUT/slurm), runs
#   srun -n 3 uc convert INPUT OUT/srun/out --json
# (each task takes its rank from SLURM_PROCID / SLURM_NTASKS) and checks:
#   (a) srun succeeds; 3 JSON lines, world_size 3 on each, ranks 0,1,2, exactly one "published": true;
#   (b) the output is byte-identical, file for file (find + cmp), to a single-process `uc convert` of INPUT;
#   (c) `uc verify` passes on it;
#   (d) nothing but the output is left in its parent folder (no `.<name>.uc-*` staging folder).
# The daemons it started are stopped on exit. Exit status 0 iff (a)-(d) pass; 2 when Slurm cannot be set up.
# Takes ~3 s on the small default fixture, ~20 s on the 2 GB benchmark checkpoint (two conversions + a byte
# compare), plus the first time `apt-get update && apt-get install slurm-wlm munge` (~1-2 min).
# Needs: Debian/Ubuntu with slurm-wlm + munge installed (installed with apt-get when missing; that needs root),
# root to run the daemons (SlurmUser=root), free TCP ports SLURM_PORT_BASE and +1 on 127.0.0.1. No GPU, no venv.
# Slurm settings: SelectType=select/cons_tres (CR_Core), ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
# no cgroups, no accounting; the node is `slurmd -C`'s (real CPUs / memory); srun -O (overcommit) lets 3 tasks
# run on a node with fewer CPUs.
#
#   bash scripts/interop/slurm.sh [INPUT]
#     INPUT: any checkpoint `uc convert` reads (default <UC_FIXTURES>/deepspeed/tp2_dp2_zero2_bf16), e.g. the
#     2 GB benchmark checkpoint
#   env: UC (uc binary; default target/release/uc, built if missing), OUT (scratch, default /tmp/uc-slurm),
#        UC_FIXTURES (default ../shared/fixtures), SLURM_PORT_BASE (default 16817), NICE (default 10),
#        SRUN_TIMEOUT (seconds, default 1800), KEEP=1 (keep the converted outputs after a pass; removed by default)
set -uo pipefail
if [[ $# -ge 1 ]]; then INPUT=$(cd "$1" && pwd) || exit 2; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
ROOT=$(pwd)
INPUT=${INPUT:-${UC_FIXTURES:-$(cd .. && pwd)/shared/fixtures}/deepspeed/tp2_dp2_zero2_bf16}
OUT=${OUT:-/tmp/uc-slurm}
PORT=${SLURM_PORT_BASE:-16817}
NICE=${NICE:-10}
UC=${UC:-$ROOT/target/release/uc}
export PATH=$PATH:/usr/sbin:/sbin
T0=$SECONDS

step() { echo; echo "=== $* ($((SECONDS - T0)) s)"; }
die() { echo "!!! FAIL: $*"; exit 2; }
[[ -d "$INPUT" ]] || die "input $INPUT is not a folder"
[[ -x "$UC" ]] || nice -n "$NICE" cargo build --release -q -p uc-cli || die "cannot build $UC"

# Worker variables of an enclosing launcher or Slurm job would confuse srun and uc: this check is self-contained.
unset WORLD_SIZE RANK LOCAL_RANK LOCAL_WORLD_SIZE OMPI_COMM_WORLD_SIZE OMPI_COMM_WORLD_RANK PMI_SIZE PMI_RANK
for v in $(compgen -e | grep '^SLURM_'); do unset "$v"; done

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
SD=$OUT/slurm
LOG=$SD/log

# ---------------------------------------------------------------------------------------------------------------
step "[1/6] Slurm and munge installed"
need=(slurmctld slurmd srun sinfo munged munge)
missing() { local c; for c in "${need[@]}"; do command -v "$c" > /dev/null || echo "$c"; done; }
if [[ -n "$(missing)" ]]; then
  echo "missing: $(missing | tr '\n' ' ')-> apt-get install slurm-wlm munge"
  [[ $(id -u) -eq 0 ]] || die "not root: install slurm-wlm and munge (apt-get install slurm-wlm munge) and rerun"
  command -v apt-get > /dev/null || die "no apt-get: install Slurm (slurmctld, slurmd, srun) and munge by hand"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; } \
    > "$OUT/apt.log" 2>&1 || { tail -20 "$OUT/apt.log"; die "apt-get install slurm-wlm munge failed ($OUT/apt.log)"; }
  [[ -z "$(missing)" ]] || die "still missing after apt-get: $(missing | tr '\n' ' ')"
fi
[[ $(id -u) -eq 0 ]] || die "not root: this check runs slurmctld/slurmd as root (SlurmUser=root)"
echo "$(slurmd -V), $(munged -V 2>&1 | head -1)"

# ---------------------------------------------------------------------------------------------------------------
step "[2/6] one-node Slurm cluster on localhost (config and logs in $SD)"
PIDS=()   # daemons started here, stopped (in reverse order) on exit
stop_daemons() {
  local i p n
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    kill -TERM "$p" 2> /dev/null || continue
    for ((n = 0; n < 100; n++)); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -0 "$p" 2> /dev/null && kill -KILL "$p" 2> /dev/null
    wait "$p" 2> /dev/null
  done
  [[ ${#PIDS[@]} -gt 0 ]] && echo "(stopped the daemons started here: pids ${PIDS[*]})"
  PIDS=()
  return 0
}
trap stop_daemons EXIT
trap 'exit 130' INT TERM
# Daemons of an earlier run of this script that was killed (their command lines name this config): stop them.
for f in "$SD"/munged.pid "$SD"/slurmctld.pid "$SD"/slurmd.pid; do
  [[ -f "$f" ]] || continue
  p=$(cat "$f" 2> /dev/null)
  if [[ "$p" =~ ^[0-9]+$ ]] && tr '\0' ' ' 2> /dev/null < "/proc/$p/cmdline" | grep -qF "$SD/"; then
    echo "stopping daemon $p left by an earlier run ($f)"; kill -TERM "$p"; sleep 2
  fi
done
rm -rf "$SD"
mkdir -p "$SD/state" "$SD/spool" "$LOG" && mkdir -m 711 "$SD/munge" || die "cannot create $SD"
chmod 755 "$SD"
tail_logs() { local f; for f in "$@"; do [[ -f "$f" ]] && { echo "--- $f"; tail -25 "$f"; }; done; }

# munge: a private key and socket (any system munged is left alone)
MSOCK=$SD/munge/munge.socket
dd if=/dev/urandom of="$SD/munge/munge.key" bs=1024 count=1 status=none && chmod 400 "$SD/munge/munge.key"
munged -F --force --key-file="$SD/munge/munge.key" --socket="$MSOCK" --pid-file="$SD/munged.pid" \
  --log-file="$LOG/munged.log" --seed-file="$SD/munge/munged.seed" > "$LOG/munged.out" 2>&1 &
PIDS+=($!)
for ((n = 0; n < 100; n++)); do [[ -S "$MSOCK" ]] && break; kill -0 "${PIDS[0]}" 2> /dev/null || break; sleep 0.1; done
munge -n -S "$MSOCK" | unmunge -S "$MSOCK" > /dev/null 2>&1 \
  || { tail_logs "$LOG/munged.out" "$LOG/munged.log"; die "munged does not answer on $MSOCK"; }
echo "munged up (pid ${PIDS[0]}, socket $MSOCK)"

NODE_LINE=$(slurmd -C 2> "$LOG/slurmd-C.err" | grep -m1 '^NodeName=') || { cat "$LOG/slurmd-C.err"; die "slurmd -C failed"; }
NODE=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<< "$NODE_LINE")
CTLD_HOST=$(hostname -s)
export SLURM_CONF=$SD/slurm.conf
cat > "$SLURM_CONF" << EOF
# Written by scripts/interop/slurm.sh: a private one-node cluster on localhost, no cgroups, no accounting.
ClusterName=uccheck
SlurmctldHost=$CTLD_HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$MSOCK
CredType=cred/munge
StateSaveLocation=$SD/state
SlurmdSpoolDir=$SD/spool
SlurmctldPidFile=$SD/slurmctld.pid
SlurmdPidFile=$SD/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=uc Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
echo "node: $NODE_LINE"
nice -n "$NICE" slurmctld -D -c -f "$SLURM_CONF" > "$LOG/slurmctld.out" 2>&1 &
PIDS+=($!)
nice -n "$NICE" slurmd -D -N "$NODE" -f "$SLURM_CONF" > "$LOG/slurmd.out" 2>&1 &
PIDS+=($!)
NAMES=(munged slurmctld slurmd)
state=
for ((n = 0; n < 60; n++)); do
  state=$(sinfo -h -N -n "$NODE" -o %T 2> /dev/null)
  [[ "$state" == idle ]] && break
  for i in 0 1 2; do
    kill -0 "${PIDS[i]}" 2> /dev/null \
      || { tail_logs "$LOG"/slurm*.out "$LOG"/slurm*.log; die "${NAMES[i]} (pid ${PIDS[i]}) exited: see its log above"; }
  done
  sleep 1
done
[[ "$state" == idle ]] || { sinfo; tail_logs "$LOG"/slurm*.out "$LOG"/slurm*.log; die "node $NODE not idle after 60 s (state: ${state:-none})"; }
sinfo
echo "slurmctld pid ${PIDS[1]}, slurmd pid ${PIDS[2]}, ports $PORT/$((PORT + 1))"

# ---------------------------------------------------------------------------------------------------------------
step "[3/6] reference: single-process uc convert $INPUT"
REF=$OUT/ref/out
RUN=$OUT/srun/out
rm -rf "$OUT/ref" "$OUT/srun" && mkdir -p "$OUT/ref" "$OUT/srun"
t=$SECONDS
nice -n "$NICE" "$UC" convert "$INPUT" "$REF" --world-size 1 --rank 0 --json > "$LOG/ref.json" 2> "$LOG/ref.err" \
  || { cat "$LOG/ref.err"; die "single-process uc convert failed"; }
echo "$(cat "$LOG/ref.json") ($((SECONDS - t)) s)"

# ---------------------------------------------------------------------------------------------------------------
step "[4/6] srun -n 3 uc convert $INPUT $RUN --json"
t=$SECONDS
timeout "${SRUN_TIMEOUT:-1800}" srun -N 1 -n 3 -O -J uc-convert "$UC" convert "$INPUT" "$RUN" --json \
  > "$LOG/srun.jsonl" 2> "$LOG/srun.err"
SRUN_RC=$?
cat "$LOG/srun.jsonl"
[[ $SRUN_RC -eq 0 ]] || { echo "--- srun stderr:"; tail -30 "$LOG/srun.err"; }
echo "(srun rc $SRUN_RC, $((SECONDS - t)) s)"

# ---------------------------------------------------------------------------------------------------------------
step "[5/6] checks"
RESULTS=()
check() { # NAME STATUS DETAIL
  local s=PASS; [[ $2 -eq 0 ]] || s=FAIL
  RESULTS+=("$(printf '%-4s  %-44s %s' "$s" "$1" "$3")")
}
source "$ROOT/scripts/interop/worker_checks.sh"
d=$(json_check "$LOG/srun.jsonl" 3); r=$?
[[ $SRUN_RC -eq 0 ]] || { r=1; d="srun rc $SRUN_RC; $d"; }
check "(a) srun: 3 workers, one published" $r "$d"
d=$(same_tree "$REF" "$RUN"); check "(b) byte-identical to 1 process" $? "$d"
d=$(nice -n "$NICE" "$UC" verify "$RUN" 2>&1); r=$?; check "(c) uc verify" $r "$(tail -n 1 <<< "$d")"
left=$(ls -A "$OUT/srun" | tr '\n' ' ')
[[ "$left" == "out " ]]; check "(d) nothing beside the output" $? "$OUT/srun holds: ${left:-nothing}"

# ---------------------------------------------------------------------------------------------------------------
step "[6/6] summary (input $INPUT)"
printf '%s\n' "${RESULTS[@]}"
for ((n = 0; n < 20; n++)); do [[ -z "$(squeue -h 2> /dev/null)" ]] && break; sleep 0.5; done   # job steps wound up
stop_daemons
if printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'; then
  echo "FAIL: slurm.sh ($((SECONDS - T0)) s; logs in $LOG)"
  exit 1
fi
[[ "${KEEP:-0}" == 1 ]] || rm -rf "$OUT/ref" "$OUT/srun"
echo "PASS: slurm.sh — srun -n 3 uc convert = 1 process, byte for byte ($((SECONDS - T0)) s)"
