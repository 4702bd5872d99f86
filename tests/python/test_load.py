"""Load, small (issue #16; the full run and its numbers: docs/reliability.md, "Load"): a dump of
20,000 probes, and `divergence diff --watch` while the port's dump is rewritten 60 times, in
place and by rename, with random pauses (scripts/bench/load.py). Every report printed must read
one complete version (each version marks every probe, so a mixed read fails), the last one the
last version written, and the watcher's anonymous memory flat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, SCRIPTS

BIN = os.environ.get("DIVERGENCE_BIN") or str(REPO / "target" / "debug" / "divergence")

pytestmark = pytest.mark.skipif(not os.path.exists(BIN), reason="divergence binary not built")


def test_many_probes_and_watch_under_rewrites(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench" / "load.py"), "--bin", BIN, "--work", str(tmp_path),
         "--probes", "20000", "--rewrites", "60", "--watch-probes", "8",
         "--watch-elems", "65536"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1), run.stderr
    res = json.loads(run.stdout)
    many, watch = res["many_probes"], res["watch"]
    assert many["ok"], many
    assert many["compared"] == 20000
    assert watch["half_read_or_mixed_reports"] == 0, watch
    assert watch["reports"] >= 5, watch
    assert watch["last_report_version"] == watch["last_written_version"], watch
    assert watch["ok"], watch
