//! A decode step's attention recomputed in float64 from one side's own dumped query, keys and
//! values: whether an `attn_out@s` that diverges computes otherwise than attention does (the
//! keys it reads, its mask, its scale, its softmax's precision), or computes as the reference
//! does and carries its inputs' error (a session-58 reading of a clean f32 decode flagged by
//! `--truth` under k_norm x100: both sides' outputs within 1e-6 of their own recompute, the
//! error its inputs', through logits of ~350; docs/tolerances.md).
//!
//! Pure: the caller reads the tensors. Eager attention as transformers computes it for Qwen3:
//! scores `q·k / sqrt(head_dim)`, a softmax over every key the step sees (the prefill's `T`
//! and the `s` cache entries; no mask), GQA by repeat-interleave (q head `h` reads kv head
//! `h / (heads / kv_heads)`).
//!
//! The prefill's attention the same way, with its causal mask and without it
//! ([`prefill_recompute`]): whether an `attn_out` of the prefill that diverges is its own
//! query, keys and values attended with no mask (every position seeing the later ones: the
//! `causal_mask` hint, [`mask_hint`]).

use crate::compare::Side;
use crate::hints::{rel_err, Hint, HintCode};

/// One side's tensors of a decode step `s` of one layer.
#[derive(Debug, Clone)]
pub struct AttentionSide<'a> {
    /// `rope_q@s`: `[.., heads, 1, head_dim]`.
    pub q: Side<'a>,
    /// The prefill's `rope_k`: `[.., kv_heads, T, head_dim]`.
    pub prefill_k: Side<'a>,
    /// The prefill's `v_proj`: `[.., T, kv_heads * head_dim]`.
    pub prefill_v: Side<'a>,
    /// `cache_k@1` .. `cache_k@s`: `[.., kv_heads, 1, head_dim]` each.
    pub cache_k: Vec<Side<'a>>,
    /// `cache_v@1` .. `cache_v@s`, as `cache_k`.
    pub cache_v: Vec<Side<'a>>,
    /// `attn_out@s`: `heads * head_dim` values.
    pub out: Side<'a>,
}

/// What [`recompute`] found on one side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recomputed {
    /// `||out - exact|| / ||exact||`.
    pub rel_err: f64,
    /// The smallest over heads of the largest softmax weight (1: one key takes it all); the
    /// hint's `top_weight` is ours'.
    pub top_weight: f64,
}

/// `(heads, kv_heads, head_dim, prompt length)` from the shapes, or `None` where they do not
/// fit one attention.
fn dims(s: &AttentionSide<'_>) -> Option<(usize, usize, usize, usize)> {
    let tail = |shape: &[usize], n: usize| -> Option<Vec<usize>> {
        (shape.len() >= n).then(|| shape[shape.len() - n..].to_vec())
    };
    let q = tail(s.q.shape, 3)?;
    let (heads, d) = (q[0], q[2]);
    let k = tail(s.prefill_k.shape, 3)?;
    let (kv, t) = (k[0], k[1]);
    let v = tail(s.prefill_v.shape, 2)?;
    let fits = |x: &Side<'_>, n: usize| x.values.len() == n;
    // Every tensor of the side, widened to f64, within what one hint widens (a prefill of a
    // million tokens' keys would be gigabytes).
    let total = [&s.q, &s.prefill_k, &s.prefill_v, &s.out]
        .into_iter()
        .chain(&s.cache_k)
        .chain(&s.cache_v)
        .map(|x| x.values.len())
        .sum::<usize>();
    let ok = total <= crate::hints::MAX_ELEMENTS
        && q[1] == 1
        && d > 0
        && heads > 0
        && kv > 0
        && heads % kv == 0
        && k[2] == d
        && v == [t, kv * d]
        && s.cache_k.len() == s.cache_v.len()
        && fits(&s.q, heads * d)
        && fits(&s.prefill_k, kv * t * d)
        && fits(&s.prefill_v, t * kv * d)
        && fits(&s.out, heads * d)
        && s.cache_k.iter().chain(&s.cache_v).all(|c| fits(c, kv * d));
    ok.then_some((heads, kv, d, t))
}

