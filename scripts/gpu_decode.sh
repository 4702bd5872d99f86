#!/usr/bin/env bash
# gpu_decode.sh — decode with a KV cache on the GPU (docs/decode.md, docs/gpu.md "Decode"), in
# one script for one device call.
#
# Runs on the GPU machine (H100/H200, CUDA 13, PyTorch 2.11 + transformers 5.17, no Rust, no
# network) from the repository root, with the CUDA build of `divergence` in .gpu/divergence.gz.
#
#   1. the Qwen3-0.6B-shaped model of scripts/gpu_qwen3.sh (random "realistic" weights, k_norm
#      up to ~96, stored in bf16), a 64-token prompt;
#   2. transformers eager references on the GPU with 64 greedy decode steps through its own KV
#      cache (`dump_reference.py --decode 64`), f32 and bf16 (with its float64 truth run), and
#      f16 (with its truth run) where DTYPES names it;
#   3. ours on the GPU teacher-forced from them (`divergence run --decode-from`), clean and with
#      every KV-cache fault, each diffed against the reference of its dtype (default tolerance;
#      bf16 and f16 also three-way, --truth);
#   4. cost: the bf16 reference and ours in one pass and at 8, 64 and 256 decode steps (wall
#      time, dump size)
#      and the diff of each pair (wall time, peak RSS, from /usr/bin/time);
#   5. results.txt (one line per case) and the JSON reports' key fields.
#
# Dry run on a development machine (CPU, tiny model, no carried binary):
#   DEVICE=cpu CONFIG=fixtures/configs/tiny-qwen3.json BIN_SRC=target/debug/divergence \
#     PY=.venv/bin/python STEPS="2 4" scripts/gpu_decode.sh
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
BIN=/tmp/divergence
MODEL=/tmp/q06
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG:-fixtures/configs/qwen3-0.6b.json}
STEPS=${STEPS:-"0 8 64 256"}
# PARTS: which parts to run (faults, pvd = prefill-vs-decode, cost)
PARTS=${PARTS:-"faults pvd cost"}
# DTYPES: the activation dtypes of the faults part (f32, bf16, f16); pvd runs f32 and bf16
DTYPES=${DTYPES:-"f32 bf16"}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
N=${N:-64}
W=/tmp/gpu-work
mkdir -p "$W"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
PY=${PY:-python3}
T0=$(date +%s)
R="$OUT/results.txt"
: > "$R"

nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
if [ -n "${BIN_SRC:-}" ]; then cp "$BIN_SRC" "$BIN"; else gunzip -c .gpu/divergence.gz > "$BIN"; fi
chmod +x "$BIN"
# DIFF: the binary that diffs (a CPU build in .gpu/divergence-cpu.gz when carried: diff needs
# no GPU), else the CUDA one
DIFF=$BIN
if [ -f .gpu/divergence-cpu.gz ]; then gunzip -c .gpu/divergence-cpu.gz > /tmp/divergence-cpu; chmod +x /tmp/divergence-cpu; DIFF=/tmp/divergence-cpu; fi

$PY - "$W" "$CONFIG" <<'EOF'
import json, random, sys
r = random.Random(0)
vocab = json.load(open(sys.argv[2]))["vocab_size"]
open(f"{sys.argv[1]}/ids64.txt", "w").write(" ".join(str(r.randrange(vocab)) for _ in range(64)) + "\n")
EOF

log() { echo "### $*" >> "$OUT/log.txt"; "$@" >> "$OUT/log.txt" 2>&1; }
# secs CMD...: runs CMD, prints its wall time in seconds
secs() { local a b; a=$(date +%s.%N); "$@" >> "$OUT/log.txt" 2>&1; b=$(date +%s.%N); echo "$a $b" | awk '{printf "%.2f", $2-$1}'; }

log $PY scripts/dump_reference.py --config "$CONFIG" --seed 0 --save-model "$MODEL" \
  --save-dtype bfloat16 --ids 1 --only '^model\.embed_tokens$' --out "$W/throwaway.npz" --quiet
