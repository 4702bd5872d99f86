"""The fault catalogue on models the project was not tuned on: one pass and decode.

The committed fixtures are one tiny model; its decode references one 16-token prompt and 6
steps. Here four other Qwen3 shapes, seeds, prompt lengths (5 to 40) and step counts (5 to 14),
one with transformers' sdpa as the reference and one without the realistic q/k-norm gains, are
made with real transformers (scripts/dump_reference.py, float64 truth runs), and our candle port
decodes them teacher-forced (`divergence run --decode-from`), clean and with every KV-cache
fault. Asserted, f32 and bf16, with the presets and with `--truth`:

- a clean decode never diverges;
- every fault is found at the step and op where it enters, the prefill clean;
- except the two documented limits (docs/decode.md, "The KV-cache faults"): `cache-dtype=f16`
  under f32 activations is under the f32 preset (its rounding, ~2.4e-4, is found by `--truth`
  at the op where it enters), and `decode-mask` in bf16 can be under bf16's noise (one zero key
  among the prompt's): wherever they are flagged, the prefill is clean and nothing is flagged
  before the fault's step.

Alignment by content (docs/mapping.md): the decode references renamed `blk.N`, ours (clean and
every KV-cache fault, f32 and bf16) aligned against them gives the first divergence found under
the names as they are.

One pass (the prompt only), the same four models, f32 and bf16, presets and `--truth`: the
clean run never diverges, every porting fault of `divergence run --inject` is found at the op
where it enters (or traced there by the origin), and its cause hint is the one docs/hints.md
gives it; no other fault is also called a `scale`.

Model `a` made the f32 three-way rule's floor what it is (a clean f32 decode step flagged at
ratio 4.9 over u/2; docs/tolerances.md, "The rule").

The binary is $DIVERGENCE_BIN, else target/debug or target/release; skipped without one.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import bad_inputs as bi  # scripts/ is on sys.path (conftest.py)
from conftest import dump
from heldout_models import MODELS, make

BIN = bi.find_binary()


def _cpu() -> str:
    """This host's CPU model (Linux), for the messages of the two checks below that sit at the
    edge of a verdict on the held-out models of extreme q/k-norm gains and fall on either side of
    it by the host: candle's matmuls (the gemm crate) and torch's (its BLAS) pick their kernels
    by the CPU and sum in another order. The AVX-512 hosts of sessions 45-51 (their maker not
    recorded) gave one outcome; AMD EPYC hosts without AVX-512 (session 52) and with it (session
    53) the other, on the same commits. Each check accepts either outcome, each held to its own bounds."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        return "?"


CPU = _cpu()
pytestmark = pytest.mark.skipif(
    BIN is None, reason="divergence binary not found (set DIVERGENCE_BIN or cargo build -p divergence-cli)")

CACHE_K = "model.layers.0.self_attn.cache_k"
# (fault, the op where it enters, its step)
FAULTS = [
    ("decode-pos=1", "model.rotary_emb", 1),
    ("decode-pos=3", "model.rotary_emb", 1),
    ("decode-pos-frozen", "model.rotary_emb", 2),
    ("cache-pre-rope", CACHE_K, 1),
    ("cache-pre-norm", CACHE_K, 1),
    ("cache-overwrite", CACHE_K, 1),
    ("cache-overwrite=last", CACHE_K, 1),
    ("cache-dtype=bf16", CACHE_K, 1),
    ("cache-dtype=f16", CACHE_K, 1),
    ("decode-mask", "model.layers.0.self_attn.attn_out", 1),
]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, tmp_path_factory):
    """The model's directory, its prompt and its references: {(kind, dtype): (ref, truth)}."""
    name = request.param
    _, _, _, steps, attn, _ = MODELS[name]
    d = tmp_path_factory.mktemp(f"heldout-{name}")
    mdir, ids, changes = make(name, d)
    refs = {}
    for dt, torch_dt in (("f32", "float32"), ("bf16", "bfloat16")):
        for kind, decode in (("decode", ["--decode", steps]), ("one", [])):
            truth = d / f"truth.{kind}.{dt}.npz"
            ref = dump(d, "--model", mdir, "--ids", ids, "--dtype", torch_dt, "--attn", attn, *decode,
                       "--truth-out", truth, name=f"ref.{kind}.{dt}.npz")
            refs[kind, dt] = (ref, truth)
    return name, mdir, ids, refs, d, changes


def run_and_diff(model, dt, fault, truth, kind="decode"):
    """Our run (with `fault`; decoding the reference's tokens for `kind` "decode"), diffed
    against the reference (with `--model`, for the checkpoint hints): (exit, report)."""
    name, mdir, ids, refs, d, _ = model
    ref, truth_path = refs[kind, dt]
    ours = d / f"ours.{kind}.{dt}.{fault}.npz"
    if not ours.exists():
        inject = [] if fault == "-" else ["--inject", fault]
        decode = ["--decode-from", str(ref)] if kind == "decode" else []
        subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", dt,
                        *decode, *inject, "--out", str(ours)],
                       check=True, capture_output=True, text=True)
    extra = ["--truth", str(truth_path)] if truth else []
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json", "--model", str(mdir), *extra],
                       capture_output=True, text=True)
    assert p.returncode in (0, 1), f"{name} {dt} {fault}: {p.stderr}"
    return p.returncode, json.loads(p.stdout)


def where(report):
    f = report["first_divergence"]
    return f and (f["name"], f["step"])


@pytest.mark.parametrize("truth", [False, True], ids=["presets", "truth"])
@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_a_clean_decode_never_diverges(model, dt, truth):
    code, r = run_and_diff(model, dt, "-", truth)
    assert (code, where(r)) == (0, None), (model[0], dt, truth, r["first_divergence"])
    assert r["tokens"]["positions"] == len(model[2].split(",")) + len(r["steps"]) - 1
    assert r["summary"]["compared"] == r["summary"]["total"]


