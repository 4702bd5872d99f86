#!/usr/bin/env bash
# The cost of `divergence diff` over decode steps, per byte, against one pass (issue #13 item
# 8; docs/performance.md, "Decode steps"). One script for one device call on the GPU machine
# (16 cores), or a dry run on a development machine.
#
#   1. the Qwen3-0.6B-shaped model of scripts/gpu_decode.sh (random weights, stored in bf16), a
#      64-token prompt;
#   2. for each STEPS (0 = one pass): the transformers bf16 eager reference with that many greedy
#      decode steps (`dump_reference.py --decode N`) and ours teacher-forced from it (`divergence
#      run --decode-from`), on DEVICE;
#   3. `diff ours ref` timed with each carried CPU binary (BINS: name=path.gz pairs, e.g. the
#      commit before and after a change), as JSON to a file and as the table, RUNS interleaved
#      runs after one untimed, warm page cache (scripts/bench/decode_diff.py: wall time, peak
#      RSS); its rows, dump bytes and bytes per second go to results.md;
#   4. PER_STEP=1: the same dumps rewritten in the per-step layout (scripts/bench/unstack_steps.py)
#      and timed the same way (the layout stacked since 2026-12-01 against the one before);
#   5. EQUAL=1: for each STEPS > 0, a one-pass dump pair over the same positions (the prompt and
#      the N decode ids as one 64+N-token prompt: about the same bytes, the same logits rows),
#      timed the same way: the per-byte baseline of the same size (a one pass of 64 tokens is
#      the default baseline);
#   6. FRESH=1: before anything is timed, each dump of a pair is replaced by a copy of itself
#      (`cp`), so that the four files of the decode pair and its one pass come from one writer
#      and have one page-cache history. Without it, each file keeps the pages its writer left,
#      and what unmapping them costs at exit differs by file: as written, `diff` spent 2.7 ms
#      after `main` for the one pass and 18.4 ms for the decode pair on the GPU machine's host;
#      locally a program that only maps and reads the files shows such a difference, and none
#      between fresh copies (2026-12-02, docs/performance.md);
#   7. AFTER, when set: a command run after each step count's timing, with $n, $W/ours.npz and
#      $W/ref.npz in place, with EQUAL=1 also $W/ours.equal.npz and $W/ref.equal.npz (e.g. a
#      profiler, or a build that prints its phases).
#
# On the GPU machine, from the repository root:
#   BINS="old=.gpu/divergence-cpu-old.gz new=.gpu/divergence-cpu.gz" bash scripts/bench/decode_diff.sh
# Dry run (CPU, tiny model):
#   DEVICE=cpu CONFIG=fixtures/configs/tiny-qwen3.json RUN_BIN=target/release/divergence \
#     BINS="new=target/release/divergence" PY=.venv/bin/python STEPS="0 4" RUNS=2 \
#     bash scripts/bench/decode_diff.sh
set -euo pipefail
OUT=${OUT:-/tmp/decode-diff-out}
mkdir -p "$OUT"
W=${W:-/tmp/decode-diff-work}
mkdir -p "$W"
DEVICE=${DEVICE:-cuda}
# Where our model runs (the CPU build on the GPU machine's host: OURS_DEVICE=cpu RUN_BIN=...).
OURS_DEVICE=${OURS_DEVICE:-$DEVICE}
CONFIG=${CONFIG:-fixtures/configs/qwen3-0.6b.json}
STEPS=${STEPS:-"0 64 256"}
RUNS=${RUNS:-5}
PY=${PY:-python3}
BINS=${BINS:-"new=.gpu/divergence-cpu.gz"}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}

# FRESH=1: each file given replaced by a copy of itself (one writer, one page-cache history).
fresh() {
  if [ "${FRESH:-0}" = 1 ]; then
    for f in "$@"; do cp "$f" "$f.fresh" && mv "$f.fresh" "$f"; done
  fi
}

# The binary that runs the model (CUDA build on the GPU machine).
RUN=/tmp/divergence-run
if [ -n "${RUN_BIN:-}" ]; then cp "$RUN_BIN" "$RUN"; else gunzip -c .gpu/divergence.gz > "$RUN"; fi
chmod +x "$RUN"
# The diff binaries, unpacked.
. scripts/bench/decode_setup.sh
unpack_bins diff
diffs=()
for name in "${BIN_NAMES[@]}"; do diffs+=("$name=$W/diff-$name"); done

nproc > "$OUT/machine.txt"
grep -m1 "model name" /proc/cpuinfo >> "$OUT/machine.txt" || true
make_model
"$RUN" run --model "$W/model" --ids 1,2,3 --decode-ids 4,5 --device "$OURS_DEVICE" --dtype bf16 \
  >> "$OUT/log.txt" 2>&1 # JIT warm-up

