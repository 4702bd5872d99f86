//! The three-way rule (`--truth`): unit cases of `compare_with_truth` and its properties (a port
//! more accurate than the reference never diverges; the verdict follows the noise ratio).

use divergence_diff::*;
use proptest::prelude::*;

const SHAPE: [usize; 1] = [4];

fn side<'a>(v: &'a [f64], dtype: &'a str) -> Option<Side<'a>> {
    Some(Side {
        shape: &SHAPE,
        values: ValuesRef::F64(v),
        dtype,
    })
}

fn truth_cfg(ratio: f64) -> DiffConfig {
    DiffConfig {
        tolerance: Tolerance::Truth { ratio },
        ..DiffConfig::default()
    }
}

/// `truth + rel * ||truth|| * unit`: a vector `rel` away from `truth` in relative L2 terms.
fn off(truth: &[f64; 4], rel: f64) -> [f64; 4] {
    let n = truth.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut v = *truth;
    v[0] += rel * n;
    v
}

const T: [f64; 4] = [1.0, -2.0, 3.0, 0.5];

fn check(ours: &[f64; 4], reference: &[f64; 4], dtype: &str) -> OpResult {
    compare_with_truth(
        "x",
        side(ours, dtype),
        side(reference, dtype),
        side(&T, "float64"),
        &truth_cfg(3.0),
    )
}

#[test]
fn ours_as_accurate_as_ref_is_ok_even_when_the_preset_would_flag_it() {
    // Both 10% from the truth, in different directions: 2-way they differ by ~20%.
    let mut o = T;
    let n = T.iter().map(|x| x * x).sum::<f64>().sqrt();
    o[1] += 0.1 * n;
    let r = off(&T, 0.1);
    let two_way = compare(
        "x",
        side(&o, "bfloat16"),
        side(&r, "bfloat16"),
        &DiffConfig::default(),
    );
    assert_eq!(two_way.status, Status::Diverged);
    let row = check(&o, &r, "bfloat16");
    assert_eq!(row.status, Status::Ok, "{row:?}");
    assert!((row.truth.noise_ratio.unwrap() - 1.0).abs() < 1e-9);
    assert!((row.truth.ours_truth_rel_err.unwrap() - 0.1).abs() < 1e-9);
    assert!((row.truth.ref_truth_rel_err.unwrap() - 0.1).abs() < 1e-9);
    assert_eq!(row.reason, None);
    assert_eq!(row.truth.truth_problem, None);
}

#[test]
fn a_port_more_accurate_than_the_reference_never_diverges() {
    // ours = the truth exactly (an f32 port against a bf16 reference, in the limit)
    let row = check(&T, &off(&T, 0.3), "bfloat16");
    assert_eq!(row.status, Status::Ok);
    assert_eq!(row.truth.noise_ratio, Some(0.0));
}

#[test]
fn materially_less_accurate_diverges_with_the_ratio_in_the_reason() {
    let row = check(&off(&T, 0.05), &off(&T, 0.01), "bfloat16");
    assert_eq!(row.status, Status::Diverged);
    let ratio = row.truth.noise_ratio.unwrap();
    assert!((ratio - 5.0).abs() < 1e-9, "{ratio}");
    let reason = row.reason.unwrap();
    assert!(reason.contains("5.0x less accurate"), "{reason}");
    // a larger k lets it pass
    let row = compare_with_truth(
        "x",
        side(&off(&T, 0.05), "bfloat16"),
        side(&off(&T, 0.01), "bfloat16"),
        side(&T, "float64"),
        &truth_cfg(6.0),
    );
    assert_eq!(row.status, Status::Ok);
}

