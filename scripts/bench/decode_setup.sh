# Shared setup of the decode benchmarks (decode_diff.sh, dump_cost.sh), sourced: needs W, OUT,
# PY, CONFIG and BINS set.

# unpack_bins PREFIX: each name=path pair of $BINS (a .gz is unpacked) as the executable
# $W/PREFIX-name; their names, in order, in BIN_NAMES.
unpack_bins() {
  BIN_NAMES=()
  local nb name src
  for nb in $BINS; do
    name=${nb%%=*} src=${nb#*=}
    case "$src" in
      *.gz) gunzip -c "$src" > "$W/$1-$name" ;;
      *) cp "$src" "$W/$1-$name" ;;
    esac
    chmod +x "$W/$1-$name"
    BIN_NAMES+=("$name")
  done
}

# make_model [DECODE_IDS]: the 64-token prompt ($W/ids64.txt, seeded) and, when asked, that many
# decode ids after it ($W/decode.txt, comma-separated), from $CONFIG's vocabulary; the model of
# $CONFIG with random weights (seed 0), stored in bf16, in $W/model.
make_model() {
  "$PY" - "$W" "$CONFIG" "${1:-0}" <<'PYEOF'
import json, random, sys
r = random.Random(0)
vocab = json.load(open(sys.argv[2]))["vocab_size"]
open(f"{sys.argv[1]}/ids64.txt", "w").write(" ".join(str(r.randrange(vocab)) for _ in range(64)) + "\n")
n = int(sys.argv[3])
if n > 0:
    ids = [str(r.randrange(vocab)) for _ in range(n)]
    open(f"{sys.argv[1]}/decode.txt", "w").write(",".join(ids) + "\n")
PYEOF
  "$PY" scripts/dump_reference.py --config "$CONFIG" --seed 0 --save-model "$W/model" \
    --save-dtype bfloat16 --ids 1 --only '^model\.embed_tokens$' --out "$W/throwaway.npz" --quiet \
    >> "$OUT/log.txt" 2>&1
}
