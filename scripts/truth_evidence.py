#!/usr/bin/env python3
"""Evidence for the three-way rule (`divergence diff --truth`): clean pairs and every fault.

For each model x prompt length it makes, with real transformers (scripts/dump_reference.py):
the reference (bf16 or f16, eager) with its float64 truth (--truth-out), transformers' own sdpa
run and an f32 run; with `divergence run` (the candle port): the torch and fused policies and
every fault of the catalogue. Each is diffed against the reference with `--truth`; the script
records the first divergence, the largest noise ratio of the clean runs and the noise ratio at
the op where each fault enters. Results: RESULTS.json and a Markdown table (stdout), which
docs/tolerances.md ("Three-way verdicts") quotes.

    python scripts/truth_evidence.py --bin target/release/divergence --work /tmp/truth-ev \
        [--models tiny-fixture,tiny-s11,tiny-s12-plain,q06-s1] [--lengths 16,128,512]
    python scripts/truth_evidence.py --summarize /tmp/truth-ev/RESULTS.json

Models: `tiny-fixture` (fixtures/tiny-qwen3, its ids), `tiny-sN` / `tiny-sN-plain` (the tiny config,
seed N, with / without the realistic q/k-norm gains), `q06-sN` (Qwen3-0.6B-shaped, seed N).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# (fault, the op where it enters, class): gross porting bugs and precision points.
FAULTS = [
    ("embed-scale", "model.embed_tokens", "gross"),
    ("rope-theta=10000", "model.rotary_emb", "gross"),
    ("rope-interleaved", "model.layers.0.self_attn.rope_q", "gross"),
    ("skip-k-norm", "model.layers.0.self_attn.k_norm", "gross"),
    ("skip-q-norm@1", "model.layers.1.self_attn.q_norm", "gross"),
    ("attn-bias=1e30", "model.layers.0.self_attn.q_proj", "gross"),
    ("attn-bias=0.5@1", "model.layers.1.self_attn.q_proj", "gross"),
    ("transpose=model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.k_proj", "gross"),
    ("act=gelu", "model.layers.0.mlp.act_fn", "gross"),
    ("gqa-tile", "model.layers.0.self_attn.attn_out", "gross"),
    ("rms-eps=1e-3", "model.layers.0.input_layernorm", "gross"),
    ("bf16-accum", "model.layers.0.self_attn.q_proj", "precision"),
    ("bf16-variance", "model.layers.0.input_layernorm", "precision"),
    ("f16-accum", "model.layers.0.input_layernorm", "precision"),
    ("early-cast", "model.layers.0.input_layernorm", "precision"),
    ("late-rounding", "model.layers.0.input_layernorm", "precision"),
]


# What a fault becomes in f16 (largest value 65504).
F16_FAULTS = {"attn-bias=1e30": "attn-bias=6e4"}


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


DEVICE = "cpu"


def export(model_args: list[str], ids: str, dtype: str, attn: str, out: Path, truth: Path | None = None):
    if out.exists() and (truth is None or truth.exists()):
        return
    cmd = [PY, str(ROOT / "scripts/dump_reference.py"), *model_args, "--ids", ids, "--dtype", dtype,
           "--attn", attn, "--device", DEVICE, "--out", str(out), "--quiet"]
    if truth is not None:
        cmd += ["--truth-out", str(truth)]
    r = sh(cmd)
    if r.returncode != 0:
        raise SystemExit(f"export failed: {' '.join(cmd)}\n{r.stderr}")


def diff(bin_: str, ours: Path, ref: Path, truth: Path, extra: list[str] | None = None) -> dict:
    r = sh([bin_, "diff", str(ours), str(ref), "--truth", str(truth), "--format", "json", *(extra or [])])
    if r.returncode not in (0, 1):
        raise SystemExit(f"diff failed ({r.returncode}): {ours}\n{r.stderr}")
    rep = json.loads(r.stdout)
    ratios = [(o.get("noise_ratio"), o["name"]) for o in rep["ops"] if o.get("noise_ratio") is not None]
    top = max(ratios, default=(None, None))
    fd = rep["first_divergence"]
    return {
        "first": fd["name"] if fd else None,
        "exit": r.returncode,
        "max_ratio": top[0],
        "max_ratio_op": top[1],
        "ratios": {n: x for x, n in ratios},
        "no_truth": sum(1 for o in rep["ops"] if o.get("truth_problem")),
    }


def model_spec(name: str, work: Path) -> tuple[list[str], Path, str | None]:
    """(exporter args, candle model dir, fixed ids or None)."""
    if name == "tiny-fixture":
        d = ROOT / "fixtures/tiny-qwen3"
        ids = ",".join((d / "ids.txt").read_text().split())
        return ["--model", str(d)], d, ids
    parts = name.split("-")
    seed = int(parts[1].lstrip("s"))
    plain = parts[-1] == "plain"
    cfg = ROOT / ("fixtures/configs/tiny-qwen3.json" if parts[0] == "tiny" else "fixtures/configs/qwen3-0.6b.json")
    mdir = work / name / "model"
    args = ["--config", str(cfg), "--seed", str(seed), "--save-model", str(mdir)]
    if plain:
        args.append("--no-norm-gains")
    return args, mdir, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(ROOT / "target/release/divergence"))
    ap.add_argument("--work", help="work directory (models, dumps, RESULTS.json)")
    ap.add_argument("--models", default="tiny-fixture,tiny-s11,tiny-s12-plain,q06-s1")
    ap.add_argument("--lengths", default="16,128,512", help="prompt lengths for the generated models")
    ap.add_argument("--q06-lengths", default="16", help="prompt lengths for the q06 models (CPU time)")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--only", metavar="CASES", help="comma-separated faults to run (default: every case)")
    ap.add_argument("--clean", action="store_true",
                    help="delete each port's dump once it is diffed (0.6B dumps at 512 tokens are ~2 GB each)")
    ap.add_argument("--summarize", metavar="RESULTS.json", help="only print the tables of an earlier run")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: both transformers and `divergence run` run there")
    args = ap.parse_args()
    if args.summarize:
        results = json.loads(Path(args.summarize).read_text())
        print_summary(results)
        print()
        print_table(results)
        return 0
    if not args.work:
        ap.error("--work is required")
    global DEVICE
    DEVICE = args.device
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for model in args.models.split(","):
        margs, mdir, fixed_ids = model_spec(model, work)
        lengths = [None] if fixed_ids else [int(x) for x in (args.q06_lengths if model.startswith("q06") else args.lengths).split(",")]
        for length in lengths:
            if fixed_ids:
                ids = fixed_ids
            else:
                vocab = 512 if model.startswith("tiny") else 151936
                rng = random.Random(hash((model, length)) & 0xFFFF)
                ids = ",".join(str(rng.randrange(vocab)) for _ in range(length))
            n_tok = len(ids.split(","))
            for dtype in args.dtypes.split(","):
                short = {"bfloat16": "bf16", "float16": "f16"}[dtype]
                d = work / model / f"{n_tok}" / short
                d.mkdir(parents=True, exist_ok=True)
                ref, truth = d / "ref.npz", d / "truth.npz"
                export(margs, ids, dtype, "eager", ref, truth)
                # the generated model exists once the first export ran; later exports reuse it
                margs_m = ["--model", str(mdir)]

                def record(label, out, expected, kind):
                    res = diff(args.bin, out, ref, truth)
                    row = {
                        "model": model, "tokens": n_tok, "dtype": short, "case": label, "kind": kind,
                        "expected": expected, "first": res["first"], "exit": res["exit"],
                        "max_ratio": res["max_ratio"], "max_ratio_op": res["max_ratio_op"],
                        "ratio_at_expected": res["ratios"].get(expected) if expected else None,
                        "no_truth": res["no_truth"],
                    }
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    if args.clean:  # one port's dump on disk at a time
                        out.unlink(missing_ok=True)

                only = set(args.only.split(",")) if args.only else None
                if only is None:
                    export(margs_m, ids, dtype, "sdpa", d / "tf_sdpa.npz")
                    record("transformers sdpa", d / "tf_sdpa.npz", None, "clean")
                    export(margs_m, ids, "float32", "eager", d / "tf_f32.npz")
                    record("transformers f32 (more accurate)", d / "tf_f32.npz", None, "clean")
                    for policy in ("torch", "fused"):
                        out = d / f"candle_{policy}.npz"
                        run_candle(args, mdir, ids, short, policy, None, out)
                        record(f"candle {short} {policy}", out, None, "clean")
                for fault, op, kind in FAULTS:
                    if only is not None and fault not in only:
                        continue
                    # f16 cannot hold a bias of 1e30 (`divergence run` refuses it since
                    # 2026-12-05; it was added as Inf): its largest gross bias instead.
                    fault = F16_FAULTS.get(fault, fault) if short == "f16" else fault
                    out = d / f"fault_{fault.replace('=', '_').replace('@', '_at').replace('/', '_')}.npz"
                    run_candle(args, mdir, ids, short, "torch", fault, out)
                    record(fault, out, op, kind)
                # partial results survive a time limit
                (work / "RESULTS.json").write_text(json.dumps(results, indent=1))
    (work / "RESULTS.json").write_text(json.dumps(results, indent=1))
    print_summary(results)
    print()
    print_table(results)
    return 0


def run_candle(args, mdir: Path, ids: str, dtype: str, policy: str, fault: str | None, out: Path) -> None:
    if out.exists():
        return
    cmd = [args.bin, "run", "--model", str(mdir), "--ids", ids, "--dtype", dtype, "--policy", policy,
           "--device", args.device, "--out", str(out)]
    if fault:
        cmd += ["--inject", fault]
    r = sh(cmd)
    if r.returncode != 0:
        raise SystemExit(f"run failed: {' '.join(cmd)}\n{r.stderr}")


def fmt(x):
    return "-" if x is None else (f"{x:.2f}" if x < 1e4 else f"{x:.1e}")


def verdict(r) -> str:
    if r["kind"] == "clean":
        return "ok" if r["first"] is None else "flagged"
    if r["first"] == r["expected"]:
        return "caught at its op"
    if r["first"] is None:
        return "not flagged"
    return "caught elsewhere"


def print_summary(results) -> None:
    """Three compact tables (clean runs, gross faults, precision faults), as docs/tolerances.md quotes."""
    groups: dict[tuple, list] = {}
    for r in results:
        groups.setdefault((r["model"], r["tokens"], r["dtype"]), []).append(r)
    clean_cases = ["transformers sdpa", "transformers f32 (more accurate)", "candle {dt} torch", "candle {dt} fused"]
    print("Ports without a planted fault: the largest noise ratio over all ops\n")
    print("| model | tokens | dtype | transformers sdpa | transformers f32 | candle torch | candle fused | --truth says |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for (m, t, dt), rows in groups.items():
        by = {r["case"]: r for r in rows}
        cells = [by.get(c.format(dt=dt)) for c in clean_cases]
        flagged = [f"{c['case']}: `{c['first']}`" for c in cells if c is not None and c["first"] is not None]
        print(f"| {m} | {t} | {dt} | " + " | ".join(fmt(c and c["max_ratio"]) for c in cells)
              + f" | {'no divergence' if not flagged else 'flagged ' + '; '.join(flagged)} |")
    print("\nGross faults: caught at the op where they enter, and the smallest noise ratio there\n")
    print("| model | tokens | dtype | caught at their op | smallest ratio at the entry op |")
    print("| --- | ---: | --- | --- | --- |")
    for (m, t, dt), rows in groups.items():
        gross = [r for r in rows if r["kind"] == "gross"]
        caught = [r for r in gross if r["first"] == r["expected"]]
        # a row whose entry op is non-finite has no ratio (caught by the NaN/Inf rule)
        with_ratio = [r for r in caught if r["ratio_at_expected"] is not None]
        low = min(with_ratio, key=lambda r: r["ratio_at_expected"], default=None)
        lowest = f"{fmt(low['ratio_at_expected'])} (`{low['case']}`)" if low else "-"
        print(f"| {m} | {t} | {dt} | {len(caught)} of {len(gross)} | {lowest} |")
    prec = [f for f, _, k in FAULTS if k == "precision"]
    print("\nPrecision faults: noise ratio at the op where each enters (**bold**: flagged there)\n")
    print("| model | tokens | dtype | " + " | ".join(f"`{f}`" for f in prec) + " |")
    print("| --- | ---: | --- | " + " | ".join("---:" for _ in prec) + " |")
    for (m, t, dt), rows in groups.items():
        by = {r["case"]: r for r in rows}
        cells = []
        for f in prec:
            r = by.get(f)
            if r is None:
                cells.append("-")
                continue
            x = fmt(r["ratio_at_expected"])
            cells.append(f"**{x}**" if r["first"] == r["expected"] else
                         (x if r["first"] is None else f"{x} (first: `{r['first']}`)"))
        print(f"| {m} | {t} | {dt} | " + " | ".join(cells) + " |")


def print_table(results) -> None:
    print("| model | tokens | dtype | ours | first divergence (--truth) | noise ratio at entry op | max noise ratio (op) | verdict |")
    print("| --- | ---: | --- | --- | --- | ---: | --- | --- |")
    for r in results:
        first = f"`{r['first']}`" if r["first"] else "none"
        print(f"| {r['model']} | {r['tokens']} | {r['dtype']} | {r['case']} | {first} | "
              f"{fmt(r['ratio_at_expected'])} | {fmt(r['max_ratio'])} (`{r['max_ratio_op']}`) | {verdict(r)} |")


if __name__ == "__main__":
    sys.exit(main())