#[test]
fn an_f32_reference_is_floored_at_f32_accumulation_noise_not_one_rounding() {
    // A held-out model's clean f32 decode step (docs/tolerances.md, "The rule"): ours 1.5e-7
    // from the truth, transformers 3.0e-8. Over u/2 = 2^-25 that was a ratio of 4.9 and a
    // divergence for ~1 ulp; over the f32 floor, 1e-5, it is 0.015.
    assert_eq!(truth_floor(DTypeClass::F32), F32_TRUTH_FLOOR);
    assert_eq!(F32_TRUTH_FLOOR, 1e-5);
    let row = check(&off(&T, 1.465e-7), &off(&T, 2.95e-8), "float32");
    assert_eq!(row.status, Status::Ok, "{row:?}");
    assert!((row.truth.noise_ratio.unwrap() - 0.01465).abs() < 1e-6);
    // A clean port on a long prompt (3.8e-6 against transformers' 1.7e-6): 0.38.
    let row = check(&off(&T, 3.8e-6), &off(&T, 1.7e-6), "float32");
    assert_eq!(row.status, Status::Ok, "{row:?}");
    // An f32 port materially less accurate (an f16 cache, 2.4e-4; a TF32 matmul, ~1e-3)
    // diverges; so does one 3.5e-5 off.
    for (e, ratio) in [(2.4e-4, 24.0), (1e-3, 100.0), (3.5e-5, 3.5)] {
        let row = check(&off(&T, e), &off(&T, 1e-7), "float32");
        assert_eq!(row.status, Status::Diverged, "{e}: {row:?}");
        assert!(
            (row.truth.noise_ratio.unwrap() - ratio).abs() < 1e-6,
            "{row:?}"
        );
    }
    // bf16 keeps one rounding's floor: 6e-3 over 2^-9 is 3.07x, diverged.
    let row = check(&off(&T, 6e-3), &off(&T, 1e-4), "bfloat16");
    assert_eq!(row.status, Status::Diverged, "{row:?}");
}

#[test]
fn a_truth_far_from_the_reference_cannot_judge_the_row() {
    // A truth row of other values (another model or input): the reference 100% off it, ours
    // too, ratio ~1, and a real bug passed. Past TRUTH_MAX_REF_ERR the presets decide.
    let far = [3.0, 1.0, -2.0, 4.0];
    let cfg = truth_cfg(3.0);
    let row = compare_with_truth(
        "x",
        side(&off(&far, 0.5), "bfloat16"),
        side(&far, "bfloat16"),
        side(&T, "float64"),
        &cfg,
    );
    assert_eq!(row.status, Status::Diverged, "{row:?}"); // the preset's verdict: 50% off
    let why = row.truth.truth_problem.as_deref().unwrap();
    assert!(
        why.starts_with("ref is ") && why.contains("more than 0.5"),
        "{why}"
    );
    // just under the bound the truth judges
    let row = check(&off(&T, 0.45), &off(&T, 0.45), "bfloat16");
    assert_eq!(
        (row.status, row.truth.truth_problem.clone()),
        (Status::Ok, None)
    );
}

#[test]
fn an_op_exact_in_the_reference_uses_the_rounding_floor() {
    // ref exact; ours one bf16 rounding off (1e-3 relative): below the floor 2^-9, ratio ~0.5.
    let row = check(&off(&T, 1e-3), &T, "bfloat16");
    assert_eq!(row.status, Status::Ok);
    assert!((row.truth.noise_ratio.unwrap() - 1e-3 / truth_floor(DTypeClass::BF16)).abs() < 1e-9);
    // ref exact; ours 1e-2 off: ~5 roundings, diverged.
    let row = check(&off(&T, 1e-2), &T, "bfloat16");
    assert_eq!(row.status, Status::Diverged);
    // both exact: ratio 0
    assert_eq!(check(&T, &T, "bfloat16").truth.noise_ratio, Some(0.0));
}

#[test]
fn an_excess_within_the_truth_noise_never_diverges() {
    // An f32 pair against an f64 truth: ref exact, ours 1e-13 off: ratio huge, excess below
    // the f64 truth's noise (1e-12).
    let row = check(&off(&T, 1e-13), &T, "float32");
    assert!(row.truth.noise_ratio.unwrap() < 1e-3 || row.status == Status::Ok);
    assert_eq!(row.status, Status::Ok);
    // With a float32 truth of a bf16 pair the truth's noise is 1e-6.
    let t32: Vec<f64> = T.to_vec();
    let row = compare_with_truth(
        "x",
        side(&off(&T, 5e-7), "bfloat16"),
        side(&T, "bfloat16"),
        Some(Side {
            shape: &SHAPE,
            values: ValuesRef::F64(&t32),
            dtype: "float32",
        }),
        &truth_cfg(3.0),
    );
    assert_eq!(row.status, Status::Ok);
}

