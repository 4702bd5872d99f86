"""The bad-input suite of scripts/bad_inputs.py (issue #16), one test per case: every damaged,
hostile or unusual input is built in a temp dir and given to the real `divergence` binary, whose
exit code, stderr, JSON report, peak RSS and wall time are checked (docs/bad-inputs.md).

The binary is $DIVERGENCE_BIN, else target/debug/divergence or target/release/divergence; without
one these tests are skipped (scripts/test.sh sets DIVERGENCE_BIN, so in CI they run). Alone:

    DIVERGENCE_BIN=target/debug/divergence .venv/bin/python -m pytest tests/python/test_bad_inputs.py -q
    .venv/bin/python scripts/bad_inputs.py -v        # the same cases, with a summary line
"""

from __future__ import annotations

import shutil

import pytest

import bad_inputs as bi  # scripts/ is on sys.path (conftest.py)

BIN = bi.find_binary()
CASES = bi.all_cases()

pytestmark = pytest.mark.skipif(
    BIN is None, reason="divergence binary not found (set DIVERGENCE_BIN or cargo build -p divergence-cli)")


def test_at_least_100_cases_in_every_class():
    classes = {c.cls for c in CASES}
    assert len(CASES) >= 100
    assert classes == {"zip_damage", "npy_damage", "st_damage", "bomb", "lying_header", "dtype",
                       "names", "meta", "semantic", "inspect", "special", "valid", "decode"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-inputs")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, root):
    out = bi.run_case(case, BIN, root)
    shutil.rmtree(root / case.id.replace("/", "__"), ignore_errors=True)
    detail = "\n".join([*out.problems, f"exit {out.rc}, signal {out.signal}, {out.rss_mb:.0f} MB, "
                        f"{out.wall_s:.2f} s", f"stderr: {out.stderr.strip()[:500]!r}",
                        f"stdout: {out.stdout.strip()[:300]!r}"])
    assert out.ok, detail
