"""Part 3: --replay (teacher forcing) clean and with faults; f32/bf16 (f16 too where a ref exists)."""
import sys, json, os
sys.path.insert(0, "/tmp/held41"); from lib import *
from faults import faults
f = open(f"{R}/out/replay.jsonl", "a")
for n in sys.argv[1:]:
    for dt in ("f32", "bf16", "f16"):
        ref = f"{R}/{n}/ref.{dt}.npz"
        if not os.path.exists(ref): continue
        for fault, op in faults(n):
            if op in ("PREC", "REFUSE") and fault not in ("bf16-variance", "bf16-accum"): continue
            if fault == "attn-bias=6e4" and dt != "f16": fault, op = "attn-bias=1e30", op
            o = f"{R}/{n}/ours/replay.{dt}.{fault.replace('/','_')}.npz"
            rc, se = run(n, ["--dtype", dt, "--replay", ref] + ([] if fault == "-" else ["--inject", fault]), o, f"{n} replay {dt} {fault}")
            base = dict(model=n, dt=dt, fault=fault, op=op, run_rc=rc, run_err=se[-300:])
            if rc: rec(f, base); print(n, dt, fault, "RUN", rc, se[-200:], flush=True); continue
            for mode, ex in (("preset", []),) + ((("rtol1e-5", ["--rtol", "1e-5"]),) if op == "PREC" and dt == "f32" else ()):
                r = diff(o, ref, ex, model=n, tag=f"{n} replay {dt} {fault}")
                rec(f, dict(base, mode=mode, **r))
                print(n, dt, fault, mode, r["rc"], "first", r.get("first"), "ndiv", r.get("ndiv"), r.get("divs"), flush=True)
