"""Write the seed inputs of the fuzz targets into fuzz/corpus/<target>/ (docs/fuzzing.md).

Run from the repository root with the project venv:

    .venv/bin/python fuzz/make_seeds.py

Seeds are the project's own files, kept small (the fuzzer works on inputs of at most a few KB):
crates/divergence-dump/tests/data as they are, the fixtures' dumps cut down to a few members of a
few elements each (their real names and metadata kept), fixtures/configs and the tiny model's
config.json, and a few hand-made files for what those do not cover (npy headers numpy would not
write, safetensors dtypes, metadata and config fields). Files of the same name are overwritten,
others are kept: after a campaign, `cargo fuzz cmin` reduces seeds and findings together to
the committed corpus, which CI replays (crates/divergence-cli/tests/fuzz_corpus.rs).
"""

import io
import json
import os
import struct
import time
import zipfile

import numpy as np

os.environ["TZ"] = "UTC"
time.tzset()
time.time = lambda: 1_700_000_000.0  # reproducible zip timestamps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "crates/divergence-dump/tests/data")
OUT = os.path.join(ROOT, "fuzz/corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy_bytes(a):
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def npy_raw(header, data, version=1):
    """An npy file with a hand-written header dict (padded as numpy pads)."""
    text = header.encode("latin1")
    pre = 10 if version == 1 else 12
    pad = (-(pre + len(text) + 1)) % 64
    text = text + b" " * pad + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(text)) + text + data


def npz_bytes(arrays, compressed):
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(b, **arrays)
    return b.getvalue()


def small(a):
    """At most 2 elements along every axis: the names, dtypes and ranks of a real dump."""
    return np.ascontiguousarray(a[tuple(slice(0, 2) for _ in a.shape)])


