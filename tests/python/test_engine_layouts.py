"""`divergence diff --map PRESET` on dumps rewritten the way vLLM, llama.cpp and TransformerLens
would dump the same run (scripts/engine_layouts.py, from real transformers dumps): every row the
engine's dump can make equals the row of the original diff, bit for bit; planted bugs behind a
mapping are found at the right op with the rule named; bad maps are one-line errors, exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES, SCRIPTS
from test_roundtrip_rust import BIN, diff, pytestmark  # noqa: F401  (skip without the binary)

sys.path.insert(0, str(SCRIPTS))
import engine_layouts  # noqa: E402

ENGINES = ("vllm", "llama.cpp", "transformer-lens")
REF = FIXTURES / "ref" / "tiny-qwen3.f32.eager.npz"
BF16 = FIXTURES / "ref" / "tiny-qwen3.bf16.eager.npz"
DEMO_OURS = FIXTURES / "demo" / "ours.npz"

# What each engine's dump cannot hold (docs/mapping.md): these rows are `only_ref` after mapping.
NOT_DUMPED = {
    "vllm": {"model.rotary_emb", "mlp.act_fn", "model", "cache_k", "cache_v"},
    "llama.cpp": {"model.rotary_emb", "q_proj", "k_proj", "o_proj", "self_attn", "mlp.act_fn", "mlp.down_proj", "model",
                  "cache_k", "cache_v"},  # (the KV cache's slots: decode steps)
    "transformer-lens": {"model.rotary_emb", "input_layernorm", "q_norm", "k_norm", "o_proj",
                         "post_attention_layernorm", "mlp.act_fn", "mlp.down_proj", "model.norm", "model", "lm_head",
                         "cache_k", "cache_v"},
}


def write(tmp_path, src, engine, **kw):
    import torch

    from dump_reference import write_npz

    entries, meta = engine_layouts.rewrite(src, engine, **kw)
    out = tmp_path / f"{engine}.npz"
    write_npz(out, [(n, torch.from_numpy(x)) for n, x in entries], meta)
    return out


def not_dumped(engine, name):
    return any(name == s or name.endswith("." + s) for s in NOT_DUMPED[engine])


def rows(report):
    return {r["name"]: r for r in report["ops"]}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("pair", ["demo", "bf16"])
def test_the_mapped_diff_is_the_original_diff(tmp_path, engine, pair):
    ours, ref = (DEMO_OURS, FIXTURES / "demo" / "ref.npz") if pair == "demo" else (BF16, REF)
    code0, original = diff(ours, ref)
    code, mapped = diff(write(tmp_path, ours, engine), ref, "--map", engine)
    assert code == code0 == (1 if pair == "demo" else 0)
    assert mapped["first_divergence"] == original["first_divergence"]
    o, m = rows(original), rows(mapped)
    compared = 0
    for name, row in o.items():
        got = m[name]
        if not_dumped(engine, name):
            assert got["status"] == "only_ref", name
            continue
        compared += 1
        got = dict(got)
        got.pop("mapped", None)
        # local_growth divides by the largest input error: inputs the engine does not dump
        # change it; everything else is the same computation on the same values.
        for k in ("shape_ours", "local_growth"):
            got.pop(k, None)
        want = {k: v for k, v in row.items() if k not in ("shape_ours", "local_growth", "mapped")}
        assert got == want, name
    assert compared >= 40
    # Rows made by a rule say how.
    assert any("rule" in (r.get("mapped") or "") for r in mapped["ops"])


def test_a_bug_behind_a_fused_tensor_is_found_with_its_rule(tmp_path):
    code, report = diff(write(tmp_path, REF, "vllm", plant="qkv-head-swap"), REF, "--map", "vllm")
    assert code == 1
    first = report["first_divergence"]["name"]
    assert first == "model.layers.0.self_attn.q_proj"
    row = rows(report)[first]
    assert "qkv_proj.0" in row["mapped"] and "part 1 of 3" in row["mapped"]
    # k and v, cut from the same fused tensor, are fine.
    assert rows(report)["model.layers.0.self_attn.k_proj"]["status"] == "ok"


def test_a_wrong_split_is_reported_at_the_op_with_the_rule(tmp_path):
    src = write(tmp_path, REF, "vllm")
    preset = (SCRIPTS.parent / "crates/divergence-map/presets/vllm.toml").read_text()
    wrong = preset.replace('sizes = ["heads*head_dim", "kv_heads*head_dim", "kv_heads*head_dim"]',
                           'sizes = ["kv_heads*head_dim", "heads*head_dim", "kv_heads*head_dim"]')
    assert wrong != preset
    m = tmp_path / "wrong.toml"
    m.write_text(wrong)
    code, report = diff(src, REF, "--map", m)
    assert code == 1
    first = report["first_divergence"]
    assert first["name"] == "model.layers.0.self_attn.q_proj" and first["status"] == "shape_mismatch"
    assert "rule 2" in rows(report)[first["name"]]["mapped"]


def test_a_port_can_ship_its_map_in_the_metadata(tmp_path):
    src = write(tmp_path, DEMO_OURS, "llama.cpp", ship_map=True)
    code, report = diff(src, FIXTURES / "demo" / "ref.npz")
    assert code == 1 and report["first_divergence"]["name"] == "model.embed_tokens"
    assert any("preset llama.cpp" in w for w in report["warnings"])


@pytest.mark.parametrize("engine, odd", [
    # llama.cpp's v with one head of three tokens: 96 values, not rows of kv_heads * head_dim.
    ("llama.cpp", ("Vcur-0", lambda x: x[:3, :1], "model.layers.0.self_attn.v_proj",
                   "cannot infer axis 0")),
    # A TransformerLens cache without its batch axis: the rule's permute has an axis too many.
    ("transformer-lens", ("blocks.1.attn.hook_rot_q", lambda x: x[0],
                          "model.layers.1.self_attn.rope_q", "axis 3 out of range")),
])
def test_a_tensor_a_preset_does_not_fit_is_a_row_not_an_error(tmp_path, engine, odd):
    """One odd tensor in an engine's dump (a preset's rule that does not fit it) makes its row a
    shape mismatch, saying which rule and why (a divergence: never a silent pass), and the rest
    of the report stands."""
    import numpy as np
    import torch

    from dump_reference import write_npz

    name, change, target, why = odd
    entries, meta = engine_layouts.rewrite(DEMO_OURS, engine)
    assert name in dict(entries), sorted(dict(entries))
    entries = [(n, np.ascontiguousarray(change(x)) if n == name else x) for n, x in entries]
    src = tmp_path / f"{engine}-odd.npz"
    write_npz(src, [(n, torch.from_numpy(x)) for n, x in entries], meta)
    code, report = diff(src, FIXTURES / "demo" / "ref.npz", "--map", engine)
    assert code == 1 and report["first_divergence"]["name"] == "model.embed_tokens"
    row = rows(report)[target]
    assert row["status"] == "shape_mismatch", row
    assert name in row["reason"] and why in row["reason"] and "rule" in row["reason"], row["reason"]
    assert any(f"`{name}` did not fit its rule" in w for w in report["warnings"]), report["warnings"]
    assert report["summary"]["shape_mismatch"] == 1 and report["summary"]["unreadable"] == 0
    # Against the run it was made from, the odd tensor is the one divergence: exit 1, not 0.
    code, report = diff(src, DEMO_OURS, "--map", engine)
    assert code == 1 and report["first_divergence"]["name"] == target, report["first_divergence"]


@pytest.mark.parametrize("toml, needle", [
    ('[[rule]]\nfrom = "model.layers.{L}.self_attn.qkv_proj.0"\nto = ["q{L}", "k{L}", "v{L}"]\n'
     'split = { axis = -1, sizes = ["heads*head_dim", "heads*head_dim", "heads*head_dim"] }\n',
     "do not add up"),
    ('[[rule]]\nfrom = "model.layers.{L}.mlp"\nto = "model.norm"\n', "is made twice"),
    ('[[rule]]\nfrom = "Qcur-{L}"\nto = "x{L}"\n', "matches no tensor"),
    ('[[rule]]\nfrom = "model.embed_tokens"\nto = "model.embed_tokns"\n',
     '`to = "model.embed_tokns"` names no tensor of'),
    ('[[rule]]\nfrom = "a"\nto = "b"\nsplitt = 1\n', "unknown field `splitt`"),
    ('[[rule]]\nfrom = "a{L}"\nto = "b{M}"\n', "is not captured"),
])
def test_bad_maps_are_one_line_errors(tmp_path, toml, needle):
    src = write(tmp_path, REF, "vllm")
    m = tmp_path / "bad.toml"
    m.write_text(toml)
    r = subprocess.run([str(BIN), "diff", str(src), str(REF), "--map", str(m)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "bad.toml" in lines[0], r.stderr


@pytest.mark.parametrize("engine, collide", [("vllm", False), ("transformer-lens", False), ("vllm", True)])
def test_both_files_in_the_engines_layout_are_refused(tmp_path, engine, collide):
    """The map renames our dump only: a reference in the engine's layout too is refused, exit 2
    (two vLLM dumps compared the 22 of 136 names vLLM shares with transformers, exit 0), also
    where the map cannot be resolved against the reference (`collide`: a tensor under a name a
    rule makes too; a second hunt passed it)."""
    import numpy as np

    ours = write(tmp_path, BF16, engine)
    (tmp_path / "ref").mkdir()
    ref = write(tmp_path / "ref", REF, engine)
    if collide:
        z = np.load(ref)
        d = {k: z[k] for k in z.files}
        meta = json.loads(d["__meta__"].tobytes())
        d["model.layers.0.self_attn.q_proj"] = np.ascontiguousarray(d["model.layers.0.self_attn.qkv_proj.0"][..., :128])
        meta["order"].append("model.layers.0.self_attn.q_proj")
        d["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(ref, **d)
    r = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--map", engine,
                        "--model", str(FIXTURES / "tiny-qwen3")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is in the map's layout" in lines[0], r.stderr


def test_an_unknown_preset_or_missing_file_is_named(tmp_path):
    r = subprocess.run([str(BIN), "diff", str(REF), str(REF), "--map", "sglang"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--map sglang: not a preset (vllm, llama.cpp, transformer-lens)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("engine, extra", [
    ("vllm", ["--truth", str(FIXTURES / "ref" / "tiny-qwen3.f64.eager.npz")]),
    ("transformer-lens", ["--exact"]),
    ("llama.cpp", ["--rtol", "1e-2"]),
])
def test_maps_work_with_truth_and_exact(tmp_path, engine, extra):
    ours, ref = BF16, FIXTURES / "ref" / "tiny-qwen3.bf16.sdpa.npz"
    code0, original = diff(ours, ref, *extra)
    code, mapped = diff(write(tmp_path, ours, engine), ref, "--map", engine, *extra)
    assert code == code0
    assert mapped["first_divergence"] == original["first_divergence"]
    o, m = rows(original), rows(mapped)
    compared = 0
    for name, row in o.items():
        if not_dumped(engine, name):
            continue
        compared += 1
        skip = ("shape_ours", "local_growth", "mapped")
        assert {k: v for k, v in m[name].items() if k not in skip} == \
            {k: v for k, v in row.items() if k not in skip}, name
    assert compared >= 40


def test_every_transform_end_to_end(tmp_path):
    """A made-up engine that uses every step of a map: tensor-parallel shards (concat and a
    row-parallel partial sum), stacked outputs (select), heads-first with a transposed matrix
    (transpose, permute), extra axes (squeeze, unsqueeze, reshape): under its map, every row
    equals the original diff's."""
    import numpy as np
    import torch

    from dump_reference import write_npz

    ours, ref = DEMO_OURS, FIXTURES / "demo" / "ref.npz"
    probes, meta = engine_layouts.load(ours)
    get = lambda n: probes[n][0]  # noqa: E731  (batch axis dropped)
    out = []
    for n in range(4):
        p = f"model.layers.{n}"
        q = get(f"{p}.self_attn.q_proj")  # [T, 128]
        out += [(f"L{n}.q.tp0", q[:, :64]), (f"L{n}.q.tp1", q[:, 64:])]          # concat
        o = get(f"{p}.self_attn.o_proj")
        half = (o / 2).astype(np.float32)
        out += [(f"L{n}.o.part0", half), (f"L{n}.o.part1", (o - half).astype(np.float32))]  # sum
        stacked = np.stack([get(f"{p}.mlp.gate_proj"), get(f"{p}.mlp.up_proj")])   # select
        out.append((f"L{n}.gate_up_stacked", stacked))
        out.append((f"L{n}.k_t", np.ascontiguousarray(get(f"{p}.self_attn.k_proj").T)))  # transpose
        out.append((f"L{n}.rope_q", probes[f"{p}.self_attn.rope_q"][None]))           # squeeze
        v = get(f"{p}.self_attn.v_proj")
        out.append((f"L{n}.v", v.reshape(v.shape[0], 2, -1)))                          # reshape
        out.append((f"L{n}.mlp", get(f"{p}.mlp")))                                      # unsqueeze
    dump = tmp_path / "engine.npz"
    write_npz(dump, [(k, torch.from_numpy(np.ascontiguousarray(x))) for k, x in out],
              {"input_ids": meta["input_ids"]})
    m = tmp_path / "engine.toml"
    m.write_text("""
[[rule]]
from = ["L{N}.q.tp0", "L{N}.q.tp1"]
to = "model.layers.{N}.self_attn.q_proj"
combine = { concat = -1 }

[[rule]]
from = ["L{N}.o.part0", "L{N}.o.part1"]
to = "model.layers.{N}.self_attn.o_proj"
combine = "sum"

[[rule]]
from = "L{N}.gate_up_stacked"
to = "model.layers.{N}.mlp.up_proj"
transform = [{ select = { axis = 0, index = 1 } }]

[[rule]]
from = "L{N}.k_t"
to = "model.layers.{N}.self_attn.k_proj"
transform = [{ transpose = [0, 1] }]

[[rule]]
from = "L{N}.rope_q"
to = "model.layers.{N}.self_attn.rope_q"
transform = [{ squeeze = 0 }, { squeeze = 0 }]

[[rule]]
from = "L{N}.v"
to = "model.layers.{N}.self_attn.v_proj"
transform = [{ reshape = [0, "kv_heads*head_dim"] }]

[[rule]]
from = "L{N}.mlp"
to = "model.layers.{N}.mlp"
transform = [{ unsqueeze = 0 }]
""")
    _, original = diff(ours, ref)
    code, mapped = diff(dump, ref, "--map", m)
    o, got = rows(original), rows(mapped)
    skip = ("shape_ours", "local_growth", "mapped")
    checked = 0
    for name, row in got.items():
        if row["status"] in ("only_ref", "only_ours"):
            continue
        assert row["mapped"], name
        assert {k: v for k, v in row.items() if k not in skip} == \
            {k: v for k, v in o[name].items() if k not in skip}, name
        checked += 1
    assert checked == 4 * 7


