//! Alignment by content: when two dumps share few names, which tensor of ours is which of the
//! reference's. Both sides in execution order; a pair needs equal element counts (so shapes may
//! differ by a transpose, a head split or size-1 axes) and is scored by how well cheap value
//! statistics agree (L2 norm, mean, largest magnitude; all equal = the same values). The pairs
//! are the monotone alignment (execution order kept on both sides) of highest total score, like
//! a sequence alignment. Pure.

use divergence_values::{Elem, ValuesRef, Visit};
use serde::{Deserialize, Serialize};

/// What alignment knows of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorStats {
    pub name: String,
    pub numel: u64,
    /// The shape without its size-1 axes.
    pub dims: Vec<usize>,
    /// `None`: too large to read for this (only its count and place can pair it).
    pub values: Option<ValueStats>,
}

/// Order-free statistics of a tensor's finite values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueStats {
    pub l2: f64,
    pub mean: f64,
    pub max_abs: f64,
    /// Mean of |x|.
    pub mean_abs: f64,
    /// Kurtosis: mean(x^4) / mean(x^2)^2 (how heavy the tails are).
    pub kurtosis: f64,
}

impl ValueStats {
    /// The statistics of `values` (non-finite elements skipped), in one pass without a copy.
    pub fn of(values: ValuesRef<'_>) -> ValueStats {
        struct Fold;
        impl Visit for Fold {
            type Out = ValueStats;
            fn visit<E: Elem>(self, raw: &[E::Raw]) -> ValueStats {
                let (mut s2, mut s4, mut s, mut sa, mut m, mut n) =
                    (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0usize);
                for x in raw.iter().map(|&r| E::wide(r)).filter(|x| x.is_finite()) {
                    let x2 = x * x;
                    s2 += x2;
                    s4 += x2 * x2;
                    s += x;
                    sa += x.abs();
                    m = m.max(x.abs());
                    n += 1;
                }
                let nf = n.max(1) as f64;
                let ms = s2 / nf;
                ValueStats {
                    l2: s2.sqrt(),
                    mean: s / nf,
                    max_abs: m,
                    mean_abs: sa / nf,
                    kurtosis: if ms > 0.0 { (s4 / nf) / (ms * ms) } else { 0.0 },
                }
            }
        }
        values.visit(Fold)
    }
}

/// How sure a pair is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Norm, mean and largest magnitude agree within 1e-6: the same values (up to layout).
    Same,
    /// They agree within 2%: the same op, computed a little differently.
    Close,
    /// Only the element count and the place in execution order pair them.
    OrderOnly,
}

/// One proposed pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub ours: String,
    pub reference: String,
    pub confidence: Confidence,
    /// Largest relative difference of the statistics (`None` without statistics).
    pub stats_diff: Option<f64>,
    /// Compared: the statistics agree ([`Confidence::Same`] / [`Confidence::Close`]), or the
    /// pair lies between such pairs where both sides hold the same number of tensors with the
    /// same element counts in the same order (the ops after a bug, whose values all moved).
    pub compared: bool,
}

/// Relative disagreement of two statistics vectors (0 = equal).
fn disagreement(a: &ValueStats, b: &ValueStats) -> f64 {
    let rel = |x: f64, y: f64, scale: f64| {
        let s = scale.max(1e-30);
        ((x - y).abs() / s).min(1e6)
    };
    let n = a.l2.max(b.l2);
    rel(a.l2, b.l2, n)
        .max(rel(a.max_abs, b.max_abs, a.max_abs.max(b.max_abs)))
        .max(rel(a.mean, b.mean, a.max_abs.max(b.max_abs)))
        .max(rel(a.mean_abs, b.mean_abs, a.mean_abs.max(b.mean_abs)))
        .max(rel(a.kurtosis, b.kurtosis, a.kurtosis.max(b.kurtosis)))
}

fn score(o: &TensorStats, r: &TensorStats) -> Option<(f64, Confidence, Option<f64>)> {
    if o.numel != r.numel {
        return None;
    }
    // The same shape (size-1 axes aside) is a little evidence; a layout change is allowed.
    let shape = if o.dims == r.dims { 0.5 } else { 0.0 };
    let Some((a, b)) = o.values.as_ref().zip(r.values.as_ref()) else {
        return Some((1.0 + shape, Confidence::OrderOnly, None));
    };
    let d = disagreement(a, b);
    // Zeros against zeros: the same statistics, but no identity (a never written cache slot
    // and a zero bias of the other side's are not the same tensor): by count and place only.
    if a.max_abs == 0.0 && b.max_abs == 0.0 {
        return Some((1.0 + shape, Confidence::OrderOnly, Some(d)));
    }
    let (s, c) = if d <= 1e-6 {
        (10.0, Confidence::Same)
    } else if d <= CLOSE {
        (5.0 - 100.0 * d, Confidence::Close)
    } else {
        (1.0, Confidence::OrderOnly)
    };
    Some((s + shape, c, Some(d)))
}

