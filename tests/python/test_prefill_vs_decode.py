"""`divergence diff --prefill-vs-decode` on hand-made dumps: a probe outside the dump contract
(its token axis not known by name) whose decode steps fit the full prefill is compared at every
step, and a step of another shape is a shape mismatch (exit 1), not a probe "only in ours" and a
pass; the warnings say why a probe has no slice (no such probe, or shapes that fit no step)."""

from __future__ import annotations

import json
import subprocess

import numpy as np

from test_roundtrip_rust import BIN, diff, pytestmark  # noqa: F401  (skip without the binary)

T, PRE = 6, 4  # the full prefill's tokens; the stepped run's prefill (then 2 decode steps)
IDS = [1, 2, 3, 4, 5, 6]


def save(path, arrays, **meta):
    m = {"format": "divergence-dump/1", "order": list(arrays), **meta}
    np.savez(path, **arrays, __meta__=np.frombuffer(json.dumps(m).encode(), dtype=np.uint8))
    return path


def pair(tmp_path, step2=None, full_extra=None):
    rng = np.random.default_rng(1)
    full = {
        "model.embed_tokens": rng.standard_normal((1, T, 8)).astype(np.float32),
        "mlp_out": rng.standard_normal((1, T, 8)).astype(np.float32),
        "attn_weights": rng.standard_normal((1, 2, T, T)).astype(np.float32),
    }
    full.update(full_extra or {})
    stepped = {}
    for k in ("model.embed_tokens", "mlp_out"):
        stepped[k] = full[k][:, :PRE]
    stepped["attn_weights"] = full["attn_weights"][:, :, :PRE, :PRE]
    for s in (1, 2):
        for k in ("model.embed_tokens", "mlp_out"):
            stepped[f"{k}@{s}"] = full[k][:, PRE + s - 1:PRE + s]
        # the weights over the cache so far: a shape that follows the cache's length
        stepped[f"attn_weights@{s}"] = full["attn_weights"][:, :, PRE + s - 1:PRE + s, :PRE + s]
    if step2 is not None:
        stepped["mlp_out@2"] = step2(stepped["mlp_out@2"])
    a = save(tmp_path / "full.npz", full, input_ids=IDS)
    b = save(tmp_path / "stepped.npz", stepped, input_ids=IDS[:PRE], decode_steps=2,
             decode_ids=IDS[PRE:], decode_source="given")
    return a, b


