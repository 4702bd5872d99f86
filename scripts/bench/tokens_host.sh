#!/usr/bin/env bash
# The token effect's dispatched scans on another host's CPU (docs/performance.md, "The
# token-level effect", session 59): the same reports from the build before (13c2ae5) and after
# (session 59's; its first flip's margin fields, added the same session, left out of the
# comparison), on dumps made there and on the committed fixtures (whose reports can also be
# compared with this machine's), and the tokens phase's time on one thread and on every core.
# One script for one device call on the GPU machine (its host CPU; no GPU code runs). Run in
# session 60: docs/results/tokens-host-2026-12-07-session60.txt.
#
#   OLD=.gpu/divergence-old.gz NEW=.gpu/divergence-new.gz bash scripts/bench/tokens_host.sh
#
# Writes $OUT/tokens-host.txt and $OUT/json/*.json. RUNS (default 5) timed runs per build.
set -euo pipefail
OUT=${OUT:-/tmp/tokens-host-out}
W=${W:-/tmp/tokens-host-work}
RUNS=${RUNS:-5}
PY=${PY:-python3}
mkdir -p "$OUT/json" "$W"
gunzip -c "${OLD:-.gpu/divergence-old.gz}" > "$W/old" && chmod +x "$W/old"
gunzip -c "${NEW:-.gpu/divergence-new.gz}" > "$W/new" && chmod +x "$W/new"
R="$OUT/tokens-host.txt"
{
  echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;" \
    "avx512f: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)," \
    "avx2: $(grep -qw avx2 /proc/cpuinfo && echo yes || echo no)"
} > "$R"
# 1. A 0.6B-shaped pair there: the same random model (seed 0), 128 tokens, transformers bf16
#    eager against f32 sdpa (their logits differ by bf16's rounding), on the CPU.
ids=$("$PY" -c 'import random; r = random.Random(0); print(",".join(str(r.randrange(151936)) for _ in range(128)))')
for spec in "bf16 bfloat16 eager" "f32 float32 sdpa"; do
  set -- $spec
  "$PY" scripts/dump_reference.py --config fixtures/configs/qwen3-0.6b.json --seed 0 --ids "$ids" \
    --dtype "$2" --attn "$3" --device cpu --out "$W/$1.npz" --quiet
done
# 2. Both builds, both dump sets: the JSON bytes compared.
pairs=("$W/bf16.npz $W/f32.npz big"
  "fixtures/demo/ours.npz fixtures/demo/ref.npz demo"
  "fixtures/ref/tiny-qwen3.bf16.eager.npz fixtures/ref/tiny-qwen3.f32.eager.npz eager"
  "fixtures/ref/tiny-qwen3.bf16.decode.npz fixtures/ref/tiny-qwen3.f32.decode.npz decode")
for p in "${pairs[@]}"; do
  set -- $p
  for b in old new; do
    "$W/$b" diff "$1" "$2" --format json > "$OUT/json/$3.$b.json" || true
  done
  s=$("$PY" - "$OUT/json/$3.old.json" "$OUT/json/$3.new.json" <<'PY'
import json, sys
old, new = (json.load(open(p)) for p in sys.argv[1:])
flip = ((new.get("tokens") or {}).get("first_flip")) or {}
for k in ("ref_margin", "ours_margin", "ref_top_logit", "ref_margin_ulps", "ref_dtype"):
    flip.pop(k, None)
print("identical" if old == new else "DIFFER")
PY
)
  echo "$3: old and new reports $s, the margins aside ($(wc -c < "$OUT/json/$3.new.json") bytes)" >> "$R"
done
# 3. The tokens phase (DIVERGENCE_TIMINGS: tokens done - diagnosis done), one thread and every
#    core, the builds alternated, on the 0.6B-shaped pair.
for threads in 1 "$(nproc)"; do
  for _ in $(seq "$RUNS"); do
    for b in old new; do
      RAYON_NUM_THREADS=$threads DIVERGENCE_TIMINGS=1 "$W/$b" diff "$W/bf16.npz" "$W/f32.npz" \
        --format table 2> "$W/err" > /dev/null || true
      t=$(sed -nE 's/^divergence timings: (diagnosis|tokens) done at ([0-9.]+) ms.*/\2/p' "$W/err" | tr '\n' ' ')
      echo "threads=$threads $b $t" >> "$W/times"
    done
  done
done
"$PY" - "$W/times" >> "$R" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 4:  # a run that printed no timings
        continue
    t, b, a, z = parts
    d[(t, b)].append(float(z) - float(a))
for (t, b), v in sorted(d.items()):
    print(f"{t} {b}: tokens phase median {statistics.median(v):.1f} ms, min {min(v):.1f} ({len(v)} runs)")
PY
cat "$R"
