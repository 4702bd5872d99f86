#!/usr/bin/env python3
"""Export every intermediate tensor of a transformers causal LM as a divergence dump.

    python scripts/dump_reference.py --model DIR --ids 1,2,3 --dtype float32 --attn eager --out ref.npz
    python scripts/dump_reference.py --config fixtures/configs/qwen3-0.6b.json --seed 0 \
        --save-model /tmp/qwen3-rand --ids 1,2,3 --out ref.npz

Probes are module paths as `named_modules()` gives them; every module that returns a tensor is
recorded (tuples / ModelOutput keep their first tensor) in execution order (forward-hook order,
i.e. a module is recorded when it returns, so children come before their parent). Values that no
module returns are captured by wrapping transformers' own functions (never copying them):

    <attn>.rope_q / <attn>.rope_k   outputs of the modeling module's `apply_rotary_pos_emb`
    <attn>.attn_out                 output of the attention interface (eager_attention_forward or
                                    the ALL_ATTENTION_FUNCTIONS entry), reshaped to [B, T, heads*head_dim]
                                    exactly as the attention module does before o_proj
    <layer>.attn_residual           input of <layer>.post_attention_layernorm (forward pre-hook),
                                    recorded only after checking it equals layer input + self_attn output

With --decode N / --decode-ids (teacher-forced decode steps with transformers' own KV cache, a
DynamicCache): the prompt runs as one prefill forward pass (step 0, plain probe names), then N
forward passes of one token each; every probe of decode step s is named `<name>@<s>` and has
token axis length 1, and the cache probes `<attn>.cache_k@s` / `<attn>.cache_v@s` hold what the
cache holds for the new token after step s's update (recorded by wrapping the cache object's
`update`). The order is all step-0 probes, then all step-1 probes, ... In the file, each probe's
decode steps are stored stacked, as one array `<name>@steps` of shape [N, ...] (step s at index
s - 1), unless --decode-layout per-step writes one member per step (`<name>@<s>`); divergence
reads both the same way.

A module called more than once keeps its FIRST call (later calls are counted and reported on stderr
and in the metadata field "repeated_calls"). The root module (name "") is not recorded: its output is
the logits, already recorded as `lm_head`.

The dump contract is docs/dump-format.md / docs/reference-exporter.md ("divergence-dump/1").
No network access is ever attempted (HF_HUB_OFFLINE, local_files_only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import zipfile
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402

FORMAT = "divergence-dump/1"
SCRIPT = "scripts/dump_reference.py"
DTYPES = ("float32", "bfloat16", "float16", "float64")
# The short names `divergence run --dtype` takes (a newcomer's run: `--dtype bf16` was refused
# here, where the README spells it both ways).
DTYPE_ALIASES = {"f32": "float32", "fp32": "float32", "bf16": "bfloat16", "f16": "float16",
                 "fp16": "float16", "f64": "float64", "fp64": "float64"}


def dtype_arg(name: str) -> str:
    """A dtype flag's value, its short name (bf16, f32, ...) read as torch's (bfloat16, ...)."""
    return DTYPE_ALIASES.get(name.lower(), name)


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def torch_dtype(name: str):
    import torch

    return {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float64": torch.float64,
    }[name]


def dtype_name(dt) -> str:
    return str(dt).replace("torch.", "")


# --------------------------------------------------------------------------------------------
# token ids


def parse_ids(text: str, what: str = "--ids") -> list[int]:
    """Token ids as `divergence run` reads them: integers separated by commas and/or whitespace,
    optionally in one pair of brackets (a Python list, a comma after the last id allowed)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]") and len(text) >= 2:
        text = text[1:-1]
    for c in text:
        if c in "[]":
            raise UserError(f"{what}: {c!r} out of place: ids may be enclosed in one pair of brackets, [1, 2, 3]")
    items = [item.strip() for item in text.split(",")]
    # A comma after the last id ends the list; any other empty item between commas is an id
    # left out (`1,,2` was read as 1,2).
    if len(items) > 1 and items[-1] == "":
        items.pop()
    if len(items) > 1 and "" in items:
        raise UserError(f"{what}: a comma with no token id before it (an id left out?)")
    parts = [p for item in items for p in item.split()]
    if not parts:
        raise UserError(f"{what}: no token ids given")
    ids = []
    for p in parts:
        # Digits only (a review: int() also reads `+5`, `1_0` and other scripts' digits, which
        # `divergence run` refuses); a leading `-` for the message below.
        if not re.fullmatch(r"-?[0-9]+", p):
            raise UserError(f"{what}: {p!r} is not an integer token id")
        ids.append(int(p, 10))
    for i in ids:
        if i < 0:
            raise UserError(f"{what}: token id {i} is negative")
    return ids


