#!/usr/bin/env python
"""Run a command and report the peak summed RSS and PSS of its whole process tree.

    python rss_tree.py [--interval 0.1] -- CMD ARGS...

/usr/bin/time -v only reports the largest single process; DeepSpeed's converters fork worker pools, so the
tree total matters. RSS sums count pages shared between forked workers once per process (an upper bound);
PSS (from /proc/PID/smaps_rollup) splits shared pages between the processes that map them. Linux only.
Prints `peak_tree_rss_mib=... peak_tree_pss_mib=... wall_s=...` to stderr; exits with CMD's status.
"""
import os
import subprocess
import sys
import time


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def rss_pss_kib(pid):
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def main():
    args = sys.argv[1:]
    interval = 0.1
    if args[:1] == ["--interval"]:
        interval, args = float(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    t0 = time.time()
    proc = subprocess.Popen(args)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss = pss = 0
        for p in tree(proc.pid):
            r, s = rss_pss_kib(p)
            rss += r
            pss += s
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(interval)
    wall = time.time() - t0
    print(f"peak_tree_rss_mib={peak_rss / 1024:.0f} peak_tree_pss_mib={peak_pss / 1024:.0f} wall_s={wall:.2f}",
          file=sys.stderr)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
