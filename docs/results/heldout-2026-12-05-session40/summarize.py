import json, collections
rs=[json.loads(l) for l in open("results.jsonl")]
C=collections.Counter(); bad=[]
for r in rs:
    if r["run_rc"]!=0:
        C["run refused (documented: f32 late-rounding/early-cast)"]+=1; continue
    key=(r["dt"], r["mode"])
    f=r["fault"]; first=r.get("first"); org=r.get("origin"); rc=r["diff_rc"]
    codes=[h[0] for h in r.get("hints",[]) if h[1]==r["op"]] if r["op"] else []
    if f=="-":
        s="clean ok" if rc==0 and first is None else "clean FLAGGED"
    elif r["kind"]=="prec":
        if r["mode"] in ("exact","rtol1e-5","truth") and rc==1:
            s="prec at op" if first==r["op"] else ("prec origin at op" if org==r["op"] else "prec WRONG OP")
        elif rc==0: s="prec passes (no divergence)"
        else: s="prec flagged later, origin at op" if org==r["op"] else "prec WRONG OP"
    else:
        nop = ("gqa-tile" in f and r["model"] in ("r1","r4")) or (r["model"]=="r1" and f.startswith("rope"))
        if nop: s="no-op fault (kv==1/kv==q, or rope on 1 token): exit 0" if rc==0 else "no-op fault flagged?!"
        elif rc!=1: s="MISSED (exit 0)"
        elif first==r["op"]: s="at op" + (" + hint" if r["hint"] in codes else " NO/other HINT")
        elif org==r["op"]: s="first later, origin at op" + (" + hint" if r["hint"] in codes else " NO/other HINT")
        else: s="WRONG OP"
    C[(key,s)]+=1
    if not s.startswith(("clean ok","at op + hint","prec at op","prec passes","run refused","no-op")):
        bad.append((r["model"],r["dt"],r["mode"],f,s,first,org,codes))
for k,v in sorted(C.items(), key=str): print(v, k)
print(len(rs), "diff/run records")
print()
for b in bad: print(b)
