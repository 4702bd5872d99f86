"""dump_reference.py --decode / --decode-ids: teacher-forced decode steps with transformers' KV cache.

Checked against real transformers: the greedy tokens against model.generate(), and every probe of
decode step s against a one-pass (no cache) prefill dump of prompt + decode_ids[:s] at position
prompt_len + s - 1.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import FIXTURES, REPO, SCRIPTS, TINY, dr, read_npz, tiny_ids
from conftest import dump as any_dump
from test_dump_reference import LAYER_PROBES, expected_order

N_STEPS = 4


def dump(*args, **kw):
    """The exporter with --decode-layout per-step: one array per probe and step, which these tests
    read by name (the default, stacked layout is checked against it below)."""
    return any_dump(*args, "--decode-layout", "per-step", **kw)


def step_order(n_layers, step, layer_probes=LAYER_PROBES):
    """The probes of decode step `step`: the one-pass order with the cache probes after rope_k."""
    out = []
    for name in expected_order(n_layers, layer_probes):
        out.append(f"{name}@{step}")
        if name.endswith(".self_attn.rope_k"):
            attn = name.rsplit(".", 1)[0]
            out += [f"{attn}.cache_k@{step}", f"{attn}.cache_v@{step}"]
    return out


def token_axis(name: str) -> int:
    base = name.split("@")[0]
    return 2 if base.endswith(("rope_q", "rope_k", "cache_k", "cache_v")) else 1


@pytest.fixture(scope="module")
def decode_dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode")
    return dump(d, "--model", TINY, "--ids-file", TINY / "ids.txt", "--decode", str(N_STEPS))


@pytest.fixture(scope="module")
def prefills(decode_dump, tiny_model):
    """s -> {name: array} of the one-pass dump (no cache) of prompt + decode_ids[:s], s = 0..N."""
    _, _, meta = read_npz(decode_dump)
    ids, dec = tiny_ids(), meta["decode_ids"]
    out = {}
    for s in range(N_STEPS + 1):
        probes, _, _ = dr.run_dump(tiny_model, ids + dec[:s])
        out[s] = {n: t.numpy() for n, t in probes}
    return out


# ---------------------------------------------------------------------------------------------
# the contract: names, shapes, order, metadata


def test_decode_names_shapes_order_metadata(decode_dump, f32_dump):
    names, a, meta = read_npz(decode_dump)
    want = expected_order(4)
    for s in range(1, N_STEPS + 1):
        want += step_order(4, s)
    assert names == meta["order"] == want
    assert len(names) == 81 + N_STEPS * (81 + 2 * 4)
    t = len(tiny_ids())
    assert meta["input_ids"] == tiny_ids()
    assert meta["decode_steps"] == N_STEPS and meta["decode_source"] == "greedy"
    assert len(meta["decode_ids"]) == N_STEPS and all(isinstance(i, int) and 0 <= i < 512 for i in meta["decode_ids"])
    assert set(meta["dtypes"]) == set(names) and set(meta["dtypes"].values()) == {"float32"}
    for n in names:
        base, _, step = n.partition("@")
        if not step:
            continue
        assert step == str(int(step)), n
        if base.endswith(("cache_k", "cache_v")):
            assert a[n].shape == (1, 2, 1, 32), n
            continue
        shape = list(a[base].shape)
        assert shape[token_axis(n)] == t, n
        shape[token_axis(n)] = 1
        assert a[n].shape == tuple(shape), n
    assert a["lm_head@4"].shape == (1, 1, 512) and a["model.rotary_emb@1"].shape == (1, 1, 32)
    # one-pass dumps carry no decode field
    _, _, plain = read_npz(f32_dump)
    assert not [k for k in plain if k.startswith("decode")]


def test_greedy_decode_ids_and_logits_are_generate_s(decode_dump, tiny_model):
    _, a, meta = read_npz(decode_dump)
    ids = tiny_ids()
    with torch.no_grad():
        g = tiny_model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=N_STEPS,
                                output_logits=True, return_dict_in_generate=True)
    assert g.sequences[0, len(ids):].tolist() == meta["decode_ids"]
    assert len(g.logits) == N_STEPS
    ours = [a["lm_head"][0, -1]] + [a[f"lm_head@{s}"][0, -1] for s in range(1, N_STEPS)]
    for s, (o, ref) in enumerate(zip(ours, g.logits)):
        ref = ref[0].float().numpy()
        np.testing.assert_allclose(o, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(), err_msg=f"step {s}")
        assert int(o.argmax()) == meta["decode_ids"][s]


def test_step_probes_equal_the_one_pass_prefill_at_their_position(decode_dump, prefills):
    _, a, meta = read_npz(decode_dump)
    p = len(tiny_ids())
    # step 0 is the plain prefill: the same numbers as a run without a cache
    for n, want in prefills[0].items():
        np.testing.assert_array_equal(a[n], want, err_msg=n)
    for s in range(1, N_STEPS + 1):
        ref, pos = prefills[s], p + s - 1
        assert set(ref) == {n.split("@")[0] for n in a if n.endswith(f"@{s}")} - {
            f"model.layers.{i}.self_attn.cache_{kv}" for i in range(4) for kv in "kv"
        }
        for n, full in ref.items():
            want = np.take(full, [pos], axis=token_axis(n))
            np.testing.assert_allclose(a[f"{n}@{s}"], want, rtol=1e-4, atol=1e-5 * np.abs(want).max() + 1e-30,
                                       err_msg=f"{n}@{s}")
        assert int(a[f"lm_head@{s}"].argmax()) == int(ref["lm_head"][0, pos].argmax())
        for i in range(4):
            attn = f"model.layers.{i}.self_attn"
            rope_k = ref[f"{attn}.rope_k"][:, :, pos:pos + 1]
            v = ref[f"{attn}.v_proj"].reshape(1, pos + 1, 2, 32).transpose(0, 2, 1, 3)[:, :, pos:pos + 1]
            np.testing.assert_allclose(a[f"{attn}.cache_k@{s}"], rope_k, rtol=1e-4, atol=1e-5 * np.abs(rope_k).max())
            np.testing.assert_allclose(a[f"{attn}.cache_v@{s}"], v, rtol=1e-4, atol=1e-5 * np.abs(v).max())
            # the cache holds exactly what this step's rope_k / v_proj produced
            np.testing.assert_array_equal(a[f"{attn}.cache_k@{s}"], a[f"{attn}.rope_k@{s}"])
            np.testing.assert_array_equal(
                a[f"{attn}.cache_v@{s}"], a[f"{attn}.v_proj@{s}"].reshape(1, 1, 2, 32).transpose(0, 2, 1, 3)
            )


# ---------------------------------------------------------------------------------------------
# given decode ids, filters, other dtypes / formats / models, --truth-out


def test_given_decode_ids_are_used_verbatim(tmp_path, tiny_model):
    out = dump(tmp_path, "--model", TINY, "--ids", "1,2,3", "--decode", "3", "--decode-ids", "5,6,7", "--layers", "0")
    names, a, meta = read_npz(out)
    assert (meta["decode_steps"], meta["decode_ids"], meta["decode_source"]) == (3, [5, 6, 7], "given")
    assert meta["input_ids"] == [1, 2, 3]
    emb = tiny_model.get_input_embeddings().weight.detach().numpy()
    for s, tok in enumerate([5, 6, 7], start=1):
        np.testing.assert_array_equal(a[f"model.embed_tokens@{s}"][0, 0], emb[tok])
    assert "lm_head@3" in names and not any(".layers.1." in n for n in names)
    out = dump(tmp_path, "--model", TINY, "--ids", "1,2,3", "--decode-ids", "9", "--only", "^lm_head$", name="one.npz")
    names, _, meta = read_npz(out)
    assert names == ["lm_head", "lm_head@1"] and meta["decode_ids"] == [9] and meta["decode_steps"] == 1


def test_filters_apply_to_every_step_and_llama_sdpa(tmp_path):
    out = dump(tmp_path, "--config", FIXTURES / "configs/tiny-llama.json", "--ids", "1,2,3,4,5", "--attn", "sdpa",
               "--decode", "2", "--only", r"k_proj$|cache_k|^lm_head$")
    names, a, meta = read_npz(out)
    want = ["model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.k_proj", "lm_head"]
    for s in (1, 2):
        for i in (0, 1):
            want += [f"model.layers.{i}.self_attn.k_proj@{s}", f"model.layers.{i}.self_attn.cache_k@{s}"]
        want.append(f"lm_head@{s}")
    assert names == meta["order"] == want
    assert a["model.layers.1.self_attn.cache_k@2"].shape == (1, 2, 1, 16) and a["lm_head@2"].shape == (1, 1, 256)
    assert meta["producer"]["attn"] == "sdpa" and meta["decode_source"] == "greedy"


def test_bf16_safetensors_decode_with_truth(tmp_path):
    from safetensors import safe_open

    truth = tmp_path / "truth.npz"
    out = dump(tmp_path, "--model", TINY, "--ids-file", TINY / "ids.txt", "--dtype", "bfloat16", "--decode", "2",
               "--layers", "0", "--truth-out", truth, name="ref.safetensors")
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["divergence"])
        assert set(f.keys()) == set(meta["order"])
        k = f.get_tensor("model.layers.0.self_attn.cache_k@2")
        assert k.dtype == torch.bfloat16 and tuple(k.shape) == (1, 2, 1, 32)
        assert f.get_tensor("lm_head@2").dtype == torch.bfloat16
        ref_logits = f.get_tensor("lm_head@2").float().numpy()
    assert meta["dtypes"]["model.layers.0.self_attn.cache_v@1"] == "bfloat16"
    assert meta["decode_steps"] == 2 and meta["decode_source"] == "greedy"
    assert meta["order"][-1] == "lm_head@2" and not any(".layers.1." in n for n in meta["order"])
    # the truth decodes the same tokens (teacher-forced), in float64
    tnames, t, tmeta = read_npz(truth)
    assert tnames == tmeta["order"] == meta["order"]
    assert (tmeta["decode_ids"], tmeta["decode_source"]) == (meta["decode_ids"], "greedy")
    assert set(tmeta["dtypes"].values()) == {"float64"} and t["lm_head@2"].dtype == np.float64
    rel = np.linalg.norm(ref_logits - t["lm_head@2"]) / np.linalg.norm(t["lm_head@2"])
    assert rel < 5e-2  # bf16 noise, not a different computation


def test_the_summary_comes_before_the_truths_and_counts_as_it_does(tmp_path, capsys):
    """stderr: the main dump's summary, then the truth run's two lines, the truth counted as the
    main dump is (a newcomer read the truth's line first, as "170 probes" against "615 tensors")."""
    out, truth = tmp_path / "ref.npz", tmp_path / "truth.npz"
    assert dr.main(["--model", str(TINY), "--ids-file", str(TINY / "ids.txt"), "--dtype", "float32",
                    "--decode", "2", "--layers", "0", "--out", str(out), "--truth-out", str(truth)]) == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    lines = [line for line in err.splitlines() if line.startswith(("wrote", "truth run:"))]
    counted = "76 tensors: 24 prefill probes + 26 probes x 2 decode steps, stacked"
    assert len(lines) == 3, err
    assert lines[0].startswith(f"wrote {counted} (16 tokens + 2 decode steps") and lines[0].endswith(str(out)), lines
    assert lines[1] == "truth run: float64, eager, cpu", lines
    assert lines[2].startswith(f"wrote truth dump ({counted}, float64, ") and lines[2].endswith(str(truth)), lines


def test_f16_decode(tmp_path):
    out = dump(tmp_path, "--model", TINY, "--ids", "5,6,7", "--dtype", "float16", "--decode", "1", "--layers", "0")
    _, a, meta = read_npz(out)
    assert a["model.layers.0.self_attn.cache_k@1"].dtype == np.float16 and a["lm_head@1"].dtype == np.float16
    assert meta["dtypes"]["lm_head@1"] == "float16"


def test_decode_restores_everything(tiny_model):
    from transformers import DynamicCache
    from transformers.models.qwen3 import modeling_qwen3 as mq

    rope = mq.apply_rotary_pos_emb
    probes, _, rec, dec = dr.run_decode(tiny_model, [1, 2, 3], 2, [4, 5])
    assert dec == [4, 5] and rec.suffix == "" and not rec.repeated
    assert mq.apply_rotary_pos_emb is rope
    for m in tiny_model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    cache = DynamicCache(config=tiny_model.config)
    with dr.Recorder(tiny_model) as r:
        r.watch_cache(cache)
        assert "update" in vars(cache)
    assert "update" not in vars(cache) and cache.update.__func__ is DynamicCache.update


# ---------------------------------------------------------------------------------------------
# errors: one line, exit 2


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--decode", "0"], "error: --decode: the number of decode steps must be at least 1 (got 0)"),
        (["--decode", "two"], "error: --decode: 'two' is not a number of decode steps"),
        (["--decode", "2", "--decode-ids", "1,2,3"],
         "error: --decode 2 does not match the 3 token ids of --decode-ids"),
        (["--decode-ids", "1,x"], "error: --decode-ids: 'x' is not an integer token id"),
    ],
)
def test_decode_cli_errors_exit_2_with_one_line(tmp_path, args, needle):
    # these fail before torch is imported: a real subprocess is cheap
    r = subprocess.run([sys.executable, str(SCRIPTS / "dump_reference.py"), "--model", str(TINY), "--ids", "1",
                        *args, "--out", str(tmp_path / "x.npz")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [needle], r.stderr
    assert not (tmp_path / "x.npz").exists()


def test_decode_ids_out_of_vocab_exit_2(tmp_path, capsys):
    rc = dr.main(["--model", str(TINY), "--ids", "1", "--decode-ids", "3,512", "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --decode-ids: token id 512 is out of range for vocab size 512 (max id 511)"]
    assert not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------------------------------------
# the stacked layout (the default): one array NAME@steps per probe, read as the per-step arrays


def unstack(names, arrays, meta):
    """A stacked dump's arrays and order as the per-step layout has them (docs/dump-format.md)."""
    out = {n: a for n, a in arrays.items() if not n.endswith("@steps")}
    stacked = [n for n in names if n.endswith("@steps")]
    order = [n for n in meta["order"] if not n.endswith("@steps")]
    steps = {arrays[n].shape[0] for n in stacked}
    assert steps == {meta["decode_steps"]}
    for s in range(1, meta["decode_steps"] + 1):
        for n in stacked:
            out[f"{n[:-len('@steps')]}@{s}"] = arrays[n][s - 1]
            order.append(f"{n[:-len('@steps')]}@{s}")
    return order, out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_stacked_layout_holds_the_per_step_arrays(tmp_path, dtype):
    args = ["--model", TINY, "--ids-file", TINY / "ids.txt", "--dtype", dtype, "--decode", "3"]
    per_step = dump(tmp_path, *args, name="per_step.npz")
    stacked = any_dump(tmp_path, *args, name="stacked.npz")
    p_names, p, p_meta = read_npz(per_step)
    s_names, s, s_meta = read_npz(stacked)
    # step 0 as it was, then one NAME@steps per probe of step 1, in step 1's order
    step1 = [n[: -len("@1")] for n in p_names if n.endswith("@1")]
    assert s_names == s_meta["order"] == [n for n in p_names if "@" not in n] + [f"{n}@steps" for n in step1]
    assert len(s_names) == 81 + 81 + 2 * 4
    for n in step1:
        assert s[f"{n}@steps"].shape == (3, *p[f"{n}@1"].shape), n
        assert s_meta["dtypes"][f"{n}@steps"] == p_meta["dtypes"][f"{n}@1"] == dtype
    order, arrays = unstack(s_names, s, s_meta)
    assert order == p_meta["order"] and set(arrays) == set(p)
    for n, a in p.items():
        np.testing.assert_array_equal(arrays[n], a, err_msg=n)
    drop = ("order", "dtypes", "producer")
    assert {k: v for k, v in s_meta.items() if k not in drop} == {k: v for k, v in p_meta.items() if k not in drop}


def test_divergence_reads_stacked_and_per_step_dumps_as_one(tmp_path):
    """`divergence diff` of the two layouts of one run: every probe of every step is paired with
    itself (exact zeros), in the same order, and the rows are the per-step dump's."""
    import os

    binary = os.environ.get("DIVERGENCE_BIN") or str(REPO / "target" / "debug" / "divergence")
    if not os.path.exists(binary):
        pytest.skip("divergence binary not found (set DIVERGENCE_BIN)")
    args = ["--model", TINY, "--ids-file", TINY / "ids.txt", "--dtype", "bfloat16", "--decode", "2"]
    per_step = dump(tmp_path, *args, name="per_step.npz")
    stacked = any_dump(tmp_path, *args, name="stacked.npz")
    _, _, meta = read_npz(per_step)
    out = subprocess.run([binary, "diff", str(stacked), str(per_step), "--exact", "--format", "json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [r["name"] for r in report["ops"]] == meta["order"]
    assert {r["status"] for r in report["ops"]} == {"ok"}
    assert all(r["max_abs_err"] == 0 for r in report["ops"])
    assert [r["step"] for r in report["ops"]][-1] == 2
