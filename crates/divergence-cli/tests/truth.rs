//! End to end: `divergence diff OURS REF --truth TRUTH` on the committed transformers fixtures
//! (the tiny Qwen3's float64 eager run is the truth of every fixture) and on bad truth dumps.

mod common;

use std::path::Path;

use common::{divergence, root};
use divergence_dump::{DumpWriter, Meta, TensorData};
use serde_json::Value;

const TRUTH: &str = "fixtures/ref/tiny-qwen3.f64.eager.npz";
const BF16_EAGER: &str = "fixtures/ref/tiny-qwen3.bf16.eager.npz";
const BF16_SDPA: &str = "fixtures/ref/tiny-qwen3.bf16.sdpa.npz";
const F32_EAGER: &str = "fixtures/ref/tiny-qwen3.f32.eager.npz";

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

fn diff_truth(ours: &str, reference: &str, truth: &str, extra: &[&str]) -> (i32, String, String) {
    let args = [
        &[
            "diff", ours, reference, "--truth", truth, "--format", "json",
        ][..],
        extra,
    ]
    .concat();
    divergence(&args)
}

#[test]
fn transformers_sdpa_is_as_accurate_as_eager() {
    let (code, out, err) = diff_truth(BF16_SDPA, BF16_EAGER, TRUTH, &[]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["schema"], "divergence-report/2");
    assert_eq!(r["tolerance"]["mode"], "truth");
    assert_eq!(r["tolerance"]["ratio"], 3.0);
    assert_eq!(r["warnings"].as_array().unwrap().len(), 0, "{out}");
    for op in r["ops"].as_array().unwrap() {
        let ratio = op["noise_ratio"].as_f64().unwrap_or_else(|| panic!("{op}"));
        assert!(ratio < 1.5, "{}: {ratio}", op["name"]);
        assert!(op["ours_truth_rel_err"].is_number() && op["ref_truth_rel_err"].is_number());
        assert!(op["truth_problem"].is_null());
    }
    // the pair differs from attn_out on, though no op diverges
    assert_eq!(
        r["first_difference"]["name"],
        "model.layers.0.self_attn.attn_out"
    );
}

#[test]
fn a_more_accurate_port_never_diverges_and_a_less_accurate_one_does() {
    // an f32 run against the bf16 reference: more accurate, clean
    let (code, out, _) = diff_truth(F32_EAGER, BF16_EAGER, TRUTH, &[]);
    assert_eq!(code, 0, "{out}");
    // a bf16 run against the f32 reference: materially less accurate from the first norm on
    let (code, out, _) = diff_truth(BF16_EAGER, F32_EAGER, TRUTH, &[]);
    assert_eq!(code, 1);
    let r = json(&out);
    let reason = r["first_divergence"]["reason"].as_str().unwrap();
    assert!(reason.contains("less accurate than ref"), "{reason}");
}

#[test]
fn the_demo_bug_is_caught_at_embed_tokens_with_a_truth() {
    let (code, out, _) = diff_truth(
        "fixtures/demo/ours.npz",
        "fixtures/demo/ref.npz",
        TRUTH,
        &[],
    );
    assert_eq!(code, 1);
    let r = json(&out);
    assert_eq!(r["first_divergence"]["name"], "model.embed_tokens");
    assert!(r["ops"][0]["noise_ratio"].as_f64().unwrap() > 1e3);
}

#[test]
fn truth_table_and_header() {
    let run = divergence(&[
        "diff",
        "fixtures/demo/ours.npz",
        "fixtures/demo/ref.npz",
        "--truth",
        TRUTH,
        "--format",
        "table",
        "--context",
        "2",
    ]);
    assert_eq!(run.0, 1);
    insta::assert_snapshot!("truth_demo_table", run.1);
}

