#!/usr/bin/env bash
# The cost of a name map (docs/performance.md, "Name maps"): the 537-probe benchmark pair
# (make_bench_dumps.py) with ours rewritten as vLLM would dump it (scripts/engine_layouts.py:
# fused qkv_proj / gate_up_proj, (output, bias) and (normed, residual) tuples, tokens flattened),
# diffed under `--map vllm`, against the plain diff of the same pair. Warm page cache, RUNS
# timed runs each after one untimed (the model sizes the preset needs are recorded in the
# rewritten dump's metadata, from fixtures/configs/qwen3-0.6b.json); then one run each under peak_anon.py (peak RssAnon) and
# GNU time (peak RSS). Prints both medians and the median of the per-round ratios.
#
#   bash scripts/bench/map_cost.sh BENCHDIR [RUNS]    # BENCHDIR holds ours.npz and ref.npz
#   FLAGS=--no-tokens bash scripts/bench/map_cost.sh BENCHDIR [RUNS]   # without the token effect
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:?BENCHDIR with ours.npz and ref.npz (scripts/bench/make_bench_dumps.py)}
RUNS=${2:-10}
BIN=${BIN:-target/release/divergence}
PY=${PY:-.venv/bin/python}
CFG=$(mktemp -d)
trap 'rm -rf "$CFG"' EXIT
cp fixtures/configs/qwen3-0.6b.json "$CFG/config.json"
if [ ! -f "$DIR/ours.vllm.npz" ]; then
  "$PY" scripts/engine_layouts.py "$DIR/ours.npz" --engine vllm --config "$CFG/config.json" -o "$DIR/ours.vllm.npz"
  # The benchmark's values are random, so a layer's output is not the sum of its mlp output
  # and residual, which is what vLLM's (hidden, residual) pair sums to: make `.0` the layer
  # output minus `.1` (f32), so that the sum is the layer output up to one rounding and the
  # mapped diff does the work of a clean one (no divergence, no hints) like the plain diff.
  "$PY" - "$DIR/ours.npz" "$DIR/ours.vllm.npz" <<'PY'
import json, sys, numpy as np, torch
sys.path.insert(0, "scripts")
from dump_reference import write_npz
src, dst = np.load(sys.argv[1]), np.load(sys.argv[2])
out = []
for k in dst.files:
    if k == "__meta__":
        continue
    x = dst[k]
    parts = k.split(".")
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] == "0":
        layer = src[f"model.layers.{parts[2]}"][0]
        x = (layer - dst[f"model.layers.{parts[2]}.1"]).astype(np.float32)
    out.append((k, torch.from_numpy(np.ascontiguousarray(x))))
from pathlib import Path
meta = json.loads(bytes(dst["__meta__"]))
del dst
write_npz(Path(sys.argv[2]), out, meta)
PY
fi
plain=("$BIN" diff "$DIR/ours.npz" "$DIR/ref.npz" --format json ${FLAGS:-})
mapped=("$BIN" diff "$DIR/ours.vllm.npz" "$DIR/ref.npz" --map vllm --format json ${FLAGS:-})
cat "$DIR/ours.npz" "$DIR/ours.vllm.npz" "$DIR/ref.npz" > /dev/null
# Interleaved (plain, mapped, plain, ...) so that a slow spell of the machine hits both.
one() {
  local a b
  a=$(date +%s%N)
  "$@" > /dev/null || [ $? -eq 1 ]
  b=$(date +%s%N)
  awk -v ns=$((b - a)) 'BEGIN {printf "%.1f\n", ns / 1e6}'
}
stats() { sort -g | awk '{v[NR]=$1} END {printf "median %.1f ms (min %.1f, max %.1f, n %d)\n", v[int((NR+1)/2)], v[1], v[NR], NR}'; }
one "${plain[@]}" > /dev/null
one "${mapped[@]}" > /dev/null
tp=() tm=()
for _ in $(seq "$RUNS"); do
  tp+=("$(one "${plain[@]}")")
  tm+=("$(one "${mapped[@]}")")
done
echo "plain : $(printf '%s\n' "${tp[@]}" | stats)"
echo "mapped: $(printf '%s\n' "${tm[@]}" | stats)"
# The ratio of each round's two runs (taken a moment apart), then their median and quartiles:
# steadier than the ratio of the medians on a machine whose speed drifts.
for i in "${!tp[@]}"; do echo "${tm[$i]} ${tp[$i]}"; done | awk '{print $1 / $2}' | sort -g |
  awk '{v[NR]=$1} END {printf "mapped / plain, per round: median %.3f (quartiles %.3f - %.3f, n %d)\n", v[int((NR+1)/2)], v[int((NR+3)/4)], v[int((3*NR+1)/4)], NR}'
set +e +o pipefail  # a diff that finds something exits 1
for which in plain mapped; do
  declare -n cmd=$which
  anon=$("$PY" scripts/bench/peak_anon.py "${cmd[@]}" 2>/dev/null | tail -1)
  rss=$( { /usr/bin/time -f '%M' "${cmd[@]}" > /dev/null; } 2>&1 | tail -1)
  echo "$which: peak anon ${anon} KiB, peak RSS ${rss} KiB"
done
# The rows the engine's dump can make are the same in both reports.
"${plain[@]}" > "$CFG/plain.json" || true
"${mapped[@]}" > "$CFG/mapped.json" || true
"$PY" - "$CFG/plain.json" "$CFG/mapped.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
ra = {r["name"]: r for r in a["ops"]}
same = differ = layers = 0
for r in b["ops"]:
    o = ra.get(r["name"])
    if o is None or r["status"] == "only_ref" or r["status"] == "only_ours":
        continue
    if r["name"].startswith("model.layers.") and r["name"].count(".") == 2:
        layers += 1  # a sum, equal up to one rounding (see above)
        same += r["status"] == o["status"]
        differ += r["status"] != o["status"]
        continue
    k = lambda x: {q: v for q, v in x.items() if q not in ("shape_ours", "local_growth", "mapped")}
    same += k(o) == k(r)
    differ += k(o) != k(r)
print(f"rows compared in both: {same + differ}, identical (the {layers} layer outputs: same status): {same}, "
      f"different: {differ}; first divergence: {a['first_divergence']} vs {b['first_divergence']}")
PY