#[test]
fn an_unusable_truth_is_a_problem_on_the_row_and_the_preset_decides() {
    let cfg = truth_cfg(3.0);
    let (o, r) = (off(&T, 0.5), T);
    // missing
    let row = compare_with_truth("x", side(&o, "bfloat16"), side(&r, "bfloat16"), None, &cfg);
    assert_eq!(row.status, Status::Diverged);
    assert_eq!(
        row.truth.truth_problem.as_deref(),
        Some("not in the truth dump")
    );
    assert_eq!(row.truth.noise_ratio, None);
    // other shape
    let t = [1.0, 2.0];
    let bad = Side {
        shape: &[2],
        values: ValuesRef::F64(&t),
        dtype: "float64",
    };
    let row = compare_with_truth(
        "x",
        side(&o, "bfloat16"),
        side(&r, "bfloat16"),
        Some(bad),
        &cfg,
    );
    assert_eq!(
        row.truth.truth_problem.as_deref(),
        Some("truth shape [2] differs from ref [4]")
    );
    // not finer than the reference
    let row = compare_with_truth(
        "x",
        side(&o, "float32"),
        side(&r, "float32"),
        side(&T, "float32"),
        &cfg,
    );
    assert_eq!(
        row.truth.truth_problem.as_deref(),
        Some("truth is float32, not finer than ref's float32")
    );
    // NaN in the truth where ref is finite
    let tn = [f64::NAN, -2.0, 3.0, 0.5];
    let row = compare_with_truth(
        "x",
        side(&o, "bfloat16"),
        side(&r, "bfloat16"),
        side(&tn, "float64"),
        &cfg,
    );
    assert!(row
        .truth
        .truth_problem
        .as_deref()
        .unwrap()
        .contains("NaN/Inf of the truth"));
    assert_eq!(row.status, Status::Diverged);
    // a truth of zeros, and one of subnormals whose squares underflow to 0: both said so,
    // neither called "all zeros" alone (the second is not)
    for t in [[0.0; 4], [1e-320, 5e-324, 0.0, 1e-315]] {
        let row = compare_with_truth(
            "x",
            side(&o, "bfloat16"),
            side(&r, "bfloat16"),
            side(&t, "float64"),
            &cfg,
        );
        let problem = row.truth.truth_problem.as_deref().unwrap_or_default();
        assert!(
            problem.contains(
                "the truth's norm is 0 (all zeros, or values too small to square in f64)"
            ),
            "{t:?}: {problem}"
        );
        assert_eq!(row.status, Status::Diverged);
    }
}

#[test]
fn shape_and_nonfinite_verdicts_stand_in_truth_mode() {
    let cfg = truth_cfg(3.0);
    let o = [1.0, f64::NAN, 3.0, 0.5];
    let row = compare_with_truth(
        "x",
        side(&o, "bfloat16"),
        side(&T, "bfloat16"),
        side(&T, "float64"),
        &cfg,
    );
    assert_eq!(row.status, Status::Nonfinite);
    let short = [1.0, 2.0];
    let row = compare_with_truth(
        "x",
        Some(Side {
            shape: &[2],
            values: ValuesRef::F64(&short),
            dtype: "bfloat16",
        }),
        side(&T, "bfloat16"),
        side(&T, "float64"),
        &cfg,
    );
    assert_eq!(row.status, Status::ShapeMismatch);
}

#[test]
fn the_report_lists_rows_without_truth_and_names_the_first_difference() {
    let cfg = truth_cfg(3.0);
    let a = off(&T, 0.01);
    let rows = vec![
        compare_with_truth(
            "same",
            side(&T, "bfloat16"),
            side(&T, "bfloat16"),
            side(&T, "float64"),
            &cfg,
        ),
        compare_with_truth("x", side(&a, "bfloat16"), side(&T, "bfloat16"), None, &cfg),
    ];
    let report = assemble(
        rows,
        ReportContext::new("o", "r", OrderSource::RefMeta),
        &cfg,
    );
    assert_eq!(report.schema, "divergence-report/2");
    let w = report.warnings.join("\n");
    assert!(w.contains("TRUTH NOT USED for 1 of 2 compared ops"), "{w}");
    assert!(w.contains("x: not in the truth dump"), "{w}");
    let d = report.first_difference.as_ref().unwrap();
    assert_eq!((d.name.as_str(), d.index), ("x", 1));
    // the fallback row was judged by the bf16 preset
    assert_eq!(report.judged_with.len(), 1);
    assert_eq!(report.judged_with[0].class, DTypeClass::BF16);
    assert_eq!(report.judged_with[0].ops, 1);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["tolerance"]["mode"], "truth");
    assert_eq!(json["tolerance"]["ratio"], 3.0);
    assert_eq!(json["ops"][0]["noise_ratio"], 0.0);
    assert!(json["ops"][1]["noise_ratio"].is_null());
}

