//! Checkpoint layouts: sharded safetensors with an index, an explicit (untied) `lm_head.weight`,
//! and clear errors for broken checkpoints. Uses the committed tiny-qwen3 fixture, rewritten
//! into a temporary directory.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use divergence_qwen3::{Checkpoint, Faults, MemoryRecorder, ModelOptions, Policy, Probes, Qwen3};

fn load_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(tiny_model_dir().join("model.safetensors"), &Device::Cpu)
        .expect("fixture loads")
}

fn run_dir(dir: &Path) -> Result<MemoryRecorder, divergence_qwen3::Error> {
    let ckpt = Checkpoint::open(dir)?;
    let model = Qwen3::load(
        &ckpt,
        &Device::Cpu,
        &ModelOptions {
            dtype: DType::F32,
            policy: Policy::Torch,
            faults: Faults::none(),
        },
    )?;
    let mut rec = MemoryRecorder::default();
    model.forward(&[1, 2, 3, 4, 5], &mut Probes::on(&mut rec))?;
    Ok(rec)
}

fn write_config(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let text = std::fs::read_to_string(tiny_model_dir().join("config.json")).expect("config");
    let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("json");
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).expect("write config");
}

#[test]
fn sharded_checkpoint_with_untied_head_gives_the_same_probes() {
    let baseline = run_dir(&tiny_model_dir()).expect("baseline");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tensors = load_tensors();
    // Untied head holding the same values as the embedding.
    let embed = tensors["model.embed_tokens.weight"].clone();
    tensors.insert("lm_head.weight".to_string(), embed);
    write_config(dir.path(), |c| c["tie_word_embeddings"] = false.into());
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    let a: Vec<String> = names.iter().step_by(2).cloned().collect();
    let b: Vec<String> = names.iter().skip(1).step_by(2).cloned().collect();
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", &a),
        ("model-00002-of-00002.safetensors", &b),
    ] {
        let shard: HashMap<String, Tensor> = part
            .iter()
            .map(|n| (n.clone(), tensors[n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, dir.path().join(file)).expect("save shard");
        for n in part {
            weight_map.insert(n.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .expect("index");

    let sharded = run_dir(dir.path()).expect("sharded run");
    assert_eq!(
        sharded.names().iter().map(|n| &**n).collect::<Vec<_>>(),
        baseline.names()
    );
    for (x, y) in sharded.probes.iter().zip(&baseline.probes) {
        assert_eq!(x.data, y.data, "{}", x.name);
    }
}

#[test]
fn broken_checkpoints_are_named_errors() {
    // missing tensor
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tensors = load_tensors();
    tensors.remove("model.layers.2.self_attn.k_norm.weight");
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).expect("save");
    write_config(dir.path(), |_| {});
    let err = run_dir(dir.path()).expect_err("missing tensor").to_string();
    assert!(
        err.contains("missing tensor model.layers.2.self_attn.k_norm.weight"),
        "{err}"
    );

    // wrong shape: config.json's intermediate_size does not match the weights
    write_config(dir.path(), |c| c["intermediate_size"] = 100.into());
    let err = run_dir(dir.path()).expect_err("shape").to_string();
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight has shape [192, 64]"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");

    // no weights at all (the rule every command shares ends with "every *.safetensors")
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("rm");
    let err = run_dir(dir.path()).expect_err("no weights").to_string();
    assert!(err.contains("no *.safetensors files"), "{err}");

    // bad config
    std::fs::write(dir.path().join("config.json"), "{not json").expect("write");
    let err = run_dir(dir.path()).expect_err("bad config").to_string();
    assert!(
        err.contains("config.json: not a valid Qwen3 config"),
        "{err}"
    );
}

#[test]
fn probes_off_and_on_give_the_same_logits() {
    let ckpt = Checkpoint::open(&tiny_model_dir()).expect("open");
    let model = Qwen3::load(
        &ckpt,
        &Device::Cpu,
        &ModelOptions {
            dtype: DType::BF16,
            policy: Policy::Torch,
            faults: Faults::none(),
        },
    )
    .expect("load");
    let off = model
        .forward(&[3, 1, 4, 1, 5], &mut Probes::off())
        .expect("off");
    let mut rec = MemoryRecorder::default();
    model
        .forward(&[3, 1, 4, 1, 5], &mut Probes::on(&mut rec))
        .expect("on");
    let off: Vec<f32> = off
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("logits");
    assert_eq!(rec.get("lm_head").expect("lm_head").data.to_f32(), off);
}

#[test]
fn a_tensor_stored_twice_is_an_error_not_a_silent_choice() {
    // No model.safetensors and no index: every *.safetensors is read (the rule every command
    // shares); candle would load the last copy, inspect lists the first, so run refuses.
    let dir = tempfile::tempdir().expect("tempdir");
    let tensors = load_tensors();
    candle_core::safetensors::save(&tensors, dir.path().join("a.safetensors")).expect("save");
    let norm: HashMap<String, Tensor> = [(
        "model.norm.weight".to_string(),
        tensors["model.norm.weight"].clone(),
    )]
    .into_iter()
    .collect();
    candle_core::safetensors::save(&norm, dir.path().join("b.safetensors")).expect("save");
    write_config(dir.path(), |_| {});
    let err = run_dir(dir.path()).expect_err("duplicate").to_string();
    assert!(
        err.contains(
            "tensor model.norm.weight is stored twice, in a.safetensors and b.safetensors"
        ),
        "{err}"
    );
    // Without the duplicate the same directory runs.
    std::fs::remove_file(dir.path().join("b.safetensors")).expect("rm");
    run_dir(dir.path()).expect("runs");
}
