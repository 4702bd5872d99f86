#!/usr/bin/env bash
# gpu_truth.sh — the three-way evidence on the GPU (docs/tolerances.md, "Three-way verdicts:
# on the GPU"), in one script for one device call.
#
# Runs on the GPU machine (H200, CUDA 13, PyTorch 2.11 + transformers 5.17, no Rust, no network)
# from the repository root, with the CUDA build of `divergence` carried in .gpu/divergence.gz
# (see /work/shared/gpu/README.md and docs/gpu.md). scripts/truth_evidence.py does the work on
# the Qwen3-0.6B-shaped model (random realistic weights, k_norm up to 96.5, stored in bf16):
# transformers CUDA bf16 eager is the reference, a float64 run of the same model on the same GPU
# the truth; ours is transformers sdpa, transformers f32, candle CUDA bf16 (torch and fused
# policies) and candle CUDA with every fault; each is diffed with --truth.
#
#   LENGTHS=16,128,512 DTYPES=bfloat16 OUT=/tmp/gpu-out bash scripts/gpu_truth.sh
#
# Results: $OUT/results.md (the table), $OUT/RESULTS.json, $OUT/log.txt, $OUT/gpu.txt.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
BIN=/tmp/divergence
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
PY=${PY:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
if [ -n "${BIN_SRC:-}" ]; then cp "$BIN_SRC" "$BIN"; else gunzip -c .gpu/divergence.gz > "$BIN"; fi
chmod +x "$BIN"
T0=$(date +%s)
# JIT warm-up of candle's kernels (~13 s on a fresh machine) on the tiny fixture
"$BIN" run --model fixtures/tiny-qwen3 --ids 1,2,3 --device "${DEVICE:-cuda}" --dtype bf16 > /dev/null 2>&1
$PY scripts/truth_evidence.py --bin "$BIN" --device "${DEVICE:-cuda}" --work /tmp/gpu-truth \
  --models "${MODELS:-q06-s1}" --q06-lengths "${LENGTHS:-16,128,512}" --dtypes "${DTYPES:-bfloat16}" --clean ${ONLY:+--only "$ONLY"} \
  > "$OUT/results.md" 2> "$OUT/log.txt"
echo "rc=$? seconds=$(( $(date +%s) - T0 ))" >> "$OUT/log.txt"
cp /tmp/gpu-truth/RESULTS.json "$OUT/" 2>/dev/null
df -h /tmp >> "$OUT/log.txt"
