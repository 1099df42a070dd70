# Sourced by time_deepspeed.sh and time_export.sh, which set HERE, LOGS, NAME and NICE.
#   run NAME CLEANUP_DIR CMD...  one run of CMD after removing CLEANUP_DIR, under nice, rss_tree.py (peak of the
#                                process tree) and GNU time -v; full log in LOGS/<NAME>_<name>.log, key lines shown
#   summary LOG...               one line per log: wall s, max RSS of one process, tree RSS / PSS peaks (MiB)

run() {
  local name=$1 clean=$2; shift 2
  rm -rf "$clean"; sync
  local log=$LOGS/${NAME}_$name.log
  echo "=== $name: $*" | tee "$log"
  echo "loadavg_before: $(cat /proc/loadavg)" >> "$log"
  nice -n "$NICE" python "$HERE/rss_tree.py" -- /usr/bin/time -v "$@" >> "$log" 2>&1
  echo "loadavg_after: $(cat /proc/loadavg)" >> "$log"
  grep -E "Elapsed|Maximum resident|User time|System time|peak_tree|read_ratio" "$log" | sed 's/^\s*/    /'
}

summary() {
  printf '%-40s %8s %12s %14s %14s\n' run wall_s maxrss_mib tree_rss_mib tree_pss_mib
  local f
  for f in "$@"; do
    awk -v n="$(basename "$f" .log)" '
      /Elapsed \(wall clock\)/ { split($NF, t, ":"); w = (length(t) == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
      /Maximum resident set size/ { m = $NF / 1024 }
      /peak_tree_rss_mib/ { split($1, a, "="); split($2, b, "="); tr = a[2]; tp = b[2] }
      END { printf "%-40s %8.2f %12.0f %14s %14s\n", n, w, m, tr, tp }' "$f"
  done
}
