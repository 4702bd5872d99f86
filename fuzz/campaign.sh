#!/usr/bin/env bash
# Runs every fuzz target at once for a fixed time, each with several libFuzzer workers (fork
# mode): the campaign of docs/fuzzing.md.
#
#   bash fuzz/campaign.sh BIN_DIR CORPUS_DIR OUT_DIR SECONDS
#
# BIN_DIR: the target binaries (`cargo fuzz build -O` puts them in
#   fuzz/target/x86_64-unknown-linux-gnu/release).
# CORPUS_DIR/<target>/: the starting corpus of each target; new inputs are added there.
# OUT_DIR/<target>.log: libFuzzer's output; OUT_DIR/artifacts/<target>/: crashes, timeouts, OOMs
#   (the run goes on after one: -ignore_crashes and friends).
# Workers: FORK_DUMP (default 3) for each of npz, npy, safetensors and sniff, FORK_JSON (2) for
# meta and config: 16 in all, one per core of the machine the campaign ran on.
set -euo pipefail
bin=$1 corpus=$2 out=$3 seconds=$4
here=$(cd "$(dirname "$0")" && pwd)
fork_dump=${FORK_DUMP:-3} fork_json=${FORK_JSON:-2}

# target  workers  max_len  dictionary
targets="
npz         $fork_dump 16384 npy.dict
npy         $fork_dump 4096  npy.dict
safetensors $fork_dump 16384 json.dict
sniff       $fork_dump 16384 npy.dict
meta        $fork_json 8192  json.dict
config      $fork_json 4096  json.dict
"
mkdir -p "$out/artifacts"
while read -r t jobs max_len dict; do
    [ -n "$t" ] || continue
    mkdir -p "$corpus/$t" "$out/artifacts/$t"
    # -timeout: one input may take 10 s at most; -rss_limit_mb: 2 GB per worker.
    "$bin/$t" "$corpus/$t" -fork="$jobs" -max_total_time="$seconds" -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len="$max_len" \
        -dict="$here/dicts/$dict" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -artifact_prefix="$out/artifacts/$t/" >"$out/$t.log" 2>&1 &
done <<<"$targets"
wait
for t in npz npy safetensors sniff meta config; do
    echo "== $t: $(ls "$corpus/$t" | wc -l) inputs, $(ls "$out/artifacts/$t" | wc -l) artifacts"
    grep -E '^#[0-9]+: cov' "$out/$t.log" | tail -1 || true
done
