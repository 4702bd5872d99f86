"""Part 4: decode on r1, r2, r4: clean, every KV-cache fault, f32/bf16, presets + truth; prefill-vs-decode."""
import sys, json, os, numpy as np
sys.path.insert(0, "/tmp/held41"); from lib import *
def meta(p):
    with np.load(p) as z: return json.loads(z["__meta__"].tobytes())
f = open(f"{R}/out/decode.jsonl", "a")
for n in sys.argv[1:]:
    c = info(n)["cfg"]; last = c["num_hidden_layers"] - 1
    FA = [("-", None), ("decode-pos=1", "model.rotary_emb@1"), ("decode-pos=-1", "model.rotary_emb@1"),
          ("decode-pos-frozen", "model.rotary_emb@2"), ("cache-pre-rope", "model.layers.0.self_attn.cache_k@1"),
          ("cache-pre-norm@1", "model.layers.1.self_attn.cache_k@1"), ("cache-overwrite", "model.layers.0.self_attn.cache_k@1"),
          ("cache-overwrite=first", "model.layers.0.self_attn.cache_k@1"),
          (f"cache-overwrite=last@{last}", f"model.layers.{last}.self_attn.cache_k@1"),
          ("cache-dtype=bf16", "model.layers.0.self_attn.cache_k@1"), ("cache-dtype=f16", "model.layers.0.self_attn.cache_k@1"),
          ("decode-mask", "model.layers.0.self_attn.attn_out@1")]
    for dt in ("f32", "bf16"):
        ref = f"{R}/{n}/dref.{dt}.npz"; tr = f"{R}/{n}/dtruth.{dt}.npz"
        for fault, op in FA:
            o = f"{R}/{n}/ours/dec.{dt}.{fault}.npz"
            rc, se = run(n, ["--dtype", dt, "--decode-from", ref] + ([] if fault == "-" else ["--inject", fault]), o, f"{n} dec {dt} {fault}")
            base = dict(model=n, dt=dt, fault=fault, op=op, run_rc=rc, run_err=se[-300:] if rc else "")
            if rc: rec(f, base); print(n, dt, fault, "RUN", rc, se[-200:], flush=True); continue
            for mode, ex in (("preset", []), ("truth", ["--truth", tr])) + ((("rtol1e-5", ["--rtol", "1e-5"]),) if fault == "cache-dtype=f16" else ()):
                r = diff(o, ref, ex, model=n, tag=f"{n} dec {dt} {fault} {mode}")
                j = r.get("_j", {})
                pre = [x["name"] for x in j.get("ops", []) if x.get("step", 0) == 0 and x.get("status") not in ("ok", "only_in_ours", "only_in_ref")]
                rec(f, dict(base, mode=mode, prefill_divs=pre[:5], **r))
                print(n, dt, fault, mode, r["rc"], r.get("first"), r.get("origin"), r.get("hints"), "prefill_div", pre[:2], r.get("at_first"), flush=True)
        # prefill-vs-decode: a full prefill over prompt+decode ids against our stepped run (clean and two faults)
        m = meta(ref); full_ids = m["input_ids"] + m["decode_ids"]
        full = f"{R}/{n}/ours/full.{dt}.npz"
        a = [B, "run", "--model", f"{R}/{n}/model", "--ids", ",".join(map(str, full_ids)), "--dtype", dt, "--out", full]
        rc, so, se = sh(a); check_err(f"{n} full {dt}", rc, se)
        for fault in ("-", "cache-overwrite", "decode-pos=1", "cache-pre-norm@1", "decode-mask"):
            o = f"{R}/{n}/ours/dec.{dt}.{fault}.npz"
            if not os.path.exists(o): continue
            for order in ("full_first", "stepped_first"):
                args = (full, o) if order == "full_first" else (o, full)
                r = diff(*args, ["--prefill-vs-decode"], tag=f"{n} pvd {dt} {fault} {order}")
                rec(f, dict(model=n, dt=dt, fault=fault, mode="pvd-" + order, **r))
                print(n, dt, "PVD", fault, order, r["rc"], r.get("first"), r.get("origin"), r.get("hints"), r.get("err", "")[:200], flush=True)
