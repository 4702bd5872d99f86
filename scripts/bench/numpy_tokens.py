"""The token effect as a careful numpy user computes it, to time beside `divergence diff`'s
`tokens` phase (docs/performance.md, "The token-level effect", session 59).

    python scripts/bench/numpy_tokens.py OURS.npz REF.npz [--key lm_head] [--runs 5]

Loads the logits member of both dumps (widened to float64), then per position,
in float64: log-softmax of both rows, KL(P_ref || P_ours), top-1 agreement and the top-5
overlap, vectorised over a block of positions at a time (numpy's own threads, where its BLAS
has any, are not what this uses: exp, log, argpartition and sums are single-threaded). Prints
the load time once and, for each run, the time of the comparison alone, then the aggregates
(positions, top-1 agreement, mean and max KLD) so that they can be checked against the report.
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile

import numpy as np


def load(path: str, key: str) -> np.ndarray:
    # A bf16 probe is stored as float32 (exact; docs/dump-format.md): widened as it is.
    with zipfile.ZipFile(path) as z:
        raw = np.load(io.BytesIO(z.read(f"{key}.npy")))
    return raw.astype(np.float64).reshape(-1, raw.shape[-1])


def compare(o: np.ndarray, r: np.ndarray, block: int = 16):
    agree, overlap, klds = 0, 0.0, []
    for s in range(0, len(r), block):
        ob, rb = o[s:s + block], r[s:s + block]
        lo = ob - ob.max(axis=1, keepdims=True)
        lo -= np.log(np.exp(lo).sum(axis=1, keepdims=True))
        lr = rb - rb.max(axis=1, keepdims=True)
        lr -= np.log(np.exp(lr).sum(axis=1, keepdims=True))
        klds.extend(np.maximum((np.exp(lr) * (lr - lo)).sum(axis=1), 0.0))
        agree += int((ob.argmax(axis=1) == rb.argmax(axis=1)).sum())
        to = np.argpartition(-ob, 5, axis=1)[:, :5]
        tr = np.argpartition(-rb, 5, axis=1)[:, :5]
        overlap += sum(len(set(a) & set(b)) / 5 for a, b in zip(to, tr))
    return agree, overlap / len(r), float(np.mean(klds)), float(np.max(klds))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--key", default="lm_head")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    t = time.perf_counter()
    o, r = load(a.ours, a.key), load(a.ref, a.key)
    print(f"load {1e3 * (time.perf_counter() - t):.1f} ms, {r.shape[0]} positions x {r.shape[1]}")
    for _ in range(a.runs):
        t = time.perf_counter()
        out = compare(o, r)
        print(f"compare {1e3 * (time.perf_counter() - t):.1f} ms")
    agree, overlap, mean_kld, max_kld = out
    print(f"top-1 agree {agree}/{r.shape[0]}, top-5 overlap {overlap:.4f}, "
          f"mean KLD {mean_kld:.3e}, max KLD {max_kld:.3e}")


if __name__ == "__main__":
    main()
