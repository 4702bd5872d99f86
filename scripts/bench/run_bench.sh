#!/usr/bin/env bash
# The `divergence diff` speed benchmark (method and results: docs/performance.md).
#
# Writes two Qwen3-0.6B-shaped float32 dumps (every probe, 128 tokens) and times, side by side,
# `cat` of both files, `divergence diff`, and the numpy script a user would write instead
# (scripts/bench/numpy_diff.py, same metrics). Each command runs RUNS times with the page cache
# warm and, where /proc/sys/vm/drop_caches is writable (root), RUNS times cold (caches dropped
# before each run). The table gives the median, min and max wall time (ns clock), then, from one
# more untimed run, the peak RSS (GNU time; it counts the file pages a memory map touched) and
# the peak anonymous memory (RssAnon, sampled from /proc every 2 ms by
# scripts/bench/peak_anon.py: the memory the process itself allocated).
#
# With TRUTH=1 it also writes a float64 truth dump of the same probes and times `cat` of the
# three files against `divergence diff ours ref --truth truth` (the three-way mode).
#
# With COMPRESSED=1 it rewrites both dumps with numpy.savez_compressed (ours.z.npz, ref.z.npz)
# and times `cat`, `divergence diff` (streamed: docs/reliability.md, "Memory") and the numpy
# script on those; BASE_BIN=/path/to/an/older/divergence adds that binary's row, side by side.
#
#   bash scripts/bench/run_bench.sh [WORKDIR] [RUNS]
#   TRUTH=1 bash scripts/bench/run_bench.sh [WORKDIR] [RUNS]
#   COMPRESSED=1 [BASE_BIN=...] bash scripts/bench/run_bench.sh [WORKDIR] [RUNS]
#   BIN=/path/to/divergence PYTHON=python3 bash scripts/bench/run_bench.sh ...   # no cargo
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/divergence-bench}
RUNS=${2:-10}
PY=${PYTHON:-.venv/bin/python}
# BIN: a prebuilt binary (e.g. on the GPU machine, which has no Rust); default: build it here.
if [ -z "${BIN:-}" ]; then
  BIN=target/release/divergence
  cargo build --release -q -p divergence-cli
fi
if [ -n "${TRUTH:-}" ]; then
  [ -f "$WORK/truth.npz" ] || "$PY" scripts/bench/make_bench_dumps.py "$WORK" --truth
else
  [ -f "$WORK/ref.npz" ] || "$PY" scripts/bench/make_bench_dumps.py "$WORK"
fi
if [ -n "${COMPRESSED:-}" ]; then
  for n in ours ref; do
    [ -f "$WORK/$n.z.npz" ] || "$PY" -c 'import sys, numpy as np
z = np.load(sys.argv[1]); np.savez_compressed(sys.argv[2], **{k: z[k] for k in z.files})' \
      "$WORK/$n.npz" "$WORK/$n.z.npz"
  done
fi

CAN_DROP=
if (sync && echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then CAN_DROP=1; fi

measure() { # label, cold|warm, command...
  local label=$1 cache=$2 t0 t1 anon; shift 2
  [ "$cache" = cold ] && [ -z "$CAN_DROP" ] && return
  "$@" >/dev/null 2>&1 || true   # warm the page cache (and the numpy import)
  # Timed runs, nothing else running beside them (ns clock; GNU time only has 10 ms).
  for _ in $(seq "$RUNS"); do
    [ "$cache" = cold ] && sync && echo 3 > /proc/sys/vm/drop_caches
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s%N)
    echo "$label $cache time $(( (t1 - t0) / 1000 ))"
  done
  # One more run for memory: GNU time's peak RSS and peak_anon.py's sampled RssAnon (the
  # sampler costs CPU, so this run is not timed).
  [ "$cache" = cold ] && sync && echo 3 > /proc/sys/vm/drop_caches
  if [ -x /usr/bin/time ]; then
    anon=$("$PY" scripts/bench/peak_anon.py /usr/bin/time -f "%M" -o "$WORK/time.txt" "$@")
    echo "$label $cache mem $(tail -n 1 "$WORK/time.txt") $anon"
  else # no GNU time (the GPU machine): peak anon only
    echo "$label $cache mem -1 $("$PY" scripts/bench/peak_anon.py "$@")"
  fi
}

