import sys
sys.path.insert(0,"/tmp/held41")
from lib import *
lm = "model.layers"
def faults(n):
    c = info(n)["cfg"]; nl = c["num_hidden_layers"]; last = nl - 1; mid = nl // 2
    alt = "1000000" if c["rope_theta"] != 1e6 else "10000"
    F = [("-", None), ("embed-scale", "model.embed_tokens"), (f"rope-theta={alt}", "model.rotary_emb"),
         ("rope-interleaved", f"{lm}.0.self_attn.rope_q"), (f"skip-k-norm@{last}", f"{lm}.{last}.self_attn.k_norm"),
         (f"skip-q-norm@{mid}", f"{lm}.{mid}.self_attn.q_norm"),
         (f"attn-bias=0.5@{mid}", f"{lm}.{mid}.self_attn.q_proj"), ("attn-bias=6e4", f"{lm}.0.self_attn.q_proj"),
         ("attn-bias=1e30", "REFUSE"),
         (f"transpose={lm}.{mid}.mlp.down_proj", f"{lm}.{mid}.mlp.down_proj"), ("act=gelu", f"{lm}.0.mlp.act_fn"),
         (f"gqa-tile@{last}", f"{lm}.{last}.self_attn.attn_out"), ("rms-eps=1e-3", f"{lm}.0.input_layernorm"),
         ("late-rounding", "PREC"), ("f16-accum", "PREC"), ("bf16-accum", "PREC"), ("bf16-variance", "PREC"), ("early-cast", "PREC")]
    return F
