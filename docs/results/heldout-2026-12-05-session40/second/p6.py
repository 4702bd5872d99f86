"""f16 decode (extra): r1, r4."""
import sys
sys.path.insert(0, "/tmp/held41"); from lib import *
f = open(f"{R}/out/decode_f16.jsonl", "a")
for n in sys.argv[1:]:
    c = info(n)["cfg"]; last = c["num_hidden_layers"] - 1
    FA = [("-", None), ("decode-pos=1", "model.rotary_emb@1"), ("decode-pos-frozen", "model.rotary_emb@2"),
          ("cache-pre-rope", "model.layers.0.self_attn.cache_k@1"), ("cache-pre-norm@1", "model.layers.1.self_attn.cache_k@1"),
          ("cache-overwrite", "model.layers.0.self_attn.cache_k@1"), ("cache-dtype=bf16", "model.layers.0.self_attn.cache_k@1"),
          ("cache-dtype=f16", "REFUSE"), ("decode-mask", "model.layers.0.self_attn.attn_out@1")]
    ref = f"{R}/{n}/dref.f16.npz"; tr = f"{R}/{n}/dtruth.f16.npz"
    for fault, op in FA:
        o = f"{R}/{n}/ours/dec.f16.{fault}.npz"
        rc, se = run(n, ["--dtype", "f16", "--decode-from", ref] + ([] if fault == "-" else ["--inject", fault]), o, f"{n} dec f16 {fault}")
        if rc: print(n, fault, "RUN", rc, se[-250:], flush=True); rec(f, dict(model=n, fault=fault, run_rc=rc, run_err=se)); continue
        for mode, ex in (("preset", []), ("truth", ["--truth", tr])):
            r = diff(o, ref, ex, model=n, tag=f"{n} dec f16 {fault} {mode}")
            rec(f, dict(model=n, dt="f16", fault=fault, op=op, mode=mode, **r))
            print("OK " if (r["first"] == op if op else r["rc"] == 0) else "BAD", n, fault, mode, r["rc"], r.get("first"), r.get("origin"), r.get("hints"), r.get("at_first"), flush=True)
