//! End-to-end tests of `divergence_inspect` on checkpoints written by the tests: a clean tiny
//! Qwen3 and variants with one planted loader bug each.

mod fixture;

use std::path::Path;

use divergence_inspect::render::{render_json, render_markdown, render_table, TableOptions};
use divergence_inspect::{
    inspect, norm_gains, Finding, FindingKind, InspectError, InspectOptions, Report, Severity,
};
use fixture::Fixture;
use safetensors::Dtype;

fn run(f: &Fixture) -> Report {
    let dir = tempfile::tempdir().unwrap();
    f.write(dir.path());
    inspect(dir.path(), &InspectOptions::default()).expect("inspect should succeed")
}

fn only<'a>(report: &'a Report, kind: FindingKind, tensor: &str) -> &'a Finding {
    let hits: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.kind == kind && f.tensor.as_deref() == Some(tensor))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one {kind:?} finding for {tensor}, got {:#?}",
        report.findings
    );
    hits[0]
}

const BIAS: &str = "model.layers.0.self_attn.q_proj.bias";

#[test]
fn clean_checkpoint_has_no_findings() {
    let r = run(&Fixture::qwen3());
    assert_eq!(r.findings, vec![], "clean fixture flagged");
    assert!(!r.flagged());
    assert_eq!(r.summary.tensors, 1 + 2 * 11 + 1);
    assert_eq!(r.summary.files, 1);
    assert_eq!(r.summary.flagged_tensors, 0);
    assert!(r.tensors.iter().all(|t| !t.flagged && t.stats.is_some()));
    // Every tensor has its stats; spot-check one against its construction (BF16 in [-0.05, 0.05]).
    let q = r
        .tensors
        .iter()
        .find(|t| t.name == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(q.dtype, "BF16");
    assert_eq!(q.shape, vec![128, 64]);
    let s = q.stats.as_ref().unwrap();
    assert_eq!(s.count, 128 * 64);
    assert!(
        s.max.unwrap() <= 0.0502 && s.min.unwrap() >= -0.0502,
        "{s:?}"
    );
    assert!(
        s.mean.unwrap().abs() < 0.005 && (s.std.unwrap() - 0.05 / 3f64.sqrt()).abs() < 0.003,
        "{s:?}"
    );
    // Norm gains: two layers, all four norms.
    assert_eq!(r.layers.len(), 2);
    for (i, l) in r.layers.iter().enumerate() {
        assert_eq!(l.layer, i);
        assert!(l.input_layernorm.is_some() && l.post_attention_layernorm.is_some());
        let k = l.k_gain().unwrap();
        assert!((1.0..=1.5).contains(&k), "k gain {k}");
    }
    let c = r.config.as_ref().unwrap();
    assert_eq!(
        (c.head_dim, c.num_key_value_heads, c.tie_word_embeddings),
        (Some(32), Some(2), Some(true))
    );
}

#[test]
fn planted_bias_is_extreme_and_unused() {
    let mut f = Fixture::qwen3();
    f.set_bf16(BIAS, &[128], &[1e30; 128]);
    let r = run(&f);
    assert!(r.flagged());
    let extreme = only(&r, FindingKind::ExtremeValue, BIAS);
    assert_eq!(extreme.severity, Severity::Error);
    assert!(
        extreme
            .message
            .contains("extreme values: max |x| = 1.000e30 > 1e6"),
        "{}",
        extreme.message
    );
    let unused = only(&r, FindingKind::UnusedTensor, BIAS);
    assert_eq!(unused.severity, Severity::Warning);
    assert!(
        unused.message.contains("attention_bias is false"),
        "{}",
        unused.message
    );
    assert!(
        unused.message.contains("a port must not apply it"),
        "{}",
        unused.message
    );
    assert_eq!(r.findings.len(), 2, "{:#?}", r.findings);
    assert_eq!(
        (
            r.summary.errors,
            r.summary.warnings,
            r.summary.flagged_tensors
        ),
        (1, 1, 1)
    );
    let t = r.tensors.iter().find(|t| t.name == BIAS).unwrap();
    assert!(t.flagged);
    // 1e30 rounds to the nearest bf16.
    let expected = f64::from(half::bf16::from_f32(1e30).to_f32());
    assert_eq!(t.stats.as_ref().unwrap().max, Some(expected));
}

#[test]
fn max_abs_threshold_is_configurable() {
    let mut f = Fixture::qwen3();
    f.poke("model.layers.1.mlp.up_proj.weight", 3, 500.0);
    let r = run(&f);
    assert!(r.findings.is_empty(), "500 < 1e6: {:#?}", r.findings);
    let dir = tempfile::tempdir().unwrap();
    f.write(dir.path());
    let r = inspect(
        dir.path(),
        &InspectOptions {
            max_abs: 100.0,
            ..Default::default()
        },
    )
    .unwrap();
    let e = only(
        &r,
        FindingKind::ExtremeValue,
        "model.layers.1.mlp.up_proj.weight",
    );
    assert!(e.message.contains("max |x| = 500 > 1e2"), "{}", e.message);
}

#[test]
fn nan_in_weight_is_an_error() {
    let mut f = Fixture::qwen3();
    let name = "model.layers.1.mlp.gate_proj.weight";
    f.poke(name, 17, f32::NAN).poke(name, 18, f32::NEG_INFINITY);
    let r = run(&f);
    let nf = only(&r, FindingKind::NonFinite, name);
    assert_eq!(nf.severity, Severity::Error);
    assert!(
        nf.message.contains("1 NaN, 1 -Inf in 8192 values"),
        "{}",
        nf.message
    );
    let s = r
        .tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap()
        .stats
        .clone()
        .unwrap();
    assert_eq!((s.nan, s.pos_inf, s.neg_inf), (1, 0, 1));
    assert!(
        s.mean.unwrap().is_finite(),
        "moments skip non-finite values"
    );
    assert_eq!(r.findings.len(), 1);
    assert!(r.flagged());
}

#[test]
fn transposed_down_proj_is_called_transposed() {
    let mut f = Fixture::qwen3();
    let name = "model.layers.0.mlp.down_proj.weight";
    f.transpose(name);
    let r = run(&f);
    let t = only(&r, FindingKind::Transposed, name);
    assert_eq!(t.severity, Severity::Error);
    assert!(
        t.message.starts_with("transposed: stored [128, 64], config implies [64, 128] = [hidden_size, intermediate_size]"),
        "{}",
        t.message
    );
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
}

/// A weight the config needs in a dtype `divergence run` cannot load (bool, int8) is flagged
/// (a bad-input hunt: it read "clean", and `run` refused the checkpoint).
#[test]
fn a_needed_weight_of_no_float_dtype_is_flagged() {
    // (FP8: the warning alone, not it and the note that its values were not decoded.)
    for (dtype, width) in [(Dtype::BOOL, 1), (Dtype::I8, 1), (Dtype::F8_E4M3, 1)] {
        let mut f = Fixture::qwen3();
        let name = "model.layers.1.mlp.up_proj.weight";
        f.set_raw(name, dtype, &[128, 64], vec![1; 128 * 64 * width]);
        let r = run(&f);
        let d = only(&r, FindingKind::UnsupportedDtype, name);
        assert_eq!(d.severity, Severity::Warning, "{dtype:?}");
        assert!(
            d.message.contains("needs a float weight") && d.message.contains("refuses it"),
            "{}",
            d.message
        );
        assert!(r.flagged(), "{dtype:?}");
    }
}

#[test]
fn missing_tensor_is_an_error() {
    let mut f = Fixture::qwen3();
    let name = "model.layers.1.mlp.up_proj.weight";
    f.remove(name);
    let r = run(&f);
    let m = only(&r, FindingKind::MissingTensor, name);
    assert_eq!(m.severity, Severity::Error);
    assert!(
        m.message.starts_with(
            "missing: a qwen3 model with this config.json needs it (expected shape [128, 64]"
        ),
        "{}",
        m.message
    );
    assert_eq!(r.findings.len(), 1);
}

#[test]
fn high_k_norm_gain_is_info_not_flagged() {
    let mut f = Fixture::qwen3();
    let name = "model.layers.0.self_attn.k_norm.weight";
    f.poke(name, 5, 96.5);
    let r = run(&f);
    assert_eq!(r.layers[0].k_gain(), Some(96.5));
    assert!(r.layers[1].k_gain().unwrap() < 2.0);
    let g = only(&r, FindingKind::HighNormGain, name);
    assert_eq!(g.severity, Severity::Info);
    assert!(
        g.message
            .starts_with("k_norm gain up to 96.5 (layer 0; 1 of 2 layers above 10)"),
        "{}",
        g.message
    );
    assert!(g.message.contains("up to 96.5x larger"), "{}", g.message);
    assert_eq!(r.findings.len(), 1);
    assert!(!r.flagged(), "an info note must not make inspect exit 1");
    assert_eq!(r.summary.infos, 1);
    // The table shows it marked.
    let mut out = Vec::new();
    render_table(&r, &TableOptions::default(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("96.5 ("), "{text}");
    assert!(text.contains(" *"), "{text}");
    assert!(text.contains("result: clean"), "{text}");
}

#[test]
fn sharded_checkpoint_with_index() {
    let f = Fixture::qwen3();
    let dir = tempfile::tempdir().unwrap();
    f.write_sharded(dir.path());
    let r = inspect(dir.path(), &InspectOptions::default()).unwrap();
    assert_eq!(r.findings, vec![]);
    assert_eq!(
        r.files,
        vec![
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    assert_eq!(r.summary.tensors, 24);
    let norm = r
        .tensors
        .iter()
        .find(|t| t.name == "model.norm.weight")
        .unwrap();
    assert_eq!(norm.file, "model-00002-of-00002.safetensors");
    // Natural order across shards: layer 0 before layer 1, embed first.
    assert_eq!(r.tensors[0].name, "model.embed_tokens.weight");
}

#[test]
fn sharded_checkpoint_flags_bugs_in_any_shard_and_index_mismatches() {
    let mut f = Fixture::qwen3();
    f.poke("model.layers.1.self_attn.v_proj.weight", 0, f32::NAN);
    let dir = tempfile::tempdir().unwrap();
    f.write_sharded(dir.path());
    // The index claims a tensor that no shard has.
    let index_path = dir.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["weight_map"]["model.layers.0.self_attn.q_proj.bias"] =
        "model-00001-of-00002.safetensors".into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let r = inspect(dir.path(), &InspectOptions::default()).unwrap();
    only(
        &r,
        FindingKind::NonFinite,
        "model.layers.1.self_attn.v_proj.weight",
    );
    let m = only(
        &r,
        FindingKind::IndexMismatch,
        "model.layers.0.self_attn.q_proj.bias",
    );
    assert_eq!(m.message, "model.safetensors.index.json says it is in model-00001-of-00002.safetensors, but no shard has it");
}

#[test]
fn all_safetensors_in_dir_without_index() {
    let f = Fixture::qwen3();
    let dir = tempfile::tempdir().unwrap();
    f.write_sharded(dir.path());
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    let r = inspect(dir.path(), &InspectOptions::default()).unwrap();
    assert_eq!(r.findings, vec![]);
    assert_eq!(r.summary.files, 2);
}

#[test]
fn index_naming_a_missing_shard_is_an_error() {
    let f = Fixture::qwen3();
    let dir = tempfile::tempdir().unwrap();
    f.write_sharded(dir.path());
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    assert!(matches!(err, InspectError::MissingShard { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: names shard model-00002-of-00002.safetensors, which does not exist",
            dir.path().join("model.safetensors.index.json").display()
        )
    );
}

#[test]
fn index_naming_a_directory_as_shard_says_so() {
    let f = Fixture::qwen3();
    let dir = tempfile::tempdir().unwrap();
    f.write_sharded(dir.path());
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    std::fs::create_dir(&shard).unwrap();
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    assert!(matches!(err, InspectError::ShardNotRegularFile { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: names shard model-00002-of-00002.safetensors, which is a directory, not a regular file",
            dir.path().join("model.safetensors.index.json").display()
        )
    );
}

/// `inspect` of `dir` on another thread, so that a regression that opens a fifo (and blocks)
/// fails the test instead of hanging it.
fn inspect_err_within_10s(dir: &Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(inspect(&dir, &InspectOptions::default()).map(|_| ()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(result) => result.unwrap_err().to_string(),
        Err(_) => panic!("inspect blocked for 10 s (did it open a fifo?)"),
    }
}

/// model.safetensors that is a directory, a fifo or a symlink to /dev/zero: an error naming
/// it and what it is (told from its metadata, the fifo never opened), not "no *.safetensors".
#[test]
fn model_safetensors_that_is_not_a_regular_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::qwen3().write_config(dir.path());
    let st = dir.path().join("model.safetensors");
    std::fs::create_dir(&st).unwrap();
    assert_eq!(
        inspect_err_within_10s(dir.path()),
        format!("{}: is a directory, not a regular file", st.display())
    );
    std::fs::remove_dir(&st).unwrap();

    #[cfg(unix)]
    {
        let made = std::process::Command::new("mkfifo")
            .arg(&st)
            .status()
            .is_ok_and(|s| s.success());
        if made {
            assert_eq!(
                inspect_err_within_10s(dir.path()),
                format!(
                    "{}: is a named pipe (fifo), not a regular file",
                    st.display()
                )
            );
            std::fs::remove_file(&st).unwrap();
        }
        if Path::new("/dev/zero").exists() {
            std::os::unix::fs::symlink("/dev/zero", &st).unwrap();
            assert_eq!(
                inspect_err_within_10s(dir.path()),
                format!(
                    "{}: is a character device, not a regular file",
                    st.display()
                )
            );
        }
    }
}

#[test]
fn duplicate_tensor_across_shards() {
    let f = Fixture::qwen3();
    let dir = tempfile::tempdir().unwrap();
    f.write(dir.path());
    // Not model.safetensors (that alone would be read, see the next test): every *.safetensors.
    std::fs::rename(
        dir.path().join("model.safetensors"),
        dir.path().join("weights.safetensors"),
    )
    .unwrap();
    let mut extra = Fixture {
        config: f.config.clone(),
        tensors: Default::default(),
    };
    extra.tensors.insert(
        "model.norm.weight".into(),
        f.tensors["model.norm.weight"].clone(),
    );
    let views = extra.tensors.iter().map(|(n, t)| {
        (
            n.clone(),
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
        )
    });
    safetensors::serialize_to_file(views, None, &dir.path().join("extra.safetensors")).unwrap();
    let r = inspect(dir.path(), &InspectOptions::default()).unwrap();
    let d = only(&r, FindingKind::DuplicateTensor, "model.norm.weight");
    assert!(
        d.message
            .contains("stored twice, in extra.safetensors and weights.safetensors"),
        "{}",
        d.message
    );
}

#[test]
fn next_to_model_safetensors_other_files_are_ignored_and_said() {
    // transformers' rule: model.safetensors first, then the index; a stray *.safetensors and
    // an index next to model.safetensors are not read, and the report says so (info).
    let f = Fixture::qwen3();
    let dir = tempfile::tempdir().unwrap();
    f.write(dir.path());
    let mut poisoned = Fixture {
        config: f.config.clone(),
        tensors: f.tensors.clone(),
    };
    poisoned.poke("model.norm.weight", 0, f32::NAN);
    poisoned.write_sharded(dir.path());
    let r = inspect(dir.path(), &InspectOptions::default()).unwrap();
    assert_eq!(r.files, vec!["model.safetensors"]);
    assert!(!r.flagged(), "{:#?}", r.findings);
    let ignored: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::IgnoredFile)
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(
        ignored,
        vec![
            "model.safetensors.index.json is not read: model.safetensors is read instead (transformers reads model.safetensors first)",
            "model-00001-of-00002.safetensors is not read: only model.safetensors is read",
            "model-00002-of-00002.safetensors is not read: only model.safetensors is read",
        ]
    );
    assert_eq!(r.summary.infos, 3);
}

#[test]
fn head_dim_derived_instead_of_read_is_explained() {
    let mut f = Fixture::qwen3();
    // A port that used hidden / heads = 16 as head_dim would export q_proj as [64, 64].
    let name = "model.layers.0.self_attn.q_proj.weight";
    f.set_bf16(name, &[64, 64], &[0.01; 64 * 64]);
    let r = run(&f);
    let m = only(&r, FindingKind::ShapeMismatch, name);
    assert_eq!(
        m.message,
        "shape [64, 64] contradicts config.json: expected [128, 64] = [num_attention_heads * head_dim, hidden_size] \
         (as if head_dim were hidden_size / num_attention_heads = 16; config.json says head_dim = 32)"
    );
}

#[test]
fn kv_heads_and_vocab_mismatches() {
    let mut f = Fixture::qwen3();
    f.set_bf16(
        "model.layers.1.self_attn.k_proj.weight",
        &[128, 64],
        &[0.01; 128 * 64],
    );
    f.set_bf16("model.embed_tokens.weight", &[300, 64], &[0.01; 300 * 64]);
    let r = run(&f);
    let k = only(
        &r,
        FindingKind::ShapeMismatch,
        "model.layers.1.self_attn.k_proj.weight",
    );
    assert!(
        k.message
            .contains("expected [64, 64] = [num_key_value_heads * head_dim, hidden_size]"),
        "{}",
        k.message
    );
    let v = only(&r, FindingKind::ShapeMismatch, "model.embed_tokens.weight");
    assert!(
        v.message
            .contains("expected [256, 64] = [vocab_size, hidden_size]"),
        "{}",
        v.message
    );
}

#[test]
fn tied_embeddings_checks() {
    // tie true + a different lm_head: warning.
    let mut f = Fixture::qwen3();
    f.set_bf16("lm_head.weight", &[256, 64], &[0.02; 256 * 64]);
    let r = run(&f);
    let t = only(&r, FindingKind::TiedEmbeddings, "lm_head.weight");
    assert_eq!(t.severity, Severity::Warning);
    assert!(
        t.message
            .contains("tie_word_embeddings is true but lm_head.weight is stored and differs"),
        "{}",
        t.message
    );
    assert!(t.message.contains("must not apply"), "{}", t.message);

    // tie true + an exact copy: info only.
    let mut f = Fixture::qwen3();
    let emb = f.tensors["model.embed_tokens.weight"].clone();
    f.tensors.insert("lm_head.weight".into(), emb);
    let r = run(&f);
    assert_eq!(
        only(&r, FindingKind::TiedEmbeddings, "lm_head.weight").severity,
        Severity::Info
    );
    assert!(!r.flagged());

    // tie false + no lm_head: error.
    let mut f = Fixture::qwen3();
    f.config["tie_word_embeddings"] = false.into();
    let r = run(&f);
    let t = only(&r, FindingKind::TiedEmbeddings, "lm_head.weight");
    assert_eq!(t.severity, Severity::Error);
    assert!(
        t.message
            .starts_with("missing: tie_word_embeddings is false"),
        "{}",
        t.message
    );

    // tie false + lm_head of the right shape: clean.
    f.set_bf16("lm_head.weight", &[256, 64], &[0.02; 256 * 64]);
    assert_eq!(run(&f).findings, vec![]);
}

#[test]
fn extra_layer_and_llama_rules() {
    let mut f = Fixture::qwen3();
    f.set_f32("model.layers.2.input_layernorm.weight", &[64], &[1.0; 64]);
    let r = run(&f);
    let u = only(
        &r,
        FindingKind::UnusedTensor,
        "model.layers.2.input_layernorm.weight",
    );
    assert!(
        u.message
            .contains("layer 2 is beyond num_hidden_layers = 2"),
        "{}",
        u.message
    );

    // The same tensors read as a llama config: q_norm / k_norm are not llama's.
    let mut f = Fixture::qwen3();
    f.config["model_type"] = "llama".into();
    let r = run(&f);
    let u = only(
        &r,
        FindingKind::UnusedTensor,
        "model.layers.0.self_attn.k_norm.weight",
    );
    assert!(
        u.message
            .contains("llama has no q_norm / k_norm (only qwen3 does)"),
        "{}",
        u.message
    );
    assert_eq!(r.summary.warnings, 4);

    // qwen2 needs q/k/v biases.
    let mut f = Fixture::qwen3();
    f.config["model_type"] = "qwen2".into();
    let r = run(&f);
    only(
        &r,
        FindingKind::MissingTensor,
        "model.layers.0.self_attn.q_proj.bias",
    );
    only(
        &r,
        FindingKind::MissingTensor,
        "model.layers.1.self_attn.v_proj.bias",
    );
}

#[test]
fn unknown_model_type_only_gets_statistics() {
    let mut f = Fixture::qwen3();
    f.config["model_type"] = "gpt_neox".into();
    f.poke("model.norm.weight", 0, f32::INFINITY);
    let r = run(&f);
    let note = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::Config)
        .unwrap();
    assert_eq!(note.severity, Severity::Info);
    assert!(
        note.message.contains("\"gpt_neox\" is not one we know"),
        "{}",
        note.message
    );
    only(&r, FindingKind::NonFinite, "model.norm.weight");
    assert_eq!(r.findings.len(), 2);
}

#[test]
fn qwen3_without_head_dim_uses_transformers_default_128() {
    let mut f = Fixture::qwen3();
    f.config.as_object_mut().unwrap().remove("head_dim");
    let r = run(&f);
    let note = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::Config)
        .unwrap();
    assert_eq!(note.severity, Severity::Warning);
    assert!(
        note.message
            .contains("defaults it to 128, not hidden_size / num_attention_heads = 16"),
        "{}",
        note.message
    );
    assert_eq!(r.config.as_ref().unwrap().head_dim, Some(128));
    assert!(r
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::ShapeMismatch));
}

/// A field that is present but rejected is not replaced by a default: `head_dim: 32.0` is
/// not 128 and `num_key_value_heads: 0` is not 32 (transformers' defaults when absent), so no
/// shape is judged against them. Only the config error and the "skipped" note remain.
#[test]
fn malformed_head_dim_or_kv_heads_is_not_defaulted() {
    for (key, value, shown) in [
        ("head_dim", serde_json::json!(32.0), "32.0"),
        ("num_key_value_heads", serde_json::json!(0), "0"),
        ("head_dim", serde_json::json!("32"), "\"32\""),
        // Qwen3Config refuses a null head_dim (it was read as absent, defaulted to 128: a
        // bad-input hunt, 2026-12-05).
        ("head_dim", serde_json::Value::Null, "null"),
        (
            "num_key_value_heads",
            serde_json::json!(1_000_000),
            "1000000",
        ),
    ] {
        let mut f = Fixture::qwen3();
        f.config[key] = value;
        let r = run(&f);
        let messages: Vec<(Severity, &str)> = r
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Config)
            .map(|f| (f.severity, f.message.as_str()))
            .collect();
        let error = if shown == "1000000" {
            format!("config.json: {key} is {shown}, above the sanity cap of 65536 (real models are far below it)")
        } else {
            format!("config.json: {key} is {shown}, expected a positive integer")
        };
        let skipped =
            format!("shape checks skipped: config.json's {key} not usable (see the config error)");
        assert_eq!(
            messages,
            vec![
                (Severity::Error, error.as_str()),
                (Severity::Info, skipped.as_str())
            ]
        );
        // no structural finding, no default in the summary: the value is unknown
        assert_eq!(r.findings.len(), 2, "{:#?}", r.findings);
        let c = r.config.as_ref().unwrap();
        if key == "head_dim" {
            assert_eq!((c.head_dim, c.num_key_value_heads), (None, Some(2)));
        } else {
            assert_eq!((c.head_dim, c.num_key_value_heads), (Some(32), None));
        }
    }
}

/// What `divergence run` or transformers refuses (on load or in the forward pass) is a `config` error
/// here too, never "clean" (a bad-input hunt, 2026-12-05).
#[test]
fn config_values_the_port_refuses_are_errors() {
    for (key, value, want) in [
        (
            "num_key_value_heads",
            3,
            "config.json: num_attention_heads (4) is not a multiple of num_key_value_heads (3)",
        ),
        ("head_dim", 33, "config.json: head_dim (33) must be even"),
    ]
    .map(|(k, v, w)| (k, serde_json::json!(v), w))
    .into_iter()
    .chain([
        (
            "hidden_act",
            serde_json::json!("nope"),
            "config.json: hidden_act \"nope\" is no activation transformers knows",
        ),
        (
            "layer_types",
            serde_json::json!(["full_attention", "full_attention", "full_attention"]),
            "config.json: layer_types lists 3 layers, num_hidden_layers is 2",
        ),
    ]) {
        let mut f = Fixture::qwen3();
        f.config[key] = value;
        let r = run(&f);
        let errors: Vec<&str> = r
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Config && f.severity == Severity::Error)
            .map(|f| f.message.as_str())
            .collect();
        assert!(
            errors.len() == 1 && errors[0].starts_with(want),
            "{key}: {errors:?}"
        );
    }
}

