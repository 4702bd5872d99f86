#!/usr/bin/env bash
# Is the per-byte gap of `diff` over decode steps a cost per decode step or a cost per row?
# (issue #13 item 8; docs/performance.md, "Decode steps", session 27.) One binary, four pairs
# of the same run, timed in turn, RUNS rounds, the table to /dev/null, DIVERGENCE_TIMINGS=1:
#
#   dec      the decode pair as our exporter writes it (`NAME@steps`, stacked);
#   perstep  the same dumps in the per-step layout (`NAME@s`, one array per probe and step;
#            scripts/bench/unstack_steps.py), the layout a hook script writes;
#   probes   the same steps as a one-pass pair of as many probes (`step<s>.NAME`;
#            scripts/bench/steps_as_probes.py): the same bytes and rows, no decode step;
#   one      a one pass over the same positions (the prompt and the decode ids as one prompt;
#            decode_diff.sh EQUAL=1): about the same bytes in ~1/140 of the rows.
#
#   bash scripts/bench/decode_rows.sh RUNS BIN DIR
#
# DIR holds ours.npz ref.npz ours.equal.npz ref.equal.npz (decode_diff.sh EQUAL=1 with
# AFTER='cp $W/*.npz DIR'); the other two pairs are made there when missing (two ~1.3 GB
# files each at 256 steps: ~15 s a file). Per pair: the median of each phase's wall / CPU ms,
# the anonymous memory after output, the whole run's wall time, the rows and the per-byte
# speed against `one` (one_wall * pair bytes / one bytes / pair_wall). PY: the Python with
# numpy (default .venv/bin/python). FRESH=1 drops the files from the page cache and reads
# them back first (as decode_abc.sh).
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 RUNS BIN DIR" >&2
  exit 2
fi
RUNS=$1 BIN=$(realpath "$2") DIR=$3
PY=${PY:-.venv/bin/python}
HERE=$(dirname "$0")
for side in ours ref; do
  [ -f "$DIR/$side.perstep.npz" ] || "$PY" "$HERE/unstack_steps.py" "$DIR/$side.npz" "$DIR/$side.perstep.npz"
  [ -f "$DIR/$side.probes.npz" ] || "$PY" "$HERE/steps_as_probes.py" "$DIR/$side.npz" "$DIR/$side.probes.npz"
done
pairs=(dec:ours.npz:ref.npz perstep:ours.perstep.npz:ref.perstep.npz
  probes:ours.probes.npz:ref.probes.npz one:ours.equal.npz:ref.equal.npz)
if [ "${FRESH:-0}" = 1 ]; then
  for p in "${pairs[@]}"; do
    IFS=: read -r _ a b <<< "$p"
    "$PY" -c 'import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$DIR/$a" "$DIR/$b"
    cat "$DIR/$a" "$DIR/$b" > /dev/null
  done
fi
LOG=${LOG:-$(mktemp)}
ERR=$(mktemp)
trap 'rm -f "$ERR"' EXIT
: > "$LOG"
for _ in $(seq "$RUNS"); do
  for p in "${pairs[@]}"; do
    IFS=: read -r label a b <<< "$p"
    s=$(date +%s%N)
    DIVERGENCE_TIMINGS=1 "$BIN" diff "$DIR/$a" "$DIR/$b" --no-tokens --format table 2> "$ERR" > /dev/null || true
    e=$(date +%s%N)
    echo "$label WALL $(((e - s) / 1000))" >> "$LOG"
    sed -nE "s/^divergence timings: ([a-z]+) done at ([0-9.]+) ms \(cpu ([0-9]+) user \+ ([0-9]+) sys.*anon ([0-9.]+) MB.*/$label \1 \2 \3 \4 \5/p" "$ERR" >> "$LOG"
  done
done
rows() { "$BIN" diff "$DIR/$1" "$DIR/$2" --no-tokens --format json 2> /dev/null \
  | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["summary"]["total"])'; }
ROWS=""
for p in "${pairs[@]}"; do
  IFS=: read -r label a b <<< "$p"
  ROWS="$ROWS $label=$(rows "$a" "$b"):$(($(stat -c %s "$DIR/$a") + $(stat -c %s "$DIR/$b")))"
done
"$PY" - "$LOG" $ROWS <<'PY'
import collections, statistics as st, sys
log, *rows = sys.argv[1:]
info = {r.split("=")[0]: tuple(int(x) for x in r.split("=")[1].split(":")) for r in rows}
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
phases = ["open", "plan", "checks", "compare", "assemble", "output"]
one = st.median(d["one"]["wall"])
print("pair | rows | bytes | " + " | ".join(phases) + " | anon MB | whole run ms | per byte vs one")
for label, phs in d.items():
    n, size = info[label]
    cells = [f"{st.median(v[0] for v in phs[p]):.0f}/{st.median(v[1] for v in phs[p]):.0f}"
             for p in phases if p in phs]
    anon = st.median(v[2] for v in phs["output"])
    wall = st.median(phs["wall"])
    ratio = one * size / info["one"][1] / wall
    print(f"{label} | {n} | {size / 1e9:.2f} GB | " + " | ".join(cells)
          + f" | {anon:.1f} | {wall:.0f} | {ratio:.2f}x")
print(f"({len(d['one']['wall'])} runs; phases: median wall / CPU ms)")
PY