/// The side's `attn_out@s` against the attention (float64) of its own q, keys and values;
/// `None` where the shapes do not fit, a value is not finite, or the exact output is zero.
pub fn recompute(s: &AttentionSide<'_>) -> Option<Recomputed> {
    let (heads, kv, d, t) = dims(s)?;
    let q = s.q.values.to_f64_vec();
    let pk = s.prefill_k.values.to_f64_vec();
    let pv = s.prefill_v.values.to_f64_vec();
    let ck: Vec<Vec<f64>> = s.cache_k.iter().map(|c| c.values.to_f64_vec()).collect();
    let cv: Vec<Vec<f64>> = s.cache_v.iter().map(|c| c.values.to_f64_vec()).collect();
    let out = s.out.values.to_f64_vec();
    if [&q, &pk, &pv, &out]
        .into_iter()
        .chain(&ck)
        .chain(&cv)
        .any(|v| v.iter().any(|x| !x.is_finite()))
    {
        return None;
    }
    let n = t + ck.len();
    // key n of kv head g: the prefill's `[kv, T, D]`, then the cache's `[kv, 1, D]` per step
    let key = |g: usize, i: usize| -> &[f64] {
        if i < t {
            &pk[(g * t + i) * d..(g * t + i + 1) * d]
        } else {
            &ck[i - t][g * d..(g + 1) * d]
        }
    };
    // value n of kv head g: the prefill's `[T, kv * D]`, then the cache's
    let value = |g: usize, i: usize| -> &[f64] {
        if i < t {
            &pv[(i * kv + g) * d..(i * kv + g + 1) * d]
        } else {
            &cv[i - t][g * d..(g + 1) * d]
        }
    };
    let scale = (d as f64).powf(-0.5);
    let mut exact = vec![0.0; heads * d];
    let mut top_weight = 1.0f64;
    let mut scores = vec![0.0; n];
    for h in 0..heads {
        let g = h / (heads / kv);
        let qh = &q[h * d..(h + 1) * d];
        for (i, sc) in scores.iter_mut().enumerate() {
            *sc = qh.iter().zip(key(g, i)).map(|(a, b)| a * b).sum::<f64>() * scale;
        }
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        let mut top = 0.0f64;
        for (i, w) in weights.iter().enumerate() {
            let w = w / sum;
            top = top.max(w);
            for (e, v) in exact[h * d..(h + 1) * d].iter_mut().zip(value(g, i)) {
                *e += w * v;
            }
        }
        top_weight = top_weight.min(top);
    }
    Some(Recomputed {
        rel_err: rel_err(&out, &exact)?,
        top_weight,
    })
}

/// What an attention kernel's own rounding may leave in its output, by the coarser dtype of
/// its sides: in float32 the F32 truth floor (1e-5: a clean f32 decode under k_norm x100 was up
/// to 5.4e-6 from its own recompute at its layer 5, in the session-58 raw results of
/// `REVIEW47`'s `m8`, and 8.2e-6 at another layer by a review's count), in a half type its unit
/// roundoff; the reading "does not compute" also needs ours 4 times further than the reference
/// from its own (transformers' own bf16 decode of the tiny fixture is up to 1.1e-2 from its
/// recompute, tests/decode.rs; a review counted up to 5.6e-2 on two held-out models).
fn kernel_noise(dtypes: &[&str]) -> f64 {
    dtypes
        .iter()
        .map(|d| match *d {
            "bfloat16" => 2f64.powi(-8),
            "float16" => 2f64.powi(-11),
            _ => crate::tolerance::F32_TRUTH_FLOOR,
        })
        .fold(0.0, f64::max)
}