def check_ids_in_vocab(ids: list[int], vocab: int, what: str | None = None) -> None:
    bad = [i for i in ids if i >= vocab]
    if bad:
        prefix = f"{what}: " if what else ""
        raise UserError(
            f"{prefix}token id {bad[0]} is out of range for vocab size {vocab} (max id {vocab - 1})"
        )


def parse_decode(decode: str | None, decode_ids: str | None) -> tuple[int, list[int] | None]:
    """(N, given decode ids or None) from --decode / --decode-ids; (0, None) without decode."""
    given = parse_ids(decode_ids, "--decode-ids") if decode_ids is not None else None
    n = None
    if decode is not None:
        try:
            n = int(decode.strip(), 10)
        except ValueError:
            raise UserError(f"--decode: {decode!r} is not a number of decode steps") from None
        if n < 1:
            raise UserError(f"--decode: the number of decode steps must be at least 1 (got {n})")
    if given is not None:
        if n is not None and n != len(given):
            raise UserError(f"--decode {n} does not match the {len(given)} token ids of --decode-ids")
        return len(given), given
    return (n or 0), None


# --------------------------------------------------------------------------------------------
# probe names


def _layer_index(name: str) -> int | None:
    m = re.search(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------
# model loading


def _import_transformers():
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return transformers


def load_config_file(path: Path):
    transformers = _import_transformers()
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a valid JSON config ({_one_line(e)})") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise UserError(f"{path}: config has no \"model_type\"; transformers cannot build a model from it")
    try:
        return transformers.AutoConfig.for_model(**data)
    except Exception as e:  # noqa: BLE001 - any failure is a bad config
        raise UserError(f"{path}: transformers cannot build a config from it ({_one_line(e)})") from None


# The model types whose RoPE rotates the whole head (rotate-half over head_dim): an odd
# head_dim fails their forward pass. Others rotate part of it (phi, gpt_neox) or have no RoPE
# (gpt2), and run with any head size (a review).
FULL_HEAD_ROPE = ("qwen3", "qwen2", "llama", "mistral")


def check_config(config, label) -> None:
    """What transformers' forward pass fails on with a traceback (a held-out check: an odd
    head_dim printed 77 lines from apply_rotary_pos_emb), said in one line as `divergence run`
    and `divergence inspect` say it."""
    heads = getattr(config, "num_attention_heads", None)
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None)
    if head_dim is None and heads:
        head_dim = getattr(config, "hidden_size", 0) // heads
    full_rope = getattr(config, "model_type", None) in FULL_HEAD_ROPE
    if full_rope and isinstance(head_dim, int) and head_dim % 2:
        raise UserError(f"{label}: head_dim ({head_dim}) must be even: RoPE rotates its two halves")
    if isinstance(heads, int) and isinstance(kv, int) and kv > 0 and heads % kv:
        raise UserError(
            f"{label}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv}): "
            "each key/value head serves a whole group of query heads"
        )


def load_model(args, dtype_name_: str | None = None, *, save: bool = True):
    """Returns (model, source_label, extra_producer_fields), in `dtype_name_` (default --dtype).

    Called a second time with the truth dtype for --truth-out: the same weights (the checkpoint,
    or the --config init with the same seed, rounded to the same storage dtype), run in a wider
    dtype."""
    import torch

    transformers = _import_transformers()
    dtype = torch_dtype(dtype_name_ or args.dtype)
    if args.model is not None:
        d = Path(args.model)
        if not d.exists():
            raise UserError(f"{d}: model directory not found")
        if not d.is_dir():
            raise UserError(f"{d}: not a directory (pass a local model directory with config.json)")
        if not (d / "config.json").is_file():
            raise UserError(f"{d}: no config.json in model directory")
        if not any(d.glob("*.safetensors")):
            raise UserError(f"{d}: no *.safetensors weights in model directory")
        try:
            config = transformers.AutoConfig.from_pretrained(str(d), local_files_only=True)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{d / 'config.json'}: transformers cannot build a config from it ({_one_line(e)})") from None
        check_config(config, d / "config.json")
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(d), config=config, dtype=dtype, attn_implementation=args.attn, local_files_only=True
            )
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{d}: transformers cannot load this model ({_one_line(e)})") from None
        return model, d.name, {}

    path = Path(args.config)
    config = load_config_file(path)
    check_config(config, path)
    storage = args.save_dtype or _config_dtype(config) or args.dtype
    torch.manual_seed(args.seed)
    try:
        model = transformers.AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, attn_implementation=args.attn
        )
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: transformers cannot build a causal LM from this config ({_one_line(e)})") from None
    from realistic_init import realistic_qwen3_init

    info = realistic_qwen3_init(model, args.seed, storage_dtype=torch_dtype(storage), norm_gains=args.norm_gains)
    if args.save_model and save:
        save_model(model, Path(args.save_model), storage)
    # from_pretrained(dtype=...) keeps RoPE's inv_freq buffers in float32; a plain .to(dtype)
    # would round them too (bf16 inv_freq changes cos/sin beyond position ~16), so restore them.
    rope_buffers = {
        m: m.inv_freq.detach().clone() for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)
    }
    model = model.to(dtype)
    for m, inv_freq in rope_buffers.items():
        m.inv_freq = inv_freq
    extra = {
        "init": "realistic_qwen3_init",
        "seed": args.seed,
        "weights_dtype": storage,
        "k_norm_max": {str(k): v for k, v in info["k_norm_max"].items()},
    }
    if not args.norm_gains:
        extra["norm_gains"] = False
    return model, path.name, extra


