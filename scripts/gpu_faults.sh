#!/usr/bin/env bash
# gpu_faults.sh — the pitfall catalogue on the GPU (docs/pitfalls.md, "On the GPU"), in one
# script for one device call.
#
# Runs on the GPU machine (H100/H200, CUDA 13, PyTorch 2.11 + transformers 5.17, no Rust, no
# network) from the repository root, with the CUDA build of `divergence` carried in
# .gpu/divergence.gz (see /work/shared/gpu/README.md and docs/gpu.md).
#
#   1. the Qwen3-0.6B-shaped model of scripts/gpu_qwen3.sh (random "realistic" weights, k_norm
#      up to ~96, stored in bf16), a 64-token prompt;
#   2. transformers eager references on the GPU, in f32 and in bf16;
#   3. ours on the GPU without a fault (the noise floor), then with each fault of
#      `divergence run --help`, in f32 and in bf16, each diffed against the reference of its
#      dtype with the default (dtype-preset) tolerance; the rounding-level faults also with the
#      settings docs/pitfalls.md uses for them (--exact, --rtol 1e-5);
#   4. results.md: per run, the expected first op, the op the report names, its rel L2 error.
#
# Everything goes to $OUT (default /tmp/gpu-out). A failing run does not stop the later ones.
#
# Dry run on a development machine (CPU, tiny model, no carried binary):
#   DEVICE=cpu CONFIG=fixtures/configs/tiny-qwen3.json BIN_SRC=target/release/divergence \
#     PY=.venv/bin/python scripts/gpu_faults.sh
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT/faults"
BIN=/tmp/divergence
MODEL=/tmp/q06
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG:-fixtures/configs/qwen3-0.6b.json}
W=/tmp/gpu-work
mkdir -p "$W"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
PY=${PY:-python3}
T0=$(date +%s)

nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
if [ -n "${BIN_SRC:-}" ]; then cp "$BIN_SRC" "$BIN"; else gunzip -c .gpu/divergence.gz > "$BIN"; fi
chmod +x "$BIN"

$PY - "$W" "$CONFIG" <<'EOF'
import json, random, sys
r = random.Random(0)
vocab = json.load(open(sys.argv[2]))["vocab_size"]
open(f"{sys.argv[1]}/ids64.txt", "w").write(" ".join(str(r.randrange(vocab)) for _ in range(64)) + "\n")
EOF

log() { echo "### $*" >> "$OUT/log.txt"; "$@" >> "$OUT/log.txt" 2>&1; }

log $PY scripts/dump_reference.py --config "$CONFIG" --seed 0 --save-model "$MODEL" \
  --save-dtype bfloat16 --ids 1 --only '^model\.embed_tokens$' --out "$W/throwaway.npz" --quiet
for dt in float32 bfloat16; do
  log $PY scripts/dump_reference.py --model "$MODEL" --ids-file "$W/ids64.txt" --dtype $dt \
    --attn eager --device "$DEVICE" --out "$W/ref.$dt.npz" --quiet
done
log "$BIN" run --model "$MODEL" --ids 1,2,3 --device "$DEVICE" --dtype bf16   # JIT warm-up

# case DTYPE FAULT EXPECTED [DIFF ARGS...]: FAULT "-" = none, EXPECTED "-" = no divergence,
# "?" = nothing expected, only recorded.
case_() {
  local dt=$1 fault=$2 want=$3; shift 3
  local ref=$W/ref.float32.npz rdt=f32
  [ "$dt" = bf16 ] && ref=$W/ref.bfloat16.npz && rdt=bf16
  local slug
  slug=$(echo "$dt.$fault.$*" | tr -c 'A-Za-z0-9.=-' '_')
  local inject=()
  [ "$fault" != - ] && inject=(--inject "$fault")
  rm -f "$W/ours.npz"
  log "$BIN" run --model "$MODEL" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype "$rdt" \
    "${inject[@]}" --out "$W/ours.npz"
  "$BIN" diff "$W/ours.npz" "$ref" --format json "$@" > "$OUT/faults/$slug.json" 2>> "$OUT/log.txt"
  echo "$dt|$fault|$*|$want|$?|$slug" >> "$OUT/cases.txt"
}

: > "$OUT/cases.txt"
for dt in f32 bf16; do
  case_ $dt - -
  case_ $dt embed-scale model.embed_tokens
  case_ $dt rope-theta=10000 model.rotary_emb
  case_ $dt rope-interleaved model.layers.0.self_attn.rope_q
  case_ $dt skip-k-norm model.layers.0.self_attn.k_norm
  case_ $dt skip-k-norm@2 model.layers.2.self_attn.k_norm
  case_ $dt skip-q-norm@1-3 model.layers.1.self_attn.q_norm
  case_ $dt attn-bias=1e30 model.layers.0.self_attn.q_proj
  case_ $dt attn-bias=0.5@3 model.layers.3.self_attn.q_proj
  case_ $dt transpose=model.layers.0.self_attn.k_proj model.layers.0.self_attn.k_proj
  case_ $dt transpose=model.layers.1.mlp.down_proj model.layers.1.mlp.down_proj
  case_ $dt transpose=lm_head lm_head
  case_ $dt act=gelu model.layers.0.mlp.act_fn
  case_ $dt gqa-tile model.layers.0.self_attn.attn_out
  case_ $dt rms-eps=1e-3 model.layers.0.input_layernorm
  # (since 2026-12-08, session 62: weights loaded from each other's tensors)
  case_ $dt swap-gate-up model.layers.0.mlp.gate_proj
  case_ $dt swap-k-v@5 model.layers.5.self_attn.k_proj
  case_ $dt no-causal-mask model.layers.0.self_attn.attn_out
done
# Rounding-level faults, with the settings docs/pitfalls.md uses for them.
case_ bf16 - ? --exact
case_ bf16 late-rounding model.layers.0.input_layernorm --exact
case_ bf16 f16-accum model.layers.0.input_layernorm --exact
case_ f32 f16-accum model.layers.0.input_layernorm --rtol 1e-5

$PY - "$OUT" > "$OUT/results.md" 2>> "$OUT/log.txt" <<'EOF'
import json, sys
out = sys.argv[1]
print("| dtype | --inject | diff args | expected first op | reported first op | rel L2 there | exit | verdict | hints there |")
print("| --- | --- | --- | --- | --- | ---: | ---: | --- | --- |")
for line in open(f"{out}/cases.txt"):
    dt, fault, args, want, rc, slug = line.rstrip("\n").split("|")
    try:
        r = json.load(open(f"{out}/faults/{slug}.json"))
    except Exception as e:
        print(f"| {dt} | {fault} | {args} | {want} | error: {e} | | {rc} | ERROR | |")
        continue
    fd = r.get("first_divergence")
    got = fd["name"] if fd else "-"
    rel = ""
    if fd:
        op = r["ops"][fd["index"]]
        rel = f"{op.get('rel_l2_err'):.2e}" if isinstance(op.get("rel_l2_err"), float) else str(op.get("rel_l2_err"))
    verdict = "recorded" if want == "?" else "as expected" if got == want else "DIFFERENT"
    hints = ", ".join(sorted({h["code"] for h in r.get("hints", []) if h.get("op") == got}))
    print(f"| {dt} | {fault} | {args} | `{want}` | `{got}` | {rel} | {rc} | {verdict} | {hints} |")
EOF
echo "total $(( $(date +%s) - T0 )) s" >> "$OUT/results.md"
cat "$OUT/gpu.txt" "$OUT/results.md"
