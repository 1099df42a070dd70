# Sourced by workers.sh and slurm.sh (after LOG is set): the checks both make of cooperating `uc` workers.
#   json_check FILE N   the --json lines of N workers: ranks 0..N-1, world_size N each, exactly one published
#   same_tree A B       the same file tree (names and types) with every file byte-identical
json_check() { # FILE N
  local f=$1 n=$2 lines ranks want ws pub
  lines=$(grep -c '^{' "$f")
  ranks=$(grep -o '"rank": *[0-9]*' "$f" | grep -o '[0-9]*$' | sort -n | tr '\n' ' ')
  want=$(seq 0 $((n - 1)) | tr '\n' ' ')
  ws=$(grep -Ec "\"world_size\": *$n[,}]" "$f")
  pub=$(grep -Ec '"published": *true' "$f")
  echo "$lines JSON lines, ranks [${ranks% }], world_size $n on $ws, published on $pub"
  [[ $lines -eq $n && "$ranks" == "$want" && $ws -eq $n && $pub -eq 1 ]]
}
same_tree() { # A B
  local a=$1 b=$2 f nf=0 bad=0
  [[ -d "$a" && -d "$b" ]] || { echo "missing: $([[ -d "$a" ]] || echo "$a ")$([[ -d "$b" ]] || echo "$b")"; return 1; }
  if ! diff <(cd "$a" && find . -mindepth 1 -printf '%y %P\n' | sort) \
            <(cd "$b" && find . -mindepth 1 -printf '%y %P\n' | sort) > "$LOG/tree.diff"; then
    echo "file lists differ: $(head -c 300 "$LOG/tree.diff" | tr '\n' ' ')"; return 1
  fi
  while IFS= read -r -d '' f; do
    nf=$((nf + 1))
    cmp -s "$a/$f" "$b/$f" || { bad=$((bad + 1)); [[ $bad -le 5 ]] && echo -n "differs: $f; "; }
  done < <(cd "$a" && find . -type f -printf '%P\0')
  echo "$nf files, $(cd "$a" && find . -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}') bytes compared, $bad differ"
  [[ $bad -eq 0 ]]
}
