#!/usr/bin/env python3
"""Three-way ratios of clean decodes on the held-out models with long prompts (docs/tolerances.md,
"The rule": the f32 floor). For each model of scripts/heldout_models.py and each (prompt length,
decode steps): the transformers eager reference with its float64 truth, in f32 and bf16, and our
candle port teacher-forced from it with the torch and the fused rounding policies; each pair
diffed with the presets and with `--truth`. One line per pair: exit code, first divergence, the
largest noise ratio over all rows, token agreement. About 8 minutes on 2 cores.

    .venv/bin/python scripts/heldout_long.py --bin target/release/divergence --work /tmp/heldout-long \\
        [--models a,b,c,d] [--lengths 128:16,300:8,500:8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dump_reference as dr  # noqa: E402
from heldout_models import MODELS, make, prompt  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", default="a,b,c,d")
    ap.add_argument("--lengths", default="128:16,300:8,500:8", help="prompt:steps pairs")
    args = ap.parse_args()
    work = Path(args.work)
    for name in args.models.split(","):
        changes, seed, _, _, _, _ = MODELS[name]
        mdir, _, _ = make(name, work / name)
        for pair in args.lengths.split(","):
            t, n = map(int, pair.split(":"))
            ids = prompt(changes["vocab_size"], seed + t, t)
            for dt, torch_dt in (("bf16", "bfloat16"), ("f32", "float32")):
                ref, truth = work / "ref.npz", work / "truth.npz"
                assert dr.main(["--model", str(mdir), "--ids", ids, "--dtype", torch_dt, "--attn", "eager",
                                "--decode", str(n), "--out", str(ref), "--quiet", "--truth-out", str(truth)]) == 0
                for policy in ("torch", "fused"):
                    ours = work / "ours.npz"
                    subprocess.run([args.bin, "run", "--model", str(mdir), "--ids", ids, "--dtype", dt,
                                    "--policy", policy, "--decode-from", str(ref), "--out", str(ours)],
                                   check=True, capture_output=True)
                    for mode, extra in (("presets", []), ("truth", ["--truth", str(truth)])):
                        d = subprocess.run([args.bin, "diff", str(ours), str(ref), "--format", "json", *extra],
                                           capture_output=True, text=True)
                        r = json.loads(d.stdout)
                        f = r.get("first_divergence")
                        worst = max((o for o in r["ops"] if o.get("noise_ratio") is not None),
                                    key=lambda o: o["noise_ratio"], default=None)
                        at = (f" max_ratio {worst['noise_ratio']:.2f} at {worst['name']} "
                              f"(ours {worst['ours_truth_rel_err']:.2e}, ref {worst['ref_truth_rel_err']:.2e})"
                              if worst else "")
                        t_ = r.get("tokens") or {}
                        print(f"{name} {t}+{n} {dt} {policy} {mode}: exit {d.returncode}, "
                              f"first {f and (f['name'], f['step'])},{at} "
                              f"top1 {t_.get('top1_agree')}/{t_.get('positions')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
