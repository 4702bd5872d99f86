#!/usr/bin/env bash
# The `divergence diff` speed benchmark (method and results: docs/performance.md).
#
# Writes two Qwen3-0.6B-shaped float32 dumps (every probe, 128 tokens) and times, side by side,
# with the page cache warm: `cat` of both files, `divergence diff`, and the numpy script a user
# would write instead (scripts/bench/numpy_diff.py, same metrics). Each command runs RUNS times;
# the table gives the median and min wall time and the peak RSS (GNU time).
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

measure() { # label, command...
  local label=$1; shift
  "$@" >/dev/null 2>&1 || true   # warm the page cache (and the numpy import)
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$@" >/dev/null 2>&1 || true
    echo "$label $(cat "$WORK/time.txt")"
  done
}

{
  measure cat cat "$WORK/ours.npz" "$WORK/ref.npz"
  measure divergence "$BIN" diff "$WORK/ours.npz" "$WORK/ref.npz" --format json
  measure divergence-1-thread env RAYON_NUM_THREADS=1 "$BIN" diff "$WORK/ours.npz" "$WORK/ref.npz" --format json
  measure numpy "$PY" scripts/bench/numpy_diff.py "$WORK/ours.npz" "$WORK/ref.npz"
} > "$WORK/raw.txt"

"$PY" - "$WORK" <<'PY'
import os, statistics, sys
work = sys.argv[1]
rows = {}
for line in open(os.path.join(work, "raw.txt")):
    label, secs, kb = line.split()
    rows.setdefault(label, []).append((float(secs), int(kb)))
size = sum(os.path.getsize(os.path.join(work, f)) for f in ("ours.npz", "ref.npz")) / 1e6
print(f"two dumps, {size:.0f} MB together, {os.cpu_count()} cores, page cache warm\n")
print("| command | median wall (s) | min wall (s) | MB/s (median) | peak RSS (MB) |")
print("| --- | ---: | ---: | ---: | ---: |")
for label, vals in rows.items():
    secs = [s for s, _ in vals]
    med = statistics.median(secs)
    print(f"| {label} | {med:.2f} | {min(secs):.2f} | {size / med:.0f} | {max(k for _, k in vals) / 1024:.0f} |")
PY
