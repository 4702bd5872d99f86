import json, subprocess, sys
B="/tmp/hbin40/divergence"; PY="/work/main/.venv/bin/python"; R="/tmp/held40"
FA=[("decode-pos=1","model.rotary_emb@1"),("decode-pos=-1","model.rotary_emb@1"),("decode-pos-frozen","model.rotary_emb@2"),
    ("cache-pre-rope","model.layers.0.self_attn.cache_k@1"),("cache-pre-norm@1","model.layers.1.self_attn.cache_k@1"),
    ("cache-overwrite","model.layers.0.self_attn.cache_k@1"),("cache-overwrite=last@2","model.layers.2.self_attn.cache_k@1"),
    ("cache-dtype=bf16","model.layers.0.self_attn.cache_k@1"),("cache-dtype=f16","model.layers.0.self_attn.cache_k@1"),
    ("decode-mask","model.layers.0.self_attn.attn_out@1")]
out=open(f"{R}/decode.jsonl","a")
for name, steps in [(sys.argv[1], int(sys.argv[2]))]:
    d=f"{R}/{name}"; attn=json.load(open(f"{d}/info.json"))["attn"]
    for dt,tdt in (("f32","float32"),("bf16","bfloat16")):
        ref=f"{d}/dref.{dt}.npz"; tr=f"{d}/dtruth.{dt}.npz"
        subprocess.run([PY,"/work/main/scripts/dump_reference.py","--model",f"{d}/model","--ids-file",f"{d}/ids.txt","--dtype",tdt,"--attn",attn,"--decode",str(steps),"--out",ref,"--truth-out",tr,"--quiet"],check=True)
        for f,op in [("-",None)]+FA:
            o=f"{d}/ours/dec.{dt}.{f}.npz"
            a=[B,"run","--model",f"{d}/model","--ids-file",f"{d}/ids.txt","--dtype",dt,"--decode-from",ref,"--out",o]+([] if f=="-" else ["--inject",f])
            p=subprocess.run(a,capture_output=True,text=True)
            if p.returncode: 
                print(name,dt,f,"RUN",p.returncode,p.stderr.strip()[:200]); out.write(json.dumps(dict(model=name,dt=dt,fault=f,run_rc=p.returncode,err=p.stderr.strip()))+"\n"); continue
            for mode,ex in (("preset",[]),("truth",["--truth",tr])):
                q=subprocess.run([B,"diff",o,ref,"--format","json","--model",f"{d}/model",*ex],capture_output=True,text=True)
                j=json.loads(q.stdout) if q.stdout.strip() else {}
                fd=j.get("first_divergence"); org=j.get("origin")
                hints=[h["code"] for h in j.get("hints",[])]
                rec=dict(model=name,dt=dt,fault=f,op=op,mode=mode,rc=q.returncode,first=fd and fd["name"],origin=org and org.get("name"),hints=hints,err=q.stderr.strip()[:300],prefill_div=j.get("steps",[{}])[0].get("diverged"))
                out.write(json.dumps(rec)+"\n"); out.flush()
                print(name,dt,f,mode,q.returncode,rec["first"],rec["origin"],hints,"prefill_div",rec["prefill_div"],q.stderr.strip()[:200],flush=True)