def test_a_clean_f16_decode_is_as_accurate_as_the_reference(model):
    """f16 activations, decoding with the KV cache, against transformers' f16 run and its
    float64 truth: as accurate as the reference at every op (a fifth held-out check: candle's
    CPU matmul of one query in f16 did not round as torch's, `attn_out@s` up to 4x further from
    the truth than the reference; crates/divergence-qwen3/src/ops.rs, `attention`)."""
    name, mdir, ids, _, d, _ = model
    _, _, _, steps, attn, _ = MODELS[name]
    truth = d / "truth.decode.f16.npz"
    ref = dump(d, "--model", mdir, "--ids", ids, "--dtype", "float16", "--attn", attn, "--decode", steps,
               "--truth-out", truth, name="ref.decode.f16.npz")
    ours = d / "ours.decode.f16.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "f16",
                    "--decode-from", str(ref), "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--truth", str(truth), "--format", "json"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    ratios = [o["noise_ratio"] for o in r["ops"] if o.get("noise_ratio") is not None]
    assert (p.returncode, where(r)) == (0, None), (name, r["first_divergence"], max(ratios))
    assert max(ratios) < 2.0, (name, max(ratios))


@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_decode_positions_past_the_references_steps_get_a_hint(model, dt):
    """decode-pos=K with K at or past the reference's decode steps (ours' step 1 is a position
    the reference holds no row of; no hint until 2026-12-04): the amount, from the rows its own
    make, or, past those, "not at the prompt length + step"; docs/hints.md, `decode_position`."""
    name, _, ids, _, _, _ = model
    prompt, steps = len(ids.split(",")), MODELS[name][3]
    for k, says in ((steps, f"decode positions off by +{steps}"),
                    (10 * (prompt + steps), "decode positions not at the prompt length + step")):
        code, r = run_and_diff(model, dt, f"decode-pos={k}", False)
        assert (code, where(r)) == (1, ("model.rotary_emb@1", 1)), (name, dt, k, r["first_divergence"])
        hints = [h for h in r["hints"] if h["code"] == "decode_position"]
        assert any(says in h["message"] for h in hints), (name, dt, k, r["hints"])


# (fault, the op where it enters, its cause hint: docs/hints.md)
ONE_PASS = [
    ("embed-scale", "model.embed_tokens", "scale"),
    ("rope-theta=10000", "model.rotary_emb", "rope_theta"),
    ("rope-interleaved", "model.layers.0.self_attn.rope_q", "rope_layout"),
    ("skip-k-norm", "model.layers.0.self_attn.k_norm", "skipped_op"),
    ("skip-q-norm@1", "model.layers.1.self_attn.q_norm", "skipped_op"),
    ("attn-bias=1e30", "model.layers.0.self_attn.q_proj", "bias"),
    ("attn-bias=0.5@1", "model.layers.1.self_attn.q_proj", "bias"),
    ("transpose=model.layers.0.mlp.down_proj", "model.layers.0.mlp.down_proj", "transpose"),
    ("act=gelu", "model.layers.0.mlp.act_fn", "activation"),
    ("gqa-tile", "model.layers.0.self_attn.attn_out", "gqa_layout"),
    ("rms-eps=1e-3", "model.layers.0.input_layernorm", "eps"),
    ("swap-gate-up", "model.layers.0.mlp.gate_proj", "another_op"),
    ("swap-k-v@1", "model.layers.1.self_attn.k_proj", "another_op"),
    ("no-causal-mask", "model.layers.0.self_attn.attn_out", "causal_mask"),
]


@pytest.mark.parametrize("truth", [False, True], ids=["presets", "truth"])
@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_a_clean_one_pass_never_diverges(model, dt, truth):
    code, r = run_and_diff(model, dt, "-", truth, kind="one")
    assert (code, where(r)) == (0, None), (model[0], dt, truth, r["first_divergence"])


@pytest.mark.parametrize("truth", [False, True], ids=["presets", "truth"])
@pytest.mark.parametrize("dt", ["f32", "bf16"])
@pytest.mark.parametrize("fault,op,hint", ONE_PASS, ids=[f[0] for f in ONE_PASS])
def test_every_porting_fault_is_found_where_it_enters_with_its_hint(model, dt, fault, op, hint, truth):
    if fault == "gqa-tile" and model[5]["num_key_value_heads"] == 1:
        pytest.skip("one kv head: tiling and repeat-interleave are the same")
    code, r = run_and_diff(model, dt, fault, truth, kind="one")
    assert code == 1, f"{model[0]} {dt} {fault}: not found"
    f = r["first_divergence"]
    assert op in (f["name"], r["origin"]["name"]), (model[0], dt, fault, f, r["origin"])
    codes = [h["code"] for h in r["hints"] if h["op"] == op]
    assert hint in codes, (model[0], dt, fault, r["hints"])
    if hint != "scale":
        assert "scale" not in codes, (model[0], dt, fault, r["hints"])


@pytest.mark.parametrize("truth", [False, True], ids=["presets", "truth"])
@pytest.mark.parametrize("dt", ["f32", "bf16"])
@pytest.mark.parametrize("fault,op,step", FAULTS, ids=[f[0] for f in FAULTS])
def test_every_kv_cache_fault_is_found_where_it_enters(model, dt, fault, op, step, truth):
    if dt == "bf16" and fault.startswith("cache-dtype"):
        pytest.skip("refused: not a lower precision than bf16 activations (tests/decode.rs)")
    code, r = run_and_diff(model, dt, fault, truth)
    steps = r["steps"]
    assert steps[0]["step"] == 0 and steps[0]["diverged"] == 0, f"{fault}: prefill not clean"
    if fault == "cache-dtype=f16" and not truth:
        # documented: 2.4e-4 is under the f32 preset (rtol 1e-3); flagged later or not at all,
        # never before the fault's step
        assert code == 0 or r["first_divergence"]["step"] >= step
        return
    if fault == "decode-mask" and dt == "bf16":
        # documented: at the edge of bf16's noise; never before the fault's step
        assert code == 0 or r["first_divergence"]["step"] >= step
        return
    assert code == 1, f"{model[0]} {dt} {fault}: not found"
    assert where(r) == (f"{op}@{step}", step), (model[0], dt, fault, r["first_divergence"], r["origin"])
    assert steps[step]["first_divergence"] == f"{op}@{step}"