def _config_dtype(config) -> str | None:
    dt = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if dt is None:
        return None
    name = dtype_name(dt)
    return name if name in DTYPES else None


def save_model(model, out_dir: Path, storage: str) -> None:
    """config.json + model.safetensors (tied tensors stored once, like the real checkpoints)."""
    import torch
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    dt = torch_dtype(storage)
    cfg = model.config
    cfg.dtype = dt
    cfg.save_pretrained(str(out_dir))
    # Also write the keys that real checkpoints (and readers of transformers-4 configs, like our candle
    # port) use: "torch_dtype" and a top-level "rope_theta". transformers 5 reads them back unchanged.
    cfg_path = out_dir / "config.json"
    data = json.loads(cfg_path.read_text())
    data.setdefault("torch_dtype", storage)
    rope = data.get("rope_parameters") or {}
    if isinstance(rope, dict) and rope.get("rope_type", "default") == "default" and "rope_theta" in rope:
        data.setdefault("rope_theta", rope["rope_theta"])
    cfg_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    seen: set[int] = set()
    tensors = {}
    for name, t in model.state_dict().items():  # tied tensors (lm_head = embed_tokens) keep their first name
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        tensors[name] = t.detach().to("cpu", dt).contiguous()
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


# --------------------------------------------------------------------------------------------
# recording


def first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    try:
        from transformers.utils import ModelOutput
    except ImportError:  # pragma: no cover
        ModelOutput = ()  # noqa: N806
    if ModelOutput and isinstance(out, ModelOutput):
        for v in out.values():
            if isinstance(v, torch.Tensor):
                return v
        return None
    if isinstance(out, (tuple, list)):
        for v in out:
            if isinstance(v, torch.Tensor):
                return v
    return None


