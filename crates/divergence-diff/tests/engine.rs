//! Engine tests with hand-computed values: metrics, shape rules, NaN/Inf, empty and 0-d tensors,
//! one-side names, input_ids, amplification, and synthetic bug-vs-noise separation.

use divergence_diff::*;

fn f32s<'a>(shape: &'a [usize], v: &'a [f32], dtype: &'a str) -> Option<Side<'a>> {
    Some(Side {
        shape,
        values: ValuesRef::F32(v),
        dtype,
    })
}
fn f64s<'a>(shape: &'a [usize], v: &'a [f64], dtype: &'a str) -> Option<Side<'a>> {
    Some(Side {
        shape,
        values: ValuesRef::F64(v),
        dtype,
    })
}
fn close(a: Option<f64>, b: f64) {
    let a = a.expect("metric is null");
    assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} != {b}");
}

#[test]
fn metrics_match_hand_computation() {
    // ours [1, 2, 2], ref [1, 2, 3]: diff [0, 0, -1]
    let cfg = DiffConfig::default();
    let row = compare(
        "x",
        f32s(&[3], &[1.0, 2.0, 2.0], "float32"),
        f64s(&[3], &[1.0, 2.0, 3.0], "float64"),
        &cfg,
    );
    close(row.rule.ours_l2, 3.0);
    close(row.rule.ref_l2, 14f64.sqrt());
    close(row.rule.diff_l2, 1.0);
    close(row.errors.max_abs_err, 1.0);
    assert_eq!(
        row.errors.max_abs_err_index.as_ref().map(Index::to_vec),
        Some(vec![2])
    );
    close(row.errors.mean_abs_err, 1.0 / 3.0);
    close(row.errors.rel_l2_err, 1.0 / 14f64.sqrt());
    close(row.errors.max_rel_err, 1.0 / 3.0);
    close(row.errors.cosine, 11.0 / (3.0 * 14f64.sqrt()));
    close(row.frac_outside_tol, 1.0 / 3.0);
    // coarsest dtype is float32: rtol 1e-3, atol 1e-6
    assert_eq!((row.rule.rtol, row.rule.atol), (Some(1e-3), Some(1e-6)));
    close(
        row.rule.tol_threshold,
        1e-6 * 3f64.sqrt() + 1e-3 * 14f64.sqrt(),
    );
    assert_eq!(row.status, Status::Diverged);
    assert_eq!((row.tensor.numel, row.rule.n_compared), (Some(3), Some(3)));
    assert_eq!(
        (
            row.nonfinite.nan_ours,
            row.nonfinite.inf_ours,
            row.nonfinite.nan_ref,
            row.nonfinite.inf_ref
        ),
        (Some(0), Some(0), Some(0), Some(0))
    );
    assert!(row
        .reason
        .unwrap()
        .starts_with("||ours - ref|| = 1.000e+00 > tolerance"));
}

#[test]
fn max_index_is_multi_dim_in_ref_shape_and_first_on_ties() {
    let cfg = DiffConfig::default();
    let o = [0.0f32, 0.0, 0.0, 0.0, 5.0, 5.0];
    let r = [0.0f32; 6];
    let row = compare(
        "x",
        f32s(&[1, 2, 3], &o, "float32"),
        f32s(&[2, 3], &r, "float32"),
        &cfg,
    );
    assert_eq!(row.tensor.shape, Some(vec![2, 3]));
    assert_eq!(row.tensor.shape_ours, Some(vec![1, 2, 3]));
    assert_eq!(
        row.errors.max_abs_err_index.as_ref().map(Index::to_vec),
        Some(vec![1, 1])
    );
    // ref is all zeros: rel L2 undefined, cosine undefined, max rel err uses the guard (1e-6)
    assert_eq!(row.errors.rel_l2_err, None);
    assert_eq!(row.errors.cosine, None);
    close(row.errors.max_rel_err, 5.0 / 1e-6);
    assert_eq!(row.status, Status::Diverged);
}

#[test]
fn guard_of_max_rel_err_depends_on_dtype_class() {
    let cfg = DiffConfig::default();
    // |r| = 1e-5 < bf16 guard 1e-3: rel = 1e-4 / 1e-3 = 0.1
    let row = compare(
        "x",
        f32s(&[1], &[1.1e-4], "bfloat16"),
        f64s(&[1], &[1e-5], "float32"),
        &cfg,
    );
    let got = row.errors.max_rel_err.unwrap();
    assert!((got - 0.1).abs() < 1e-6, "{got}");
}

