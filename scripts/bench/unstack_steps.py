"""Rewrites a decode dump stored stacked (NAME@steps) in the per-step layout (NAME@1 .. NAME@N),
the same tensors and metadata otherwise (docs/dump-format.md, "Decode steps"). For
scripts/bench/decode_diff.sh, which times `divergence diff` on both layouts of the same run.

    python3 scripts/bench/unstack_steps.py stacked.npz per_step.npz
"""

import json
import sys
import zipfile

import numpy as np

SUFFIX = "@steps"


def rewrite(src, dst, step_name=lambda base, s: f"{base}@{s}", drop_meta=()):
    """Writes the dump at `src` to `dst` with step s of each stacked NAME@steps as its own array
    `step_name(NAME, s)`, the metadata's order and dtypes to match, without the keys `drop_meta`."""
    with np.load(src) as z, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as out:
        meta = json.loads(z["__meta__"].tobytes())
        plain = [n for n in meta["order"] if not n.endswith(SUFFIX)]
        stacked = [n for n in meta["order"] if n.endswith(SUFFIX)]
        steps = meta.get("decode_steps", 0)
        order, dtypes = list(plain), {n: meta["dtypes"][n] for n in plain}
        for s in range(1, steps + 1):
            for n in stacked:
                name = step_name(n[:-len(SUFFIX)], s)
                order.append(name)
                dtypes[name] = meta["dtypes"][n]

        def put(name, arr):
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with out.open(info, "w", force_zip64=arr.nbytes + 4096 > zipfile.ZIP64_LIMIT) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)

        for n in plain:
            put(n, z[n])
        arrays = {n: z[n] for n in stacked}
        for s in range(1, steps + 1):
            for n in stacked:
                put(step_name(n[:-len(SUFFIX)], s), arrays[n][s - 1])
        meta["order"], meta["dtypes"] = order, dtypes
        for k in drop_meta:
            meta.pop(k, None)
        put("__meta__", np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))


def main():
    rewrite(sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    main()
