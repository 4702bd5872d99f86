"""Build held-out tiny Qwen3s with transformers save_pretrained (realistic init + custom k_norm gains)."""
import json, sys, random
sys.path.insert(0, "/work/main/scripts")
import numpy as np, torch
from transformers import Qwen3Config, Qwen3ForCausalLM
import realistic_init as ri

BASE = json.load(open("/work/main/fixtures/configs/tiny-qwen3.json"))
# name: changes, seed, prompt len, attn, gains mode, kgain target, save dtype
MODELS = {
  "r1": (dict(hidden_size=80, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=1, head_dim=20,
              intermediate_size=176, vocab_size=333, rope_theta=1000000.0), 9101, 1, "eager", "real", None, torch.float32),
  "r2": (dict(hidden_size=160, num_hidden_layers=4, num_attention_heads=10, num_key_value_heads=2, head_dim=16,
              intermediate_size=384, vocab_size=900, rope_theta=1000000.0), 9102, 300, "sdpa", "all100", 100.0, torch.float32),
  "r3": (dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3, head_dim=40,
              intermediate_size=200, vocab_size=640, rope_theta=250000.0), 9103, 13, "eager", "real", None, torch.float32),
  "r4": (dict(hidden_size=256, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=4, head_dim=96,
              intermediate_size=512, vocab_size=1100, rope_theta=1000000.0, rms_norm_eps=1e-5,
              tie_word_embeddings=False), 9104, 57, "eager", "plain", None, torch.bfloat16),
  "r5": (dict(hidden_size=48, num_hidden_layers=6, num_attention_heads=12, num_key_value_heads=4, head_dim=12,
              intermediate_size=112, vocab_size=260, rope_theta=10000.0), 9105, 2, "sdpa", "all100", 98.0, torch.float32),
}

def build(name, root):
    ch, seed, plen, attn, gains, target, sdt = MODELS[name]
    cfg = dict(BASE); cfg.update(ch); cfg["max_window_layers"] = ch["num_hidden_layers"]
    cfg.pop("torch_dtype", None)
    conf = Qwen3Config(**cfg)
    torch.manual_seed(seed)
    m = Qwen3ForCausalLM(conf).float()
    ri.realistic_qwen3_init(m, seed, storage_dtype=sdt, norm_gains=(gains != "plain"))
    if target:
        # scale every layer's k_norm so its max is `target`, k_proj rows feeding boosted channels shrunk alike
        with torch.no_grad():
            for l, layer in enumerate(m.model.layers):
                kn = layer.self_attn.k_norm.weight
                f = target / kn.abs().max()
                hd = kn.shape[0]
                scale = torch.where(kn > 4.0, f, torch.ones_like(kn))
                kn.mul_(scale)
                w = layer.self_attn.k_proj.weight
                w.copy_((w.view(-1, hd, w.shape[1]) / scale[None, :, None]).view_as(w))
                # q_norm gains up to ~target/4 as well
                qn = layer.self_attn.q_norm.weight
                qn.mul_(torch.where(qn > 2.5, torch.full_like(qn, 3.0), torch.ones_like(qn)))
    m = m.to(sdt)
    d = f"{root}/{name}/model"
    m.save_pretrained(d, safe_serialization=True)
    r = random.Random(seed)
    ids = ",".join(str(r.randrange(cfg["vocab_size"])) for _ in range(plen))
    open(f"{root}/{name}/ids.txt", "w").write(ids + "\n")
    info = {l: (float(layer.self_attn.k_norm.weight.float().abs().max()), float(layer.self_attn.q_norm.weight.float().abs().max()))
            for l, layer in enumerate(m.model.layers)}
    json.dump(dict(attn=attn, plen=plen, gains=info, cfg=ch), open(f"{root}/{name}/info.json", "w"))
    print(name, attn, plen, info)

if __name__ == "__main__":
    for n in sys.argv[1:]:
        build(n, "/tmp/held40")