#[test]
fn squeeze_and_shape_mismatch() {
    let cfg = DiffConfig::default();
    let v = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let ok = compare(
        "x",
        f32s(&[1, 3, 2], &v, "float32"),
        f32s(&[3, 1, 2], &v, "float32"),
        &cfg,
    );
    assert_eq!(ok.status, Status::Ok);
    assert_eq!(ok.tensor.shape, Some(vec![3, 1, 2]));
    assert_eq!(ok.tensor.shape_ours, Some(vec![1, 3, 2]));
    let bad = compare(
        "x",
        f32s(&[2, 3], &v, "float32"),
        f32s(&[3, 2], &v, "float32"),
        &cfg,
    );
    assert_eq!(bad.status, Status::ShapeMismatch);
    assert_eq!(
        bad.reason.as_deref(),
        Some("shape mismatch: ours [2, 3] vs ref [3, 2]")
    );
    close(bad.rule.ours_l2, 91f64.sqrt());
    close(bad.rule.ref_l2, 91f64.sqrt());
    assert_eq!(bad.rule.diff_l2, None);
    assert!(bad.status.is_divergence());
    // values that do not fill the shape: unreadable, not a panic
    let short = compare(
        "x",
        f32s(&[7], &v, "float32"),
        f32s(&[6], &v, "float32"),
        &cfg,
    );
    assert_eq!(short.status, Status::Unreadable);
    assert_eq!(
        short.reason.as_deref(),
        Some("ours: 6 values do not fill shape [7]")
    );
}

#[test]
fn nonfinite_one_side_vs_both_sides() {
    let cfg = DiffConfig::default();
    let nan = f32::NAN;
    let one = compare(
        "x",
        f32s(&[3], &[1.0, nan, 3.0], "float32"),
        f32s(&[3], &[1.0, 2.0, 3.0], "float32"),
        &cfg,
    );
    assert_eq!(one.status, Status::Nonfinite);
    assert_eq!(
        (
            one.nonfinite.nan_ours,
            one.nonfinite.nan_ref,
            one.nonfinite.nonfinite_mismatch
        ),
        (Some(1), Some(0), Some(1))
    );
    assert_eq!(one.rule.n_compared, Some(2));
    close(one.rule.diff_l2, 0.0);
    assert_eq!(
        one.reason.as_deref(),
        Some(
            "non-finite values differ at 1 of 3 positions (ours: 1 NaN, 0 Inf; ref: 0 NaN, 0 Inf)"
        )
    );
    // same NaN position and same Inf on both sides: masks equal, the rest is compared
    let inf = f32::INFINITY;
    let both = compare(
        "x",
        f32s(&[4], &[1.0, nan, -inf, 3.0], "float32"),
        f32s(&[4], &[1.0, nan, -inf, 3.0], "float32"),
        &cfg,
    );
    assert_eq!(both.status, Status::Ok);
    assert_eq!(
        (
            both.nonfinite.nan_ours,
            both.nonfinite.inf_ours,
            both.nonfinite.nan_ref,
            both.nonfinite.inf_ref
        ),
        (Some(1), Some(1), Some(1), Some(1))
    );
    assert_eq!(both.rule.n_compared, Some(2));
    close(both.rule.ref_l2, 10f64.sqrt());
    // +Inf vs -Inf is a mismatch
    let signs = compare(
        "x",
        f32s(&[1], &[inf], "float32"),
        f32s(&[1], &[-inf], "float32"),
        &cfg,
    );
    assert_eq!(signs.status, Status::Nonfinite);
    // exact mode: NaN at the same position counts as equal
    let exact = DiffConfig {
        tolerance: Tolerance::Exact,
        ..DiffConfig::default()
    };
    let e = compare(
        "x",
        f32s(&[2], &[nan, 1.0], "float32"),
        f64s(&[2], &[f64::NAN, 1.0], "float64"),
        &exact,
    );
    assert_eq!(e.status, Status::Ok);
}