/// The report of bf16 rows `(name, ours, ref)` judged against the truth `T`.
fn truth_report(rows: &[(&str, &[f64; 4], &[f64; 4])], cfg: &DiffConfig) -> Report {
    let rows: Vec<OpResult> = rows
        .iter()
        .map(|&(name, o, r)| {
            compare_with_truth(
                name,
                side(o, "bfloat16"),
                side(r, "bfloat16"),
                side(&T, "float64"),
                cfg,
            )
        })
        .collect();
    assemble(
        rows,
        ReportContext::new("ours", "ref", OrderSource::RefMeta),
        cfg,
    )
}

/// A reference more than `TRUTH_MAX_REF_ERR` (0.5) from the truth at an op whose input it is
/// already 0.1 or more off (its own run is noise there: held-out models with q/k-norm gains
/// twice Qwen3-0.6B's, 0.5-1.07 off) is judged by the noise ratio after all, and a warning says
/// so; after inputs it is near (a truth row of other values), the presets still judge the op.
#[test]
fn a_reference_grown_noisy_is_judged_by_the_ratio_and_a_replaced_truth_row_is_not() {
    // o_proj: ref 1.88 from the truth; ours 9% from ref (the bf16 preset: diverged) and 1.79
    // from the truth (ratio 0.95).
    let far = [3.0, 1.0, -2.0, 4.0];
    let ours = [3.0, 1.0, -1.5, 4.0];
    let cfg = truth_cfg(3.0);
    for (input_ref_err, judged) in [(0.3, true), (0.01, false)] {
        let attn = off(&T, input_ref_err);
        // (the embedding, a lookup, as the truth's: the truth ran the reference's weights)
        let r = truth_report(
            &[
                ("model.embed_tokens", &T, &T),
                ("model.layers.0.self_attn.attn_out", &attn, &attn),
                ("model.layers.0.self_attn.o_proj", &ours, &far),
            ],
            &cfg,
        );
        let o_proj = &r.ops[2];
        let noisy = r
            .warnings
            .iter()
            .find(|w| w.contains("more than 0.5 from the truth at"));
        let not_used = r.warnings.iter().find(|w| w.starts_with("TRUTH NOT USED"));
        if judged {
            assert_eq!(o_proj.status, Status::Ok, "{o_proj:?}");
            assert_eq!(o_proj.truth.truth_problem, None);
            assert!(r.first_divergence.is_none());
            let w = noisy.expect("said");
            assert!(
                w.contains("at 1 op (first model.layers.0.self_attn.o_proj;"),
                "{w}"
            );
            assert!(not_used.is_none(), "{:?}", r.warnings);
            // counted apart in the summary (the verdict line says it), and in the JSON
            assert_eq!(r.summary.noise_judged, 1);
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["summary"]["noise_judged"], 1);
        } else {
            assert_eq!(o_proj.status, Status::Diverged, "{o_proj:?}");
            assert!(o_proj.truth.truth_problem.is_some());
            assert!(noisy.is_none(), "{:?}", r.warnings);
            assert!(not_used.is_some(), "{:?}", r.warnings);
            assert_eq!(r.summary.noise_judged, 0);
            let json = serde_json::to_value(&r).unwrap();
            assert!(json["summary"].get("noise_judged").is_none(), "{json}");
        }
    }
    // A chain: v_proj judged 0.3 off, attn_out and o_proj both past 0.5: both taken for noise
    // (o_proj through attn_out). A truth far from the first op on (another model's, or
    // random values throughout) has no judged input anywhere: the presets judge every row
    // and a planted bug is still found. So do they where the truth is not known to be of the
    // reference's weights (`judge_noisy_reference` off: another recorded model source).
    let unsure = DiffConfig {
        judge_noisy_reference: false,
        ..cfg.clone()
    };
    for (v_err, cfg, judged) in [(0.3, &cfg, true), (2.0, &cfg, false), (0.3, &unsure, false)] {
        let v_ref = off(&T, v_err);
        let r = truth_report(
            &[
                ("model.embed_tokens", &T, &T),
                ("model.layers.0.self_attn.v_proj", &v_ref, &v_ref),
                ("model.layers.0.self_attn.attn_out", &far, &far),
                ("model.layers.0.self_attn.o_proj", &ours, &far),
            ],
            cfg,
        );
        let statuses: Vec<Status> = r.ops.iter().map(|o| o.status).collect();
        if judged {
            assert_eq!(statuses, [Status::Ok; 4], "{:?}", r.warnings);
            assert_eq!(r.summary.noise_judged, 2);
            assert!(
                r.warnings.iter().any(|w| w.contains("at 2 ops")),
                "{:?}",
                r.warnings
            );
        } else {
            assert_eq!(statuses[3], Status::Diverged, "{:?}", r.warnings);
            let not_used = if v_err > 1.0 { 3 } else { 2 };
            assert!(
                r.warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("TRUTH NOT USED for {not_used} of 4"))),
                "{:?}",
                r.warnings
            );
        }
    }
    // A truth whose embedding (a lookup) is further from the reference's than bf16 rounding
    // (4e-3) ran other weights (a checkpoint saved again under the reference's directory, a
    // bad-input hunt): no op is judged by the ratio, and the warning says why.
    // Without an embedding measured against the truth (ours lacks it, say), nothing is
    // checked: the reading is made (refusing it flagged clean ports that dump no embedding).
    let v_ref = off(&T, 0.3);
    let (chain, embed) = (
        [
            ("model.layers.0.self_attn.v_proj", &v_ref, &v_ref),
            ("model.layers.0.self_attn.attn_out", &far, &far),
            ("model.layers.0.self_attn.o_proj", &ours, &far),
        ],
        |e: &[f64; 4]| ("model.embed_tokens", *e, *e),
    );
    for (embed_err, judged) in [
        (Some(0.0), true),
        (Some(0.003), true),
        (Some(0.02), false),
        (None, true),
    ] {
        let e_ref = embed_err.map(|e| off(&T, e));
        let head = e_ref.as_ref().map(embed);
        let rows: Vec<(&str, &[f64; 4], &[f64; 4])> = head
            .iter()
            .map(|(n, o, r)| (*n, o, r))
            .chain(chain.iter().copied())
            .collect();
        let r = truth_report(&rows, &cfg);
        let o_proj = r.ops.last().map(|o| o.status);
        let why = r
            .warnings
            .iter()
            .find(|w| w.contains("those ops were left to the fixed presets"));
        if judged {
            assert_eq!(o_proj, Some(Status::Ok), "{:?}", r.warnings);
            assert_eq!(r.summary.noise_judged, 2);
            assert!(why.is_none(), "{:?}", r.warnings);
            continue;
        }
        assert_eq!(o_proj, Some(Status::Diverged), "{:?}", r.warnings);
        assert_eq!(r.summary.noise_judged, 0);
        let w = why.expect("said");
        assert!(
            w.contains("but the truth is not a run of the reference's weights: at model.embed_tokens, a lookup, the two are 2.000e-02 apart where rounding allows 4.000e-03"),
            "{w}"
        );
    }
    // An op ours lacks (the reference and the truth hold it) passes the noise on, as one
    // neither side dumps does: a clean port without `attn_out` was flagged at o_proj (a
    // bad-input hunt).
    let mut rows: Vec<OpResult> = [
        ("model.embed_tokens", &T, &T),
        ("model.layers.0.self_attn.v_proj", &v_ref, &v_ref),
    ]
    .iter()
    .map(|&(n, o, r)| {
        compare_with_truth(
            n,
            side(o, "bfloat16"),
            side(r, "bfloat16"),
            side(&T, "float64"),
            &cfg,
        )
    })
    .collect();
    rows.push(compare_with_truth(
        "model.layers.0.self_attn.attn_out",
        None,
        side(&far, "bfloat16"),
        side(&T, "float64"),
        &cfg,
    ));
    rows.push(compare_with_truth(
        "model.layers.0.self_attn.o_proj",
        side(&ours, "bfloat16"),
        side(&far, "bfloat16"),
        side(&T, "float64"),
        &cfg,
    ));
    let r = assemble(
        rows,
        ReportContext::new("ours", "ref", OrderSource::RefMeta),
        &cfg,
    );
    assert_eq!(r.ops[2].status, Status::OnlyRef);
    assert_eq!(r.ops[3].status, Status::Ok, "{:?}", r.warnings);
    assert_eq!(r.summary.noise_judged, 1);
}

