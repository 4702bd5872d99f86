//! The layout rule and the readers on checkpoints written by the test: which files are read,
//! which are ignored (and said so), header errors naming the file, anomalies.

use std::collections::BTreeMap;
use std::path::Path;

use divergence_checkpoint::{Anomaly, Checkpoint, Error, Layout, Source, Weights};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const CONFIG: &str = r#"{"model_type": "qwen3", "hidden_size": 4, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 2,
    "intermediate_size": 8, "vocab_size": 16}"#;

/// Writes a safetensors file of F32 tensors `names`, each `[2]` and filled with `value`.
fn write_st(path: &Path, names: &[&str], value: f32) {
    let data: Vec<u8> = [value, value]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                TensorView::new(Dtype::F32, vec![2], &data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn write_index(dir: &Path, map: &[(&str, &str)]) {
    let weight_map: BTreeMap<&str, &str> = map.iter().copied().collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn names(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A directory with model.safetensors, shards + index and a stray file: transformers'
/// order, model.safetensors first; the others are listed as ignored, with the reason.
#[test]
fn single_file_wins_over_index_and_the_rest_is_ignored_visibly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    write_st(&dir.path().join("model.safetensors"), &["a", "b"], 1.0);
    write_st(
        &dir.path().join("model-00001-of-00002.safetensors"),
        &["a"],
        2.0,
    );
    write_st(
        &dir.path().join("model-00002-of-00002.safetensors"),
        &["b"],
        2.0,
    );
    write_index(
        dir.path(),
        &[
            ("a", "model-00001-of-00002.safetensors"),
            ("b", "model-00002-of-00002.safetensors"),
        ],
    );
    let layout = Layout::locate(dir.path()).unwrap();
    assert_eq!(layout.source, Source::Single);
    assert_eq!(names(&layout.shards), vec!["model.safetensors"]);
    let ignored: Vec<String> = layout.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        ignored,
        vec![
            "model.safetensors.index.json is not read: model.safetensors is read instead (transformers reads model.safetensors first)",
            "model-00001-of-00002.safetensors is not read: only model.safetensors is read",
            "model-00002-of-00002.safetensors is not read: only model.safetensors is read",
        ]
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let a = ckpt.weights.get("a").unwrap();
    assert_eq!(ckpt.weights.data(a), &1f32.to_le_bytes().repeat(2)[..]);

    // Without model.safetensors: the index decides; a stray file it does not name is ignored.
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    write_st(
        &dir.path().join("consolidated.safetensors"),
        &["a", "b"],
        3.0,
    );
    let layout = Layout::locate(dir.path()).unwrap();
    assert_eq!(layout.source, Source::Index);
    assert_eq!(
        names(&layout.shards),
        vec![
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    assert_eq!(
        layout.ignored[0].to_string(),
        "consolidated.safetensors is not read: model.safetensors.index.json does not name it"
    );
    let w = Weights::open(&layout).unwrap();
    assert_eq!(w.anomalies(), &[]);
    assert_eq!(
        w.file_name(w.get("b").unwrap()),
        "model-00002-of-00002.safetensors"
    );
}

#[test]
fn without_single_file_or_index_every_safetensors_is_read_in_natural_order() {
    let dir = tempfile::tempdir().unwrap();
    for (i, file) in [
        "part-10.safetensors",
        "part-2.safetensors",
        "part-1.safetensors",
    ]
    .iter()
    .enumerate()
    {
        write_st(&dir.path().join(file), &[&format!("t{i}")], 1.0);
    }
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let layout = Layout::locate(dir.path()).unwrap();
    assert_eq!(layout.source, Source::AllFiles);
    assert_eq!(
        names(&layout.shards),
        vec![
            "part-1.safetensors",
            "part-2.safetensors",
            "part-10.safetensors"
        ]
    );
    assert!(layout.ignored.is_empty());

    // A single .safetensors path: that file alone, config.json next to it.
    let one = dir.path().join("part-2.safetensors");
    let layout = Layout::locate(&one).unwrap();
    assert_eq!(layout.source, Source::File);
    assert_eq!(layout.shards, vec![one]);
    assert_eq!(layout.config, dir.path().join("config.json"));
}

#[test]
fn unreadable_layouts_are_one_line_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let nope = dir.path().join("nope");
    assert_eq!(
        Layout::locate(&nope).unwrap_err().to_string(),
        format!("{}: no such file or directory", nope.display())
    );
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    assert_eq!(
        Layout::locate(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: no *.safetensors files in the model directory",
            dir.path().display()
        )
    );
    let cfg = dir.path().join("config.json");
    assert!(matches!(
        Layout::locate(&cfg).unwrap_err(),
        Error::NotAModel { .. }
    ));
    write_index(dir.path(), &[("a", "missing.safetensors")]);
    assert_eq!(
        Layout::locate(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: names shard missing.safetensors, which does not exist",
            dir.path().join("model.safetensors.index.json").display()
        )
    );
    write_index(dir.path(), &[("a", "../x.safetensors")]);
    let err = Layout::locate(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("is not a file name in this directory"),
        "{err}"
    );
}

/// An index past its size or its items is refused before it is parsed, one line naming it
/// (a 98 MB index of one list of zeros took 1.7 GB; a bad-input hunt, session 31).
#[test]
fn an_index_past_its_caps_is_refused_before_it_is_parsed() {
    use divergence_checkpoint::{MAX_INDEX_BYTES, MAX_INDEX_ITEMS};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    write_st(&dir.path().join("a.safetensors"), &["a"], 1.0);
    let index = dir.path().join("model.safetensors.index.json");
    let with_zeros = |n: usize| {
        format!(
            "{{\"metadata\":[0{}],\"weight_map\":{{\"a\":\"a.safetensors\"}}}}",
            ",0".repeat(n)
        )
    };
    // `{`, `[`, the zeros' commas, the comma after the list and `{`: n + 4 items.
    std::fs::write(&index, with_zeros(MAX_INDEX_ITEMS - 3)).unwrap();
    assert_eq!(
        Layout::locate(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: holds {} json items (list elements and object fields), more than the {MAX_INDEX_ITEMS} allowed",
            index.display(),
            MAX_INDEX_ITEMS + 1
        )
    );
    std::fs::write(&index, with_zeros(MAX_INDEX_ITEMS - 4)).unwrap();
    assert!(Layout::locate(dir.path()).is_ok());
    let mut big = with_zeros(0).into_bytes();
    big.resize(MAX_INDEX_BYTES as usize + 1, b' ');
    std::fs::write(&index, big).unwrap();
    assert_eq!(
        Layout::locate(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: larger than {MAX_INDEX_BYTES} bytes: not a shard index",
            index.display()
        )
    );
}

/// A file the rule would read that is not a regular file is an error naming it and what it
/// is; it is neither skipped for the next rule nor opened. One the rule does not read is
/// listed as ignored, like any other.
#[test]
fn files_to_read_that_are_not_regular_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    write_st(&dir.path().join("part-1.safetensors"), &["a"], 1.0);
    let stray = dir.path().join("part-2.safetensors");
    std::fs::create_dir(&stray).unwrap();
    // Without model.safetensors or an index every *.safetensors is read: part-2 too.
    let err = Layout::locate(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotRegularFile { .. }));
    assert_eq!(
        err.to_string(),
        format!("{}: is a directory, not a regular file", stray.display())
    );

    // With model.safetensors, part-2 is not read: listed, not an error.
    write_st(&dir.path().join("model.safetensors"), &["a"], 1.0);
    let layout = Layout::locate(dir.path()).unwrap();
    assert_eq!(names(&layout.shards), vec!["model.safetensors"]);
    let ignored: Vec<String> = layout.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        ignored,
        vec![
            "part-1.safetensors is not read: only model.safetensors is read",
            "part-2.safetensors is not read: only model.safetensors is read",
        ]
    );

    // An index that is a directory is not skipped either.
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::create_dir(&index).unwrap();
    assert_eq!(
        Layout::locate(dir.path()).unwrap_err().to_string(),
        format!("{}: is a directory, not a regular file", index.display())
    );
    std::fs::remove_dir(&index).unwrap();

    // An index naming a directory: the index, the shard and what it is.
    write_index(dir.path(), &[("a", "part-2.safetensors")]);
    assert_eq!(
        Layout::locate(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: names shard part-2.safetensors, which is a directory, not a regular file",
            index.display()
        )
    );

    // Weights::open checks too, before opening (a Layout can be built by hand).
    let layout = Layout {
        dir: dir.path().to_path_buf(),
        config: dir.path().join("config.json"),
        source: Source::AllFiles,
        shards: vec![stray.clone()],
        index: None,
        ignored: Vec::new(),
    };
    assert_eq!(
        Weights::open(&layout).unwrap_err().to_string(),
        format!("{}: is a directory, not a regular file", stray.display())
    );
}

/// A fifo named model.safetensors is an error from its metadata: opening it would block.
#[cfg(unix)]
#[test]
fn fifo_and_device_shards_are_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("model.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&st)
        .status()
        .is_ok_and(|s| s.success());
    let locate = |path: &Path| {
        // On another thread, so that a regression that opens the fifo fails instead of hanging.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(
                Layout::locate(&path)
                    .and_then(|l| Weights::open(&l))
                    .map(|_| ()),
            );
        });
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(result) => result.unwrap_err().to_string(),
            Err(_) => panic!("blocked for 10 s (was the fifo opened?)"),
        }
    };
    if made {
        assert_eq!(
            locate(dir.path()),
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
            locate(dir.path()),
            format!(
                "{}: is a character device, not a regular file",
                st.display()
            )
        );
        std::fs::remove_file(&st).unwrap();
    }
    // A shell's pipe, linked to through /proc/self/fd/N, is a pipe, not a named one.
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (reader, _writer) = std::io::pipe().unwrap();
        let fd = std::path::PathBuf::from(format!("/proc/self/fd/{}", reader.as_raw_fd()));
        if fd.exists() {
            std::os::unix::fs::symlink(&fd, &st).unwrap();
            assert_eq!(
                locate(dir.path()),
                format!("{}: is a pipe, not a regular file", st.display())
            );
        }
    }
}

