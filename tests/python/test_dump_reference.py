"""scripts/dump_reference.py against real transformers (tiny Qwen3 / Llama on CPU)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from conftest import FIXTURES, REPO, SCRIPTS, TINY, dr, dump, read_npz, tiny_ids

# make_fixtures.py --check's per-tensor relative L2 tolerances: what a rerun of a committed fixture
# on another CPU must meet (its kernels may round differently: bit equality holds on one machine).
from make_fixtures import TOLERANCE as FIXTURE_TOL  # noqa: E402


def assert_like_fixture(new, fixture, names, tol):
    for n in names:
        a, b = np.asarray(new[n], dtype=np.float64), np.asarray(fixture[n], dtype=np.float64)
        assert a.shape == b.shape, n
        ref = np.linalg.norm(b)
        err = np.linalg.norm(a - b) / ref if ref > 0 else np.linalg.norm(a - b)
        assert err <= tol, f"{n}: relative L2 error {err:.3e} > {tol:.0e}"

LAYER_PROBES = [
    "input_layernorm",
    "self_attn.q_proj",
    "self_attn.q_norm",
    "self_attn.k_proj",
    "self_attn.k_norm",
    "self_attn.v_proj",
    "self_attn.rope_q",
    "self_attn.rope_k",
    "self_attn.attn_out",
    "self_attn.o_proj",
    "self_attn",
    "attn_residual",
    "post_attention_layernorm",
    "mlp.gate_proj",
    "mlp.act_fn",
    "mlp.up_proj",
    "mlp.down_proj",
    "mlp",
    None,  # the decoder layer itself
]


def expected_order(n_layers, layer_probes=LAYER_PROBES):
    order = ["model.embed_tokens", "model.rotary_emb"]
    for i in range(n_layers):
        order += [f"model.layers.{i}" + (f".{p}" if p else "") for p in layer_probes]
    return order + ["model.norm", "model", "lm_head"]


# ---------------------------------------------------------------------------------------------
# probe set and order


def test_qwen3_probe_order_is_execution_order(f32_dump):
    names, arrays, meta = read_npz(f32_dump)
    assert meta["order"] == names, "npz entries are written in execution order"
    assert names == expected_order(4)
    assert names[0] == "model.embed_tokens" and names[-1] == "lm_head"


def test_every_module_returning_a_tensor_is_a_probe(f32_dump, tiny_model):
    names, _, _ = read_npz(f32_dump)
    modules = {
        n for n, m in tiny_model.named_modules() if n and not isinstance(m, (torch.nn.ModuleList, torch.nn.ModuleDict))
    }
    extras = {n for n in names if n.rsplit(".", 1)[-1] in ("rope_q", "rope_k", "attn_out", "attn_residual")}
    assert modules | extras == set(names)
    assert len(extras) == 4 * 4


def test_qwen3_probe_shapes(f32_dump):
    _, a, meta = read_npz(f32_dump)
    t = len(tiny_ids())
    assert a["model.embed_tokens"].shape == (1, t, 64)
    assert a["model.rotary_emb"].shape == (1, t, 32)  # cos
    p = "model.layers.2.self_attn"
    assert a[f"{p}.q_proj"].shape == (1, t, 128)
    assert a[f"{p}.q_norm"].shape == (1, t, 4, 32)
    assert a[f"{p}.k_norm"].shape == (1, t, 2, 32)
    assert a[f"{p}.rope_q"].shape == (1, 4, t, 32)
    assert a[f"{p}.rope_k"].shape == (1, 2, t, 32)
    assert a[f"{p}.attn_out"].shape == (1, t, 128)
    assert a["model.layers.2.attn_residual"].shape == (1, t, 64)
    assert a["lm_head"].shape == (1, t, 512)
    assert all(meta["dtypes"][n] == "float32" for n in meta["order"])


# ---------------------------------------------------------------------------------------------
# the extra leaves hold the right values (checked independently of the wrappers)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def test_rope_probes_match_rotate_half_formula(f32_dump):
    _, a, _ = read_npz(f32_dump)
    cos = a["model.rotary_emb"][:, None]  # [1, 1, T, D]
    # sin is not a probe; rebuild it from the same inv_freq formula (theta 1e6, head_dim 32)
    t = cos.shape[2]
    inv = 1.0 / (1e6 ** (np.arange(0, 32, 2, dtype=np.float32) / 32))
    freqs = np.outer(np.arange(t, dtype=np.float32), inv)
    emb = np.concatenate([freqs, freqs], -1)
    np.testing.assert_allclose(cos[0, 0], np.cos(emb), atol=1e-6)
    sin = np.sin(emb)[None, None]
    for i in range(4):
        p = f"model.layers.{i}.self_attn"
        for which in ("q", "k"):
            x = a[f"{p}.{which}_norm"].transpose(0, 2, 1, 3)  # [B, H, T, D]
            want = x * cos + rotate_half(x) * sin
            np.testing.assert_allclose(a[f"{p}.rope_{which}"], want, rtol=1e-5, atol=1e-5)


def test_attn_out_is_o_proj_input_and_residual_is_exact(f32_dump, tiny_model):
    _, a, _ = read_npz(f32_dump)
    seen = {}
    hooks = [
        tiny_model.model.layers[i].self_attn.o_proj.register_forward_pre_hook(
            lambda m, args, i=i: seen.__setitem__(i, args[0].detach().clone())
        )
        for i in range(4)
    ]
    try:
        with torch.no_grad():
            logits = tiny_model(input_ids=torch.tensor([tiny_ids()]), use_cache=False).logits
    finally:
        for h in hooks:
            h.remove()
    for i in range(4):
        np.testing.assert_array_equal(a[f"model.layers.{i}.self_attn.attn_out"], seen[i].numpy())
        prev = a["model.embed_tokens"] if i == 0 else a[f"model.layers.{i - 1}"]
        np.testing.assert_array_equal(
            a[f"model.layers.{i}.attn_residual"], prev + a[f"model.layers.{i}.self_attn"]
        )
    # hooks and wrappers do not change the numbers
    np.testing.assert_array_equal(a["lm_head"], logits.numpy())


def test_everything_is_restored(tiny_model):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.qwen3 import modeling_qwen3 as mq

    rope, eager = mq.apply_rotary_pos_emb, mq.eager_attention_forward
    local = dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
    tiny_model.config._attn_implementation = "sdpa"
    try:
        probes, _, _ = dr.run_dump(tiny_model, [1, 2, 3])
    finally:
        tiny_model.config._attn_implementation = "eager"
    assert "model.layers.0.self_attn.attn_out" in dict(probes)
    assert mq.apply_rotary_pos_emb is rope and mq.eager_attention_forward is eager
    assert dict(ALL_ATTENTION_FUNCTIONS._local_mapping) == local
    for m in tiny_model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


# ---------------------------------------------------------------------------------------------
# generality: Llama


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_tiny_llama_config(tmp_path, attn):
    out = dump(tmp_path, "--config", FIXTURES / "configs/tiny-llama.json", "--ids", "1,2,3,4,5", "--attn", attn)
    names, a, meta = read_npz(out)
    llama_layer = [p for p in LAYER_PROBES if p not in ("self_attn.q_norm", "self_attn.k_norm")]
    assert names == expected_order(2, llama_layer)
    assert a["model.layers.1.self_attn.rope_q"].shape == (1, 4, 5, 16)
    assert a["lm_head"].shape == (1, 5, 256)
    assert meta["model"]["model_type"] == "llama"
    assert meta["producer"]["attn"] == attn and meta["producer"]["init"] == "realistic_qwen3_init"


# ---------------------------------------------------------------------------------------------
# dtypes and formats


def test_bf16_npz_is_f32_with_bfloat16_metadata():
    names, a, meta = read_npz(FIXTURES / "ref/tiny-qwen3.bf16.eager.npz")
    assert meta["producer"]["dtype"] == "bfloat16"
    for n in names:
        assert a[n].dtype == np.float32
        assert meta["dtypes"][n] == "bfloat16"
        t = torch.from_numpy(a[n])
        assert torch.equal(t.to(torch.bfloat16).float(), t), f"{n} is not bf16-representable"


def test_bf16_safetensors_keeps_bf16_and_matches_npz():
    from safetensors import safe_open

    names, a, meta_npz = read_npz(FIXTURES / "ref/tiny-qwen3.bf16.eager.npz")
    with safe_open(str(FIXTURES / "ref/tiny-qwen3.bf16.eager.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["divergence"])
        assert set(f.keys()) == set(names)
        for n in names:
            t = f.get_tensor(n)
            assert t.dtype == torch.bfloat16
            np.testing.assert_array_equal(t.float().numpy(), a[n])
    assert meta["order"] == names and meta["dtypes"] == meta_npz["dtypes"]


def test_f16_and_f64_dtypes(tmp_path):
    out = dump(tmp_path, "--model", TINY, "--ids", "5,6,7", "--dtype", "float16", "--layers", "0")
    _, a, meta = read_npz(out)
    assert a["lm_head"].dtype == np.float16 and meta["dtypes"]["lm_head"] == "float16"
    _, a, meta = read_npz(FIXTURES / "ref/tiny-qwen3.f64.eager.npz")
    assert a["lm_head"].dtype == np.float64 and meta["dtypes"]["lm_head"] == "float64"


def test_metadata_contract():
    path = FIXTURES / "ref/tiny-qwen3.f32.eager.npz"
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    assert infos[-1].filename == "__meta__.npy"
    names, _, meta = read_npz(path)
    assert meta["format"] == "divergence-dump/1"
    assert meta["input_ids"] == tiny_ids()
    prod = meta["producer"]
    import transformers

    assert prod["name"] == "transformers" and prod["transformers"] == transformers.__version__
    assert prod["torch"] == torch.__version__
    assert (prod["dtype"], prod["attn"], prod["device"]) == ("float32", "eager", "cpu")
    assert prod["script"] == "scripts/dump_reference.py"
    assert meta["model"]["model_type"] == "qwen3" and meta["model"]["head_dim"] == 32
    assert "_name_or_path" not in meta["model"]


def test_planted_demo_pair_first_differs_at_embed_tokens():
    names, ours, om = read_npz(FIXTURES / "demo/ours.npz")
    rnames, ref, rm = read_npz(FIXTURES / "demo/ref.npz")
    assert names == rnames == rm["order"]
    first = next(n for n in rm["order"] if not np.array_equal(ours[n], ref[n]))
    assert first == "model.embed_tokens"
    np.testing.assert_allclose(ours[first], ref[first] / math.sqrt(64), rtol=1e-6)
    assert om["producer"]["name"] == "transformers+planted-bug" and "1/sqrt" in om["producer"]["planted_bug"]
    assert rm["producer"]["name"] == "transformers"
    assert not np.allclose(ours["lm_head"], ref["lm_head"], rtol=1e-2)
    # the reference demo is the f32 eager reference
    _, f32, _ = read_npz(FIXTURES / "ref/tiny-qwen3.f32.eager.npz")
    assert all(np.array_equal(f32[n], ref[n]) for n in rnames)


# ---------------------------------------------------------------------------------------------
# --config, realistic init, filters


def test_config_mode_reproduces_committed_weights(tmp_path):
    out = dump(tmp_path, "--config", FIXTURES / "configs/tiny-qwen3.json", "--seed", "0",
               "--save-model", tmp_path / "m", "--ids-file", TINY / "ids.txt")
    assert (tmp_path / "m/model.safetensors").read_bytes() == (TINY / "model.safetensors").read_bytes()
    _, a, meta = read_npz(out)
    _, ref, _ = read_npz(FIXTURES / "ref/tiny-qwen3.f32.eager.npz")
    # weights rounded to bf16 before running, exactly like the saved model: the committed run's
    # values (made on another CPU, whose kernels may round differently)
    assert_like_fixture(a, ref, meta["order"], FIXTURE_TOL["float32"])
    assert meta["producer"]["k_norm_max"]["0"] == 96.5
    saved = json.loads((tmp_path / "m/config.json").read_text())
    assert saved["torch_dtype"] == "bfloat16" and saved["rope_theta"] == 1e6


def test_realistic_init_gains():
    from safetensors.torch import load_file

    w = load_file(str(TINY / "model.safetensors"))
    assert "lm_head.weight" not in w  # tied, stored once
    assert all(t.dtype == torch.bfloat16 for t in w.values())
    kmax = [float(w[f"model.layers.{i}.self_attn.k_norm.weight"].float().max()) for i in range(4)]
    assert kmax[0] == 96.5
    assert all(20 <= k <= 45 for k in kmax[1:])
    for i in range(4):
        q = w[f"model.layers.{i}.self_attn.q_norm.weight"].float()
        assert 3 <= float(q.max()) <= 8
        ln = w[f"model.layers.{i}.input_layernorm.weight"].float()
        assert abs(float(ln.mean()) - 1) < 0.1 and float(ln.std()) > 0.03
    # the high-gain channels get small k_proj rows
    kn = w["model.layers.0.self_attn.k_norm.weight"].float()
    kp = w["model.layers.0.self_attn.k_proj.weight"].float().reshape(2, 32, 64)
    hot = int(kn.argmax())
    assert kp[:, hot].norm() < 0.3 * kp.norm() / math.sqrt(32)


def test_k_norm_amplifies_a_tiny_error(f32_dump, tiny_model):
    """A tiny relative error entering layer 0's k_norm comes out much larger (the Qwen3 story)."""
    _, a, _ = read_npz(f32_dump)
    kn = tiny_model.model.layers[0].self_attn.k_norm
    x = torch.from_numpy(a["model.layers.0.self_attn.k_proj"]).view(1, -1, 2, 32)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 1e-4 * x.abs().mean()
    with torch.no_grad():
        y, y2 = kn(x), kn(x + noise)
    rel_in = float(noise.norm() / x.norm())
    rel_out = float((y2 - y).norm() / y.norm())
    assert rel_out > 10 * rel_in  # 18.7x for the committed weights