#[test]
fn the_header_names_the_presets_and_suggests_a_truth_in_half_precision() {
    let (code, out, _) = divergence(&["diff", BF16_SDPA, BF16_EAGER, "--format", "table"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("judged:    bfloat16 preset rtol 4.000e-02, atol 1.000e-03 (81 ops)"),
        "{out}"
    );
    assert!(
        out.contains("differs:   first at model.layers.0.self_attn.attn_out (#10"),
        "{out}"
    );
    assert!(out.contains("--truth-out truth.npz"), "{out}");
    // f32: no note
    let (_, out, _) = divergence(&["diff", F32_EAGER, F32_EAGER, "--format", "table"]);
    assert!(!out.contains("--truth-out"), "{out}");
    assert!(out.contains("every compared op is bit-identical"), "{out}");
    // Markdown carries the same lines
    let (_, md, _) = divergence(&["diff", BF16_SDPA, BF16_EAGER, "--format", "markdown"]);
    assert!(md.contains("- **judged:** bfloat16 preset"), "{md}");
    assert!(md.contains("- **differs:** first at "), "{md}");
}

fn write_dump(path: &Path, input_ids: Option<Vec<i64>>, names: &[&str]) {
    let mut w = DumpWriter::create(path).unwrap();
    for name in names {
        w.add(name, &[2], TensorData::F32(&[1.0, 2.0])).unwrap();
    }
    w.finish(Meta {
        input_ids,
        ..Meta::default()
    })
    .unwrap();
}

fn fixture_ids() -> Vec<i64> {
    std::fs::read_to_string(root().join("fixtures/tiny-qwen3/ids.txt"))
        .unwrap()
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect()
}

#[test]
fn a_truth_of_another_run_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let other_ids = dir.path().join("other_ids.npz");
    write_dump(&other_ids, Some(vec![1, 2, 3]), &["model.embed_tokens"]);
    let (code, out, err) = diff_truth(BF16_SDPA, BF16_EAGER, other_ids.to_str().unwrap(), &[]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("other_ids.npz: the truth dump saw other input_ids"),
        "{err}"
    );

    let no_names = dir.path().join("no_names.npz");
    write_dump(&no_names, Some(fixture_ids()), &["something.else"]);
    let (code, _, err) = diff_truth(BF16_SDPA, BF16_EAGER, no_names.to_str().unwrap(), &[]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no probe name in common"), "{err}");

    let missing = dir.path().join("missing.npz");
    let (code, _, err) = diff_truth(BF16_SDPA, BF16_EAGER, missing.to_str().unwrap(), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.npz"), "{err}");
}

#[test]
fn a_truth_missing_probes_is_reported_never_a_silent_pass() {
    let dir = tempfile::tempdir().unwrap();
    // One probe of the right name but the wrong shape, nothing else.
    let partial = dir.path().join("partial.npz");
    write_dump(&partial, Some(fixture_ids()), &["model.embed_tokens"]);
    let (code, out, _) = diff_truth(BF16_SDPA, BF16_EAGER, partial.to_str().unwrap(), &[]);
    assert_eq!(code, 0);
    let r = json(&out);
    let w = r["warnings"][0].as_str().unwrap();
    assert!(
        w.starts_with("TRUTH NOT USED for 81 of 81 compared ops"),
        "{w}"
    );
    assert!(
        w.contains("truth shape [2] differs from ref [1, 16, 64]"),
        "{w}"
    );
    assert_eq!(r["judged_with"][0]["ops"], 81);
    // The verdict line says the presets judged them, not the truth (a newcomer's run: it
    // claimed the truth for every op under the warning), in the table and the HTML page.
    for (format, line) in [
        ("table", "NO DIVERGENCE: all 81 compared ops are within tolerance: 0 as accurate as the reference against the truth (noise ratio limit 3.0), 81 judged by the fixed presets (the truth could not judge them)"),
        ("html", "<b>No divergence</b>: every compared op is within tolerance: 0 as accurate as the reference against the truth (noise ratio limit 3.0), 81 judged by the fixed presets (the truth could not judge them).</section>"),
        ("markdown", "## ✅ No divergence (81 ops compared: within tolerance: 0 as accurate as the reference against the truth (noise ratio limit 3.0), 81 judged by the fixed presets (the truth could not judge them))"),
    ] {
        let (code, out, err) = divergence(&[
            "diff", BF16_SDPA, BF16_EAGER, "--truth", partial.to_str().unwrap(), "--format", format,
            "--color", "never",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(line), "{out}");
    }
    // a truth without input_ids cannot be checked: a warning
    let no_ids = dir.path().join("no_ids.npz");
    write_dump(&no_ids, None, &["model.embed_tokens"]);
    let (_, out, _) = diff_truth(BF16_SDPA, BF16_EAGER, no_ids.to_str().unwrap(), &[]);
    let r = json(&out);
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("input_ids cannot be checked"),
        "{out}"
    );
}

/// A copy of the truth fixture whose `producer.truth_of` (what the exporter's `--truth-out`
/// records) is `of`.
fn truth_of(path: &Path, of: &str) {
    let d = divergence_dump::Dump::open(&root().join(TRUTH)).unwrap();
    let mut w = DumpWriter::create(path).unwrap();
    for name in d.names() {
        let t = d.read(name).unwrap();
        let divergence_dump::Values::F64(v) = t.values else {
            panic!("f64 truth")
        };
        w.add(name, &t.shape, TensorData::F64(&v)).unwrap();
    }
    let mut meta = d.meta().cloned().unwrap();
    let mut producer = meta.producer.take().unwrap();
    producer["truth_of"] = of.into();
    meta.producer = Some(producer);
    w.finish(meta).unwrap();
}

/// A float64 truth whose values are those of the dump `values` (one of the two runs), with the
/// real truth's metadata.
fn truth_holding(path: &Path, values: &str) {
    truth_holding_only(path, values, &|_| true);
}

/// [`truth_holding`] of the probes `keep` keeps.
fn truth_holding_only(path: &Path, values: &str, keep: &dyn Fn(&str) -> bool) {
    let d = divergence_dump::Dump::open(&root().join(values)).unwrap();
    let meta = divergence_dump::Dump::open(&root().join(TRUTH))
        .unwrap()
        .meta()
        .cloned()
        .unwrap();
    let mut w = DumpWriter::create(path).unwrap();
    for name in d.names().iter().filter(|n| keep(n)) {
        let t = d.read(name).unwrap();
        let v: Vec<f64> = match t.values {
            divergence_dump::Values::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            divergence_dump::Values::F64(v) => v,
        };
        w.add(name, &t.shape, TensorData::F64(&v)).unwrap();
    }
    w.finish(meta).unwrap();
}

/// A truth that holds the reference's values (or ours') is no truth: it flagged a clean port
/// at 66 ops, or passed a planted bug (a bad-input hunt). An error naming it.
#[test]
fn a_truth_of_one_sides_values_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (values, side) in [(BF16_EAGER, "the reference's"), (BF16_SDPA, "ours'")] {
        let truth = dir.path().join("t.npz");
        truth_holding(&truth, values);
        let t = truth.to_str().unwrap();
        let (code, out, err) = diff_truth(BF16_SDPA, BF16_EAGER, t, &[]);
        assert_eq!((code, out.as_str()), (2, ""), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("its values are {side} at every one of the")),
            "{err}"
        );
    }
    // the real truth, on the same pair: judged
    let (code, _, err) = diff_truth(BF16_SDPA, BF16_EAGER, TRUTH, &[]);
    assert_eq!(code, 0, "{err}");
    // Ops that can be exact do not count (a review: a selective f32 dump of the embeddings and
    // the RoPE table, which a float64 run gives exactly, was refused), nor does a side stored in
    // float64, which may equal the truth (the float64 fixture given as ours).
    let truth = dir.path().join("exact.npz");
    truth_holding_only(&truth, F32_EAGER, &|n| {
        n.starts_with("model.embed_tokens") || n.starts_with("model.rotary_emb")
    });
    let (code, _, err) = diff_truth(F32_EAGER, F32_EAGER, truth.to_str().unwrap(), &[]);
    assert_eq!(code, 0, "{err}");
    let copy = dir.path().join("f64.npz");
    std::fs::copy(root().join(TRUTH), &copy).unwrap();
    let (code, _, err) = diff_truth(copy.to_str().unwrap(), BF16_EAGER, TRUTH, &[]);
    assert_ne!(code, 2, "{err}");
}

