"""Rewrites a decode dump stored stacked (NAME@steps) as a one-pass dump of as many probes: step s
of NAME becomes the probe `step<s>.NAME` (its layer and op read as NAME's), the prefill's
tensors stay as they are, and the metadata loses its decode fields. The same bytes and the same
number of rows as the decode dump, with no decode step: for scripts/bench/decode_rows.sh, which
times `divergence diff` on the decode pair, this pair and a one pass over the same positions,
to tell a cost per decode step from a cost per row (docs/performance.md, "Decode steps").

    python3 scripts/bench/steps_as_probes.py stacked.npz probes.npz
"""

import json
import sys
import zipfile

import numpy as np

SUFFIX = "@steps"
DECODE_KEYS = ("decode_steps", "decode_ids", "decode_source")


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with np.load(src) as z, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as out:
        meta = json.loads(z["__meta__"].tobytes())
        plain = [n for n in meta["order"] if not n.endswith(SUFFIX)]
        stacked = [n for n in meta["order"] if n.endswith(SUFFIX)]
        steps = meta.get("decode_steps", 0)
        order, dtypes = list(plain), {n: meta["dtypes"][n] for n in plain}
        for s in range(1, steps + 1):
            for n in stacked:
                name = f"step{s}.{n[:-len(SUFFIX)]}"
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
                put(f"step{s}.{n[:-len(SUFFIX)]}", arrays[n][s - 1])
        meta["order"], meta["dtypes"] = order, dtypes
        for k in DECODE_KEYS:
            meta.pop(k, None)
        put("__meta__", np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))


if __name__ == "__main__":
    main()
