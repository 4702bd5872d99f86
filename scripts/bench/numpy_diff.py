#!/usr/bin/env python3
"""What users do today instead of `divergence diff`: a numpy script over two dumps.

Computes the same per-op metrics as `divergence diff` (accumulated in float64): L2 norm of
each side, max abs error and its index, mean abs error, relative L2 error, max relative error
(guarded near zero), cosine similarity, NaN/Inf counts, fraction outside tolerance, and the first
op over tolerance in execution order. It is the baseline of docs/performance.md, written the way a
careful user would write it (np.load on the .npz, one key at a time, vectorised float64 math).

    python scripts/bench/numpy_diff.py ours.npz ref.npz [--rtol 1e-3 --atol 1e-6]
"""
import argparse
import json
import sys

import numpy as np


def metrics(o, r, rtol, atol):
    o = o.astype(np.float64).reshape(-1)
    r = r.astype(np.float64).reshape(-1)
    fin = np.isfinite(o) & np.isfinite(r)
    nonfinite_o = int((~np.isfinite(o)).sum())
    nonfinite_r = int((~np.isfinite(r)).sum())
    of, rf = o[fin], r[fin]
    d = of - rf
    ad = np.abs(d)
    n = of.size
    ours_l2 = float(np.sqrt(np.dot(of, of)))
    ref_l2 = float(np.sqrt(np.dot(rf, rf)))
    err_l2 = float(np.sqrt(np.dot(d, d)))
    imax = int(np.argmax(ad)) if n else 0
    rms = ref_l2 / np.sqrt(n) if n else 0.0
    guard = 1e-3 * rms + np.finfo(np.float64).tiny
    return {
        "ours_l2": ours_l2,
        "ref_l2": ref_l2,
        "max_abs_err": float(ad[imax]) if n else 0.0,
        "max_abs_err_index": imax,
        "mean_abs_err": float(ad.mean()) if n else 0.0,
        "rel_l2_err": err_l2 / ref_l2 if ref_l2 > 0 else None,
        "max_rel_err": float((ad / (np.abs(rf) + guard)).max()) if n else 0.0,
        "cosine": float(np.dot(of, rf) / (ours_l2 * ref_l2)) if ours_l2 > 0 and ref_l2 > 0 else None,
        "nonfinite_ours": nonfinite_o,
        "nonfinite_ref": nonfinite_r,
        "frac_outside_tol": float((ad > atol + rtol * np.abs(rf)).mean()) if n else 0.0,
        "diverged": bool(err_l2 > atol * np.sqrt(n) + rtol * ref_l2 or nonfinite_o != nonfinite_r),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ours")
    p.add_argument("ref")
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-6)
    a = p.parse_args()
    ours, ref = np.load(a.ours), np.load(a.ref)
    if "__meta__" in ref.files:
        order = json.loads(bytes(ref["__meta__"]).decode())["order"]
    else:
        order = [k for k in ref.files if k != "__meta__"]
    first = None
    rows = []
    for name in order:
        if name not in ours.files:
            continue
        o, r = ours[name], ref[name]
        if o.size != r.size:
            rows.append({"name": name, "status": "shape_mismatch"})
            first = first or name
            continue
        m = metrics(o, r, a.rtol, a.atol)
        m["name"] = name
        rows.append(m)
        if m["diverged"] and first is None:
            first = name
    json.dump({"first_divergence": first, "ops": len(rows)}, sys.stdout)
    print()
    return 1 if first else 0


if __name__ == "__main__":
    sys.exit(main())