def test_a_clean_pair_passes_and_says_why_the_weights_have_no_slice(tmp_path):
    rc, rep = diff(*pair(tmp_path), "--prefill-vs-decode")
    assert rc == 0, rep["first_divergence"]
    # the order is the stepped run's, from its metadata (said "reference metadata" until
    # 2026-12-03, found by a bad-input hunt), and the header says so
    assert rep["order_source"] == "stepped_meta"
    out = subprocess.run([BIN, "diff", *map(str, pair(tmp_path)), "--prefill-vs-decode",
                          "--format", "table"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "order:     the stepped run's metadata" in out.stdout
    assert "the reference has none" not in out.stdout
    rows = {o["name"]: o["status"] for o in rep["ops"]}
    assert rows["mlp_out@2"] == rows["mlp_out@1"] == "ok"
    # the weights fit at the last step only, whose cache is as long as the full prefill
    assert (rows["attn_weights"], rows["attn_weights@1"], rows["attn_weights@2"]) == (
        "only_ours", "only_ours", "ok")
    (w,) = [w for w in rep["warnings"] if w.startswith("prefill-vs-decode:") and "attn_weights" in w]
    assert "no slice of that probe fits them" in w and "no probe of that name" not in w


def test_the_order_is_said_to_be_the_stepped_runs(tmp_path):
    # no order recorded by the stepped run (the full prefill's is not the rows'): its file's
    a, b = pair(tmp_path)
    with np.load(b) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(bytes(z["__meta__"]))
    del meta["order"]
    np.savez(b, **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    rc, rep = diff(a, b, "--prefill-vs-decode")
    assert (rc, rep["order_source"]) == (0, "stepped_file")
    # the same under --steps, which plans again over the steps selected
    rc, rep = diff(*pair(tmp_path), "--prefill-vs-decode", "--steps", "1-2")
    assert (rc, rep["order_source"]) == (0, "stepped_meta")


def test_a_safetensors_stepped_run_without_an_order_goes_in_forward_order(tmp_path):
    # its writer sorts the names: `lm_head` (downstream of everything) would come first and be
    # "the first divergence" (found by a bad-input hunt); the canonical forward order puts the
    # embeddings first, step by step, and says so
    from safetensors.numpy import save_file

    rng = np.random.default_rng(2)
    logits = rng.standard_normal((1, T, 5)).astype(np.float32)
    a, b = pair(tmp_path, full_extra={"lm_head": logits})
    with np.load(b) as z:
        stepped = {k: np.ascontiguousarray(z[k]) for k in z.files if k != "__meta__"}
    stepped["lm_head"] = logits[:, :PRE].copy()
    for s in (1, 2):
        stepped[f"lm_head@{s}"] = logits[:, PRE + s - 1:PRE + s].copy()
    # an error from step 1's embeddings on, carried to its logits
    stepped["model.embed_tokens@1"] = stepped["model.embed_tokens@1"] + 0.5
    stepped["lm_head@1"] = stepped["lm_head@1"] + 0.5
    st = tmp_path / "stepped.safetensors"
    save_file(stepped, str(st))
    rc, rep = diff(a, st, "--prefill-vs-decode")
    assert rc == 1, rep["warnings"]
    assert rep["order_source"] == "canonical"
    assert rep["first_divergence"]["name"] == "model.embed_tokens@1", rep["first_divergence"]
    assert any("no recorded order" in w and "canonical forward order" in w for w in rep["warnings"])
    steps = [o["step"] for o in rep["ops"]]
    assert steps == sorted(steps)


def test_a_step_of_another_shape_is_a_shape_mismatch(tmp_path):
    wide = lambda v: np.concatenate([v, v], -1)  # noqa: E731  (hidden 16 at step 2 only)
    rc, rep = diff(*pair(tmp_path, step2=wide), "--prefill-vs-decode")
    assert rc == 1, rep["warnings"]
    f = rep["first_divergence"]
    assert (f["name"], f["status"], f["step"]) == ("mlp_out@2", "shape_mismatch", 2)
    assert not any("mlp_out" in w for w in rep["warnings"]), rep["warnings"]


def test_a_probe_missing_from_the_full_prefill_is_said_so(tmp_path):
    a, b = pair(tmp_path)
    with np.load(b) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(bytes(z["__meta__"]))
    arrays["extra"] = np.ones((1, PRE, 3), np.float32)
    arrays["extra@1"] = arrays["extra@2"] = np.ones((1, 1, 3), np.float32)
    meta.pop("order")
    save(b, arrays, **{k: v for k, v in meta.items() if k != "format"})
    rc, rep = diff(a, b, "--prefill-vs-decode")
    assert rc == 0
    (w,) = [w for w in rep["warnings"] if w.startswith("prefill-vs-decode:") and "extra" in w]
    assert "no probe of that name there" in w and "attn_weights" not in w


def without(b, drop):
    """Rewrites the stepped dump `b` without the probes named in `drop`."""
    with np.load(b) as z:
        arrays = {k: z[k] for k in z.files if k not in ("__meta__", *drop)}
        meta = json.loads(bytes(z["__meta__"]))
    meta.pop("order")
    save(b, arrays, **{k: v for k, v in meta.items() if k != "format"})


def test_a_probe_the_stepped_run_lacks_at_a_step_is_only_in_the_full_prefill(tmp_path):
    # Found by a bad-input hunt: decode steps holding the embeddings alone passed as "no
    # divergence", missing 0 at every step. Now each probe held at the prefill or at another
    # step is a row only in the full prefill where it is missing, in its step's rows, said.
    a, b = pair(tmp_path)
    without(b, ["mlp_out@1"])
    rc, rep = diff(a, b, "--prefill-vs-decode")
    assert rc == 0
    names = [o["name"] for o in rep["ops"]]
    rows = {o["name"]: o for o in rep["ops"]}
    assert rows["mlp_out@1"]["status"] == "only_ref"
    assert rows["mlp_out@2"]["status"] == "ok"
    # in step 1's rows, before step 2's
    assert names.index("model.embed_tokens@1") < names.index("mlp_out@1") < names.index(
        "model.embed_tokens@2")
    # (and the attention weights of the prefill and step 1, only in ours: no slice fits)
    assert [s["missing"] for s in rep["steps"]] == [1, 2, 0]
    (w,) = [w for w in rep["warnings"] if "missing at a decode step" in w]
    assert "1 rows (1 probes)" in w and "mlp_out@1" in w
    # placed in its step's rows by the pair, not put there by the plan's step sort
    assert not any("out of order" in w for w in rep["warnings"]), rep["warnings"]

    # Held at the prefill alone: shaped as its prefill at one position.
    a, b = pair(tmp_path)
    without(b, ["mlp_out@1", "mlp_out@2"])
    rc, rep = diff(a, b, "--prefill-vs-decode")
    rows = {o["name"]: o for o in rep["ops"]}
    assert (rows["mlp_out@1"]["status"], rows["mlp_out@2"]["status"]) == ("only_ref",) * 2
    assert rows["mlp_out@1"]["shape"] == [1, 1, 8]
    assert [s["missing"] for s in rep["steps"]] == [1, 2, 1]
    # the prefill not selected: still its slice's shape
    rc, rep = diff(a, b, "--prefill-vs-decode", "--steps", "1-2")
    rows = {o["name"]: o for o in rep["ops"]}
    assert rows["mlp_out@1"]["status"] == "only_ref" and rows["mlp_out@1"]["shape"] == [1, 1, 8]

    # A step whose probes have no slice but for those missing: nothing of it compares (exit 2).
    a, b = pair(tmp_path)
    without(b, ["mlp_out@1", "model.embed_tokens@1"])
    r = subprocess.run([str(BIN), "diff", str(a), str(b), "--prefill-vs-decode"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nothing of that step could be compared" in r.stderr, r.stderr


def test_a_probe_of_the_full_prefill_the_stepped_run_lacks_is_only_in_the_full_prefill(tmp_path):
    # Found by a bad-input hunt (2026-12-05): a probe the full prefill holds and the stepped run
    # lacks at every step, or lacks at its prefill alone, had no row, and the pair passed with
    # missing 0 at every step (the mirror case, a probe only the stepped run holds, is "only in
    # ours"). Now each is one row only in the full prefill, at the prefill, said.
    rng = np.random.default_rng(5)
    mlp = rng.standard_normal((1, T, 8)).astype(np.float32)
    extra = {"norm": rng.standard_normal((1, T, 8)).astype(np.float32),
             "scale": np.ones(3, np.float32),  # no axis of T tokens
             "model.layers.0.mlp": mlp}
    a, b = pair(tmp_path, full_extra=extra)
    with np.load(b) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(bytes(z["__meta__"]))
    # a probe of the dump contract at the decode steps alone: its prefill is missing
    for s in (1, 2):
        arrays[f"model.layers.0.mlp@{s}"] = mlp[:, PRE + s - 1:PRE + s]
    meta.pop("order")
    save(b, arrays, **{k: v for k, v in meta.items() if k != "format"})
    # the attention weights (two axes of T tokens) nowhere, mlp_out (no contract name) at the
    # decode steps alone
    without(b, ["attn_weights", "attn_weights@1", "attn_weights@2", "mlp_out"])
    rc, rep = diff(a, b, "--prefill-vs-decode")
    assert rc == 0, rep["first_divergence"]
    rows = {o["name"]: o for o in rep["ops"]}
    # whole where the token axis is not known by name (attention weights: a guessed axis was
    # the heads' where they number T; a review), the prefill's slice where it is
    assert [(n, rows[n]["status"], rows[n]["shape"]) for n in (
        "model.layers.0.mlp", "mlp_out", "attn_weights", "norm", "scale")] == [
        ("model.layers.0.mlp", "only_ref", [1, PRE, 8]),
        ("mlp_out", "only_ref", [1, T, 8]),
        ("attn_weights", "only_ref", [1, 2, T, T]),
        ("norm", "only_ref", [1, T, 8]), ("scale", "only_ref", [3])]
    # one row a probe (the one tensor the full prefill holds), not one a step
    assert not {"norm@1", "norm@2", "scale@1", "attn_weights@1"} & set(rows)
    assert rows["mlp_out@1"]["status"] == rows["model.layers.0.mlp@2"]["status"] == "ok"
    assert [s["missing"] for s in rep["steps"]] == [5, 0, 0]
    (w,) = [w for w in rep["warnings"] if "are missing from" in w]
    assert "5 probes of" in w and "norm" in w and "listed as only in" in w
    # the prefill not selected: no row, the warning still says so
    rc, rep = diff(a, b, "--prefill-vs-decode", "--steps", "1-2")
    assert rc == 0
    assert not {"norm", "scale", "mlp_out"} & {o["name"] for o in rep["ops"]}
    (w,) = [w for w in rep["warnings"] if "are missing from" in w]
    assert "not listed, the prefill not being compared" in w and "norm" in w


def test_steps_the_metadata_promises_are_checked_before_the_tokens(tmp_path):
    # Found by a bad-input hunt (2026-12-05): a stepped file of 2 steps whose metadata promises
    # 3 (and a full prefill of the 7 tokens) was refused for its token count, 4 + 2 = 6.
    a, b = pair(tmp_path)
    with np.load(b) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(bytes(z["__meta__"]))
    meta.update(decode_steps=3, decode_ids=IDS[PRE:] + [7])
    save(b, arrays, **{k: v for k, v in meta.items() if k != "format"})
    with np.load(a) as z:
        full = {k: z[k] for k in z.files if k != "__meta__"}
    full = {k: np.concatenate([v, v[..., -1:, :]], -2) if k != "attn_weights" else v
            for k, v in full.items()}
    save(a, full, input_ids=IDS + [7])
    r = subprocess.run([str(BIN), "diff", str(a), str(b), "--prefill-vs-decode"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "metadata says 3 decode steps, but step 3 has no probe" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_attention_weights_over_a_padded_cache_are_no_evidence(tmp_path):
    # A cache padded to a multiple of 4 keys (as engines bucket it): the weights of steps 2
    # and 3 fit the full prefill's rows, step 1's and the prefill's do not, and that is no
    # bug (found by a review: the first version called the prefill's a shape mismatch).
    pad = lambda n: -(-n // 4) * 4  # noqa: E731
    t, pre = 6, 3
    rng = np.random.default_rng(1)
    full = {"model.embed_tokens": rng.standard_normal((1, t, 8)).astype(np.float32),
            "attn_weights": rng.standard_normal((1, 2, t, pad(t))).astype(np.float32)}
    stepped = {"model.embed_tokens": full["model.embed_tokens"][:, :pre],
               "attn_weights": full["attn_weights"][:, :, :pre, :pad(pre)]}
    for s in (1, 2, 3):
        stepped[f"model.embed_tokens@{s}"] = full["model.embed_tokens"][:, pre + s - 1:pre + s]
        stepped[f"attn_weights@{s}"] = full["attn_weights"][:, :, pre + s - 1:pre + s, :pad(pre + s)]
    a = save(tmp_path / "full.npz", full, input_ids=IDS)
    b = save(tmp_path / "stepped.npz", stepped, input_ids=IDS[:pre], decode_steps=3,
             decode_ids=IDS[pre:], decode_source="given")
    rc, rep = diff(a, b, "--prefill-vs-decode")
    assert rc == 0, rep["first_divergence"]
    rows = {o["name"]: o["status"] for o in rep["ops"]}
    assert (rows["attn_weights"], rows["attn_weights@1"]) == ("only_ours", "only_ours")


def test_token_positions_are_the_stepped_runs_without_its_input_ids(tmp_path):
    # The stepped run records no input_ids: its positions are still its prefill's rows, then
    # step s at PRE + s - 1 (a review found them taken from the full prefill's longer prompt,
    # every position k too far).
    rng = np.random.default_rng(2)
    full = {"model.embed_tokens": rng.standard_normal((1, T, 8)).astype(np.float32),
            "lm_head": rng.standard_normal((1, T, 16)).astype(np.float32)}
    stepped = {k: v[:, :PRE] for k, v in full.items()}
    for s in (1, 2):
        for k, v in full.items():
            stepped[f"{k}@{s}"] = v[:, PRE + s - 1:PRE + s].copy()
    logits = stepped["lm_head@2"]
    top = logits[0, 0].argsort()[::-1][:2]
    logits[0, 0, top[0]], logits[0, 0, top[1]] = logits[0, 0, top[1]] - 1, logits[0, 0, top[0]]
    a = save(tmp_path / "full.npz", full, input_ids=IDS)
    b = save(tmp_path / "stepped.npz", stepped, decode_steps=2, decode_ids=IDS[PRE:],
             decode_source="given")
    rc, rep = diff(a, b, "--prefill-vs-decode")
    assert rc == 1, rep["warnings"]
    f = rep["tokens"]["first_flip"]
    assert (f["step"], f["position"]) == (2, PRE + 1), rep["tokens"]