/// Largest disagreement of the statistics for a [`Confidence::Close`] pair (bf16 against f32
/// stays within about 0.5%; consecutive points of the residual stream differ by more).
pub const CLOSE: f64 = 0.02;

/// Largest `ours.len() * reference.len()` aligned (a table of that many cells).
pub const MAX_CELLS: usize = 25_000_000;

/// The monotone pairing of highest total score (see the module doc); empty when the table
/// would exceed [`MAX_CELLS`].
pub fn align(ours: &[TensorStats], reference: &[TensorStats]) -> Vec<Pair> {
    let (n, m) = (ours.len(), reference.len());
    if n.saturating_mul(m) > MAX_CELLS || n == 0 || m == 0 {
        return Vec::new();
    }
    // A tensor of ours with exactly the values of an earlier one (TransformerLens'
    // hook_resid_pre of layer N+1 is hook_resid_post of layer N; vLLM returns the residual
    // from several modules) is left out: its twin is paired, and pairing it too would only
    // take a reference tensor it does not hold.
    // A tensor of zeros (no finite value other than 0) repeats any other of its count and
    // says nothing of an alias: `cache-overwrite`'s never written cache slots, zeros at every
    // layer, each left free to pair by its place with the reference's slot.
    let dups = |side: &[TensorStats]| -> Vec<bool> {
        let mut seen = std::collections::HashSet::new();
        side.iter()
            .map(|t| {
                t.values.as_ref().is_some_and(|v| {
                    if v.max_abs == 0.0 {
                        return false;
                    }
                    let key = (
                        t.numel,
                        [v.l2, v.mean, v.max_abs, v.mean_abs, v.kurtosis].map(f64::to_bits),
                    );
                    !seen.insert(key)
                })
            })
            .collect()
    };
    let (dup_o, dup_r) = (dups(ours), dups(reference));
    // ...unless the reference holds a value twice too (transformers' `o_proj` and
    // `self_attn`): a twin pairs with a twin only.
    let score = |i: usize, j: usize| {
        if dup_o[i] && !dup_r[j] {
            None
        } else {
            score(&ours[i], &reference[j])
        }
    };
    // best[i][j]: best total over ours[i..], reference[j..].
    let w = m + 1;
    let mut best = vec![0.0f64; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let skip = best[(i + 1) * w + j].max(best[i * w + j + 1]);
            let take =
                score(i, j).map_or(f64::NEG_INFINITY, |(s, _, _)| s + best[(i + 1) * w + j + 1]);
            best[i * w + j] = skip.max(take);
        }
    }
    let mut pairs: Vec<(usize, usize, Pair)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        let here = best[i * w + j];
        // Ties go to the later reference tensor: a reference that holds one value twice
        // (transformers' `o_proj` and `self_attn`, `down_proj` and `mlp`) pairs ours' one
        // tensor with the later twin, which leaves the earlier free for nothing and keeps the
        // next pairs in step.
        if (best[i * w + j + 1] - here).abs() <= 1e-9 {
            j += 1;
            continue;
        }
        if let Some((s, c, d)) = score(i, j) {
            if (s + best[(i + 1) * w + j + 1] - here).abs() <= 1e-9 {
                pairs.push((
                    i,
                    j,
                    Pair {
                        ours: ours[i].name.clone(),
                        reference: reference[j].name.clone(),
                        confidence: c,
                        stats_diff: d,
                        compared: c != Confidence::OrderOnly,
                    },
                ));
                i += 1;
                j += 1;
                continue;
            }
        }
        if best[(i + 1) * w + j] >= best[i * w + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    // Between two anchors (confident pairs, or the ends), segments of equal length and equal
    // element counts position by position pair up one to one: compare those order-only pairs.
    let anchors: Vec<(isize, isize)> = std::iter::once((-1, -1))
        .chain(
            pairs
                .iter()
                .filter(|(_, _, p)| p.compared)
                .map(|&(i, j, _)| (i as isize, j as isize)),
        )
        .chain(std::iter::once((n as isize, m as isize)))
        .collect();
    for w in anchors.windows(2) {
        let ((a, c), (b, d)) = (w[0], w[1]);
        let (os, rs) = (
            (a + 1) as usize..b.max(a + 1) as usize,
            (c + 1) as usize..d.max(c + 1) as usize,
        );
        let same = os.len() == rs.len()
            && os
                .clone()
                .zip(rs.clone())
                .all(|(x, y)| ours[x].numel == reference[y].numel);
        // Or a tensor whose shape (else element count) appears once on each side of the gap:
        // a port that dumps fewer ops than the reference.
        let unique = |i: usize, j: usize| {
            let class = |t: &TensorStats, by_dims: bool| {
                if by_dims {
                    t.dims == ours[i].dims
                } else {
                    t.numel == ours[i].numel
                }
            };
            let by_dims = rs.clone().any(|y| reference[y].dims == ours[i].dims);
            let in_ref = rs
                .clone()
                .filter(|&y| class(&reference[y], by_dims))
                .count();
            let in_ours = os.clone().filter(|&x| class(&ours[x], by_dims)).count();
            in_ref == 1 && in_ours == 1 && class(&reference[j], by_dims)
        };
        for (i, j, p) in pairs.iter_mut() {
            if os.contains(i)
                && rs.contains(j)
                && ((same && *i - os.start == *j - rs.start) || unique(*i, *j))
            {
                p.compared = true;
            }
        }
    }
    values_over_places(ours, reference, &score, &mut pairs);
    let mut pairs: Vec<Pair> = pairs.into_iter().map(|(_, _, p)| p).collect();
    uncompare_contradicted(
        &mut pairs,
        ours.iter().map(|t| t.name.as_str()),
        reference.iter().map(|t| t.name.as_str()),
    );
    pairs
}

