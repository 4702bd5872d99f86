#!/usr/bin/env bash
# Side-by-side of two `divergence` binaries on the benchmark dumps (docs/performance.md): the
# two alternate run by run (warm page cache, ns clock), with all threads and with one, so that
# a code change is measured apart from the machine.
#
#   bash scripts/bench/ab.sh BIN_A BIN_B [WORKDIR] [RUNS]
# WORKDIR holds ours.npz / ref.npz made by scripts/bench/run_bench.sh (or make_bench_dumps.py).
set -euo pipefail
A=$1 B=$2 W=${3:-/tmp/divergence-bench} RUNS=${4:-20}
for bin in "$A" "$B"; do "$bin" diff "$W/ours.npz" "$W/ref.npz" --format json >/dev/null || true; done
for _ in $(seq "$RUNS"); do
  for bin in "$A" "$B"; do
    for threads in all 1; do
      if [ "$threads" = 1 ]; then export RAYON_NUM_THREADS=1; else unset RAYON_NUM_THREADS; fi
      t0=$(date +%s%N)
      "$bin" diff "$W/ours.npz" "$W/ref.npz" --format json >/dev/null || true
      t1=$(date +%s%N)
      echo "$bin $threads $(( (t1 - t0) / 1000 ))"
    done
  done
done | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    b, t, us = line.split()
    runs.setdefault((b, t), []).append(int(us) / 1e6)
print("| binary | threads | median (s) | min (s) | max (s) |")
print("| --- | --- | ---: | ---: | ---: |")
for (b, t), v in runs.items():
    print(f"| {b} | {t} | {statistics.median(v):.4f} | {min(v):.4f} | {max(v):.4f} |")
'
