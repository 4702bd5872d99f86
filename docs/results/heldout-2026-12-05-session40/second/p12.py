"""Part 1: f16 clean + faults; Part 2: fused policy clean, f32/bf16/f16."""
import sys, json, os
sys.path.insert(0, "/tmp/held41"); from lib import *
from faults import *
part = sys.argv[1]; names = sys.argv[2:]
f = open(f"{R}/out/{part}.jsonl", "a")
for n in names:
    os.makedirs(f"{R}/{n}/ours", exist_ok=True)
    if part == "f16":
        for fault, op in faults(n):
            o = f"{R}/{n}/ours/f16.{fault.replace('/','_')}.npz"
            rc, se = run(n, ["--dtype", "f16"] + ([] if fault == "-" else ["--inject", fault]), o, f"{n} f16 {fault}")
            base = dict(model=n, dt="f16", fault=fault, op=op, run_rc=rc, run_err=se[-300:] if rc else "")
            if rc: rec(f, base); print(n, fault, "RUN", rc, se[-200:], flush=True); continue
            modes = [("preset", []), ("truth", ["--truth", f"{R}/{n}/truth.f16.npz"])] + ([("exact", ["--exact"])] if op == "PREC" else [])
            for mode, ex in modes:
                r = diff(o, f"{R}/{n}/ref.f16.npz", ex, model=n, tag=f"{n} f16 {fault} {mode}")
                at = None
                if op and op not in ("PREC", "REFUSE"):
                    row = next((x for x in r["_j"].get("ops", []) if x["name"] == op), None) if "_j" in r else None
                    at = row and {k: row.get(k) for k in ("status", "rel_l2_err", "noise_ratio")}
                rec(f, dict(base, mode=mode, at_op=at, **r))
                print(n, fault, mode, r["rc"], r.get("first"), r.get("origin"), r.get("hints"), r.get("at_first"), flush=True)
    elif part == "fused":
        for dt in ("f32", "bf16", "f16"):
            if not os.path.exists(f"{R}/{n}/ref.{dt}.npz"): continue
            o = f"{R}/{n}/ours/fused.{dt}.npz"
            rc, se = run(n, ["--dtype", dt, "--policy", "fused"], o, f"{n} fused {dt}")
            base = dict(model=n, dt=dt, fault="policy=fused", run_rc=rc)
            if rc: rec(f, dict(base, run_err=se)); print(n, dt, "RUN", rc, se); continue
            for mode, ex in (("preset", []), ("exact", ["--exact"]), ("truth", ["--truth", f"{R}/{n}/truth.{dt}.npz"])):
                r = diff(o, f"{R}/{n}/ref.{dt}.npz", ex, model=n, tag=f"{n} fused {dt} {mode}")
                rec(f, dict(base, mode=mode, **r))
                print(n, dt, mode, r["rc"], r.get("first"), r.get("origin"), r.get("hints"), r.get("max_rel"), r.get("max_ratio"), flush=True)