/// What transformers runs and `divergence run` refuses (a scaled RoPE, sliding-window layers)
/// is said, as information: the checkpoint is not wrong, a port must implement it. What
/// transformers refuses, on load or in its forward pass, is a `config` error (a bad-input
/// hunt: each of these read as clean, checked against transformers 5.17 config by config).
#[test]
fn scaled_rope_and_sliding_layers_are_said_and_what_transformers_refuses_is_an_error() {
    use serde_json::json;
    let said = |model_type: &str, change: serde_json::Value| -> (Vec<String>, Vec<String>) {
        let mut f = Fixture::qwen3();
        f.config["model_type"] = model_type.into();
        for (k, v) in change.as_object().unwrap() {
            f.config[k] = v.clone();
        }
        let r = run(&f);
        let of = |s: Severity| {
            r.findings
                .iter()
                .filter(|f| f.kind == FindingKind::Config && f.severity == s)
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
        };
        (of(Severity::Info), of(Severity::Error))
    };
    let run_refuses = "`divergence run` implements full attention only and refuses this config)";
    // Clean: nothing said.
    for (mt, change) in [
        ("qwen3", json!({})),
        // `use_sliding_window` slides the layers from `max_window_layers` (28 by default) on,
        // as transformers derives `layer_types`: none of these 2 layers
        ("qwen3", json!({"use_sliding_window": true})),
        (
            "qwen3",
            json!({"use_sliding_window": true, "max_window_layers": 1, "sliding_window": null}),
        ),
        // layer_types all full, whatever use_sliding_window says
        (
            "qwen3",
            json!({"use_sliding_window": true, "max_window_layers": 0, "layer_types": ["full_attention", "full_attention"]}),
        ),
        // llama has no such fields: transformers ignores them
        (
            "llama",
            json!({"use_sliding_window": true, "max_window_layers": 0, "sliding_window": 4}),
        ),
        ("llama", json!({"use_sliding_window": "yes"})),
        ("mistral", json!({"sliding_window": null})),
        // a null top-level rope_theta where the RoPE parameters hold one (a config saved by
        // transformers: a newcomer's check)
        (
            "qwen3",
            json!({"rope_theta": null, "rope_parameters": {"rope_type": "default", "rope_theta": 5.0}}),
        ),
        // a falsy rope_scaling is none (`rope_scaling or rope_parameters`)
        ("qwen3", json!({"rope_scaling": false})),
        ("qwen3", json!({"rope_scaling": 0})),
        ("qwen3", json!({"rope_scaling": ""})),
        ("qwen3", json!({"rope_scaling": []})),
    ] {
        assert_eq!(said(mt, change.clone()), (vec![], vec![]), "{mt} {change}");
    }
    // Another model type may read its own RoPE and layer types (Qwen2-VL's "mrope", granite's
    // "mamba", which transformers remaps): no error where config checks are skipped (a review).
    for change in [
        json!({"rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}),
        json!({"layer_types": ["mamba", "attention"]}),
        json!({"rope_theta": null}),
    ] {
        let (_, errors) = said("qwen2_vl", change.clone());
        assert_eq!(errors, Vec::<String>::new(), "{change}");
    }
    // An object in the RoPE parameters under a key that is no layer type is no set per layer
    // type (a review).
    let (_, errors) = said(
        "qwen2",
        json!({"rope_scaling": {"rope_type": "default", "extra": {"a": 1}}}),
    );
    assert_eq!(errors, Vec::<String>::new());
    // A key filled in from the config when absent is no error (proportional's rope_theta).
    let (infos, errors) = said(
        "qwen3",
        json!({"rope_parameters": {"rope_type": "proportional"}}),
    );
    assert_eq!((infos.len(), errors), (1, vec![]));
    // Information: a scaled RoPE, sliding layers (with the window's size).
    for (mt, change, info) in [
        ("qwen3", json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
         "config.json: rope_type \"yarn\": RoPE's frequencies are scaled, not plain theta^(-2i/d) (a port must apply it; `divergence run` implements only \"default\" and refuses this config)".to_string()),
        ("qwen3", json!({"layer_types": ["full_attention", "sliding_attention"], "use_sliding_window": true, "sliding_window": 8}),
         format!("config.json: layer_types has 1 of 2 layers not \"full_attention\": attention over the last 8 tokens (a port without the mask diverges on sequences longer than 8; {run_refuses}")),
        ("qwen3", json!({"use_sliding_window": true, "max_window_layers": 1}),
         format!("config.json: use_sliding_window: true: 1 layer from max_window_layers (1) on: attention over the last 4096 tokens (a port without the mask diverges on sequences longer than 4096; {run_refuses}")),
        // negative: every layer (`i >= max_window_layers`)
        ("qwen2", json!({"use_sliding_window": true, "max_window_layers": -1, "sliding_window": 2}),
         format!("config.json: use_sliding_window: true: 2 layers from max_window_layers (-1) on: attention over the last 2 tokens (a port without the mask diverges on sequences longer than 2; {run_refuses}")),
        // mistral: every layer, its window 4096 when absent
        ("mistral", json!({}),
         format!("config.json: no sliding_window (mistral's default, 4096): every layer: attention over the last 4096 tokens (a port without the mask diverges on sequences longer than 4096; {run_refuses}")),
    ] {
        let (infos, errors) = said(mt, change.clone());
        assert_eq!((infos, errors), (vec![info], vec![]), "{mt} {change}");
    }
    // Errors: what transformers refuses.
    for (mt, change, error) in [
        ("qwen3", json!({"use_sliding_window": true, "max_window_layers": -1, "sliding_window": 0}),
         "config.json: 2 layers slide but sliding_window is 0, not a positive number of tokens: transformers' forward pass fails"),
        ("qwen3", json!({"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 2}),
         "config.json: 1 layer slides but there is no window (sliding_window is dropped without use_sliding_window: true): transformers' forward pass fails"),
        ("qwen3", json!({"max_window_layers": "1"}), "config.json: max_window_layers is \"1\", expected an integer"),
        ("qwen2", json!({"max_window_layers": 1.0}), "config.json: max_window_layers is 1.0, expected an integer"),
        ("qwen3", json!({"max_window_layers": null}), "config.json: max_window_layers is null, expected an integer"),
        ("mistral", json!({"sliding_window": "2"}), "config.json: sliding_window is \"2\", expected an integer"),
        ("qwen3", json!({"layer_types": ["foo", "full_attention"]}), "config.json: layer_types is \"foo\", expected a layer type transformers knows"),
        ("qwen3", json!({"rope_theta": null}), "config.json: rope_theta is null, expected a number"),
        ("qwen3", json!({"rope_parameters": {"rope_type": "default", "rope_theta": null}}), "config.json: rope_parameters.rope_theta is null, expected a number"),
        ("qwen3", json!({"rope_scaling": {"rope_type": null, "type": "linear", "factor": 2}}), "config.json: rope_scaling.rope_type is null, expected a string"),
        ("qwen3", json!({"rope_parameters": {"rope_type": "Default"}}), "config.json: rope_parameters.rope_type is \"Default\", expected a RoPE type transformers knows"),
        ("llama", json!({"rope_scaling": {"type": "yarn"}}), "config.json: rope_scaling.factor is missing: transformers requires it for this rope_type"),
        ("qwen3", json!({"rope_scaling": {"rope_type": "linear", "factor": "2"}}), "config.json: rope_scaling.factor is \"2\", expected a number"),
        ("qwen3", json!({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 5.0}}}),
         "config.json: rope_parameters.full_attention is {"),
        ("qwen2", json!({"head_dim": null}), "config.json: head_dim is null, expected a positive integer"),
    ] {
        let (_, errors) = said(mt, change.clone());
        assert!(
            errors.iter().any(|e| e.starts_with(error)),
            "{mt} {change}: {errors:?}"
        );
    }
}

/// A malformed or null `tie_word_embeddings` is a `config` error, never read as `false`: no
/// "lm_head.weight missing" error from an invented value, and the summary says unknown.
#[test]
fn malformed_tie_word_embeddings_is_not_defaulted() {
    for (value, shown) in [
        (serde_json::json!("yes"), "\"yes\""),
        (serde_json::Value::Null, "null"),
    ] {
        let mut f = Fixture::qwen3();
        f.config["tie_word_embeddings"] = value;
        let r = run(&f);
        let messages: Vec<(Severity, FindingKind, &str)> = r
            .findings
            .iter()
            .filter(|f| f.kind != FindingKind::HighNormGain)
            .map(|f| (f.severity, f.kind, f.message.as_str()))
            .collect();
        let error = format!("config.json: tie_word_embeddings is {shown}, expected true or false");
        assert_eq!(
            messages,
            vec![
                (Severity::Error, FindingKind::Config, error.as_str()),
                (
                    Severity::Info,
                    FindingKind::TiedEmbeddings,
                    "not checked: config.json's tie_word_embeddings is not usable (see the config error)"
                ),
            ]
        );
        assert_eq!(r.config.as_ref().unwrap().tie_word_embeddings, None);
        let mut table = Vec::new();
        render_table(&r, &TableOptions::default(), &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("tie_word_embeddings unknown"), "{table}");
    }
}

#[test]
fn bare_prefix_checkpoint() {
    let f = Fixture::qwen3();
    let mut bare = Fixture {
        config: f.config.clone(),
        tensors: Default::default(),
    };
    for (n, t) in &f.tensors {
        bare.tensors
            .insert(n.trim_start_matches("model.").to_string(), t.clone());
    }
    let r = run(&bare);
    assert_eq!(r.findings, vec![]);
    assert_eq!(r.layers.len(), 2);
}

/// One tensor under the other prefix than the rest: missing under the config's name, and the
/// stray one says why it is unused (it read "qwen3 has no q_norm / k_norm (only qwen3 does)").
#[test]
fn one_tensor_under_another_prefix_says_so() {
    let mut f = Fixture::qwen3();
    let name = "model.layers.0.self_attn.k_norm.weight";
    let t = f.tensors.remove(name).unwrap();
    f.tensors
        .insert("layers.0.self_attn.k_norm.weight".into(), t);
    let r = run(&f);
    let stray = only(
        &r,
        FindingKind::UnusedTensor,
        "layers.0.self_attn.k_norm.weight",
    );
    assert!(
        stray.message.contains(&format!(
            "the config's name for it is {name}: its prefix differs"
        )),
        "{}",
        stray.message
    );
    assert_eq!(
        only(&r, FindingKind::MissingTensor, name).severity,
        Severity::Error
    );
}

#[test]
fn integer_and_f64_tensors_have_stats() {
    let mut f = Fixture::qwen3();
    f.set_raw(
        "model.extra_ids",
        Dtype::I64,
        &[3],
        [-1i64, 5, 11]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    );
    f.set_raw(
        "model.extra_f64",
        Dtype::F64,
        &[2],
        [0.5f64, 1.5].iter().flat_map(|x| x.to_le_bytes()).collect(),
    );
    f.set_raw(
        "model.extra_f16",
        Dtype::F16,
        &[2],
        [half::f16::from_f32(-2.0), half::f16::NAN]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    );
    let r = run(&f);
    let st = |n: &str| {
        r.tensors
            .iter()
            .find(|t| t.name == n)
            .unwrap()
            .stats
            .clone()
            .unwrap()
    };
    assert_eq!(
        (
            st("model.extra_ids").min,
            st("model.extra_ids").max,
            st("model.extra_ids").mean
        ),
        (Some(-1.0), Some(11.0), Some(5.0))
    );
    assert_eq!(st("model.extra_f64").std, Some(0.5));
    assert_eq!(
        (st("model.extra_f16").nan, st("model.extra_f16").min),
        (1, Some(-2.0))
    );
    only(&r, FindingKind::NonFinite, "model.extra_f16");
    only(&r, FindingKind::UnusedTensor, "model.extra_ids");
}

// ---- unreadable input ------------------------------------------------------------------

#[test]
fn missing_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope");
    let err = inspect(&p, &InspectOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: no such file or directory", p.display())
    );
}

#[test]
fn missing_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::qwen3().write(dir.path());
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not found (a model directory needs config.json)",
            dir.path().join("config.json").display()
        )
    );
    // norm_gains does not need config.json.
    let gains = norm_gains(dir.path()).unwrap();
    assert_eq!(gains.len(), 2);
}