def parse_layers(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UserError(f"--layers: {part!r} is not a layer number or range like 0-3")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a:
            raise UserError(f"--layers: empty range {part!r}")
        out.update(range(a, b + 1))
    if not out:
        raise UserError("--layers: no layers given")
    return out


class Recorder:
    """Context manager: hooks + wrappers that record probes in execution order; restores on exit."""

    def __init__(self, model, keep=None, progress: bool = False):
        self.model = model
        self.keep = keep or (lambda name: True)
        self.progress = progress
        self.order: list[str] = []
        self.tensors: dict = {}
        self.dtypes: dict[str, str] = {}
        self.repeated: dict[str, int] = {}
        self.warnings: list[str] = []
        self.names = {id(m): n for n, m in model.named_modules()}
        self.stack: list[str] = []
        self._layer_inputs: dict[str, object] = {}
        self._attn_outputs: dict[str, object] = {}
        self._n_layers = 0
        self._exit = ExitStack()
        # decode step s records every probe as f"{name}@{s}"; "" for one-pass dumps and step 0
        self.suffix = ""

    # -- storage
    def record(self, name: str, t) -> None:
        base, name = name, name + self.suffix
        if name in self.tensors or name in self.repeated:
            self.repeated[name] = self.repeated.get(name, 1) + 1
            return
        if not self.keep(base):  # filters see the plain name: the same probes at every step
            self.tensors[name] = None  # marks "seen" so later calls count as repeats
            return
        self.tensors[name] = t.detach().to("cpu", copy=True)
        self.dtypes[name] = dtype_name(t.dtype)
        self.order.append(name)

    def result(self):
        return [(n, self.tensors[n]) for n in self.order]

    # -- hooks
    def __enter__(self):
        try:
            self._install()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc):
        self._exit.close()
        return False

    def _install(self):
        import torch

        model = self.model
        modules = list(model.named_modules())
        layer_lists = [m for _, m in modules if isinstance(m, torch.nn.ModuleList)]
        layer_ids = set()
        for ml in layer_lists:
            for child in ml:
                layer_ids.add(id(child))
        self._n_layers = max((len(ml) for ml in layer_lists), default=0)

        # attn_residual candidates: <layer>.post_attention_layernorm where <layer> has .self_attn
        post_ln: dict[int, str] = {}
        for name, m in modules:
            if hasattr(m, "self_attn") and hasattr(m, "post_attention_layernorm"):
                post_ln[id(m.post_attention_layernorm)] = name

        handles = []
        for name, m in modules:
            if name == "":
                continue

            def pre(mod, args, kwargs, name=name):
                self.stack.append(name)
                if name in self._watch_layers:
                    hs = args[0] if args else kwargs.get("hidden_states")
                    self._layer_inputs[name] = hs
                layer = post_ln.get(id(mod))
                if layer is not None:
                    hs = args[0] if args else kwargs.get("hidden_states")
                    self._record_attn_residual(layer, hs)

            def post(mod, args, out, name=name):
                if self.stack and self.stack[-1] == name:
                    self.stack.pop()
                t = first_tensor(out)
                if t is not None:
                    if name in self._attn_watch:
                        self._attn_outputs[self._attn_watch[name]] = t
                    self.record(name, t)
                if self.progress and id(mod) in layer_ids:
                    idx = name.rsplit(".", 1)[-1]
                    step = f"step {self.suffix[1:]} " if self.suffix else ""
                    print(f"\r[dump_reference] {step}layer {idx} / {self._n_layers}", end="", file=sys.stderr,
                          flush=True)

            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post))
        self._watch_layers = set(post_ln.values())
        self._attn_watch = {f"{layer}.self_attn": layer for layer in post_ln.values()}
        for h in handles:
            self._exit.callback(h.remove)
        self._exit.callback(self.stack.clear)
        self._patch_functions()

    def watch_cache(self, cache) -> None:
        """Wraps `cache.update` (the bound method, as an instance attribute; removed on exit) so that
        during a decode step (suffix set) each attention's update records `<attn>.cache_k@s` and
        `<attn>.cache_v@s`: the slot(s) of the new token(s) in the full key/value tensors that update
        returns (the last q_len slots along the sequence axis, dim -2), in the cache's dtype."""
        import torch

        orig = cache.update
        had_attr = "update" in vars(cache)

        def update(*args, **kwargs):
            keys, values = orig(*args, **kwargs)
            if self.suffix:
                new = args[0] if args else kwargs.get("key_states")
                prefix = self._current_module()
                if (
                    prefix is not None
                    and isinstance(new, torch.Tensor)
                    and isinstance(keys, torch.Tensor)
                    and isinstance(values, torch.Tensor)
                    and keys.dim() == values.dim() == 4
                ):
                    q = new.shape[-2]
                    self.record(f"{prefix}.cache_k", keys[:, :, -q:, :])
                    self.record(f"{prefix}.cache_v", values[:, :, -q:, :])
            return keys, values

        update.__wrapped__ = orig
        cache.update = update

        def restore():
            if had_attr:
                cache.update = orig
            else:
                vars(cache).pop("update", None)

        self._exit.callback(restore)

    def _record_attn_residual(self, layer: str, hs) -> None:
        import torch

        x = self._layer_inputs.pop(layer, None)
        a = self._attn_outputs.pop(layer, None)
        if not isinstance(hs, torch.Tensor):
            return
        if isinstance(x, torch.Tensor) and isinstance(a, torch.Tensor) and x.shape == hs.shape == a.shape:
            if torch.equal(x + a, hs):
                self.record(f"{layer}.attn_residual", hs)
                return
        self.warnings.append(
            f"{layer}.post_attention_layernorm input is not layer input + self_attn output; attn_residual not recorded"
        )

    def _patch_functions(self):
        import torch

        mods = {}
        for m in self.model.modules():
            pm = sys.modules.get(type(m).__module__)
            if pm is not None:
                mods[pm.__name__] = pm
        seen_ifaces = set()
        impl = getattr(self.model.config, "_attn_implementation", None) or "eager"
        for pm in mods.values():
            orig = getattr(pm, "apply_rotary_pos_emb", None)
            if callable(orig):
                self._patch_attr(pm, "apply_rotary_pos_emb", self._wrap_rope(orig))
            orig = getattr(pm, "eager_attention_forward", None)
            if callable(orig):
                self._patch_attr(pm, "eager_attention_forward", self._wrap_attn(orig))
            iface = getattr(pm, "ALL_ATTENTION_FUNCTIONS", None)
            if iface is not None and id(iface) not in seen_ifaces and impl != "eager":
                seen_ifaces.add(id(iface))
                try:
                    fn = iface[impl]
                except KeyError:
                    fn = None
                if fn is not None:
                    local = iface._local_mapping
                    missing = object()
                    prev = local.get(impl, missing)
                    iface[impl] = self._wrap_attn(fn)

                    def restore(local=local, impl=impl, prev=prev, missing=missing):
                        if prev is missing:
                            local.pop(impl, None)
                        else:
                            local[impl] = prev

                    self._exit.callback(restore)

    def _patch_attr(self, obj, attr, new):
        old = getattr(obj, attr)
        setattr(obj, attr, new)
        self._exit.callback(setattr, obj, attr, old)

    def _current_module(self) -> str | None:
        return self.stack[-1] if self.stack else None

    def _wrap_rope(self, orig):
        import torch

        def apply_rotary_pos_emb(*args, **kwargs):
            out = orig(*args, **kwargs)
            prefix = self._current_module()
            if (
                prefix is not None
                and isinstance(out, tuple)
                and len(out) == 2
                and all(isinstance(t, torch.Tensor) for t in out)
            ):
                self.record(f"{prefix}.rope_q", out[0])
                self.record(f"{prefix}.rope_k", out[1])
            return out

        apply_rotary_pos_emb.__wrapped__ = orig
        return apply_rotary_pos_emb

    def _wrap_attn(self, orig):
        import torch

        def attention_forward(module, *args, **kwargs):
            out = orig(module, *args, **kwargs)
            name = self.names.get(id(module))
            t = first_tensor(out)
            if name is not None and isinstance(t, torch.Tensor) and t.dim() == 4:
                # the attention modules do attn_output.reshape(*input_shape, -1) before o_proj;
                # interfaces return [B, T, heads, head_dim]
                self.record(f"{name}.attn_out", t.reshape(t.shape[0], t.shape[1], -1))
            return out

        attention_forward.__wrapped__ = orig
        return attention_forward