proptest! {
    /// Whatever the values: ours closer to the truth than ref (or as close) is never a
    /// divergence in truth mode, whatever the 2-way error (where the truth can judge: ref
    /// within `TRUTH_MAX_REF_ERR` of it).
    #[test]
    fn closer_to_the_truth_never_diverges(
        t in prop::collection::vec(-100f64..100.0, 1..64),
        noise_r in prop::collection::vec(-1f64..1.0, 64),
        shrink in 0f64..=1.0,
        perm in any::<u64>(),
    ) {
        let n = t.len();
        let r: Vec<f64> = t.iter().zip(&noise_r).map(|(x, e)| x + e).collect();
        // ours' error: ref's error permuted (same norm), scaled down by `shrink`
        let rot = (perm as usize) % n;
        let o: Vec<f64> = (0..n).map(|i| t[i] + shrink * noise_r[(i + rot) % n]).collect();
        let shape = [n];
        fn s<'a>(shape: &'a [usize], v: &'a [f64], dtype: &'a str) -> Option<Side<'a>> {
            Some(Side { shape, values: ValuesRef::F64(v), dtype })
        }
        // the noise of the n elements of ref is what ours' is permuted from
        let rn: f64 = noise_r[..n].iter().map(|e| e * e).sum::<f64>();
        let on: f64 = (0..n).map(|i| noise_r[(i + rot) % n].powi(2)).sum::<f64>() * shrink * shrink;
        prop_assume!(on <= rn * (1.0 + 1e-12));
        // a truth the reference is far from cannot judge (TRUTH_MAX_REF_ERR): the presets do
        let tn: f64 = t.iter().map(|x| x * x).sum::<f64>();
        prop_assume!(rn.sqrt() <= TRUTH_MAX_REF_ERR * tn.sqrt());
        let row = compare_with_truth(
            "x",
            s(&shape, &o, "bfloat16"),
            s(&shape, &r, "bfloat16"),
            s(&shape, &t, "float64"),
            &truth_cfg(1.0 + 1e-9),
        );
        prop_assert!(row.status == Status::Ok, "{:?}", row);
    }

    /// The verdict is exactly `noise_ratio > k` (when the excess is above the truth's noise).
    #[test]
    fn the_verdict_follows_the_ratio(
        e_o in 1e-3f64..1.0,
        e_r in 1e-3f64..TRUTH_MAX_REF_ERR,
        k in 1.0f64..10.0,
    ) {
        let o = off(&T, e_o);
        let r = off(&[T[0], T[1], T[2], T[3]], 0.0);
        let mut r2 = r;
        let n = T.iter().map(|x| x * x).sum::<f64>().sqrt();
        r2[2] += e_r * n;
        let row = compare_with_truth("x", side(&o, "bfloat16"), side(&r2, "bfloat16"), side(&T, "float64"), &truth_cfg(k));
        let ratio = row.truth.noise_ratio.unwrap();
        let want = e_o / e_r.max(truth_floor(DTypeClass::BF16));
        prop_assert!((ratio - want).abs() <= 1e-9 * want.max(1.0));
        prop_assert_eq!(row.status == Status::Diverged, ratio > k);
    }
}