#[test]
fn no_finite_element_on_either_side() {
    let cfg = DiffConfig::default();
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    // NaN everywhere on both sides: nothing compared, not `ok`
    let all_nan = compare(
        "x",
        f32s(&[2, 2], &[nan; 4], "float32"),
        f64s(&[2, 2], &[f64::NAN; 4], "float64"),
        &cfg,
    );
    assert_eq!(all_nan.status, Status::NoFinite);
    assert!(all_nan.status.is_divergence());
    assert_eq!(all_nan.status.as_str(), "no_finite");
    assert_eq!(
        (all_nan.tensor.numel, all_nan.rule.n_compared),
        (Some(4), Some(0))
    );
    assert_eq!(
        all_nan.reason.as_deref(),
        Some("no finite value on either side: all 4 elements are NaN or Inf on both (ours: 4 NaN, 0 Inf; ref: 4 NaN, 0 Inf); nothing was compared")
    );
    let json = serde_json::to_value(&all_nan).unwrap();
    assert_eq!(json["status"], "no_finite");
    let back: OpResult = serde_json::from_value(json).unwrap();
    assert_eq!(back, all_nan);
    // NaN and Inf mixed, same mask; a 0-d NaN; exact mode: all the same verdict
    let mixed = compare(
        "x",
        f32s(&[3], &[nan, inf, -inf], "float32"),
        f32s(&[3], &[nan, inf, -inf], "bfloat16"),
        &cfg,
    );
    assert_eq!(mixed.status, Status::NoFinite);
    let scalar = compare(
        "x",
        f32s(&[], &[nan], "float32"),
        f32s(&[], &[nan], "float32"),
        &cfg,
    );
    assert_eq!(scalar.status, Status::NoFinite);
    let exact = DiffConfig {
        tolerance: Tolerance::Exact,
        ..DiffConfig::default()
    };
    let e = compare(
        "x",
        f32s(&[2], &[nan; 2], "float32"),
        f32s(&[2], &[nan; 2], "float32"),
        &exact,
    );
    assert_eq!(e.status, Status::NoFinite);
    // no finite value on one side only: the masks differ, that is `nonfinite`
    let one = compare(
        "x",
        f32s(&[2], &[nan; 2], "float32"),
        f32s(&[2], &[1.0, 2.0], "float32"),
        &cfg,
    );
    assert_eq!(one.status, Status::Nonfinite);
    // an empty tensor has nothing to compare and no non-finite value: it stays `ok`
    let empty = compare(
        "x",
        f32s(&[0], &[], "float32"),
        f32s(&[0], &[], "float32"),
        &cfg,
    );
    assert_eq!(empty.status, Status::Ok);
    // one finite element at the same position is enough to compare
    let some = compare(
        "x",
        f32s(&[2], &[nan, 1.0], "float32"),
        f32s(&[2], &[nan, 1.0], "float32"),
        &cfg,
    );
    assert_eq!(some.status, Status::Ok);
}

#[test]
fn no_finite_counts_and_is_first_only_when_nothing_earlier_diverged() {
    let cfg = DiffConfig::default();
    let nan = [f32::NAN; 2];
    let v = [1.0f32, 2.0];
    let row = |name: &str, o: &[f32], r: &[f32]| {
        compare(
            name,
            f32s(&[2], o, "float32"),
            f32s(&[2], r, "float32"),
            &cfg,
        )
    };
    let ctx = || ReportContext::new("o.npz", "r.npz", OrderSource::RefMeta);
    // no_finite first, a real divergence later: the no_finite row is the first divergence
    let report = assemble(
        vec![
            row("model.embed_tokens", &v, &v),
            row("model.layers.0.mlp", &nan, &nan),
            row("model.layers.1.mlp", &v, &[3.0, 5.0]),
        ],
        ctx(),
        &cfg,
    );
    let first = report.first_divergence.clone().unwrap();
    assert_eq!((first.index, first.status), (1, Status::NoFinite));
    assert!(report.has_divergence());
    let s = &report.summary;
    assert_eq!(
        (
            s.total,
            s.compared,
            s.ok,
            s.diverged,
            s.no_finite,
            s.nonfinite
        ),
        (3, 3, 1, 2, 1, 0)
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["summary"]["no_finite"], 1);
    assert_eq!(json["first_divergence"]["status"], "no_finite");
    // a real divergence earlier stays the first
    let report = assemble(
        vec![
            row("model.layers.0.mlp", &v, &[3.0, 5.0]),
            row("model.layers.1.mlp", &nan, &nan),
        ],
        ctx(),
        &cfg,
    );
    let first = report.first_divergence.clone().unwrap();
    assert_eq!((first.index, first.status), (0, Status::Diverged));
    assert_eq!((report.summary.diverged, report.summary.no_finite), (2, 1));
    // alone, it still makes the run diverge (exit code 1 in the CLI)
    let report = assemble(vec![row("model.norm", &nan, &nan)], ctx(), &cfg);
    assert!(report.has_divergence());
}

