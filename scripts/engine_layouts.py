#!/usr/bin/env python3
"""Rewrite a transformers dump (the divergence dump contract) the way another engine's dump of the
same run would look: vLLM, llama.cpp or TransformerLens names, fused tensors, tuple outputs and
layouts. The test material of `divergence diff --map PRESET` (docs/mapping.md): the diff of the
rewritten dump under the preset must equal the diff of the original.

    python scripts/engine_layouts.py IN.npz --engine vllm -o OUT.npz [--plant qkv-head-swap]
    python scripts/engine_layouts.py DECODE.npz --engine llama.cpp -o OUT.npz --ggml-axes kept
    python scripts/engine_layouts.py IN.npz --engine shuffled -o OUT.npz --seed 3

What each engine's dump holds, and where that was read (the presets carry the same notes):

* vllm: a forward hook on every module of vLLM's Qwen3 (vllm/model_executor/models/qwen3.py),
  tuple outputs saved element by element as `<module path>.<i>`, tokens flattened (no batch
  axis). Linear layers return (output, bias): `qkv_proj.0` is q | k | v concatenated on the last
  axis, `gate_up_proj.0` is gate | up. The fused add + RMSNorm returns (normed, residual):
  `input_layernorm.0/.1` (layer 0: one tensor), `post_attention_layernorm.1` = the residual after
  attention. A layer returns (mlp output, residual) as `model.layers.N.0/.1`; their sum is the
  residual stream. `rotary_emb.0/.1` are q and k after RoPE, flattened [T, heads*head_dim].
  `self_attn.attn` is the attention output before o_proj; `mlp.act_fn` (SiluAndMul) is
  silu(gate) * up. Logits: `logits`. A half-precision sum (act_fn * up) is rounded to the dump's
  dtype, as the engine's own op would be.
* llama.cpp: the graph's cb() names `name-N` (src/llama-graph.cpp, src/models/qwen3.cpp), each
  saved as numpy with the ggml `ne` reversed ([hd, nh, T] -> (T, nh, hd)), the outer size-1
  dims dropped (`--ggml-axes dropped`, as `ggml_n_dims` counts them: one token's RoPE output is
  (nh, hd)) or ggml's 4 axes kept (`--ggml-axes kept`: (1, T, nh, hd)). A dump keyed by name
  keeps the last tensor of a name: `Qcur-N` / `Kcur-N` are the RoPE outputs (T, heads, hd),
  `Vcur-N` is v as (T, kv_heads, hd). All tokens' outputs are kept (llama.cpp trims the last
  layer to the output rows unless every row is requested).
* transformer-lens: HookedTransformer `run_with_cache` keys (components/grouped_query_attention.py
  and friends): [batch, pos, head_index, d_head] for q/k/v/rot/z, k and v with kv_heads.
  Hooks that equal no transformers value (the ln hooks before the folded weight, attention
  scores) are not written, except `hook_resid_pre` (the previous layer's output), kept as an
  unmapped extra.
* shuffled: every name replaced by a random token (`t0042`) and the metadata order dropped: the
  test of alignment by content.

A decode dump's steps (stacked `x@steps` members) are rewritten step by step as `name@s`, as a
hook that dumps every forward call would name them (not `shuffled`).

`--plant qkv-head-swap` (vllm only) swaps heads 0 and 1 of q inside the fused qkv_proj of layer 0:
a port bug behind a fused tensor, which the mapped diff must report at
`model.layers.0.self_attn.q_proj` with the rule named.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dump_reference import write_npz  # noqa: E402

ENGINES = ("vllm", "llama.cpp", "transformer-lens", "shuffled")


def load(path: Path):
    z = np.load(path)
    meta = json.loads(bytes(z["__meta__"]).decode("utf-8")) if "__meta__" in z.files else {}
    probes = {k: z[k] for k in z.files if k != "__meta__"}
    return probes, meta


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """x rounded to the dump's original dtype (bf16 / f16 values kept in f32)."""
    import torch

    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.bfloat16).float().numpy()
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    return x


class Model:
    def __init__(self, probes: dict, meta: dict, config: dict | None = None):
        cfg = config or meta.get("model") or {}
        self.p = probes
        self.dtypes = meta.get("dtypes", {})
        self.layers = int(cfg["num_hidden_layers"])
        self.heads = int(cfg["num_attention_heads"])
        self.kv_heads = int(cfg.get("num_key_value_heads") or self.heads)
        self.head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // self.heads)

    def get(self, name: str) -> np.ndarray:
        """A probe without its batch axis of 1."""
        x = self.p[name]
        return x[0] if x.ndim >= 1 and x.shape[0] == 1 else x

    def dtype(self, name: str) -> str:
        return self.dtypes.get(name, "float32")


