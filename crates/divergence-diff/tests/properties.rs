//! Property tests: identity, symmetry, monotonicity of the first divergence in the tolerance, and
//! agreement with a plain-loop f64 oracle (including the rayon-chunked path).

use divergence_diff::*;
use proptest::prelude::*;

fn side<'a>(shape: &'a [usize], v: &'a [f32]) -> Option<Side<'a>> {
    Some(Side {
        shape,
        values: ValuesRef::F32(v),
        dtype: "float32",
    })
}

/// Finite values of varied magnitude, sometimes NaN/Inf when `special` is set.
fn value(special: bool) -> BoxedStrategy<f32> {
    if special {
        prop_oneof![
            20 => -1e3f32..1e3f32,
            2 => Just(0.0f32),
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
        ]
        .boxed()
    } else {
        prop_oneof![4 => -10f32..10f32, 1 => -1e-3f32..1e-3f32, 1 => -1e4f32..1e4f32].boxed()
    }
}

fn pair(max_len: usize, special: bool) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (0..max_len).prop_flat_map(move |n| {
        (
            prop::collection::vec(value(special), n),
            prop::collection::vec(value(special), n),
        )
    })
}

/// The oracle: one obvious loop in f64.
struct Oracle {
    o2: f64,
    r2: f64,
    d2: f64,
    sad: f64,
    dot: f64,
    max_ad: f64,
    max_idx: Option<usize>,
    max_rel: f64,
    outside: u64,
    n: u64,
    nan_o: u64,
    inf_o: u64,
    mismatch: u64,
}

fn oracle(o: &[f32], r: &[f32], rtol: f64, atol: f64, guard: f64) -> Oracle {
    let mut k = Oracle {
        o2: 0.0,
        r2: 0.0,
        d2: 0.0,
        sad: 0.0,
        dot: 0.0,
        max_ad: 0.0,
        max_idx: None,
        max_rel: 0.0,
        outside: 0,
        n: 0,
        nan_o: 0,
        inf_o: 0,
        mismatch: 0,
    };
    for i in 0..o.len() {
        let (x, y) = (o[i] as f64, r[i] as f64);
        if x.is_nan() {
            k.nan_o += 1;
        } else if x.is_infinite() {
            k.inf_o += 1;
        }
        if !x.is_finite() || !y.is_finite() {
            let equal = (x.is_nan() && y.is_nan()) || (x.is_infinite() && x == y);
            if !equal {
                k.mismatch += 1;
            }
            continue;
        }
        let d = x - y;
        k.n += 1;
        k.o2 += x * x;
        k.r2 += y * y;
        k.d2 += d * d;
        k.sad += d.abs();
        k.dot += x * y;
        if k.max_idx.is_none() || d.abs() > k.max_ad {
            k.max_ad = d.abs();
            k.max_idx = Some(i);
        }
        k.max_rel = k.max_rel.max(d.abs() / y.abs().max(guard));
        if d.abs() > atol + rtol * y.abs() {
            k.outside += 1;
        }
    }
    k
}

fn approx(got: Option<f64>, want: f64) -> bool {
    match got {
        Some(g) => (g - want).abs() <= 1e-9 * want.abs().max(1e-300) + 1e-12,
        None => false,
    }
}