#[test]
fn empty_and_zero_dim_tensors() {
    let cfg = DiffConfig::default();
    let e = compare(
        "e",
        f32s(&[0, 4], &[], "float32"),
        f32s(&[0, 4], &[], "bfloat16"),
        &cfg,
    );
    assert_eq!(e.status, Status::Ok);
    assert_eq!((e.tensor.numel, e.rule.n_compared), (Some(0), Some(0)));
    assert_eq!(
        (
            e.rule.ours_l2,
            e.rule.ref_l2,
            e.rule.diff_l2,
            e.errors.max_abs_err
        ),
        (Some(0.0), Some(0.0), Some(0.0), Some(0.0))
    );
    assert_eq!(
        (
            e.errors.mean_abs_err,
            e.errors.rel_l2_err,
            e.errors.max_rel_err,
            e.frac_outside_tol
        ),
        (Some(0.0), Some(0.0), Some(0.0), Some(0.0))
    );
    assert_eq!(
        (
            e.errors.cosine,
            e.errors.max_abs_err_index.as_ref().map(Index::to_vec)
        ),
        (None, None)
    );
    let json = serde_json::to_string(&e).unwrap();
    assert!(
        !json.contains("NaN") && !json.contains("Infinity"),
        "{json}"
    );
    let back: OpResult = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e);

    let z = compare(
        "z",
        f32s(&[], &[2.0], "float32"),
        f64s(&[], &[2.5], "float64"),
        &cfg,
    );
    assert_eq!(z.status, Status::Diverged);
    assert_eq!(z.tensor.shape, Some(vec![]));
    assert_eq!(
        z.errors.max_abs_err_index.as_ref().map(Index::to_vec),
        Some(vec![])
    );
    close(z.errors.max_abs_err, 0.5);
    close(z.errors.rel_l2_err, 0.2);
    close(z.errors.cosine, 1.0);
    // 0-d vs [1]: squeezes to the same shape
    let s = compare(
        "s",
        f32s(&[1], &[2.0], "float32"),
        f32s(&[], &[2.0], "float32"),
        &cfg,
    );
    assert_eq!(s.status, Status::Ok);
}

#[test]
fn exact_mode_flags_one_ulp() {
    let exact = DiffConfig {
        tolerance: Tolerance::Exact,
        ..DiffConfig::default()
    };
    let a = [1.0f32, 2.0, 3.0];
    let b = [1.0f32, f32::from_bits(2.0f32.to_bits() + 1), 3.0];
    let same = compare(
        "x",
        f32s(&[3], &a, "float32"),
        f32s(&[3], &a, "float32"),
        &exact,
    );
    assert_eq!(same.status, Status::Ok);
    let row = compare(
        "x",
        f32s(&[3], &a, "float32"),
        f32s(&[3], &b, "float32"),
        &exact,
    );
    assert_eq!(row.status, Status::Diverged);
    assert_eq!((row.rule.rtol, row.rule.atol), (Some(0.0), Some(0.0)));
    assert!(row
        .reason
        .unwrap()
        .starts_with("1 of 3 elements differ (exact mode)"));
    // the same pair is well within the auto tolerance
    let auto = compare(
        "x",
        f32s(&[3], &a, "float32"),
        f32s(&[3], &b, "float32"),
        &DiffConfig::default(),
    );
    assert_eq!(auto.status, Status::Ok);
    // f32 vs f64 widening is exact: 0.1f32 equals its f64 widening
    let w = compare(
        "x",
        f32s(&[1], &[0.1], "float32"),
        f64s(&[1], &[f64::from(0.1f32)], "float64"),
        &exact,
    );
    assert_eq!(w.status, Status::Ok);
}

#[test]
fn manual_tolerance_overrides_one_field() {
    let o = [1.0f32, 2.0, 3.0];
    let r = [1.0f32, 2.0, 3.1];
    let loose = DiffConfig {
        tolerance: Tolerance::Manual {
            rtol: Some(0.1),
            atol: None,
        },
        ..DiffConfig::default()
    };
    let row = compare(
        "x",
        f32s(&[3], &o, "float32"),
        f32s(&[3], &r, "float32"),
        &loose,
    );
    assert_eq!((row.rule.rtol, row.rule.atol), (Some(0.1), Some(1e-6)));
    assert_eq!(row.status, Status::Ok);
    let row = compare(
        "x",
        f32s(&[3], &o, "float32"),
        f32s(&[3], &r, "float32"),
        &DiffConfig::default(),
    );
    assert_eq!(row.status, Status::Diverged);
}

#[test]
fn one_side_rows_and_first_divergence() {
    let cfg = DiffConfig::default();
    let v = [3.0f32, 4.0];
    let ops = vec![
        compare(
            "model.embed_tokens",
            f32s(&[2], &v, "float32"),
            f32s(&[2], &v, "float32"),
            &cfg,
        ),
        compare("model.only_ref", None, f32s(&[2], &v, "float32"), &cfg),
        unreadable(
            "model.broken",
            Which::Ref,
            "truncated zip entry".to_string(),
        ),
        compare(
            "model.layers.0.mlp",
            f32s(&[2], &v, "float32"),
            f32s(&[2], &[3.0, 5.0], "float32"),
            &cfg,
        ),
        compare("model.only_ours", f32s(&[2], &v, "float32"), None, &cfg),
        compare(
            "model.layers.1.mlp",
            f32s(&[2], &v, "float32"),
            f32s(&[3], &[1.0, 2.0, 3.0], "float32"),
            &cfg,
        ),
    ];
    assert_eq!(ops[1].status, Status::OnlyRef);
    close(ops[1].rule.ref_l2, 5.0);
    assert_eq!(ops[1].rule.ours_l2, None);
    assert_eq!(ops[2].reason.as_deref(), Some("ref: truncated zip entry"));
    let report = assemble(
        ops,
        ReportContext::new("o.npz", "r.npz", OrderSource::RefMeta),
        &cfg,
    );
    let first = report.first_divergence.clone().unwrap();
    assert_eq!(
        (first.name.as_str(), first.index, first.status, first.layer),
        ("model.layers.0.mlp", 3, Status::Diverged, Some(0))
    );
    assert_eq!(report.only_ours, vec!["model.only_ours"]);
    assert_eq!(report.only_ref, vec!["model.only_ref"]);
    let s = &report.summary;
    assert_eq!(
        (s.total, s.compared, s.ok, s.diverged, s.shape_mismatch),
        (6, 3, 1, 2, 1)
    );
    assert_eq!(
        (s.only_ours, s.only_ref, s.unreadable, s.nonfinite),
        (1, 1, 1, 0)
    );
    assert_eq!(report.schema, "divergence-report/2");
    assert!(!report.input_ids_mismatch);
}

