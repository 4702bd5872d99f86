#!/usr/bin/env bash
# Several `divergence` builds on the decode pair and the one pass, run by run in turn (so that
# each sees the same machine), the table to /dev/null, with DIVERGENCE_TIMINGS=1: per label,
# the median of each phase's wall / CPU ms, the anonymous memory after output and the whole
# run's wall time; then, per decode label, the per-byte ratio against the one-pass label
# (one_pass_wall * decode bytes / one-pass bytes / decode_wall), as decode_ab.sh computes it.
#
#   bash scripts/bench/decode_abc.sh RUNS "DIFF ARGS" DEC_OURS DEC_REF ONE_OURS ONE_REF \
#     LABEL=BIN:dec|one ...
#   bash scripts/bench/decode_abc.sh 9 --no-tokens c.ours.npz c.ref.npz c.ours.equal.npz \
#     c.ref.equal.npz base=./old:dec new=./new:dec one=./new:one
#
# LOG=FILE keeps the raw lines (label, phase, ms, user, sys, anon MB; label WALL us).
# FRESH=1 drops the four files from the page cache and reads them back first (fadvise
# DONTNEED, then cat; as root, the whole page cache dropped and memory compacted before):
# how the page cache holds a file changes how many page faults mapping it takes several fold
# (the decode pair's compare phase: ~42,000 after hours of builds on the machine, ~6,000 once
# read back), and the two pairs must start alike.
set -euo pipefail
if [ $# -lt 7 ]; then
  echo "usage: $0 RUNS \"DIFF ARGS\" DEC_OURS DEC_REF ONE_OURS ONE_REF LABEL=BIN:dec|one ..." >&2
  exit 2
fi
RUNS=$1 EXTRA=$2 DO=$3 DR=$4 OO=$5 OR=$6
shift 6
LOG=${LOG:-$(mktemp)}
ERR=$(mktemp)
trap 'rm -f "$ERR"' EXIT
: > "$LOG"
if [ "${FRESH:-0}" = 1 ]; then
  # As root, the whole page cache dropped and memory compacted first: read back into a full,
  # fragmented memory, a file's pages come in small pieces and mapping it takes ~15x the page
  # faults (session 50: the one pass's 2,106 -> 29,726, its compare phase 298 -> 355 ms of
  # CPU, and the decode pair read 1.16x the one pass per byte instead of 0.77x).
  if [ -w /proc/sys/vm/drop_caches ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
    echo 1 > /proc/sys/vm/compact_memory 2> /dev/null || true
  fi
  python3 -c 'import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$DO" "$DR" "$OO" "$OR"
  cat "$DO" "$DR" "$OO" "$OR" > /dev/null
fi
for _ in $(seq "$RUNS"); do
  for spec in "$@"; do
    label=${spec%%=*} rest=${spec#*=}
    bin=${rest%:*} pair=${rest##*:}
    if [ "$pair" = dec ]; then a=$DO b=$DR; else a=$OO b=$OR; fi
    s=$(date +%s%N)
    # shellcheck disable=SC2086
    DIVERGENCE_TIMINGS=1 "$bin" diff "$a" "$b" $EXTRA --format table 2> "$ERR" > /dev/null || true
    e=$(date +%s%N)
    echo "$label WALL $(((e - s) / 1000))" >> "$LOG"
    sed -nE "s/^divergence timings: ([a-z]+) done at ([0-9.]+) ms \(cpu ([0-9]+) user \+ ([0-9]+) sys.*anon ([0-9.]+) MB.*/$label \1 \2 \3 \4 \5/p" "$ERR" >> "$LOG"
  done
done
python3 - "$LOG" "$DO" "$DR" "$OO" "$OR" "$@" <<'PY'
import collections, os, statistics as st, sys
log, do, dr, oo, orr, *specs = sys.argv[1:]
pair = {s.split("=", 1)[0]: s.rsplit(":", 1)[1] for s in specs}
d = collections.defaultdict(lambda: collections.defaultdict(list))
prev = {}
for line in open(log):
    x = line.split()
    if x[1] == "WALL":
        d[x[0]]["wall"].append(int(x[2]) / 1000)
        continue
    label, ph, t, u, s, a = x
    t, c = float(t), int(u) + int(s)
    if ph == "open":
        prev[label] = (0.0, 0)
    pt, pc = prev[label]
    d[label][ph].append((t - pt, c - pc, float(a)))
    prev[label] = (t, c)
phases = ["open", "map", "plan", "checks", "compare", "assemble", "diagnosis", "tokens", "output"]
print("phase: median wall / CPU ms")
for label, phs in d.items():
    parts = [f"{p} {st.median(v[0] for v in phs[p]):.0f}/{st.median(v[1] for v in phs[p]):.0f}"
             for p in phases if p in phs]
    anon = st.median(v[2] for v in phs["output"]) if "output" in phs else float("nan")
    print(f"{label}: " + " | ".join(parts)
          + f" | anon {anon:.1f} MB | whole run {st.median(phs['wall']):.0f} ms")
size = lambda *p: sum(os.path.getsize(f) for f in p)
ratio = size(do, dr) / size(oo, orr)
ones = [l for l in d if pair.get(l) == "one"]
for label in d:
    if pair.get(label) == "dec" and ones:
        one = st.median(d[ones[0]]["wall"])
        dec = st.median(d[label]["wall"])
        print(f"{label}: per byte {one * ratio / dec:.2f}x the one pass ({ones[0]}; decode bytes {ratio:.3f}x; {len(d[label]['wall'])} runs)")
PY
