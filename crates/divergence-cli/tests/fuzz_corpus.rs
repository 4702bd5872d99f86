//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/*`) through the fuzz targets'
//! own bodies (`fuzz/harness.rs`), on stable Rust, without a fuzzer: every input the campaign
//! kept (and every crash it found, once fixed) stays checked in CI. docs/fuzzing.md.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

/// The files of one target's corpus, sorted; panics if there are none (a corpus that went
/// missing must not pass as an empty one).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    files
}

/// Runs `body` on every input of `target`'s corpus, naming the input that fails.
fn replay(target: &str, body: fn(&[u8])) {
    for path in corpus(target) {
        let data = std::fs::read(&path).expect("corpus file");
        let run = std::panic::catch_unwind(|| body(&data));
        assert!(
            run.is_ok(),
            "fuzz target {target} fails on {}",
            path.display()
        );
    }
}

#[test]
fn npz_corpus() {
    replay("npz", harness::npz);
}

#[test]
fn npy_corpus() {
    replay("npy", harness::npy);
}

#[test]
fn safetensors_corpus() {
    replay("safetensors", harness::safetensors);
}

#[test]
fn sniff_corpus() {
    replay("sniff", harness::sniff);
}

#[test]
fn meta_corpus() {
    replay("meta", harness::meta);
}

#[test]
fn config_corpus() {
    replay("config", harness::config);
}
