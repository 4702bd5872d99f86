//! `run`'s memory bound: a run whose activations or KV cache would pass
//! [`divergence_qwen3::memory_limit`] (the machine's memory) is refused with one line naming config.json, before any
//! weight is loaded (found by a bad-input hunt: both cases below aborted the process).

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::*;
use divergence_qwen3::{
    run_to_dump, DecodeIds, DecodeOptions, DeviceKind, Policy, Precision, RunOptions,
};

fn options(model_dir: &Path, input_ids: Vec<u32>, decode: Option<DecodeOptions>) -> RunOptions {
    RunOptions {
        model_dir: model_dir.to_path_buf(),
        input_ids,
        device: DeviceKind::Cpu,
        precision: Precision::F32,
        policy: Policy::Torch,
        faults: Vec::new(),
        out: None,
        repeat: 1,
        replay: None,
        decode,
        max_memory: None,
    }
}

#[test]
fn a_prompt_too_long_for_memory_is_refused_without_max_position_embeddings() {
    // The tiny model without max_position_embeddings (2^20 positions): 20,000 tokens asked for
    // 6.4 GB per copy of the attention scores and aborted.
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(tiny_model_dir().join("config.json")).expect("config");
    let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("json");
    cfg.as_object_mut()
        .expect("object")
        .remove("max_position_embeddings");
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("write");
    std::fs::copy(
        tiny_model_dir().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .expect("copy");
    // ~2.6 TB of attention scores: over any machine's memory.
    let ids: Vec<u32> = (0..200_000).map(|i| i % 512).collect();
    let err = run_to_dump(&options(dir.path(), ids, None))
        .expect_err("refused")
        .to_string();
    let config = dir.path().join("config.json");
    assert!(err.starts_with(&format!("{}: ", config.display())), "{err}");
    assert!(
        err.contains("200000 prompt tokens + 0 decode steps"),
        "{err}"
    );
    assert!(err.contains("the attention scores"), "{err}");
    let bounds = [
        "of this machine's memory (besides the weights)",
        "of the cgroup's memory limit (besides the weights)",
        "of the address-space limit (ulimit -v) (besides the weights)",
        "of what a run may use (besides the weights)",
    ];
    assert!(bounds.iter().any(|b| err.contains(b)), "{err}");
    assert!(
        err.ends_with("give fewer tokens, or --max-memory GIB to allow more"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");

    // A prompt within the bound still runs.
    let ids: Vec<u32> = (0..600).map(|i| i % 512).collect();
    let summary = run_to_dump(&options(dir.path(), ids.clone(), None)).expect("600 tokens run");
    assert_eq!(summary.n_tokens, 600);

    // --max-memory replaces the bound: the same run under 1 MiB is refused, and says so.
    let small = RunOptions {
        max_memory: Some(1 << 20),
        ..options(dir.path(), ids, None)
    };
    let err = run_to_dump(&small).expect_err("refused").to_string();
    assert!(
        err.contains("of --max-memory (besides the weights): give fewer tokens"),
        "{err}"
    );
    assert!(err.ends_with("give fewer tokens"), "{err}");
}

#[test]
fn a_kv_cache_too_large_for_memory_is_refused() {
    // head_dim 65536, hidden 2: 12,000 decode steps asked for a 3.1 GB cache (each of k and v)
    // and aborted.
    let dir = tempfile::tempdir().expect("tempdir");
    let hd = 65536;
    let cfg = serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 2,
        "hidden_size": 2, "intermediate_size": 1, "num_hidden_layers": 1,
        "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": hd,
        "tie_word_embeddings": true, "rope_theta": 10000.0, "rms_norm_eps": 1e-6
    });
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("write");
    let p = "model.layers.0.";
    let z = |shape: &[usize]| Tensor::full(0.01f32, shape, &Device::Cpu).expect("tensor");
    let tensors: HashMap<String, Tensor> = [
        ("model.embed_tokens.weight".to_string(), z(&[2, 2])),
        ("model.norm.weight".to_string(), z(&[2])),
        (format!("{p}input_layernorm.weight"), z(&[2])),
        (format!("{p}post_attention_layernorm.weight"), z(&[2])),
        (format!("{p}self_attn.q_proj.weight"), z(&[hd, 2])),
        (format!("{p}self_attn.k_proj.weight"), z(&[hd, 2])),
        (format!("{p}self_attn.v_proj.weight"), z(&[hd, 2])),
        (format!("{p}self_attn.o_proj.weight"), z(&[2, hd])),
        (format!("{p}self_attn.q_norm.weight"), z(&[hd])),
        (format!("{p}self_attn.k_norm.weight"), z(&[hd])),
        (format!("{p}mlp.gate_proj.weight"), z(&[1, 2])),
        (format!("{p}mlp.up_proj.weight"), z(&[1, 2])),
        (format!("{p}mlp.down_proj.weight"), z(&[2, 1])),
    ]
    .into_iter()
    .collect();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).expect("save");
    let decode = |n: usize| {
        Some(DecodeOptions {
            steps: None,
            ids: DecodeIds::Given(vec![1; n]),
        })
    };
    // ~2 TB of KV cache: over any machine's memory.
    let err = run_to_dump(&options(dir.path(), vec![1], decode(1_000_000)))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("config.json: "), "{err}");
    assert!(
        err.contains("1 prompt token + 1000000 decode steps in float32"),
        "{err}"
    );
    assert!(err.contains("head_dim 65536"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    // A few steps still run.
    let summary = run_to_dump(&options(dir.path(), vec![1], decode(4))).expect("4 steps run");
    assert_eq!(summary.decode_steps, 4);
}
