#!/bin/bash
# export f32 and bf16 references (each with a float64 truth) for the named models
PY=/work/main/.venv/bin/python; DR=/work/main/scripts/dump_reference.py
for n in "$@"; do
  d=/tmp/held40/$n; attn=$($PY -c "import json;print(json.load(open('$d/info.json'))['attn'])")
  for dt in float32 bfloat16; do
    s=${dt/float32/f32}; s=${s/bfloat16/bf16}
    $PY $DR --model $d/model --ids-file $d/ids.txt --dtype $dt --attn $attn --out $d/ref.$s.npz --truth-out $d/truth.$s.npz --quiet
    echo "$n $dt rc=$?"
  done
done