#[test]
fn corrupt_headers_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("model.safetensors");
    write_st(&st, &["a", "b"], 1.0);
    let bytes = std::fs::read(&st).unwrap();
    let open = || Weights::open(&Layout::locate(dir.path()).unwrap());
    std::fs::write(&st, &bytes[..bytes.len() - 3]).unwrap();
    assert_eq!(
        open().unwrap_err().to_string(),
        format!("{}: corrupt safetensors file: the data section does not end where the header's offsets do (a truncated file, or bytes after the last tensor)", st.display())
    );
    std::fs::write(&st, [0xFFu8; 16]).unwrap();
    assert_eq!(
        open().unwrap_err().to_string(),
        format!(
            "{}: corrupt safetensors file: header length is larger than the 100000000 bytes the safetensors format allows",
            st.display()
        )
    );
    std::fs::write(&st, [1u8, 2, 3]).unwrap();
    assert_eq!(
        open().unwrap_err().to_string(),
        format!(
            "{}: corrupt safetensors file: file too small to hold a safetensors header",
            st.display()
        )
    );
    std::fs::write(&st, []).unwrap();
    assert_eq!(
        open().unwrap_err().to_string(),
        format!("{}: corrupt safetensors file: empty file", st.display())
    );
}

/// Each anomaly as (tensor, message).
fn anomalies(w: &Weights) -> Vec<(String, String)> {
    w.anomalies()
        .iter()
        .map(|a| (a.tensor().to_string(), a.to_string()))
        .collect()
}

