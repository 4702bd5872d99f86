#!/usr/bin/env python3
"""Write two Qwen3-0.6B-shaped dumps (every probe, 128 tokens, float32) for the diff benchmark.

The probe names, shapes and execution order are those of a real Qwen3-0.6B dump from
scripts/dump_reference.py (hidden 1024, 28 layers, 16 q heads, 8 kv heads, head_dim 128,
MLP 3072, vocab 151936). The values are random (the benchmark measures I/O and arithmetic,
not numerics); "ours" is "ref" plus a small relative perturbation, so nothing diverges and
every op is fully compared.

    python scripts/bench/make_bench_dumps.py OUTDIR [--tokens 128] [--truth]

With --truth also a third dump, truth.npz: the same probes in float64 (ref plus another
perturbation of the same size), the high-precision run `divergence diff --truth` reads.
"""
import argparse
import json
import os

import numpy as np

H, L, NQ, NKV, HD, I, V = 1024, 28, 16, 8, 128, 3072, 151936


def probes(t):
    yield "model.embed_tokens", (1, t, H)
    yield "model.rotary_emb", (1, t, HD)
    for i in range(L):
        p = f"model.layers.{i}"
        yield f"{p}.input_layernorm", (1, t, H)
        yield f"{p}.self_attn.q_proj", (1, t, NQ * HD)
        yield f"{p}.self_attn.q_norm", (1, t, NQ, HD)
        yield f"{p}.self_attn.k_proj", (1, t, NKV * HD)
        yield f"{p}.self_attn.k_norm", (1, t, NKV, HD)
        yield f"{p}.self_attn.v_proj", (1, t, NKV * HD)
        yield f"{p}.self_attn.rope_q", (1, NQ, t, HD)
        yield f"{p}.self_attn.rope_k", (1, NKV, t, HD)
        yield f"{p}.self_attn.attn_out", (1, t, NQ * HD)
        yield f"{p}.self_attn.o_proj", (1, t, H)
        yield f"{p}.self_attn", (1, t, H)
        yield f"{p}.attn_residual", (1, t, H)
        yield f"{p}.post_attention_layernorm", (1, t, H)
        yield f"{p}.mlp.gate_proj", (1, t, I)
        yield f"{p}.mlp.act_fn", (1, t, I)
        yield f"{p}.mlp.up_proj", (1, t, I)
        yield f"{p}.mlp.down_proj", (1, t, H)
        yield f"{p}.mlp", (1, t, H)
        yield p, (1, t, H)
    yield "model.norm", (1, t, H)
    yield "model", (1, t, H)
    yield "lm_head", (1, t, V)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--truth", action="store_true", help="also write truth.npz (float64)")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [n for n, _ in probes(a.tokens)]
    ref, ours, truth = {}, {}, {}
    for name, shape in probes(a.tokens):
        r = rng.standard_normal(shape, dtype=np.float32)
        ref[name] = r
        ours[name] = r * (1 + 1e-6 * rng.standard_normal(shape, dtype=np.float32))
        if a.truth:
            # as far from ref as ours is (ratio ~1.4): nothing diverges, every op is fully compared
            truth[name] = r.astype(np.float64) * (1 + 1e-6 * rng.standard_normal(shape))
    sides = [("ref", ref, "float32"), ("ours", ours, "float32")]
    if a.truth:
        sides.append(("truth", truth, "float64"))
    for tag, d, dtype in sides:
        meta = {"format": "divergence-dump/1", "order": names,
                "dtypes": {n: dtype for n in names},
                "producer": {"name": "scripts/bench/make_bench_dumps.py", "side": tag}}
        d["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path = os.path.join(a.outdir, f"{tag}.npz")
        np.savez(path, **d)
        print(f"{path}: {os.path.getsize(path) / 1e6:.0f} MB, {len(names)} probes")


if __name__ == "__main__":
    main()