def test_layers_and_only_filters(tmp_path):
    out = dump(tmp_path, "--model", TINY, "--ids", "1,2,3", "--layers", "1")
    names, _, _ = read_npz(out)
    assert {dr._layer_index(n) for n in names} == {None, 1}
    assert names[0] == "model.embed_tokens" and names[-1] == "lm_head"
    out = dump(tmp_path, "--model", TINY, "--ids", "1,2,3", "--only", r"k_norm$", name="o.npz")
    names, _, meta = read_npz(out)
    assert names == [f"model.layers.{i}.self_attn.k_norm" for i in range(4)] == meta["order"]


def test_prompt_needs_a_tokenizer(tmp_path, capsys):
    rc = dr.main(["--model", str(TINY), "--prompt", "hello", "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    assert "no tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,ids",
    [
        ("1,2,3", [1, 2, 3]),
        (" 4 5\n6 ", [4, 5, 6]),
        ("7, 8,\t9", [7, 8, 9]),
        ("[1, 2, 3]", [1, 2, 3]),
        (" [1, 2, 3,]\n", [1, 2, 3]),
        ("1,2,", [1, 2]),
        ("[7]", [7]),
    ],
)
def test_parse_ids(text, ids):
    # as `divergence run` reads them (crates/divergence-qwen3/src/run.rs, parse_ids)
    assert dr.parse_ids(text) == ids


@pytest.mark.parametrize(
    "text,message",
    [
        ("1,,2", "a comma with no token id before it"),
        ("1, ,2", "a comma with no token id before it"),
        (",1,2", "a comma with no token id before it"),
        ("1,2,,", "a comma with no token id before it"),
        ("[1,,2]", "a comma with no token id before it"),
        ("[1,2", "out of place"),
        ("1,2]", "out of place"),
        ("[[1,2]]", "out of place"),
        ("1 [2] 3", "out of place"),
        ("[]", "no token ids"),
        (",", "no token ids"),
    ],
)
def test_parse_ids_refuses_a_left_out_id_and_stray_brackets(text, message):
    # (`1,,2` was read as 1,2 on both sides; `[1,2` as 1,2 by `divergence run`)
    with pytest.raises(dr.UserError, match=message):
        dr.parse_ids(text)


# ---------------------------------------------------------------------------------------------
# error cases: one line on stderr, exit 2 (real subprocess)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "dump_reference.py"), *map(str, args)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# these fail before torch is imported, so a real subprocess is cheap
@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "no/such/dir", "--ids", "1"], "error: no/such/dir: model directory not found"),
        (["--model", TINY, "--ids", "1,two"], "error: --ids: 'two' is not an integer token id"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path, args, needle):
    r = run_cli(*args, "--out", tmp_path / "x.npz")
    assert r.returncode == 2, r.stderr
    assert _one_error_line(r.stderr) == needle
    assert not (tmp_path / "x.npz").exists()


