//! Layout mismatch diagnosis: a `shape_mismatch` whose element counts agree is tried against the
//! common layout changes (a reshape, a transpose, heads-first vs tokens-first, heads interleaved
//! with head_dim: every way of reading ours' values in the reference's dimensions, in another axis
//! order). When one makes the values agree under the row's own tolerance rule, the row says so
//! and names the `--map` transform that does it (docs/mapping.md). Pure; the CLI hands it the
//! two tensors of such a row.

use serde::{Deserialize, Serialize};

use crate::compare::Side;

/// Ours' values agree with the reference's once re-laid out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutMatch {
    /// Read ours' values in this shape (C order)...
    pub reshape: Vec<usize>,
    /// ...then permute the axes: output axis `i` is axis `permute[i]`; the result has the
    /// reference's shape (size-1 axes aside).
    pub permute: Vec<usize>,
    /// `‖ours' − ref‖₂ / ‖ref‖₂` after the change.
    pub rel_err: f64,
    /// The map rule's TOML that makes the change: `transform = [...]`.
    pub transform: String,
    /// One line: what the change is and the map transform that makes it.
    pub text: String,
}

/// Largest rank tried (5! = 120 axis orders).
const MAX_RANK: usize = 5;
/// Work bound: axis orders times elements.
const MAX_WORK: usize = 400_000_000;
/// Largest tensor tried (both sides are widened to f64 copies: 2 x 128 MiB).
const MAX_ELEMENTS: usize = 16 << 20;
/// Work bound of one diff's layout diagnosis, across its rows (2.5 calls at one call's own
/// bound of 400,000,000, ~1.5 s a call scanned to the end in every order, release): the caller
/// tries rows while the [`layout_work`] of those tried stays within it (a bad-input hunt: 40
/// rows of 2.4M elements, each scanned in all 120 axis orders, took 36.6 s).
pub const MAX_TOTAL_WORK: usize = 1_000_000_000;
// (two calls at their own bound fit)
const _: () = assert!(MAX_TOTAL_WORK >= 2 * MAX_WORK);

/// The work [`layout_match`] may do on tensors of these shapes (axis orders times elements),
/// from the shapes alone, before anything is read; `None` where it tries nothing: the element
/// counts differ or are 0, more than 16M elements, a rank above 5 (size-1 axes aside), or
/// more than its own work bound.
pub fn layout_work(ours_shape: &[usize], ref_shape: &[usize]) -> Option<usize> {
    let dims: Vec<usize> = ref_shape.iter().copied().filter(|&d| d != 1).collect();
    let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let ours_n = ours_shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    if n != ours_n || n == 0 || n > MAX_ELEMENTS || dims.len() > MAX_RANK {
        return None;
    }
    let orders: usize = (1..=dims.len()).product();
    let work = orders.saturating_mul(n);
    (work <= MAX_WORK).then_some(work)
}