def _renamed(src, dst):
    """`src` with every `model.layers.N` renamed `blk.N` (llama.cpp-like names), its order and
    dtypes too: a reference that shares few names with ours."""
    import numpy as np

    with np.load(src, allow_pickle=False) as z:
        arrays = {f: z[f] for f in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    rename = lambda n: n.replace("model.layers.", "blk.")  # noqa: E731
    meta["order"] = [rename(n) for n in meta["order"]]
    meta["dtypes"] = {rename(k): v for k, v in meta.get("dtypes", {}).items()}
    out = {rename(k): v for k, v in arrays.items()}
    out["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(dst, **out)


@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_alignment_by_content_finds_what_the_names_find(model, dt):
    """The transformers reference under other names (`blk.N`), so that `diff` aligns the
    probes by content (docs/mapping.md): for the clean decode and every KV-cache fault, the
    first divergence (op and step) is the one found under the names as they are. Its rules were
    made on our own dumps; here the references are real transformers on held-out models."""
    name, _, _, refs, d, _ = model
    ref, _ = refs["decode", dt]
    blk = d / f"ref.decode.{dt}.blk.npz"
    if not blk.exists():
        _renamed(ref, blk)
    for fault in ["-"] + [f for f, _, _ in FAULTS]:
        if dt == "bf16" and fault.startswith("cache-dtype"):
            continue
        _, by_names = run_and_diff(model, dt, fault, False)
        ours = d / f"ours.decode.{dt}.{fault}.npz"
        p = subprocess.run([str(BIN), "diff", str(ours), str(blk), "--format", "json"],
                           capture_output=True, text=True)
        assert p.returncode in (0, 1), f"{name} {dt} {fault}: {p.stderr}"
        aligned = json.loads(p.stdout)
        assert "aligned by content" in aligned["warnings"][0], aligned["warnings"]
        f = aligned["first_divergence"]
        got = f and (f["name"].replace("blk.", "model.layers."), f["step"])
        assert got == where(by_names), (name, dt, fault, aligned["warnings"])


def _bf16(x):
    """`x` (float32) rounded to bfloat16, nearest even, kept as float32."""
    import numpy as np

    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


def kernel_hint(r, op):
    """The `attention_kernel` hint at `op`, if any (docs/hints.md): it goes beside the others."""
    return next((h for h in r["hints"] if h["op"] == op and h["code"] == "attention_kernel"), None)


def assert_kernel_computes_otherwise(r, op, ctx):
    """`attention_kernel` at `op` says the attention does not compute from its dump's q, keys and
    values (a zero key read besides them, an output scaled after them)."""
    h = kernel_hint(r, op)
    assert h is not None and "does not compute from those" in h["message"], (ctx, r["hints"])


def assert_fixed_scale(r, attn, dt, name):
    """The hints at `attn@1` of heads scaled by fixed factors: `scale`; in bf16 also the
    `attention_spread` that names both readings, never one that says a factor moved; and
    `attention_kernel` saying the output is not the attention of its own inputs."""
    assert_kernel_computes_otherwise(r, attn + "@1", (name, dt))
    at = [h for h in r["hints"] if h["op"] == attn + "@1" and h["code"] != "attention_kernel"]
    codes = [h["code"] for h in at]
    if codes == ["scale"]:
        return
    assert dt == "bf16" and codes == ["attention_spread"], (name, dt, r["hints"])
    assert "moved_at_step" not in at[0]["evidence"], (name, dt, r["hints"])
    assert at[0]["message"].endswith(", or each head's output is scaled"), (name, dt, r["hints"])


@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_a_zero_keys_share_is_told_from_a_scale_per_head(model, dt):
    """At one decode position, heads each scaled down read the same whether the attention went
    partly to a zero key (`decode-mask`) or each head's output was scaled by a factor of its own:
    the later steps tell them apart (docs/hints.md, `attention_spread`). `decode-mask` is never
    called a `scale` (in f32 its factors are seen to move); our clean decode with layer 0's heads
    scaled by fixed factors at every step (rounded to bf16 in bf16) is a `scale`, not an
    `attention_spread` that says a factor moved (0.80 to 0.92: since session 58 a head between
    1 - 2u and about 4.5% below 1 keeps bf16 from settling a `scale`, a zero key's share there
    too small to move past its noise in the steps read; 0.90 to 0.97 until then). In bf16 the per-head
    factors of a clean port jitter by up to about one unit roundoff from step to step (the
    softmax weights are rounded
    to bf16, and their sum with them): where a later step's factor sits between the two
    bounds, the hint stays the `attention_spread` that names both readings ("... or each
    head's output is scaled", no `moved_at_step`), which this machine's CPU gave for model d
    (2026-12-05: factors 0.8969, 0.8986, 0.9019, 0.9002, 0.9017 for one head over five steps),
    where another's gave `scale`: either passes in bf16, never a moved factor."""
    import numpy as np

    name, _mdir, _ids, refs, d, changes = model
    attn = "model.layers.0.self_attn.attn_out"
    code, r = run_and_diff(model, dt, "decode-mask", False)
    spread = [h for h in r["hints"] if h["op"].startswith(attn + "@")]
    assert all(h["code"] != "scale" for h in spread), (name, dt, r["hints"])
    if dt == "f32":
        assert any(h["code"] == "attention_spread" and "moved_at_step" in h["evidence"]
                   for h in spread), (name, dt, r["hints"])
        assert_kernel_computes_otherwise(r, r["first_divergence"]["name"], (name, dt))
    # our clean decode, layer 0's heads scaled
    run_and_diff(model, dt, "-", False)
    clean = d / f"ours.decode.{dt}.-.npz"
    with np.load(clean) as z:
        arrays = {k: z[k] for k in z.files}
    key = attn + "@steps"
    assert key in arrays, sorted(arrays)[:8]
    heads, hd = changes["num_attention_heads"], changes["head_dim"]
    factors = np.repeat(np.linspace(0.80, 0.92, heads).astype(np.float32), hd)
    scaled = arrays[key].astype(np.float32) * factors
    arrays[key] = (_bf16(scaled) if dt == "bf16" else scaled).astype(arrays[key].dtype)
    ours = d / f"ours.decode.{dt}.headscale.npz"
    np.savez(ours, **arrays)
    ref, _ = refs["decode", dt]
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json"],
                       capture_output=True, text=True)
    assert p.returncode == 1, (name, dt, p.stderr)
    r = json.loads(p.stdout)
    assert r["first_divergence"]["name"] == attn + "@1", (name, dt, r["first_divergence"])
    assert_fixed_scale(r, attn, dt, name)
    # the same with ours' names without `model.` (paired by that prefix) and --steps 0-1: the
    # later steps, which the plan does not hold, are read under ours' names all the same (a
    # bad-input hunt found them not read)
    meta = json.loads(bytes(arrays.pop("__meta__")))
    meta["order"] = [n.removeprefix("model.") for n in meta.get("order", [])]
    bare = {k.removeprefix("model."): v for k, v in arrays.items()}
    bare["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    ours_bare = d / f"ours.decode.{dt}.headscale-bare.npz"
    np.savez(ours_bare, **bare)
    p = subprocess.run([str(BIN), "diff", str(ours_bare), str(ref), "--format", "json", "--steps", "0-1"],
                       capture_output=True, text=True)
    assert p.returncode == 1, (name, dt, p.stderr)
    r = json.loads(p.stdout)
    assert r["first_divergence"]["name"] == attn + "@1", (name, dt, r["first_divergence"])
    assert_fixed_scale(r, attn, dt, name)


# (fault, where it enters after a 1-token prompt, its hint, how the hint's message starts)
ROPE_AT_STEP_1 = [
    ("rope-interleaved", "model.layers.0.self_attn.rope_q@1", "rope_layout", "ours rotates interleaved"),
    ("rope-theta=10000", "model.rotary_emb@1", "rope_theta", "the RoPE table of ours at position 1 fits theta ~ "),
]


@pytest.mark.parametrize("dt", ["f32", "bf16"])
@pytest.mark.parametrize("fault,op,code,says", ROPE_AT_STEP_1, ids=[f[0] for f in ROPE_AT_STEP_1])
def test_rope_faults_after_a_one_token_prompt_get_their_hints(tmp_path, dt, fault, op, code, says):
    """A 1-token prompt's prefill is position 0, where every RoPE is the identity: the fault
    enters at decode step 1, and its hint must read that step's row at its position (the
    sixth held-out check's model `hc` read no `rope_layout`, the seventh's `wa` no `rope_theta`:
    the fits were taken at position 0, or not at all; docs/hints.md)."""
    from heldout_models import SIXTH

    mdir, ids, _ = make("hc", tmp_path)
    assert len(ids.split(",")) == 1
    attn, torch_dt = SIXTH["hc"][4], {"f32": "float32", "bf16": "bfloat16"}[dt]
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", torch_dt, "--attn", attn, "--decode", 3,
               name=f"ref.{dt}.npz")
    ours = tmp_path / f"ours.{dt}.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", dt, "--decode-from", str(ref),
                    "--inject", fault, "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json", "--model", str(mdir)],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    f = r["first_divergence"]
    # The fault's op is where it crosses the line, or its origin (bf16: the table at position 1
    # is within its tolerance, and `rope_k@1` crosses first).
    assert (p.returncode, f["step"]) == (1, 1) and op in (f["name"], r["origin"]["name"]), (dt, f, r["origin"])
    assert r["steps"][0]["diverged"] == 0
    hints = [h for h in r["hints"] if h["op"] == op and h["code"] == code]
    assert hints and hints[0]["message"].startswith(says), (dt, r["hints"])
    if code == "rope_theta" and dt == "f32":
        # f32 tables pin the thetas (bf16's at position 1 with head_dim 12 only roughly)
        ev = hints[0]["evidence"]
        assert abs(ev["theta_ours"] / 1e4 - 1) < 1e-3 and abs(ev["theta_ref"] / 2e5 - 1) < 1e-3, ev