@pytest.mark.parametrize("engine, axes", [("llama.cpp", a) for a in engine_layouts.GGML_AXES]
                         + [("vllm", None), ("transformer-lens", None)])
@pytest.mark.parametrize("dtype, fault", [("f32", "none"), ("f32", "decode-pos=1"),
                                          ("bf16", "cache-pre-norm"), ("bf16", "decode-pos-frozen")])
def test_an_engines_decode_dump_reads_as_the_original(tmp_path, engine, axes, dtype, fault):
    """Our decode run (a KV-cache fault or none) rewritten as an engine would dump each step:
    under its preset every dumped row equals the original diff's, and the first divergence is
    the original's first among the dumped ops. llama.cpp's one-token tensors with the outer
    size-1 dims dropped (a step's RoPE output `Qcur` is `(heads, head_dim)`, the rank of a
    prompt's projection) or ggml's 4 axes kept: the preset tells the layouts apart by the last
    axis (by rank, the steps' RoPE outputs were compared with q_proj, a false divergence)."""
    tiny = FIXTURES / "tiny-qwen3"
    ref = FIXTURES / "ref" / f"tiny-qwen3.{dtype}.decode.npz"
    ours = tmp_path / "ours.npz"
    inject = [] if fault == "none" else ["--inject", fault]
    subprocess.run([str(BIN), "run", "--model", str(tiny), "--ids-file", str(tiny / "ids.txt"),
                    "--dtype", dtype, "--decode-from", str(ref), *inject, "--out", str(ours)],
                   check=True, capture_output=True, timeout=120)
    code0, original = diff(ours, ref)
    kw = {"axes": axes} if axes else {}
    code, mapped = diff(write(tmp_path, ours, engine, **kw), ref, "--map", engine)
    assert code == code0 == (0 if fault == "none" else 1), mapped["first_divergence"]
    o, m = rows(original), rows(mapped)
    dumped = [r for r in original["ops"] if not not_dumped(engine, r["name"].split("@")[0])]
    assert len(dumped) >= 9 * 7 * 4, len(dumped)  # every layer's dumped ops at every step
    skip = ("shape_ours", "local_growth", "mapped")
    for row in dumped:
        assert {k: v for k, v in m[row["name"]].items() if k not in skip} == \
            {k: v for k, v in row.items() if k not in skip}, row["name"]
    diverged = ("diverged", "shape_mismatch", "nonfinite", "no_finite")
    first = next((r["name"] for r in dumped if r["status"] in diverged), None)
    assert (mapped["first_divergence"] or {}).get("name") == first
    if engine != "llama.cpp":
        return
    # The steps' q / k / v rows are made by the rules of the last axis (rules 4 to 6).
    for n, rule in (("rope_q", 'rule 4 (from = "Qcur-{L}")'), ("rope_k", 'rule 5 (from = "Kcur-{L}")'),
                    ("v_proj", 'rule 6 (from = "Vcur-{L}")')):
        for step in ("", "@3"):
            got = m[f"model.layers.1.self_attn.{n}{step}"]["mapped"]
            assert got.startswith(rule), got


