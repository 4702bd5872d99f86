//! End to end: the bounds on what `diff`'s analyses beside the comparison read and do
//! (docs/reliability.md, "Caps" and "Memory"): the decode hints hold a bounded number of bytes
//! of the reference's steps, the layout diagnosis does a bounded amount of work in all, and
//! what they leave out is said or simply not claimed.

mod common;

use std::io::Write;
use std::path::Path;

use common::{divergence, npy_f32, warnings};
use divergence_dump::{DumpWriter, Meta, TensorData};
use serde_json::Value;

/// An npz of deflated f32 members, each `count` copies of one value under a shape, written
/// piece by piece (the files stay small, the tensors do not).
fn deflated_constants(path: &Path, members: &[(String, String, usize, f32)]) {
    let mut out = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    for (name, shape, count, value) in members {
        out.start_file(format!("{name}.npy"), opts).unwrap();
        out.write_all(&npy_f32(false, shape, &[])).unwrap();
        let piece: Vec<u8> = std::iter::repeat_n(value.to_le_bytes(), 1 << 16)
            .flatten()
            .collect();
        let mut left = *count;
        while left > 0 {
            let k = left.min(1 << 16);
            out.write_all(&piece[..k * 4]).unwrap();
            left -= k;
        }
    }
    out.finish().unwrap();
}

fn report(args: &[&str]) -> Value {
    let (code, out, err) = divergence(args);
    assert!(code == 0 || code == 1, "exit {code}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn hint_messages(r: &Value, code: &str) -> Vec<String> {
    r["hints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["code"] == code)
        .map(|h| h["message"].as_str().unwrap().to_string())
        .collect()
}

/// Steps of 64 MiB (16M f32, each step's value its number): the decode hints read the step's
/// own tensors, ours' next step and then the reference's steps nearest to it, each with its
/// next, while they hold at most 512 MiB in all: 3 + 5 steps (3, 5 and 6, 2, 7), where before
/// this bound every step of the window was read and held at once (a bad-input hunt: 34 steps
/// of 200 MB, 7.8 GB).
#[test]
fn decode_hints_hold_a_bounded_number_of_bytes_nearest_steps_first() {
    const BASE: &str = "model.layers.0.self_attn.rope_k";
    const N: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let shape = format!("(1, 1, 1, {N})");
    let prefill = (BASE.to_string(), "(1, 1, 4, 8)".to_string(), 32, 1.0);
    let step = |t: usize, value: usize| (format!("{BASE}@{t}"), shape.clone(), N, value as f32);
    let reference = dir.path().join("ref.npz");
    let mut members = vec![prefill.clone()];
    members.extend((1..=8).map(|t| step(t, t)));
    deflated_constants(&reference, &members);
    let diff = |shift: usize| {
        let ours = dir.path().join(format!("ours_{shift}.npz"));
        deflated_constants(
            &ours,
            &[prefill.clone(), step(4, 4 + shift), step(5, 5 + shift)],
        );
        report(&[
            "diff",
            ours.to_str().unwrap(),
            reference.to_str().unwrap(),
            "--format",
            "json",
            "--steps",
            "0,4-5",
        ])
    };
    // Each step is read with the next (a review: a match whose next step the budget left
    // unread read as an offset "at this step"): ours' steps 4-5 at the reference's 6-7 are a
    // steady offset.
    let near = diff(2);
    assert_eq!(near["first_divergence"]["name"], format!("{BASE}@4"));
    let found = hint_messages(&near, "decode_position");
    assert_eq!(
        found,
        ["ours' step 4 is the reference's step 6 (rel err 0.000e+00; step 5 likewise is its step 7): decode positions off by +2"],
    );
    // Step 7 is read (with 6), its next step 8 is not: said, not claimed either way.
    let far = diff(3);
    assert_eq!(far["first_divergence"]["name"], format!("{BASE}@4"));
    assert_eq!(
        hint_messages(&far, "decode_position"),
        ["ours' step 4 is the reference's step 7 (rel err 0.000e+00): a position off by +3 (the reference's step 8 was not read: whether the next step is off alike is not checked)"],
    );
    // Step 8 is past the budget: no step matched, no hint.
    let farther = diff(4);
    assert_eq!(farther["first_divergence"]["name"], format!("{BASE}@4"));
    assert_eq!(
        hint_messages(&farther, "decode_position"),
        Vec::<String>::new()
    );
}

/// Six shape mismatches of 2,441,880 elements in 5 axes (120 axis orders: 2.9e8 of work
/// each, 1e9 in all at most): ours holds the reference's axes reversed. The first three are
/// diagnosed (their work fits), the other three are not tried, and a warning says how many
/// were not, where before every row was tried (a bad-input hunt: 40 such rows, scanned to their
/// last element in every order, took 36.6 s).
#[test]
fn the_layout_diagnosis_does_a_bounded_amount_of_work_in_all() {
    let dims = [17usize, 18, 19, 20, 21];
    let reversed: Vec<usize> = dims.iter().rev().copied().collect();
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) as f32 / 4e9) - 0.5)
        .collect();
    // ours[a, b, c, d, e] = ref[e, d, c, b, a]
    let mut ours = vec![0f32; n];
    let mut idx = [0usize; 5];
    for v in &values {
        let at = (((idx[4] * dims[1] + idx[3]) * dims[2] + idx[2]) * dims[3] + idx[1]) * dims[4]
            + idx[0];
        ours[at] = *v;
        for ax in (0..5).rev() {
            idx[ax] += 1;
            if idx[ax] < reversed[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("model.layers.{i}.mlp")).collect();
    let write = |path: &Path, shape: &[usize], data: &[f32]| {
        let mut w = DumpWriter::create(path).unwrap();
        for name in &names {
            w.add(name, shape, TensorData::F32(data)).unwrap();
        }
        let meta = Meta {
            order: names
                .iter()
                .map(|n| divergence_diff::Name::from(n.as_str()))
                .collect(),
            ..Meta::default()
        };
        w.finish(meta).unwrap();
    };
    let (o, r) = (dir.path().join("ours.npz"), dir.path().join("ref.npz"));
    write(&o, &dims, &ours);
    write(&r, &reversed, &values);
    let rep = report(&[
        "diff",
        o.to_str().unwrap(),
        r.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let ops = rep["ops"].as_array().unwrap();
    for (i, name) in names.iter().enumerate() {
        let row = ops.iter().find(|op| op["name"] == name.as_str()).unwrap();
        assert_eq!(row["status"], "shape_mismatch", "{name}");
        let reason = row["reason"].as_str().unwrap_or_default();
        assert_eq!(
            reason.contains("layout: ours holds the axes in another order"),
            i < 3,
            "{name}: {reason}"
        );
    }
    let w = warnings(&rep);
    assert!(
        w.iter()
            .any(|w| w.starts_with("3 shape mismatches not tried for a layout change")),
        "{w:?}"
    );
}