def vllm(m: Model, plant: str | None):
    out = [("model.embed_tokens", m.get("model.embed_tokens"), "model.embed_tokens")]
    for n in range(m.layers):
        p = f"model.layers.{n}"
        a = f"{p}.self_attn"
        if n == 0:
            out.append((f"{p}.input_layernorm", m.get(f"{p}.input_layernorm"), f"{p}.input_layernorm"))
        else:
            out.append((f"{p}.input_layernorm.0", m.get(f"{p}.input_layernorm"), f"{p}.input_layernorm"))
            out.append((f"{p}.input_layernorm.1", m.get(f"model.layers.{n - 1}"), f"model.layers.{n - 1}"))
        qkv = np.concatenate([m.get(f"{a}.q_proj"), m.get(f"{a}.k_proj"), m.get(f"{a}.v_proj")], axis=-1)
        if plant == "qkv-head-swap" and n == 0:
            hd = m.head_dim
            qkv = qkv.copy()
            qkv[:, 0:hd], qkv[:, hd : 2 * hd] = qkv[:, hd : 2 * hd].copy(), qkv[:, 0:hd].copy()
        out.append((f"{a}.qkv_proj.0", qkv, f"{a}.q_proj"))
        out.append((f"{a}.q_norm", m.get(f"{a}.q_norm"), f"{a}.q_norm"))
        out.append((f"{a}.k_norm", m.get(f"{a}.k_norm"), f"{a}.k_norm"))
        for i, which in enumerate(("rope_q", "rope_k")):
            r = m.get(f"{a}.{which}")  # [heads, T, hd]
            flat = np.ascontiguousarray(r.transpose(1, 0, 2)).reshape(r.shape[1], -1)
            out.append((f"{a}.rotary_emb.{i}", flat, f"{a}.{which}"))
        out.append((f"{a}.attn", m.get(f"{a}.attn_out"), f"{a}.attn_out"))
        out.append((f"{a}.o_proj.0", m.get(f"{a}.o_proj"), f"{a}.o_proj"))
        out.append((a, m.get(a), a))
        out.append((f"{p}.post_attention_layernorm.0", m.get(f"{p}.post_attention_layernorm"), f"{p}.post_attention_layernorm"))
        out.append((f"{p}.post_attention_layernorm.1", m.get(f"{p}.attn_residual"), f"{p}.attn_residual"))
        gate, up = m.get(f"{p}.mlp.gate_proj"), m.get(f"{p}.mlp.up_proj")
        out.append((f"{p}.mlp.gate_up_proj.0", np.concatenate([gate, up], axis=-1), f"{p}.mlp.gate_proj"))
        dt = m.dtype(f"{p}.mlp.act_fn")
        out.append((f"{p}.mlp.act_fn", round_to(m.get(f"{p}.mlp.act_fn") * up, dt), f"{p}.mlp.act_fn"))
        out.append((f"{p}.mlp.down_proj.0", m.get(f"{p}.mlp.down_proj"), f"{p}.mlp.down_proj"))
        out.append((f"{p}.mlp", m.get(f"{p}.mlp"), f"{p}.mlp"))
        out.append((f"{p}.0", m.get(f"{p}.mlp"), f"{p}.mlp"))
        out.append((f"{p}.1", m.get(f"{p}.attn_residual"), f"{p}.attn_residual"))
    last = f"model.layers.{m.layers - 1}"
    out.append(("model.norm.0", m.get("model.norm"), "model.norm"))
    out.append(("model.norm.1", m.get(last), last))
    out.append(("logits", m.get("lm_head"), "lm_head"))
    return out


