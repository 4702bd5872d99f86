"""Rewrites a decode dump stored stacked (NAME@steps) as a one-pass dump of as many probes: step s
of NAME becomes the probe `step<s>.NAME` (its layer and op read as NAME's), the prefill's
tensors stay as they are, and the metadata loses its decode fields. The same bytes and the same
number of rows as the decode dump, with no decode step: for scripts/bench/decode_rows.sh, which
times `divergence diff` on the decode pair, this pair and a one pass over the same positions,
to tell a cost per decode step from a cost per row (docs/performance.md, "Decode steps").

    python3 scripts/bench/steps_as_probes.py stacked.npz probes.npz
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from unstack_steps import rewrite  # noqa: E402

DECODE_KEYS = ("decode_steps", "decode_ids", "decode_source")


def main():
    rewrite(sys.argv[1], sys.argv[2], step_name=lambda base, s: f"step{s}.{base}",
            drop_meta=DECODE_KEYS)


if __name__ == "__main__":
    main()
