"""Times `divergence diff OURS REF` with several binaries, interleaved (scripts/bench/decode_diff.sh).

For each binary and each output (JSON to a file, the table to a file): one untimed run (warms the
page cache), then RUNS timed runs, binaries interleaved within each round. Prints one Markdown
table row per binary and output: steps, rows, dump bytes (both files), median / min wall time,
bytes per second at the median, peak RSS (the largest of the timed runs, from wait4).

    python3 scripts/bench/decode_diff.py --steps 64 --runs 5 --ours o.npz --ref r.npz \
        old=/tmp/divergence-old new=/tmp/divergence-new
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def timed(cmd, out_path):
    """Runs cmd with stdout to out_path; returns (wall seconds, peak RSS in KB, exit code)."""
    with open(out_path, "wb") as out:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
    return wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--json-dir", default="/tmp")
    ap.add_argument("bins", nargs="+", help="name=path")
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bins]
    size = os.path.getsize(a.ours) + os.path.getsize(a.ref)
    outputs = {"json": ["--format", "json"], "table": ["--format", "table"]}
    times = {(n, o): [] for n, _ in bins for o in outputs}
    rss = {(n, o): 0 for n, _ in bins for o in outputs}
    codes = {}
    for rnd in range(a.runs + 1):
        for name, path in bins:
            for out, flags in outputs.items():
                dest = os.path.join(a.json_dir, f"report.{a.steps}.{name}.{out}")
                wall, peak, code = timed([path, "diff", a.ours, a.ref, *flags], dest)
                codes[(name, out)] = code
                if rnd > 0:
                    times[(name, out)].append(wall)
                    rss[(name, out)] = max(rss[(name, out)], peak)
    rows = None
    try:
        rep = json.load(open(os.path.join(a.json_dir, f"report.{a.steps}.{bins[-1][0]}.json")))
        rows = len(rep["ops"])
    except Exception as e:  # a report that cannot be read is shown as such
        print(f"report unreadable: {e}", file=sys.stderr)
    print(
        "| steps | rows | dump bytes | binary | output | exit | median wall (s) | min (s) | "
        "MB/s (median) | peak RSS (MB) |"
    )
    print("|---:|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for name, _ in bins:
        for out in outputs:
            t = times[(name, out)]
            med = statistics.median(t)
            print(
                f"| {a.steps} | {rows} | {size} | {name} | {out} | {codes[(name, out)]} | "
                f"{med:.3f} | {min(t):.3f} | {size / med / 1e6:.0f} | {rss[(name, out)] / 1024:.0f} |"
            )
    print()


if __name__ == "__main__":
    main()