#[test]
fn a_truth_that_cannot_be_read_whole_keeps_the_presets_verdict() {
    // Found in review: a truth piece missing, short, or failing its CRC at the end must never
    // decide the verdict (it used to turn `diverged` into `ok` with zero errors).
    let cfg = truth_cfg(3.0);
    let (o, r) = ([1.0f64, 1.0, 1.0, 1.0], [2.0f64, 2.0, 2.0, 2.0]);
    let t = [2.0f64, 2.0, 2.0, 2.0];
    let head = |dtype| Head {
        shape: &SHAPE,
        dtype,
    };
    let preset = compare("x", side(&o, "float32"), side(&r, "float32"), &cfg);
    assert_eq!(preset.status, Status::Diverged);
    let check = |row: OpResult, problem: &str| {
        assert_eq!(row.status, Status::Diverged, "{row:?}");
        assert_eq!(row.reason, preset.reason);
        assert_eq!(row.truth.truth_problem.as_deref(), Some(problem));
        assert_eq!(row.truth.noise_ratio, None);
        assert_eq!(row.truth.ours_truth_rel_err, None);
    };
    let fold = || {
        ProbeFold::new("x", Some(head("float32")), Some(head("float32")), &cfg)
            .with_truth(Some(head("float64")))
    };
    // No truth piece with the sides' piece.
    let mut f = fold();
    f.push_pair(ValuesRef::F64(&o), ValuesRef::F64(&r), None);
    check(f.finish(), "truth: 0 values do not fill shape [4]");
    // A short piece.
    let mut f = fold();
    f.push_pair(
        ValuesRef::F64(&o),
        ValuesRef::F64(&r),
        Some(ValuesRef::F64(&t[..3]).into()),
    );
    check(f.finish(), "truth: 3 values do not fill shape [4]");
    // Every value pushed, then the reader finds the stream damaged at its end.
    let mut f = fold();
    f.push_pair(
        ValuesRef::F64(&o),
        ValuesRef::F64(&r),
        Some(ValuesRef::F64(&t).into()),
    );
    f.truth_failed("truth: crc-32 mismatch".into());
    check(f.finish(), "truth: crc-32 mismatch");
    // The slice API: values that do not fill the truth's shape.
    let short = Side {
        shape: &SHAPE,
        values: ValuesRef::F64(&t[..3]),
        dtype: "float64",
    };
    let row = compare_with_truth(
        "x",
        side(&o, "float32"),
        side(&r, "float32"),
        Some(short),
        &cfg,
    );
    check(row, "truth: 3 values do not fill shape [4]");
}

