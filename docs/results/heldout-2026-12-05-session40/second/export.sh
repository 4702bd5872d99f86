#!/bin/bash
# f16 one-pass refs, decode refs for r1 r2 r4, sdpa/eager for r3
PY=/work/main/.venv/bin/python; DR=/work/main/scripts/dump_reference.py; R=/tmp/held41
attn(){ $PY -c "import json;print(json.load(open('$R/$1/info.json'))['attn'])"; }
for n in r3 r4 r5 r2; do d=$R/$n
  $PY $DR --model $d/model --ids-file $d/ids.txt --dtype float16 --attn $(attn $n) --out $d/ref.f16.npz --truth-out $d/truth.f16.npz --quiet; echo "$n f16 rc=$?"
done
for spec in r1:5 r4:5 r2:3; do n=${spec%%:*}; s=${spec##*:}; d=$R/$n
  for dt in float32 bfloat16; do t=${dt/float32/f32}; t=${t/bfloat16/bf16}
    $PY $DR --model $d/model --ids-file $d/ids.txt --dtype $dt --attn $(attn $n) --decode $s --out $d/dref.$t.npz --truth-out $d/dtruth.$t.npz --quiet; echo "$n dec $dt rc=$?"
  done
done
# r3 with the other attention (held40's r3 refs are eager)
d=$R/r3
for dt in float32 bfloat16; do t=${dt/float32/f32}; t=${t/bfloat16/bf16}
  $PY $DR --model $d/model --ids-file $d/ids.txt --dtype $dt --attn sdpa --out $d/ref.$t.sdpa.npz --truth-out $d/truth.$t.sdpa.npz --quiet; echo "r3 sdpa $dt rc=$?"
done
# r5 (sdpa originally) with eager
d=$R/r5
for dt in float32 bfloat16; do t=${dt/float32/f32}; t=${t/bfloat16/bf16}
  $PY $DR --model $d/model --ids-file $d/ids.txt --dtype $dt --attn eager --out $d/ref.$t.eager.npz --truth-out $d/truth.$t.eager.npz --quiet; echo "r5 eager $dt rc=$?"
done
