#!/usr/bin/env python3
"""Where a `divergence diff` run spends its time around the comparison, from `perf record -g`.

    perf record -F 9999 -g -o dec.data divergence diff --no-tokens --format table A B > /dev/null
    python3 scripts/bench/perf_windows.py dec.data [one.data ...]

The comparison window runs from the first to the last sample whose stack holds the comparison
(`step_sums`, `compare_step_pieces_into` or `fold_whole`). Per file it prints the window's wall
span and samples (those in the comparison kernel `chunk_acc_avx512` apart), and the samples and
wall spans before it (open, plan, checks) and after it (assemble, output, exit), with the
leading frames of the samples outside it. One sample is 1 / F seconds of one core's time
(`-F 9999`: 0.1 ms). Used for docs/performance.md, "Decode steps", session 29: a decode pair
against the one pass of the same bytes.
"""
import collections
import subprocess
import sys

IN_COMPARE = ("step_sums", "compare_step_pieces_into", "fold_whole")
KERNEL = "chunk_acc_avx512"


def samples(path):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "tid,time,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    for block in out.split("\n\n"):
        lines = [line for line in block.strip().split("\n") if line.strip()]
        if not lines:
            continue
        t = float(lines[0].split()[1].rstrip(":"))
        syms = [(line.strip().split(None, 1) + ["?"])[1] for line in lines[1:]]
        yield t, syms


def main(paths, top=12):
    for path in paths:
        s = list(samples(path))
        inside = [t for t, syms in s if any(m in x for x in syms for m in IN_COMPARE)]
        lo, hi = min(inside), max(inside)
        parts = {"before": [], "compare": [], "after": []}
        for t, syms in s:
            parts["before" if t < lo else "after" if t > hi else "compare"].append((t, syms))
        kernel = sum(1 for _, syms in parts["compare"] if syms and KERNEL in syms[0])
        span = lambda p: (max(t for t, _ in p) - min(t for t, _ in p)) * 1e3 if p else 0.0
        print(f"== {path}: {len(s)} samples")
        print(f"  compare window {span(parts['compare']):.1f} ms wall, "
              f"{len(parts['compare'])} samples ({kernel} in the kernel)")
        for name in ("before", "after"):
            p = parts[name]
            print(f"  {name}: {len(p)} samples, {span(p):.1f} ms wall")
            frames = collections.Counter()
            for _, syms in p:
                ours = [x for x in syms if "divergence" in x]
                frames[(syms[0][:48] if syms else "?", ours[0][:64] if ours else "-")] += 1
            for (leaf, frame), n in frames.most_common(top):
                print(f"    {n:5d} {leaf} <- {frame}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
