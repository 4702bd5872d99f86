"""Shared helpers for the reference-exporter tests (real torch + transformers on CPU, tiny configs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
FIXTURES = REPO / "fixtures"
TINY = FIXTURES / "tiny-qwen3"
sys.path.insert(0, str(SCRIPTS))

import dump_reference as dr  # noqa: E402


def read_npz(path):
    """(names in file order, {name: array}, meta) read with plain numpy."""
    with np.load(path, allow_pickle=False) as z:
        files = list(z.files)
        arrays = {f: z[f] for f in files}
    meta_arr = arrays.pop("__meta__")
    assert meta_arr.dtype == np.uint8 and meta_arr.ndim == 1
    meta = json.loads(meta_arr.tobytes().decode("utf-8"))
    return [f for f in files if f != "__meta__"], arrays, meta


def tiny_ids():
    return dr.parse_ids((TINY / "ids.txt").read_text())


def dump(tmp_path, *args, name="out.npz"):
    """Runs dump_reference.main in-process; returns the output path."""
    out = tmp_path / name
    rc = dr.main([*map(str, args), "--out", str(out), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def f32_dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("f32")
    return dump(d, "--model", TINY, "--ids-file", TINY / "ids.txt", "--dtype", "float32", "--attn", "eager")


@pytest.fixture(scope="session")
def tiny_model():
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        str(TINY), dtype="float32", attn_implementation="eager", local_files_only=True
    ).eval()
