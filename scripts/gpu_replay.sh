#!/usr/bin/env bash
# gpu_replay.sh — `divergence run --replay` on the GPU (docs/origin.md, "Ground truth"): for each
# gross fault, the origin the report estimates from a normal CUDA run must be the first op the
# replayed (teacher-forced) CUDA run shows an error at. One script for one device call.
#
# Runs on the GPU machine from the repository root with the CUDA build carried in
# .gpu/divergence.gz (/work/shared/gpu/README.md). The Qwen3-0.6B-shaped model (random realistic
# weights, bf16 storage), 64 random tokens, transformers CUDA eager as the reference, f32 and bf16.
#   OUT=/tmp/gpu-out bash scripts/gpu_replay.sh      ->  $OUT/replay.md, $OUT/log.txt
# Dry run on a development machine (CPU, tiny model):
#   DEVICE=cpu CONFIG=fixtures/configs/tiny-qwen3.json MODEL=/tmp/tiny-replay \
#     BIN_SRC=target/debug/divergence PY=.venv/bin/python bash scripts/gpu_replay.sh
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
BIN=/tmp/divergence
MODEL=${MODEL:-/tmp/q06}
CONFIG=${CONFIG:-fixtures/configs/qwen3-0.6b.json}
W=/tmp/gpu-replay
mkdir -p "$W"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
if [ -n "${BIN_SRC:-}" ]; then cp "$BIN_SRC" "$BIN"; else gunzip -c .gpu/divergence.gz > "$BIN"; fi
chmod +x "$BIN"
T0=$(date +%s)
log() { echo "### $*" >> "$OUT/log.txt"; "$@" >> "$OUT/log.txt" 2>&1; }
$PY -c "import json, random, sys; v=json.load(open(sys.argv[1]))['vocab_size']; r=random.Random(1); print(' '.join(str(r.randrange(v)) for _ in range(64)))" "$CONFIG" > "$W/ids.txt"
[ -f "$MODEL/config.json" ] || log $PY scripts/dump_reference.py --config "$CONFIG" \
  --seed 0 --save-model "$MODEL" --save-dtype bfloat16 --ids 1 --only '^model\.embed_tokens$' \
  --out "$W/throwaway.npz" --quiet
for dt in float32 bfloat16; do
  log $PY scripts/dump_reference.py --model "$MODEL" --ids-file "$W/ids.txt" --dtype $dt --attn eager \
    --device "$DEVICE" --out "$W/ref.$dt.npz" --quiet
done
log "$BIN" run --model "$MODEL" --ids 1,2,3 --device "$DEVICE" --dtype bf16   # JIT warm-up
echo "| dtype | fault | origin (normal run) | first error under replay | agree |" > "$OUT/replay.md"
echo "| --- | --- | --- | --- | --- |" >> "$OUT/replay.md"
for dt in f32 bf16; do
  ref=$W/ref.float32.npz; [ $dt = bf16 ] && ref=$W/ref.bfloat16.npz
  for fault in embed-scale rope-theta=10000 rope-interleaved skip-k-norm skip-q-norm@1 attn-bias=0.5@1 \
      transpose=model.layers.0.self_attn.k_proj act=gelu gqa-tile rms-eps=1e-3; do
    rm -f "$W/ours.npz" "$W/replayed.npz"   # a failed run must not leave the last fault's dump
    log "$BIN" run --model "$MODEL" --ids-file "$W/ids.txt" --device "$DEVICE" --dtype $dt \
      --inject "$fault" --out "$W/ours.npz"
    log "$BIN" run --model "$MODEL" --ids-file "$W/ids.txt" --device "$DEVICE" --dtype $dt \
      --inject "$fault" --replay "$ref" --out "$W/replayed.npz"
    origin=$("$BIN" diff "$W/ours.npz" "$ref" --format json 2>>"$OUT/log.txt" | $PY -c \
      "import json,sys; o=json.load(sys.stdin)['origin']; print(o['name'] if o else '-')")
    truly=$("$BIN" diff "$W/replayed.npz" "$ref" --format json 2>>"$OUT/log.txt" | $PY -c \
      "import json,sys; f=json.load(sys.stdin)['first_divergence']; print(f['name'] if f else '-')")
    # agreement needs two real op names: an empty or "-" answer (a failed run or diff) is not one
    agree=no
    if [ -n "$origin" ] && [ "$origin" != - ] && [ "$origin" = "$truly" ]; then agree=yes; fi
    echo "| $dt | $fault | \`$origin\` | \`$truly\` | $agree |" >> "$OUT/replay.md"
  done
done
echo "seconds=$(( $(date +%s) - T0 ))" >> "$OUT/log.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv >> "$OUT/log.txt" 2>&1
