"""make_fixtures.py --check really detects changes; committed fixtures are the documented ones."""

from __future__ import annotations

import shutil

import numpy as np

from conftest import FIXTURES, dr, read_npz

import make_fixtures as mf


def _rewrite_npz(path, fn):
    names, arrays, meta = read_npz(path)
    import torch

    probes = [(n, torch.from_numpy(fn(n, arrays[n]))) for n in names]
    dr.write_npz(path, probes, meta)


def test_check_flags_changed_and_missing_files_only(tmp_path):
    fx = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, fx)
    (fx / "tiny-qwen3/ids.txt").write_text("1 2 3\n")
    # a real change (1e-3 relative) in one probe must be flagged ...
    _rewrite_npz(fx / "ref/tiny-qwen3.f32.eager.npz",
                 lambda n, a: a * np.float32(1.001) if n.endswith("layers.2.self_attn.k_norm") else a)
    # ... a change below the f32 tolerance (1e-7 relative) must not
    _rewrite_npz(fx / "ref/tiny-qwen3.f32.sdpa.npz",
                 lambda n, a: (a.astype(np.float64) * (1 + 1e-7)).astype(np.float32) if n == "lm_head" else a)
    (fx / "demo/ours.npz").unlink()
    rc = mf.check(log=lambda *_: None, fixtures=fx)
    assert rc == 1
    problems = mf.check.problems
    assert any(p.startswith("fixtures/tiny-qwen3/ids.txt: differs") for p in problems)
    assert any("fixtures/ref/tiny-qwen3.f32.eager.npz: model.layers.2.self_attn.k_norm: relative L2 error" in p
               for p in problems)
    assert any(p.startswith("fixtures/demo/ours.npz: missing") for p in problems)
    assert len(problems) == 3, problems


def test_committed_fixture_set_and_size():
    files = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*") if p.is_file())
    assert files == mf.all_files()
    total = sum((FIXTURES / f).stat().st_size for f in files)
    # 5.5 MB before the two decode references (0.95 MB each: prefill + 6 steps)
    assert total < 7.5e6, f"fixtures are {total / 1e6:.2f} MB"
