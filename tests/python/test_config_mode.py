"""`--config` builds the model in memory; its dumps must equal those of the same weights loaded
back with from_pretrained (`--model`), in bf16 too: a plain `.to(bfloat16)` would also round
RoPE's inv_freq, which from_pretrained keeps in float32 (cos/sin differ past position ~16)."""

from __future__ import annotations

import numpy as np

from conftest import FIXTURES, dump, read_npz

CONFIG = FIXTURES / "configs" / "tiny-qwen3.json"


def test_config_mode_equals_from_pretrained_in_bf16(tmp_path):
    ids = ",".join(str(7 * i % 500 + 1) for i in range(64))
    saved = tmp_path / "model"
    from_config = dump(tmp_path, "--config", str(CONFIG), "--seed", "0", "--save-model", str(saved),
                       "--save-dtype", "bfloat16", "--dtype", "bfloat16", "--ids", ids, name="config.npz")
    from_dir = dump(tmp_path, "--model", str(saved), "--dtype", "bfloat16", "--ids", ids, name="model.npz")
    names_c, tensors_c, _ = read_npz(from_config)
    names_d, tensors_d, _ = read_npz(from_dir)
    assert names_c == names_d
    for name in ("model.rotary_emb", "model.layers.0.self_attn.rope_q", "lm_head"):
        np.testing.assert_array_equal(tensors_c[name], tensors_d[name], err_msg=name)
