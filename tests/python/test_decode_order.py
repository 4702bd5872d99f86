"""A recorded `order` that lists decode steps out of order is put in step order with a warning,
in the stacked layout (`<name>@steps`) as in the per-step one (docs/dump-format.md, "Decode
steps"): the rows and the verdict are the same either way."""

from __future__ import annotations

import numpy as np
import pytest

from test_prefill_vs_decode import save
from test_roundtrip_rust import diff, pytestmark  # noqa: F401  (skip without the binary)

META = {"input_ids": [1, 2, 3, 4], "decode_steps": 2, "decode_ids": [5, 6], "decode_source": "given"}


def arrays():
    rng = np.random.default_rng(3)
    a = {"model.embed_tokens": rng.standard_normal((1, 4, 8)).astype(np.float32),
         "lm_head": rng.standard_normal((1, 4, 16)).astype(np.float32)}
    for k in list(a):
        a[f"{k}@steps"] = rng.standard_normal((2, 1, 1, a[k].shape[-1])).astype(np.float32)
    return a


def out_of_order(tmp_path, a, order):
    """Ours with its metadata `order` against the same arrays in file order: the clean report,
    its rows in step order, and its warnings of steps out of order."""
    ours = save(tmp_path / "ours.npz", a, **META, order=order)
    ref = save(tmp_path / "ref.npz", a, **META)
    rc, rep = diff(ours, ref)
    assert rc == 0
    assert [o["step"] for o in rep["ops"]] == [0, 0, 1, 1, 2, 2]
    return rep, [w for w in rep["warnings"] if "lists decode steps out of order" in w]


@pytest.mark.parametrize("steps_first", [False, True])
def test_stacked_steps_listed_first_are_put_in_step_order_with_a_warning(tmp_path, steps_first):
    a = arrays()
    names = list(a)
    order = sorted(names, key=lambda n: not n.endswith("@steps")) if steps_first else names
    rep, said = out_of_order(tmp_path, a, order)
    assert len(said) == int(steps_first), rep["warnings"]
    assert all("ours.npz" in w for w in said)


def test_per_step_names_listed_out_of_order_in_a_stacked_dump_are_said_so(tmp_path):
    """The metadata of a stacked dump may list its steps by name (`x@1`, `x@2`): listed in the
    wrong order, the warning says so without naming a stacked member (a bad-input hunt: it said
    "a stacked `@steps` member before an earlier step's probe" where none was listed)."""
    a = arrays()
    base = ["model.embed_tokens", "lm_head"]
    order = base + [f"{n}@2" for n in base] + [f"{n}@1" for n in base]
    rep, said = out_of_order(tmp_path, a, order)
    assert len(said) == 1, rep["warnings"]
    assert "a later step's probe, or a stacked `@steps` member, before an earlier step's" in said[0]


def test_attention_kernel_reads_a_prefixed_dump_under_steps(tmp_path):
    """The `attention_kernel` hint (docs/hints.md) reads the layer's query, the prefill's keys and
    values and the cache's steps under ours' names: a dump whose every name carries a prefix
    (`base_model.model.`), with `--steps 2-` (the prefill's rows and step 1 not in the plan: a
    review found the hint lost there), gets it as without. Ours is transformers' f32 decode
    fixture with layer 0's `attn_out@2` scaled by 1.5: not the attention of its own inputs."""
    import json

    from conftest import FIXTURES

    ref = FIXTURES / "ref" / "tiny-qwen3.f32.decode.npz"
    prefix = "base_model.model."
    with np.load(ref) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays.pop("__meta__")))
    meta["order"] = [prefix + n for n in meta.get("order", [])]
    ours = {prefix + k: v.copy() for k, v in arrays.items()}
    out = prefix + "model.layers.0.self_attn.attn_out@steps"
    ours[out][1] *= 1.5
    ours["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = tmp_path / "ours.npz"
    np.savez(path, **ours)
    op = "model.layers.0.self_attn.attn_out@2"
    for extra in ([], ["--steps", "2-"]):
        code, r = diff(path, ref, *extra)
        assert code == 1, (extra, r.get("first_divergence"))
        assert r["first_divergence"]["name"] == op, (extra, r["first_divergence"])
        h = [h for h in r["hints"] if h["op"] == op and h["code"] == "attention_kernel"]
        assert h and "does not compute from those" in h[0]["message"], (extra, r["hints"])
        # the reference is transformers' own attention of its own tensors
        assert h[0]["evidence"]["ref_from_own_recompute"] < 1e-6, h
