#!/usr/bin/env bash
# gpu_qwen3.sh — the GPU experiment of docs/gpu.md, in one script for one device call.
#
# Runs on the GPU machine (H100/H200, CUDA 13, PyTorch 2.11 + transformers 5.17, no Rust, no
# network) from the repository root, with the CUDA build of `divergence` carried in
# .gpu/divergence.gz (see /work/shared/gpu/README.md and docs/gpu.md for how it is built).
#
#   1. a Qwen3-0.6B-shaped model with random ("realistic", k_norm up to ~96) weights, stored in
#      bf16: scripts/dump_reference.py --config fixtures/configs/qwen3-0.6b.json --seed 0
#   2. transformers bf16 eager on cuda dumps every probe for a 64-token prompt;
#      our binary runs the same weights with --device cuda --dtype bf16 (torch and fused policy);
#      `divergence diff` (our binary) compares them -> JSON, per-probe errors, top-1 agreement
#   3. timings of a 512-token prefill: ours with probes off / every probe dumped, transformers
#      eager and sdpa, same GPU, after a warm-up (the first CUDA process JITs candle's PTX)
#   4. the same accuracy check in f32
#
# Everything goes to $OUT (default /tmp/gpu-out). Each step logs its exit code to
# $OUT/steps.txt; a failing step does not stop the later ones.
#
# Dry run on a development machine (CPU, tiny model, no carried binary):
#   DEVICE=cpu CONFIG=fixtures/configs/tiny-qwen3.json BIN_SRC=target/debug/divergence \
#     PY=.venv/bin/python N_TIME=64 scripts/gpu_qwen3.sh
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
BIN=/tmp/divergence
MODEL=/tmp/q06
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG:-fixtures/configs/qwen3-0.6b.json}
N_TIME=${N_TIME:-512}
W=/tmp/gpu-work
mkdir -p "$W"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
PY=${PY:-python3}
T0=$(date +%s)