/// `--truth` naming OURS' or REF's own file is refused before anything is read (a newcomer's
/// check: the truth's file given as ours passed, exit 0; the reference's file as its own truth
/// judged nothing and exited 0 on the presets).
#[test]
fn a_truth_that_is_one_sides_file_is_refused() {
    for (ours, reference, side) in [(TRUTH, BF16_EAGER, "OURS"), (BF16_SDPA, BF16_EAGER, "REF")] {
        let truth = if side == "OURS" { ours } else { reference };
        let (code, out, err) = diff_truth(ours, reference, truth, &[]);
        assert_eq!((code, out.as_str()), (2, ""), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("--truth {truth}: it is the file given as {side}")),
            "{err}"
        );
    }
}

/// Ours and the reference swapped under `--truth` passed, exit 0, whatever ours held: the
/// three-way rule never flags ours for being more accurate than the reference (a newcomer's
/// run of docs/tolerances.md: a GELU-for-SiLU port given as the reference). The truth's
/// `producer.truth_of` names the reference: given as ours, it is an error.
#[test]
fn a_truth_of_the_file_given_as_ours_is_refused_as_swapped_sides() {
    let dir = tempfile::tempdir().unwrap();
    let reference = root().join(BF16_EAGER);
    let truth = dir.path().join("truth.npz");
    truth_of(&truth, reference.to_str().unwrap());
    let t = truth.to_str().unwrap();
    let (code, _, err) = diff_truth(BF16_SDPA, BF16_EAGER, t, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = diff_truth(BF16_EAGER, BF16_SDPA, t, &[]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: {t}: a truth run of {BF16_EAGER} (its producer.truth_of), which is given as ours: ours and the reference are swapped (divergence diff OURS REF --truth TRUTH: the reference, whose truth run this is, goes second)"
        )
    );
    // The same file on both sides is not a swap.
    let (code, _, err) = diff_truth(BF16_EAGER, BF16_EAGER, t, &[]);
    assert_eq!(code, 0, "{err}");
    // The reference given under another name (a symlink) is still the same file.
    let link = dir.path().join("ref-link.npz");
    std::os::unix::fs::symlink(&reference, &link).unwrap();
    let (code, _, err) = diff_truth(link.to_str().unwrap(), BF16_SDPA, t, &[]);
    assert_eq!(code, 2, "{err}");
    // A relative `truth_of` (an older exporter's, relative to where it ran) is not read: a
    // port that shares the reference's file name is not taken for it (a review).
    let relative = dir.path().join("truth-relative.npz");
    truth_of(&relative, BF16_EAGER);
    // (both runs clean: swapped, they pass, as every swap did before)
    let (code, _, err) = diff_truth(BF16_EAGER, BF16_SDPA, relative.to_str().unwrap(), &[]);
    assert_eq!(code, 0, "{err}");
}