{
  for cache in warm cold; do
    if [ -n "${COMPRESSED:-}" ]; then
      Z=("$WORK/ours.z.npz" "$WORK/ref.z.npz")
      measure cat-z $cache cat "${Z[@]}"
      measure divergence-z $cache "$BIN" diff "${Z[@]}" --format json
      if [ -n "${BASE_BIN:-}" ]; then
        measure divergence-z-base $cache "$BASE_BIN" diff "${Z[@]}" --format json
      fi
      measure divergence-z-1-thread $cache env RAYON_NUM_THREADS=1 "$BIN" diff "${Z[@]}" --format json
      measure numpy-z $cache "$PY" scripts/bench/numpy_diff.py "${Z[@]}"
      continue
    fi
    if [ -n "${TRUTH:-}" ]; then
      measure cat-3 $cache cat "$WORK/ours.npz" "$WORK/ref.npz" "$WORK/truth.npz"
      measure divergence-truth $cache "$BIN" diff "$WORK/ours.npz" "$WORK/ref.npz" --truth "$WORK/truth.npz" --format json
      measure divergence-truth-1-thread $cache env RAYON_NUM_THREADS=1 "$BIN" diff "$WORK/ours.npz" "$WORK/ref.npz" --truth "$WORK/truth.npz" --format json
      continue
    fi
    measure cat $cache cat "$WORK/ours.npz" "$WORK/ref.npz"
    measure divergence $cache "$BIN" diff "$WORK/ours.npz" "$WORK/ref.npz" --format json
    measure divergence-1-thread $cache env RAYON_NUM_THREADS=1 "$BIN" diff "$WORK/ours.npz" "$WORK/ref.npz" --format json
    measure numpy $cache "$PY" scripts/bench/numpy_diff.py "$WORK/ours.npz" "$WORK/ref.npz"
  done
} > "$WORK/raw.txt"

"$PY" - "$WORK" <<'PY'
import os, statistics, sys
work = sys.argv[1]
rows, mem = {}, {}
for line in open(os.path.join(work, "raw.txt")):
    label, cache, kind, *vals = line.split()
    if kind == "time":
        rows.setdefault((label, cache), []).append(int(vals[0]) / 1e6)
    else:
        mem[(label, cache)] = (int(vals[0]) / 1024, int(vals[1]) / 1024)
size2 = sum(os.path.getsize(os.path.join(work, f)) for f in ("ours.npz", "ref.npz")) / 1e6
zipped = any(label.endswith(("-z", "-z-base", "-z-1-thread")) for label, _ in rows)
if zipped:
    size2 = sum(os.path.getsize(os.path.join(work, f)) for f in ("ours.z.npz", "ref.z.npz")) / 1e6
three = any(label.startswith(("cat-3", "divergence-truth")) for label, _ in rows)
size3 = size2 + (os.path.getsize(os.path.join(work, "truth.npz")) / 1e6 if three else 0)
if three:
    print(f"three dumps (ours, ref f32; truth f64), {size3:.0f} MB together, {os.cpu_count()} cores, "
          f"{len(next(iter(rows.values())))} timed runs each\n")
else:
    kind = "numpy.savez_compressed" if zipped else "stored"
    print(f"two dumps ({kind}), {size2:.0f} MB together, {os.cpu_count()} cores, {len(next(iter(rows.values())))} timed runs each\n")
print("| command | page cache | median wall (s) | min wall (s) | max wall (s) | MB/s (median) | peak RSS (MB) | peak anon (MB) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for (label, cache), secs in rows.items():
    med = statistics.median(secs)
    rss, anon = mem[(label, cache)]
    rss = f"{rss:.0f}" if rss >= 0 else "n/a"
    size = size3 if label.startswith(("cat-3", "divergence-truth")) else size2
    print(f"| {label} | {cache} | {med:.3f} | {min(secs):.3f} | {max(secs):.3f} | {size / med:.0f} | {rss} | {anon:.0f} |")
PY
