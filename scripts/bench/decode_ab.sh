#!/usr/bin/env bash
# The per-byte ratio of `diff` over a decode pair against the one pass of the same positions,
# on the files at hand (docs/performance.md, "Decode steps", session 19): the two pairs run
# alternately RUNS times (so that both see the same machine), the table to /dev/null, with
# DIVERGENCE_TIMINGS=1; prints, per pair, the median of each phase's wall and CPU time
# (user + system) and of the whole run's wall time, and the ratio
# one_pass_wall * (decode bytes / one-pass bytes) / decode_wall.
#
#   bash scripts/bench/decode_ab.sh BIN DEC_OURS DEC_REF ONE_OURS ONE_REF RUNS [DIFF ARGS...]
#   bash scripts/bench/decode_ab.sh target/release/divergence c.ours.npz c.ref.npz \
#     c.ours.equal.npz c.ref.equal.npz 9 --no-tokens
#
# The pairs come from scripts/bench/decode_diff.sh (EQUAL=1 writes the one pass).
set -euo pipefail
if [ $# -lt 6 ]; then
  echo "usage: $0 BIN DEC_OURS DEC_REF ONE_OURS ONE_REF RUNS [DIFF ARGS...]" >&2
  exit 2
fi
BIN=$1 DO=$2 DR=$3 OO=$4 OR=$5 RUNS=$6
shift 6
LOG=$(mktemp)
ERR=$(mktemp)
trap 'rm -f "$LOG" "$ERR"' EXIT
for _ in $(seq "$RUNS"); do
  for pair in "decode $DO $DR" "one_pass $OO $OR"; do
    set -- $pair "$@"
    p=$1 a=$2 b=$3
    shift 3
    s=$(date +%s%N)
    DIVERGENCE_TIMINGS=1 "$BIN" diff "$a" "$b" --format table "$@" 2> "$ERR" > /dev/null || true
    e=$(date +%s%N)
    echo "$p wall $(((e - s) / 1000000)) 0" >> "$LOG"
    sed -nE 's/^divergence timings: ([a-z]+) done at ([0-9.]+) ms \(cpu ([0-9]+) user \+ ([0-9]+) sys.*/\1 \2 \3 \4/p' "$ERR" |
      awk -v p="$p" '{print p, $1, $2, $3 + $4}' >> "$LOG"
  done
done
python3 - "$LOG" "$DO" "$DR" "$OO" "$OR" <<'PY'
import collections, os, statistics, sys
log, do, dr, oo, orr = sys.argv[1:]
runs = collections.defaultdict(list)
for line in open(log):
    p, k, v, cpu = line.split()
    runs[p].append((k, float(v), float(cpu)))
wall, cpu = collections.defaultdict(list), collections.defaultdict(list)
for p, rows in runs.items():
    prev = (0.0, 0.0)
    for k, v, c in rows:
        if k == "wall":
            wall[(p, k)].append(v)
            prev = (0.0, 0.0)
            continue
        wall[(p, k)].append(v - prev[0])
        cpu[(p, k)].append(c - prev[1])
        prev = (v, c)
phases = ["open", "map", "plan", "checks", "compare", "assemble", "diagnosis", "tokens", "output"]
print("phase: median wall / CPU ms")
for p in ["decode", "one_pass"]:
    parts = [f"{k} {statistics.median(wall[(p, k)]):.0f}/{statistics.median(cpu[(p, k)]):.0f}"
             for k in phases if (p, k) in wall]
    parts.append(f"whole run {statistics.median(wall[(p, 'wall')]):.0f} ms")
    print(f"{p}: " + " | ".join(parts))
size = lambda *fs: sum(os.path.getsize(f) for f in fs)
scale = size(do, dr) / size(oo, orr)
d, o = statistics.median(wall[("decode", "wall")]), statistics.median(wall[("one_pass", "wall")])
print(f"per byte: {o * scale / d:.2f}x the one pass (decode {d:.0f} ms, one pass {o:.0f} ms, "
      f"decode bytes {scale:.3f}x; {len(wall[('decode', 'wall')])} runs each)")
PY