/// Writes one tensor of a truth: the writer, its name, shape and float64 values.
type WriteTensor<'a> =
    dyn Fn(&mut DumpWriter, &str, &[usize], &[f64]) -> Result<(), divergence_dump::DumpError> + 'a;

/// The committed float64 truth written again to `path`: each tensor by `tensor` (the writer,
/// its name, shape and values), its metadata as `meta` leaves it.
fn rewrite_truth(path: &Path, tensor: &WriteTensor<'_>, meta: &dyn Fn(&mut Meta)) {
    let d = divergence_dump::Dump::open(&root().join(TRUTH)).unwrap();
    let mut w = DumpWriter::create(path).unwrap();
    for name in d.names() {
        let t = d.read(name).unwrap();
        let divergence_dump::Values::F64(v) = t.values else {
            panic!("f64 truth")
        };
        tensor(&mut w, name, &t.shape, &v).unwrap();
    }
    let mut m = d.meta().cloned().unwrap();
    meta(&mut m);
    w.finish(m).unwrap();
}

/// A truth whose recorded model config has other sizes, or whose recorded model source is
/// another, is an error (exit 2), as other input_ids are (a bad-input hunt: truths of
/// checkpoints 2-10% off let a planted bug pass by the noise ratio).
#[test]
fn a_truth_of_another_model_is_refused_or_said() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |tag: &str, edit: &dyn Fn(&mut Meta)| {
        let path = dir.path().join(format!("truth-{tag}.npz"));
        rewrite_truth(
            &path,
            &|w, name, shape, v| w.add(name, shape, TensorData::F64(v)),
            edit,
        );
        path
    };
    // A refused truth: exit 2, one line; its error.
    let refused = |path: &std::path::Path| {
        let (code, _, err) = diff_truth(F32_EAGER, F32_EAGER, path.to_str().unwrap(), &[]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let sized = copy("sized", &|m| {
        m.model.as_mut().unwrap()["hidden_size"] = serde_json::json!(128);
    });
    let err = refused(&sized);
    assert!(
        err.contains("truth-sized.npz: the truth dump's model has hidden_size 128 where")
            && err.contains("has 64: it is not a truth run of this reference"),
        "{err}"
    );
    let other = copy("other", &|m| {
        m.producer.as_mut().unwrap()["model_source"] = serde_json::json!("tiny-qwen3-ft");
    });
    let err = refused(&other);
    assert!(
        err.contains("truth-other.npz: the truth was made from 'tiny-qwen3-ft' and")
            && err.contains("from 'tiny-qwen3' (producer.model_source): it is not a truth run"),
        "{err}"
    );
    // An empty source is none recorded (`--model .` writes one), not another source: taken,
    // with no reading of a noisy reference (a bad-input hunt found two empty ones "the same").
    let blank = copy("blank", &|m| {
        m.producer.as_mut().unwrap()["model_source"] = serde_json::json!(" ");
    });
    let (code, _, err) = diff_truth(F32_EAGER, F32_EAGER, blank.to_str().unwrap(), &[]);
    assert_eq!(code, 0, "{err}");
    // A number written another way, or a null, is no other model.
    let written = copy("written", &|m| {
        let model = m.model.as_mut().unwrap();
        model["hidden_size"] = serde_json::json!(64.0);
        model["head_dim"] = serde_json::Value::Null;
    });
    let (code, _, err) = diff_truth(F32_EAGER, F32_EAGER, written.to_str().unwrap(), &[]);
    assert_eq!(code, 0, "{err}");
    // The same source: nothing said.
    let same = copy("same", &|_| {});
    let (code, out, _) = diff_truth(F32_EAGER, F32_EAGER, same.to_str().unwrap(), &[]);
    assert_eq!(code, 0);
    assert!(!out.contains("producer.model_source"), "{out}");
}

#[test]
fn a_truth_whose_metadata_claims_more_than_its_bytes_hold_is_not_trusted() {
    // Found by a bad-input hunt: a truth row stored as int64 (or f32) whose metadata still said
    // float64 was taken for a float64 truth, and a real bug at that op passed.
    let dir = tempfile::tempdir().unwrap();
    let lied = "model.layers.0.mlp";
    for (tag, stored) in [("int64", "int64"), ("f32", "float32")] {
        let path = dir.path().join(format!("truth-{tag}.npz"));
        rewrite_truth(
            &path,
            &|w, name, shape, v| {
                if name == lied && tag == "int64" {
                    let ints: Vec<i64> = v.iter().map(|x| (x * 100.0).round() as i64).collect();
                    w.add(name, shape, TensorData::I64(&ints))
                } else if name == lied {
                    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    w.add(name, shape, TensorData::F32(&f))
                } else {
                    w.add(name, shape, TensorData::F64(v))
                }
            },
            // the claim the bytes no longer hold
            &|meta| assert_eq!(meta.dtypes[lied], "float64"),
        );
        let (code, out, err) = diff_truth(F32_EAGER, F32_EAGER, path.to_str().unwrap(), &[]);
        assert_eq!(code, 0, "{err}");
        let r = json(&out);
        let row = r["ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == lied)
            .unwrap();
        assert_eq!(
            row["truth_problem"],
            format!("truth is {stored}, not finer than ref's float32"),
            "{tag}"
        );
        // (beside the warning that both sides are one file)
        assert!(
            common::warnings(&r)
                .iter()
                .any(|w| w.starts_with("TRUTH NOT USED for 1 of")),
            "{out}"
        );
    }
}

#[test]
fn truth_flags_are_checked() {
    let (code, _, err) = divergence(&["diff", BF16_SDPA, BF16_EAGER, "--noise-ratio", "2"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = divergence(&["diff", BF16_SDPA, BF16_EAGER, "--truth", TRUTH, "--exact"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = divergence(&[
        "diff",
        BF16_SDPA,
        BF16_EAGER,
        "--truth",
        TRUTH,
        "--noise-ratio",
        "0",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--noise-ratio must be a finite number > 0"),
        "{err}"
    );
    // A stricter k: eager is ~1.1x less accurate than sdpa from attn_out on (sdpa's error
    // against the truth is the smaller one on this model).
    let (code, out, _) = diff_truth(BF16_EAGER, BF16_SDPA, TRUTH, &["--noise-ratio", "1.05"]);
    assert_eq!(code, 1);
    let r = json(&out);
    assert_eq!(r["tolerance"]["ratio"], 1.05);
    assert_eq!(
        r["first_divergence"]["name"],
        "model.layers.0.self_attn.attn_out"
    );
    let (code, _, _) = diff_truth(BF16_EAGER, BF16_SDPA, TRUTH, &[]);
    assert_eq!(code, 0);
}

#[test]
fn html_and_plot_show_both_errors_against_the_truth() {
    let (code, html, _) = divergence(&[
        "diff",
        "fixtures/demo/ours.npz",
        "fixtures/demo/ref.npz",
        "--truth",
        TRUTH,
        "--format",
        "html",
    ]);
    assert_eq!(code, 1);
    assert!(html.contains("ref vs truth (dots: ours)"), "legend");
    assert!(html.contains("rel L2 error vs truth"), "axis label");
    assert!(html.contains("<dt>vs truth</dt>"), "first divergence block");
    assert!(html.contains("\"noise_ratio\":"), "embedded JSON");
    for col in ["ours~truth", "ref~truth", "noise x"] {
        assert!(html.contains(&format!(">{col}</th>")), "{col}");
    }
    // without --truth none of it
    let (_, html, _) = divergence(&[
        "diff",
        "fixtures/demo/ours.npz",
        "fixtures/demo/ref.npz",
        "--format",
        "html",
    ]);
    assert!(!html.contains("ref vs truth") && !html.contains(">noise x</th>"));
}
