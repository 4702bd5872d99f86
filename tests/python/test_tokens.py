"""The report's token-level effect (`tokens`: top-1 agreement, top-5 overlap, KL divergence of the
next-token distributions, first flipped token) against torch computing the same from the same
logits in float64 (F.log_softmax, F.kl_div, topk), on real transformers dumps."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FIXTURES
from test_roundtrip_rust import diff, pytestmark  # noqa: F401  (skip without the binary)

PAIRS = [
    (FIXTURES / "demo" / "ours.npz", FIXTURES / "demo" / "ref.npz"),
    (FIXTURES / "ref" / "tiny-qwen3.bf16.eager.npz", FIXTURES / "ref" / "tiny-qwen3.f32.eager.npz"),
    (FIXTURES / "ref" / "tiny-qwen3.bf16.sdpa.npz", FIXTURES / "ref" / "tiny-qwen3.f64.eager.npz"),
]


def _logit_transforms():
    """Our logits made from the reference's: what a softmax does not see (a constant), and the
    extremes (a sure reference, one huge or far-off logit) that the KLD's fast form must survive."""
    def shifted(r, rng):  # ours 40 below, a little noise, the top token flipped at position 3
        o = r * (1 + 1e-3 * rng.standard_normal(r.shape)) - 40
        t = np.argsort(-r[3])[:2]
        o[3, t[0]], o[3, t[1]] = r[3, t[1]] - 40 - 3, r[3, t[0]] - 40
        return o

    def sure_ref(r, rng):  # the reference 40 above its runner-up at every position; ours not
        o = r * (1 + 1e-2 * rng.standard_normal(r.shape))
        r = r.copy()
        r[np.arange(len(r)), r.argmax(-1)] += 40
        return o, r

    def extremes(r, rng):  # one logit of ours 1e4 up, and one 1e3 down, at other positions
        o = r * (1 + 1e-3 * rng.standard_normal(r.shape))
        o[1, 7] = 1e4
        o[2, 9] = -1e3
        return o

    return {"shifted": shifted, "sure_ref": sure_ref, "extremes": extremes}


@pytest.mark.parametrize("kind", sorted(_logit_transforms()))
def test_the_kld_of_odd_logits_matches_torch(tmp_path, kind):
    import json
    import zipfile

    ref = FIXTURES / "ref" / "tiny-qwen3.f32.eager.npz"
    with np.load(ref) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = z["__meta__"]
    r = arrays["lm_head"].astype(np.float64).reshape(-1, 512)
    got = _logit_transforms()[kind](r, np.random.default_rng(5))
    o, r = got if isinstance(got, tuple) else (got, r)
    shape = arrays["lm_head"].shape
    pair = []
    for name, logits in (("ours", o), ("ref", r)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{**arrays, "lm_head": logits.reshape(shape).astype(np.float64)}, __meta__=meta)
        pair.append(path)
    assert json.loads(bytes(meta))["order"] and zipfile.is_zipfile(pair[0])
    test_tokens_match_torch(*pair)


@pytest.mark.parametrize("ours, ref", PAIRS)
def test_tokens_match_torch(ours, ref):
    import torch
    import torch.nn.functional as F

    _, report = diff(ours, ref)
    t = report["tokens"]
    o = torch.from_numpy(np.load(ours)["lm_head"].astype(np.float64)).reshape(-1, 512)
    r = torch.from_numpy(np.load(ref)["lm_head"].astype(np.float64)).reshape(-1, 512)
    lo, lr = F.log_softmax(o, -1), F.log_softmax(r, -1)
    # KL(P_ref || P_ours) per position: kl_div(input=log q, target=log p, log_target=True).
    kld = F.kl_div(lo, lr, reduction="none", log_target=True).sum(-1)
    assert t["positions"] == o.shape[0] and t["nonfinite_positions"] == 0
    got = np.array([p["kld"] for p in t["per_position"]])
    np.testing.assert_allclose(got, kld.numpy(), rtol=1e-9, atol=1e-15)
    assert t["mean_kld"] == pytest.approx(kld.mean().item(), rel=1e-9, abs=1e-15)
    assert t["max_kld"] == pytest.approx(kld.max().item(), rel=1e-9, abs=1e-15)
    agree = (o.argmax(-1) == r.argmax(-1))
    assert t["top1_agree"] == int(agree.sum())
    assert [p["top1_agree"] for p in t["per_position"]] == agree.tolist()
    # Ties (common in bf16 logits) go to the lower token id, as argmax and a stable sort do.
    top5 = lambda x: np.argsort(-x.numpy(), axis=-1, kind="stable")[:, :5]  # noqa: E731
    to, tr = top5(o), top5(r)
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(to, tr)])
    assert t["top5_overlap"] == pytest.approx(overlap, rel=1e-12)
    flips = (~agree).nonzero().flatten().tolist()
    if not flips:
        assert t["first_flip"] is None
    else:
        p = flips[0]
        f = t["first_flip"]
        assert (f["position"], f["ours_token"], f["ref_token"]) == (p, int(o[p].argmax()), int(r[p].argmax()))
        assert f["ref_token_rank_in_ours"] == 1 + int((o[p] > o[p, r[p].argmax()]).sum())
        assert f["ours_token_rank_in_ref"] == 1 + int((r[p] > r[p, o[p].argmax()]).sum())
        # Each side's margin between the two tokens (session 59), from the stored values.
        ra, oa = int(r[p].argmax()), int(o[p].argmax())
        rd, od = r[p].double(), o[p].double()
        assert f["ref_margin"] == pytest.approx(float(rd[ra] - rd[oa]), rel=1e-12, abs=0)
        assert f["ours_margin"] == pytest.approx(float(od[oa] - od[ra]), rel=1e-12, abs=0)
        assert f["ref_top_logit"] == float(rd[ra])