#[test]
fn duplicates_and_index_disagreements_are_anomalies() {
    let dir = tempfile::tempdir().unwrap();
    write_st(&dir.path().join("s-1.safetensors"), &["a", "b", "x"], 1.0);
    write_st(&dir.path().join("s-2.safetensors"), &["b", "c"], 2.0);
    write_index(
        dir.path(),
        &[
            ("a", "s-1.safetensors"),
            ("b", "s-2.safetensors"),
            ("c", "s-2.safetensors"),
            ("gone", "s-1.safetensors"),
        ],
    );
    let w = Weights::open(&Layout::locate(dir.path()).unwrap()).unwrap();
    let found = anomalies(&w);
    assert_eq!(
        found,
        vec![
            ("b".into(), "stored twice, in s-1.safetensors and s-2.safetensors: which copy a loader gets depends on the loader".into()),
            ("b".into(), "model.safetensors.index.json says it is in s-2.safetensors, but it is in s-1.safetensors".into()),
            ("gone".into(), "model.safetensors.index.json says it is in s-1.safetensors, but no shard has it".into()),
            ("x".into(), "in s-1.safetensors but not listed in model.safetensors.index.json: loaders that follow the index will not load it".into()),
        ]
    );
    assert!(matches!(w.anomalies()[0], Anomaly::Duplicate { .. }));
    // The first copy is the one listed.
    assert_eq!(w.file_name(w.get("b").unwrap()), "s-1.safetensors");
    let order: Vec<&str> = w.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(order, vec!["a", "b", "c", "x"]);
}