def test_llama_cpp_one_kv_head_and_no_config(tmp_path):
    """The llama.cpp preset on a model with one kv head (MQA), from real transformers: the
    projection `(T, head_dim)` ends in `head_dim` as the RoPE output does, and the axis before
    it tells them apart (a review and a hunt: a dumper keeping the first `Kcur`, the projection,
    read as a divergence at `rope_k`). Without the model sizes the preset is an error, not a
    fallback by rank (a clean decode read as divergent at every step)."""
    import json as js

    import numpy as np
    import torch

    from dump_reference import write_npz

    cfg = js.loads((FIXTURES / "tiny-qwen3" / "config.json").read_text())
    cfg.update(num_key_value_heads=1, head_dim=16)
    (tmp_path / "cfg.json").write_text(js.dumps(cfg))
    ref = tmp_path / "ref.npz"
    subprocess.run([sys.executable, str(SCRIPTS / "dump_reference.py"), "--config", str(tmp_path / "cfg.json"),
                    "--seed", "1", "--ids", "5,6,7,8,9", "--decode", "3", "--out", str(ref), "--quiet"],
                   check=True, capture_output=True, timeout=300)
    for axes in engine_layouts.GGML_AXES:
        entries, meta = engine_layouts.rewrite(ref, "llama.cpp", axes=axes)
        # The dumper kept the prefill's first Kcur: the projection, ggml's layout.
        k = engine_layouts.load(ref)[0]["model.layers.1.self_attn.k_proj"][0]  # [T, head_dim]
        first = engine_layouts.ggml_axes(k[None, None] if axes == "kept" else k, axes)
        entries = [(n, first if n == "Kcur-1" else x) for n, x in entries]
        out = tmp_path / f"lc-{axes}.npz"
        write_npz(out, [(n, torch.from_numpy(np.ascontiguousarray(x))) for n, x in entries], meta)
        code, report = diff(out, ref, "--map", "llama.cpp")
        assert code == 0, (axes, report["first_divergence"])
        got = rows(report)
        assert got["model.layers.1.self_attn.k_proj"]["status"] == "ok", axes
        assert got["model.layers.0.self_attn.rope_k"]["status"] == "ok", axes
        assert got["model.layers.0.self_attn.rope_k@3"]["status"] == "ok", axes
    # The reference without its config, and no --model: an error naming the size.
    probes, meta = engine_layouts.load(ref)
    meta.pop("model")
    bare = tmp_path / "bare.npz"
    write_npz(bare, [(n, torch.from_numpy(x)) for n, x in probes.items()], meta)
    r = subprocess.run([str(BIN), "diff", str(out), str(bare), "--map", "llama.cpp"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "`last` needs the model size" in r.stderr and "--model" in r.stderr, r.stderr


@pytest.mark.parametrize("engine,logits", [("vllm", "logits"), ("llama.cpp", "result_output")])
@pytest.mark.parametrize("pair", ["demo", "bf16"])
def test_an_engines_last_position_logits_are_compared_with_the_references_last(tmp_path, engine, logits, pair):
    # vLLM keeps the sampled positions' logits only (the last, in prefill), and so does
    # llama.cpp by default: against a reference of every position's, the row compares the
    # reference's last position, and the report says so (until 2026-12-05: a shape mismatch,
    # exit 1, on a clean port).
    import numpy as np
    import torch

    from dump_reference import write_npz

    ours, ref = (DEMO_OURS, FIXTURES / "demo" / "ref.npz") if pair == "demo" else (BF16, REF)
    code0, original = diff(ours, ref)
    entries, meta = engine_layouts.rewrite(ours, engine)
    assert any(n == logits for n, _ in entries)
    entries = [(n, np.ascontiguousarray(x[-1:]) if n == logits else x) for n, x in entries]
    out = tmp_path / f"{engine}.npz"
    write_npz(out, [(n, torch.from_numpy(x)) for n, x in entries], meta)
    code, mapped = diff(out, ref, "--map", engine)
    assert code == code0 == (1 if pair == "demo" else 0)
    assert mapped["first_divergence"] == original["first_divergence"]
    want, got = rows(original)["lm_head"], rows(mapped)["lm_head"]
    positions = want["shape"][-2]
    assert got["status"] == want["status"] == ("diverged" if pair == "demo" else "ok")
    assert got["numel"] * positions == want["numel"]
    assert any("lm_head: ours holds the logits of the last position only" in n for n in mapped["notes"])
    tokens = mapped["tokens"]
    assert tokens["positions"] == 1 and tokens["first_position"] == positions - 1
    # The last position's token effect is the original's at that position.
    assert tokens["per_position"] == original["tokens"]["per_position"][-1:]


def test_compressed_last_rows_past_2_25_values_are_compared(tmp_path):
    """Logits of the last 513 positions of a 65,536-entry vocabulary (33.6 million values, past
    2^25) against a reference's 514, both `savez_compressed`: compared piece by piece, as the
    same pair stored is (before session 42: a shape mismatch, exit 1, where stored passed; a
    bad-input hunt). A wrong entry of the last row is found where it is."""
    import numpy as np

    vocab = 65536
    meta = np.frombuffer(json.dumps({"format": "divergence-dump/1", "order": ["lm_head"]}).encode(),
                         dtype=np.uint8)
    ref = np.zeros((1, 514, vocab), np.float32)
    ref[0, :, 7] = np.arange(514)
    ours = ref[:, 1:].copy()
    ours[0, -1, 9] += 100.0
    np.savez_compressed(tmp_path / "ref.npz", lm_head=ref, __meta__=meta)
    np.savez_compressed(tmp_path / "ours.npz", lm_head=ours, __meta__=meta)
    rc, r = diff(tmp_path / "ours.npz", tmp_path / "ref.npz")
    assert rc == 1
    row = next(o for o in r["ops"] if o["name"] == "lm_head")
    assert row["status"] == "diverged" and row["shape"] == [1, 513, vocab], row
    assert row["max_abs_err"] == 100.0 and row["max_abs_err_index"] == [0, 512, 9], row
    assert any("compared with the reference's last 513" in n for n in r["notes"]), r["notes"]
