"""The first divergence's position profile names token positions (docs/report-schema.md,
`positions`), also for an op that keeps the prompt's last rows only, as logits may: its rows
are the prompt's last tokens, and decode step s is the token at the prompt's length + s - 1,
not at the prefill rows' count + s - 1."""

from __future__ import annotations

import subprocess

import numpy as np

from test_prefill_vs_decode import save
from test_roundtrip_rust import BIN, diff, pytestmark  # noqa: F401  (skip without the binary)

IDS = [1, 2, 3, 4, 5]  # a 5-token prompt; the logits keep its last 2 rows


def arrays(rng, steps):
    a = {"model.embed_tokens": rng.standard_normal((1, len(IDS), 8)).astype(np.float32),
         "lm_head": rng.standard_normal((1, 2, 16)).astype(np.float32)}
    for s in range(1, steps + 1):
        a[f"model.embed_tokens@{s}"] = rng.standard_normal((1, 1, 8)).astype(np.float32)
        a[f"lm_head@{s}"] = rng.standard_normal((1, 1, 16)).astype(np.float32)
    return a


def table(ours, ref):
    r = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "table"],
                       capture_output=True, text=True, timeout=120)
    return r.stdout


def test_decode_steps_after_logits_that_keep_the_last_rows(tmp_path):
    ref = arrays(np.random.default_rng(0), 3)
    ours = {k: v.copy() for k, v in ref.items()}
    for s in (2, 3):
        ours[f"lm_head@{s}"] += 1.0
    meta = {"input_ids": IDS, "decode_steps": 3, "decode_ids": [6, 7, 8], "decode_source": "given"}
    o = save(tmp_path / "ours.npz", ours, **meta)
    r = save(tmp_path / "ref.npz", ref, **meta)
    rc, rep = diff(o, r)
    assert rc == 1
    assert rep["first_divergence"]["name"] == "lm_head@2"
    p = rep["positions"]
    assert p["steps"] == [0, 0, 1, 2, 3]
    # The prefill's 2 rows are tokens 3 and 4; step s is token 5 + s - 1.
    assert p["positions"] == [3, 4, 5, 6, 7]
    assert p["positions"][p["first_affected"]] == 6
    # The token effect numbers the same logits the same way.
    assert [q["position"] for q in rep["tokens"]["per_position"]] == p["positions"]
    assert "error from position 6 (decode step 2) on" in table(o, r)


def test_decode_steps_after_logits_that_keep_the_last_row_only(tmp_path):
    # One prefill row still opens the profile across the steps (found by a bad-input hunt: a
    # profile of one position was left out, and the steps were numbered without it).
    ref = arrays(np.random.default_rng(2), 3)
    ref["lm_head"] = ref["lm_head"][:, -1:]
    ours = {k: v.copy() for k, v in ref.items()}
    ours["lm_head@2"] += 1.0
    meta = {"input_ids": IDS, "decode_steps": 3, "decode_ids": [6, 7, 8], "decode_source": "given"}
    rc, rep = diff(save(tmp_path / "ours.npz", ours, **meta), save(tmp_path / "ref.npz", ref, **meta))
    assert rc == 1 and rep["first_divergence"]["name"] == "lm_head@2"
    p = rep["positions"]
    assert p["steps"] == [0, 1, 2, 3]
    assert p["positions"] == [4, 5, 6, 7]
    assert [q["position"] for q in rep["tokens"]["per_position"]] == p["positions"]
    # No input_ids: the prompt's length is model.embed_tokens' positions (since session 42),
    # the same numbering.
    meta = {k: v for k, v in meta.items() if k != "input_ids"}
    rc, rep = diff(save(tmp_path / "ours.npz", ours, **meta), save(tmp_path / "ref.npz", ref, **meta))
    assert rc == 1 and rep["positions"]["positions"] == [4, 5, 6, 7], rep["positions"]
    # No prompt length at all (no input_ids, no model.embed_tokens): the one row cannot be
    # numbered (it would read as a one-token prompt), so the profile is the decode steps' alone.
    for d in (ours, ref):
        for k in [k for k in d if k.startswith("model.embed_tokens")]:
            del d[k]
    rc, rep = diff(save(tmp_path / "ours.npz", ours, **meta), save(tmp_path / "ref.npz", ref, **meta))
    assert rc == 1 and rep["positions"]["steps"] == [1, 2, 3], rep["positions"]


def one_pass(tmp_path, ref, name):
    """Ours is `ref` with row 1 of `name`'s axis 1 off by 1; both record the 5-token prompt.
    Returns both paths and the JSON report (a divergence: exit 1)."""
    ours = {k: v.copy() for k, v in ref.items()}
    ours[name][:, 1] += 1.0
    o = save(tmp_path / "ours.npz", ours, input_ids=IDS)
    r = save(tmp_path / "ref.npz", ref, input_ids=IDS)
    rc, rep = diff(o, r)
    assert rc == 1
    return o, r, rep


def test_one_pass_logits_that_keep_the_last_rows(tmp_path):
    o, r, rep = one_pass(tmp_path, arrays(np.random.default_rng(1), 0), "lm_head")
    p = rep["positions"]
    assert p["pattern"] == {"kind": "last"} and p["positions"] == [3, 4]
    assert "error at the last position 4 only" in table(o, r)
    # The cause hint names the same token.
    hint = [h for h in rep["hints"] if h["code"] == "position"]
    assert hint and hint[0]["evidence"]["first_position"] == 4, rep["hints"]
    assert "the first at position 4" in hint[0]["message"]


def test_another_op_shorter_than_the_prompt_is_not_numbered_from_its_end(tmp_path):
    # Attention weights [B, H, T, T] of a port: the profile's axis 1 holds 2 heads, not the
    # prompt's last 2 tokens (a review found them named positions 3 and 4).
    name = "model.layers.0.self_attn.attn_weights"
    ref = {name: np.random.default_rng(2).standard_normal((1, 2, 5, 5)).astype(np.float32)}
    o, r, rep = one_pass(tmp_path, ref, name)
    p = rep["positions"]
    assert p["rel_err"] and "positions" not in p
    assert "error at the last position 1 only" in table(o, r)