/// The report of float32 rows of one op over decode steps `0..errs.len()` (`errs[s]`: ours'
/// and ref's relative distance from the truth `T` at step `s`).
fn steps_report(errs: &[(f64, f64)]) -> Report {
    steps_report_in(errs, "float32")
}

/// [`steps_report`] of rows of `dtype`.
fn steps_report_in(errs: &[(f64, f64)], dtype: &str) -> Report {
    let cfg = truth_cfg(3.0);
    let values: Vec<([f64; 4], [f64; 4])> = errs
        .iter()
        .map(|&(o, r)| (off(&T, o), off(&T, r)))
        .collect();
    let names: Vec<String> = (0..errs.len())
        .map(|s| match s {
            0 => "model.layers.0.self_attn.attn_out".to_string(),
            s => format!("model.layers.0.self_attn.attn_out@{s}"),
        })
        .collect();
    let rows: Vec<OpResult> = values
        .iter()
        .zip(&names)
        .map(|((o, r), name)| {
            compare_with_truth(
                name,
                side(o, dtype),
                side(r, dtype),
                side(&T, "float64"),
                &cfg,
            )
        })
        .collect();
    assemble(
        rows,
        ReportContext::new("ours", "ref", OrderSource::RefMeta),
        &cfg,
    )
}

