#!/usr/bin/env bash
# The phases of `diff` over a decode pair and over the one pass of the same size, on this
# machine: an AFTER hook of scripts/bench/decode_diff.sh with EQUAL=1 (docs/performance.md,
# "Decode steps"). Five runs of each pair with DIVERGENCE_TIMINGS=1 (when each phase ends, ms
# since the start, and the process's CPU time), the table to /dev/null, one line per run, into
# $OUT/phases.$n.txt. Uses the first binary decode_diff.sh unpacked ($W/diff-*); with
# PHASE_BINS=all, each of them in turn (a "### name" line before each one's runs).
#
# THREADS="1 4 16": the runs repeated with each of these many threads (RAYON_NUM_THREADS; a
# "### threads t" line before each), to see how each phase scales.
#
#   EQUAL=1 AFTER="bash scripts/bench/decode_phases.sh" BINS="new=.gpu/divergence-cpu.gz" \
#     STEPS="64 256" bash scripts/bench/decode_diff.sh
set -u
if [ "${PHASE_BINS:-first}" = all ]; then BS=$(ls "$W"/diff-*); else BS=$(ls "$W"/diff-* | head -1); fi
for B in $BS; do
  echo "### binary ${B##*/diff-}"
  for t in ${THREADS:-default}; do
    # Without THREADS, RAYON_NUM_THREADS stays as the caller set it.
    [ "$t" = default ] || { export RAYON_NUM_THREADS=$t; echo "### threads $t"; }
    for pair in "decode ours ref" "equal ours.equal ref.equal"; do
      set -- $pair
      [ -f "$W/$2.npz" ] || continue
      for i in 1 2 3 4 5; do
        echo "### $1 run $i"
        DIVERGENCE_TIMINGS=1 "$B" diff "$W/$2.npz" "$W/$3.npz" --format table 2>&1 > /dev/null |
          sed 's/divergence timings: //' | tr '\n' ';'
        echo
      done
    done
  done
done > "$OUT/phases.$n.txt"