def run_dump(model, ids: list[int], *, keep=None, progress=False, device="cpu"):
    """Runs one forward pass and returns (probes [(name, tensor)], dtypes, recorder)."""
    import torch

    model.eval()
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad(), Recorder(model, keep=keep, progress=progress) as rec:
        model(input_ids=input_ids, use_cache=False)
    if progress and rec._n_layers:
        print(file=sys.stderr)
    return rec.result(), rec.dtypes, rec


def run_decode(model, ids: list[int], steps: int, decode_ids: list[int] | None = None, *, keep=None,
               progress=False, device="cpu"):
    """Prefill + `steps` teacher-forced decode steps with transformers' own KV cache.

    Step 0: the prompt, one forward pass with use_cache=True and a fresh DynamicCache(config=...)
    (what the model itself creates). Step s (1..steps): one forward pass of the single token
    decode_ids[s-1], with the same cache as past_key_values; no attention mask and no position_ids,
    so the model derives the position from the cache length (prompt_len + s - 1), as generate()
    does for batch 1. Without `decode_ids` they are the greedy tokens: decode_ids[0] = argmax of the
    prefill's last-position logits, decode_ids[s] = argmax of step s's logits (plain argmax of the
    raw logits: no logits processors, no stop at EOS).

    Returns (probes [(name, tensor)], dtypes, recorder, decode_ids)."""
    import torch
    from transformers import DynamicCache

    model.eval()
    tokens = list(decode_ids) if decode_ids is not None else []
    if decode_ids is not None and len(tokens) != steps:
        raise ValueError(f"{steps} decode steps but {len(tokens)} decode ids")
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), Recorder(model, keep=keep, progress=progress) as rec:
        rec.watch_cache(cache)
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        out = model(input_ids=input_ids, past_key_values=cache, use_cache=True)
        for s in range(1, steps + 1):
            if decode_ids is None:
                tokens.append(int(out.logits[0, -1].argmax()))
            if s == 1 and getattr(out, "past_key_values", cache) is not cache:
                rec.warnings.append("the model did not keep the DynamicCache it was given; cache probes may be missing")
            rec.suffix = f"@{s}"
            input_ids = torch.tensor([[tokens[s - 1]]], dtype=torch.long, device=device)
            out = model(input_ids=input_ids, past_key_values=cache, use_cache=True)
        rec.suffix = ""
    if progress and rec._n_layers:
        print(file=sys.stderr)
    return rec.result(), rec.dtypes, rec, tokens


# --------------------------------------------------------------------------------------------
# writing

STEP_NAME = re.compile(r"^(.+)@([1-9][0-9]{0,8})$")
STACKED = "@steps"


def stack_steps(probes, dtypes: dict):
    """The decode layout "stacked" (docs/dump-format.md, "Decode steps"): every probe recorded at
    decode steps 1..k, in order, becomes one tensor `<name>@steps` of shape [k, ...], placed after
    the step-0 probes in the order of step 1. A probe whose steps are not 1..k in order or change
    shape keeps its per-step tensors (divergence reads a mix of both layouts).

    Returns (probes, dtypes) for the file."""
    import torch

    plain, steps = [], {}
    for name, t in probes:
        m = STEP_NAME.match(name)
        if m is None:
            plain.append((name, t))
        else:
            steps.setdefault(m.group(1), []).append((int(m.group(2)), name, t))
    out, out_dtypes = list(plain), {n: dtypes[n] for n, _ in plain}
    for base, recorded in steps.items():
        numbers = [s for s, _, _ in recorded]
        shapes = {tuple(t.shape) for _, _, t in recorded}
        kinds = {dtypes[n] for _, n, _ in recorded}
        if numbers == list(range(1, len(numbers) + 1)) and len(shapes) == 1 and len(kinds) == 1:
            out.append((base + STACKED, torch.stack([t for _, _, t in recorded])))
            out_dtypes[base + STACKED] = kinds.pop()
        else:
            for _, n, t in recorded:
                out.append((n, t))
                out_dtypes[n] = dtypes[n]
    return out, out_dtypes