#[test]
fn unparsable_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::qwen3().write(dir.path());
    std::fs::write(
        dir.path().join("config.json"),
        b"{\"model_type\": \"qwen3\",",
    )
    .unwrap();
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: invalid json: ",
            dir.path().join("config.json").display()
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn corrupt_safetensors_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::qwen3().write(dir.path());
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    // Truncated: header intact, data cut short.
    std::fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: corrupt safetensors file: the data section does not end where the header's offsets do (a truncated file, or bytes after the last tensor)", st.display())
    );
    // Garbage header length.
    std::fs::write(&st, [0xFFu8; 16]).unwrap();
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "{}: corrupt safetensors file: header",
            st.display()
        )),
        "{err}"
    );
    // Empty.
    std::fs::write(&st, []).unwrap();
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: corrupt safetensors file: empty file", st.display())
    );
}

#[test]
fn no_safetensors_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::qwen3().write_config(dir.path());
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no *.safetensors files in the model directory",
            dir.path().display()
        )
    );
}

#[test]
fn single_file_path_is_accepted_and_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::qwen3().write(dir.path());
    let r = inspect(
        &dir.path().join("model.safetensors"),
        &InspectOptions::default(),
    )
    .unwrap();
    assert_eq!(r.findings, vec![]);
    let err = inspect(&dir.path().join("config.json"), &InspectOptions::default()).unwrap_err();
    assert!(err.to_string().ends_with("config.json: not a model directory (expected a directory with config.json and *.safetensors)"), "{err}");
}