log "$BIN" run --model "$MODEL" --ids 1,2,3 --decode-ids 4,5 --device "$DEVICE" --dtype bf16  # JIT warm-up

torch_dtype() { case $1 in f32) echo float32 ;; bf16) echo bfloat16 ;; f16) echo float16 ;; esac; }
REFS="float32 bfloat16"
has faults && REFS=$(for d in $DTYPES; do torch_dtype "$d"; done; has pvd && echo float32 bfloat16)
REFS=$(echo $REFS | tr ' ' '\n' | sort -u | tr '\n' ' ')
(has faults || has pvd) && for dt in $REFS; do
  truth=()
  [ $dt = bfloat16 ] && truth=(--truth-out "$W/truth.npz")
  [ $dt = float16 ] && truth=(--truth-out "$W/truth.float16.npz")
  t=$(secs $PY scripts/dump_reference.py --model "$MODEL" --ids-file "$W/ids64.txt" --dtype $dt \
    --attn eager --device "$DEVICE" --decode "$N" --out "$W/ref.$dt.npz" --quiet "${truth[@]}")
  echo "ref $dt decode $N: ${t}s $(stat -c %s "$W/ref.$dt.npz") bytes" >> "$R"
done

# summary JSON -> one line: first divergence (step, name), origin, prefill rows diverged, tokens
summ() {
  $PY - "$1" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"no report ({e})"); sys.exit()
f = r.get("first_divergence")
o = r.get("origin") or {}
st = r.get("steps") or []
t = r.get("tokens") or {}
flip = (t.get("first_flip") or {}).get("step")
# three-way reports: the largest noise ratio (ours' error against the truth over the
# reference's) and its row
nr = [(x["noise_ratio"], x["name"]) for x in r["ops"] if x.get("noise_ratio") is not None]
worst = max(nr) if nr else None
if worst:
    print(f"worst_noise_ratio={worst[0]:.2f}@{worst[1]}", end=" ")
print(f"first={f and f['name']} step={f and f['step']} origin={o.get('name')} "
      f"prefill_diverged={st[0]['diverged'] if st else None} steps={len(st)} "
      f"top1={t.get('top1_agree')}/{t.get('positions')} mean_kld={t.get('mean_kld', 0):.3e} first_flip_step={flip} "
      f"rows={r['summary']['total']} compared={r['summary']['compared']} unreadable={r['summary']['unreadable']}")
EOF
}

# case DTYPE FAULT EXPECTED
case_() {
  local dt=$1 fault=$2 want=$3
  local ref=$W/ref.$(torch_dtype "$dt").npz truth=
  [ "$dt" = bf16 ] && truth=$W/truth.npz
  [ "$dt" = f16 ] && truth=$W/truth.float16.npz
  local inject=()
  [ "$fault" != - ] && inject=(--inject "$fault")
  rm -f "$W/ours.npz"
  if ! "$BIN" run --model "$MODEL" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype "$dt" \
    --decode-from "$ref" "${inject[@]}" --out "$W/ours.npz" >> "$OUT/log.txt" 2>&1; then
    echo "$dt $fault: run refused: $(tail -1 "$OUT/log.txt")" >> "$R"
    return
  fi
  local slug
  slug=$(printf '%s' "$dt.$fault" | tr -c 'A-Za-z0-9.=-' '_')
  "$DIFF" diff "$W/ours.npz" "$ref" --format json > "$OUT/$slug.json" 2>> "$OUT/log.txt"
  local ec=$?
  echo "$dt $fault (want $want): exit $ec $(summ "$OUT/$slug.json")" >> "$R"
  if [ -n "$truth" ]; then
    # three-way: judged against the float64 truth run of the same decode (--truth)
    "$DIFF" diff "$W/ours.npz" "$ref" --truth "$truth" --format json > "$OUT/$slug.truth.json" 2>> "$OUT/log.txt"
    ec=$?
    echo "$dt $fault --truth (want $want): exit $ec $(summ "$OUT/$slug.truth.json")" >> "$R"
  fi
}

