"""Generate the small test dumps under this directory with real numpy / safetensors / torch.

Run from anywhere with the project venv:

    /work/main/.venv/bin/python crates/divergence-dump/tests/data/make_test_data.py

It writes the test files next to itself plus `expected.json`, which holds for every good file
its tensor names (in file order), and per tensor the shape, dtype and values as numpy/torch see
them (C order, widened to Python floats; NaN/Inf as the strings "nan"/"inf"/"-inf"), and the
metadata JSON if any. Files are tiny (a few KB). The Rust tests in ../ read them.
"""

import io
import json
import math
import os
import time
import zipfile

import numpy as np
import torch
import safetensors.torch

# Reproducible output: zipfile stamps members with the current local time, so pin the clock.
os.environ["TZ"] = "UTC"
time.tzset()
time.time = lambda: 1_700_000_000.0

HERE = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(HERE, name)


def arrays():
    """All supported dtypes plus layout corner cases, as numpy.savez keyword arguments."""
    a = {}
    a["f64"] = np.array([1.5, -2.25, 1e-300, 3.141592653589793, np.inf], dtype=np.float64)
    a["f32"] = np.array([[0.1, -0.2, 1e30], [np.nan, -np.inf, 7.0]], dtype=np.float32)
    a["f16"] = np.array([0.1, 65504.0, -6e-8, np.inf, 1.0], dtype=np.float16)
    a["i64"] = np.array([0, -7, 2**40, -(2**53), 2**53 + 2], dtype=np.int64)
    a["i32"] = np.array([[1, -2], [2**31 - 1, -(2**31)]], dtype=np.int32)
    a["i16"] = np.array([-32768, 0, 32767], dtype=np.int16)
    a["i8"] = np.array([-128, -1, 0, 127], dtype=np.int8)
    a["u8"] = np.array([0, 1, 200, 255], dtype=np.uint8)
    a["bool"] = np.array([True, False, True], dtype=np.bool_)
    # Fortran order: numpy stores columns first; values must line up with the shape after reading.
    a["fortran"] = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5)
    # Big-endian storage.
    a["be_f32"] = np.array([1.0, -2.5, 3.25], dtype=">f4")
    a["be_i64"] = np.array([1, -2, 2**40], dtype=">i8")
    a["be_f64"] = np.array([[1e100, -1e-100]], dtype=">f8")
    a["be_f16"] = np.array([0.5, -1.5], dtype=">f2")
    # 0-d and empty arrays.
    a["scalar"] = np.array(42.5, dtype=np.float32)
    a["empty"] = np.zeros((0,), dtype=np.float32)
    a["empty_3x0"] = np.zeros((3, 0), dtype=np.float64)
    # A probe-style name with dots.
    a["model.layers.0.self_attn.k_norm"] = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    return a


def enc(x):
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def describe_np(arr):
    name = {"float64": "float64", "float32": "float32", "float16": "float16", "int64": "int64",
            "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool"}[arr.dtype.name]
    flat = np.ascontiguousarray(arr).reshape(-1)
    return {"shape": list(arr.shape), "dtype": name, "values": [enc(v) for v in flat.tolist()]}


def describe_torch(t):
    name = str(t.dtype).replace("torch.", "")
    flat = t.contiguous().reshape(-1).to(torch.float64)
    return {"shape": list(t.shape), "dtype": name, "values": [enc(v) for v in flat.tolist()]}


def npy_bytes(arr, version=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=True)
    return buf.getvalue()


