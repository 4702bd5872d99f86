#!/bin/bash
# Key findings of the session-41 held-out check (run from anywhere; paths under /tmp/held41)
B=/tmp/hbin40/divergence-new; R=/tmp/held41
# F1: clean f16 decode flagged by --truth (r4): attn_out@s differs from transformers f16, 2-4x further from the truth
$B run --model $R/r4/model --ids-file $R/r4/ids.txt --dtype f16 --decode-from $R/r4/dref.f16.npz --out $R/r4/ours/dec.f16.-.npz
$B diff $R/r4/ours/dec.f16.-.npz $R/r4/dref.f16.npz --truth $R/r4/dtruth.f16.npz --format table --color never | head -30; echo "rc=${PIPESTATUS[0]}"
$B diff $R/r4/ours/dec.f16.-.npz $R/r4/dref.f16.npz --exact --grep 'layers.0.self_attn' --format table --color never | head -40
# F2: gqa-tile / rope-theta that change nothing still run, exit 0 (docs/pitfalls.md says refused, exit 2)
$B run --model $R/r4/model --ids-file $R/r4/ids.txt --inject gqa-tile@4 --out $R/x.npz; echo "rc=$?"
$B run --model $R/r1/model --ids-file $R/r1/ids.txt --inject gqa-tile --out $R/x.npz; echo "rc=$?"
$B run --model $R/r1/model --ids-file $R/r1/ids.txt --inject rope-theta=10000 --out $R/x.npz; echo "rc=$?"
# F3: decode-mask in f32 on r2 (300 tokens): --truth first divergence layers.2 attn_out@1 with hint `rounding` (a half type)
$B run --model $R/r2/model --ids-file $R/r2/ids.txt --decode-from $R/r2/dref.f32.npz --inject decode-mask --out "$R/r2/ours/dec.f32.decode-mask.npz"
$B diff "$R/r2/ours/dec.f32.decode-mask.npz" $R/r2/dref.f32.npz --truth $R/r2/dtruth.f32.npz --format table --color never | head -12