has faults && for dt in $DTYPES; do
  case_ $dt - -
  case_ $dt decode-pos=1 model.rotary_emb@1
  case_ $dt decode-pos-frozen model.rotary_emb@2
  case_ $dt cache-pre-rope model.layers.0.self_attn.cache_k@1
  case_ $dt cache-pre-norm model.layers.0.self_attn.cache_k@1
  case_ $dt cache-overwrite model.layers.0.self_attn.cache_k@1
  case_ $dt cache-overwrite=last model.layers.0.self_attn.cache_k@1
  case_ $dt cache-dtype=bf16 model.layers.0.self_attn.cache_k@1
  case_ $dt decode-mask model.layers.0.self_attn.attn_out@1
done

# prefill-vs-decode on the GPU: one prefill over prompt + 8 decode tokens against the stepped run
has pvd && $PY - "$W" <<'EOF'
import json, sys, numpy as np
w = sys.argv[1]
with np.load(f"{w}/ref.bfloat16.npz") as z:
    m = json.loads(z["__meta__"].tobytes())
open(f"{w}/ids72.txt", "w").write(" ".join(map(str, m["input_ids"] + m["decode_ids"][:8])) + "\n")
open(f"{w}/dec8.txt", "w").write(",".join(map(str, m["decode_ids"][:8])) + "\n")
EOF
has pvd && for dt in f32 bf16; do
  "$BIN" run --model "$MODEL" --ids-file "$W/ids72.txt" --device "$DEVICE" --dtype $dt --out "$W/full.npz" >> "$OUT/log.txt" 2>&1
  "$BIN" run --model "$MODEL" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype $dt \
    --decode-ids "$(cat "$W/dec8.txt")" --out "$W/stepped.npz" >> "$OUT/log.txt" 2>&1
  "$DIFF" diff "$W/full.npz" "$W/stepped.npz" --prefill-vs-decode --format json > "$OUT/pvd.$dt.json" 2>> "$OUT/log.txt"
  echo "prefill-vs-decode $dt clean: exit $? $(summ "$OUT/pvd.$dt.json")" >> "$R"
done

# cost: bf16, N steps
has cost && for n in $STEPS; do
  rm -f "$W/cost.ref.npz" "$W/cost.ours.npz"
  # n = 0: the one-pass dump (the per-byte baseline)
  dec=(--decode "$n")
  from=(--decode-from "$W/cost.ref.npz")
  [ "$n" = 0 ] && dec=() && from=()
  t=$(secs $PY scripts/dump_reference.py --model "$MODEL" --ids-file "$W/ids64.txt" --dtype bfloat16 \
    --attn eager --device "$DEVICE" "${dec[@]}" --out "$W/cost.ref.npz" --quiet)
  to=$(secs "$BIN" run --model "$MODEL" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype bf16 \
    "${from[@]}" --out "$W/cost.ours.npz")
  tp=$(secs "$BIN" run --model "$MODEL" --ids-file "$W/ids64.txt" --device "$DEVICE" --dtype bf16 \
    "${from[@]}")
  $PY - "$W/time.txt" "$W/cost.json" "$DIFF" diff "$W/cost.ours.npz" "$W/cost.ref.npz" --format json <<'EOF' 2>> "$OUT/log.txt"
import resource, subprocess, sys, time
t = time.time()
with open(sys.argv[2], "w") as out:
    subprocess.run(sys.argv[3:], stdout=out)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(f"{time.time() - t:.2f} {rss}\n")
EOF
  read -r td rss < "$W/time.txt"
  echo "cost bf16 decode $n: ref ${t}s $(stat -c %s "$W/cost.ref.npz") bytes; ours ${to}s (probes off ${tp}s) $(stat -c %s "$W/cost.ours.npz") bytes; diff ${td}s peak RSS ${rss} KB; $(summ "$W/cost.json")" >> "$R"
done
echo "total $(( $(date +%s) - T0 ))s" >> "$R"
cat "$R"
