#!/usr/bin/env python3
"""Make (or check) every committed fixture of the divergence repo with real transformers code.

    python scripts/make_fixtures.py            # (re)write fixtures/
    python scripts/make_fixtures.py --check    # regenerate into a temp dir, compare with fixtures/, exit 1 on mismatch

What is made (all from fixed seeds; see docs/reference-exporter.md):
    fixtures/configs/{tiny-qwen3,qwen3-0.6b,tiny-llama}.json   hand-written configs (constants below)
    fixtures/tiny-qwen3/{config.json,model.safetensors,ids.txt} tiny Qwen3, realistic_qwen3_init(seed 0), BF16
    fixtures/ref/tiny-qwen3.{f32,bf16,f64}.eager.npz, tiny-qwen3.{f32,bf16}.sdpa.npz,
    fixtures/ref/tiny-qwen3.bf16.eager.safetensors               reference dumps (scripts/dump_reference.py)
    fixtures/ref/tiny-qwen3.{f32,bf16}.decode.npz                the same + 6 greedy decode steps (--decode 6)
    fixtures/demo/ref.npz (f32 eager), fixtures/demo/ours.npz     planted bug: embeddings * 1/sqrt(hidden)

--check compares: configs, ids.txt and model.safetensors byte for byte; fixtures/tiny-qwen3/config.json
as JSON without "transformers_version"; dumps by names, order, shapes, stored dtypes, metadata (minus the
transformers / torch versions) and values within a per-tensor relative L2 tolerance
(float64 1e-10, float32 1e-5, bfloat16/float16 2e-2; NaN/Inf positions must match), because CPU
kernels may round differently on another CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dump_reference as dr  # noqa: E402
import numpy as np  # noqa: E402
from realistic_init import realistic_qwen3_init  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEED = 0
N_IDS = 16

TINY_QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 512,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-06,
    "use_cache": True,
    "tie_word_embeddings": True,
    "rope_theta": 1000000.0,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 4,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}

# Shape of Qwen/Qwen3-0.6B's config.json (for --config runs on a GPU; random weights).
QWEN3_06B = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

# A tiny Llama for the generality test (no q_norm/k_norm, untied lm_head, head_dim = hidden/heads).
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 256,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}

CONFIGS = {"tiny-qwen3.json": TINY_QWEN3, "qwen3-0.6b.json": QWEN3_06B, "tiny-llama.json": TINY_LLAMA}

# (file under fixtures/, dtype, attn)
DUMPS = [
    ("ref/tiny-qwen3.f32.eager.npz", "float32", "eager"),
    ("ref/tiny-qwen3.bf16.eager.npz", "bfloat16", "eager"),
    ("ref/tiny-qwen3.bf16.sdpa.npz", "bfloat16", "sdpa"),
    ("ref/tiny-qwen3.f64.eager.npz", "float64", "eager"),
    ("ref/tiny-qwen3.f32.sdpa.npz", "float32", "sdpa"),
    ("ref/tiny-qwen3.bf16.eager.safetensors", "bfloat16", "eager"),
    ("demo/ref.npz", "float32", "eager"),
    # prefill + 6 teacher-forced (greedy) decode steps through transformers' KV cache
    ("ref/tiny-qwen3.f32.decode.npz", "float32", "eager", "--decode", "6"),
    ("ref/tiny-qwen3.bf16.decode.npz", "bfloat16", "eager", "--decode", "6"),
]
DEMO_OURS = "demo/ours.npz"

BYTE_EXACT = [f"configs/{n}" for n in CONFIGS] + ["tiny-qwen3/model.safetensors", "tiny-qwen3/ids.txt"]
TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 2e-2, "float16": 2e-2}


def all_files() -> list[str]:
    return sorted(BYTE_EXACT + ["tiny-qwen3/config.json"] + [d[0] for d in DUMPS] + [DEMO_OURS])


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def make_ids(seed: int, n: int, vocab: int) -> list[int]:
    rng = np.random.default_rng([seed, 0x1D5])
    return [int(x) for x in rng.integers(3, vocab, size=n)]


def make_tiny_qwen3(root: Path, log) -> dict:
    """Builds fixtures/tiny-qwen3 from fixtures/configs/tiny-qwen3.json; returns the init info."""
    import torch
    import transformers

    cfg = dr.load_config_file(root / "configs" / "tiny-qwen3.json")
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    info = realistic_qwen3_init(model, SEED, storage_dtype=torch.bfloat16)
    dr.save_model(model, root / "tiny-qwen3", "bfloat16")
    ids = make_ids(SEED, N_IDS, TINY_QWEN3["vocab_size"])
    (root / "tiny-qwen3" / "ids.txt").write_text(" ".join(map(str, ids)) + "\n")
    log(f"tiny-qwen3: k_norm max per layer {info['k_norm_max']}, q_norm max {info['q_norm_max']}")
    return info


# --------------------------------------------------------------------------------------------
# the planted bug of the demo pair


PLANTED_BUGS = {
    "embed-scale": "embeddings scaled by 1/sqrt(hidden_size) (forward hook on model.embed_tokens "
    "multiplies its output); Qwen3 does not scale embeddings",
}


def plant_bug(bug: str):
    """A `prepare_model` for dump_reference.main: plants `bug` with a forward hook (registered
    before the recorder's hooks, so the recorded output is the buggy one) and returns the
    producer fields that say so."""

    def prepare(model) -> dict:
        if bug != "embed-scale":
            raise ValueError(f"unknown planted bug {bug!r}")
        scale = 1.0 / math.sqrt(model.config.hidden_size)
        model.get_input_embeddings().register_forward_hook(lambda mod, args, out: out * scale)
        return {"name": "transformers+planted-bug", "planted_bug": PLANTED_BUGS[bug]}

    return prepare


def run_dump(root: Path, rel: str, dtype: str, attn: str, *extra: str, bug: str | None = None) -> None:
    argv = [
        "--model", str(root / "tiny-qwen3"),
        "--ids-file", str(root / "tiny-qwen3" / "ids.txt"),
        "--dtype", dtype, "--attn", attn, "--out", str(root / rel), "--quiet", *extra,
    ]
    rc = dr.main(argv, prepare_model=plant_bug(bug) if bug else None)
    if rc != 0:
        raise SystemExit(f"make_fixtures: dump_reference failed for {rel} (exit {rc})")


def generate(root: Path, log=print) -> None:
    for name, cfg in CONFIGS.items():
        write_json(root / "configs" / name, cfg)
    make_tiny_qwen3(root, log)
    for rel, dtype, attn, *extra in DUMPS:
        run_dump(root, rel, dtype, attn, *extra)
        log(f"wrote fixtures/{rel}")
    run_dump(root, DEMO_OURS, "float32", "eager", bug="embed-scale")
    log(f"wrote fixtures/{DEMO_OURS} (planted bug: embed-scale)")


# --------------------------------------------------------------------------------------------
# reading dumps back (independent of dump_reference's writer)


def read_dump(path: Path):
    """Returns (names in file order, {name: (stored dtype name, shape, float64 array)}, meta)."""
    tensors = {}
    names = []
    meta = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for f in z.files:
                a = z[f]
                if f == "__meta__":
                    meta = json.loads(a.tobytes().decode("utf-8"))
                    continue
                names.append(f)
                tensors[f] = (str(a.dtype), tuple(a.shape), a.astype(np.float64))
        with zipfile.ZipFile(path) as zf:
            if any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist()):
                raise ValueError(f"{path}: npz entries must be stored uncompressed")
    else:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            md = f.metadata() or {}
            meta = json.loads(md["divergence"]) if "divergence" in md else None
            for k in f.keys():
                t = f.get_tensor(k)
                names.append(k)
                tensors[k] = (dr.dtype_name(t.dtype), tuple(t.shape), t.double().numpy())
    return names, tensors, meta


def _strip_versions(meta):
    meta = json.loads(json.dumps(meta))
    prod = meta.get("producer") or {}
    for k in ("transformers", "torch"):
        prod.pop(k, None)
    (meta.get("model") or {}).pop("transformers_version", None)
    return meta


def compare_dumps(new: Path, old: Path, label: str | None = None) -> list[str]:
    problems = []
    label = label or str(old)
    n_names, n_t, n_meta = read_dump(new)
    o_names, o_t, o_meta = read_dump(old)
    if n_names != o_names:
        problems.append(f"{label}: probe names/order differ (regenerated {len(n_names)}, committed {len(o_names)})")
        return problems
    a, b = _strip_versions(n_meta), _strip_versions(o_meta)
    if a != b:
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        sub = [f"{k}.{j}" for k in keys if isinstance(a.get(k), dict) and isinstance(b.get(k), dict)
               for j in sorted(set(a[k]) | set(b[k])) if a[k].get(j) != b[k].get(j)]
        problems.append(f"{label}: metadata differs (ignoring transformers/torch versions): {', '.join(sub or keys)}")
    worst = 0.0
    for name in n_names:
        nd, ns, na = n_t[name]
        od, os_, oa = o_t[name]
        if nd != od or ns != os_:
            problems.append(f"{label}: {name}: stored dtype/shape {nd}{list(ns)} vs committed {od}{list(os_)}")
            continue
        fin_n, fin_o = np.isfinite(na), np.isfinite(oa)
        if not np.array_equal(fin_n, fin_o) or not np.array_equal(na[~fin_n], oa[~fin_o]):
            problems.append(f"{label}: {name}: NaN/Inf positions differ")
            continue
        orig = (o_meta or {}).get("dtypes", {}).get(name, od)
        tol = TOLERANCE.get(orig, 0.0)
        diff = np.linalg.norm(na[fin_n] - oa[fin_o])
        ref = np.linalg.norm(oa[fin_o])
        err = diff / ref if ref > 0 else diff
        worst = max(worst, err)
        if err > tol:
            problems.append(f"{label}: {name}: relative L2 error {err:.3e} > {tol:.0e} ({orig})")
    print(f"  {label}: {len(n_names)} probes, max relative L2 error {worst:.3e}")
    return problems


def check(log=print, fixtures: Path | None = None) -> int:
    fixtures = Path(fixtures) if fixtures is not None else REPO / "fixtures"
    problems = []
    with tempfile.TemporaryDirectory(prefix="divergence-fixtures-") as tmp:
        root = Path(tmp)
        generate(root, log=lambda *_: None)
        for rel in all_files():
            new, old = root / rel, fixtures / rel
            if not old.is_file():
                problems.append(f"fixtures/{rel}: missing (run `python scripts/make_fixtures.py`)")
                continue
            if rel in BYTE_EXACT:
                if new.read_bytes() != old.read_bytes():
                    problems.append(f"fixtures/{rel}: differs from the regenerated file (must be byte-identical)")
            elif rel.endswith("config.json"):
                a, b = json.loads(new.read_text()), json.loads(old.read_text())
                a.pop("transformers_version", None)
                b.pop("transformers_version", None)
                if a != b:
                    problems.append(f"fixtures/{rel}: differs from the regenerated config")
            else:
                try:
                    problems += compare_dumps(new, old, f"fixtures/{rel}")
                except Exception as e:  # noqa: BLE001
                    problems.append(f"fixtures/{rel}: cannot compare ({dr._one_line(e)})")
    check.problems = problems
    if problems:
        print("fixture check FAILED:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    log(f"fixture check ok: {len(all_files())} files match the regenerated ones")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare with fixtures/")
    p.add_argument("--out", default=str(REPO / "fixtures"), help="output directory (default: fixtures/); "
                   "with --check: the directory to check")
    args = p.parse_args(argv)
    if args.check:
        return check(fixtures=Path(args.out))
    root = Path(args.out)
    generate(root)
    total = sum((root / f).stat().st_size for f in all_files())
    print(f"fixtures: {len(all_files())} files, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
