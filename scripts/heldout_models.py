"""The four Qwen3s the project was not tuned on (docs/decode.md, "On models the project was not
tuned on"): tests/python/test_heldout.py runs the fault catalogues on them, and
scripts/heldout_long.py measures their three-way ratios with long prompts. `SECOND`: the five of
a second held-out check (docs/decode.md, "A second held-out check"), of which
tests/python/test_long_prompt.py runs `h` (`LONG`). `THIRD`: the four of a third (docs/decode.md,
"A third held-out check"), of which tests/python/test_third_heldout.py runs `j`, `k` and `l`.
`FOURTH`: the four of a fourth (docs/results/heldout-2026-12-05-session33.txt). `SIXTH`: the four of
a sixth (docs/results/heldout-2026-12-06-session42.txt), of which tests/python/test_heldout.py runs
`hc`'s RoPE faults. `SEVENTH`: the four of a seventh (docs/results/heldout-2026-12-06-session43.txt),
not run in CI. `NINTH`: the six of a ninth (docs/results/heldout-2026-12-06-session45.txt), of
which tests/python/test_heldout.py runs `xw` and `xe`. `TENTH`: the five of a tenth
(docs/results/heldout-2026-12-06-session46.txt), of which tests/python/test_heldout.py runs `yc`;
`REVIEW46`: a review's model of that session, which it runs too. `REVIEW47`: a review's eleven
of session 47 (docs/tolerances.md), not run in CI. `ELEVENTH`: the four of an eleventh
(docs/results/heldout-2026-12-06-session48.txt), not run in CI. `TWELFTH`: the four of a twelfth
(docs/results/heldout-2026-12-06-session49.txt), of which tests/python/test_heldout.py runs `q3`
and `q4`. `THIRTEENTH`: the five of a thirteenth (docs/results/heldout-2026-12-07-session57.txt), of
which tests/python/test_heldout.py runs `z4`'s f16 `decode-mask`. `FOURTEENTH`: the four of a
fourteenth (docs/results/heldout-2026-12-07-session57-fourteenth.txt), not run in CI. `FIFTEENTH`:
the four of a fifteenth (docs/results/heldout-2026-12-07-session58.txt), of which
tests/python/test_heldout.py runs `t2`'s bf16 `decode-mask`. `SIXTEENTH`: the four of a sixteenth
(docs/results/heldout-2026-12-07-session58-sixteenth.txt), not run in CI. `SEVENTEENTH`: the four of a
seventeenth (docs/results/heldout-2026-12-07-session59-seventeenth.txt), not run in CI.
`EIGHTEENTH`: the four of an eighteenth (docs/results/heldout-2026-12-07-session60-eighteenth.txt),
not run in CI. `NINETEENTH`: the four of a nineteenth
(docs/results/heldout-2026-12-08-session61-nineteenth.txt), not run in CI. `TWENTIETH`: the four of a
twentieth (docs/results/heldout-2026-12-08-session62-twentieth.txt), not run in CI.

`make(name, workdir)` builds one with real transformers (scripts/dump_reference.py, seeded init)
and returns its directory, its prompt (comma-separated ids) and its config changes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import dump_reference as dr

REPO = Path(__file__).resolve().parent.parent

# name: (config changes, seed, prompt length, decode steps, reference attention, q/k-norm gains)
MODELS = {
    "a": (dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
               head_dim=16, intermediate_size=256, vocab_size=700), 7, 11, 9, "eager", True),
    "b": (dict(hidden_size=128, num_hidden_layers=5, num_attention_heads=8, num_key_value_heads=4,
               head_dim=32, intermediate_size=320, vocab_size=1000), 3, 23, 6, "eager", True),
    "c": (dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
               head_dim=32, intermediate_size=192, vocab_size=512), 11, 5, 14, "eager", False),
    "d": (dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
               head_dim=64, intermediate_size=256, vocab_size=300), 5, 40, 5, "sdpa", True),
}

# The second held-out check's five (a helper, 2026-12-04, session 28; results:
# docs/results/heldout-2026-12-04-session28.txt, docs/decode.md "A second held-out check").
# Not run in CI but for `h`.
SECOND = {
    "e": (dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=16, num_key_value_heads=2,
               head_dim=8, intermediate_size=256, vocab_size=400, rope_theta=10000.0), 101, 2, 20,
          "eager", True),
    "f": (dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
               head_dim=128, intermediate_size=256, vocab_size=600, rope_theta=1000000.0), 102, 17, 3,
          "sdpa", False),
    "g": (dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
               head_dim=64, intermediate_size=192, vocab_size=800, rope_theta=10000.0), 103, 64, 8,
          "eager", True),
    "h": (dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=1,
               head_dim=16, intermediate_size=160, vocab_size=500, rope_theta=1000000.0), 104, 97, 12,
          "sdpa", True),
    "i": (dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=1,
               head_dim=128, intermediate_size=384, vocab_size=900, rope_theta=1000000.0), 105, 5, 6,
          "eager", True),
}

# The third held-out check's four (a helper, 2026-12-04, session 32; results:
# docs/results/heldout-2026-12-04-session32.txt, docs/decode.md "A third held-out check"): one
# layer, no GQA, odd head counts, head_dim 8 to 48, a 1-token and a 70-token prompt; the last
# field a float scales the plain q/k-norm gains (`k`: x0.05). Not run in CI but for `j`, `k`
# and `l` (tests/python/test_third_heldout.py).
THIRD = {
    "j": (dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
               head_dim=16, intermediate_size=128, vocab_size=350, rope_theta=1000000.0), 301, 70, 6,
          "eager", True),
    "k": (dict(hidden_size=144, num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=1,
               head_dim=48, intermediate_size=288, vocab_size=450, rope_theta=1000000.0), 302, 1, 16,
          "sdpa", 0.05),
    "l": (dict(hidden_size=120, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=5,
               head_dim=24, intermediate_size=240, vocab_size=620, rope_theta=500000.0), 303, 9, 12,
          "eager", True),
    "m": (dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=3,
               head_dim=8, intermediate_size=320, vocab_size=280, rope_theta=10000.0), 304, 33, 8,
          "sdpa", False),
}

# The fourth held-out check's four (a helper, 2026-12-05, session 33; results:
# docs/results/heldout-2026-12-05-session33.txt, docs/tolerances.md "A truth far from the
# reference"): 6-8 layers, GQA groups of 4 to 8, head_dim 64 and 128, prompts of 33 to 300
# tokens; the last field a string "xF" scales the realistic gains by F (`o`, `q`: x2, k_norm
# ~190 in layer 0, very peaked attention: transformers' own bf16 run is up to 0.6 and, at a few
# ops of late decode steps, 1.07 from its float64 truth). Not run in CI.
FOURTH = {
    "n": (dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2,
               head_dim=64, intermediate_size=352, vocab_size=1500, rope_theta=1000000.0), 401, 33, 24,
          "eager", True),
    "o": (dict(hidden_size=128, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=1,
               head_dim=128, intermediate_size=256, vocab_size=1200, rope_theta=500000.0), 402, 128, 10,
          "sdpa", "x2"),
    "p": (dict(hidden_size=192, num_hidden_layers=7, num_attention_heads=12, num_key_value_heads=3,
               head_dim=64, intermediate_size=448, vocab_size=2000, rope_theta=500000.0), 403, 300, 12,
          "eager", True),
    "q": (dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=16, num_key_value_heads=2,
               head_dim=64, intermediate_size=512, vocab_size=1800, rope_theta=1000000.0), 404, 300, 16,
          "sdpa", "x2"),
}

# Of those, the one kept apart from MODELS and tested in CI (tests/python/test_long_prompt.py):
# it meets limits the catalogue tests would have to excuse (a 97-token prompt, 8 q heads
# sharing 1 kv head of 16, sdpa).
LONG = {"h": SECOND["h"]}


def prompt(vocab: int, seed: int, length: int) -> str:
    r = random.Random(seed)
    return ",".join(str(r.randrange(vocab)) for _ in range(length))


# The sixth held-out check's four (a helper, 2026-12-06, session 42; docs/decode.md, "A sixth
# held-out check"). Gains: True realistic, "xF" realistic times F, "kF" plain with k_norm times F
# on every channel.
SIXTH = {
    "ha": (dict(hidden_size=112, num_hidden_layers=4, num_attention_heads=7, num_key_value_heads=1,
                head_dim=16, intermediate_size=224, vocab_size=640, rope_theta=1000000.0), 4201, 3, 14,
           "eager", True),
    "hb": (dict(hidden_size=192, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                head_dim=32, intermediate_size=416, vocab_size=1300, rope_theta=10000.0), 4202, 170, 6,
           "sdpa", "x0.5"),
    "hc": (dict(hidden_size=48, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2,
                head_dim=12, intermediate_size=144, vocab_size=333, rope_theta=200000.0), 4203, 1, 20,
           "eager", "k25"),
    "hd": (dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                head_dim=64, intermediate_size=512, vocab_size=900, rope_theta=500000.0), 4204, 110, 10,
           "eager", True),
}


# The seventh held-out check's four (a helper, 2026-12-06, session 43;
# docs/results/heldout-2026-12-06-session43.txt); `hc` of SIXTH is what
# tests/python/test_heldout.py runs of the RoPE faults after a 1-token prompt.
SEVENTH = {
    "wa": (dict(hidden_size=80, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                head_dim=20, intermediate_size=176, vocab_size=410, rope_theta=10000.0), 4301, 1, 16,
           "eager", True),
    "wb": (dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=3, num_key_value_heads=3,
                head_dim=40, intermediate_size=200, vocab_size=530, rope_theta=300000.0), 4302, 2, 10,
           "sdpa", "x2"),
    "wc": (dict(hidden_size=72, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                head_dim=24, intermediate_size=160, vocab_size=777, rope_theta=1000000.0), 4303, 96, 8,
           "eager", "k10"),
    "wd": (dict(hidden_size=160, num_hidden_layers=6, num_attention_heads=10, num_key_value_heads=2,
                head_dim=20, intermediate_size=320, vocab_size=950, rope_theta=50000.0), 4304, 17, 5,
           "sdpa", True),
}


# The ninth held-out check's six (a helper, 2026-12-06, session 45;
# docs/results/heldout-2026-12-06-session45.txt), of which tests/python/test_heldout.py runs
# `xw`'s and `xe`'s norm hints.
NINTH = {
    "xa": (dict(hidden_size=160, num_hidden_layers=4, num_attention_heads=10, num_key_value_heads=5,
                head_dim=16, intermediate_size=288, vocab_size=720, rope_theta=100000.0), 4501, 7, 8,
           "eager", True),
    "xb": (dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=12, num_key_value_heads=3,
                head_dim=8, intermediate_size=224, vocab_size=560, rope_theta=20000.0), 4502, 29, 10,
           "sdpa", "x0.5"),
    "xc": (dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=2, num_key_value_heads=1,
                head_dim=48, intermediate_size=176, vocab_size=390, rope_theta=1000000.0), 4503, 12, 6,
           "eager", "x3"),
    "xd": (dict(hidden_size=200, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=5,
                head_dim=40, intermediate_size=400, vocab_size=850, rope_theta=750000.0), 4504, 45, 7,
           "eager", "k60"),
    "xe": (dict(hidden_size=128, num_hidden_layers=5, num_attention_heads=6, num_key_value_heads=2,
                head_dim=32, intermediate_size=256, vocab_size=1100, rope_theta=10000.0), 4505, 3, 12,
           "sdpa", "k100"),
    "xw": (dict(hidden_size=512, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                head_dim=64, intermediate_size=1024, vocab_size=2048, rope_theta=1000000.0), 4506, 20, 5,
           "eager", True),
}

# The tenth held-out check's five (a helper, 2026-12-06, session 46;
# docs/results/heldout-2026-12-06-session46.txt), of which tests/python/test_heldout.py runs
# `yc`'s norm and cache hints. Gains "c1F": the plain gains with one k_norm channel per layer
# set to F (channel (3 + 5 * layer) % head_dim). `yb` unties the embeddings.
TENTH = {
    "ya": (dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2,
                head_dim=32, intermediate_size=256, vocab_size=900, rope_theta=1000000.0), 4601, 96, 24,
           "eager", True),
    "yb": (dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                head_dim=64, intermediate_size=192, vocab_size=640, rope_theta=500000.0,
                tie_word_embeddings=False), 4602, 40, 16, "sdpa", True),
    "yc": (dict(hidden_size=160, num_hidden_layers=4, num_attention_heads=10, num_key_value_heads=2,
                head_dim=16, intermediate_size=320, vocab_size=1200, rope_theta=10000.0), 4603, 64, 20,
           "eager", "c1150"),
    "yd": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                head_dim=64, intermediate_size=128, vocab_size=300, rope_theta=1000000.0), 4604, 160, 32,
           "sdpa", "x1.5"),
    "ye": (dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=16, num_key_value_heads=8,
                head_dim=128, intermediate_size=512, vocab_size=2000, rope_theta=1000000.0), 4605, 24, 12,
           "eager", True),
}

# A review's model (session 46): q_norm 1, k_norm 1 but for three channels at 150, 150 and 90
# (gains given as {norm: {channel: gain}}); tests/python/test_heldout.py runs its bf16
# `bf16-variance@1` under --truth.
REVIEW46 = {
    "r6": (dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                head_dim=64, intermediate_size=256, vocab_size=400, rope_theta=1000000.0), 9106, 100, 3,
           "eager", {"k_norm": {5: 150.0, 17: 150.0, 40: 90.0}, "q_norm": {}}),
}

# A review's models (session 47): 40 decode steps (30 on m2, m3, m6), f32 references, eager
# attention, realistic gains (m6), x2, k_norm x10-x100 on every channel, one k_norm channel at
# 1200 (m4). On them a rule that pooled an f32 reference's decode-step error over the op's steps
# hid real cache faults (m9 `cache-dtype=bf16@5`, `cache-dtype=f16@4`) and still passed none of
# the clean ports of m8-m11 under --truth (docs/tolerances.md, "An f32 reference is floored").
REVIEW47 = {
    "m1": (dict(hidden_size=96, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2, head_dim=32,
                intermediate_size=192, vocab_size=500, rope_theta=10000.0), 7701, 8, 40, "eager", "k20"),
    "m2": (dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                intermediate_size=128, vocab_size=400, rope_theta=10000.0), 7702, 2, 30, "eager", "k50"),
    "m3": (dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                intermediate_size=256, vocab_size=600, rope_theta=1000000.0), 7703, 20, 30, "eager", "x2"),
    "m4": (dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                intermediate_size=192, vocab_size=450, rope_theta=10000.0), 7704, 5, 40, "eager", "c1200"),
    "m5": (dict(hidden_size=128, num_hidden_layers=5, num_attention_heads=6, num_key_value_heads=2, head_dim=32,
                intermediate_size=256, vocab_size=1100, rope_theta=10000.0), 7705, 3, 40, "eager", "k100"),
    "m6": (dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, head_dim=32,
                intermediate_size=256, vocab_size=700, rope_theta=1000000.0), 7706, 30, 30, "eager", True),
    "m7": (dict(hidden_size=80, num_hidden_layers=4, num_attention_heads=5, num_key_value_heads=5, head_dim=16,
                intermediate_size=160, vocab_size=300, rope_theta=10000.0), 7707, 1, 40, "eager", "k10"),
    "m8": (dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2, head_dim=32,
                intermediate_size=256, vocab_size=1100, rope_theta=10000.0), 7808, 4, 40, "eager", "k100"),
    "m9": (dict(hidden_size=96, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                intermediate_size=192, vocab_size=800, rope_theta=10000.0), 7809, 6, 40, "eager", "k60"),
    "m10": (dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4, head_dim=16,
                 intermediate_size=256, vocab_size=900, rope_theta=100000.0), 7810, 3, 40, "eager", "k100"),
    "m11": (dict(hidden_size=160, num_hidden_layers=5, num_attention_heads=5, num_key_value_heads=1, head_dim=32,
                 intermediate_size=320, vocab_size=1000, rope_theta=10000.0), 7811, 10, 40, "eager", "k80"),
}

# The eleventh held-out check's four (a helper, session 48; results:
# docs/results/heldout-2026-12-06-session48.txt): GQA ratios 8, 1, 3 and 2, prompts of 1, 150,
# 37 and 13 tokens, realistic gains and twice them. Not run in CI.
ELEVENTH = {
    "za": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=1,
                head_dim=16, intermediate_size=160, vocab_size=333, rope_theta=10000.0), 4801, 1, 20,
           "eager", True),
    "zb": (dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4,
                head_dim=128, intermediate_size=448, vocab_size=1500, rope_theta=1000000.0), 4802, 150, 8,
           "sdpa", "x2"),
    "zc": (dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=12, num_key_value_heads=4,
                head_dim=32, intermediate_size=384, vocab_size=900, rope_theta=1000000.0), 4803, 37, 12,
           "eager", "x2"),
    "zd": (dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3,
                head_dim=48, intermediate_size=224, vocab_size=500, rope_theta=10000.0), 4804, 13, 16,
           "sdpa", True),
}

# The twelfth held-out check's four (a helper, 2026-12-06, session 49; results:
# docs/results/heldout-2026-12-06-session49.txt, docs/decode.md "A twelfth held-out check").
TWELFTH = {
    "q1": (dict(hidden_size=160, num_hidden_layers=3, num_attention_heads=16, num_key_value_heads=2,
                head_dim=64, intermediate_size=320, vocab_size=700, rope_theta=100000.0), 4901, 21, 10,
           "eager", 0.3),
    "q2": (dict(hidden_size=112, num_hidden_layers=7, num_attention_heads=4, num_key_value_heads=2,
                head_dim=28, intermediate_size=240, vocab_size=610, rope_theta=250000.0), 4902, 19, 9,
           "sdpa", "x2.5"),
    "q3": (dict(hidden_size=80, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2,
                head_dim=36, intermediate_size=200, vocab_size=450, rope_theta=10000.0), 4903, 2, 24,
           "eager", "k30"),
    "q4": (dict(hidden_size=144, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=1,
                head_dim=32, intermediate_size=288, vocab_size=1000, rope_theta=500000.0), 4904, 90, 14,
           "sdpa", True),
}


# The thirteenth held-out check's five (a helper, 2026-12-07, session 57; results:
# docs/results/heldout-2026-12-07-session57.txt). CI runs z4's f16 decode-mask (tests/python/
# test_heldout.py). z1: Qwen3-0.6B's head_dim 128 on
# a shrunk model after a 1-token prompt; z4: 60 tokens of flat attention (gains x0.5), whose f16
# `decode-mask@1` read no hint (docs/hints.md, `attention_spread`); z5: untied embeddings.
THIRTEENTH = {
    "z1": (dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                head_dim=128, intermediate_size=768, vocab_size=1024, rope_theta=1000000.0), 5301, 1, 12,
           "eager", True),
    "z2": (dict(hidden_size=192, num_hidden_layers=5, num_attention_heads=12, num_key_value_heads=4,
                head_dim=16, intermediate_size=384, vocab_size=900, rope_theta=1000000.0), 5302, 33, 20,
           "sdpa", "x1.5"),
    "z3": (dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=3,
                head_dim=48, intermediate_size=224, vocab_size=480, rope_theta=50000.0), 5303, 7, 30,
           "eager", "k20"),
    "z4": (dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=1,
                head_dim=32, intermediate_size=320, vocab_size=640, rope_theta=1000000.0,
                rms_norm_eps=1e-5), 5304, 60, 8, "sdpa", 0.5),
    "z5": (dict(hidden_size=112, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3,
                head_dim=20, intermediate_size=256, vocab_size=560, rope_theta=100000.0,
                tie_word_embeddings=False), 5305, 12, 6, "eager", True),
}

# The fourteenth held-out check's four (a helper, 2026-12-07, session 57; results:
# docs/results/heldout-2026-12-07-session57-fourteenth.txt). Not run in CI. s2: one k_norm
# channel per layer at 300, whose clean f16 decode `--truth` flags at one step's k_norm.
FOURTEENTH = {
    "s1": (dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=32, intermediate_size=320, vocab_size=800, rope_theta=1000000.0), 5401, 200, 6,
           "sdpa", True),
    "s2": (dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                head_dim=16, intermediate_size=224, vocab_size=520, rope_theta=10000.0), 5402, 15, 16,
           "eager", "c1300"),
    "s3": (dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=16, num_key_value_heads=4,
                head_dim=8, intermediate_size=256, vocab_size=700, rope_theta=500000.0), 5403, 25, 12,
           "eager", "x0.8"),
    "s4": (dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                head_dim=64, intermediate_size=1024, vocab_size=400, rope_theta=1000000.0), 5404, 3, 40,
           "sdpa", 1.0),
}

# The fifteenth held-out check's four (a helper, session 58; results:
# docs/results/heldout-2026-12-07-session58.txt): eight layers; head_dim 256 over a hidden size of
# 64 (2 q heads on 1 kv head); a 400-token prompt under k_norm x20 (MHA); an MLP narrower than the
# hidden size, a vocabulary of 64, untied embeddings, rms_norm_eps 1e-5, theta 5e4.
FIFTEENTH = {
    "t1": (dict(hidden_size=64, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, intermediate_size=128, vocab_size=300, rope_theta=1000000.0), 5501, 9, 12,
           "eager", True),
    "t2": (dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                head_dim=256, intermediate_size=160, vocab_size=350, rope_theta=1000000.0), 5502, 17, 10,
           "sdpa", "x1.2"),
    "t3": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                head_dim=16, intermediate_size=192, vocab_size=600, rope_theta=1000000.0), 5503, 400, 5,
           "eager", "k20"),
    "t4": (dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3,
                head_dim=16, intermediate_size=48, vocab_size=64, rope_theta=50000.0, rms_norm_eps=1e-5,
                tie_word_embeddings=False), 5504, 4, 24,
           "sdpa", True),
}

# The sixteenth held-out check's four (a helper, session 58; results:
# docs/results/heldout-2026-12-07-session58-sixteenth.txt): GQA 4:1 with realistic gains x3 after a
# 2-token prompt; MHA of 64 after 128 tokens; GQA 5:1 with plain gains x2; k_norm x40 over 30 steps.
SIXTEENTH = {
    "u1": (dict(hidden_size=96, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2,
                head_dim=24, intermediate_size=256, vocab_size=500, rope_theta=1000000.0), 5601, 2, 20,
           "eager", "x3"),
    "u2": (dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                head_dim=64, intermediate_size=384, vocab_size=900, rope_theta=1000000.0), 5602, 128, 8,
           "sdpa", True),
    "u3": (dict(hidden_size=80, num_hidden_layers=4, num_attention_heads=5, num_key_value_heads=1,
                head_dim=32, intermediate_size=200, vocab_size=450, rope_theta=200000.0), 5603, 33, 16,
           "eager", 2.0),
    "u4": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=32, intermediate_size=192, vocab_size=256, rope_theta=1000000.0), 5604, 6, 30,
           "eager", "k40"),
}


# The seventeenth held-out check's four (a helper, session 59; docs/results/
# heldout-2026-12-07-session59-seventeenth.txt). Not run in CI.
SEVENTEENTH = {
    "v1": (dict(hidden_size=192, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3,
                head_dim=32, intermediate_size=512, vocab_size=800, rope_theta=1000000.0), 5701, 48, 10,
           "eager", True),
    "v2": (dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=12, num_key_value_heads=3,
                head_dim=16, intermediate_size=160, vocab_size=350, rope_theta=10000.0), 5702, 7, 24,
           "sdpa", 1.5),
    "v3": (dict(hidden_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                head_dim=64, intermediate_size=256, vocab_size=600, rope_theta=1000000.0), 5703, 20, 12,
           "eager", "k60"),
    "v4": (dict(hidden_size=160, num_hidden_layers=4, num_attention_heads=10, num_key_value_heads=5,
                head_dim=32, intermediate_size=320, vocab_size=1200, rope_theta=500000.0), 5704, 90, 6,
           "eager", "x2"),
}

EIGHTEENTH = {
    "w1": (dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                head_dim=256, intermediate_size=288, vocab_size=512, rope_theta=1000000.0), 5801, 5, 16,
           "eager", True),
    "w2": (dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=16, num_key_value_heads=1,
                head_dim=8, intermediate_size=176, vocab_size=420, rope_theta=10000.0), 5802, 33, 40,
           "sdpa", 0.2),
    "w3": (dict(hidden_size=96, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4,
                head_dim=24, intermediate_size=208, vocab_size=730, rope_theta=100000.0), 5803, 64, 8,
           "eager", True),
    "w4": (dict(hidden_size=144, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2,
                head_dim=48, intermediate_size=352, vocab_size=999, rope_theta=1000000.0), 5804, 1, 32,
           "eager", "c1500"),
}

# The nineteenth held-out check's four (a helper, 2026-12-08, session 61; results:
# docs/results/heldout-2026-12-08-session61-nineteenth.txt). Not run in CI.
NINETEENTH = {
    "x1": (dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                head_dim=64, intermediate_size=512, vocab_size=800, rope_theta=1000000.0), 5901, 96, 24,
           "eager", True),
    "x2": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1,
                head_dim=64, intermediate_size=160, vocab_size=300, rope_theta=1000000.0), 5902, 7, 48,
           "sdpa", "k40"),
    "x3": (dict(hidden_size=112, num_hidden_layers=5, num_attention_heads=14, num_key_value_heads=7,
                head_dim=16, intermediate_size=224, vocab_size=640, rope_theta=500000.0), 5903, 19, 12,
           "eager", "x3"),
    "x4": (dict(hidden_size=80, num_hidden_layers=3, num_attention_heads=5, num_key_value_heads=5,
                head_dim=32, intermediate_size=192, vocab_size=450, rope_theta=10000.0), 5904, 2, 20,
           "eager", {"k_norm": {0: 96.5, 7: 40.0}}),
}

# The twentieth held-out check's four (a helper, 2026-12-08, session 62; results:
# docs/results/heldout-2026-12-08-session62-twentieth.txt): the swap faults' shapes. g1: MHA, q, k,
# v and o all [T, 96]; g2: intermediate_size = hidden_size (gate/up/down, q_proj and o_proj one
# shape); g3: GQA 4:1 with head_dim 128, k/v [T, 256] = the hidden size; g4: one kv head, a
# 1-token prompt, k_norm 1 but for channels at 96.5 and 30. Not run in CI.
TWENTIETH = {
    "g1": (dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=3,
                head_dim=32, intermediate_size=224, vocab_size=500, rope_theta=1000000.0), 6201, 2, 16,
           "eager", "x3"),
    "g2": (dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                head_dim=32, intermediate_size=128, vocab_size=700, rope_theta=500000.0), 6202, 100, 8,
           "sdpa", True),
    "g3": (dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                head_dim=128, intermediate_size=512, vocab_size=900, rope_theta=1000000.0), 6203, 33, 32,
           "eager", True),
    "g4": (dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                head_dim=16, intermediate_size=160, vocab_size=400, rope_theta=10000.0), 6204, 1, 24,
           "eager", {"k_norm": {0: 96.5, 5: 30.0}}),
}


def make(name: str, workdir: Path) -> tuple[Path, str, dict]:
    """Model `name` saved (float32 weights) under `workdir`: (its directory, its prompt, its
    config changes)."""
    changes, seed, length, _steps, _attn, gains = {**MODELS, **SECOND, **THIRD, **FOURTH, **SIXTH, **SEVENTH, **NINTH,
                                                    **TENTH, **REVIEW46, **REVIEW47, **ELEVENTH,
                                                    **TWELFTH, **THIRTEENTH, **FOURTEENTH,
                                                    **FIFTEENTH, **SIXTEENTH, **SEVENTEENTH,
                                                    **EIGHTEENTH, **NINETEENTH, **TWENTIETH}[name]
    cfg = json.loads((REPO / "fixtures/configs/tiny-qwen3.json").read_text())
    cfg.update(changes, max_window_layers=changes["num_hidden_layers"])
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(cfg))
    ids = prompt(cfg["vocab_size"], seed, length)
    mdir = workdir / "model"
    # A float scales the plain gains (ones, seeded init's own) instead; "xF" the realistic ones.
    # "kF": the plain gains, k_norm's times F. "c1F": the plain gains, one k_norm channel per
    # layer set to F.
    k_only = isinstance(gains, str) and gains.startswith("k")
    one_channel = isinstance(gains, str) and gains.startswith("c1")
    channels = isinstance(gains, dict)
    plain = ([] if gains is True or (isinstance(gains, str) and not (k_only or one_channel))
             else ["--no-norm-gains"])
    rc = dr.main(["--config", str(workdir / "config.json"), "--seed", str(seed), *plain,
                  "--save-model", str(mdir), "--save-dtype", "float32", "--ids", ids,
                  "--only", r"^model\.embed_tokens$", "--out", str(workdir / "throwaway.npz"),
                  "--quiet"])
    assert rc == 0
    if channels:
        # {norm: {channel: gain}}: that norm's weights 1 but for those channels.
        def edit(k, w):
            for norm, chans in gains.items():
                if k.endswith(f"{norm}.weight"):
                    w = w.clone()
                    w[:] = 1.0
                    for c, g in chans.items():
                        w[c] = g
                    return w
            return None
    elif one_channel:
        def edit(k, w):
            if not k.endswith("k_norm.weight"):
                return None
            w = w.clone()
            w[(3 + 5 * int(k.split(".")[2])) % changes["head_dim"]] = float(gains[2:])
            return w
    elif isinstance(gains, (float, str)):
        # The plain gains scaled (small q/k-norm weights), or the realistic ones ("x2").
        factor = gains if isinstance(gains, float) else float(gains[1:])
        which = ("k_norm.weight",) if k_only else ("q_norm.weight", "k_norm.weight")

        def edit(k, w):
            return w * factor if k.endswith(which) else None
    else:
        return mdir, ids, changes
    from safetensors.torch import load_file, save_file
    f = mdir / "model.safetensors"
    sd = load_file(str(f))
    for k in sd:
        w = edit(k, sd[k])
        if w is not None:
            sd[k] = w.contiguous()
    save_file(sd, str(f), metadata={"format": "pt"})
    return mdir, ids, changes