fn check_against_oracle(o: &[f32], r: &[f32], chunk_len: usize) -> Result<(), TestCaseError> {
    let cfg = DiffConfig {
        chunk_len,
        ..DiffConfig::default()
    };
    let shape = [o.len()];
    let row = compare("x", side(&shape, o), side(&shape, r), &cfg);
    let k = oracle(o, r, 1e-3, 1e-6, 1e-6);
    prop_assert_eq!(row.rule.n_compared, Some(k.n));
    prop_assert_eq!(row.nonfinite.nan_ours, Some(k.nan_o));
    prop_assert_eq!(row.nonfinite.inf_ours, Some(k.inf_o));
    prop_assert_eq!(row.nonfinite.nonfinite_mismatch, Some(k.mismatch));
    prop_assert!(
        approx(row.rule.ours_l2, k.o2.sqrt()),
        "ours_l2 {:?} vs {}",
        row.rule.ours_l2,
        k.o2.sqrt()
    );
    prop_assert!(approx(row.rule.ref_l2, k.r2.sqrt()));
    prop_assert!(approx(row.rule.diff_l2, k.d2.sqrt()));
    prop_assert_eq!(row.errors.max_abs_err, Some(k.max_ad));
    prop_assert_eq!(
        row.errors.max_abs_err_index.as_ref().map(Index::to_vec),
        k.max_idx.map(|i| vec![i])
    );
    prop_assert_eq!(row.errors.max_rel_err, Some(k.max_rel));
    let mean = if k.n == 0 { 0.0 } else { k.sad / k.n as f64 };
    prop_assert!(approx(row.errors.mean_abs_err, mean));
    let frac = if k.n == 0 {
        0.0
    } else {
        k.outside as f64 / k.n as f64
    };
    prop_assert_eq!(row.frac_outside_tol, Some(frac));
    if k.o2 > 0.0 && k.r2 > 0.0 {
        let cos = (k.dot / (k.o2.sqrt() * k.r2.sqrt())).clamp(-1.0, 1.0);
        let got = row.errors.cosine.unwrap();
        prop_assert!((got - cos).abs() < 1e-9, "cosine {} vs {}", got, cos);
    } else {
        prop_assert_eq!(row.errors.cosine, None);
    }
    let expect = if k.mismatch > 0 {
        Status::Nonfinite
    } else if k.d2.sqrt() > 1e-6 * (k.n as f64).sqrt() + 1e-3 * k.r2.sqrt() {
        Status::Diverged
    } else {
        Status::Ok
    };
    // the decision may only differ from the oracle's when the error sits on the threshold
    let margin = (k.d2.sqrt() - (1e-6 * (k.n as f64).sqrt() + 1e-3 * k.r2.sqrt())).abs();
    if margin > 1e-9 * k.d2.sqrt().max(1e-300) {
        prop_assert_eq!(row.status, expect);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn identical_inputs_are_ok_with_zero_error((a, _b) in pair(300, true)) {
        let shape = [a.len()];
        for tol in [Tolerance::Auto, Tolerance::Exact, Tolerance::Manual { rtol: Some(0.0), atol: Some(0.0) }] {
            let cfg = DiffConfig { tolerance: tol, chunk_len: 37, ..DiffConfig::default() };
            let row = compare("x", side(&shape, &a), side(&shape, &a), &cfg);
            // NaN/Inf everywhere compares nothing: `no_finite` (docs/tolerances.md, rule 3),
            // with every metric still zero; anything else identical is `ok`.
            let none_finite = !a.is_empty() && a.iter().all(|x| !x.is_finite());
            let expect = if none_finite { Status::NoFinite } else { Status::Ok };
            prop_assert_eq!(row.status, expect);
            prop_assert_eq!(row.rule.diff_l2, Some(0.0));
            prop_assert_eq!(row.errors.max_abs_err, Some(0.0));
            prop_assert_eq!(row.errors.mean_abs_err, Some(0.0));
            prop_assert_eq!(row.errors.max_rel_err, Some(0.0));
            prop_assert_eq!(row.frac_outside_tol, Some(0.0));
            prop_assert_eq!(row.errors.rel_l2_err, Some(0.0));
            prop_assert_eq!(row.nonfinite.nonfinite_mismatch, Some(0));
            if let Some(c) = row.errors.cosine {
                prop_assert!((c - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn symmetric_metrics_are_symmetric((a, b) in pair(300, true), chunk in 1usize..100) {
        let cfg = DiffConfig { chunk_len: chunk, ..DiffConfig::default() };
        let shape = [a.len()];
        let ab = compare("x", side(&shape, &a), side(&shape, &b), &cfg);
        let ba = compare("x", side(&shape, &b), side(&shape, &a), &cfg);
        prop_assert_eq!(ab.errors.max_abs_err, ba.errors.max_abs_err);
        prop_assert_eq!(ab.errors.max_abs_err_index.as_ref().map(Index::to_vec), ba.errors.max_abs_err_index.as_ref().map(Index::to_vec));
        prop_assert_eq!(ab.errors.mean_abs_err, ba.errors.mean_abs_err);
        prop_assert_eq!(ab.rule.diff_l2, ba.rule.diff_l2);
        prop_assert_eq!(ab.errors.cosine, ba.errors.cosine);
        prop_assert_eq!(ab.nonfinite.nonfinite_mismatch, ba.nonfinite.nonfinite_mismatch);
        prop_assert_eq!(ab.rule.ours_l2, ba.rule.ref_l2);
    }

    #[test]
    fn metrics_agree_with_the_oracle((a, b) in pair(400, true), chunk in 1usize..64) {
        check_against_oracle(&a, &b, chunk)?;
        check_against_oracle(&a, &b, usize::MAX)?;
    }

    #[test]
    fn metrics_agree_with_the_oracle_on_close_inputs(a in prop::collection::vec(value(false), 0..3000), noise in prop::collection::vec(-1e-3f32..1e-3f32, 3000), chunk in 100usize..2000) {
        let b: Vec<f32> = a.iter().zip(&noise).map(|(x, e)| x * (1.0 + e)).collect();
        check_against_oracle(&a, &b, chunk)?;
    }

    #[test]
    fn loosening_never_moves_the_first_divergence_earlier(
        ops in prop::collection::vec(
            (prop::collection::vec(-10f32..10f32, 1..20), prop::collection::vec(-1f32..1f32, 20), 0u32..6),
            1..12,
        ),
        rtol in 0.0f64..0.5,
        atol in 0.0f64..0.5,
        more_rtol in 0.0f64..0.5,
        more_atol in 0.0f64..0.5,
    ) {
        // op i: ref = x, ours = x + scale * noise, with scale 10^-k
        let data: Vec<(Vec<f32>, Vec<f32>)> = ops
            .iter()
            .map(|(x, n, k)| {
                let s = 10f32.powi(-(*k as i32));
                (x.iter().zip(n).map(|(a, e)| a + s * e).collect(), x.clone())
            })
            .collect();
        let first = |tol: Tolerance| {
            let cfg = DiffConfig { tolerance: tol, ..DiffConfig::default() };
            let rows: Vec<OpResult> = data
                .iter()
                .enumerate()
                .map(|(i, (o, r))| compare(&format!("op{i}"), side(&[o.len()], o), side(&[r.len()], r), &cfg))
                .collect();
            assemble(rows, ReportContext::new("o", "r", OrderSource::RefMeta), &cfg)
                .first_divergence
                .map_or(usize::MAX, |f| f.index)
        };
        let tight = first(Tolerance::Manual { rtol: Some(rtol), atol: Some(atol) });
        let loose = first(Tolerance::Manual { rtol: Some(rtol + more_rtol), atol: Some(atol + more_atol) });
        let exact = first(Tolerance::Exact);
        let auto = first(Tolerance::Auto);
        prop_assert!(loose >= tight, "loose {} < tight {}", loose, tight);
        prop_assert!(tight >= exact && auto >= exact);
    }
}

#[test]
fn large_tensor_uses_chunks_and_matches_the_oracle() {
    // 3M elements: several default-size chunks processed by rayon, with NaNs in a few places.
    let n = 3_000_000usize;
    let a: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.001).sin()).collect();
    let mut b: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, x)| x + 1e-5 * ((i % 97) as f32 - 48.0))
        .collect();
    b[1_234_567] = f32::NAN;
    b[2_999_999] += 0.5;
    let mut a2 = a.clone();
    a2[1_234_567] = f32::NAN;
    check_against_oracle(&a2, &b, divergence_diff::metrics::DEFAULT_CHUNK_LEN).unwrap();
    check_against_oracle(&a, &b, 4096).unwrap();
    let cfg = DiffConfig::default();
    let row = compare(
        "x",
        side(&[3, 1_000_000], &a2),
        side(&[3, 1_000_000], &b),
        &cfg,
    );
    assert_eq!(
        row.errors.max_abs_err_index.as_ref().map(Index::to_vec),
        Some(vec![2, 999_999])
    );
    // NaN at the same position on both sides; ||d|| ~ 0.7 is far below rtol * ||ref|| ~ 1.2
    assert_eq!(row.status, Status::Ok);
    assert_eq!(
        (
            row.nonfinite.nan_ours,
            row.nonfinite.nan_ref,
            row.rule.n_compared
        ),
        (Some(1), Some(1), Some(n as u64 - 1))
    );
}

/// Feeds `fold` the values of each side in pieces of `piece` elements (a multiple of the chunk
/// length, as a streaming reader does), the way [`ProbeFold::needs`] asks.
fn feed(fold: &mut ProbeFold, o: &[f32], r: &[f32], t: Option<&[f64]>, piece: usize) {
    match fold.needs() {
        Needs::Nothing => {}
        Needs::Ours => o
            .chunks(piece)
            .for_each(|c| fold.push_side(Which::Ours, ValuesRef::F32(c))),
        Needs::Ref => r
            .chunks(piece)
            .for_each(|c| fold.push_side(Which::Ref, ValuesRef::F32(c))),
        Needs::Apart => {
            // Apart sides may come in any order: ref first here.
            r.chunks(piece)
                .for_each(|c| fold.push_side(Which::Ref, ValuesRef::F32(c)));
            o.chunks(piece)
                .for_each(|c| fold.push_side(Which::Ours, ValuesRef::F32(c)));
        }
        Needs::Pair { truth } => {
            for (i, (oc, rc)) in o.chunks(piece).zip(r.chunks(piece)).enumerate() {
                let tc = t.filter(|_| truth).map(|t| {
                    ValuesRef::F64(&t[i * piece..(i * piece + oc.len()).min(t.len())]).into()
                });
                fold.push_pair(ValuesRef::F32(oc), ValuesRef::F32(rc), tc);
            }
        }
    }
}

/// Values in [-4, 4) from a small xorshift of `seed`: fast for tensors of several chunks.
fn xorshift(seed: u64) -> impl FnMut() -> f32 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
    }
}