#[test]
fn a_shard_the_index_leaves_out_is_named_where_its_tensors_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    write_st(&dir.path().join("s-1.safetensors"), &["a"], 1.0);
    write_st(&dir.path().join("s-2.safetensors"), &["b", "c"], 2.0);
    // The index places b in s-1 and names no tensor of s-2: s-2 is not read.
    write_index(
        dir.path(),
        &[
            ("a", "s-1.safetensors"),
            ("b", "s-1.safetensors"),
            ("gone", "s-1.safetensors"),
        ],
    );
    let layout = Layout::locate(dir.path()).unwrap();
    assert_eq!(layout.ignored.len(), 1);
    let w = Weights::open(&layout).unwrap();
    let found = anomalies(&w);
    assert_eq!(
        found,
        vec![
            ("b".into(), "model.safetensors.index.json says it is in s-1.safetensors, but no shard it names has it: s-2.safetensors has it and is not read (model.safetensors.index.json names no tensor in it)".into()),
            ("gone".into(), "model.safetensors.index.json says it is in s-1.safetensors, but no shard has it".into()),
        ]
    );
}

#[test]
fn check_names_the_tensor_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("model.safetensors");
    let ids: Vec<u8> = [1i64, 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    let data: Vec<u8> = [0f32; 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    safetensors::serialize_to_file(
        vec![
            ("w", TensorView::new(Dtype::F32, vec![2], &data).unwrap()),
            ("ids", TensorView::new(Dtype::I64, vec![2], &ids).unwrap()),
        ],
        None,
        &st,
    )
    .unwrap();
    let w = Weights::open(&Layout::locate(dir.path()).unwrap()).unwrap();
    assert!(w.check("w", &[2]).is_ok());
    assert_eq!(
        w.check("w", &[3]).unwrap_err().to_string(),
        format!(
            "{}: tensor w has shape [2], config.json implies [3]",
            st.display()
        )
    );
    assert_eq!(
        w.check("v", &[2]).unwrap_err().to_string(),
        format!(
            "{}: missing tensor v (expected shape [2])",
            dir.path().display()
        )
    );
    assert_eq!(
        w.check("ids", &[2]).unwrap_err().to_string(),
        format!("{}: tensor ids has unsupported dtype I64", st.display())
    );
}
