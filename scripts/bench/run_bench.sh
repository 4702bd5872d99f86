#!/usr/bin/env bash
# The `divergence diff` speed benchmark (method and results: docs/performance.md).
#
# Writes two Qwen3-0.6B-shaped float32 dumps (every probe, 128 tokens) and times, side by side,
# `cat` of both files, `divergence diff`, and the numpy script a user would write instead
# (scripts/bench/numpy_diff.py, same metrics). Each command runs RUNS times with the page cache
# warm and, where /proc/sys/vm/drop_caches is writable (root), RUNS times cold (caches dropped
# before each run). The table gives the median and min wall time, the peak RSS (GNU time; it
# counts the file pages a memory map touched) and the peak anonymous memory (RssAnon, sampled
# from /proc every 2 ms by scripts/bench/peak_anon.py: the memory the process itself allocated).
#
#   bash scripts/bench/run_bench.sh [WORKDIR] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/divergence-bench}
RUNS=${2:-5}
PY=${PYTHON:-.venv/bin/python}
BIN=target/release/divergence

cargo build --release -q -p divergence-cli
[ -f "$WORK/ref.npz" ] || "$PY" scripts/bench/make_bench_dumps.py "$WORK"

CAN_DROP=
if (sync && echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then CAN_DROP=1; fi

measure() { # label, cold|warm, command...
  local label=$1 cache=$2; shift 2
  [ "$cache" = cold ] && [ -z "$CAN_DROP" ] && return
  "$@" >/dev/null 2>&1 || true   # warm the page cache (and the numpy import)
  for _ in $(seq "$RUNS"); do
    [ "$cache" = cold ] && sync && echo 3 > /proc/sys/vm/drop_caches
    anon=$("$PY" scripts/bench/peak_anon.py /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$@")
    echo "$label $cache $(cat "$WORK/time.txt") $anon"
  done
}

{
  for cache in warm cold; do
    measure cat $cache cat "$WORK/ours.npz" "$WORK/ref.npz"
    measure divergence $cache "$BIN" diff "$WORK/ours.npz" "$WORK/ref.npz" --format json
    measure divergence-1-thread $cache env RAYON_NUM_THREADS=1 "$BIN" diff "$WORK/ours.npz" "$WORK/ref.npz" --format json
    measure numpy $cache "$PY" scripts/bench/numpy_diff.py "$WORK/ours.npz" "$WORK/ref.npz"
  done
} > "$WORK/raw.txt"

"$PY" - "$WORK" <<'PY'
import os, statistics, sys
work = sys.argv[1]
rows = {}
for line in open(os.path.join(work, "raw.txt")):
    label, cache, secs, kb, anon_kb = line.split()
    rows.setdefault((label, cache), []).append((float(secs), int(kb), int(anon_kb)))
size = sum(os.path.getsize(os.path.join(work, f)) for f in ("ours.npz", "ref.npz")) / 1e6
print(f"two dumps, {size:.0f} MB together, {os.cpu_count()} cores\n")
print("| command | page cache | median wall (s) | min wall (s) | MB/s (median) | peak RSS (MB) | peak anon (MB) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for (label, cache), vals in rows.items():
    secs = [v[0] for v in vals]
    med = statistics.median(secs)
    rss = max(v[1] for v in vals) / 1024
    anon = max(v[2] for v in vals) / 1024
    print(f"| {label} | {cache} | {med:.2f} | {min(secs):.2f} | {size / med:.0f} | {rss:.0f} | {anon:.0f} |")
PY
