//! `divergence run` and `divergence inspect` read the same files of a checkpoint directory
//! (one rule, `divergence_checkpoint::Layout`): `model.safetensors` first, else the shards of
//! `model.safetensors.index.json`, else every `*.safetensors`; the files left out are said.
//!
//! The files that must not be read are corrupt, so a command that reads them fails.

mod common;

use std::path::Path;

use common::{divergence, root};

fn run(dir: &Path) -> (i32, String, String) {
    divergence(&["run", "--model", dir.to_str().unwrap(), "--ids", "1,2,3"])
}

fn inspect(dir: &Path) -> (i32, String, String) {
    divergence(&["inspect", dir.to_str().unwrap(), "--format", "json"])
}

#[test]
fn run_and_inspect_read_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = root().join("fixtures/tiny-qwen3");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
    }
    let shard = dir.path().join("model-00001-of-00001.safetensors");
    std::fs::write(&shard, b"not a safetensors file at all").unwrap();
    let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    // model.safetensors and an index: both read model.safetensors and say the index is not read.
    let (code, _, stderr) = run(dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "note: model.safetensors.index.json is not read: model.safetensors is read instead"
        ),
        "{stderr}"
    );
    let (code, stdout, stderr) = inspect(dir.path());
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["files"], serde_json::json!(["model.safetensors"]));
    let ignored: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "ignored_file")
        .collect();
    assert_eq!(ignored.len(), 2, "{ignored:?}"); // the index and the shard it names
    assert!(ignored.iter().all(|f| f["severity"] == "info"));

    // Only the index: both read its (corrupt) shard, with the same error.
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let want = format!("{}: corrupt safetensors file", shard.display());
    for (code, _, stderr) in [run(dir.path()), inspect(dir.path())] {
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(&want), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }

    // Neither: every *.safetensors, here the same corrupt file under another name.
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    let other = dir.path().join("weights.safetensors");
    std::fs::rename(&shard, &other).unwrap();
    let want = format!("{}: corrupt safetensors file", other.display());
    for (code, _, stderr) in [run(dir.path()), inspect(dir.path())] {
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(&want), "{stderr}");
    }
}

#[test]
fn an_untied_head_missing_from_the_checkpoint_is_said() {
    // tie_word_embeddings: false and no lm_head.weight: `run` reads the head from the
    // embeddings (transformers would initialize it randomly) and says so; `inspect` flags it.
    let dir = tempfile::tempdir().unwrap();
    let fixture = root().join("fixtures/tiny-qwen3");
    std::fs::copy(
        fixture.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(fixture.join("config.json")).unwrap();
    let untied = config.replace(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": false",
    );
    assert_ne!(config, untied);
    std::fs::write(dir.path().join("config.json"), untied).unwrap();
    let (code, _, stderr) = run(dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("note: config.json's tie_word_embeddings is false (or absent), but the checkpoint has no lm_head.weight"),
        "{stderr}"
    );
    // The fixture itself (tied) gets no such note.
    let (code, _, stderr) = run(&fixture);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("lm_head.weight"), "{stderr}");
}