def build_meta(order, dtypes, ids, model, producer_extra: dict, args_dtype, attn, device) -> dict:
    import torch
    import transformers

    producer = {
        "name": "transformers",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": args_dtype,
        "attn": attn,
        "device": device,
        "script": SCRIPT,
    }
    producer.update(producer_extra)
    try:
        cfg = json.loads(model.config.to_json_string(use_diff=False))
    except Exception:  # noqa: BLE001
        cfg = json.loads(json.dumps(model.config.to_dict(), default=str))
    cfg.pop("_name_or_path", None)  # a local path: not part of the model, breaks reproducibility
    return {
        "format": FORMAT,
        "order": list(order),
        "dtypes": {n: dtypes[n] for n in order},
        "input_ids": list(ids),
        "producer": producer,
        "model": cfg,
    }


def _np_array(t):
    import torch

    if t.dtype == torch.bfloat16:
        return t.float().numpy()  # exact
    return t.numpy()


def write_npz(path: Path, probes, meta: dict) -> None:
    """Uncompressed npz: `name.npy` per probe in execution order, then `__meta__.npy` (uint8 JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        entries = [(n, _np_array(t)) for n, t in probes]
        entries.append(("__meta__", np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)))
        for name, arr in entries:
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            # zip64 once header + data could pass zipfile.ZIP64_LIMIT (2**31 - 1 bytes).
            with zf.open(info, "w", force_zip64=arr.nbytes + 4096 > zipfile.ZIP64_LIMIT) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    os.replace(tmp, path)


def write_safetensors(path: Path, probes, meta: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.contiguous() for n, t in probes}
    save_file(tensors, str(path), metadata={"divergence": json.dumps(meta)})


def write_dump(path: Path, probes, meta: dict) -> None:
    if path.suffix == ".npz":
        write_npz(path, probes, meta)
    elif path.suffix == ".safetensors":
        write_safetensors(path, probes, meta)
    else:
        raise UserError(f"{path}: output must end in .npz or .safetensors")


# --------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dump_reference.py",
        description="Dump every intermediate tensor of a transformers causal LM (divergence-dump/1).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local HF model directory (config.json + *.safetensors)")
    src.add_argument("--config", help="config.json to build a randomly initialised model from (see --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed for --config init (default 0)")
    p.add_argument("--no-norm-gains", dest="norm_gains", action="store_false",
                   help="with --config: plain q_norm/k_norm weights (~1) instead of Qwen3-0.6B-like gains up to 96.5")
    p.add_argument("--save-model", metavar="DIR", help="with --config: write config.json + model.safetensors")
    p.add_argument("--save-dtype", type=dtype_arg, choices=DTYPES, help="with --config: weight storage dtype, short names taken "
                   "(default: the config's dtype, else --dtype); weights are rounded to it before running")
    ids = p.add_mutually_exclusive_group(required=True)
    ids.add_argument("--ids", help="token ids, e.g. 1,2,3")
    ids.add_argument("--ids-file", help="file of whitespace/comma separated token ids (or a list in brackets, [1, 2, 3])")
    ids.add_argument("--prompt", help="text, tokenized with the tokenizer in --model DIR")
    p.add_argument("--dtype", type=dtype_arg, choices=DTYPES, default="float32",
                   help="the model's dtype (default: float32; bf16, f16, f32, f64 also taken)")
    p.add_argument("--attn", choices=("eager", "sdpa"), default="eager",
                   help="transformers' attention implementation (default: eager)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--out", required=True, help="output .npz or .safetensors")
    p.add_argument("--only", metavar="REGEX", help="keep only probes whose name matches (re.search)")
    p.add_argument("--layers", metavar="SPEC", help="keep probes of these layers (e.g. 0-3,7) + non-layer probes")
    p.add_argument("--decode", metavar="N", help="after the prompt (step 0), run N teacher-forced decode steps of one "
                   "token each with transformers' KV cache (DynamicCache); probes of step s are named NAME@s. "
                   "Tokens: the reference's greedy tokens, or --decode-ids")
    p.add_argument("--decode-layout", choices=("stacked", "per-step"), default="stacked",
                   help="how decode steps are stored: one array NAME@steps of shape [N, ...] per probe (stacked, "
                   "the default: fast to read) or one array NAME@s per probe and step (per-step)")
    p.add_argument("--decode-ids", metavar="IDS", help="the decode tokens, e.g. 11,22,33 (then N is their count; "
                   "with --decode, N must equal it)")
    p.add_argument("--quiet", action="store_true", help="no progress / summary on stderr")
    p.add_argument("--truth-out", metavar="FILE", help="also run the same model on the same ids in "
                   "--truth-dtype (same --attn, same device) and write that dump to FILE: the high-precision "
                   "truth for `divergence diff --truth` (docs/tolerances.md)")
    p.add_argument("--truth-dtype", type=dtype_arg, choices=("float64", "float32"), default="float64",
                   help="dtype of the --truth-out run (default float64; f64, f32 also taken)")
    return p


def make_keep(only: str | None, layers: str | None):
    rx = None
    if only is not None:
        try:
            rx = re.compile(only)
        except re.error as e:
            raise UserError(f"--only: bad regex {only!r} ({e})") from None
    lay = parse_layers(layers) if layers is not None else None

    def keep(name: str) -> bool:
        if rx is not None and not rx.search(name):
            return False
        if lay is not None:
            li = _layer_index(name)
            if li is not None and li not in lay:
                return False
        return True

    return keep


def get_ids(args) -> list[int]:
    if args.ids is not None:
        return parse_ids(args.ids, "--ids")
    if args.ids_file is not None:
        f = Path(args.ids_file)
        try:
            text = f.read_text()
        except OSError as e:
            raise UserError(f"{f}: cannot read ids file ({e.strerror})") from None
        return parse_ids(text, str(f))
    if args.model is None:
        raise UserError("--prompt needs --model DIR with a tokenizer in it")
    d = Path(args.model)
    tok_files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((d / f).is_file() for f in tok_files):
        raise UserError(f"{d}: no tokenizer files for --prompt (expected one of {', '.join(tok_files)}); use --ids")
    transformers = _import_transformers()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{args.model}: no usable tokenizer for --prompt ({_one_line(e)})") from None
    ids = tok(args.prompt)["input_ids"]
    if not ids:
        raise UserError("--prompt: tokenizer produced no tokens")
    return list(ids)


def main(argv=None, *, prepare_model=None) -> int:
    """The command line. `prepare_model(model) -> dict`, for scripts that drive the exporter
    in-process, is called once the model is loaded (before any hook of the recorder is
    registered, so forward hooks it adds run first and their effect is what gets recorded); the
    dict it returns is merged into the metadata's `producer`. scripts/make_fixtures.py plants
    the demo fixture's bug with it."""
    args = build_parser().parse_args(argv)
    try:
        return _main(args, prepare_model)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args, prepare_model=None) -> int:
    if args.model is not None and (args.save_model or args.save_dtype or not args.norm_gains):
        raise UserError("--save-model / --save-dtype / --no-norm-gains only apply to --config")
    out = Path(args.out)
    if out.suffix not in (".npz", ".safetensors"):
        raise UserError(f"{out}: output must end in .npz or .safetensors")
    truth_out = Path(args.truth_out) if args.truth_out else None
    if truth_out is not None:
        if truth_out.suffix not in (".npz", ".safetensors"):
            raise UserError(f"{truth_out}: --truth-out must end in .npz or .safetensors")
        if truth_out.resolve() == out.resolve():
            raise UserError(f"{truth_out}: --truth-out is the same file as --out")
        finer = {"float64": 3, "float32": 2, "float16": 1, "bfloat16": 0}
        if finer[args.truth_dtype] <= finer[args.dtype]:
            raise UserError(f"--truth-dtype {args.truth_dtype} is not finer than --dtype {args.dtype}: "
                            "the truth must be computed in a higher precision (float64)")
    keep = make_keep(args.only, args.layers)
    n_decode, given_decode = parse_decode(args.decode, args.decode_ids)
    if args.model is not None and not Path(args.model).is_dir():
        raise UserError(f"{args.model}: model directory not found")
    ids = get_ids(args)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available")
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    model, source, extra = load_model(args)
    vocab = model.get_input_embeddings().num_embeddings
    check_ids_in_vocab(ids, vocab)
    if given_decode is not None:
        check_ids_in_vocab(given_decode, vocab, "--decode-ids")
    model = model.to(args.device)
    extra = {"model_source": source, **extra}
    if prepare_model is not None:
        extra.update(prepare_model(model))
    progress = not args.quiet and sys.stderr.isatty()
    if not args.quiet:
        n_layers = getattr(model.config, "num_hidden_layers", "?")
        steps = f" + {n_decode} decode steps" if n_decode else ""
        print(f"running {type(model).__name__} ({n_layers} layers) on {len(ids)} tokens{steps}, {args.dtype}, "
              f"{args.attn}, {args.device}", file=sys.stderr)
    decode = None
    if n_decode:
        probes, dtypes, rec, decode_ids = run_decode(model, ids, n_decode, given_decode, keep=keep,
                                                     progress=progress, device=args.device)
        decode = (decode_ids, "given" if given_decode is not None else "greedy")
        if args.decode_layout == "stacked":
            probes, dtypes = stack_steps(probes, dtypes)
    else:
        probes, dtypes, rec = run_dump(model, ids, keep=keep, progress=progress, device=args.device)
    if not probes:
        raise UserError("no probes recorded (check --only / --layers)")
    meta = build_meta([n for n, _ in probes], dtypes, ids, model, extra, args.dtype, args.attn, args.device)
    add_decode_meta(meta, decode)
    if rec.repeated:
        meta["repeated_calls"] = dict(rec.repeated)
    if rec.warnings:
        meta["warnings"] = list(rec.warnings)
    write_dump(out, probes, meta)
    # The main dump's summary first, then the truth run's (a newcomer read the truth's line
    # first, under another count).
    if not args.quiet:
        for w in meta.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
        if meta.get("repeated_calls"):
            print(f"note: {len(meta['repeated_calls'])} module(s) ran more than once; first call kept", file=sys.stderr)
        steps = f" + {n_decode} decode steps ({decode[1]}: {decode[0]})" if decode else ""
        print(f"wrote {counted(meta['order'], n_decode)} ({len(ids)} tokens{steps}, {args.dtype}, {args.attn}) "
              f"to {out}", file=sys.stderr)
    if truth_out is not None:
        # Free the main run first: the truth model is a second full copy of the weights.
        del probes, rec, model
        import gc

        gc.collect()
        write_truth(args, ids, keep, progress, truth_out, out, decode)
    return 0


