#!/usr/bin/env bash
# The per-byte ratio of `diff` over a decode pair against the one pass of the same positions,
# on the files at hand (docs/performance.md, "Decode steps", session 19), for one build: the
# two pairs run alternately RUNS times, the table to /dev/null, with DIVERGENCE_TIMINGS=1;
# prints, per pair, the median of each phase's wall and CPU time (user + system) and of the
# whole run's wall time, and the ratio one_pass_wall * (decode bytes / one-pass bytes) /
# decode_wall. decode_abc.sh, which does the work, compares several builds at once.
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
exec bash "$(dirname "$0")/decode_abc.sh" "$RUNS" "$*" "$DO" "$DR" "$OO" "$OR" \
  "decode=$BIN:dec" "one_pass=$BIN:one"