/// The `attention_kernel` hint of a decode step's `attn_out` (`op`), from both sides
/// recomputed ([`recompute`]), where one of two readings holds:
/// - ours is more than 4 times further from its own recompute than the reference from its
///   own, and than the kernels' noise (`kernel_noise`): the attention does not compute from
///   the tensors its dump holds (it reads other keys or values, or applies another mask,
///   scale or softmax precision);
/// - ours is within twice the larger of the reference's distance and that noise of its own
///   recompute, and both distances are under a tenth of ours' difference from the reference
///   (a reference far from its own recompute, a sliding window this recompute does not
///   model, reads neither way): the op computes as the reference's does, and the error comes
///   with its inputs.
///
/// Anything between says nothing; so does a side whose tensors do not fit one attention.
pub fn kernel_hint(
    op: &str,
    ours: &AttentionSide<'_>,
    reference: &AttentionSide<'_>,
) -> Option<Hint> {
    let (o, r) = (recompute(ours)?, recompute(reference)?);
    let noise = kernel_noise(&[ours.out.dtype, reference.out.dtype]);
    // (None for outputs of other lengths, or a reference output of zero)
    let apart = rel_err(
        &ours.out.values.to_f64_vec(),
        &reference.out.values.to_f64_vec(),
    )?;
    let evidence = [
        ("ours_from_own_recompute", o.rel_err),
        ("ref_from_own_recompute", r.rel_err),
        ("ours_from_ref", apart),
        ("top_weight", o.top_weight),
    ];
    let e = |x: f64| format!("{x:.1e}");
    if o.rel_err > 4.0 * r.rel_err.max(noise) {
        return Some(crate::hints::hint(
            HintCode::AttentionKernel,
            op,
            format!(
                "ours' attention output is {} from the attention (float64) of the query, keys \
                 and values its dump holds, the reference's {} from its own: the attention does \
                 not compute from those (it reads other keys or values: a cache slot not \
                 written yet, a cache kept in another precision; or another mask, scale or \
                 softmax precision)",
                e(o.rel_err),
                e(r.rel_err)
            ),
            &evidence,
        ));
    }
    // (Both sides near their own recompute, by a tenth of their difference: a reference far
    // from its own, a window or mask this recompute does not model, says nothing.)
    if o.rel_err <= 2.0 * r.rel_err.max(noise) && o.rel_err.max(r.rel_err) * 10.0 < apart {
        return Some(crate::hints::hint(
            HintCode::AttentionKernel,
            op,
            format!(
                "ours' attention output is the attention (float64) of the query, keys and \
                 values its dump holds within {} (the reference's within {} of its own), {} \
                 from the reference's: the attention computes as the reference's does, and the \
                 error comes with those inputs (its query, the cached keys and values)",
                e(o.rel_err),
                e(r.rel_err),
                e(apart)
            ),
            &evidence,
        ));
    }
    None
}

/// One side's tensors of the prefill's attention of one layer.
#[derive(Debug, Clone)]
pub struct PrefillSide<'a> {
    /// `rope_q`: `[.., heads, T, head_dim]`.
    pub q: Side<'a>,
    /// `rope_k`: `[.., kv_heads, T, head_dim]`.
    pub k: Side<'a>,
    /// `v_proj`: `[.., T, kv_heads * head_dim]`.
    pub v: Side<'a>,
    /// `attn_out`: `[.., T, heads * head_dim]`.
    pub out: Side<'a>,
}

/// Most work [`prefill_recompute`] does for one side, counted `heads * T^2 * (head_dim + 16)`
/// (the scores' products once, then each of the two softmaxes' exponentials and weighted sums
/// of the values, counted as 16 more a score: a check's head_dim-4 prefill of 16,384 tokens
/// took 7.9 s when only `head_dim` was counted): 2^30, about a second; a 0.6B-shaped prefill
/// of 64 tokens counts 2^26, one of 1,024 tokens 2^34 (no hint).
pub const PREFILL_MAX_WORK: u64 = 1 << 30;

/// `(heads, kv_heads, head_dim, T)` of a prefill side, or `None` where its shapes do not fit
/// one attention, it is larger than [`crate::hints::MAX_ELEMENTS`] values in all or than
/// [`PREFILL_MAX_WORK`], or it holds one position (a mask masks nothing there).
fn prefill_dims(s: &PrefillSide<'_>) -> Option<(usize, usize, usize, usize)> {
    let tail = |shape: &[usize], n: usize| -> Option<Vec<usize>> {
        (shape.len() >= n).then(|| shape[shape.len() - n..].to_vec())
    };
    let q = tail(s.q.shape, 3)?;
    let (heads, t, d) = (q[0], q[1], q[2]);
    let k = tail(s.k.shape, 3)?;
    let kv = k[0];
    let total = [&s.q, &s.k, &s.v, &s.out]
        .iter()
        .map(|x| x.values.len())
        .sum::<usize>();
    let work = (heads as u64)
        .checked_mul(t as u64)?
        .checked_mul(t as u64)?
        .checked_mul(d as u64 + 16)?;
    let ok = total <= crate::hints::MAX_ELEMENTS
        && work <= PREFILL_MAX_WORK
        && t >= 2
        && d > 0
        && kv > 0
        && heads % kv == 0
        && k[1..] == [t, d]
        && tail(s.v.shape, 2)? == [t, kv * d]
        && tail(s.out.shape, 2)? == [t, heads * d]
        && s.q.values.len() == heads * t * d
        && s.k.values.len() == kv * t * d
        && s.v.values.len() == t * kv * d
        && s.out.values.len() == t * heads * d;
    ok.then_some((heads, kv, d, t))
}