#[test]
fn no_first_divergence_from_one_side_names_alone() {
    let cfg = DiffConfig::default();
    let v = [1.0f32];
    let ops = vec![
        compare("a", None, f32s(&[1], &v, "float32"), &cfg),
        compare("b", f32s(&[1], &v, "float32"), None, &cfg),
        unreadable("c", Which::Ours, "bad".into()),
    ];
    let report = assemble(
        ops,
        ReportContext::new("o", "r", OrderSource::RefFile),
        &cfg,
    );
    assert!(report.first_divergence.is_none());
    assert!(!report.has_divergence());
}

#[test]
fn input_ids_mismatch_is_flagged_first() {
    let cfg = DiffConfig::default();
    let mut ctx = ReportContext::new("o", "r", OrderSource::RefMeta);
    ctx.warnings.push("some order warning".into());
    ctx.ours_input_ids = Some(vec![1, 2, 3]);
    ctx.ref_input_ids = Some(vec![1, 2, 4, 5]);
    let report = assemble(vec![], ctx.clone(), &cfg);
    assert!(report.input_ids_mismatch);
    assert_eq!(report.warnings.len(), 2);
    assert_eq!(
        report.warnings[0],
        "INPUT_IDS MISMATCH: the two runs saw different inputs (ours: 3 tokens, ref: 4 tokens, first difference at position 2); this comparison is meaningless"
    );
    ctx.ref_input_ids = Some(vec![1, 2, 3]);
    let same = assemble(vec![], ctx.clone(), &cfg);
    assert!(!same.input_ids_mismatch);
    assert_eq!(same.warnings, vec!["some order warning"]);
    ctx.ref_input_ids = None;
    assert!(!assemble(vec![], ctx, &cfg).input_ids_mismatch);
}

#[test]
fn amplification_pairs_marks_and_annotates() {
    let cfg = DiffConfig::default();
    let r = vec![1.0f64; 100];
    let bump = |d: f64| {
        let mut v = r.clone();
        v[0] += d;
        v
    };
    let (kp0, kn0, kp1, kn1, qp0, qn0) = (
        bump(1e-4),
        bump(5e-3),
        bump(1e-3),
        bump(2e-3),
        bump(0.0),
        bump(1e-3),
    );
    let sh = [100usize];
    let row = |name: &str, o: &[f64]| {
        compare(
            name,
            f64s(&sh, o, "float32"),
            f64s(&sh, &r, "float32"),
            &cfg,
        )
    };
    let ops = vec![
        row("model.layers.0.self_attn.q_proj", &qp0),
        row("model.layers.0.self_attn.k_proj", &kp0),
        row("model.layers.0.self_attn.q_norm", &qn0),
        row("model.layers.0.self_attn.k_norm", &kn0),
        row("model.layers.1.self_attn.k_proj", &kp1),
        row("model.layers.1.self_attn.k_norm", &kn1),
        row("model.layers.2.self_attn.k_norm", &kn1), // no k_proj: no row
    ];
    let mut ctx = ReportContext::new("o", "r", OrderSource::RefMeta);
    ctx.norm_weight_gains.insert((0, QkKind::K), 96.5);
    let report = assemble(ops, ctx, &cfg);
    let amp = &report.amplification;
    assert_eq!(amp.threshold, 10.0);
    assert_eq!(amp.rows.len(), 3);
    let q0 = &amp.rows[0];
    assert_eq!(
        (q0.layer, q0.kind, q0.norm.whole().as_str()),
        (0, QkKind::Q, "model.layers.0.self_attn.q_norm")
    );
    assert_eq!(q0.proj_rel_err, Some(0.0));
    assert_eq!(q0.ratio, None); // no error going in: not amplification
    assert!(!q0.marked);
    let k0 = &amp.rows[1];
    assert_eq!(
        (k0.layer, k0.kind, k0.proj.whole().as_str()),
        (0, QkKind::K, "model.layers.0.self_attn.k_proj")
    );
    close(k0.proj_rel_err, 1e-4 / 10.0);
    close(k0.norm_rel_err, 5e-3 / 10.0);
    assert!((k0.ratio.unwrap() - 50.0).abs() < 1e-6);
    assert!((k0.abs_err_gain.unwrap() - 50.0).abs() < 1e-6);
    assert_eq!(k0.weight_gain, Some(96.5));
    assert!(k0.marked);
    let k1 = &amp.rows[2];
    assert_eq!(k1.layer, 1);
    assert!((k1.ratio.unwrap() - 2.0).abs() < 1e-6);
    assert!(!k1.marked);
    assert_eq!(amp.marked, 1);
    assert_eq!(report.amplification.rows[2].weight_gain, None); // layer 1: no gain given
                                                                // a lower threshold marks layer 1 too
    let cfg2 = DiffConfig {
        amplification_threshold: 1.5,
        ..DiffConfig::default()
    };
    let again = assemble(
        report.ops.clone(),
        ReportContext::new("o", "r", OrderSource::RefMeta),
        &cfg2,
    );
    assert_eq!(again.amplification.marked, 2);
}