/// [`feed`] with pieces of varying sizes: `sizes` cycled (each a multiple of the piece unit).
fn feed_sizes(fold: &mut ProbeFold, o: &[f32], r: &[f32], t: Option<&[f64]>, sizes: &[usize]) {
    let cuts = |n: usize| {
        let (mut at, mut out) = (0, Vec::new());
        for &k in sizes.iter().cycle() {
            if at >= n {
                break;
            }
            let end = (at + k).min(n);
            out.push(at..end);
            at = end;
        }
        out
    };
    let side = |fold: &mut ProbeFold, which, v: &[f32]| {
        for c in cuts(v.len()) {
            fold.push_side(which, ValuesRef::F32(&v[c]));
        }
    };
    match fold.needs() {
        Needs::Nothing => {}
        Needs::Ours => side(fold, Which::Ours, o),
        Needs::Ref => side(fold, Which::Ref, r),
        Needs::Apart => {
            side(fold, Which::Ref, r);
            side(fold, Which::Ours, o);
        }
        Needs::Pair { truth } => {
            for c in cuts(o.len()) {
                let tc = t
                    .filter(|_| truth)
                    .map(|t| ValuesRef::F64(&t[c.clone()]).into());
                fold.push_pair(ValuesRef::F32(&o[c.clone()]), ValuesRef::F32(&r[c]), tc);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Pieces of any multiple of [`DiffConfig::piece_unit`] (a block of 2,048 with chunks of
    /// whole blocks), varying from piece to piece and crossing chunk boundaries, give the row of
    /// the whole values, bit for bit (JSON equality): pairs with NaN / Inf, the truth's sums,
    /// one-sided probes and shape mismatches.
    #[test]
    fn pieces_on_block_boundaries_are_the_whole_probe(
        n in 0usize..14_000,
        seed in any::<u64>(),
        specials in prop::collection::vec((0usize..14_000, 0u8..3), 0..4),
        blocks_per_chunk in 1usize..4,
        sizes in prop::collection::vec(1usize..6, 1..5),
        case in 0usize..4,
        truth_mode in any::<bool>(),
    ) {
        let unit = divergence_diff::metrics::BLOCK;
        let cfg = DiffConfig {
            tolerance: if truth_mode {
                Tolerance::from_flags(false, None, None, Some(3.0))
            } else {
                Tolerance::default()
            },
            chunk_len: unit * blocks_per_chunk,
            ..DiffConfig::default()
        };
        prop_assert_eq!(cfg.piece_unit(), unit);
        let mut next = xorshift(seed);
        let a: Vec<f32> = (0..n).map(|_| next()).collect();
        let mut b: Vec<f32> = a.iter().map(|&v| v + next() * 1e-3).collect();
        let mut a = a;
        for &(at, kind) in &specials {
            if at < n {
                let v = [f32::NAN, f32::INFINITY, f32::MAX][kind as usize];
                if kind == 2 { b[at] = v } else { a[at] = v }
            }
        }
        let t: Vec<f64> = b.iter().map(|&v| f64::from(v) + 1e-4).collect();
        let flat = [n];
        let other = [n + 1];
        let mut b2 = b.clone();
        b2.push(1.0);
        let (oa, ra, sr): (Option<&[f32]>, Option<&[f32]>, &[usize]) = match case {
            1 => (Some(&a), None, &flat),
            2 => (None, Some(&b), &flat),
            3 => (Some(&a), Some(&b2), &other),
            _ => (Some(&a), Some(&b), &flat),
        };
        let o_side = oa.map(|v| Side { shape: &flat, values: ValuesRef::F32(v), dtype: "bfloat16" });
        let r_side = ra.map(|v| Side { shape: sr, values: ValuesRef::F32(v), dtype: "bfloat16" });
        let t_side = Side { shape: &flat, values: ValuesRef::F64(&t), dtype: "float64" };
        let whole = compare_with_truth("p", o_side, r_side, Some(t_side), &cfg);
        let mut fold = ProbeFold::new("p", o_side.map(|s| s.head()), r_side.map(|s| s.head()), &cfg)
            .with_truth(Some(t_side.head()));
        let sizes: Vec<usize> = sizes.iter().map(|k| k * unit).collect();
        feed_sizes(&mut fold, oa.unwrap_or(&[]), ra.unwrap_or(&[]), Some(&t), &sizes);
        let streamed = fold.finish();
        prop_assert_eq!(
            serde_json::to_string(&streamed).unwrap(),
            serde_json::to_string(&whole).unwrap()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A split part read in place (a [`Piece`] of a strided [`Gather`] over its fused tensor:
    /// runs of `take` elements out of every row of `stride`), fed in pieces of block multiples
    /// that start and end anywhere in a run, gives the row of the part copied out, bit for bit:
    /// any run length (multiples of the kernel's 8 lanes or not), on either side or both and
    /// the truth, NaN / Inf inside and outside the part, one-sided probes.
    #[test]
    fn split_parts_read_in_place_are_the_parts_copied_out(
        rows in 1usize..40,
        take in prop::collection::vec(1usize..700, 3),
        before in prop::collection::vec(0usize..30, 3),
        after in prop::collection::vec(0usize..30, 3),
        gathered in prop::collection::vec(any::<bool>(), 3),
        seed in any::<u64>(),
        specials in prop::collection::vec((0usize..40_000, 0u8..3), 0..4),
        sizes in prop::collection::vec(1usize..4, 1..4),
        case in 0usize..3,
    ) {
        let unit = divergence_diff::metrics::BLOCK;
        let cfg = DiffConfig {
            tolerance: Tolerance::from_flags(false, None, None, Some(3.0)),
            chunk_len: unit * 2,
            ..DiffConfig::default()
        };
        let mut next = xorshift(seed);
        // Each side (ours, ref, truth) is one part of a fused tensor of its own, all the
        // parts `n` elements long: the rows differ so that the runs break at other places.
        let n = rows * take[0];
        let layouts: Vec<(usize, Gather)> = (0..3)
            .map(|s| {
                let mut take = take[s];
                while n % take != 0 {
                    take -= 1;
                }
                let stride = before[s] + take + after[s];
                (n / take * stride, Gather { stride, offset: before[s], take })
            })
            .collect();
        let mut fused: Vec<Vec<f32>> = layouts.iter().map(|(len, _)| (0..*len).map(|_| next()).collect()).collect();
        for &(at, kind) in &specials {
            let side = at % 2;
            if let Some(v) = fused[side].get_mut(at / 2) {
                *v = [f32::NAN, f32::INFINITY, f32::MAX][kind as usize];
            }
        }
        // The parts copied out, the reference's and the truth's near ours'.
        let copy = |s: usize, v: &[f32]| -> Vec<f32> {
            let g = layouts[s].1;
            let piece = Piece::gathered(ValuesRef::F32(v), g, 0, n).unwrap();
            let mut buf = Vec::new();
            piece.flat(&mut buf).to_f64_vec().iter().map(|&x| x as f32).collect()
        };
        let a = copy(0, &fused[0]);
        // ref = ours + noise, written back into its fused tensor at the part's places.
        let g1 = layouts[1].1;
        for (k, &v) in a.iter().enumerate() {
            let at = (k / g1.take) * g1.stride + g1.offset + k % g1.take;
            let old = fused[1][at];
            fused[1][at] = if old.is_finite() { v + next() * 1e-3 } else { old };
        }
        let b = copy(1, &fused[1]);
        let g2 = layouts[2].1;
        let tf: Vec<f64> = {
            let mut t: Vec<f64> = fused[2].iter().map(|&v| f64::from(v)).collect();
            for (k, &v) in b.iter().enumerate() {
                t[(k / g2.take) * g2.stride + g2.offset + k % g2.take] = f64::from(v) + 1e-4;
            }
            t
        };
        let t = {
            let piece = Piece::gathered(ValuesRef::F64(&tf), g2, 0, n).unwrap();
            let mut buf = Vec::new();
            piece.flat(&mut buf).to_f64_vec()
        };
        let flat = [n];
        let (oa, ra): (Option<&[f32]>, Option<&[f32]>) = match case {
            1 => (Some(&a), None),
            2 => (None, Some(&b)),
            _ => (Some(&a), Some(&b)),
        };
        let o_side = oa.map(|v| Side { shape: &flat, values: ValuesRef::F32(v), dtype: "bfloat16" });
        let r_side = ra.map(|v| Side { shape: &flat, values: ValuesRef::F32(v), dtype: "bfloat16" });
        let t_side = Side { shape: &flat, values: ValuesRef::F64(&t), dtype: "float64" };
        let whole = compare_with_truth("p", o_side, r_side, Some(t_side), &cfg);
        // The same values in place: each side a gather over its fused tensor, or (when
        // `gathered` says no) its copy, pushed in pieces of block multiples.
        fn side_piece<'a>(g: Option<Gather>, copy: &'a [f32], fused: &'a [f32], range: std::ops::Range<usize>) -> Piece<'a> {
            match g {
                Some(g) => Piece::gathered(ValuesRef::F32(fused), g, range.start, range.len()).unwrap(),
                None => ValuesRef::F32(&copy[range]).into(),
            }
        }
        let g = |s: usize| Some(layouts[s].1).filter(|_| gathered[s]);
        let t_piece = |range: std::ops::Range<usize>| -> Piece<'_> {
            if gathered[2] {
                Piece::gathered(ValuesRef::F64(&tf), g2, range.start, range.len()).unwrap()
            } else {
                ValuesRef::F64(&t[range]).into()
            }
        };
        let mut cuts = Vec::new();
        let mut at = 0;
        for &k in sizes.iter().cycle() {
            if at >= n {
                break;
            }
            let end = (at + k * unit).min(n);
            cuts.push(at..end);
            at = end;
        }
        let mut fold = ProbeFold::new("p", o_side.map(|s| s.head()), r_side.map(|s| s.head()), &cfg)
            .with_truth(Some(t_side.head()));
        match fold.needs() {
            Needs::Nothing => {}
            Needs::Ours | Needs::Ref | Needs::Apart => {
                for c in &cuts {
                    if oa.is_some() {
                        fold.push_side(Which::Ours, side_piece(g(0), &a, &fused[0], c.clone()));
                    }
                    if ra.is_some() {
                        fold.push_side(Which::Ref, side_piece(g(1), &b, &fused[1], c.clone()));
                    }
                }
            }
            Needs::Pair { truth } => {
                for c in &cuts {
                    fold.push_pair(
                        side_piece(g(0), &a, &fused[0], c.clone()),
                        side_piece(g(1), &b, &fused[1], c.clone()),
                        Some(t_piece(c.clone())).filter(|_| truth),
                    );
                }
            }
        }
        prop_assert_eq!(
            serde_json::to_string(&fold.finish()).unwrap(),
            serde_json::to_string(&whole).unwrap()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A probe streamed piece by piece gives the row of the whole values, bit for bit (JSON
    /// equality): pairs, NaN/Inf, shape mismatches, one-sided probes, and the truth's verdict.
    #[test]
    fn a_streamed_probe_is_the_whole_probe(
        (a, b) in pair(700, true),
        noise in prop::collection::vec(-1e-2f64..1e-2f64, 700),
        chunk in 1usize..64,
        pieces in 1usize..4,
        case in 0usize..5,
        truth_mode in any::<bool>(),
    ) {
        let n = a.len();
        let t: Vec<f64> = b.iter().zip(&noise).map(|(&x, e)| f64::from(x) * (1.0 + e)).collect();
        let cfg = DiffConfig {
            tolerance: if truth_mode {
                Tolerance::from_flags(false, None, None, Some(3.0))
            } else {
                Tolerance::default()
            },
            chunk_len: chunk,
            ..DiffConfig::default()
        };
        let flat = [n];
        let split = [1, n];
        let other = [n + 1];
        let (so, sr): (&[usize], &[usize]) = match case {
            0 => (&flat, &flat),
            1 => (&split, &flat), // aligned up to a size-1 dimension
            _ => (&flat, &flat),
        };
        let (oa, ra): (Option<&[f32]>, Option<&[f32]>) = match case {
            3 => (Some(&a), None),
            4 => (None, Some(&b)),
            _ => (Some(&a), Some(&b)),
        };
        // case 2: shapes that do not align (the ref has one more element).
        let mut b2 = b.clone();
        let (sr, rvals): (&[usize], &[f32]) = if case == 2 {
            b2.push(1.0);
            (&other, &b2)
        } else {
            (sr, ra.unwrap_or(&[]))
        };
        let ov = oa.unwrap_or(&[]);
        let o_side = oa.map(|v| Side { shape: so, values: ValuesRef::F32(v), dtype: "bfloat16" });
        let r_side = (case != 3).then_some(Side { shape: sr, values: ValuesRef::F32(rvals), dtype: "bfloat16" });
        let t_side = Side { shape: &flat, values: ValuesRef::F64(&t), dtype: "float64" };
        let whole = compare_with_truth("p", o_side, r_side, Some(t_side), &cfg);

        let mut fold = ProbeFold::new("p", o_side.map(|s| s.head()), r_side.map(|s| s.head()), &cfg)
            .with_truth(Some(t_side.head()));
        feed(&mut fold, ov, rvals, Some(&t), chunk * pieces);
        let streamed = fold.finish();
        prop_assert_eq!(
            serde_json::to_string(&streamed).unwrap(),
            serde_json::to_string(&whole).unwrap()
        );
    }
}

/// The index of the largest |ours - ref| is its first occurrence, wherever the ties fall: in
/// one group of lanes, in two groups, in the group remainder, in a later block (the kernel
/// finds it with a vectorized scan of the block where the maximum grows).
#[test]
fn max_abs_err_index_is_the_first_of_tied_maxima() {
    let cfg = DiffConfig::default();
    for n in [1usize, 7, 8, 9, 16, 1000, 2047, 2048, 2049, 4100, 6000] {
        let r: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.25 - 1.0).collect();
        let ties: Vec<Vec<usize>> = vec![
            vec![n - 1],
            vec![0, n - 1],
            vec![n / 2, n / 2 + 1, n - 1],
            vec![n.saturating_sub(3), n - 1],
            vec![(n / 8) * 8, n - 1],
            vec![n.min(2050) - 1, n - 1],
        ];
        for mut tie in ties {
            tie.retain(|&i| i < n);
            tie.sort_unstable();
            tie.dedup();
            let mut o = r.clone();
            for &i in &tie {
                o[i] += 0.5;
            }
            // A smaller difference before every tie: the maximum grows inside the block.
            if tie[0] > 0 {
                o[0] += 0.25;
            }
            let row = compare("x", side(&[n], &o), side(&[n], &r), &cfg);
            assert_eq!(
                row.errors.max_abs_err_index.as_ref().map(Index::to_vec),
                Some(vec![tie[0]]),
                "n={n} ties at {tie:?}"
            );
        }
    }
}

/// `v` encoded as the stored variant `enc` (0: f32, 1: f32 bytes, 2: bf16 bytes, 3: f16 bytes,
/// 4: f64 bytes), leaked for the test's lifetime.
fn encoded(v: &[f32], enc: u8) -> ValuesRef<'static> {
    fn leak<T>(v: Vec<T>) -> &'static [T] {
        Box::leak(v.into_boxed_slice())
    }
    match enc {
        0 => ValuesRef::F32(leak(v.to_vec())),
        1 => ValuesRef::F32Le(leak(v.iter().map(|x| x.to_le_bytes()).collect())),
        2 => ValuesRef::Bf16Le(leak(
            v.iter()
                .map(|x| {
                    let b = x.to_bits().to_le_bytes();
                    [b[2], b[3]]
                })
                .collect(),
        )),
        3 => ValuesRef::F16Le(leak(
            v.iter()
                .map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
        )),
        _ => ValuesRef::F64Le(leak(
            v.iter().map(|x| f64::from(*x).to_le_bytes()).collect(),
        )),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A probe's decode steps compared in one call ([`compare_steps`]: a stacked member's
    /// values, one pass) give, step by step, the rows of [`compare`] on each step's values
    /// alone, bit for bit (JSON equality): any encoding on either side, NaN / Inf, squeezed
    /// shapes, shapes that do not align, steps of a chunk or more, values that do not hold
    /// every step, every tolerance mode.
    #[test]
    fn steps_in_one_call_are_each_step_alone(
        steps in 0usize..6,
        n in 0usize..3000,
        seed in any::<u64>(),
        specials in prop::collection::vec((0usize..18_000, 0u8..3), 0..5),
        enc in (0u8..5, 0u8..5),
        shapes in 0usize..3,
        chunk_small in any::<bool>(),
        short in 0usize..3,
        mode in 0usize..4,
        base in prop::sample::select(vec!["model.layers.3.mlp", "lm_head", "model.layers.3@2"]),
        odd_name in 0u8..3,
    ) {
        let cfg = DiffConfig {
            tolerance: match mode {
                0 => Tolerance::default(),
                1 => Tolerance::from_flags(true, None, None, None),
                2 => Tolerance::from_flags(false, Some(1e-4), Some(1e-5), None),
                _ => Tolerance::from_flags(false, None, None, Some(3.0)),
            },
            chunk_len: if chunk_small { 1000 } else { DiffConfig::default().chunk_len },
            ..DiffConfig::default()
        };
        let mut next = xorshift(seed);
        let total = steps * n;
        let a: Vec<f32> = (0..total).map(|_| next()).collect();
        let mut b: Vec<f32> = a.iter().map(|&v| v + next() * 1e-2).collect();
        let mut a = a;
        for &(at, kind) in &specials {
            if at < total {
                let v = [f32::NAN, f32::INFINITY, f32::MAX][kind as usize];
                if kind == 2 { b[at] = v } else { a[at] = v }
            }
        }
        // A side that holds fewer values than its steps need (a broken caller).
        let cut = |v: &mut Vec<f32>| v.truncate(total.saturating_sub(short));
        if short > 0 && seed % 2 == 0 { cut(&mut a) } else if short > 0 { cut(&mut b) }
        let (o_shape, r_shape): (Vec<usize>, Vec<usize>) = match shapes {
            0 => (vec![n], vec![n]),
            1 => (vec![1, n], vec![n]),
            _ => (vec![n], vec![n + 1]),
        };
        let (ov, rv) = (encoded(&a, enc.0), encoded(&b, enc.1));
        // A base without a layer, and one that ends in `@<digits>` itself (its layer is not 3).
        // Now and then a step named otherwise than its run would write it back: with a
        // leading zero, or of another probe (each then a row of its own, not kept compact).
        let names: Vec<Name> = (1..=steps)
            .map(|s| match (odd_name, s) {
                (1, 2) => Name::from(format!("{base}@02")),
                (2, 3) => Name::from(format!("model.layers.4.mlp@{s}")),
                _ => Name::from(format!("{base}@{s}")),
            })
            .collect();
        let side = |shape: &'static [usize], values: ValuesRef<'static>, dtype: &'static str| Side {
            shape,
            values,
            dtype,
        };
        let (o_shape, r_shape): (&'static [usize], &'static [usize]) =
            (Box::leak(o_shape.into_boxed_slice()), Box::leak(r_shape.into_boxed_slice()));
        let ours = side(o_shape, ov, "bfloat16");
        let reference = side(r_shape, rv, "float32");
        let mut got = Vec::new();
        compare_steps(&names, ours, reference, &cfg, &mut |k, row| got.push((k, row)));
        prop_assert_eq!(got.len(), steps);
        // The same steps kept compact ([`Rows`]): every view reads its built row's fields, and
        // the built rows are those above.
        let mut b = RowsBuilder::new(steps);
        b.put_run(&(0..steps).collect::<Vec<_>>(), compare_step_run(StepNames::Given(&names), ours, reference, &cfg));
        let mut rows = b.finish();
        rows.set_local_growths((0..steps).map(|k| (k % 2 == 0).then_some(k as f64 + 0.5)).collect());
        for (k, (_, row)) in got.iter().enumerate() {
            let view = rows.row(k);
            let mut row = row.clone();
            row.local_growth = (k % 2 == 0).then_some(k as f64 + 0.5);
            prop_assert_eq!(&*view.op(), &row);
            views_read_their_row(view, &row)?;
        }
        prop_assert!(!(rows.is_compact() && rows.is_built()));
        // Their text edited in place ([`Rows::edit_text`], as the text renderers escape
        // control characters): nothing built, and each row is its built row edited alike, by
        // an edit that changes a name character by character and leaves `@` and digits.
        let edit = |s: &str| s.replace('.', "\u{1b}.").replace('l', "l\n");
        let mut edited = rows.clone();
        edited.edit_text(
            &|o: &mut OpResult| {
                o.name = Name::from(edit(&o.name));
                o.tensor_mut().dtype_ours = Some(std::borrow::Cow::Owned(edit("b.f16")));
            },
            &|n: &mut Name| *n = Name::from(edit(n)),
        );
        prop_assert!(!(edited.is_compact() && edited.is_built()));
        for (k, (_, row)) in got.iter().enumerate() {
            let mut want = row.clone();
            want.local_growth = (k % 2 == 0).then_some(k as f64 + 0.5);
            want.name = Name::from(edit(&want.name));
            want.tensor_mut().dtype_ours = Some(std::borrow::Cow::Owned(edit("b.f16")));
            prop_assert_eq!(&*edited.row(k).op(), &want);
            views_read_their_row(edited.row(k), &want)?;
        }
        // The same run compared on another thread, each compact step written in place through
        // the builder's sink ([`compare_step_run_into`]), at rows in reverse order after a
        // plain row, and after a run opened and never closed (as when its members cannot be
        // borrowed): the same rows. Names known to be written back, where they are, are
        // taken as such (`StepNames::WrittenBack`, unchecked): the same rows too.
        let name = |k: usize| names[k].clone();
        let step_names = if odd_name == 0 {
            StepNames::WrittenBack { len: names.len(), name: &name }
        } else {
            StepNames::Given(&names)
        };
        let mut b = RowsBuilder::new(steps + 1);
        let _never = b.open_run();
        let r = b.open_run();
        let at: Vec<usize> = (0..steps).map(|k| steps - k).collect();
        let parts = {
            let sink = b.sink();
            let at = &at;
            let cfg = &cfg;
            std::thread::scope(|s| {
                s.spawn(|| {
                    compare_step_run_into(step_names, ours, reference, cfg, &mut |k, sums| {
                        sink.put_step(at[k], r, k, sums)
                    })
                })
                .join()
                .unwrap()
            })
        };
        b.put(0, compare("plain", Some(ours), None, &cfg));
        b.close_run(r, &at, parts);
        let sunk = b.finish();
        prop_assert_eq!(sunk.len(), steps + 1);
        prop_assert_eq!(sunk.row(0).name(), "plain");
        for (k, (_, row)) in got.iter().enumerate() {
            prop_assert_eq!(&*sunk.row(steps - k).op(), row);
            views_read_their_row(sunk.row(steps - k), row)?;
        }
        prop_assert!(!(sunk.is_compact() && sunk.is_built()));
        // The same steps stored apart, a piece of values per step (the per-step layout's
        // arrays, [`compare_step_pieces_into`]): the same rows, compact where the joined
        // steps' are.
        let pieces = |side: &Side<'static>| -> Vec<ValuesRef<'static>> {
            let per: usize = side.shape.iter().product();
            let len = side.values.len();
            (0..steps)
                .map(|k| {
                    let from = (k * per).min(len);
                    side.values.slice(from..(from + per).min(len))
                })
                .collect()
        };
        let (o_pieces, r_pieces) = (pieces(&ours), pieces(&reference));
        let apart = |side: &Side<'static>, values| StepSide {
            shape: side.shape,
            values: StepValues::Apart(values),
            dtype: side.dtype,
        };
        let mut b = RowsBuilder::new(steps);
        let r = b.open_run();
        let at: Vec<usize> = (0..steps).collect();
        let parts = {
            let sink = b.sink();
            compare_step_pieces_into(
                StepNames::Given(&names),
                apart(&ours, &o_pieces),
                apart(&reference, &r_pieces),
                &cfg,
                &mut |k, sums| sink.put_step(at[k], r, k, sums),
            )
        };
        b.close_run(r, &at, parts);
        let split = b.finish();
        prop_assert_eq!(split.len(), steps);
        for (k, (_, row)) in got.iter().enumerate() {
            prop_assert_eq!(&*split.row(k).op(), row);
            prop_assert_eq!(split.row(k).run().is_some(), rows.row(k).run().is_some());
        }
        for (k, row) in got {
            let at = |side: &Side<'static>| {
                let per: usize = side.shape.iter().product();
                let len = side.values.len();
                let from = (k * per).min(len);
                Side { values: side.values.slice(from..(from + per).min(len)), ..*side }
            };
            let alone = compare(&names[k], Some(at(&ours)), Some(at(&reference)), &cfg);
            prop_assert_eq!(
                serde_json::to_string(&row).unwrap(),
                serde_json::to_string(&alone).unwrap()
            );
        }
    }
}

/// Every field a [`Row`] view answers is its built row's, bit for bit.
fn views_read_their_row(view: Row<'_>, op: &OpResult) -> Result<(), TestCaseError> {
    let bits = |x: Option<f64>| x.map(f64::to_bits);
    let name = view.name();
    prop_assert_eq!(&*name, &*op.name);
    prop_assert!(view.is_named(&op.name));
    prop_assert_eq!(view.split(), divergence_names::split_step(&op.name));
    prop_assert_eq!(view.status(), op.status);
    prop_assert_eq!(view.step(), op.step);
    prop_assert_eq!(view.layer(), op.layer);
    prop_assert_eq!(view.tensor(), &*op.tensor);
    prop_assert_eq!(view.pair_class(), op.tensor.pair_class());
    prop_assert_eq!(view.nonfinite(), &*op.nonfinite);
    prop_assert_eq!(view.truth(), &*op.truth);
    prop_assert_eq!(bits(view.local_growth()), bits(op.local_growth));
    prop_assert_eq!(view.mapped(), op.mapped.as_deref());
    prop_assert_eq!(bits(view.rel_l2_err()), bits(op.errors.rel_l2_err));
    prop_assert_eq!(bits(view.max_abs_err()), bits(op.errors.max_abs_err));
    prop_assert_eq!(bits(view.tol_threshold()), bits(op.rule.tol_threshold));
    prop_assert_eq!(bits(view.ref_l2()), bits(op.rule.ref_l2));
    prop_assert_eq!(bits(view.diff_l2()), bits(op.rule.diff_l2));
    prop_assert_eq!(view.rule_tol(), (op.rule.rtol, op.rule.atol));
    prop_assert_eq!(bits(view.frac_outside_tol()), bits(op.frac_outside_tol));
    let reason = view.reason();
    prop_assert_eq!(reason.as_deref(), op.reason.as_deref());
    let (rule, errors) = view.terms();
    prop_assert_eq!(&*rule, &op.rule);
    let mut errors = errors.into_owned();
    prop_assert_eq!(
        view.max_abs_err_index(),
        op.errors.max_abs_err_index.clone()
    );
    errors.max_abs_err_index = view.max_abs_err_index();
    prop_assert_eq!(&errors, &op.errors);
    Ok(())
}

/// A row written twice through the sink panics, as a second `put` of it does.
#[test]
#[should_panic(expected = "row 1 written twice")]
fn a_row_written_twice_through_the_sink_panics() {
    let (names, side) = two_steps(false);
    let mut b = RowsBuilder::new(2);
    let r = b.open_run();
    let sink = b.sink();
    compare_step_run_into(
        StepNames::Given(&names),
        side,
        side,
        &DiffConfig::default(),
        &mut |k, s| sink.put_step(1, r, k, s),
    );
}

/// Two steps of `x`, equal on both sides: kept compact, or each a row (a NaN in each).
fn two_steps(nan: bool) -> (Vec<Name>, Side<'static>) {
    let v: &'static [f32] = if nan {
        &[f32::NAN, f32::NAN]
    } else {
        &[1.0, 2.0]
    };
    let names = vec![Name::from("x@1"), Name::from("x@2")];
    let side = Side {
        shape: &[1],
        values: ValuesRef::F32(v),
        dtype: "float32",
    };
    (names, side)
}

/// A closed run takes no more steps, even from a sink made after it was closed.
#[test]
#[should_panic(expected = "run 0 is not open")]
fn a_closed_run_takes_no_more_steps() {
    let (names, side) = two_steps(false);
    let mut b = RowsBuilder::new(4);
    let r = b.open_run();
    let mut kept = None;
    let parts = {
        let sink = b.sink();
        compare_step_run_into(
            StepNames::Given(&names),
            side,
            side,
            &DiffConfig::default(),
            &mut |k, s| {
                kept = Some(s);
                sink.put_step(k, r, k, s)
            },
        )
    };
    b.close_run(r, &[0, 1], parts);
    b.sink().put_step(2, r, 0, kept.expect("a compact step"));
}

/// A run closes once, also when it closed without a run (every step a row).
#[test]
#[should_panic(expected = "run 0 is not open")]
fn a_run_closes_once() {
    let (names, side) = two_steps(true);
    let mut b = RowsBuilder::new(4);
    let r = b.open_run();
    let close = |b: &mut RowsBuilder, at: &[usize]| {
        let parts = compare_step_run_into(
            StepNames::Given(&names),
            side,
            side,
            &DiffConfig::default(),
            &mut |_, _| unreachable!("a step with a NaN is a row"),
        );
        b.close_run(r, at, parts);
    };
    close(&mut b, &[0, 1]);
    close(&mut b, &[2, 3]);
}

/// A decode-like report's rows: probes of q/k projections and norms (and fillers between
/// them) over steps `0..=steps`, step by step, each step's probes in an order of their own
/// when `shuffle` is set (then a probe's steps are not evenly apart); some (probe, step)
/// missing, some steps with a NaN (a row stored whole within its run), each probe's
/// consecutive steps a run of one call or rows of their own (a run may start at step 0, the
/// base's own name). Built with [`RowsBuilder`], as the CLI builds them.
fn decode_like(seed: u64, steps: usize, layers: usize, fillers: usize, shuffle: bool) -> Rows {
    let mut next = xorshift(seed);
    let mut coin = move |p: f32| (next() + 4.0) / 8.0 < p;
    let mut probes = Vec::new();
    for l in 0..layers {
        for op in ["q_proj", "k_proj"] {
            probes.push(format!("model.layers.{l}.self_attn.{op}"));
        }
        for j in 0..fillers {
            probes.push(format!("model.layers.{l}.self_attn.f{j}"));
        }
        for op in ["q_norm", "k_norm"] {
            probes.push(format!("model.layers.{l}.self_attn.{op}"));
        }
        probes.push(format!("model.layers.{l}.mlp"));
    }
    probes.push("lm_head".to_string());
    // Which (probe, step) is held, and the order of each step's probes.
    let held: Vec<Vec<bool>> = probes
        .iter()
        .map(|_| (0..=steps).map(|_| !coin(0.1)).collect())
        .collect();
    let mut at = vec![vec![usize::MAX; steps + 1]; probes.len()];
    let mut row = 0;
    let mut rng = xorshift(seed ^ 0x9e37);
    for s in 0..=steps {
        let mut order: Vec<usize> = (0..probes.len()).collect();
        if shuffle {
            for i in (1..order.len()).rev() {
                let j = ((rng() + 4.0) / 8.0 * (i + 1) as f32) as usize;
                order.swap(i, j.min(i));
            }
        }
        for p in order {
            if held[p][s] {
                at[p][s] = row;
                row += 1;
            }
        }
    }
    let cfg = DiffConfig::default();
    let n = 4;
    let shape = [n];
    let mut b = RowsBuilder::new(row);
    let mut vals = xorshift(seed ^ 0x5555);
    for (p, name) in probes.iter().enumerate() {
        // Consecutive held steps.
        let mut s = 0;
        while s <= steps {
            if !held[p][s] {
                s += 1;
                continue;
            }
            let from = s;
            while s <= steps && held[p][s] {
                s += 1;
            }
            let segment: Vec<usize> = (from..s).collect();
            let mut r = Vec::new();
            let mut o = Vec::new();
            for _ in &segment {
                let eps = [0.0, 1e-7, 1e-4, 1e-1][((vals() + 4.0) / 2.0) as usize % 4];
                for _ in 0..n {
                    let v = vals();
                    r.push(v);
                    o.push(v + eps * vals());
                }
                if coin(0.1) {
                    let k = o.len() - 1;
                    o[k] = f32::NAN;
                }
            }
            let names: Vec<Name> = segment
                .iter()
                .map(|&s| Name::from(divergence_names_step(name, s)))
                .collect();
            let rows_at: Vec<usize> = segment.iter().map(|&s| at[p][s]).collect();
            let side = |v: &[f32]| Side {
                shape: &shape,
                values: ValuesRef::F32(leak_f32(v)),
                dtype: "float32",
            };
            if coin(0.7) {
                b.put_run(
                    &rows_at,
                    compare_step_run(StepNames::Given(&names), side(&o), side(&r), &cfg),
                );
            } else {
                for (k, name) in names.iter().enumerate() {
                    let (o, r) = (&o[k * n..(k + 1) * n], &r[k * n..(k + 1) * n]);
                    b.put(
                        rows_at[k],
                        compare(name, Some(side(o)), Some(side(r)), &cfg),
                    );
                }
            }
        }
    }
    b.finish()
}

/// `base@s`, or `base` for step 0.
fn divergence_names_step(base: &str, s: usize) -> String {
    if s == 0 {
        base.to_string()
    } else {
        format!("{base}@{s}")
    }
}

fn leak_f32(v: &[f32]) -> &'static [f32] {
    Box::leak(v.to_vec().into_boxed_slice())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `assemble`'s passes that work a run of decode steps at once (the amplification
    /// section, ...) make the report they make of the same rows built: runs at strides and
    /// not, projections near and far from their norms (fillers between), steps missing, steps
    /// stored whole within their runs, runs from step 0, probes whose steps are rows.
    #[test]
    fn passes_over_runs_read_as_over_built_rows(
        seed in any::<u64>(),
        steps in 1usize..7,
        layers in 1usize..3,
        fillers in prop::sample::select(vec![0usize, 1, 20]),
        shuffle in any::<bool>(),
    ) {
        let cfg = DiffConfig::default();
        let ctx = || ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
        let rows = decode_like(seed, steps, layers, fillers, shuffle);
        let built = Rows::from(rows.clone().into_vec());
        // Cases where no step was kept in a run (the generator put each one whole: the rows
        // are a plain vector, built from the start, and would be compared with themselves)
        // test nothing: discarded (seed 1688637589555059306 with one step and one layer made
        // one, and failed the check below until 2026-12-04).
        prop_assume!(rows.is_compact());
        prop_assert!(!rows.is_built());
        let compact = assemble(rows, ctx(), &cfg);
        let plain = assemble(built, ctx(), &cfg);
        prop_assert_eq!(&compact.amplification, &plain.amplification);
        prop_assert_eq!(compact, plain);
    }
}