def test_a_wrong_theta_with_head_dim_8_is_not_also_a_position_off(tmp_path):
    """The second held-out check's `e` (head_dim 8, theta 1e4, a 2-token prompt), f32,
    `rope-theta=1000` from decode step 1 on: its table at step 1 is a `rope_theta` at the step's
    position, and the rows of steps 1 and 2 also passed `decode_position`'s test of rows one
    position apart (four frequencies, one of them 1 for any theta): both were said (session
    43's review). Only the theta is (docs/hints.md, `decode_position`). And at the prefill's
    table, under the material gate, a `rope_theta` at its last row (docs/hints.md)."""
    mdir, ids, _ = make("e", tmp_path)
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "float32", "--decode", 4, name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "f32", "--decode-from", str(ref),
                    "--inject", "rope-theta=1000", "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json", "--steps", "1-"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    assert (p.returncode, r["first_divergence"]["name"]) == (1, "model.rotary_emb@1"), r["first_divergence"]
    assert [(h["code"], h["op"]) for h in r["hints"]] == [("rope_theta", "model.rotary_emb@1")], r["hints"]
    ev = r["hints"][0]["evidence"]
    assert abs(ev["theta_ours"] / 1e3 - 1) < 1e-3 and abs(ev["theta_ref"] / 1e4 - 1) < 1e-3, ev
    # The whole run: the 2-token prompt's table, under the hints' material gate (2e-2), had no
    # hint (session 43's left list); its last row is fitted at position 1.
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json"], capture_output=True, text=True)
    r = json.loads(p.stdout)
    assert (p.returncode, r["first_divergence"]["name"]) == (1, "model.rotary_emb"), r["first_divergence"]
    assert [(h["code"], h["op"]) for h in r["hints"]] == [("rope_theta", "model.rotary_emb")], r["hints"]
    ev = r["hints"][0]["evidence"]
    assert ev["position"] == 1 and abs(ev["theta_ours"] / 1e3 - 1) < 1e-3, ev


@pytest.mark.parametrize("layer", [1, 2])
def test_a_cache_of_ours_own_k_norm_past_layer_0_gets_cache_stage(tmp_path, layer):
    """The second held-out check's `h` (97 tokens, sdpa reference), bf16, `cache-pre-rope` past
    layer 0: ours' k_norm is already 1.2-1.4e-2 off the reference's there, over the bound that
    tells one tensor from another, and no `cache_stage` was said (the eighth check met it on the
    28-layer 0.6B shape too). Ours' cache_k is exactly ours' own k_norm (docs/hints.md)."""
    from heldout_models import SECOND

    mdir, ids, _ = make("h", tmp_path)
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "bfloat16", "--attn", SECOND["h"][4],
               "--decode", 2, name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "bf16", "--decode-from", str(ref),
                    "--inject", f"cache-pre-rope@{layer}", "--out", str(ours)], check=True, capture_output=True,
                   text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json"], capture_output=True, text=True)
    r = json.loads(p.stdout)
    op = f"model.layers.{layer}.self_attn.cache_k@1"
    assert (p.returncode, r["first_divergence"]["name"]) == (1, op), r["first_divergence"]
    assert [(h["code"], h["op"]) for h in r["hints"]] == [("cache_stage", op)], r["hints"]
    h = r["hints"][0]
    assert h["message"].startswith(f"ours' cache holds its own model.layers.{layer}.self_attn.k_norm@1 (rel err 0.000e+00")
    assert h["message"].endswith("k cached before RoPE") and h["evidence"]["stage_off_ref"] > 1e-2, h