# these need the model: in-process (main() is what the CLI runs) to keep the suite fast
def test_ids_out_of_vocab_exit_2(tmp_path, capsys):
    rc = dr.main(["--model", str(TINY), "--ids", "1,512,3", "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == "error: token id 512 is out of range for vocab size 512 (max id 511)"
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"head_dim": 15}, "head_dim (15) must be even: RoPE rotates its two halves"),
        (
            {"num_key_value_heads": 3},
            "num_attention_heads (4) is not a multiple of num_key_value_heads (3)",
        ),
    ],
)
def test_a_config_transformers_fails_on_is_one_line(tmp_path, capsys, change, needle):
    # (a held-out check: an odd head_dim printed a 77-line traceback from apply_rotary_pos_emb)
    config = json.loads((TINY / "config.json").read_text())
    config.update(change)
    assert config["num_attention_heads"] == 4
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(config))
    rc = dr.main(["--config", str(bad), "--ids", "1,2", "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: {bad}: {needle}" or line.startswith(f"error: {bad}: {needle}:"), line
    assert not (tmp_path / "x.npz").exists()


def test_an_odd_head_size_without_a_full_head_rope_is_no_error():
    # gpt2 has no RoPE, phi and gpt_neox rotate part of each head: transformers runs them with
    # any head size (a review: check_config refused them)
    from transformers import AutoConfig

    for model_type, sizes in [
        ("gpt2", {"n_embd": 36, "n_head": 4, "n_layer": 1}),
        ("phi", {"hidden_size": 36, "num_attention_heads": 4, "num_hidden_layers": 1}),
        ("gpt_neox", {"hidden_size": 36, "num_attention_heads": 4, "num_hidden_layers": 1}),
    ]:
        dr.check_config(AutoConfig.for_model(model_type, **sizes), "c.json")
    with pytest.raises(dr.UserError, match="head_dim \\(9\\) must be even"):
        dr.check_config(
            AutoConfig.for_model("llama", hidden_size=36, num_attention_heads=4, num_hidden_layers=1),
            "c.json",
        )


def test_unbuildable_config_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "no_such_model_type", "hidden_size": 8}))
    rc = dr.main(["--config", str(bad), "--ids", "1", "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {bad}: transformers cannot build")
    no_type = tmp_path / "nt.json"
    no_type.write_text("{}")
    assert dr.main(["--config", str(no_type), "--ids", "1", "--out", str(tmp_path / "x.npz")]) == 2
    assert "no \"model_type\"" in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# --truth-out: the high-precision truth of `divergence diff --truth`


def test_truth_out_is_the_float64_run_of_the_same_model(tmp_path):
    truth = tmp_path / "truth.npz"
    out = dump(tmp_path, "--model", TINY, "--ids-file", TINY / "ids.txt", "--dtype", "bfloat16",
               "--truth-out", truth)
    names, ref, meta = read_npz(out)
    tnames, t, tmeta = read_npz(truth)
    assert tnames == names and tmeta["order"] == meta["order"]
    assert tmeta["input_ids"] == meta["input_ids"] == tiny_ids()
    assert set(tmeta["dtypes"].values()) == {"float64"}
    assert tmeta["producer"]["truth_of"] == str(out.resolve()) and tmeta["producer"]["truth_for_dtype"] == "bfloat16"
    assert tmeta["producer"]["attn"] == meta["producer"]["attn"] == "eager"
    # bit for bit a float64 eager run of the same model on the same ids and hooks, on this
    # machine; and the committed float64 fixture (made on another CPU, whose kernels may round
    # differently: 194 of 2,048 attn_out values 1 ulp apart on an Intel Xeon against the AMD
    # EPYC that made it) within make_fixtures.py's float64 tolerance
    f64 = dump(tmp_path, "--model", TINY, "--ids-file", TINY / "ids.txt", "--dtype", "float64",
               "--attn", "eager", name="f64.npz")
    _, plain, _ = read_npz(f64)
    _, fixture, _ = read_npz(FIXTURES / "ref/tiny-qwen3.f64.eager.npz")
    for n in names:
        assert t[n].dtype == np.float64
        np.testing.assert_array_equal(t[n], plain[n], err_msg=n)
    assert_like_fixture(t, fixture, names, FIXTURE_TOL["float64"])


def test_truth_out_float32_and_filters(tmp_path):
    truth = tmp_path / "truth.safetensors"
    dump(tmp_path, "--model", TINY, "--ids", "5,6,7", "--dtype", "float16", "--layers", "0",
         "--truth-out", truth, "--truth-dtype", "float32")
    from safetensors.numpy import load_file

    t = load_file(str(truth))
    assert t and all(a.dtype == np.float32 for a in t.values())
    assert not any(".layers.1." in n for n in t)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--truth-out", "t.txt"], "t.txt: --truth-out must end in .npz or .safetensors"),
        (["--truth-out", "x.npz"], "--truth-out is the same file as --out"),
        (["--truth-out", "t.npz", "--dtype", "float64"], "--truth-dtype float64 is not finer than --dtype float64"),
        (["--truth-out", "t.npz", "--truth-dtype", "float32"], "--truth-dtype float32 is not finer than --dtype float32"),
    ],
)
def test_truth_out_errors(tmp_path, capsys, extra, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = dr.main(["--model", str(TINY), "--ids", "1", "--out", "x.npz", *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_no_norm_gains_gives_plain_qk_norms(tmp_path):
    cfg = FIXTURES / "configs/tiny-qwen3.json"
    dump(tmp_path, "--config", cfg, "--seed", "3", "--ids", "1,2", "--no-norm-gains", "--save-model", tmp_path / "m")
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "m/model.safetensors"))
    kn = w["model.layers.0.self_attn.k_norm.weight"].float()
    assert kn.max() < 2.0  # the realistic init puts 96.5 here
    assert dr.main(["--model", str(TINY), "--ids", "1", "--no-norm-gains", "--out", str(tmp_path / "y.npz")]) == 2


@pytest.mark.parametrize("text", ["+5", "1_0", "٣", "1.0", "0x1"])
def test_parse_ids_takes_digits_only(text):
    # (a review: int() read `+5` as 5 and `1_0` as 10, which `divergence run` refuses)
    with pytest.raises(dr.UserError, match="is not an integer token id"):
        dr.parse_ids(f"1,{text}")
    with pytest.raises(dr.UserError, match="token id -3 is negative"):
        dr.parse_ids("1,-3")


def test_dtype_flags_take_the_short_names():
    # `divergence run --dtype bf16` and the README spell them short too (a newcomer's run:
    # `--dtype bf16` was refused here).
    base = ["--config", "c.json", "--ids", "1", "--out", "x.npz"]
    p = dr.build_parser()
    a = p.parse_args(base + ["--dtype", "bf16", "--truth-dtype", "f64", "--save-dtype", "FP16"])
    assert (a.dtype, a.truth_dtype, a.save_dtype) == ("bfloat16", "float64", "float16")
    a = p.parse_args(base + ["--dtype", "f32"])
    assert a.dtype == "float32"
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--dtype", "bf17"])