def llama_cpp(m: Model):
    out = [("inp_embd", m.get("model.embed_tokens"), "model.embed_tokens")]
    for n in range(m.layers):
        p = f"model.layers.{n}"
        a = f"{p}.self_attn"
        out.append((f"attn_norm-{n}", m.get(f"{p}.input_layernorm"), f"{p}.input_layernorm"))
        out.append((f"Qcur_normed-{n}", m.get(f"{a}.q_norm"), f"{a}.q_norm"))
        out.append((f"Kcur_normed-{n}", m.get(f"{a}.k_norm"), f"{a}.k_norm"))
        # The last tensors named Qcur / Kcur: after RoPE, tokens first.
        out.append((f"Qcur-{n}", np.ascontiguousarray(m.get(f"{a}.rope_q").transpose(1, 0, 2)), f"{a}.rope_q"))
        out.append((f"Kcur-{n}", np.ascontiguousarray(m.get(f"{a}.rope_k").transpose(1, 0, 2)), f"{a}.rope_k"))
        v = m.get(f"{a}.v_proj")
        out.append((f"Vcur-{n}", v.reshape(v.shape[0], m.kv_heads, m.head_dim), f"{a}.v_proj"))
        out.append((f"kqv_out-{n}", m.get(f"{a}.attn_out"), f"{a}.attn_out"))
        out.append((f"ffn_inp-{n}", m.get(f"{p}.attn_residual"), f"{p}.attn_residual"))
        out.append((f"ffn_norm-{n}", m.get(f"{p}.post_attention_layernorm"), f"{p}.post_attention_layernorm"))
        up = m.get(f"{p}.mlp.up_proj")
        out.append((f"ffn_up-{n}", up, f"{p}.mlp.up_proj"))
        out.append((f"ffn_gate-{n}", m.get(f"{p}.mlp.gate_proj"), f"{p}.mlp.gate_proj"))
        dt = m.dtype(f"{p}.mlp.act_fn")
        out.append((f"ffn_swiglu-{n}", round_to(m.get(f"{p}.mlp.act_fn") * up, dt), f"{p}.mlp.act_fn"))
        out.append((f"ffn_out-{n}", m.get(f"{p}.mlp"), f"{p}.mlp"))
        out.append((f"l_out-{n}", m.get(p), p))
    out.append(("result_norm", m.get("model.norm"), "model.norm"))
    out.append(("result_output", m.get("lm_head"), "lm_head"))
    return out


def transformer_lens(m: Model):
    def b(x):  # TransformerLens keeps the batch axis
        return x[None]

    out = [("hook_embed", b(m.get("model.embed_tokens")), "model.embed_tokens")]
    for n in range(m.layers):
        p = f"model.layers.{n}"
        a = f"{p}.self_attn"
        prev = f"model.layers.{n - 1}" if n else "model.embed_tokens"
        out.append((f"blocks.{n}.hook_resid_pre", b(m.get(prev)), prev))
        for hook, probe, heads in (("hook_q", "q_proj", m.heads), ("hook_k", "k_proj", m.kv_heads), ("hook_v", "v_proj", m.kv_heads)):
            x = m.get(f"{a}.{probe}")
            out.append((f"blocks.{n}.attn.{hook}", b(x.reshape(x.shape[0], heads, m.head_dim)), f"{a}.{probe}"))
        for hook, probe in (("hook_rot_q", "rope_q"), ("hook_rot_k", "rope_k")):
            r = m.get(f"{a}.{probe}")
            out.append((f"blocks.{n}.attn.{hook}", b(np.ascontiguousarray(r.transpose(1, 0, 2))), f"{a}.{probe}"))
        z = m.get(f"{a}.attn_out")
        out.append((f"blocks.{n}.attn.hook_z", b(z.reshape(z.shape[0], m.heads, m.head_dim)), f"{a}.attn_out"))
        out.append((f"blocks.{n}.hook_attn_out", b(m.get(a)), a))
        out.append((f"blocks.{n}.hook_resid_mid", b(m.get(f"{p}.attn_residual")), f"{p}.attn_residual"))
        up = m.get(f"{p}.mlp.up_proj")
        out.append((f"blocks.{n}.mlp.hook_pre", b(m.get(f"{p}.mlp.gate_proj")), f"{p}.mlp.gate_proj"))
        out.append((f"blocks.{n}.mlp.hook_pre_linear", b(up), f"{p}.mlp.up_proj"))
        dt = m.dtype(f"{p}.mlp.act_fn")
        out.append((f"blocks.{n}.mlp.hook_post", b(round_to(m.get(f"{p}.mlp.act_fn") * up, dt)), f"{p}.mlp.act_fn"))
        out.append((f"blocks.{n}.hook_mlp_out", b(m.get(f"{p}.mlp")), f"{p}.mlp"))
        out.append((f"blocks.{n}.hook_resid_post", b(m.get(p)), p))
    return out