: > "$OUT/results.md"
for n in $STEPS; do
  rm -f "$W/ref.npz" "$W/ours.npz"
  dec=(--decode "$n")
  from=(--decode-from "$W/ref.npz")
  [ "$n" = 0 ] && dec=() && from=()
  "$PY" scripts/dump_reference.py --model "$W/model" --ids-file "$W/ids64.txt" --dtype bfloat16 \
    --attn eager --device "$DEVICE" "${dec[@]}" --out "$W/ref.npz" --quiet >> "$OUT/log.txt" 2>&1
  "$RUN" run --model "$W/model" --ids-file "$W/ids64.txt" --device "$OURS_DEVICE" --dtype bf16 \
    "${from[@]}" --out "$W/ours.npz" >> "$OUT/log.txt" 2>&1
  fresh "$W/ref.npz" "$W/ours.npz"
  "$PY" scripts/bench/decode_diff.py --steps "$n" --runs "$RUNS" --ours "$W/ours.npz" \
    --ref "$W/ref.npz" --json-dir "$OUT" "${diffs[@]}" >> "$OUT/results.md" 2>> "$OUT/log.txt"
  # The same run in the per-step layout (one array per probe and step, as these tools wrote
  # before 2026-12-01), timed with the same binaries: what storing the steps stacked changes.
  if [ "${PER_STEP:-0}" = 1 ] && [ "$n" != 0 ]; then
    "$PY" scripts/bench/unstack_steps.py "$W/ours.npz" "$W/ours.per-step.npz"
    "$PY" scripts/bench/unstack_steps.py "$W/ref.npz" "$W/ref.per-step.npz"
    echo "per-step layout, the same run:" >> "$OUT/results.md"
    mkdir -p "$OUT/per-step"
    "$PY" scripts/bench/decode_diff.py --steps "$n" --runs "$RUNS" --ours "$W/ours.per-step.npz" \
      --ref "$W/ref.per-step.npz" --json-dir "$OUT/per-step" "${diffs[@]}" >> "$OUT/results.md" 2>> "$OUT/log.txt"
    rm -f "$W/ours.per-step.npz" "$W/ref.per-step.npz"
    # The two layouts' reports, file names aside, must be the same.
    for j in "$OUT"/per-step/report."$n".*.json; do
      "$PY" - "$j" "$OUT/$(basename "$j")" >> "$OUT/results.md" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for r in (a, b):
    r.pop("ours", None); r.pop("ref", None)
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: per-step and stacked reports {'identical' if a == b else 'DIFFER'}")
PYEOF
    done
  fi
  if [ "${EQUAL:-0}" = 1 ] && [ "$n" != 0 ]; then
    "$PY" - "$W/ref.npz" "$W/ids64.txt" "$W/ids-equal.txt" <<'PYEOF'
import io, json, sys, zipfile
import numpy as np
meta = json.loads(bytes(np.load(io.BytesIO(zipfile.ZipFile(sys.argv[1]).read("__meta__.npy")))).decode())
ids = open(sys.argv[2]).read().split() + [str(i) for i in meta["decode_ids"]]
open(sys.argv[3], "w").write(" ".join(ids) + "\n")
PYEOF
    "$PY" scripts/dump_reference.py --model "$W/model" --ids-file "$W/ids-equal.txt" --dtype bfloat16 \
      --attn eager --device "$DEVICE" --out "$W/ref.equal.npz" --quiet >> "$OUT/log.txt" 2>&1
    "$RUN" run --model "$W/model" --ids-file "$W/ids-equal.txt" --device "$OURS_DEVICE" --dtype bf16 \
      --out "$W/ours.equal.npz" >> "$OUT/log.txt" 2>&1
    fresh "$W/ref.equal.npz" "$W/ours.equal.npz"
    echo "one pass over the same $((64 + n)) positions (the per-byte baseline of the same size):" >> "$OUT/results.md"
    mkdir -p "$OUT/equal/$n"
    "$PY" scripts/bench/decode_diff.py --steps 0 --runs "$RUNS" --ours "$W/ours.equal.npz" \
      --ref "$W/ref.equal.npz" --json-dir "$OUT/equal/$n" "${diffs[@]}" >> "$OUT/results.md" 2>> "$OUT/log.txt"
  fi
  if [ -n "${AFTER:-}" ]; then export n W OUT; bash -c "$AFTER" >> "$OUT/log.txt" 2>&1; fi
  rm -f "$W/ours.equal.npz" "$W/ref.equal.npz"
done
cat "$OUT/results.md"