@pytest.mark.parametrize("fault", ["cache-overwrite@3", "cache-pre-rope@3"])
def test_with_the_truth_a_later_fault_is_not_born_at_a_noisy_op(tmp_path, fault):
    """The seventh held-out check's `wb` (k_norm ~190, bf16, sdpa reference) with `--truth`: a
    clean run's `layers.1 attn_out@1` is at a noise ratio of 2.75 (1.8 times its inputs'), and a
    fault of layer 3's cache (x45 at its `cache_k@1`) read "born at" that op, "amplified
    through" its own. A flagged op that grew the ratio past 10-fold is the birth
    (docs/origin.md)."""
    from heldout_models import SEVENTH

    mdir, ids, _ = make("wb", tmp_path)
    truth = tmp_path / "truth.npz"
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "bfloat16", "--attn", SEVENTH["wb"][4],
               "--decode", 2, "--truth-out", truth, name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "bf16", "--decode-from", str(ref),
                    "--inject", fault, "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--truth", str(truth), "--format", "json"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    op = "model.layers.3.self_attn.cache_k@1"
    assert (p.returncode, r["first_divergence"]["name"]) == (1, op), r["first_divergence"]
    assert [(l["name"], l["role"]) for l in r["origin"]["chain"]] == [(op, "born")], r["origin"]


def test_a_bf16_decode_mask_beside_heads_at_the_noise_gets_attention_spread(tmp_path):
    """The seventh held-out check's `wb` (k_norm ~190, bf16): `decode-mask@1` scales one head of
    layer 1's `attn_out@1` by 0.028 while another's bf16 noise (4e-2) is past what a pure scale
    may carry; no hint was given. Heads within the dtype's noise are now counted beside the
    pure scales (docs/hints.md, `attention_spread`)."""
    from heldout_models import SEVENTH

    mdir, ids, _ = make("wb", tmp_path)
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "bfloat16", "--attn", SEVENTH["wb"][4],
               "--decode", 2, name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "bf16", "--decode-from", str(ref),
                    "--inject", "decode-mask@1", "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json", "--model", str(mdir)],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    op = "model.layers.1.self_attn.attn_out@1"
    assert (p.returncode, where(r)) == (1, (op, 1)), r["first_divergence"]
    hints = [h for h in r["hints"] if h["op"] == op and h["code"] == "attention_spread"]
    assert hints and hints[0]["evidence"]["min_factor"] < 0.1, r["hints"]


@pytest.mark.parametrize("layer", [0, 1])
def test_a_variance_summed_in_a_half_type_is_not_a_wrong_scale(tmp_path, layer):
    """The ninth held-out check's `xw` (hidden 512), f32, `bf16-variance`: the first norm's rows
    are each scaled by their own factor (1.021-1.062), which one factor of 1.04 fitted within
    `scale`'s residual bound (9.2e-3 < 1e-2): "a wrong scale factor" was said. It is `rounding`
    (docs/hints.md, `scale`: the rows must share the factor); at layer 1 too, where the rows'
    fit carries layer 0's f32 noise (a review: no hint at all there, once `scale` was not
    said)."""
    mdir, ids, _ = make("xw", tmp_path)
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "float32", name="ref.npz")
    ours = tmp_path / "ours.npz"
    fault = "bf16-variance" if layer == 0 else f"bf16-variance@{layer}"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "f32",
                    "--inject", fault, "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json"], capture_output=True, text=True)
    r = json.loads(p.stdout)
    norm = f"model.layers.{layer}.input_layernorm"
    assert (p.returncode, r["first_divergence"]["name"]) == (1, norm), r["first_divergence"]
    assert [(h["code"], h["op"]) for h in r["hints"]] == [("rounding", norm)], r["hints"]
    ev = r["hints"][0]["evidence"]
    assert ev["max_factor"] - ev["min_factor"] > 0.02, ev
    assert "epsilon" not in r["hints"][0]["message"], r["hints"][0]["message"]


def test_an_epsilon_over_rows_alike_is_named_at_the_origin(tmp_path):
    """The ninth held-out check's `xe` (a 3-token prompt), f16, `rms-eps=1e-2@4`: the first
    divergence, layer 4's q_norm, reads `eps`; its origin, layer 4's input_layernorm, whose three
    rows of like mean squares all take factors 0.9938-0.9943, read "its variance is summed or
    rounded at another precision". Rows that moved alike are no variance at another precision:
    the epsilon that gives each row its factor is named there (docs/hints.md, `rounding`)."""
    from heldout_models import NINTH

    mdir, ids, _ = make("xe", tmp_path)
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "float16", "--attn", NINTH["xe"][4],
               name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "f16",
                    "--inject", "rms-eps=1e-2@4", "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json"], capture_output=True, text=True)
    r = json.loads(p.stdout)
    hints = {(h["code"], h["op"]): h for h in r["hints"]}
    if r.get("origin") and r["origin"]["name"] != "model.layers.4.input_layernorm":
        # On the AMD EPYC hosts (sessions 52-53; `_cpu`) our f16 port's noise at layer 2's
        # attn_out is larger (local growth ~4.7), and the fault's growth at layer 4's
        # input_layernorm (~1.9, past f16 noise from layer 2 on) is under the birth threshold:
        # the origin is traced to layer 2, a limitation of the origin over f16 noise of k_norm
        # x100 (docs/origin.md, "Limits"). The chain still runs through the fault's norm, and
        # nothing else than the epsilon is hinted.
        assert r["origin"]["name"] == "model.layers.2.self_attn.attn_out", (CPU, r["origin"])
        first = "model.layers.4.self_attn.q_norm"
        assert (p.returncode, r["first_divergence"]["name"]) == (1, first), r["first_divergence"]
        q_norm = hints[("eps", first)]
        assert abs(q_norm["evidence"]["eps_estimate"] / 1e-2 - 1) < 0.1, q_norm["evidence"]
        chain = [link["name"] for link in r["origin"]["chain"]]
        assert "model.layers.4.input_layernorm" in chain, r["origin"]
        assert r["origin"]["growth"] < 10, r["origin"]
        assert not any(c == "rounding" for c, _ in hints), r["hints"]
        return
    assert p.returncode == 1 and r["origin"]["name"] == "model.layers.4.input_layernorm", (r["first_divergence"],
                                                                                          r["origin"])
    assert ("eps", "model.layers.4.self_attn.q_norm") in hints, r["hints"]
    # The rows moved alike (factors ~5e-4 apart, ~6e-3 from 1): the epsilon alone, no
    # half-type precision (a second review).
    h = hints.get(("eps", "model.layers.4.input_layernorm"))
    assert h and "an RMSNorm epsilon of ~0.01" in h["message"], r["hints"]
    assert not any(c == "rounding" for c, _ in hints), r["hints"]
    assert abs(h["evidence"]["eps_estimate"] / 1e-2 - 1) < 0.1, h["evidence"]