def shuffled(m: Model, seed: int):
    rng = random.Random(seed)
    names = list(m.p)
    tokens = [f"t{i:04d}" for i in range(len(names))]
    rng.shuffle(tokens)
    return [(t, m.p[n], n) for t, n in zip(tokens, names)]


GGML_AXES = ("dropped", "kept")


def ggml_axes(x: np.ndarray, axes: str) -> np.ndarray:
    """A llama.cpp tensor as a dumper saves it: `dropped`, the outer size-1 dims dropped (what
    `ggml_n_dims` keeps: one token's RoPE output is (heads, head_dim)); `kept`, ggml's 4 axes
    ((1, T, heads, head_dim))."""
    if axes == "kept":
        return x.reshape((1,) * (4 - x.ndim) + x.shape) if x.ndim < 4 else x
    while x.ndim > 1 and x.shape[0] == 1:
        x = x[0]
    return x


def rewrite(src: Path, engine: str, plant: str | None = None, seed: int = 0, ship_map: bool = False,
            config: dict | None = None, axes: str = "dropped"):
    """(entries, meta): entries are (name, array, the source probe whose dtype it keeps).

    A decode dump (stacked `x@steps` members, docs/dump-format.md) is rewritten step by step,
    each step's tensors named `name@s` (the per-step layout; not `shuffled`)."""
    probes, meta = load(src)
    stacked = {k[: -len("@steps")]: v for k, v in probes.items() if k.endswith("@steps")}
    if stacked and engine == "shuffled":
        raise SystemExit(f"{src}: decode steps: not with --engine shuffled")
    probes = {k: v for k, v in probes.items() if not k.endswith("@steps")}
    m = Model(probes, meta, config)
    if plant and engine != "vllm":
        raise SystemExit(f"--plant {plant}: vllm only")
    layout = {
        "vllm": lambda mm: vllm(mm, plant),
        "llama.cpp": llama_cpp,
        "transformer-lens": transformer_lens,
        "shuffled": lambda mm: shuffled(mm, seed),
    }[engine]
    lay = (lambda x: ggml_axes(x, axes)) if engine == "llama.cpp" else (lambda x: x)
    entries = [(n, lay(x), s) for n, x, s in layout(m)]
    steps = len(next(iter(stacked.values()))) if stacked else 0
    for step in range(1, steps + 1):
        ms = Model({k: v[step - 1] for k, v in stacked.items()}, meta, config)
        entries += [(f"{n}@{step}", lay(x), s) for n, x, s in layout(ms)]
    out_meta = {
        "format": meta.get("format", "divergence-dump/1"),
        "dtypes": {name: m.dtype(src_name) for name, _, src_name in entries},
        "producer": {"name": f"{engine} layout of {src.name}", "script": "scripts/engine_layouts.py", "plant": plant},
    }
    if engine != "shuffled":
        out_meta["order"] = [name for name, _, _ in entries]
    for key in ("input_ids", "decode_steps", "decode_ids"):
        if key in meta:
            out_meta[key] = meta[key]
    if ship_map and engine != "shuffled":
        out_meta["map"] = engine  # a port that ships its own map: the preset's name (or TOML text)
    # Not the model config (an engine's dump does not carry transformers' config; the sizes a
    # preset needs come from the reference's metadata or --model), unless given with --config.
    if config:
        out_meta["model"] = config
    return [(name, np.ascontiguousarray(x.astype(np.float32) if x.dtype != np.float64 else x)) for name, x, _ in entries], out_meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="a transformers dump (.npz, divergence dump contract)")
    ap.add_argument("--engine", required=True, choices=ENGINES)
    ap.add_argument("-o", "--out", required=True, type=Path)
    ap.add_argument("--plant", choices=["qkv-head-swap"])
    ap.add_argument("--seed", type=int, default=0, help="shuffled: the name permutation")
    ap.add_argument("--ship-map", action="store_true", help='record the preset in the metadata ("map")')
    ap.add_argument("--config", type=Path, help="config.json for the model sizes (default: the dump's metadata)")
    ap.add_argument("--ggml-axes", choices=GGML_AXES, default="dropped",
                    help="llama.cpp: the outer size-1 dims dropped (default) or ggml's 4 axes kept")
    args = ap.parse_args()
    import torch

    entries, meta = rewrite(args.src, args.engine, args.plant, args.seed, args.ship_map,
                            json.loads(args.config.read_text()) if args.config else None,
                            args.ggml_axes)
    write_npz(args.out, [(n, torch.from_numpy(x)) for n, x in entries], meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