// ---- norm_gains (the diff command's entry point) ---------------------------------------

#[test]
fn norm_gains_reports_max_abs_per_layer() {
    let mut f = Fixture::qwen3();
    f.poke("model.layers.0.self_attn.k_norm.weight", 0, 96.5);
    f.poke("model.layers.1.self_attn.q_norm.weight", 3, -20.25);
    let dir = tempfile::tempdir().unwrap();
    f.write_sharded(dir.path());
    let g = norm_gains(dir.path()).unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].k_gain(), Some(96.5));
    assert_eq!(g[1].q_gain(), Some(20.25), "gain is max |w|, sign ignored");
    assert_eq!(g[1].layer, 1);
}

// ---- rendering ---------------------------------------------------------------------------

fn flagged_report() -> Report {
    let mut f = Fixture::qwen3();
    f.set_bf16(BIAS, &[128], &[1e30; 128]);
    f.poke("model.layers.0.self_attn.k_norm.weight", 5, 96.5);
    f.transpose("model.layers.1.mlp.down_proj.weight");
    let mut r = run(&f);
    r.path = "[fixture]".to_string();
    r
}

#[test]
fn table_snapshot() {
    let r = flagged_report();
    let mut out = Vec::new();
    render_table(&r, &TableOptions::default(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains('\x1b'), "no colour without a terminal");
    insta::assert_snapshot!("flagged_table", text);
}

#[test]
fn markdown_snapshot_is_pipe_tables_with_escaped_cells() {
    let r = flagged_report();
    let mut out = Vec::new();
    render_markdown(&r, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("### divergence inspect: FLAGGED\n\n"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour in Markdown");
    assert!(!text.contains('│'), "no box drawing in Markdown");
    // Every table row has the same number of unescaped cell separators as its header.
    for block in text.split("\n\n").filter(|b| b.starts_with('|')) {
        let cells = |line: &str| line.replace("\\|", "").matches('|').count();
        let mut lines = block.lines();
        let head = cells(lines.next().unwrap());
        for line in lines {
            assert_eq!(cells(line), head, "{line}");
        }
    }
    // The k_norm gain marker and the tensor names survive escaping.
    assert!(text.contains("96.5 (") && text.contains(" \\*"), "{text}");
    // An underscore inside a word is never emphasis: left as it is.
    assert!(text.contains("self_attn.k_norm"), "{text}");
    assert!(text.contains("**FLAGGED**"), "{text}");
    insta::assert_snapshot!("flagged_markdown", text);
}

#[test]
fn table_all_lists_every_tensor_and_color_adds_ansi() {
    let r = flagged_report();
    let mut out = Vec::new();
    render_table(
        &r,
        &TableOptions {
            all: true,
            color: true,
            width: None,
        },
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    for t in &r.tensors {
        assert!(text.contains(&t.name), "{} missing", t.name);
    }
    assert!(text.contains('\x1b'));
}

#[test]
fn json_snapshot_and_fields() {
    let r = flagged_report();
    let mut out = Vec::new();
    render_json(&r, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    // Round trip.
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    // Field by field.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["path"], "[fixture]");
    assert_eq!(v["summary"]["errors"], 2);
    assert_eq!(v["summary"]["warnings"], 1);
    assert_eq!(v["summary"]["infos"], 1);
    assert_eq!(v["summary"]["flagged_tensors"], 2);
    assert_eq!(v["thresholds"]["max_abs"], 1e6);
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 4);
    assert_eq!(findings[0]["severity"], "error");
    assert_eq!(findings[0]["kind"], "extreme_value");
    assert_eq!(findings[0]["tensor"], BIAS);
    assert_eq!(findings[1]["kind"], "transposed");
    assert_eq!(findings[1]["tensor"], "model.layers.1.mlp.down_proj.weight");
    assert_eq!(findings[2]["severity"], "warning");
    assert_eq!(findings[2]["kind"], "unused_tensor");
    assert_eq!(findings[3]["severity"], "info");
    assert_eq!(findings[3]["kind"], "high_norm_gain");
    assert_eq!(v["layers"][0]["k_norm"]["max_abs"], 96.5);
    assert_eq!(v["layers"][1]["layer"], 1);
    assert_eq!(v["config"]["model_type"], "qwen3");
    assert_eq!(v["config"]["head_dim"], 32);
    let bias = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == BIAS)
        .unwrap();
    assert_eq!(bias["dtype"], "BF16");
    assert_eq!(bias["shape"], serde_json::json!([128]));
    assert_eq!(bias["flagged"], true);
    assert_eq!(bias["stats"]["nan"], 0);
    insta::assert_snapshot!("flagged_json", text);
}

// ---- the committed fixture ----------------------------------------------------------------

#[test]
fn committed_tiny_qwen3_fixture_is_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen3");
    if !dir.join("config.json").is_file() || !dir.join("model.safetensors").is_file() {
        eprintln!("skipping: {} not there yet", dir.display());
        return;
    }
    let r = inspect(&dir, &InspectOptions::default()).unwrap();
    assert!(!r.flagged(), "committed fixture flagged: {:#?}", r.findings);
    assert!(
        r.tensors.iter().all(|t| t.dtype == "BF16"),
        "fixture is BF16"
    );
    let n_layers = r
        .config
        .as_ref()
        .and_then(|c| c.num_hidden_layers)
        .expect("config has num_hidden_layers");
    assert_eq!(r.layers.len(), n_layers, "one norm-gain row per layer");
    assert!(r
        .layers
        .iter()
        .all(|l| l.k_gain().is_some() && l.q_gain().is_some()));
}

/// Renders `r` as table, Markdown and JSON; returns the three texts.
fn render_all(r: &Report) -> [String; 3] {
    let (mut table, mut md, mut json) = (Vec::new(), Vec::new(), Vec::new());
    render_table(r, &TableOptions::default(), &mut table).unwrap();
    render_markdown(r, false, &mut md).unwrap();
    render_json(r, &mut json).unwrap();
    [table, md, json].map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn huge_layer_counts_are_config_errors_not_sizes() {
    for (value, shown) in [
        (
            serde_json::json!(1e12),
            "1000000000000.0, expected a positive integer",
        ),
        (
            serde_json::json!(1_000_000_000_000u64),
            "1000000000000, above the sanity cap of 10000",
        ),
        (
            serde_json::json!(1_000_000),
            "1000000, above the sanity cap of 10000",
        ),
    ] {
        let mut f = Fixture::qwen3();
        f.config["num_hidden_layers"] = value;
        let r = run(&f);
        let config: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Config)
            .collect();
        assert_eq!(config.len(), 2, "{config:#?}");
        assert_eq!(config[0].severity, Severity::Error);
        assert_eq!(
            config[0].message,
            format!("config.json: num_hidden_layers is {shown}")
                + if shown.contains("cap") {
                    " (real models are far below it)"
                } else {
                    ""
                }
        );
        assert_eq!(config[1].severity, Severity::Info);
        assert_eq!(
            config[1].message,
            "shape checks skipped: config.json's num_hidden_layers not usable (see the config error)"
        );
        // no structural finding at all: nothing was sized by the bad value
        assert_eq!(r.findings.len(), 2, "{:#?}", r.findings);
        assert!(r.flagged());
        for text in render_all(&r) {
            assert!(text.len() < 20_000, "{} bytes", text.len());
        }
    }
}

#[test]
fn findings_are_capped_per_kind() {
    // 3000 layers (under the cap) against a 2-layer checkpoint: 2998 * 11 missing tensors
    let mut f = Fixture::qwen3();
    f.config["num_hidden_layers"] = serde_json::json!(3000);
    let r = run(&f);
    let missing = 2998 * 11;
    assert_eq!(r.finding_count(FindingKind::MissingTensor), missing);
    let listed = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::MissingTensor)
        .count();
    assert_eq!(listed, divergence_inspect::MAX_FINDINGS_PER_KIND);
    assert_eq!(
        r.findings_left_out,
        vec![divergence_inspect::LeftOut {
            kind: FindingKind::MissingTensor,
            count: missing - 1000
        }]
    );
    // the summary counts every finding, listed or not
    assert_eq!(r.summary.errors, missing);
    // the first ones in natural order are kept
    assert_eq!(
        r.findings[0].tensor.as_deref(),
        Some("model.layers.2.input_layernorm.weight")
    );
    let [table, md, json] = render_all(&r);
    for text in [&table, &md] {
        assert_eq!(text.matches("missing: a qwen3").count(), 20, "{text}");
        // (Markdown escapes the `_` of `missing_tensor`)
        let more = format!("… and {} more missing", missing - 20);
        assert_eq!(text.matches(&more).count(), 1, "{text}");
        assert!(
            text.contains("tensor findings (the JSON output lists up to 1000 per kind)"),
            "{text}"
        );
        assert!(text.len() < 20_000, "{} bytes", text.len());
    }
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 1000);
    assert_eq!(v["findings_left_out"][0]["kind"], "missing_tensor");
    assert_eq!(v["findings_left_out"][0]["count"], missing - 1000);
}

