import json, subprocess, os
B = "/tmp/hbin40/divergence-new"; PY = "/work/main/.venv/bin/python"; R = "/tmp/held41"
def info(n): return json.load(open(f"{R}/{n}/info.json"))
def sh(args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr
ODD = []
def check_err(tag, rc, se):
    lines = [l for l in se.strip().splitlines() if l.strip()]
    bad = rc not in (0, 1, 2) or "panick" in se or "Traceback" in se or (rc == 2 and len(lines) > 2)
    if bad:
        ODD.append((tag, rc, se[-800:])); print("ODD", tag, rc, se[-500:], flush=True)
def run(model, extra, out, tag=""):
    a = [B, "run", "--model", f"{R}/{model}/model", "--ids-file", f"{R}/{model}/ids.txt", "--out", out, *extra]
    rc, so, se = sh(a); check_err("run " + tag, rc, se); return rc, se.strip()
def diff(ours, ref, extra=(), model=None, tag=""):
    a = [B, "diff", ours, ref, "--format", "json", *extra] + (["--model", f"{R}/{model}/model"] if model else [])
    rc, so, se = sh(a); check_err("diff " + tag, rc, se)
    try: j = json.loads(so)
    except Exception as e: return dict(rc=rc, err=se.strip()[:400], parse_err=str(e))
    fd = j.get("first_divergence"); org = j.get("origin")
    ops = j.get("ops", [])
    dv = [o["name"] for o in ops if o.get("status") not in ("ok", None, "only_in_ours", "only_in_ref")]
    r = dict(rc=rc, err=se.strip()[:400], first=fd and fd["name"], origin=org and org.get("name"),
             hints=[(h["code"], h["op"]) for h in j.get("hints", [])], ndiv=len(dv), divs=dv[:12], nops=len(ops),
             warnings=[w[:200] for w in j.get("warnings", [])][:4])
    if fd:
        row = ops[fd["index"]] if "index" in fd and fd["index"] < len(ops) else {}
        r["at_first"] = {k: row.get(k) for k in ("status", "rel_l2_err", "noise_ratio")}
    mx = [o for o in ops if o.get("noise_ratio") is not None]
    if mx:
        m = max(mx, key=lambda o: o["noise_ratio"]); r["max_ratio"] = (m["name"], m["noise_ratio"])
    rel = [o for o in ops if o.get("rel_l2_err") is not None]
    if rel:
        m = max(rel, key=lambda o: o["rel_l2_err"]); r["max_rel"] = (m["name"], m["rel_l2_err"])
    r["steps"] = [(s.get("step"), s.get("diverged")) for s in j.get("steps", [])][:8] if j.get("steps") else None
    r["_j"] = j
    return r
def rec(f, d):
    d = {k: v for k, v in d.items() if k != "_j"}
    f.write(json.dumps(d) + "\n"); f.flush()