def test_an_eager_port_against_an_sdpa_reference_is_told(tmp_path):
    """The ninth held-out check's `xe` (k_norm x100 on every channel, 3 tokens), bf16: our clean
    port, transformers' eager bit for bit, diverges from an sdpa reference at an attention
    output (sdpa does not round the scores to bf16: nearer the truth on attention this peaked).
    The report says the two attentions differ there (both dumps record `producer.attn`), and
    against an eager reference the port passes (docs/decode.md, "A ninth held-out check")."""
    mdir, ids, _ = make("xe", tmp_path)
    refs = {a: dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "bfloat16", "--attn", a, name=f"{a}.npz")
            for a in ("sdpa", "eager")}
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "bf16", "--out", str(ours)],
                   check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(refs["sdpa"]), "--format", "json"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    assert p.returncode == 1 and r["first_divergence"]["name"].endswith("self_attn.attn_out"), r["first_divergence"]
    # Named at the error's origin (the first divergence crosses the line later, at layer 2).
    said = [w for w in r["warnings"] if "compute attention differently: ours as eager, the reference as sdpa" in w]
    assert said and said[0].startswith(r["origin"]["name"] + ": "), (r["warnings"], r["origin"])
    assert r["origin"]["name"].endswith("self_attn.attn_out"), r["origin"]
    p = subprocess.run([str(BIN), "diff", str(ours), str(refs["eager"]), "--format", "json"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    assert p.returncode == 0 and not any("compute attention differently" in w for w in r["warnings"]), r["warnings"]


def test_a_norm_that_carries_one_rows_error_reads_no_precision(tmp_path):
    """The ninth held-out check's `xb` (k_norm x0.5, 29 tokens), bf16, `decode-mask` against an
    eager decode reference: the first divergence is layer 2's k_norm@4, whose input k_proj@4 is
    1.7e-2 off in all but 7.9e-2 in one row of small norm, which moves that row's factor by
    1.8e-2. A second review saw "its variance is summed or rounded at another precision" there
    once the `rounding` test allowed for the error its input carries, measured over the whole
    tensor; it is measured row by row (docs/hints.md, `rounding`). The fault's own hint stays."""
    import random

    mdir, ids, _ = make("xb", tmp_path)
    # The review's decode tokens (its own, not the greedy ones).
    rng = random.Random(1)
    dids = ",".join(str(rng.randrange(560)) for _ in range(10))
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "bfloat16", "--attn", "eager", "--decode-ids", dids,
               name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "bf16", "--decode-from", str(ref),
                    "--inject", "decode-mask", "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json"], capture_output=True, text=True)
    r = json.loads(p.stdout)
    assert p.returncode == 1 and r["first_divergence"]["step"] >= 1, r["first_divergence"]
    codes = [(h["code"], h["op"]) for h in r["hints"]]
    assert not any(c == "rounding" and "k_norm" in op for c, op in codes), codes
    assert any(c == "attention_spread" for c, _ in codes), codes



def test_a_norm_that_reweighs_one_channels_error_reads_no_precision(tmp_path):
    """The tenth held-out check's `yc` (one k_norm gain of 150 per layer, 64 tokens), f32, our
    clean port under `--rtol 1e-5`: the error starts at layer 1's k_norm, whose rows' factors
    (0.99996-1.00001) are one element's input error (k_proj's, up to 1.9e-4) times that gain,
    against the input's largest row error of 4.3e-6; it read "its variance is summed or rounded
    at another precision". Both sides normalise exactly there: no cause is said (docs/hints.md,
    `rounding`: each row against what the reference's norm makes of ours' input)."""
    mdir, ids, _ = make("yc", tmp_path)
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "float32", name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "f32", "--out", str(ours)],
                   check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--rtol", "1e-5", "--format", "json"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    # f32 noise past 1e-5 (the documented class); the wrong cause is what changed.
    assert p.returncode == 1 and r["origin"]["name"].endswith("k_norm"), (r["first_divergence"], r["origin"])
    assert not any(h["code"] == "rounding" for h in r["hints"]), r["hints"]
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json"], capture_output=True, text=True)
    assert p.returncode == 0, json.loads(p.stdout)["first_divergence"]


def test_a_cache_stored_in_bf16_under_one_large_gain_is_a_rounding(tmp_path):
    """The tenth held-out check's `yc`, f32, `cache-dtype=bf16`: found at layer 0's `cache_k@1`,
    with no hint: the slot's two elements of the gain-150 channels hold 99.7% of the squared
    difference, and one factor (0.99867) fitted it within 0.6%, which read as a scale. Every
    element is ref's rounded to bf16: `rounding` (docs/hints.md, the f32 pair's half-type
    rounding: a scale must take its share of most elements); since session 48 told by ours'
    own `rope_k@1` cast to bf16 at every element (docs/hints.md, `rounding` at a KV-cache
    slot)."""
    mdir, ids, _ = make("yc", tmp_path)
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "float32", "--decode", 2, name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "f32", "--decode-from", str(ref),
                    "--inject", "cache-dtype=bf16", "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--format", "json"], capture_output=True, text=True)
    r = json.loads(p.stdout)
    op = "model.layers.0.self_attn.cache_k@1"
    assert (p.returncode, where(r)) == (1, (op, 1)), r["first_divergence"]
    assert any(h["code"] == "rounding" and h["op"] == op and "cast to bfloat16 at every element" in h["message"]
               for h in r["hints"]), r["hints"]


