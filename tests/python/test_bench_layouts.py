"""The per-step layout (`x@1`, `x@2`, ..., an array per probe and step, as a hook script writes
it) gives the report of the stacked one (`x@steps`), bit for bit: `diff` compares a probe's
steps stored apart in one call, as it does a stacked member's (docs/performance.md, "Decode
steps", session 27). Checked on the committed decode references made by transformers, against
ours with every KV-cache fault, f32 and bf16. Also the benchmark converters of scripts/bench
(decode_rows.sh): `unstack_steps.py` (what makes the per-step layout here) and
`steps_as_probes.py` (each step a probe of a one-pass dump: the same rows, none a decode
step, the first divergence at the same op and step)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, SCRIPTS, TINY
from test_roundtrip_rust import BIN, pytestmark  # noqa: F401  (skip without the binary)

REF = FIXTURES / "ref" / "tiny-qwen3.f32.decode.npz"
PROBE = "model.layers.1.self_attn.k_norm"


def with_step2_changed(path):
    """The reference with step 2 of PROBE scaled by 1.5 (a copy, the same metadata)."""
    with np.load(REF) as z:
        arrays = {k: z[k] for k in z.files}
    stacked = arrays[f"{PROBE}@steps"].copy()
    stacked[1] *= 1.5
    arrays[f"{PROBE}@steps"] = stacked
    np.savez(path, **arrays)
    return path


def report(ours, ref, *flags, code=1):
    """The JSON report of `diff ours ref` without its two file names (its exit code `code`,
    or 0 or 1 when None)."""
    out = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json", *flags],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in ((0, 1) if code is None else (code,)), out.stderr
    r = json.loads(out.stdout)
    r.pop("ours"), r.pop("ref")
    return r


def convert(script, src, dst):
    subprocess.run([sys.executable, str(SCRIPTS / "bench" / script), str(src), str(dst)],
                   check=True, timeout=120)
    return dst


FAULTS = ["none", "decode-pos=3", "decode-pos-frozen", "cache-pre-rope", "cache-pre-norm",
          "cache-overwrite", "cache-overwrite=last", "decode-mask", "cache-dtype=bf16"]


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("fault", FAULTS)
def test_every_kv_cache_fault_reads_the_same_in_the_per_step_layout(tmp_path, dtype, fault):
    if dtype == "bf16" and fault.startswith("cache-dtype"):
        pytest.skip("not a lower precision than bf16 activations (refused)")
    ref = FIXTURES / "ref" / f"tiny-qwen3.{dtype}.decode.npz"
    ours = tmp_path / "ours.npz"
    inject = [] if fault == "none" else ["--inject", fault]
    subprocess.run([str(BIN), "run", "--model", str(TINY), "--ids-file", str(TINY / "ids.txt"),
                    "--dtype", dtype, "--decode-from", str(ref), *inject, "--out", str(ours)],
                   check=True, capture_output=True, timeout=120)
    o_per = convert("unstack_steps.py", ours, tmp_path / "ours.per.npz")
    r_per = convert("unstack_steps.py", ref, tmp_path / "ref.per.npz")
    for flags in ([], ["--exact"]):
        stacked = report(ours, ref, *flags, code=None)
        if not flags:  # (exact mode finds ours' last-bit differences too)
            assert (fault == "none") == (stacked["first_divergence"] is None), stacked["summary"]
        assert report(o_per, r_per, *flags, code=None) == stacked
        # One side stacked, the other per step: the same report too.
        assert report(ours, r_per, *flags, code=None) == stacked


def test_the_per_step_layout_gives_the_stacked_report(tmp_path):
    ours = with_step2_changed(tmp_path / "ours.npz")
    stacked = report(ours, REF)
    assert stacked["first_divergence"]["name"] == f"{PROBE}@2"
    per_step = report(convert("unstack_steps.py", ours, tmp_path / "ours.per.npz"),
                      convert("unstack_steps.py", REF, tmp_path / "ref.per.npz"))
    assert per_step == stacked


def test_steps_as_probes_keep_the_rows_and_the_first_divergence(tmp_path):
    ours = with_step2_changed(tmp_path / "ours.npz")
    stacked = report(ours, REF)
    probes = report(convert("steps_as_probes.py", ours, tmp_path / "ours.probes.npz"),
                    convert("steps_as_probes.py", REF, tmp_path / "ref.probes.npz"))
    assert probes["summary"]["total"] == stacked["summary"]["total"]
    assert probes["summary"]["diverged"] >= 1
    assert {row["step"] for row in probes["ops"]} == {0}
    assert probes["first_divergence"]["name"] == f"step2.{PROBE}"
    assert probes["first_divergence"]["step"] == 0
    with np.load(tmp_path / "ours.probes.npz") as z:
        meta = json.loads(z["__meta__"].tobytes())
    assert not {"decode_steps", "decode_ids", "decode_source"} & set(meta)