#[test]
fn names_and_config_strings_cannot_drive_the_terminal_or_the_markdown() {
    // Found by a bad-input hunt: a checkpoint's tensor names and config strings reached the
    // terminal raw (a window title, a cleared screen) and split Markdown rows, or became a
    // heading and an image there. A checkpoint is untrusted input.
    let mut f = Fixture::qwen3();
    let hostile = "evil\u{1b}]0;PWNED\u{7}\n| fake | row ![px](https://evil.example/t.png)";
    f.set_f32(hostile, &[2], &[1.0, 2.0]);
    f.config["model_type"] = serde_json::json!("qwen3\u{1b}[2J\n# Injected");
    let r = run(&f);
    let mut table = Vec::new();
    render_table(
        &r,
        &TableOptions {
            all: true,
            color: false,
            width: None,
        },
        &mut table,
    )
    .unwrap();
    let mut md = Vec::new();
    render_markdown(&r, true, &mut md).unwrap();
    for (out, markdown) in [(table, false), (md, true)] {
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("# Injected")), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("| fake")), "{text}");
        if markdown {
            // no image, no bare-URL link
            assert!(!text.contains("![px]("), "{text}");
            assert!(!text.contains("https://"), "{text}");
            assert!(text.contains("evil\\\\u{1b}]0;PWNED"), "{text}");
        } else {
            assert!(text.contains("evil\\u{1b}]0;PWNED"), "{text}");
        }
    }
}