def test_a_half_type_variance_at_a_norm_of_few_large_gains_keeps_its_hint(tmp_path):
    """A review's model (session 46: k_norm 1 but for three channels at 150, 150 and 90, a
    99-token prompt), bf16, `bf16-variance@1` under `--truth`: the origin is layer 1's
    `k_norm@2`, each row's own rsqrt off by 0.5-0.7%. A first fix of the tenth held-out check's
    wrong `rounding` fitted the rows with each element weighed by its square, so the three large
    gains decided each row and the noise floor hid the fault: no hint at all. The rows' own
    factors (the mean over their elements) read it (docs/hints.md, `rounding`)."""
    from heldout_models import REVIEW46

    mdir, ids, _ = make("r6", tmp_path)
    truth = tmp_path / "truth.npz"
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "bfloat16", "--attn", REVIEW46["r6"][4],
               "--decode", REVIEW46["r6"][3], "--truth-out", truth, name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "bf16", "--decode-from", str(ref),
                    "--inject", "bf16-variance@1", "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--truth", str(truth), "--format", "json"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    norm = "model.layers.1.self_attn.k_norm@2"
    assert p.returncode == 1 and r["origin"]["name"] == norm, (r["first_divergence"], r["origin"])
    h = next((h for h in r["hints"] if h["code"] == "rounding" and h["op"] == norm), None)
    assert h and "variance is summed or rounded" in h["message"], r["hints"]
    assert 1.003 < h["evidence"]["own_max_factor"] < 1.02, h["evidence"]


def test_one_decode_steps_noise_under_a_near_one_hot_attention_is_not_a_divergence(tmp_path):
    """The twelfth held-out check's `q3` (k_norm x30, a 2-token prompt, 24 steps), f32, with
    `--truth`: the clean port was flagged at step 20's layer-3 `attn_out`, 5.9e-5 from the truth
    against transformers' 8.2e-6 (over the 1e-5 floor), while transformers is 9.8e-5 off at
    step 13 and ours as accurate as it at most steps. Such a step is left ok, and a note says so
    (docs/tolerances.md, "The rule"). In bf16 the same model's `decode-mask@3` (0.33 from the
    truth at its `attn_out@1`, transformers 0.037 there and 0.93 at step 14) is still found: the
    rule takes float32 pairs only (a first version cleared it)."""
    from heldout_models import TWELFTH

    mdir, ids, _ = make("q3", tmp_path)
    steps, attn = TWELFTH["q3"][3], TWELFTH["q3"][4]
    for dtype, dt, fault in [("float32", "f32", None), ("bfloat16", "bf16", "decode-mask@3")]:
        truth = tmp_path / f"truth.{dt}.npz"
        ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", dtype, "--attn", attn,
                   "--decode", steps, "--truth-out", truth, name=f"ref.{dt}.npz")
        ours = tmp_path / f"ours.{dt}.npz"
        subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", dt, "--decode-from", str(ref),
                        *(["--inject", fault] if fault else []), "--out", str(ours)],
                       check=True, capture_output=True, text=True)
        p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--truth", str(truth), "--format", "json"],
                           capture_output=True, text=True)
        r = json.loads(p.stdout)
        if fault is None:
            notes = [n for n in r["notes"] if "decode-step rows over the noise ratio" in n]
            if p.returncode == 0:
                assert r["first_divergence"] is None, r["first_divergence"]
                assert notes and "layers.3.self_attn.attn_out@20" in notes[0], r["notes"]
            else:
                # On the AMD EPYC hosts (sessions 52-53; `_cpu`) our port's f32 noise at layer
                # 2's attn_out@20 is 3.2e-5 to 3.4e-5 from the truth, past the reference's own
                # largest error at that op (2.4e-5, step 14): the clean port is flagged there
                # (docs/tolerances.md, "The rule": clean f32 decodes of extreme k_norm gains).
                # Only such rows: born at a decode step's attn_out at f32 noise, and the ops of
                # that layer and step that carry it. The layer-3 row the rule was made for is
                # left ok, with the note (session 52's host), or not over the ratio at all
                # (session 53's: no note).
                assert all("self_attn.attn_out@" in n for n in notes), (CPU, notes)
                origin = r["origin"]["name"]
                assert p.returncode == 1 and origin.split("@")[0].endswith(".self_attn.attn_out"), (CPU, r["origin"])
                layer, step = r["first_divergence"]["layer"], r["first_divergence"]["step"]
                assert step > 0 and r["first_divergence"]["name"] == origin, r["first_divergence"]
                for o in (o for o in r["ops"] if o["status"] == "diverged"):
                    assert (o["layer"], o["step"]) == (layer, step), o["name"]
                    assert o["ours_truth_rel_err"] < 5e-5, (o["name"], o["ours_truth_rel_err"])
            # A fault at one step, 2.5e-4 off at its attn_out@1 (25x the reference there, past
            # its 9.8e-5 at step 13): flagged there (a review: the first version passed it).
            bad = tmp_path / "one_step.npz"
            one_step_noise(ours, bad, "model.layers.3.self_attn.attn_out@steps", 0, 2.5e-4)
            p = subprocess.run([str(BIN), "diff", str(bad), str(ref), "--truth", str(truth), "--format", "json"],
                               capture_output=True, text=True)
            r = json.loads(p.stdout)
            assert (p.returncode, where(r)) == (1, ("model.layers.3.self_attn.attn_out@1", 1)), r["first_divergence"]
        else:
            op = "model.layers.3.self_attn.attn_out@1"
            assert (p.returncode, where(r)) == (1, (op, 1)), r["first_divergence"]


def one_step_noise(src, dst, member, index, rel):
    """`src` copied to `dst` with the float32 array `member` (a stacked decode probe) given
    noise of relative L2 size `rel` at its leading index `index` (seeded)."""
    import io
    import zipfile

    import numpy as np

    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            if info.filename == member + ".npy":
                a = np.load(io.BytesIO(data))
                x = a[index].astype(np.float64)
                noise = np.random.default_rng(0).standard_normal(x.shape)
                noise *= rel * np.linalg.norm(x) / np.linalg.norm(noise)
                a = a.copy()
                a[index] = (x + noise).astype(a.dtype)
                b = io.BytesIO()
                np.lib.format.write_array(b, a)
                data = b.getvalue()
            zo.writestr(info, data)


def test_an_epsilon_over_bf16_rows_of_noisy_inputs_is_named(tmp_path):
    """The twelfth held-out check's `q4` (a 90-token prompt, sdpa reference), bf16, one pass,
    `rms-eps=1e-2@1`: 90 row factors 0.863 to 0.973, the epsilon estimates 0.00975 to 0.01022,
    but the rows 1.01e-2 from factors times the reference's (the clean run's 1.00e-2 at that
    norm, rows up to 1.95e-2: its input's bf16 noise), over the rule's 1e-2: no hint. Half types
    allow 3e-2 (docs/hints.md, `eps`)."""
    from heldout_models import TWELFTH

    mdir, ids, _ = make("q4", tmp_path)
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "bfloat16", "--attn", TWELFTH["q4"][4],
               name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "bf16",
                    "--inject", "rms-eps=1e-2@1", "--out", str(ours)], check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--model", str(mdir), "--format", "json"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    op = "model.layers.1.input_layernorm"
    assert (p.returncode, r["first_divergence"]["name"]) == (1, op), r["first_divergence"]
    h = next((h for h in r["hints"] if h["code"] == "eps" and h["op"] == op), None)
    assert h and 0.009 < h["evidence"]["eps_estimate"] < 0.011, r["hints"]


