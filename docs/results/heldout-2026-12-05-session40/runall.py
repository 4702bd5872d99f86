"""Run our port clean and with every fault, diff, record results to results.jsonl."""
import json, subprocess, sys, os
BIN = "/tmp/hbin40/divergence"
R = "/tmp/held40"

def L(p, n, o): return f"model.layers.{n}.{o}" if p is None else p

def faults(name, info):
    cfg = info["cfg"]; nl = cfg["num_hidden_layers"]; last = nl - 1; mid = nl // 2
    theta = cfg["rope_theta"]; alt = "1000000" if theta != 1e6 else "10000"
    kv, q = cfg["num_key_value_heads"], cfg["num_attention_heads"]
    lm = "model.layers"
    F = [
      ("embed-scale", "model.embed_tokens", "scale"),
      (f"rope-theta={alt}", "model.rotary_emb", "rope_theta"),
      ("rope-interleaved", f"{lm}.0.self_attn.rope_q", "rope_layout"),
      (f"skip-k-norm@{last}", f"{lm}.{last}.self_attn.k_norm", "skipped_op"),
      ("skip-k-norm", f"{lm}.0.self_attn.k_norm", "skipped_op"),
      (f"skip-q-norm@{mid}-{last}", f"{lm}.{mid}.self_attn.q_norm", "skipped_op"),
      (f"attn-bias=0.5@{mid}", f"{lm}.{mid}.self_attn.q_proj", "bias"),
      ("attn-bias=1e30", f"{lm}.0.self_attn.q_proj", "bias"),
      (f"attn-bias=0.01@{last}", f"{lm}.{last}.self_attn.q_proj", "bias"),
      (f"transpose={lm}.{mid}.mlp.down_proj", f"{lm}.{mid}.mlp.down_proj", "transpose"),
      (f"transpose={lm}.{last}.self_attn.k_proj", f"{lm}.{last}.self_attn.k_proj", "transpose"),
      (f"transpose={lm}.0.self_attn.o_proj", f"{lm}.0.self_attn.o_proj", "transpose"),
      ("transpose=lm_head", "lm_head", "transpose"),
      ("act=gelu", f"{lm}.0.mlp.act_fn", "activation"),
      (f"act=gelu-tanh@{last}", f"{lm}.{last}.mlp.act_fn", "activation"),
      (f"act=relu@{mid}", f"{lm}.{mid}.mlp.act_fn", "activation"),
      ("gqa-tile", f"{lm}.0.self_attn.attn_out", "gqa_layout"),
      (f"gqa-tile@{last}", f"{lm}.{last}.self_attn.attn_out", "gqa_layout"),
      ("rms-eps=1e-3", f"{lm}.0.input_layernorm", "eps"),
      (f"rms-eps=1e-2@{last}", f"{lm}.{last}.input_layernorm", "eps"),
    ]
    P = [  # precision faults (entry op, hint)
      ("late-rounding", f"{lm}.0.input_layernorm", "rounding"),
      ("f16-accum", f"{lm}.0.input_layernorm", "rounding"),
      ("bf16-accum", f"{lm}.0.self_attn.q_proj", "rounding"),
      ("bf16-variance", f"{lm}.0.input_layernorm", "rounding"),
      ("early-cast", f"{lm}.0.input_layernorm", "rounding"),
    ]
    return F, P

def sh(args):
    p = subprocess.run(args, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr

def main(names):
    out = open(f"{R}/results.jsonl", "a")
    for name in names:
        d = f"{R}/{name}"; info = json.load(open(f"{d}/info.json"))
        F, P = faults(name, info)
        os.makedirs(f"{d}/ours", exist_ok=True)
        for dt in ("f32", "bf16"):
            cases = [("-", None, None, "gross")] + [(f, o, h, "gross") for f, o, h in F] + [(f, o, h, "prec") for f, o, h in P]
            for fault, op, hint, kind in cases:
                tag = fault.replace("/", "_")
                ours = f"{d}/ours/{dt}.{tag}.npz"
                args = [BIN, "run", "--model", f"{d}/model", "--ids-file", f"{d}/ids.txt", "--dtype", dt, "--out", ours]
                if fault != "-": args += ["--inject", fault]
                rc, so, se = sh(args)
                rec = dict(model=name, dt=dt, fault=fault, op=op, hint=hint, kind=kind, run_rc=rc, run_err=se.strip()[-600:])
                if rc != 0:
                    out.write(json.dumps(rec) + "\n"); out.flush(); print(name, dt, fault, "RUN rc", rc, se.strip()[-300:]); continue
                modes = [("preset", [])]
                modes.append(("truth", ["--truth", f"{d}/truth.{dt}.npz"]))
                if kind == "prec": modes.append(("exact", ["--exact"]) if dt == "bf16" else ("rtol1e-5", ["--rtol", "1e-5"]))
                for mode, extra in modes:
                    drc, dso, dse = sh([BIN, "diff", ours, f"{d}/ref.{dt}.npz", "--format", "json", "--model", f"{d}/model", *extra])
                    r = dict(rec, mode=mode, diff_rc=drc, diff_err=dse.strip()[-600:])
                    try:
                        j = json.loads(dso)
                        fd = j.get("first_divergence"); org = j.get("origin")
                        r["first"] = fd and fd["name"]; r["origin"] = org and org.get("name")
                        r["hints"] = [(h["code"], h["op"], h["message"][:400]) for h in j.get("hints", [])]
                        r["amp"] = [(a["layer"], a["kind"], a.get("ratio"), a.get("verdict"), a.get("weight_gain"), a.get("proj_rel_err"), a.get("norm_rel_err")) for a in j["amplification"]["rows"]]
                        row = None
                        if op:
                            row = next((o for o in j["ops"] if o["name"] == op), None)
                        r["at_op"] = row and {k: row.get(k) for k in ("status", "rel_l2_err", "noise_ratio", "ours_truth_rel_err", "ref_truth_rel_err", "truth_problem")}
                        if fd:
                            frow = j["ops"][fd["index"]]
                            r["at_first"] = {k: frow.get(k) for k in ("status", "rel_l2_err", "noise_ratio", "ours_truth_rel_err", "ref_truth_rel_err")}
                        r["warnings"] = j.get("warnings", [])[:5]
                    except Exception as e:
                        r["parse_err"] = str(e)
                    out.write(json.dumps(r) + "\n"); out.flush()
                    print(name, dt, fault, mode, drc, r.get("first"), r.get("origin"), [h[0] for h in r.get("hints", [])], flush=True)

if __name__ == "__main__":
    main(sys.argv[1:])