#[test]
fn amplification_tells_introduced_from_amplified() {
    // A projection error at f32 noise (1e-8 relative, under the 1e-6 floor) and a norm error of
    // 0.5: the error was introduced at the norm (a skipped k_norm), not amplified.
    let cfg = DiffConfig::default();
    let r = vec![1.0f64; 100];
    let bump = |d: f64| {
        let mut v = r.clone();
        v[0] += d;
        v
    };
    let sh = [100usize];
    let row = |name: &str, o: &[f64]| {
        compare(
            name,
            f64s(&sh, o, "float32"),
            f64s(&sh, &r, "float32"),
            &cfg,
        )
    };
    let ops = vec![
        row("model.layers.0.self_attn.k_proj", &bump(1e-7)),
        row("model.layers.0.self_attn.k_norm", &bump(5.0)),
        row("model.layers.1.self_attn.k_proj", &bump(1e-3)),
        row("model.layers.1.self_attn.k_norm", &bump(1.0)),
        // a bit-exact projection (ratio undefined) and a wrong norm: introduced too
        row("model.layers.2.self_attn.k_proj", &r),
        row("model.layers.2.self_attn.k_norm", &bump(1.0)),
        // a bit-exact projection and a norm error at noise level: nothing to say
        row("model.layers.3.self_attn.k_proj", &r),
        row("model.layers.3.self_attn.k_norm", &bump(1e-7)),
    ];
    let report = assemble(
        ops,
        ReportContext::new("o", "r", OrderSource::RefMeta),
        &cfg,
    );
    let amp = &report.amplification;
    assert!(amp.rows[0].ratio.unwrap() > 1e7);
    assert_eq!(amp.rows[0].verdict, Some(AmpVerdict::Introduced));
    assert!(!amp.rows[0].marked);
    assert_eq!(amp.rows[1].verdict, Some(AmpVerdict::Amplified));
    assert!(amp.rows[1].marked);
    assert_eq!(amp.rows[2].ratio, None);
    assert_eq!(amp.rows[2].verdict, Some(AmpVerdict::Introduced));
    assert_eq!(amp.rows[3].verdict, None);
    assert_eq!((amp.marked, amp.introduced), (1, 2));
    let json = serde_json::to_value(amp).unwrap();
    assert_eq!(json["rows"][0]["verdict"], "introduced");
    assert_eq!(json["rows"][1]["verdict"], "amplified");
}