def test_a_zero_keys_one_share_in_every_head_is_named(tmp_path):
    """The thirteenth held-out check's `z4` (60 tokens of flat attention, q/k-norm gains x0.5, 8
    q heads on 1 kv head), f16, `decode-mask`: the unwritten slot takes the same share of every
    head at step 1, each head ours' times 0.984-0.985 (a pure scale each), within f16's noise of
    one another and within 2e-2 of 1, under `scale`'s gate: no hint until session 57. Now an
    `attention_spread`: naming both readings (a zero key's share, or each head scaled), or the
    zero key alone where a head's factor is seen to move at the next steps (against this eager
    reference the largest move by step 4 is within 2% of that bound: either, by the host; the
    sdpa reference's moves past it). Never a `scale` (docs/hints.md, `attention_spread`)."""
    from heldout_models import THIRTEENTH

    mdir, ids, _ = make("z4", tmp_path)
    steps = THIRTEENTH["z4"][3]
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "float16", "--attn", "eager",
               "--decode", steps, name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "f16",
                    "--decode-from", str(ref), "--inject", "decode-mask", "--out", str(ours)],
                   check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--model", str(mdir), "--format", "json"],
                       capture_output=True, text=True)
    r = json.loads(p.stdout)
    op = "model.layers.0.self_attn.attn_out@1"
    assert (p.returncode, r["first_divergence"]["name"]) == (1, op), r["first_divergence"]
    at = [h for h in r["hints"] if h["op"] == op and h["code"] != "attention_kernel"]
    assert [h["code"] for h in at] == ["attention_spread"], r["hints"]
    both = at[0]["message"].endswith(", or each head's output is scaled")
    assert both != ("moved_at_step" in at[0]["evidence"]), at[0]
    assert 0.97 < at[0]["evidence"]["min_factor"] <= at[0]["evidence"]["max_factor"] < 0.99, at[0]


def test_two_heads_zero_key_shares_too_small_to_move_in_bf16_are_not_a_scale(tmp_path):
    """The fifteenth held-out check's `t2` (2 q heads of 256 on 1 kv head, hidden 64, 17 tokens,
    realistic q/k-norm gains x1.2, sdpa), bf16, `decode-mask`: the unwritten slot's share scales
    layer 0's two heads by ~0.989 and ~0.970 at step 1 and they keep those factors within bf16's
    noise to step 4, where shares of 1.1e-2 and 3.0e-2 would move at most 2.5e-3 in three steps
    (bf16's bound: 3.9e-3). Until session 58 that read "a scale per head, not attention to keys
    whose values are zero"; now both readings (docs/hints.md, `attention_spread`). Never a
    `scale`, under the preset or `--truth`."""
    from heldout_models import FIFTEENTH

    mdir, ids, _ = make("t2", tmp_path)
    steps = FIFTEENTH["t2"][3]
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "bfloat16", "--attn", "sdpa",
               "--decode", steps, "--truth-out", tmp_path / "truth.npz", name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "bf16",
                    "--decode-from", str(ref), "--inject", "decode-mask", "--out", str(ours)],
                   check=True, capture_output=True, text=True)
    op = "model.layers.0.self_attn.attn_out@1"
    for judge in ([], ["--truth", str(tmp_path / "truth.npz")]):
        p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--model", str(mdir), "--format",
                            "json", *judge], capture_output=True, text=True)
        assert p.returncode == 1, p.stderr
        r = json.loads(p.stdout)
        assert (r["origin"] or r["first_divergence"])["name"] == op, (r["first_divergence"], r["origin"])
        at = [h for h in r["hints"] if h["op"] == op and h["code"] != "attention_kernel"]
        assert [h["code"] for h in at] == ["attention_spread"], (judge, r["hints"])
        assert_kernel_computes_otherwise(r, op, judge)
        assert "moved_at_step" in at[0]["evidence"] or at[0]["message"].endswith(
            ", or each head's output is scaled"), at[0]


def test_an_attention_flagged_on_its_inputs_error_is_said_to_compute_as_the_references(tmp_path):
    """`REVIEW47`'s `m8` (k_norm x100 on every channel, 4 tokens, 40 steps), clean f32 decode,
    `--truth`: flagged at a decode step's `attn_out` on the session-58 host (AMD EPYC, AVX-512;
    whether it is flagged depends on the CPU, docs/tolerances.md), where ours' attention is the
    float64 attention of its own dumped query, keys and values within ~1e-6, as transformers'
    is of its own: the `attention_kernel` hint says the error came with those inputs, never
    that the attention computes otherwise (docs/hints.md). Where this host passes it, nothing
    is said and nothing is asserted but the pass."""
    from heldout_models import REVIEW47

    mdir, ids, _ = make("m8", tmp_path)
    steps = REVIEW47["m8"][3]
    truth = tmp_path / "truth.npz"
    ref = dump(tmp_path, "--model", mdir, "--ids", ids, "--dtype", "float32", "--attn", "eager",
               "--decode", steps, "--truth-out", truth, name="ref.npz")
    ours = tmp_path / "ours.npz"
    subprocess.run([str(BIN), "run", "--model", str(mdir), "--ids", ids, "--dtype", "f32",
                    "--decode-from", str(ref), "--out", str(ours)],
                   check=True, capture_output=True, text=True)
    p = subprocess.run([str(BIN), "diff", str(ours), str(ref), "--model", str(mdir), "--truth",
                        str(truth), "--format", "json"], capture_output=True, text=True)
    assert p.returncode in (0, 1), p.stderr
    r = json.loads(p.stdout)
    if p.returncode == 0:
        assert not any(h["code"] == "attention_kernel" for h in r["hints"]), r["hints"]
        return
    first = r["first_divergence"]["name"]
    h = kernel_hint(r, first)
    if ".attn_out@" not in first:
        return
    assert h is not None, r["hints"]
    assert "computes as the reference's does" in h["message"], h
    assert h["evidence"]["ours_from_own_recompute"] < 1e-5, h