/// The first layout change (plain reshape first, then axis orders with fewer axes moved) under
/// which ours agrees with the reference: `‖o' − r‖₂ ≤ atol·√n + rtol·‖r‖₂`. `None` when the
/// element counts differ, the rank is above 5, nothing agrees, or either side has no finite value.
pub fn layout_match(
    ours: &Side<'_>,
    reference: &Side<'_>,
    rtol: f64,
    atol: f64,
) -> Option<LayoutMatch> {
    // The bounds are checked before anything is copied.
    layout_work(ours.shape, reference.shape)?;
    let dims: Vec<usize> = reference
        .shape
        .iter()
        .copied()
        .filter(|&d| d != 1)
        .collect();
    let n: usize = dims.iter().product();
    if ours.values.len() != n || reference.values.len() != n {
        return None;
    }
    let mut perms = permutations(dims.len());
    // Fewest axes moved first: the identity (a plain reshape), then swaps, ...
    perms.sort_by_key(|p| p.iter().enumerate().filter(|(i, a)| i != *a).count());
    let o = ours.values.to_f64_vec();
    let r = reference.values.to_f64_vec();
    // As the diff does: norms and errors over the elements finite on both sides; NaN / Inf
    // must sit at the same places (checked per layout below).
    let ref_l2 = r
        .iter()
        .filter(|x| x.is_finite())
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt();
    if !ref_l2.is_finite() {
        return None;
    }
    let limit = atol * (n as f64).sqrt() + rtol * ref_l2;
    let ours_dims: Vec<usize> = ours.shape.iter().copied().filter(|&d| d != 1).collect();
    for pi in perms {
        // Ours read in the reference's dimensions, in the order `pi`: q[i] = r[pi[i]].
        let q_shape: Vec<usize> = pi.iter().map(|&a| dims[a]).collect();
        if pi.iter().enumerate().all(|(i, &a)| i == a) && q_shape == ours_dims {
            continue; // the comparison that already failed
        }
        let q_strides = strides(&q_shape);
        // Stride in ours' buffer of each reference axis.
        let mut ref_axis_stride = vec![0usize; dims.len()];
        for (i, &a) in pi.iter().enumerate() {
            ref_axis_stride[a] = q_strides[i];
        }
        let mut diff2 = 0.0f64;
        let mut idx = vec![0usize; dims.len()];
        let mut at = 0usize;
        let mut ok = true;
        for &rv in &r {
            let ov = o[at];
            match (ov.is_finite(), rv.is_finite()) {
                (true, true) => {
                    let d = ov - rv;
                    diff2 += d * d;
                }
                // Non-finite on both sides: the same kind, or the layout is wrong.
                (false, false) if ov.is_nan() == rv.is_nan() && (ov.is_nan() || ov == rv) => {}
                _ => diff2 = f64::INFINITY,
            }
            if !diff2.is_finite() || diff2 > limit * limit {
                ok = false;
                break;
            }
            // Odometer over the reference's index, keeping ours' offset.
            for ax in (0..dims.len()).rev() {
                idx[ax] += 1;
                at += ref_axis_stride[ax];
                if idx[ax] < dims[ax] {
                    break;
                }
                at -= ref_axis_stride[ax] * dims[ax];
                idx[ax] = 0;
            }
        }
        if !ok {
            continue;
        }
        let mut permute = vec![0usize; dims.len()];
        for (i, &a) in pi.iter().enumerate() {
            permute[a] = i;
        }
        let rel_err = if ref_l2 > 0.0 {
            diff2.sqrt() / ref_l2
        } else {
            diff2.sqrt()
        };
        let identity = permute.iter().enumerate().all(|(i, &a)| i == a);
        let what = if identity {
            "the same values in another shape".to_string()
        } else if dims.len() >= 2
            && permute[..dims.len() - 2]
                .iter()
                .enumerate()
                .all(|(i, &a)| i == a)
            && permute[dims.len() - 2] == dims.len() - 1
        {
            "ours is transposed (last two axes)".to_string()
        } else {
            format!(
                "ours holds the axes in another order ({})",
                order_text(&q_shape)
            )
        };
        let transform = if identity {
            format!("transform = [{{ reshape = {} }}]", list(&dims))
        } else {
            format!(
                "transform = [{{ reshape = {} }}, {{ permute = {} }}]",
                list(&q_shape),
                list(&permute)
            )
        };
        let text = format!(
            "layout: {what}; with the map rule `{transform}` the values agree (rel err {})",
            crate::compare::sci(rel_err)
        );
        return Some(LayoutMatch {
            reshape: q_shape,
            permute,
            rel_err,
            transform,
            text,
        });
    }
    None
}

fn order_text(q: &[usize]) -> String {
    let parts: Vec<String> = q.iter().map(usize::to_string).collect();
    format!("read as [{}]", parts.join(", "))
}

