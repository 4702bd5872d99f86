#!/usr/bin/env python3
"""Run a command and print the peak anonymous memory (RssAnon, KiB) of its process tree.

GNU time's "maximum resident set size" also counts the file pages a memory map has touched,
which for `divergence diff` (it maps both dumps) is the size of the files, not memory the
process allocated. This samples RssAnon of the command and its children every 2 ms.

    python scripts/bench/peak_anon.py CMD [ARGS...]    # prints one integer (KiB) on stdout
"""
import os
import subprocess
import sys
import time


def tree(pid):
    pids = [pid]
    try:
        for line in open(f"/proc/{pid}/task/{pid}/children").read().split():
            pids += tree(int(line))
    except OSError:
        pass
    return pids


def anon_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while child.poll() is None:
        # /usr/bin/time itself is tiny; its child is the measured command.
        peak = max(peak, sum(anon_kib(p) for p in tree(child.pid)))
        time.sleep(0.002)
    print(peak)


if __name__ == "__main__":
    main()
