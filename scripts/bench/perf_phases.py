"""Samples of a `perf script` dump (perf record -g, a frame-pointer build) split by phase of
`divergence diff`, as docs/results/decode-profile-2026-12-06-session51.txt shows them.

    perf record -F 15000 -g -o x.data divergence diff A B --no-tokens --format table
    perf script -i x.data > x.txt
    python3 scripts/bench/perf_phases.py x.txt            # samples by phase
    python3 scripts/bench/perf_phases.py x.txt --outer    # outside the kernel, by outermost frame

A sample is in the comparison kernel when `chunk_acc` is on its stack (its page faults
included); its phase is the first known function on the stack (open, compare, assemble,
render); rayon workers' stacks name none of them and count as `other`.
"""
import collections
import re
import sys

PHASES = [("open", "Dump::open_pair"), ("open", "open_npz"), ("assemble", "report::assemble"),
          ("render", "divergence_render"), ("plan", "plan"), ("compare", "compare_all"),
          ("compare", "compare_step_pieces_into"), ("compare", "compare_row")]
GENERIC = re.compile(r"rayon|std::|core::ops::function|__rust_begin|start_thread|thread_start|"
                     r"call_once|clone3|\[unknown\]|core::iter|alloc::vec|FnOnce|FnMut")


def stacks(path):
    stack = []
    for line in open(path):
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        m = re.match(r"\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$", line)
        if m:
            stack.append(m.group(1).split("+")[0])
    if stack:
        yield stack


def main():
    path, outer = sys.argv[1], "--outer" in sys.argv
    counts = collections.Counter()
    for stack in stacks(path):
        kernel = any("chunk_acc" in f for f in stack)
        if outer:
            if not kernel:
                named = [f for f in reversed(stack) if not GENERIC.search(f)]
                counts[" | ".join(n[:60] for n in named[:2]) or "none"] += 1
            continue
        phase = next((p for p, key in PHASES if any(key in f for f in stack)), "other")
        counts[phase + (":kernel" if kernel else "")] += 1
        if kernel:
            counts["kernel self" if "chunk_acc" in stack[0] else "kernel, under it"] += 1
    for key, n in counts.most_common(25):
        print(f"{n:7d}  {key}")


if __name__ == "__main__":
    main()
