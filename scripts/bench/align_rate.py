#!/usr/bin/env python3
"""How often `divergence diff`'s alignment by content pairs the right tensors (docs/mapping.md).

    DIVERGENCE_BIN=target/release/divergence .venv/bin/python scripts/bench/align_rate.py [--quick]

Every case is a real transformers dump (the committed fixtures, plus models built here from
configs with seeds the fixtures do not use) rewritten by scripts/engine_layouts.py so that no
name matches the reference: names shuffled to random tokens, or llama.cpp / vLLM /
TransformerLens names without `--map`. `divergence diff --suggest-map` then proposes pairs; each
proposal is checked against the truth the rewrite knows (which reference probe a tensor came
from). A proposal also counts as right when it names a reference probe with exactly the values
of the true one (transformers' `o_proj` and `self_attn` outputs are one tensor).

Printed per case, and summed: tensors with a true partner, pairs compared (the inferred map's
uncommented rules), right among them (precision), true partners compared with the right one
(recall), and the proposals left commented out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import engine_layouts  # noqa: E402
from dump_reference import write_npz  # noqa: E402

BIN = Path(os.environ.get("DIVERGENCE_BIN", REPO / "target/release/divergence"))
PY = sys.executable
FIX = REPO / "fixtures"
# Tensors an engine computes that no transformers probe holds (a product, a fused tensor).
NO_PARTNER = ("act_fn", "ffn_swiglu", "hook_post", "qkv_proj", "gate_up_proj")


def make_ref(tmp: Path, config: str, seed: int, dtype: str, attn: str = "eager") -> Path:
    out = tmp / f"{Path(config).stem}-s{seed}-{dtype}-{attn}.npz"
    if not out.exists():
        subprocess.run([PY, str(REPO / "scripts/dump_reference.py"), "--config", config, "--seed", str(seed),
                        "--ids", ",".join(str((i * 37 + seed) % 250 + 3) for i in range(24)),
                        "--dtype", dtype, "--attn", attn, "--out", str(out), "--quiet"], check=True)
    return out


def run_case(tmp: Path, label: str, ours_src: Path, ref: Path, engine: str, seed: int = 0):
    import torch

    entries, meta = engine_layouts.rewrite(ours_src, engine, seed=seed)
    ours = tmp / "ours.npz"
    write_npz(ours, [(n, torch.from_numpy(x)) for n, x in entries], meta)
    # The truth of each rewritten name: the probe it came from.
    truth_src = {}
    for name, x, src in engine_layouts_sources(ours_src, engine, seed):
        truth_src[name] = (src, x.size)
    ref_z = np.load(ref)
    ref_arrays = {k: ref_z[k] for k in ref_z.files if k != "__meta__"}
    sug = tmp / "sug.toml"
    subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json", "--suggest-map", str(sug)],
                   capture_output=True, text=True, timeout=300)
    text = sug.read_text()
    compared = {r["from"]: r["to"] for r in tomllib.loads(text).get("rule", [])}
    commented = text.count("# not compared")

    def twins(a: str, b: str) -> bool:
        x, y = ref_arrays.get(a), ref_arrays.get(b)
        return x is not None and y is not None and x.shape == y.shape and np.array_equal(x, y)

    with_partner = right = found = 0
    for name, (src, size) in truth_src.items():
        partner = src if (src in ref_arrays and ref_arrays[src].size == size
                          and not any(k in name for k in NO_PARTNER)) else None
        got = compared.get(name)
        ok = got is not None and partner is not None and (got == partner or twins(got, partner))
        right += ok
        if partner is not None:
            with_partner += 1
            found += ok
    return dict(case=label, with_partner=with_partner, compared=len(compared), right=right,
                recall_found=found, commented=commented)


def engine_layouts_sources(src: Path, engine: str, seed: int):
    probes, meta = engine_layouts.load(src)
    m = engine_layouts.Model(probes, meta)
    return {"vllm": lambda: engine_layouts.vllm(m, None), "llama.cpp": lambda: engine_layouts.llama_cpp(m),
            "transformer-lens": lambda: engine_layouts.transformer_lens(m),
            "shuffled": lambda: engine_layouts.shuffled(m, seed)}[engine]()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer seeds")
    args = ap.parse_args()
    seeds = [1, 2] if args.quick else [1, 2, 3, 4, 5]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        f32 = FIX / "ref/tiny-qwen3.f32.eager.npz"
        cases = []
        for s in seeds:
            cases.append((f"shuffled f32 vs f32 (seed {s})", f32, f32, "shuffled", s))
            cases.append((f"shuffled bf16 vs f32 (seed {s})", FIX / "ref/tiny-qwen3.bf16.eager.npz", f32, "shuffled", s))
            cases.append((f"shuffled bf16 sdpa vs f32 eager (seed {s})", FIX / "ref/tiny-qwen3.bf16.sdpa.npz", f32, "shuffled", s))
        cases.append(("shuffled demo (embed bug) vs demo ref", FIX / "demo/ours.npz", FIX / "demo/ref.npz", "shuffled", 7))
        for e in ("llama.cpp", "vllm", "transformer-lens"):
            cases.append((f"{e} names, no map, bf16 vs f32", FIX / "ref/tiny-qwen3.bf16.eager.npz", f32, e, 0))
        # Models the fixtures are not: other configs and init seeds, bf16 against f32.
        for cfg in ("tiny-llama.json", "tiny-qwen3.json"):
            for s in seeds:
                ref = make_ref(tmp, str(FIX / "configs" / cfg), 100 + s, "float32")
                ours = make_ref(tmp, str(FIX / "configs" / cfg), 100 + s, "bfloat16")
                cases.append((f"shuffled {cfg} init seed {100 + s}, bf16 vs f32", ours, ref, "shuffled", s))
                if "qwen3" in cfg:  # the engine rewrites need q_norm / k_norm
                    cases.append((f"llama.cpp names {cfg} init seed {100 + s}, bf16 vs f32", ours, ref, "llama.cpp", 0))
        for label, ours, ref, engine, seed in cases:
            r = run_case(tmp, label, ours, ref, engine, seed)
            # Seeds 1 and 2 (and the engine cases) are what the thresholds were tuned on; seeds
            # 3-5 of both kinds were run only after the tuning.
            r["held_out"] = ("seed 3" in label or "seed 4" in label or "seed 5" in label
                             or "seed 103" in label or "seed 104" in label or "seed 105" in label)
            rows.append(r)
            print(json.dumps(r), flush=True)
    for label, subset in (("TOTAL", rows), ("TUNED ON", [r for r in rows if not r["held_out"]]),
                          ("HELD OUT", [r for r in rows if r["held_out"]])):
        if not subset:
            continue
        tot = {k: sum(r[k] for r in subset) for k in ("with_partner", "compared", "right", "recall_found", "commented")}
        print(f"{label} cases={len(subset)} tensors with a partner={tot['with_partner']} compared={tot['compared']} "
              f"right={tot['right']} (precision {tot['right'] / max(tot['compared'], 1):.4f}) "
              f"recall {tot['recall_found'] / max(tot['with_partner'], 1):.4f} commented={tot['commented']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
