//! End to end: logits of the last positions only (what vLLM and llama.cpp keep in prefill)
//! against a reference's of every position are compared with the reference's last rows,
//! stored or deflated (streamed, the reference's other rows read through), with `--truth`,
//! and the report says so; logits of another layout stay a shape mismatch that says why.

mod common;

use std::path::Path;

use common::{deflated_copy, divergence};
use divergence_dump::{DumpWriter, Meta, TensorData};
use serde_json::Value;

/// Positions of the prompt, and a vocabulary whose rows span several pieces of 2^18 elements.
const T: usize = 6;
const V: usize = 300_007;

fn logits(rows: usize, seed: u32) -> Vec<f32> {
    (0..rows * V)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as f32 / 4e9 - 0.5) * 8.0
        })
        .collect()
}

fn write(path: &Path, tensors: &[(&str, Vec<usize>, TensorData<'_>)]) {
    write_ids(path, tensors, Some((1..=T as i64).collect()));
}

fn write_ids(
    path: &Path,
    tensors: &[(&str, Vec<usize>, TensorData<'_>)],
    input_ids: Option<Vec<i64>>,
) {
    let mut w = DumpWriter::create(path).unwrap();
    for (name, shape, data) in tensors {
        w.add(name, shape, *data).unwrap();
    }
    let meta = Meta {
        order: tensors
            .iter()
            .map(|(n, ..)| divergence_diff::Name::from(*n))
            .collect(),
        input_ids,
        ..Meta::default()
    };
    w.finish(meta).unwrap();
}

fn report(dir: &Path, ours: &str, reference: &str, truth: Option<&str>) -> (i32, Value) {
    let (code, r, err) = report_exit(dir, ours, reference, truth);
    assert!(code == 0 || code == 1, "exit {code}: {err}");
    (code, r)
}

/// [`report`] whatever the exit code, with stderr.
fn report_exit(
    dir: &Path,
    ours: &str,
    reference: &str,
    truth: Option<&str>,
) -> (i32, Value, String) {
    let p = |n: &str| dir.join(n).display().to_string();
    let mut args = vec!["diff".to_string(), p(ours), p(reference)];
    args.extend(["--format".into(), "json".into()]);
    if let Some(t) = truth {
        args.extend(["--truth".to_string(), p(t)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = divergence(&args);
    let r = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, r, err)
}

fn lm_head(report: &Value) -> &Value {
    report["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "lm_head")
        .unwrap()
}

#[test]
fn the_last_positions_logits_are_compared_with_the_references_last_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let hidden: Vec<f32> = (0..T * 8).map(|i| i as f32 * 0.25 - 3.0).collect();
    let all = logits(T, 11);
    let last2 = all[(T - 2) * V..].to_vec();
    let mut wrong = last2.clone();
    // The last position's token 5 off by 3.0: ref position T - 1.
    wrong[V + 5] += 3.0;
    let truth: Vec<f64> = all.iter().map(|&x| f64::from(x) * (1.0 + 1e-7)).collect();
    let norm = ("model.norm", vec![1, T, 8], TensorData::F32(&hidden));
    write(
        &p("ref.npz"),
        &[
            norm.clone(),
            ("lm_head", vec![1, T, V], TensorData::F32(&all)),
        ],
    );
    write(
        &p("truth.npz"),
        &[("lm_head", vec![1, T, V], TensorData::F64(&truth))],
    );
    // The truth without its batch axis, and of ours' positions only: the same rows of it.
    write(
        &p("truth_tv.npz"),
        &[("lm_head", vec![T, V], TensorData::F64(&truth))],
    );
    write(
        &p("truth_last.npz"),
        &[(
            "lm_head",
            vec![1, 2, V],
            TensorData::F64(&truth[(T - 2) * V..]),
        )],
    );
    write(
        &p("clean.npz"),
        &[
            norm.clone(),
            ("lm_head", vec![1, 2, V], TensorData::F32(&last2)),
        ],
    );
    write(
        &p("flat.npz"),
        &[
            norm.clone(),
            ("lm_head", vec![2, V], TensorData::F32(&last2)),
        ],
    );
    write(
        &p("wrong.npz"),
        &[
            norm.clone(),
            ("lm_head", vec![1, 2, V], TensorData::F32(&wrong)),
        ],
    );
    for n in ["ref", "truth", "truth_tv", "truth_last", "clean", "wrong"] {
        deflated_copy(&p(&format!("{n}.npz")), &p(&format!("{n}.z.npz")));
    }

    // Clean: no divergence, the row compares [1, 2, V], and the note says against what.
    let (code, clean) = report(dir.path(), "clean.npz", "ref.npz", None);
    assert_eq!(code, 0, "{}", lm_head(&clean));
    let row = lm_head(&clean);
    assert_eq!(row["status"], "ok");
    assert_eq!(row["shape"], serde_json::json!([1, 2, V]));
    assert_eq!(row["max_abs_err"].as_f64(), Some(0.0));
    let notes = clean["notes"].to_string();
    assert!(
        notes.contains(
            "lm_head: ours holds the logits of the last 2 positions only (of the reference's 6"
        ) && notes.contains("compared with the reference's last 2"),
        "{notes}"
    );
    // The token effect counts token positions from the prompt's: 4 and 5.
    assert_eq!(clean["tokens"]["positions"].as_u64(), Some(2));
    assert_eq!(clean["tokens"]["top1_agree"].as_u64(), Some(2));
    assert_eq!(
        clean["tokens"]["first_position"].as_u64(),
        Some(T as u64 - 2)
    );
    // Without the batch axis, the same rows.
    let (code, flat) = report(dir.path(), "flat.npz", "ref.npz", None);
    assert_eq!(code, 0);
    assert_eq!(lm_head(&flat)["max_abs_err"].as_f64(), Some(0.0));

    // A wrong logit of the last position: the first divergence, at token position 5.
    let (code, wrong) = report(dir.path(), "wrong.npz", "ref.npz", None);
    assert_eq!(code, 1);
    assert_eq!(wrong["first_divergence"]["name"], "lm_head");
    let row = lm_head(&wrong);
    assert_eq!(row["status"], "diverged");
    assert!(
        (row["max_abs_err"].as_f64().unwrap() - 3.0).abs() < 1e-5,
        "{row}"
    );
    assert_eq!(row["max_abs_err_index"], serde_json::json!([0, 1, 5]));
    // The profile names token positions: the reference's last two, the error in the last.
    let positions = &wrong["positions"];
    assert_eq!(
        positions["positions"],
        serde_json::json!([T - 2, T - 1]),
        "{positions}"
    );
    assert_eq!(
        positions["over"],
        serde_json::json!([false, true]),
        "{positions}"
    );

    // Deflated on either side (streamed: the reference's first rows read through): the
    // same rows, number for number, and the same note.
    for (o, r) in [
        ("clean.z.npz", "ref.z.npz"),
        ("clean.npz", "ref.z.npz"),
        ("clean.z.npz", "ref.npz"),
    ] {
        let (code, z) = report(dir.path(), o, r, None);
        assert_eq!(code, 0, "{o} vs {r}");
        assert_eq!(z["ops"], clean["ops"], "{o} vs {r}");
        assert_eq!(z["notes"], clean["notes"], "{o} vs {r}");
    }
    for (o, r) in [("wrong.z.npz", "ref.z.npz"), ("wrong.npz", "ref.z.npz")] {
        assert_eq!(
            report(dir.path(), o, r, None).1["ops"],
            wrong["ops"],
            "{o} vs {r}"
        );
    }

    // With the truth (of the reference's shape): its last rows judge the row, stored or
    // streamed alike.
    let (_, t) = report(dir.path(), "wrong.npz", "ref.npz", Some("truth.npz"));
    let row = lm_head(&t);
    assert!(row["noise_ratio"].is_number(), "{row}");
    assert_eq!(row["truth_problem"], Value::Null);
    for (o, r, tr) in [
        ("wrong.z.npz", "ref.z.npz", "truth.z.npz"),
        ("wrong.npz", "ref.npz", "truth.z.npz"),
        ("wrong.npz", "ref.npz", "truth_tv.npz"),
        ("wrong.z.npz", "ref.z.npz", "truth_tv.z.npz"),
        ("wrong.npz", "ref.npz", "truth_last.npz"),
        ("wrong.z.npz", "ref.z.npz", "truth_last.z.npz"),
    ] {
        let (_, z) = report(dir.path(), o, r, Some(tr));
        assert_eq!(lm_head(&z), row, "{o} vs {r}, truth {tr}");
    }
}

#[test]
fn logits_of_several_sequences_stay_a_shape_mismatch_that_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // Two sequences in the reference: its last rows are not ours' positions.
    let two = logits(2 * T, 3);
    let last = two[(2 * T - 1) * V..].to_vec();
    write(
        &p("ref.npz"),
        &[("lm_head", vec![2, T, V], TensorData::F32(&two))],
    );
    write(
        &p("ours.npz"),
        &[("lm_head", vec![1, 1, V], TensorData::F32(&last))],
    );
    let (code, r) = report(dir.path(), "ours.npz", "ref.npz", None);
    assert_eq!(code, 1);
    let row = lm_head(&r);
    assert_eq!(row["status"], "shape_mismatch");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("ours holds 1 position of the reference's 12")
            && reason.contains("dump every position's logits to compare them"),
        "{reason}"
    );
    assert_eq!(r["notes"], serde_json::json!([]));
}

#[test]
fn without_input_ids_the_rows_are_numbered_from_the_references_positions() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let all = logits(T, 5);
    let mut last = all[(T - 3) * V..].to_vec();
    last[V + 9] += 4.0;
    write_ids(
        &p("ref.npz"),
        &[("lm_head", vec![1, T, V], TensorData::F32(&all))],
        None,
    );
    write_ids(
        &p("ours.npz"),
        &[("lm_head", vec![1, 3, V], TensorData::F32(&last))],
        None,
    );
    let (code, r) = report(dir.path(), "ours.npz", "ref.npz", None);
    assert_eq!(code, 1);
    // Token positions T - 3 .. T, the error at T - 2, as with the prompt's `input_ids`.
    assert_eq!(r["tokens"]["first_position"].as_u64(), Some(T as u64 - 3));
    assert_eq!(
        r["positions"]["positions"],
        serde_json::json!([T - 3, T - 2, T - 1])
    );
    assert_eq!(
        r["positions"]["over"],
        serde_json::json!([false, true, false])
    );
}

/// Both sides keep the last rows and neither records `input_ids`: the prompt's length is
/// the token positions of `model.embed_tokens` (a bad-input hunt: numbered from the
/// reference's kept rows, 2 and 3 of 4, not 14 and 15 of 16). One wrong row of the last two
/// says nothing of q or k: the hint's reading of "every position but the first" (position
/// 0 attends to itself alone) is for rows that start at position 0.
#[test]
fn without_input_ids_the_embeddings_give_the_prompts_length() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let all = logits(T, 7);
    let hidden: Vec<f32> = (0..T * 8).map(|i| i as f32 * 0.5 - 1.0).collect();
    let embed = (
        "model.embed_tokens",
        vec![1, T, 8],
        TensorData::F32(&hidden),
    );
    let mut last = all[(T - 2) * V..].to_vec();
    for (i, x) in last[V..].iter_mut().enumerate() {
        *x += (i % 7) as f32 - 3.0;
    }
    write_ids(
        &p("ref.npz"),
        &[
            embed.clone(),
            (
                "lm_head",
                vec![1, 4, V],
                TensorData::F32(&all[(T - 4) * V..]),
            ),
        ],
        None,
    );
    write_ids(
        &p("ours.npz"),
        &[embed, ("lm_head", vec![1, 2, V], TensorData::F32(&last))],
        None,
    );
    let (code, r) = report(dir.path(), "ours.npz", "ref.npz", None);
    assert_eq!(code, 1);
    assert_eq!(r["tokens"]["first_position"].as_u64(), Some(T as u64 - 2));
    assert_eq!(
        r["positions"]["positions"],
        serde_json::json!([T - 2, T - 1])
    );
    let hints = r["hints"].to_string();
    assert!(
        hints.contains(&format!("the first at position {}", T - 1)),
        "{hints}"
    );
    assert!(!hints.contains("attends to itself alone"), "{hints}");
    // Ours without `model.embed_tokens`, its final norm of the last rows only (llama.cpp
    // keeps `result_norm` so): the reference's embeddings give the length, not ours' norm's
    // rows (a review found positions 0 and 1).
    let norm_last: Vec<f32> = hidden[(T - 2) * 8..].to_vec();
    write_ids(
        &p("ref_norm.npz"),
        &[
            (
                "model.embed_tokens",
                vec![1, T, 8],
                TensorData::F32(&hidden),
            ),
            ("model.norm", vec![1, T, 8], TensorData::F32(&hidden)),
            ("lm_head", vec![1, T, V], TensorData::F32(&all)),
        ],
        None,
    );
    write_ids(
        &p("ours_norm.npz"),
        &[
            ("model.norm", vec![1, 2, 8], TensorData::F32(&norm_last)),
            ("lm_head", vec![1, 2, V], TensorData::F32(&last)),
        ],
        None,
    );
    let (_, r) = report(dir.path(), "ours_norm.npz", "ref_norm.npz", None);
    assert_eq!(
        r["tokens"]["first_position"].as_u64(),
        Some(T as u64 - 2),
        "{}",
        r["tokens"]
    );
}

/// A truth of a third shape is said against the reference's shape and ours', stored or
/// deflated alike (a bad-input hunt: the stored pair named ours' shape as the reference's).
#[test]
fn a_truth_of_a_third_shape_is_said_against_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let all = logits(T, 3);
    let truth: Vec<f64> = all[..5 * V].iter().map(|&x| f64::from(x)).collect();
    write(
        &p("ref.npz"),
        &[("lm_head", vec![1, T, V], TensorData::F32(&all))],
    );
    write(
        &p("ours.npz"),
        &[(
            "lm_head",
            vec![1, 1, V],
            TensorData::F32(&all[(T - 1) * V..]),
        )],
    );
    write(
        &p("truth.npz"),
        &[("lm_head", vec![1, 5, V], TensorData::F64(&truth))],
    );
    deflated_copy(&p("ref.npz"), &p("ref.z.npz"));
    let said = format!(
        "truth: shape [1, 5, {V}] differs from ref [1, {T}, {V}] and from ours [1, 1, {V}]"
    );
    for reference in ["ref.npz", "ref.z.npz"] {
        let (code, r) = report(dir.path(), "ours.npz", reference, Some("truth.npz"));
        assert_eq!(code, 0, "{reference}");
        assert_eq!(
            lm_head(&r)["truth_problem"].as_str(),
            Some(said.as_str()),
            "{reference}"
        );
    }
}

#[test]
fn a_compressed_reference_too_large_to_read_whole_still_gives_the_token_effect() {
    // 480 positions of a Qwen3 vocabulary in f32: 292 MB decoded, past the 256 MiB the
    // diagnosis reads whole. Its last row is streamed out of it for the token effect, as for
    // the row (a review found the token effect empty there).
    const T: usize = 480;
    const V: usize = 151_936;
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let all: Vec<f32> = (0..T * V).map(|i| (i % 1021) as f32 * 1e-3).collect();
    let mut last = all[(T - 1) * V..].to_vec();
    last[5] += 50.0;
    write_ids(
        &p("ref.npz"),
        &[("lm_head", vec![1, T, V], TensorData::F32(&all))],
        None,
    );
    drop(all);
    write_ids(
        &p("ours.npz"),
        &[("lm_head", vec![1, 1, V], TensorData::F32(&last))],
        None,
    );
    deflated_copy(&p("ref.npz"), &p("ref.z.npz"));
    std::fs::remove_file(p("ref.npz")).unwrap();
    let (code, r) = report(dir.path(), "ours.npz", "ref.z.npz", None);
    assert_eq!(code, 1);
    assert_eq!(lm_head(&r)["status"], "diverged");
    let tokens = &r["tokens"];
    assert_eq!(tokens["positions"].as_u64(), Some(1), "{tokens}");
    assert_eq!(tokens["first_position"].as_u64(), Some(T as u64 - 1));
    assert_eq!(tokens["first_flip"]["ours_token"].as_u64(), Some(5));
}

/// Runs of other inputs (an error, exit 2) keep their logits a shape mismatch: a newcomer's
/// 3-token run against a 16-token reference read "ours holds the logits of the last 3
/// positions only ... as vLLM and llama.cpp do", and a tokens line over them.
#[test]
fn runs_of_other_inputs_compare_no_last_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let all = logits(T, 7);
    let last = all[(T - 3) * V..].to_vec();
    write(
        &p("ref.npz"),
        &[("lm_head", vec![1, T, V], TensorData::F32(&all))],
    );
    write_ids(
        &p("ours.npz"),
        &[("lm_head", vec![1, 3, V], TensorData::F32(&last))],
        Some(vec![7, 8, 9]),
    );
    let (code, r, err) = report_exit(dir.path(), "ours.npz", "ref.npz", None);
    assert_eq!(code, 2, "{err}");
    assert_eq!(r["input_ids_mismatch"], true);
    assert_eq!(lm_head(&r)["status"], "shape_mismatch");
    assert_eq!(r["notes"], serde_json::json!([]));
    assert!(r["tokens"].is_null(), "{}", r["tokens"]);
}