fn list(v: &[usize]) -> String {
    let parts: Vec<String> = v.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn permutations(k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur: Vec<usize> = (0..k).collect();
    heap(k, &mut cur, &mut out);
    out
}

fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    if k <= 1 {
        out.push(a.clone());
        return;
    }
    for i in 0..k {
        heap(k - 1, a, out);
        let j = if k.is_multiple_of(2) { i } else { 0 };
        a.swap(j, k - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValuesRef;

    fn side<'a>(shape: &'a [usize], v: &'a [f32]) -> Side<'a> {
        Side {
            shape,
            values: ValuesRef::F32(v),
            dtype: "float32",
        }
    }

    #[test]
    fn every_permutation_once() {
        let p = permutations(4);
        assert_eq!(p.len(), 24);
        let set: std::collections::BTreeSet<_> = p.into_iter().collect();
        assert_eq!(set.len(), 24);
    }

    #[test]
    fn tokens_first_is_recognized_against_heads_first() {
        // ref [1, H=3, T=4, D=2] heads-first; ours [T, H, D] tokens-first.
        let (h, t, d) = (3, 4, 2);
        let r: Vec<f32> = (0..h * t * d).map(|i| (i as f32).sin()).collect();
        let mut o = vec![0f32; r.len()];
        for hi in 0..h {
            for ti in 0..t {
                for di in 0..d {
                    o[(ti * h + hi) * d + di] = r[(hi * t + ti) * d + di];
                }
            }
        }
        let m = layout_match(&side(&[t, h, d], &o), &side(&[1, h, t, d], &r), 1e-3, 1e-6).unwrap();
        assert_eq!(m.reshape, vec![t, h, d]);
        assert_eq!(m.permute, vec![1, 0, 2]);
        assert!(m.text.contains("permute = [1, 0, 2]"), "{}", m.text);
        assert_eq!(m.rel_err, 0.0);
        // A transpose of a matrix.
        let r: Vec<f32> = (0..6).map(|i| i as f32 + 1.0).collect();
        let o = vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        let m = layout_match(&side(&[3, 2], &o), &side(&[2, 3], &r), 1e-3, 1e-6).unwrap();
        assert!(m.text.contains("transposed"), "{}", m.text);
        // Unrelated values: nothing.
        let o = vec![9.0, 1.0, 7.0, 5.0, 3.0, 6.0];
        assert!(layout_match(&side(&[3, 2], &o), &side(&[2, 3], &r), 1e-3, 1e-6).is_none());
        // NaN at the same places after the layout change: still a match; at other places: not.
        let rn: Vec<f32> = vec![1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0];
        let on = vec![1.0, 4.0, f32::NAN, 5.0, 3.0, 6.0];
        assert!(layout_match(&side(&[3, 2], &on), &side(&[2, 3], &rn), 1e-3, 1e-6).is_some());
        let on = vec![f32::NAN, 4.0, 2.0, 5.0, 3.0, 6.0];
        assert!(layout_match(&side(&[3, 2], &on), &side(&[2, 3], &rn), 1e-3, 1e-6).is_none());
        // Different counts: nothing.
        assert!(layout_match(&side(&[5], &o[..5]), &side(&[2, 3], &r), 1e-3, 1e-6).is_none());
    }

    #[test]
    fn the_work_is_known_from_the_shapes_alone() {
        // 3! axis orders of 24 elements; size-1 axes aside.
        assert_eq!(layout_work(&[4, 3, 2], &[1, 2, 3, 4]), Some(6 * 24));
        assert_eq!(layout_work(&[6], &[2, 3]), Some(2 * 6));
        // Nothing tried: other counts, no element, rank 6, past the bounds, overflow.
        assert_eq!(layout_work(&[5], &[2, 3]), None);
        assert_eq!(layout_work(&[0, 3], &[3, 0]), None);
        assert_eq!(layout_work(&[64], &[2, 2, 2, 2, 2, 2]), None);
        assert_eq!(layout_work(&[1 << 24, 2], &[2, 1 << 24]), None);
        assert_eq!(
            layout_work(&[4, 4, 4, 4, 1 << 16], &[1 << 16, 4, 4, 4, 4]),
            None
        );
        assert_eq!(
            layout_work(&[60, 61, 62, 63, 2], &[2, 63, 62, 61, 60]),
            None
        );
        assert_eq!(layout_work(&[usize::MAX, 2], &[2, usize::MAX]), None);
    }
}