// ---- synthetic noise-vs-bug separation (not a calibration: real noise floors are measured on
// transformers dumps, see docs/tolerances.md) ----

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn bf16_round(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits((b + 0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

fn status_of(o: &[f32], r: &[f32], dt_o: &str, dt_r: &str) -> Status {
    compare(
        "x",
        f32s(&[o.len()], o, dt_o),
        f32s(&[r.len()], r, dt_r),
        &DiffConfig::default(),
    )
    .status
}

#[test]
fn rounding_noise_passes_and_real_bugs_diverge() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let x: Vec<f64> = (0..4096).map(|_| rng.normal()).collect();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    // f64 run vs f32 run: pure rounding
    let row = compare(
        "x",
        f32s(&[4096], &x32, "float32"),
        f64s(&[4096], &x, "float64"),
        &DiffConfig::default(),
    );
    assert_eq!(row.status, Status::Ok);
    // bf16 rounding vs f32
    let xb: Vec<f32> = x32.iter().map(|&v| bf16_round(v)).collect();
    assert_eq!(status_of(&xb, &x32, "bfloat16", "float32"), Status::Ok);
    // GELU (tanh) for SiLU, in bf16
    let silu: Vec<f32> = x
        .iter()
        .map(|&v| bf16_round((v / (1.0 + (-v).exp())) as f32))
        .collect();
    let gelu: Vec<f32> = x
        .iter()
        .map(|&v| {
            bf16_round(
                (0.5 * v
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v))
                            .tanh())) as f32,
            )
        })
        .collect();
    assert_eq!(
        status_of(&gelu, &silu, "bfloat16", "bfloat16"),
        Status::Diverged
    );
    // transposed 64x64 weight applied to a vector
    let n = 64;
    let w: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let mv = |t: bool| -> Vec<f32> {
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| if t { w[j * n + i] } else { w[i * n + j] } * v[j])
                    .sum::<f64>()
            })
            .map(|s| bf16_round(s as f32))
            .collect()
    };
    assert_eq!(
        status_of(&mv(true), &mv(false), "bfloat16", "bfloat16"),
        Status::Diverged
    );
    // RoPE with theta 1e4 instead of 1e6 (rotate-half, head_dim 128, 16 positions)
    let (d, t) = (128usize, 16usize);
    let q: Vec<f64> = (0..d * t).map(|_| rng.normal()).collect();
    let rope = |theta: f64| -> Vec<f32> {
        let mut out = vec![0f32; d * t];
        for p in 0..t {
            for i in 0..d / 2 {
                let ang = p as f64 * theta.powf(-2.0 * i as f64 / d as f64);
                let (a, b) = (q[p * d + i], q[p * d + i + d / 2]);
                out[p * d + i] = bf16_round((a * ang.cos() - b * ang.sin()) as f32);
                out[p * d + i + d / 2] = bf16_round((b * ang.cos() + a * ang.sin()) as f32);
            }
        }
        out
    };
    assert_eq!(
        status_of(&rope(1e4), &rope(1e6), "bfloat16", "bfloat16"),
        Status::Diverged
    );
    assert_eq!(
        status_of(&rope(1e6), &rope(1e6), "bfloat16", "bfloat16"),
        Status::Ok
    );
}

#[test]
fn report_json_has_no_nan_and_round_trips() {
    let cfg = DiffConfig::default();
    let z = [0.0f32; 3];
    let ops = vec![
        compare(
            "zeros",
            f32s(&[3], &z, "float32"),
            f32s(&[3], &z, "float32"),
            &cfg,
        ),
        compare(
            "nan",
            f32s(&[1], &[f32::NAN], "float32"),
            f32s(&[1], &[1.0], "float32"),
            &cfg,
        ),
    ];
    let report = assemble(
        ops,
        ReportContext::new("o", "r", OrderSource::RefMeta),
        &cfg,
    );
    let json = serde_json::to_string_pretty(&report).unwrap();
    // undefined values are null, never NaN (which JSON cannot carry)
    assert!(!json.contains(": NaN") && !json.contains(": Infinity"));
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ops"][0]["cosine"], serde_json::Value::Null);
    assert_eq!(v["ops"][1]["status"], "nonfinite");
    assert_eq!(v["first_divergence"]["index"], 1);
    assert_eq!(v["tolerance"]["mode"], "auto");
    assert_eq!(v["order_source"], "ref_meta");
}

#[test]
fn values_whose_squares_overflow_f64_are_still_judged() {
    // |x| > ~1.3e154: the sums of squares overflow, the norm-wise rule cannot be evaluated.
    let cfg = DiffConfig::default();
    let differ = compare(
        "big",
        f64s(&[1], &[1e160], "float64"),
        f64s(&[1], &[2e160], "float64"),
        &cfg,
    );
    assert_eq!(differ.status, Status::Diverged);
    assert!(
        differ.reason.as_deref().unwrap_or("").contains("overflow"),
        "{:?}",
        differ.reason
    );
    let flipped = compare(
        "big",
        f64s(&[1], &[-1e200], "float64"),
        f64s(&[1], &[1e200], "float64"),
        &cfg,
    );
    assert_eq!(flipped.status, Status::Diverged);
    let equal = compare(
        "big",
        f64s(&[2], &[1e200, 3.0], "float64"),
        f64s(&[2], &[1e200, 3.0], "float64"),
        &cfg,
    );
    assert_eq!(equal.status, Status::Ok);
}

