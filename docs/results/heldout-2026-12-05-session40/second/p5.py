"""Part 5: our clean run against eager and sdpa references of the same model."""
import sys, os
sys.path.insert(0, "/tmp/held41"); from lib import *
f = open(f"{R}/out/attn.jsonl", "a")
pairs = {"r3": {"eager": "ref.{dt}.npz", "sdpa": "ref.{dt}.sdpa.npz"}, "r5": {"sdpa": "ref.{dt}.npz", "eager": "ref.{dt}.eager.npz"}}
for n, P in pairs.items():
    for dt in ("f32", "bf16"):
        o = f"{R}/{n}/ours/clean.{dt}.npz"; rc, se = run(n, ["--dtype", dt], o, f"{n} clean {dt}")
        for attn, pat in P.items():
            ref = f"{R}/{n}/" + pat.format(dt=dt); tr = ref.replace("ref.", "truth.")
            for mode, ex in (("preset", []), ("truth", ["--truth", tr])):
                r = diff(o, ref, ex, model=n, tag=f"{n} {attn} {dt} {mode}")
                rec(f, dict(model=n, dt=dt, attn=attn, mode=mode, **r))
                print(n, dt, attn, mode, r["rc"], r.get("first"), r.get("max_rel"), r.get("max_ratio"), r.get("warnings"), flush=True)
