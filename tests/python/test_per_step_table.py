"""The per-step lines of the table and the Markdown leave steps out past a few; the note under
them says whether those steps hold diverged ops (a newcomer read "all within tolerance or not
the first" as clean steps where every hidden step had diverged ops)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from test_prefill_vs_decode import save
from test_roundtrip_rust import BIN, pytestmark  # noqa: F401  (skip without the binary)

STEPS = 40
META = {"input_ids": [1, 2, 3], "decode_steps": STEPS, "decode_ids": list(range(4, 4 + STEPS)),
        "decode_source": "given"}


def pair(tmp_path, bad):
    rng = np.random.default_rng(4)
    ref = {"model.embed_tokens": rng.standard_normal((1, 3, 8)).astype(np.float32)}
    for s in range(1, STEPS + 1):
        ref[f"model.embed_tokens@{s}"] = rng.standard_normal((1, 1, 8)).astype(np.float32)
    ours = {k: v.copy() for k, v in ref.items()}
    for s in bad:
        ours[f"model.embed_tokens@{s}"] += 1.0
    return save(tmp_path / "ours.npz", ours, **META), save(tmp_path / "ref.npz", ref, **META)


@pytest.mark.parametrize("bad, note", [
    (range(2, STEPS + 1), "more steps, every one with diverged ops"),
    ([2], "more steps, none with a diverged op"),
])
@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_the_note_says_whether_hidden_steps_diverged(tmp_path, bad, note, fmt):
    o, r = pair(tmp_path, bad)
    out = subprocess.run([str(BIN), "diff", str(o), str(r), "--format", fmt],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert note in out.stdout, out.stdout
    assert "within tolerance or not the first" not in out.stdout