/// The rows of a probe's decode steps compared in one call share their tensor info and NaN/Inf
/// counts with each other (a decode report has ~150,000 rows); a step whose counts differ has
/// its own (and the caller's name: it is a row of its own, not kept compact), and changing one
/// row's shared part copies it first.
#[test]
fn decode_step_rows_share_what_does_not_change() {
    let names: Vec<Name> = (1..=4)
        .map(|s| Name::from(format!("model.layers.0.mlp@{s}")))
        .collect();
    let mut o = vec![1.0f32; 4 * 3];
    let r = o.clone();
    o[2 * 3 + 1] = f32::NAN; // step 3
    let shape = [1, 3];
    let side = |v| Side {
        shape: &shape,
        values: ValuesRef::F32(v),
        dtype: "float32",
    };
    let mut rows = Vec::new();
    compare_steps(
        &names,
        side(&o),
        side(&r),
        &DiffConfig::default(),
        &mut |k, row| {
            rows.push((k, row));
        },
    );
    let rows: Vec<OpResult> = rows.into_iter().map(|(_, row)| row).collect();
    assert_eq!(rows.len(), 4);
    assert!(std::sync::Arc::ptr_eq(&rows[2].name, &names[2]));
    for (row, name) in rows.iter().zip(&names) {
        assert_eq!(row.name, *name);
        assert!(std::sync::Arc::ptr_eq(&row.tensor, &rows[0].tensor));
        assert_eq!(row.tensor.numel, Some(3));
    }
    assert!(std::sync::Arc::ptr_eq(
        &rows[0].nonfinite,
        &rows[1].nonfinite
    ));
    assert!(std::sync::Arc::ptr_eq(
        &rows[0].nonfinite,
        &rows[3].nonfinite
    ));
    assert!(!std::sync::Arc::ptr_eq(
        &rows[0].nonfinite,
        &rows[2].nonfinite
    ));
    assert_eq!(rows[0].nonfinite.nan_ours, Some(0));
    assert_eq!(rows[2].nonfinite.nan_ours, Some(1));
    assert_eq!(rows[2].status, Status::Nonfinite);
    let mut changed = rows[1].clone();
    changed.tensor_mut().dtype_ours = Some(dtype_name("bfloat16"));
    assert_eq!(rows[0].tensor.dtype_ours.as_deref(), Some("float32"));
    assert_eq!(changed.tensor.dtype_ours.as_deref(), Some("bfloat16"));
}

/// Ops compared that hold no element on either side are no verdict, and the report says that
/// nothing was compared (a bad-input hunt: two dumps of empty decode steps read "no
/// divergence"); one op with an element among them is a comparison, and so is a shape
/// mismatch of two sides that hold elements (it compares none pairwise, and diverges).
#[test]
fn a_report_of_empty_ops_only_says_nothing_was_compared() {
    let cfg = DiffConfig::default();
    let empty: [f32; 0] = [];
    let one = [1.0f32];
    let rows = |with_one: bool| {
        let mut rows = vec![
            compare(
                "a",
                f32s(&[1, 0, 8], &empty, "float32"),
                f32s(&[1, 0, 8], &empty, "float32"),
                &cfg,
            ),
            compare(
                "b",
                f32s(&[0], &empty, "float32"),
                f32s(&[0], &empty, "float32"),
                &cfg,
            ),
        ];
        if with_one {
            rows.push(compare(
                "c",
                f32s(&[1], &one, "float32"),
                f32s(&[1], &one, "float32"),
                &cfg,
            ));
        }
        rows
    };
    let ctx = || ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    let r = assemble(rows(false), ctx(), &cfg);
    assert!(!r.has_divergence());
    assert!(r.compared_no_element(), "no verdict: `diff` exits 2");
    assert!(
        r.warnings.iter().any(|w| w
            == "nothing was compared: each of the 2 ops compared holds no element on either side"),
        "{:?}",
        r.warnings
    );
    let r = assemble(rows(true), ctx(), &cfg);
    assert!(!r.compared_no_element());
    assert!(
        !r.warnings
            .iter()
            .any(|w| w.starts_with("nothing was compared")),
        "{:?}",
        r.warnings
    );
    let two = [1.0f32, 2.0];
    let mismatch = vec![compare(
        "a",
        f32s(&[1], &one, "float32"),
        f32s(&[2], &two, "float32"),
        &cfg,
    )];
    let r = assemble(mismatch, ctx(), &cfg);
    assert!(r.has_divergence());
    assert!(!r.compared_no_element());
    // Two empty sides of other shapes: a shape mismatch, a finding (a second hunt: no verdict).
    let empty_mismatch = vec![
        compare(
            "a",
            f32s(&[0, 3], &empty, "float32"),
            f32s(&[3, 0], &empty, "float32"),
            &cfg,
        ),
        compare(
            "b",
            f32s(&[0], &empty, "float32"),
            f32s(&[0], &empty, "float32"),
            &cfg,
        ),
    ];
    let r = assemble(empty_mismatch, ctx(), &cfg);
    assert!(r.has_divergence());
    assert!(!r.compared_no_element());
    assert!(
        !r.warnings
            .iter()
            .any(|w| w.starts_with("nothing was compared")),
        "{:?}",
        r.warnings
    );
}