/// The side's `attn_out` against the attention (float64) of its own query, keys and values,
/// `(with the causal mask, without a mask)` (rel L2 each); `None` where the shapes do not fit
/// (`prefill_dims`: at least two positions, within the bounds), a value is not finite, or an
/// exact output is zero.
pub fn prefill_recompute(s: &PrefillSide<'_>) -> Option<(f64, f64)> {
    let (heads, kv, d, t) = prefill_dims(s)?;
    let q = s.q.values.to_f64_vec();
    let k = s.k.values.to_f64_vec();
    let v = s.v.values.to_f64_vec();
    let out = s.out.values.to_f64_vec();
    if [&q, &k, &v, &out]
        .into_iter()
        .any(|x| x.iter().any(|y| !y.is_finite()))
    {
        return None;
    }
    let scale = (d as f64).powf(-0.5);
    // `out` is `[T, heads * D]`; each of the two exact outputs the same.
    let mut causal = vec![0.0; t * heads * d];
    let mut open = vec![0.0; t * heads * d];
    let mut scores = vec![0.0; t];
    let mut weights = vec![0.0; t];
    for h in 0..heads {
        let g = h / (heads / kv);
        for i in 0..t {
            let qi = &q[(h * t + i) * d..(h * t + i + 1) * d];
            for (j, sc) in scores.iter_mut().enumerate() {
                let kj = &k[(g * t + j) * d..(g * t + j + 1) * d];
                *sc = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale;
            }
            for (exact, seen) in [(&mut causal, i + 1), (&mut open, t)] {
                let max = scores[..seen]
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max);
                for (w, x) in weights.iter_mut().zip(&scores[..seen]) {
                    *w = (x - max).exp();
                }
                let sum: f64 = weights[..seen].iter().sum();
                let row = &mut exact[(i * heads + h) * d..(i * heads + h + 1) * d];
                for (j, w) in weights[..seen].iter().enumerate() {
                    let vj = &v[(j * kv + g) * d..(j * kv + g + 1) * d];
                    for (e, x) in row.iter_mut().zip(vj) {
                        *e += w / sum * x;
                    }
                }
            }
        }
    }
    Some((rel_err(&out, &causal)?, rel_err(&out, &open)?))
}

