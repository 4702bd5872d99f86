"""Dumps written by scripts/dump_reference.py round-trip through the Rust `divergence diff`.

The binary is found via $DIVERGENCE_BIN, else target/debug/divergence or target/release/divergence
in the repo; without it these tests are skipped (CI sets DIVERGENCE_BIN, so there they run).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO, TINY, dump


def _find_bin() -> Path | None:
    env = os.environ.get("DIVERGENCE_BIN")
    if env:
        return Path(env)
    for sub in ("target/debug/divergence", "target/release/divergence"):
        p = REPO / sub
        if p.is_file():
            return p
    return None


BIN = _find_bin()
pytestmark = pytest.mark.skipif(
    BIN is None or not BIN.is_file(),
    reason=f"divergence binary not found (set DIVERGENCE_BIN; looked at {BIN or 'target/{debug,release}/divergence'})",
)


def diff(a, b, *extra):
    r = subprocess.run([str(BIN), "diff", str(a), str(b), "--format", "json", *extra],
                       capture_output=True, text=True, timeout=120)
    try:
        report = json.loads(r.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"divergence diff printed no JSON (exit {r.returncode}): {r.stdout[:500]} {r.stderr[:500]}")
    return r.returncode, report


@pytest.mark.parametrize("extra", [[], ["--exact"]])
def test_bf16_npz_vs_safetensors_identical(extra):
    rc, rep = diff(FIXTURES / "ref/tiny-qwen3.bf16.eager.npz", FIXTURES / "ref/tiny-qwen3.bf16.eager.safetensors", *extra)
    assert rep["first_divergence"] is None
    assert rc == 0


def test_fresh_f32_npz_vs_safetensors_exact(tmp_path):
    args = ["--model", TINY, "--ids-file", TINY / "ids.txt", "--dtype", "float32"]
    a = dump(tmp_path, *args, name="a.npz")
    b = dump(tmp_path, *args, name="b.safetensors")
    rc, rep = diff(a, b, "--exact")
    assert (rc, rep["first_divergence"]) == (0, None)


def test_demo_pair_first_divergence_is_embed_tokens():
    rc, rep = diff(FIXTURES / "demo/ours.npz", FIXTURES / "demo/ref.npz")
    assert rc == 1
    assert rep["first_divergence"]["name"] == "model.embed_tokens"


def test_json_out_to_the_terminal_that_prints_the_report_is_refused():
    """`diff --json-out /dev/tty` where the standard output is a terminal: the JSON and the table
    would interleave on the screen (a review found it accepted; `/dev/tty` is a device of its own,
    not the terminal's, so the standard-output check did not see it). Refused, exit 2, nothing
    compared; with the standard output elsewhere this check lets it through."""
    import pty

    a = FIXTURES / "ref/tiny-qwen3.f32.eager.npz"
    args = [str(BIN), "diff", str(a), str(a), "--json-out", "/dev/tty"]
    master, slave = pty.openpty()
    try:
        r = subprocess.run(args, stdout=slave, stderr=subprocess.PIPE, text=True, timeout=60,
                           start_new_session=True)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: --json-out /dev/tty: that is the terminal, where the standard output prints the "
        "report (--format json prints the report there); give --json-out a file of its own"
    ], r.stderr
    # The standard output a pipe, and no terminal of its own (a new session): not this refusal
    # (writing to /dev/tty then fails, or lands on a terminal the table is not on).
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, start_new_session=True)
    assert "that is the terminal" not in r.stderr, r.stderr