/// One decode step over the noise ratio where ours is no further from the truth than the
/// reference is at another step of the same op, and ours as accurate as the reference at most
/// steps, is noise (near one-hot attention: a held-out model's clean f32 port at 5.9x at one
/// step, the reference 9.8e-5 off at another): left ok, and a note says so. A step past the
/// reference's largest error (a review: one within 3x of it, a one-step fault of 25x, passed
/// in the first version), the prefill's row, an op over the ratio at three steps, a port worse
/// at most steps and an op of too few steps keep their verdicts.
#[test]
fn one_step_within_the_references_own_spread_is_noise() {
    // ref 2e-5 off at most steps, 1e-4 at step 5; ours 1e-5, and 6e-5 at step 9 (ratio 6
    // over the f32 floor 1e-5).
    let clean = |spike: f64, ours_rest: f64, steps: usize| -> Vec<(f64, f64)> {
        (0..steps)
            .map(|s| match s {
                5 => (ours_rest, 1e-4),
                9 => (spike, 5e-6),
                _ => (ours_rest, 2e-5),
            })
            .collect()
    };
    let r = steps_report(&clean(6e-5, 1e-5, 12));
    assert!(r.first_divergence.is_none(), "{:?}", r.first_divergence);
    assert_eq!(r.ops[9].status, Status::Ok);
    assert_eq!(r.summary.step_noise, 1);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["summary"]["step_noise"], 1);
    assert!((r.ops[9].truth.noise_ratio.unwrap() - 6.0).abs() < 1e-6);
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(
        r.notes[0].starts_with(
            "1 decode-step row over the noise ratio (1 op, step 9) was left ok as noise"
        )
            && r.notes[0].contains(
                "first model.layers.0.self_attn.attn_out@9: ours 6.000e-05 and ref 5.000e-06 from the truth, ref 1.000e-04 at step 5"
            ),
        "{}",
        r.notes[0]
    );
    // A step where the reference is more than 0.1 off bounds nothing (it is noise itself):
    // 7e-5 is past 2e-5.
    let mut noisy = clean(7e-5, 1e-5, 12);
    noisy[5].1 = 0.2;
    let r = steps_report(&noisy);
    assert_eq!(
        r.first_divergence.as_ref().map(|f| f.name.as_str()),
        Some("model.layers.0.self_attn.attn_out@9")
    );
    noisy[5].1 = 0.09;
    assert!(steps_report(&noisy).first_divergence.is_none());
    // Past the reference's largest error, 1e-4: diverged (a one-step fault).
    let r = steps_report(&clean(1.5e-4, 1e-5, 12));
    assert!(serde_json::to_value(&r).unwrap()["summary"]
        .get("step_noise")
        .is_none());
    assert_eq!(
        r.first_divergence.as_ref().map(|f| f.name.as_str()),
        Some("model.layers.0.self_attn.attn_out@9")
    );
    assert!(r.notes.is_empty());
    // The prefill's row is never left ok.
    let mut prefill = clean(1e-5, 1e-5, 12);
    prefill[0] = (6e-5, 5e-6);
    let r = steps_report(&prefill);
    assert_eq!(
        r.first_divergence.as_ref().map(|f| f.name.as_str()),
        Some("model.layers.0.self_attn.attn_out")
    );
    assert!(r.notes.is_empty());
    // Over the ratio at three decode steps: a pattern, not one step's swing.
    let mut three = clean(6e-5, 1e-5, 12);
    three[3] = (6e-5, 5e-6);
    three[7] = (6e-5, 5e-6);
    let r = steps_report(&three);
    assert_eq!(
        r.first_divergence.as_ref().map(|f| f.name.as_str()),
        Some("model.layers.0.self_attn.attn_out@3")
    );
    assert!(r.notes.is_empty());
    three[7] = (1e-5, 2e-5);
    let r = steps_report(&three);
    assert!(r.first_divergence.is_none(), "{:?}", r.first_divergence);
    assert!(
        r.notes[0].starts_with("2 decode-step rows over the noise ratio (1 op, steps 3, 9)"),
        "{}",
        r.notes[0]
    );
    // A port of the reference's bits but at one step (every other ratio exactly 1), and the
    // same rows in bfloat16: a fault, not noise (a final held-out check cleared such faults up
    // to 13 times the reference's error at their step).
    let same: Vec<(f64, f64)> = (0..12)
        .map(|s| match s {
            5 => (0.04, 0.04),
            9 => (0.02, 0.004),
            _ => (0.005, 0.005),
        })
        .collect();
    let r = steps_report(&same);
    assert_eq!(
        r.first_divergence.as_ref().map(|f| f.name.as_str()),
        Some("model.layers.0.self_attn.attn_out@9")
    );
    let bf16: Vec<(f64, f64)> = (0..12)
        .map(|s| match s {
            5 => (0.02, 0.04),
            9 => (0.02, 0.004),
            _ => (0.003, 0.005),
        })
        .collect();
    let r = steps_report_in(&bf16, "bfloat16");
    assert_eq!(
        r.first_divergence.as_ref().map(|f| f.name.as_str()),
        Some("model.layers.0.self_attn.attn_out@9")
    );
    assert!(r.notes.is_empty());
    // (the same rows in float32 are left ok)
    assert!(steps_report(&bf16).first_divergence.is_none());
    // Ours 4x the reference at most steps (a cache kept in float16, say): every verdict stands.
    let r = steps_report(&clean(6e-5, 8e-5, 12));
    assert_eq!(
        r.first_divergence.as_ref().map(|f| f.name.as_str()),
        Some("model.layers.0.self_attn.attn_out")
    );
    assert_eq!(r.ops[9].status, Status::Diverged);
    assert!(r.notes.is_empty());
    // Fewer than ENVELOPE_MIN_STEPS steps (the spike at the last): the row's own ratio
    // decides.
    let mut few = clean(6e-5, 1e-5, 12);
    few.swap(9, ENVELOPE_MIN_STEPS - 2);
    few.truncate(ENVELOPE_MIN_STEPS - 1);
    let r = steps_report(&few);
    let last = format!(
        "model.layers.0.self_attn.attn_out@{}",
        ENVELOPE_MIN_STEPS - 2
    );
    assert_eq!(
        r.first_divergence.as_ref().map(|f| f.name.as_str()),
        Some(last.as_str())
    );
    assert!(r.notes.is_empty());
}