/// The `causal_mask` hint of a prefill's `attn_out` (`op`): ours is the attention of its own
/// query, keys and values without the causal mask (within twice the larger of the
/// reference's distance from its own causal recompute and the kernels' noise, `kernel_noise`,
/// or within 4 times that noise: a check's bf16 port of 100 tokens was 9.4e-3 from its own
/// unmasked recompute, its clean run 6.7e-3 from its causal one, where the reference was
/// 1.8e-3), and 10 times further from its own with the mask; the reference near its causal
/// recompute (within twice that noise or its own distance, and 10 times nearer than to its
/// unmasked one). Every position sees the later ones: the mask is missing. Anything else
/// says nothing.
pub fn mask_hint(op: &str, ours: &PrefillSide<'_>, reference: &PrefillSide<'_>) -> Option<Hint> {
    let ((o_causal, o_open), (r_causal, r_open)) =
        (prefill_recompute(ours)?, prefill_recompute(reference)?);
    let noise = kernel_noise(&[ours.out.dtype, reference.out.dtype]);
    let near = 2.0 * r_causal.max(noise);
    let ours_near = near.max(4.0 * noise);
    if !(o_open <= ours_near
        && o_causal > 10.0 * o_open
        && r_causal <= near
        && r_open > 10.0 * r_causal)
    {
        return None;
    }
    let e = |x: f64| format!("{x:.1e}");
    Some(crate::hints::hint(
        HintCode::CausalMask,
        op,
        format!(
            "ours' attention output is the attention (float64) of the query, keys and values its \
             dump holds without a mask within {} ({} with the causal mask; the reference's {} \
             of its own with it): every position attends to the later ones too: the prefill's \
             causal mask is missing, or not applied",
            e(o_open),
            e(o_causal),
            e(r_causal)
        ),
        &[
            ("ours_from_unmasked_recompute", o_open),
            ("ours_from_causal_recompute", o_causal),
            ("ref_from_causal_recompute", r_causal),
            ("ref_from_unmasked_recompute", r_open),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ValuesRef;

    // 4 q heads on 2 kv heads of 8, a 3-token prompt and 2 cache steps.
    const H: usize = 4;
    const KV: usize = 2;
    const D: usize = 8;
    const T: usize = 3;
    const S: usize = 2;

    /// The hints' tests' deterministic values in [-2, 2), scaled to [-amp / 2, amp / 2).
    fn data(n: usize, seed: u64, amp: f64) -> Vec<f64> {
        crate::hints::tests::data(n, seed)
            .into_iter()
            .map(|x| x * amp / 4.0)
            .collect()
    }

    /// One side's tensors, owned: q, the prefill's k `[KV, T, D]` and v `[T, KV * D]`, the
    /// cache's steps `[KV, D]` each, and the output (`None`: the exact attention of them).
    struct Owned {
        q: Vec<f64>,
        pk: Vec<f64>,
        pv: Vec<f64>,
        ck: Vec<Vec<f64>>,
        cv: Vec<Vec<f64>>,
        out: Vec<f64>,
    }

    const SHAPES: [&[usize]; 5] = [
        &[1, H, 1, D],
        &[1, KV, T, D],
        &[1, T, KV * D],
        &[1, KV, 1, D],
        &[1, 1, H * D],
    ];

    fn owned(seed: u64) -> Owned {
        let mut o = Owned {
            q: data(H * D, seed, 4.0),
            pk: data(KV * T * D, seed + 1, 4.0),
            pv: data(T * KV * D, seed + 2, 2.0),
            ck: (0..S)
                .map(|t| data(KV * D, seed + 10 + t as u64, 4.0))
                .collect(),
            cv: (0..S)
                .map(|t| data(KV * D, seed + 20 + t as u64, 2.0))
                .collect(),
            out: Vec::new(),
        };
        o.out = exact(&o);
        o
    }

    fn side<'a>(o: &'a Owned, dtype: &'a str) -> AttentionSide<'a> {
        let s = |shape: &'a [usize], v: &'a [f64]| Side {
            shape,
            values: ValuesRef::F64(v),
            dtype,
        };
        AttentionSide {
            q: s(SHAPES[0], &o.q),
            prefill_k: s(SHAPES[1], &o.pk),
            prefill_v: s(SHAPES[2], &o.pv),
            cache_k: o.ck.iter().map(|c| s(SHAPES[3], c)).collect(),
            cache_v: o.cv.iter().map(|c| s(SHAPES[3], c)).collect(),
            out: s(SHAPES[4], &o.out),
        }
    }

    /// The attention by its definition, written out apart from `recompute`: every (head, key)
    /// score, a softmax, the weighted values.
    fn exact(o: &Owned) -> Vec<f64> {
        let mut out = vec![0.0; H * D];
        for h in 0..H {
            let g = h / (H / KV);
            let mut keys: Vec<(Vec<f64>, Vec<f64>)> = (0..T)
                .map(|t| {
                    let k = o.pk[(g * T + t) * D..(g * T + t + 1) * D].to_vec();
                    let v = o.pv[t * KV * D + g * D..t * KV * D + (g + 1) * D].to_vec();
                    (k, v)
                })
                .collect();
            for t in 0..o.ck.len() {
                keys.push((
                    o.ck[t][g * D..(g + 1) * D].to_vec(),
                    o.cv[t][g * D..(g + 1) * D].to_vec(),
                ));
            }
            let q = &o.q[h * D..(h + 1) * D];
            let s: Vec<f64> = keys
                .iter()
                .map(|(k, _)| q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (D as f64).sqrt())
                .collect();
            let z: f64 = s.iter().map(|x| x.exp()).sum();
            for ((_, v), x) in keys.iter().zip(&s) {
                for (e, vi) in out[h * D..(h + 1) * D].iter_mut().zip(v) {
                    *e += x.exp() / z * vi;
                }
            }
        }
        out
    }

    #[test]
    fn the_exact_attention_is_its_own_recompute() {
        let o = owned(1);
        let r = recompute(&side(&o, "float32")).unwrap();
        assert!(r.rel_err < 1e-14, "{r:?}");
        assert!(r.top_weight > 0.0 && r.top_weight <= 1.0);
        // a zero key the kernel also read (a slot not written yet): off by its share
        let mut masked = owned(1);
        masked.ck.push(vec![0.0; KV * D]);
        masked.cv.push(vec![0.0; KV * D]);
        let with_zero = exact(&masked);
        let mut o2 = owned(1);
        o2.out = with_zero;
        let r = recompute(&side(&o2, "float32")).unwrap();
        assert!(r.rel_err > 1e-3, "{r:?}");
    }

    #[test]
    fn shapes_that_do_not_fit_one_attention_and_non_finite_values_say_nothing() {
        let o = owned(2);
        let mut s = side(&o, "float32");
        s.cache_v.pop();
        assert_eq!(recompute(&s), None);
        let mut s = side(&o, "float32");
        s.q.shape = &[1, H, 2, D / 2];
        assert_eq!(recompute(&s), None);
        let mut bad = owned(2);
        bad.q[3] = f64::NAN;
        assert_eq!(recompute(&side(&bad, "float32")), None);
    }

    #[test]
    fn the_hint_tells_a_kernel_from_its_inputs() {
        let reference = owned(3);
        // ours: the reference's inputs but for q, off by 1e-3; each output exact of its own
        let mut ours = owned(3);
        for (i, x) in ours.q.iter_mut().enumerate() {
            *x += 1e-3 * if i % 2 == 0 { 1.0 } else { -1.0 };
        }
        ours.out = exact(&ours);
        let h = kernel_hint(
            "l.attn_out@2",
            &side(&ours, "float32"),
            &side(&reference, "float32"),
        )
        .unwrap();
        assert_eq!(h.code, HintCode::AttentionKernel);
        assert!(
            h.message.contains("computes as the reference's does"),
            "{}",
            h.message
        );
        // ours read a zero key besides: the attention does not compute from its dump's tensors
        let mut zero = owned(3);
        zero.ck.push(vec![0.0; KV * D]);
        zero.cv.push(vec![0.0; KV * D]);
        let mut ours = owned(3);
        ours.out = exact(&zero);
        let h = kernel_hint(
            "l.attn_out@2",
            &side(&ours, "float32"),
            &side(&reference, "float32"),
        )
        .unwrap();
        assert!(
            h.message.contains("does not compute from those"),
            "{}",
            h.message
        );
        assert!(h.evidence["ours_from_own_recompute"] > 4.0 * 1e-5);
        // a reference far from its own recompute (a sliding window this recompute does not
        // model): ours exact of its own says nothing either way
        let mut windowed = owned(3);
        let mut last = owned(3);
        last.pk = vec![0.0; KV * T * D];
        last.pv = vec![0.0; T * KV * D];
        windowed.out = exact(&last);
        assert_eq!(
            kernel_hint(
                "l.attn_out@2",
                &side(&owned(3), "float32"),
                &side(&windowed, "float32")
            ),
            None
        );
        // in bf16 a kernel off by less than 4 unit roundoffs of its recompute is not called
        // another computation; nor is one whose own error is most of the difference the inputs
        let mut ours = owned(3);
        for (x, n) in ours.out.iter_mut().zip(data(H * D, 9, 1.0)) {
            *x *= 1.0 + 1e-2 * n;
        }
        assert_eq!(
            kernel_hint(
                "l.attn_out@2",
                &side(&ours, "bfloat16"),
                &side(&reference, "bfloat16")
            ),
            None
        );
    }

    /// Prefill attention of `[H, T, D]` q, `[KV, T, D]` k and `[T, KV * D]` v, written
    /// position by position as `[T, H * D]` (each head's softmax over keys `0..seen(i)`), for
    /// the `causal_mask` tests: a second implementation, not `prefill_recompute`'s loops.
    fn naive_prefill(
        (q, k, v): (&[f64], &[f64], &[f64]),
        (h, kv, t, d): (usize, usize, usize, usize),
        seen: impl Fn(usize) -> usize,
    ) -> Vec<f64> {
        let mut out = Vec::with_capacity(t * h * d);
        for i in 0..t {
            for head in 0..h {
                let g = head * kv / h;
                let dot = |j: usize| -> f64 {
                    (0..d)
                        .map(|x| q[(head * t + i) * d + x] * k[(g * t + j) * d + x])
                        .sum::<f64>()
                        / (d as f64).sqrt()
                };
                let e: Vec<f64> = (0..seen(i)).map(|j| dot(j).exp()).collect();
                let z: f64 = e.iter().sum();
                out.extend((0..d).map(|x| {
                    (0..seen(i))
                        .map(|j| e[j] / z * v[(j * kv + g) * d + x])
                        .sum::<f64>()
                }));
            }
        }
        out
    }

    #[test]
    fn a_prefill_attended_without_its_mask_is_a_missing_causal_mask() {
        let (h, kv, t, d) = (4, 2, 5, 8);
        let q = data(h * t * d, 41, 3.0);
        let k = data(kv * t * d, 42, 3.0);
        let v = data(t * kv * d, 43, 2.0);
        let causal = naive_prefill((&q, &k, &v), (h, kv, t, d), |i| i + 1);
        let open = naive_prefill((&q, &k, &v), (h, kv, t, d), |_| t);
        let shapes: [&[usize]; 4] = [
            &[1, h, t, d],
            &[1, kv, t, d],
            &[1, t, kv * d],
            &[1, t, h * d],
        ];
        let side = |out: &'static [f64], dtype: &'static str| {
            let leak = |x: &Vec<f64>| -> &'static [f64] { Box::leak(x.clone().into_boxed_slice()) };
            let sd = |i: usize, x: &'static [f64]| Side {
                shape: Box::leak(shapes[i].to_vec().into_boxed_slice()),
                values: ValuesRef::F64(x),
                dtype,
            };
            PrefillSide {
                q: sd(0, leak(&q)),
                k: sd(1, leak(&k)),
                v: sd(2, leak(&v)),
                out: sd(3, out),
            }
        };
        let leak = |x: Vec<f64>| -> &'static [f64] { Box::leak(x.into_boxed_slice()) };
        let (causal, open) = (leak(causal), leak(open));
        let (o_causal, o_open) = prefill_recompute(&side(open, "float32")).expect("fits");
        assert!(o_open < 1e-12 && o_causal > 0.1, "{o_open} {o_causal}");
        let h = mask_hint(
            "model.layers.0.self_attn.attn_out",
            &side(open, "float32"),
            &side(causal, "float32"),
        )
        .expect("the mask missing");
        assert_eq!(h.code, HintCode::CausalMask);
        assert!(
            h.message
                .ends_with("the prefill's causal mask is missing, or not applied"),
            "{}",
            h.message
        );
        // both masked, or the reference unmasked too (then it is no reference of Qwen3's
        // attention here): nothing
        for (o, r) in [(causal, causal), (open, open), (causal, open)] {
            assert!(mask_hint("x", &side(o, "float32"), &side(r, "float32")).is_none());
        }
        // ours' bf16 noise larger than the reference's (a check's 100-token port: 9.4e-3 from
        // its unmasked recompute, the reference 1.8e-3 from its causal one): still read
        let loud = leak(
            open.iter()
                .zip(data(open.len(), 45, 4.0))
                .map(|(x, e)| x + 8e-3 * e * x.abs())
                .collect(),
        );
        let (_, loud_open) = prefill_recompute(&side(loud, "bfloat16")).expect("fits");
        assert!(loud_open > 7.9e-3 && loud_open < 1.5e-2, "{loud_open}");
        assert!(mask_hint("x", &side(loud, "bfloat16"), &side(causal, "bfloat16")).is_some());
        // with bf16 noise on ours' output, still read
        let noisy = leak(
            open.iter()
                .zip(data(open.len(), 44, 1.0))
                .map(|(x, e)| x + 2e-3 * e * x.abs())
                .collect(),
        );
        assert!(mask_hint("x", &side(noisy, "bfloat16"), &side(causal, "bfloat16")).is_some());
        // one position: no mask to miss
        let one = PrefillSide {
            q: Side {
                shape: &[1, 4, 1, 8],
                values: ValuesRef::F64(&q[..32]),
                dtype: "float32",
            },
            k: Side {
                shape: &[1, 2, 1, 8],
                values: ValuesRef::F64(&k[..16]),
                dtype: "float32",
            },
            v: Side {
                shape: &[1, 1, 16],
                values: ValuesRef::F64(&v[..16]),
                dtype: "float32",
            },
            out: Side {
                shape: &[1, 1, 32],
                values: ValuesRef::F64(&causal[..32]),
                dtype: "float32",
            },
        };
        assert_eq!(prefill_recompute(&one), None);
    }
}