/// Evidence by values beats evidence by place (found by a bad-input hunt, 2026-12-04): a clean
/// port that dumps each layer's `cache_v` before its `cache_k` had its slots paired k with v by
/// their place, compared, and a false first divergence.
/// 1. An order-only pair goes where either tensor has the same values as another tensor of the
///    other side that no confident pair holds: its place is not its identity.
/// 2. A tensor left unpaired whose values match exactly one unpaired tensor of the other side,
///    and that one only it, pairs with it (same values, compared), whatever their places.
fn values_over_places(
    ours: &[TensorStats],
    reference: &[TensorStats],
    score: &dyn Fn(usize, usize) -> Option<(f64, Confidence, Option<f64>)>,
    pairs: &mut Vec<(usize, usize, Pair)>,
) {
    let (n, m) = (ours.len(), reference.len());
    let same = |i: usize, j: usize| matches!(score(i, j), Some((_, Confidence::Same, _)));
    let (mut confident_o, mut confident_r) = (vec![false; n], vec![false; m]);
    for &(i, j, ref p) in pairs.iter() {
        if p.confidence != Confidence::OrderOnly {
            confident_o[i] = true;
            confident_r[j] = true;
        }
    }
    pairs.retain(|&(i, j, ref p)| {
        p.confidence != Confidence::OrderOnly
            || !((0..m).any(|y| y != j && !confident_r[y] && same(i, y))
                || (0..n).any(|x| x != i && !confident_o[x] && same(x, j)))
    });
    let (mut paired_o, mut paired_r) = (vec![false; n], vec![false; m]);
    for &(i, j, _) in pairs.iter() {
        paired_o[i] = true;
        paired_r[j] = true;
    }
    for i in 0..n {
        if paired_o[i] {
            continue;
        }
        let mut cands = (0..m).filter(|&y| !paired_r[y] && same(i, y));
        let (Some(j), None) = (cands.next(), cands.next()) else {
            continue;
        };
        let mut back = (0..n).filter(|&x| !paired_o[x] && same(x, j));
        if let (Some(_), None) = (back.next(), back.next()) {
            let d = score(i, j).and_then(|(_, _, d)| d);
            pairs.push((
                i,
                j,
                Pair {
                    ours: ours[i].name.clone(),
                    reference: reference[j].name.clone(),
                    confidence: Confidence::Same,
                    stats_diff: d,
                    compared: true,
                },
            ));
            paired_o[i] = true;
            paired_r[j] = true;
        }
    }
    pairs.sort_by_key(|&(i, _, _)| i);
}

