#!/usr/bin/env bash
# What dumping every probe of every decode step costs `divergence run` (issue #13 item 8: "dump
# size and time grow linearly with steps"; docs/gpu.md, "Decode", "Probes staged on the GPU").
# One script for one device call on the GPU machine, or a dry run on a development machine.
#
#   1. the Qwen3-0.6B-shaped model of scripts/gpu_decode.sh (random weights, stored in bf16), a
#      64-token prompt and as many decode ids as the largest STEPS (seeded; teacher forcing needs
#      no reference here);
#   2. for each STEPS (0 = the prompt alone) and each carried binary (BINS: name=path.gz pairs,
#      e.g. the commit before and after a change): `run --out` with RUNS repeats in one process
#      (the model loaded once; `--repeat`), DIVERGENCE_TIMINGS=1 for where the last run's dump
#      time went (staging, copies to the host, the writer, finishing the file); then the same
#      without `--out` (probes off) with the first binary; `sync` before each (the dumps of
#      the runs before are on their way to the disk), each dump but the first deleted once
#      compared;
#   3. results.md: per step count and binary, the median forward time with the dump and with
#      probes off (both over RUNS, from the binary's own summary line), their difference (the
#      dump's cost), the dump's size, and whether the binaries' dumps are the same bytes (cmp).
#
# On the GPU machine, from the repository root:
#   BINS="old=.gpu/divergence-old.gz new=.gpu/divergence.gz" bash scripts/bench/dump_cost.sh
# Dry run (CPU, tiny model):
#   DEVICE=cpu CONFIG=fixtures/configs/tiny-qwen3.json BINS="new=target/release/divergence" \
#     PY=.venv/bin/python STEPS="0 4" RUNS=2 bash scripts/bench/dump_cost.sh
set -euo pipefail
OUT=${OUT:-/tmp/dump-cost-out}
mkdir -p "$OUT"
W=${W:-/tmp/dump-cost-work}
mkdir -p "$W"
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG:-fixtures/configs/qwen3-0.6b.json}
STEPS=${STEPS:-"0 8 64 128 256"}
RUNS=${RUNS:-3}
PY=${PY:-python3}
BINS=${BINS:-"new=.gpu/divergence.gz"}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}

. scripts/bench/decode_setup.sh
unpack_bins run
bins=("${BIN_NAMES[@]}")
first=${bins[0]}

make_model "$(printf '%s\n' $STEPS | sort -n | tail -1)"
for b in "${bins[@]}"; do # JIT warm-up
  "$W/run-$b" run --model "$W/model" --ids 1,2,3 --decode-ids 4,5 --device "$DEVICE" --dtype bf16 \
    >> "$OUT/log.txt" 2>&1
done

# median MS of a summary line: "... best X ms, median Y ms over N runs ..." (or "... Y ms;" for one run)
median() { sed -n 's/.*median \([0-9.]*\) ms.*/\1/p; t; s/.*prefill+decode \([0-9.]*\) ms.*/\1/p; t; s/.*forward \([0-9.]*\) ms.*/\1/p' "$1" | head -1; }
dumpline() { sed -n 's/.*dump of the last run: //p' "$1" | head -1; }

{
  echo "| steps | binary | dump bytes | forward with dump, median ms | probes off, median ms | dump cost ms | last run's dump | same bytes as $first |"
  echo "|---:|---|---:|---:|---:|---:|---|---|"
} > "$OUT/results.md"
for n in $STEPS; do
  dec=()
  [ "$n" != 0 ] && dec=(--decode-ids "$(cut -d, -f1-"$n" "$W/decode.txt")")
  common=(--model "$W/model" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype bf16 --repeat "$RUNS" "${dec[@]}")
  sync
  "$W/run-$first" run "${common[@]}" 2> "$W/off.txt"
  cat "$W/off.txt" >> "$OUT/log.txt"
  off=$(median "$W/off.txt")
  for b in "${bins[@]}"; do
    rm -f "$W/$b.npz"
    sync
    DIVERGENCE_TIMINGS=1 "$W/run-$b" run "${common[@]}" --out "$W/$b.npz" 2> "$W/on.txt"
    cat "$W/on.txt" >> "$OUT/log.txt"
    on=$(median "$W/on.txt")
    same=-
    [ "$b" != "$first" ] && { cmp -s "$W/$first.npz" "$W/$b.npz" && same=yes || same=NO; }
    cost=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.0f", a - b }')
    echo "| $n | $b | $(stat -c %s "$W/$b.npz") | $on | $off | $cost | $(dumpline "$W/on.txt") | $same |" >> "$OUT/results.md"
    [ "$b" != "$first" ] && rm -f "$W/$b.npz"
  done
  rm -f "$W/$first.npz"
done
nproc > "$OUT/machine.txt"
grep -m1 "model name" /proc/cpuinfo >> "$OUT/machine.txt" || true
nvidia-smi --query-gpu=name,driver_version --format=csv >> "$OUT/machine.txt" 2>&1 || true
cat "$OUT/results.md"