/// The tensor table stops at `MAX_TENSOR_ROWS` rows and says how many it left out (600,000
/// flagged tensors made a 51 MB table; found by a bad-input hunt); JSON lists every one.
#[test]
fn the_tensor_table_is_bounded() {
    let mut r = flagged_report();
    let one = r.tensors[0].clone();
    let n = divergence_inspect::render::MAX_TENSOR_ROWS + 7;
    r.tensors = (0..n)
        .map(|i| divergence_inspect::TensorReport {
            name: format!("t.{i}"),
            flagged: true,
            ..one.clone()
        })
        .collect();
    r.summary.tensors = n;
    r.summary.flagged_tensors = n;
    for markdown in [false, true] {
        let mut out = Vec::new();
        if markdown {
            render_markdown(&r, true, &mut out).unwrap();
        } else {
            render_table(&r, &TableOptions::default(), &mut out).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("and 7 more"), "markdown {markdown}");
        assert!(text.contains(&format!("t.{}", n - 8)));
        assert!(!text.contains(&format!("t.{}", n - 7)));
    }
}

/// The header says what biases the model has where its family decides (a held-out check: a
/// qwen2 header read "attention_bias false" above an error for its missing k_proj bias).
#[test]
fn the_header_says_the_biases_a_family_decides() {
    for (model_type, said) in [
        (
            "qwen2",
            "q/k/v biases (qwen2's, whatever attention_bias says)",
        ),
        (
            "mistral",
            "no attention biases (mistral's, whatever attention_bias says)",
        ),
        ("qwen3", "attention_bias false"),
    ] {
        let mut f = Fixture::qwen3();
        f.config["model_type"] = model_type.into();
        let r = run(&f);
        let mut out = Vec::new();
        render_table(&r, &TableOptions::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let header = text.lines().find(|l| l.starts_with("config:")).unwrap();
        assert!(header.contains(said), "{model_type}: {header}");
    }
}