/// Where the names speak (9 confident pairs in 10 or more, at least 4, end in the same dotted
/// segment, as under a prefix rename), an order-only pair whose last segments differ, each
/// of them found on the other side (`cache_v` with `cache_k`), is not compared: the names
/// contradict the place (found by a bad-input hunt, 2026-12-04: `cache-overwrite` in a port
/// that dumps `cache_v` before `cache_k` had its slots of zeros compared k with v). `ours` and
/// `reference`: every name aligned on each side. [`align`] applies it to its pairs; a caller
/// that aligns in several passes applies it to all of them at once.
pub fn uncompare_contradicted<'a>(
    pairs: &mut [Pair],
    ours: impl IntoIterator<Item = &'a str>,
    reference: impl IntoIterator<Item = &'a str>,
) {
    let confident: Vec<bool> = pairs
        .iter()
        .filter(|p| p.confidence != Confidence::OrderOnly)
        .map(|p| leaf_of(&p.ours) == leaf_of(&p.reference))
        .collect();
    let agree = confident.iter().filter(|&&a| a).count();
    if confident.len() < 4 || agree * 10 < confident.len() * 9 {
        return;
    }
    let leaves_o: std::collections::HashSet<&str> = ours.into_iter().map(leaf_of).collect();
    let leaves_r: std::collections::HashSet<&str> = reference.into_iter().map(leaf_of).collect();
    for p in pairs.iter_mut() {
        let (lo, lr) = (leaf_of(&p.ours), leaf_of(&p.reference));
        if p.confidence == Confidence::OrderOnly
            && lo != lr
            && leaves_r.contains(lo)
            && leaves_o.contains(lr)
        {
            p.compared = false;
        }
    }
}