def safetensors_bytes(tensors, metadata=None):
    """tensors: name -> (dtype string, shape, raw bytes), written in the given order."""
    header, blobs, at = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main():
    ext_target = {".npz": "npz", ".npy": "npy", ".safetensors": "safetensors"}
    for name in sorted(os.listdir(DATA)):
        with open(os.path.join(DATA, name), "rb") as f:
            data = f.read()
        target = ext_target.get(os.path.splitext(name)[1])
        if target:
            put(target, name, data)
        if name.endswith(".bin"):
            put("sniff", name, data)
    for name in ["savez.npz", "single_v2.npy", "st_meta.safetensors", "short.npy"]:
        with open(os.path.join(DATA, name), "rb") as f:
            put("sniff", name + ".bin", f.read())

    # The fixtures' dumps, cut down: a few probes of each kind, with the metadata JSON.
    ref = np.load(os.path.join(ROOT, "fixtures/ref/tiny-qwen3.bf16.eager.npz"))
    meta = bytes(ref["__meta__"]).decode()
    put("meta", "fixture_ref.json", meta.encode())
    names = [n for n in ref.files if n != "__meta__"]
    pick = names[:3] + [n for n in names if n.endswith(("k_norm", "rope_q"))][:2] + names[-1:]
    arrays = {n: small(ref[n]) for n in pick}
    m = json.loads(meta)
    m["order"] = pick
    m["dtypes"] = {n: m["dtypes"][n] for n in pick if n in m.get("dtypes", {})}
    m["input_ids"] = m.get("input_ids", [])[:4]
    m.pop("model", None)
    meta_small = json.dumps(m).encode()
    put("meta", "fixture_small.json", meta_small)
    with_meta = dict(arrays, __meta__=np.frombuffer(meta_small, dtype=np.uint8))
    put("npz", "fixture_small.npz", npz_bytes(with_meta, False))
    put("npz", "fixture_small_compressed.npz", npz_bytes(with_meta, True))
    put("npz", "fixture_nometa.npz", npz_bytes(arrays, False))
    put("sniff", "fixture_small.npz.bin", npz_bytes(with_meta, True))

    st = {}
    for n in pick[:4]:
        a = small(ref[n]).astype(np.float32)
        bf16 = (a.view(np.uint32) >> 16).astype("<u2").tobytes()
        st[n] = ("BF16", a.shape, bf16)
    put("safetensors", "fixture_small.safetensors",
        safetensors_bytes(st, {"divergence": meta_small.decode()}))
    put("sniff", "fixture_small.safetensors.bin",
        safetensors_bytes(st, {"divergence": meta_small.decode()}))

    # safetensors: every dtype the reader knows, an unknown one, an empty tensor.
    kinds = {
        "f64": ("F64", np.array([1.5, -2.0], "<f8")),
        "f32": ("F32", np.array([[0.5, np.nan]], "<f4")),
        "f16": ("F16", np.array([1.0, -0.0], "<f2")),
        "i64": ("I64", np.array([2**40, -3], "<i8")),
        "i32": ("I32", np.array([7], "<i4")),
        "i16": ("I16", np.array([-5, 5], "<i2")),
        "i8": ("I8", np.array([-1], "i1")),
        "u8": ("U8", np.array([255], "u1")),
        "b": ("BOOL", np.array([True, False], "?")),
        "e": ("F32", np.zeros((0, 3), "<f4")),
        "s": ("F32", np.array(3.0, "<f4")),
    }
    put("safetensors", "dtypes.safetensors",
        safetensors_bytes({k: (d, a.shape, a.tobytes()) for k, (d, a) in kinds.items()}))
    put("safetensors", "f8.safetensors", safetensors_bytes({"x": ("F8_E4M3", (2,), b"\x01\x02")}))
    put("safetensors", "empty_header.safetensors", safetensors_bytes({}))
    put("safetensors", "meta_only.safetensors",
        safetensors_bytes({}, {"divergence": '{"format":"divergence-dump/1","order":[]}'}))
    with open(os.path.join(ROOT, "fixtures/tiny-qwen3/model.safetensors"), "rb") as f:
        model = f.read()
    n = struct.unpack("<Q", model[:8])[0]
    header = json.loads(model[8 : 8 + n])
    keep = {k: v for k, v in header.items() if k.endswith("norm.weight")}
    tensors = {}
    for k, v in sorted(keep.items(), key=lambda kv: kv[1]["data_offsets"]):
        s, e = v["data_offsets"]
        tensors[k] = (v["dtype"], v["shape"], model[8 + n + s : 8 + n + e][: 2 * 4])
        tensors[k] = (v["dtype"], [4], tensors[k][2])
    put("safetensors", "model_norms.safetensors", safetensors_bytes(tensors))

    # npy: dtypes and layouts numpy writes, and headers only other writers write.
    for name, a in {
        "f16": np.array([1.0, np.inf], np.float16),
        "bool": np.array([[True], [False]]),
        "u8": np.arange(3, dtype=np.uint8),
        "i8_be": np.array([1, -2], ">i8"),
        "i16": np.array([-1, 2], "<i2"),
        "fortran3d": np.asfortranarray(np.arange(8, dtype=np.float64).reshape(2, 2, 2)),
        "empty": np.zeros((0, 2), np.float32),
        "scalar_i64": np.array(-9, np.int64),
    }.items():
        put("npy", name + ".npy", npy_bytes(a))
    f4 = np.array([1.0, 2.0], "<f4").tobytes()
    put("npy", "keys_reordered.npy", npy_raw("{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}", f4))
    put("npy", "spaces.npy", npy_raw("{ 'descr' : '<f4' , 'fortran_order' : False , 'shape' : ( 2 , ) }", f4))
    put("npy", "v2.npy", npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f4, 2))
    put("npy", "v3.npy", npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", f4, 3))
    put("npy", "bytes_descr.npy", npy_raw("{'descr': 'float32', 'fortran_order': False, 'shape': (2,), }", f4))
    put("npy", "structured.npy", npy_raw("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", f4))
    put("npy", "object.npy", npy_raw("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x04N."))
    put("npy", "huge_shape.npy", npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", f4))
    put("npy", "long_dim.npy", npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }", f4))

    # npz corner cases made with zipfile: a directory member, __meta__ compressed, zip64 forced.
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("dir/", b"")
        z.writestr("a.npy", npy_bytes(np.array([1.0], np.float32)))
        z.writestr(zipfile.ZipInfo("b.npy"), npy_bytes(np.array([2], np.int32)),
                   compress_type=zipfile.ZIP_DEFLATED)
    put("npz", "zipfile_mixed.npz", b.getvalue())

    # metadata JSON
    for name, text in {
        "minimal.json": "{}",
        "nulls.json": '{"format": null, "order": null, "dtypes": null, "input_ids": null, "producer": null}',
        "ids.json": '{"format": "divergence-dump/1", "input_ids": [0, -1, 9223372036854775807], "order": ["a", "b"]}',
        "ids_big.json": '{"input_ids": [1e30]}',
        "extra.json": '{"format": "divergence-dump/1", "future": {"x": [1, 2.5, true, null]}, "producer": {"name": "transformers", "torch": "2.11.0", "dtype": "bfloat16"}, "dtypes": {"a": "bfloat16"}, "model": {"hidden_size": 64, "rms_norm_eps": 1e-06}}',
        "escapes.json": '{"order": ["a\\nb", "\\u00e9", "\\ud83d\\ude00"], "dtypes": {"": ""}}',
    }.items():
        put("meta", name, text.encode())

    # config.json
    for p in ["fixtures/configs", "fixtures/tiny-qwen3/config.json"]:
        full = os.path.join(ROOT, p)
        files = [os.path.join(full, f) for f in sorted(os.listdir(full))] if os.path.isdir(full) else [full]
        for f in files:
            with open(f, "rb") as fh:
                put("config", p.replace("/", "_").replace("fixtures_", "") + "_" + os.path.basename(f), fh.read())
    for name, text in {
        "empty.json": "{}",
        "not_object.json": "[1, 2]",
        "rope_scaling.json": '{"model_type": "llama", "rope_scaling": {"type": "yarn", "factor": 4.0, "rope_theta": 5e5}, "rope_parameters": {"rope_theta": 1.0}}',
        "rope_parameters.json": '{"model_type": "qwen3", "rope_theta": 7, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}',
        "caps.json": '{"model_type": "mistral", "num_hidden_layers": 1e12, "hidden_size": 1048577, "head_dim": 16.0, "num_key_value_heads": null, "vocab_size": -3, "intermediate_size": "x", "layer_types": ["full_attention", 3]}',
        "types.json": '{"model_type": "qwen2", "tie_word_embeddings": "yes", "attention_bias": true, "mlp_bias": 1, "hidden_act": "gelu", "rms_norm_eps": "1e-6", "use_sliding_window": true, "num_attention_heads": 0}',
    }.items():
        put("config", name, text.encode())


if __name__ == "__main__":
    main()
