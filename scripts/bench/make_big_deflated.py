#!/usr/bin/env python3
"""Write a pair of huge deflated npz dumps without holding them in memory (issue #16's memory
measurement): MEMBERS float32 members of GIB GiB each, written as numpy.savez_compressed would
(npy 1.0/2.0 header + elements, ZIP_DEFLATED, zip64 where a size passes 4 GiB), streamed
through zlib 16 KiB at a time. The values repeat a 16 KiB block of random floats (so the file
stays small: deflate finds the repeats); ours perturbs every 97th value by a relative 1e-3, so
the diff has something to find.

    python scripts/bench/make_big_deflated.py OUTDIR --members 1 --gib 2
    python scripts/bench/make_big_deflated.py OUTDIR --members 2 --gib 10   # 20 GiB, zip64
"""
import argparse
import os
import zipfile

import numpy as np

BLOCK = 4096  # float32 values per repeated block (16 KiB)


def write(path, members, gib, perturb):
    rng = np.random.default_rng(0)
    block = rng.standard_normal(BLOCK).astype(np.float32)
    if perturb:
        block[::97] *= np.float32(1.001)
    raw = block.tobytes()
    n = gib * (1 << 30) // 4
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1,
                         allowZip64=True) as z:
        for m in range(members):
            name = "model.layers.%d.mlp.npy" % m
            with z.open(name, "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(
                    f, {"descr": "<f4", "fortran_order": False, "shape": (1, n)})
                left = n * 4
                while left > 0:
                    k = min(left, len(raw))
                    f.write(raw[:k])
                    left -= k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--gib", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    for side, perturb in (("ref", False), ("ours", True)):
        write(os.path.join(a.outdir, side + ".npz"), a.members, a.gib, perturb)


if __name__ == "__main__":
    main()
