"""Seeded, platform-independent "realistic" random weights for Qwen3 / Llama-family models.

The weights of the committed tiny Qwen3 fixture (scripts/make_fixtures.py) and of every
`scripts/dump_reference.py --config` run (the GPU scripts build a Qwen3-0.6B-shaped model with it):
k_norm gains up to 96.5 like the real Qwen3-0.6B, so the amplification story of the fixtures is
realistic. The exporter itself knows nothing about it beyond calling `realistic_qwen3_init` for
`--config`. See docs/reference-exporter.md ("--config: realistic random init").
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

import dump_reference as dr


def _rng(seed: int, name: str) -> np.random.Generator:
    """One independent, order-free stream per parameter: seeded by (seed, sha256(name))."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), h])


def k_norm_gains(seed: int, name: str, head_dim: int) -> np.ndarray:
    """Per-channel k_norm weight like the real Qwen3-0.6B: ~1 with spread, a few extreme gains.

    layer 0: three channels at 96.5 (the real maximum), ~0.75x and ~0.5x of it;
    layer l > 0: max drawn uniformly in [20, 45] (rounded to 0.5), plus two channels at ~0.6x / ~0.35x.
    """
    rng = _rng(seed, name)
    w = np.exp(rng.normal(0.0, 0.25, head_dim)).astype(np.float64)  # lognormal around 1
    layer = dr._layer_index(name) or 0
    top = 96.5 if layer == 0 else round(rng.uniform(20.0, 45.0) * 2) / 2
    n_hot = min(3, head_dim)
    chans = rng.choice(head_dim, size=n_hot, replace=False)
    ratios = [1.0, 0.75, 0.5] if layer == 0 else [1.0, 0.6, 0.35]
    for c, r in zip(chans, ratios):
        w[c] = top * r * (1.0 + (0.0 if r == 1.0 else rng.uniform(-0.05, 0.05)))
    return w


def q_norm_gains(seed: int, name: str, head_dim: int) -> np.ndarray:
    """q_norm: lognormal around 1 (sigma 0.3) with two channels between 3 and 8."""
    rng = _rng(seed, name)
    w = np.exp(rng.normal(0.0, 0.3, head_dim)).astype(np.float64)
    chans = rng.choice(head_dim, size=min(2, head_dim), replace=False)
    for c in chans:
        w[c] = rng.uniform(3.0, 8.0)
    return w


def realistic_qwen3_init(model, seed: int, storage_dtype=None, initializer_range: float | None = None,
                         norm_gains: bool = True) -> dict:
    """Seeded, platform-independent, "realistic" random weights for Qwen3 / Llama-family models.

    * Linear weights and embeddings: N(0, std), std = initializer_range * sqrt(1024 / fan_in) capped at
      0.1 (0.02 for a 1024-wide model like Qwen3-0.6B, 0.08 for the 64-wide tiny model, so activations
      have the same scale as in a 1024-wide model). fan_in = the last dim.
    * biases: 0.
    * RMSNorm weights (1-D params with "norm" in the name): 1 + 0.1 * N(0, 1).
    * q_norm: see q_norm_gains; k_norm: see k_norm_gains (layer 0 max exactly 96.5).
    * k_proj rows that feed a k_norm channel of gain g > 4 are scaled by 1/g (every kv head), as a
      trained model keeps those pre-norm activations small: after k_norm those channels have an ordinary
      magnitude, but an absolute error entering them is multiplied by g (layer 0 of tiny-qwen3: a uniform
      error before k_norm comes out ~19x larger in relative L2 terms).
    Random numbers come from numpy PCG64 streams keyed by (seed, parameter name), generated in float32,
    so the weights are byte-identical on every machine; they are then rounded to `storage_dtype`
    (e.g. bfloat16) so a saved checkpoint holds exactly the weights that were run.
    With `norm_gains=False` (exporter flag --no-norm-gains), q_norm / k_norm get the plain RMSNorm
    weights (1 + 0.1 * N(0, 1)) and k_proj is not rescaled: the same model without Qwen3's gains.
    Returns {"k_norm_max": {layer: max}, "q_norm_max": {...}} for documentation.
    """
    import torch

    cfg = model.config
    ir = initializer_range if initializer_range is not None else getattr(cfg, "initializer_range", 0.02) or 0.02
    params = dict(model.named_parameters())  # tied weights appear once
    values: dict[str, np.ndarray] = {}
    info = {"k_norm_max": {}, "q_norm_max": {}}

    for name, p in params.items():
        shape = tuple(p.shape)
        rng = _rng(seed, name)
        if not norm_gains and len(shape) == 1 and name.endswith(("k_norm.weight", "q_norm.weight")):
            v = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name.endswith("k_norm.weight") and len(shape) == 1:
            v = k_norm_gains(seed, name, shape[0])
            info["k_norm_max"][dr._layer_index(name)] = float(v.max())
        elif name.endswith("q_norm.weight") and len(shape) == 1:
            v = q_norm_gains(seed, name, shape[0])
            info["q_norm_max"][dr._layer_index(name)] = float(v.max())
        elif len(shape) == 1 and "norm" in name.lower():
            v = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif len(shape) == 1:
            v = np.zeros(shape, dtype=np.float32)
        else:
            fan_in = shape[-1]
            std = min(0.1, ir * math.sqrt(1024.0 / fan_in))
            v = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        values[name] = np.asarray(v, dtype=np.float32)

    # shrink k_proj rows feeding high-gain k_norm channels
    for name in list(values) if norm_gains else []:
        if not name.endswith("k_proj.weight"):
            continue
        kn = name[: -len("k_proj.weight")] + "k_norm.weight"
        if kn not in values:
            continue
        gains = values[kn].astype(np.float64)
        hd = gains.shape[0]
        w = values[name]
        if w.shape[0] % hd:
            continue
        scale = np.where(gains > 4.0, 1.0 / gains, 1.0).astype(np.float32)
        values[name] = (w.reshape(-1, hd, w.shape[1]) * scale[None, :, None]).reshape(w.shape)

    with torch.no_grad():
        for name, p in params.items():
            t = torch.from_numpy(values[name])
            if storage_dtype is not None:
                t = t.to(storage_dtype)
            p.copy_(t.to(p.dtype))
    # k_norm maxima after rounding to the storage dtype
    for key, table in (("k_norm.weight", "k_norm_max"), ("q_norm.weight", "q_norm_max")):
        for name, p in params.items():
            if name.endswith(key):
                info[table][dr._layer_index(name)] = float(p.detach().float().max())
    return info