def main():
    expected = {}
    a = arrays()

    # numpy.savez (stored members, zip64 extra fields) and numpy.savez_compressed (deflate).
    np.savez(path("savez.npz"), **a)
    np.savez_compressed(path("savez_compressed.npz"), **a)
    desc = {k: describe_np(v) for k, v in a.items()}
    for f in ["savez.npz", "savez_compressed.npz"]:
        expected[f] = {"names": list(a), "tensors": desc, "meta": None}

    # A dump with metadata written by hand, the way docs/dump-format.md describes it.
    meta = {
        "format": "divergence-dump/1",
        "order": ["model.embed_tokens", "model.layers.0"],
        "dtypes": {"model.embed_tokens": "bfloat16", "model.layers.0": "bfloat16"},
        "input_ids": [9707, 11, 1879],
        "producer": {"name": "transformers", "torch": torch.__version__, "dtype": "bfloat16"},
        "model": {"hidden_size": 4},
        "custom_field": [1, 2],
    }
    emb = torch.tensor([[0.1, -0.2, 0.3, 4.0]], dtype=torch.bfloat16)
    layer = torch.tensor([[1.0, 2.0, -3.0, 0.007]], dtype=torch.bfloat16)
    meta_arr = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path("with_meta.npz"), **{"model.embed_tokens": emb.float().numpy(),
                                        "model.layers.0": layer.float().numpy(), "__meta__": meta_arr})
    np.savez_compressed(path("with_meta_compressed.npz"), **{"model.embed_tokens": emb.float().numpy(),
                                        "model.layers.0": layer.float().numpy(), "__meta__": meta_arr})
    t = {"model.embed_tokens": describe_np(emb.float().numpy()), "model.layers.0": describe_np(layer.float().numpy())}
    for f in ["with_meta.npz", "with_meta_compressed.npz"]:
        expected[f] = {"names": list(t), "tensors": t, "meta": meta}

    # Single .npy files: version 1.0, 2.0 and 3.0 headers, Fortran order, big-endian.
    singles = {
        "single_v1.npy": (np.arange(6, dtype=np.float32).reshape(2, 3) / 3, (1, 0)),
        "single_v2.npy": (np.array([[1, 2], [3, 4]], dtype=np.int16), (2, 0)),
        "single_v3.npy": (np.array([1.25, -0.5], dtype=np.float64), (3, 0)),
        "single_fortran.npy": (np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)), None),
        "single_be.npy": (np.array([[1, -2, 3]], dtype=">i4"), None),
        "single_scalar.npy": (np.array(True), None),
    }
    for f, (arr, version) in singles.items():
        with open(path(f), "wb") as fh:
            fh.write(npy_bytes(arr, version))
        stem = f[: -len(".npy")]
        expected[f] = {"names": [stem], "tensors": {stem: describe_np(arr)}, "meta": None}

    # An npz with version 2.0 / 3.0 members (not what savez writes, but valid npy inside a zip).
    with zipfile.ZipFile(path("versions.npz"), "w") as z:
        z.writestr("v2.npy", npy_bytes(np.array([1.0, 2.0], dtype=np.float32), (2, 0)))
        z.writestr("v3.npy", npy_bytes(np.array([3, 4], dtype=np.int64), (3, 0)))
        z.writestr("no_suffix", npy_bytes(np.array([5], dtype=np.uint8), (1, 0)))
    expected["versions.npz"] = {
        "names": ["v2", "v3", "no_suffix"],
        "tensors": {"v2": describe_np(np.array([1.0, 2.0], dtype=np.float32)),
                    "v3": describe_np(np.array([3, 4], dtype=np.int64)),
                    "no_suffix": describe_np(np.array([5], dtype=np.uint8))},
        "meta": None,
    }

    # safetensors via safetensors.torch: BF16, F16, F32, I64, with and without metadata.
    st = {
        "model.embed_tokens": torch.tensor([[0.1, -0.2], [3.0, 1e-3]], dtype=torch.bfloat16),
        "model.layers.0.self_attn.q_norm": torch.tensor([1.0, 0.5, -0.25], dtype=torch.float16),
        "lm_head": torch.tensor([[[1.5, -2.0, 1e-8]]], dtype=torch.float32),
        "input_ids": torch.tensor([[9707, 11, 1879]], dtype=torch.int64),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros((2, 0), dtype=torch.bfloat16),
    }
    st_meta = {"format": "divergence-dump/1", "order": list(st),
               "dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in st.items()}}
    safetensors.torch.save_file(st, path("st_meta.safetensors"), metadata={"divergence": json.dumps(st_meta)})
    safetensors.torch.save_file(st, path("st_nometa.safetensors"))
    # The same file under an unknown extension: the reader must sniff it.
    safetensors.torch.save_file(st, path("st_sniff.bin"))
    td = {k: describe_torch(v) for k, v in st.items()}
    # safetensors orders data by dtype alignment then name; names() follows the data order.
    header_len = int.from_bytes(open(path("st_nometa.safetensors"), "rb").read(8), "little")
    header = json.loads(open(path("st_nometa.safetensors"), "rb").read(8 + header_len)[8:])
    st_order = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    expected["st_meta.safetensors"] = {"names": st_order, "tensors": td, "meta": st_meta}
    expected["st_nometa.safetensors"] = {"names": st_order, "tensors": td, "meta": None}
    expected["st_sniff.bin"] = {"names": st_order, "tensors": td, "meta": None}

    # Zip64 end-of-central-directory records and zip64 sizes/offsets in the central directory, as
    # an archive over 4 GiB has them: lower zipfile's limits so a tiny archive needs them too.
    limits = (zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT)
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 100, 2
    try:
        z64 = {"a": np.arange(40, dtype=np.float32), "b": np.array([1, 2, 3], dtype=np.int64), "c": np.ones((2, 2))}
        np.savez(path("zip64.npz"), **z64)
        np.savez_compressed(path("zip64_compressed.npz"), **z64)
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = limits
    raw = open(path("zip64.npz"), "rb").read()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw, "zip64 end records expected"
    for f in ["zip64.npz", "zip64_compressed.npz"]:
        with np.load(path(f)) as z:
            assert all((z[k] == v).all() for k, v in z64.items())
        expected[f] = {"names": list(z64), "tensors": {k: describe_np(v) for k, v in z64.items()}, "meta": None}

    # ---- bad inputs ----
    # A pickled object array next to a good one.
    np.savez(path("pickle.npz"), good=np.array([1.0, 2.0]), a=np.array([{"x": 1}, None], dtype=object))
    # The first half of a valid npz.
    data = open(path("savez.npz"), "rb").read()
    open(path("truncated.npz"), "wb").write(data[: len(data) // 2])
    # A valid npz whose second member's npy header dict is garbled.
    np.savez(path("corrupt_header.npz"), ok=np.array([1.0], dtype=np.float32), foo=np.array([2.0], dtype=np.float32))
    data = bytearray(open(path("corrupt_header.npz"), "rb").read())
    second = data.index(b"\x93NUMPY", data.index(b"\x93NUMPY") + 1)
    at = data.index(b"'descr'", second)
    data[at:at + 7] = b"'des{r'"
    open(path("corrupt_header.npz"), "wb").write(bytes(data))
    # A member whose data is shorter than its shape needs (12 bytes for float32 [4]).
    short = npy_bytes(np.array([1, 2, 3, 4], dtype=np.float32))[:-4]
    with zipfile.ZipFile(path("short.npz"), "w") as z:
        z.writestr("y.npy", short)
    open(path("short.npy"), "wb").write(short)
    # An unsupported safetensors dtype next to a good tensor.
    safetensors.torch.save_file({"ok": torch.tensor([1.0]), "u16": torch.tensor([1, 2], dtype=torch.uint16)},
                                path("st_unsupported.safetensors"))
    # An unsupported npy dtype (complex) next to a good one.
    np.savez(path("complex.npz"), c=np.array([1 + 2j]), ok=np.array([1], dtype=np.int8))

    # Duplicate names: the same member twice, and `b.npy` next to `b` (both are tensor 'b').
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path("duplicate.npz"), "w") as z:
            z.writestr("a.npy", npy_bytes(np.array([1.0])))
            z.writestr("a.npy", npy_bytes(np.array([2.0])))
    with zipfile.ZipFile(path("duplicate_suffix.npz"), "w") as z:
        z.writestr("b.npy", npy_bytes(np.array([1.0])))
        z.writestr("b", npy_bytes(np.array([2.0])))
    # __meta__ that is not JSON.
    np.savez(path("bad_meta.npz"), x=np.array([1.0]), __meta__=np.frombuffer(b"{not json", dtype=np.uint8))
    # A deflated member whose compressed bytes were damaged (inflate error or CRC mismatch).
    np.savez_compressed(path("bad_deflate.npz"), x=np.sin(np.arange(400, dtype=np.float32)))
    data = bytearray(open(path("bad_deflate.npz"), "rb").read())
    data[len(data) // 3] ^= 0x55
    open(path("bad_deflate.npz"), "wb").write(bytes(data))

    with open(path("expected.json"), "w") as fh:
        json.dump({"numpy": np.__version__, "torch": torch.__version__, "files": expected}, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