step() { # step NAME CMD... : run, log rc and seconds
  local name=$1; shift
  local t=$(date +%s%N)
  echo "### $name: $*" >> "$OUT/log.txt"
  "$@" >> "$OUT/log.txt" 2>&1
  local rc=$?
  printf '%-28s rc=%-3s %6d ms\n' "$name" "$rc" "$(( ($(date +%s%N) - t) / 1000000 ))" >> "$OUT/steps.txt"
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >> "$OUT/gpu.txt" 2>&1
if [ -n "${BIN_SRC:-}" ]; then cp "$BIN_SRC" "$BIN"; else gunzip -c .gpu/divergence.gz > "$BIN"; fi
chmod +x "$BIN"

# Prompts: 64 tokens for the probe-by-probe comparison, 512 for timing (fixed seed).
$PY - "$W" "$CONFIG" "$N_TIME" <<'EOF'
import json, random, sys
r = random.Random(0)
vocab = json.load(open(sys.argv[2]))["vocab_size"]
ids = [r.randrange(vocab) for _ in range(max(64, int(sys.argv[3])))]
open(f"{sys.argv[1]}/ids512.txt", "w").write(" ".join(map(str, ids[:int(sys.argv[3])])) + "\n")
open(f"{sys.argv[1]}/ids64.txt", "w").write(" ".join(map(str, ids[:64])) + "\n")
EOF

# 1. random model (the dump of this step is a throwaway: one token, one probe)
step make_model $PY scripts/dump_reference.py --config "$CONFIG" --seed 0 \
  --save-model "$MODEL" --save-dtype bfloat16 --ids 1 --only '^model\.embed_tokens$' \
  --out "$W/throwaway.npz" --quiet
# 2. transformers bf16 eager reference on the GPU, loaded back with from_pretrained (--model):
#    a model built in f32 and cast with .to(bfloat16) (the --config path) has its RoPE inv_freq
#    rounded to bf16, which from_pretrained(dtype=bfloat16) does not do.
step ref_bf16 $PY scripts/dump_reference.py --model "$MODEL" --ids-file "$W/ids64.txt" \
  --dtype bfloat16 --attn eager --device "$DEVICE" --out "$W/ref.bf16.npz" --quiet
# warm-up: the first CUDA process JIT-loads candle's kernels
step warmup "$BIN" run --model "$MODEL" --ids 1,2,3 --device "$DEVICE" --dtype bf16
step ours_bf16 "$BIN" run --model "$MODEL" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype bf16 \
  --out "$W/ours.bf16.npz"
step ours_bf16_fused "$BIN" run --model "$MODEL" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype bf16 \
  --policy fused --out "$W/ours.bf16.fused.npz"
step diff_bf16 sh -c "'$BIN' diff '$W/ours.bf16.npz' '$W/ref.bf16.npz' --format json > '$OUT/diff.bf16.json'"
step diff_bf16_table sh -c "'$BIN' diff '$W/ours.bf16.npz' '$W/ref.bf16.npz' --format table --color never > '$OUT/diff.bf16.txt'"
step diff_bf16_exact sh -c "'$BIN' diff '$W/ours.bf16.npz' '$W/ref.bf16.npz' --exact --format json > '$OUT/diff.bf16.exact.json'"
step diff_bf16_fused sh -c "'$BIN' diff '$W/ours.bf16.fused.npz' '$W/ref.bf16.npz' --format json > '$OUT/diff.bf16.fused.json'"

# 3. timings, 512-token prefill
for i in 1 2 3; do
  step "time_ours_off_$i" "$BIN" run --model "$MODEL" --ids-file "$W/ids512.txt" --device "$DEVICE" \
    --dtype bf16 --repeat 10
done
step time_ours_on_st "$BIN" run --model "$MODEL" --ids-file "$W/ids512.txt" --device "$DEVICE" \
  --dtype bf16 --repeat 3 --out "$W/t512.safetensors"
ls -l "$W/t512.safetensors" >> "$OUT/log.txt" 2>&1
rm -f "$W/t512.safetensors"
step time_ours_on_npz "$BIN" run --model "$MODEL" --ids-file "$W/ids512.txt" --device "$DEVICE" \
  --dtype bf16 --repeat 2 --out "$W/t512.npz"
ls -l "$W/t512.npz" >> "$OUT/log.txt" 2>&1
rm -f "$W/t512.npz"
step time_transformers $PY - "$MODEL" "$W/ids512.txt" "$OUT/time_transformers.json" "$DEVICE" <<'EOF'
import json, sys, time
import torch, transformers
model_dir, ids_path, out = sys.argv[1:4]
dev = sys.argv[4]
ids = torch.tensor([[int(x) for x in open(ids_path).read().split()]], device=dev)
sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
res = {}
for attn in ("eager", "sdpa"):
    m = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16, attn_implementation=attn, local_files_only=True).to(dev).eval()
    times = []
    with torch.inference_mode():
        for i in range(13):
            sync(); t = time.perf_counter()
            m(input_ids=ids, use_cache=False)
            sync(); dt = time.perf_counter() - t
            if i >= 3:
                times.append(dt)
    times.sort()
    res[attn] = {"best_ms": times[0] * 1e3, "median_ms": times[len(times) // 2] * 1e3, "runs": len(times)}
    del m
json.dump(res, open(out, "w"), indent=1)
print(res)
EOF

# 4. f32: transformers f32 eager on cuda vs ours f32 on cuda (same bf16-stored weights)
step ref_f32 $PY scripts/dump_reference.py --model "$MODEL" --ids-file "$W/ids64.txt" --dtype float32 \
  --attn eager --device "$DEVICE" --out "$W/ref.f32.npz" --quiet
step ours_f32 "$BIN" run --model "$MODEL" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype f32 \
  --out "$W/ours.f32.npz"
step diff_f32 sh -c "'$BIN' diff '$W/ours.f32.npz' '$W/ref.f32.npz' --format json > '$OUT/diff.f32.json'"

# Summaries: per-probe errors, first divergence, top-1 agreement.
$PY - "$W" "$OUT" > "$OUT/summary.txt" 2>&1 <<'EOF'
import json, sys
import numpy as np
W, OUT = sys.argv[1:3]
def load(p):
    try:
        return json.load(open(p))
    except Exception as e:
        print(f"{p}: {e}"); return None
for tag in ("bf16", "bf16.exact", "bf16.fused", "f32"):
    r = load(f"{OUT}/diff.{tag}.json")
    if r is None:
        continue
    ops = r.get("ops", [])
    fd = r.get("first_divergence")
    rel = [o.get("rel_l2_err") for o in ops if isinstance(o.get("rel_l2_err"), (int, float))]
    exact = sum(1 for o in ops if o.get("max_abs_err") == 0)
    print(f"== diff {tag}: {len(ops)} ops, first divergence: {fd['name'] if fd else None}, "
          f"max rel L2 {max(rel) if rel else None:.3e}, bit-exact ops {exact}/{len(ops)}")
    if tag in ("bf16", "f32"):
        for o in ops:
            print(f"  {o.get('name'):<48} {o.get('status'):<10} rel_l2 {o.get('rel_l2_err')!s:<24} max_abs {o.get('max_abs_err')}")
def top1(a, b):
    try:
        x = np.load(a)["lm_head"]; y = np.load(b)["lm_head"]
    except Exception as e:
        return f"error {e}"
    ax, ay = x.reshape(-1, x.shape[-1]).argmax(-1), y.reshape(-1, y.shape[-1]).argmax(-1)
    return f"{int((ax == ay).sum())}/{ax.size}"
print("top-1 agreement bf16 torch policy:", top1(f"{W}/ours.bf16.npz", f"{W}/ref.bf16.npz"))
print("top-1 agreement bf16 fused policy:", top1(f"{W}/ours.bf16.fused.npz", f"{W}/ref.bf16.npz"))
print("top-1 agreement f32:", top1(f"{W}/ours.f32.npz", f"{W}/ref.f32.npz"))
EOF
grep -h "divergence run:" "$OUT/log.txt" > "$OUT/runs.txt"
echo "total $(( $(date +%s) - T0 )) s" >> "$OUT/steps.txt"
cat "$OUT/steps.txt" "$OUT/runs.txt"
head -8 "$OUT/summary.txt"
grep -h "top-1" "$OUT/summary.txt"
cat "$OUT/time_transformers.json" 2>/dev/null