/// A name's last dotted segment.
fn leaf_of(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, numel: u64, l2: f64) -> TensorStats {
        TensorStats {
            name: name.into(),
            numel,
            dims: vec![numel as usize],
            values: Some(ValueStats {
                l2,
                mean: l2 / 10.0,
                max_abs: l2 / 3.0,
                mean_abs: l2 / 5.0,
                kurtosis: 3.0,
            }),
        }
    }

    #[test]
    fn pairs_follow_counts_statistics_and_order() {
        let ours = [
            t("a", 10, 1.0),
            t("b", 10, 2.0),
            t("c", 20, 3.0),
            t("d", 10, 7.77),
        ];
        let reference = [
            t("A", 10, 1.0),
            t("x", 5, 9.0),
            t("B", 10, 2.01),
            t("C", 20, 3.0),
            t("D", 10, 4.0),
        ];
        let p = align(&ours, &reference);
        let names: Vec<(&str, &str, Confidence)> = p
            .iter()
            .map(|p| (p.ours.as_str(), p.reference.as_str(), p.confidence))
            .collect();
        assert_eq!(
            names,
            [
                ("a", "A", Confidence::Same),
                ("b", "B", Confidence::Close),
                ("c", "C", Confidence::Same),
                ("d", "D", Confidence::OrderOnly),
            ]
        );
    }

    #[test]
    fn same_values_pair_as_same() {
        let ours = [t("a", 10, 1.0), t("b", 10, 2.0), t("c", 10, 3.0)];
        let reference = [t("A", 10, 1.0), t("B", 10, 2.0), t("C", 10, 3.0)];
        let p = align(&ours, &reference);
        assert!(p.iter().all(|p| p.confidence == Confidence::Same));
        assert_eq!(p.len(), 3);
    }

    /// Tensors of zeros repeat each other but are no alias: each pairs by its place (the
    /// slots `cache-overwrite` never writes, one per layer), compared when the counts agree to
    /// the end; a repeat of other values still pairs only with a repeat.
    #[test]
    fn zeros_pair_by_their_place_and_a_repeat_of_values_does_not() {
        let zeros = |name: &str| TensorStats {
            name: name.into(),
            numel: 8,
            dims: vec![8],
            values: Some(ValueStats {
                l2: 0.0,
                mean: 0.0,
                max_abs: 0.0,
                mean_abs: 0.0,
                kurtosis: 0.0,
            }),
        };
        let ours = [t("a", 10, 1.0), zeros("k0"), zeros("v0"), zeros("k1")];
        let reference = [
            t("A", 10, 1.0),
            t("K0", 8, 2.0),
            t("V0", 8, 3.0),
            t("K1", 8, 4.0),
        ];
        let pairs = |p: Vec<Pair>| -> Vec<(String, String, bool)> {
            p.into_iter()
                .map(|p| (p.ours, p.reference, p.compared))
                .collect()
        };
        let s = |a: &str, b: &str, c: bool| (a.to_string(), b.to_string(), c);
        assert_eq!(
            pairs(align(&ours, &reference)),
            [
                s("a", "A", true),
                s("k0", "K0", true),
                s("v0", "V0", true),
                s("k1", "K1", true)
            ]
        );
        // The same with one value of 5 repeated: the repeats are aliases of the first.
        let five = |name: &str| t(name, 8, 5.0);
        let ours = [t("a", 10, 1.0), five("k0"), five("v0"), five("k1")];
        let p = pairs(align(&ours, &reference));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|(o, _, _)| o == "a" || o == "k0"), "{p:?}");
    }

    /// A tensor of the given statistics' scale under `name` (`t`, one count for all).
    fn named(name: &str, l2: f64) -> TensorStats {
        t(name, 8, l2)
    }

    fn triples(p: Vec<Pair>) -> Vec<(String, String, Confidence, bool)> {
        p.into_iter()
            .map(|p| (p.ours, p.reference, p.confidence, p.compared))
            .collect()
    }

    /// A port that dumps `v` before `k` in some layers (a bad-input hunt, 2026-12-04): the
    /// monotone alignment paired k with v by their place, compared (the same counts to the
    /// end), a false divergence of a clean port. Each tensor has its twin by values on the
    /// other side: the places give way, and each pairs with its twin.
    #[test]
    fn values_beat_places() {
        let ours = [
            named("a", 1.0),
            named("l0.v", 3.0),
            named("l0.k", 2.0),
            named("l1.v", 5.0),
            named("l1.k", 4.0),
        ];
        let reference = [
            named("A", 1.0),
            named("L0.k", 2.0),
            named("L0.v", 3.0),
            named("L1.k", 4.0),
            named("L1.v", 5.0),
        ];
        let mut got = triples(align(&ours, &reference));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let s = |o: &str, r: &str| (o.to_string(), r.to_string(), Confidence::Same, true);
        assert_eq!(
            got,
            [
                s("a", "A"),
                s("l0.k", "L0.k"),
                s("l0.v", "L0.v"),
                s("l1.k", "L1.k"),
                s("l1.v", "L1.v")
            ]
        );
    }

    /// Zeros against zeros have no identity: by count and place only (a reference's zero bias
    /// took a port's never written cache slot as the same values, and its row passed).
    #[test]
    fn zeros_against_zeros_are_order_only() {
        let zeros = TensorStats {
            name: "z".into(),
            numel: 8,
            dims: vec![8],
            values: Some(ValueStats {
                l2: 0.0,
                mean: 0.0,
                max_abs: 0.0,
                mean_abs: 0.0,
                kurtosis: 0.0,
            }),
        };
        let p = align(
            std::slice::from_ref(&zeros),
            &[TensorStats {
                name: "Z".into(),
                ..zeros.clone()
            }],
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].confidence, Confidence::OrderOnly);
    }

    /// Where the names speak (the confident pairs agree in their last segment), an order-only
    /// pair of two names each found on the other side is not compared; where they do not
    /// (opaque names), or where a name is the port's own (`act` against `act_fn`), the place
    /// stands.
    #[test]
    fn names_that_contradict_a_place_uncompare_it() {
        let reference = [
            named("L.a", 1.0),
            named("L.b", 2.0),
            named("L.c", 3.0),
            named("L.d", 4.0),
            named("L.k", 5.0),
            named("L.v", 6.0),
        ];
        let compared = |names: [&str; 6], values: [f64; 6]| -> Vec<(String, bool)> {
            let ours: Vec<TensorStats> =
                names.iter().zip(values).map(|(n, v)| named(n, v)).collect();
            align(&ours, &reference)
                .into_iter()
                .filter(|p| p.confidence == Confidence::OrderOnly)
                .map(|p| (p.ours, p.compared))
                .collect()
        };
        // v dumped before k, both wrong: the names say the places are swapped
        assert_eq!(
            compared(
                ["l.a", "l.b", "l.c", "l.d", "l.v", "l.k"],
                [1.0, 2.0, 3.0, 4.0, 60.0, 50.0]
            ),
            [("l.v".to_string(), false), ("l.k".to_string(), false)]
        );
        // the same places under opaque names: the places stand
        assert_eq!(
            compared(
                ["t1", "t2", "t3", "t4", "t5", "t6"],
                [1.0, 2.0, 3.0, 4.0, 60.0, 50.0]
            ),
            [("t5".to_string(), true), ("t6".to_string(), true)]
        );
        // a name of the port's own (no `v2` in the reference): the place stands
        assert_eq!(
            compared(
                ["l.a", "l.b", "l.c", "l.d", "l.k", "l.v2"],
                [1.0, 2.0, 3.0, 4.0, 50.0, 60.0]
            ),
            [("l.k".to_string(), true), ("l.v2".to_string(), true)]
        );
    }
}