def counted(order: list[str], n_decode: int) -> str:
    """What a dump of these names holds, as `diff` counts it: one op per probe and step (a
    newcomer read "170 probes" of a decode dump against diff's "615 ops")."""
    stacked = sum(n.endswith("@steps") for n in order)
    if not stacked:
        return f"{len(order)} probes"
    return (f"{len(order) - stacked + stacked * n_decode} tensors: {len(order) - stacked} prefill "
            f"probes + {stacked} probes x {n_decode} decode steps, stacked")


def add_decode_meta(meta: dict, decode) -> None:
    """The decode fields (only for --decode dumps): decode_steps, decode_ids, decode_source."""
    if decode is None:
        return
    decode_ids, source = decode
    meta["decode_steps"] = len(decode_ids)
    meta["decode_ids"] = [int(i) for i in decode_ids]
    meta["decode_source"] = source


def write_truth(args, ids: list[int], keep, progress: bool, truth_out: Path, main_out: Path,
                decode=None) -> None:
    """--truth-out: the same model (same weights, same attention implementation, same device),
    run in --truth-dtype on the same ids, with the same hooks. No `prepare_model` hook: the truth
    is the *reference* model, whatever was planted in the main run. With decode steps, the truth
    decodes the main run's decode ids (teacher-forced, never its own greedy tokens), and its
    metadata repeats the main run's decode_ids and decode_source."""
    import time

    import torch

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model, source, extra = load_model(args, args.truth_dtype, save=False)
    model = model.to(args.device)
    # truth_of absolute: `divergence diff --truth` refuses a truth of the file given as ours
    # (ours and the reference swapped), and a relative path would be relative to here.
    extra = {"model_source": source, **extra, "truth_of": str(main_out.resolve()), "truth_for_dtype": args.dtype}
    if not args.quiet:
        print(f"truth run: {args.truth_dtype}, {args.attn}, {args.device}", file=sys.stderr)
    if decode is not None:
        probes, dtypes, rec, _ = run_decode(model, ids, len(decode[0]), decode[0], keep=keep, progress=progress,
                                            device=args.device)
        if args.decode_layout == "stacked":
            probes, dtypes = stack_steps(probes, dtypes)
    else:
        probes, dtypes, rec = run_dump(model, ids, keep=keep, progress=progress, device=args.device)
    meta = build_meta([n for n, _ in probes], dtypes, ids, model, extra, args.truth_dtype, args.attn, args.device)
    add_decode_meta(meta, decode)
    if rec.repeated:
        meta["repeated_calls"] = dict(rec.repeated)
    write_dump(truth_out, probes, meta)
    if not args.quiet:
        n_decode = len(decode[0]) if decode is not None else 0
        print(f"wrote truth dump ({counted([n for n, _ in probes], n_decode)}, {args.truth_dtype}, "
              f"{time.perf_counter() - t0:.1f} s) to {truth_out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
