//! Alignment by content: when two dumps share few names, which tensor of ours is which of the
//! reference's. Both sides in execution order; a pair needs equal element counts (so shapes may
//! differ by a transpose, a head split or size-1 axes) and is scored by how well cheap value
//! statistics agree (L2 norm, mean, largest magnitude; all equal = the same values). The pairs
//! start as the monotone alignment (execution order kept on both sides) of highest total score,
//! like a sequence alignment; then values beat places, and where the names speak (a prefix
//! rename) they beat both (docs/mapping.md, "Alignment by content"). Pure.

use divergence_values::{Elem, ValuesRef, Visit};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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
    // and a zero bias of the other side's are not the same tensor): by count and place, a
    // little above zeros against other values (two zero biases pair with each other, not
    // with the tensor after them: the pairs after a bug would slide by one).
    if zeros(o, r) {
        return Some((ZEROS + shape, Confidence::OrderOnly, Some(d)));
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

/// The score of a pair of zeros against zeros (an order-only pair of other values: 1).
const ZEROS: f64 = 1.2;

/// Both tensors' values are known and all zero.
fn zeros(o: &TensorStats, r: &TensorStats) -> bool {
    let zero = |t: &TensorStats| t.values.as_ref().is_some_and(|v| v.max_abs == 0.0);
    zero(o) && zero(r)
}

/// The score of pair (i, j) of two sides (`None`: they cannot pair), as [`align`] weighs it.
type Score<'s> = dyn Fn(usize, usize) -> Option<(f64, Confidence, Option<f64>)> + 's;

/// Pair (i, j) matches by values: the same or close statistics.
fn by_values(score: &Score<'_>, i: usize, j: usize) -> bool {
    matches!(
        score(i, j),
        Some((_, Confidence::Same | Confidence::Close, _))
    )
}

/// Largest disagreement of the statistics for a [`Confidence::Close`] pair (bf16 against f32
/// stays within about 0.5%; consecutive points of the residual stream differ by more).
pub const CLOSE: f64 = 0.02;

/// Largest `ours.len() * reference.len()` aligned (a table of that many cells).
pub const MAX_CELLS: usize = 25_000_000;

/// The pairs of the two sides (see the module doc), in ours' order, each tensor in one pair
/// at most; empty when the table would exceed [`MAX_CELLS`].
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
    // The names' word, where they speak (a prefix rename): it decides between values and
    // places where they disagree.
    let names = Names::new(
        pairs
            .iter()
            .filter(|(_, _, p)| p.confidence != Confidence::OrderOnly)
            .map(|(_, _, p)| (p.ours.as_str(), p.reference.as_str())),
        ours.iter().map(|t| t.name.as_str()),
        reference.iter().map(|t| t.name.as_str()),
    );
    // The same values under names the names call two ops (a port that writes v into its k
    // cache slot and k into its v slot: its `cache_k` has the reference's `cache_v` values):
    // neither is trusted, the pair goes, and its tensors are paired by name below.
    pairs.retain(|(_, _, p)| {
        p.confidence == Confidence::OrderOnly || names.word(&p.ours, &p.reference) != Word::Two
    });
    let mut pairs = values_over_places(ours, reference, &score, &names, pairs);
    compare_by_segments(ours, reference, &score, &names, &mut pairs);
    // Order-only pairs the names call two ops are not pairs: their tensors go back, to pair
    // by their names (`pair_by_names`).
    pairs.retain(|(_, _, p)| {
        p.confidence != Confidence::OrderOnly || names.word(&p.ours, &p.reference) != Word::Two
    });
    pair_by_names(ours, reference, &names, &mut pairs);
    // A pair by place whose names are one op's, layer and all (`blk.1.v`, `model.layers.1.v`)
    // where the names speak so: compared.
    for (_, _, p) in pairs.iter_mut() {
        p.compared |= names.same_op(&p.ours, &p.reference);
    }
    // the pairs by name pin down the segments around them (the op after a slot pair)
    compare_by_segments(ours, reference, &score, &names, &mut pairs);
    pairs.into_iter().map(|(_, _, p)| p).collect()
}

/// Between two anchors (compared pairs, or the ends), segments of equal length and equal
/// element counts position by position pair up one to one: compare those order-only pairs,
/// and pair so the tensors of such a segment that the alignment left unpaired or paired off
/// their place (its ties can shift a pair by one where values tell nothing: a port that dumps
/// `v` before `k` under opaque names, after a bug). A segment starts after every reference
/// tensor an anchor before it holds (anchors can cross: `v` paired before `k`), and holds no
/// tensor an anchor holds. Pairs of zeros against zeros are anchors too (a zero bias on both
/// sides keeps the layers after a bug in step), but are compared only as the other order-only
/// pairs are, by the segments of the compared pairs: a never written cache slot took a
/// reference's zero bias of its count as the same values.
fn compare_by_segments(
    ours: &[TensorStats],
    reference: &[TensorStats],
    score: &Score<'_>,
    names: &Names<'_>,
    pairs: &mut Vec<(usize, usize, Pair)>,
) {
    let (n, m) = (ours.len(), reference.len());
    let of_zeros: Vec<bool> = pairs
        .iter()
        .map(|&(i, j, _)| zeros(&ours[i], &reference[j]))
        .collect();
    // A place is refuted by its values or its names: a repeat of ours against a non-repeat;
    // two ops by the names; values that match nothing here while either tensor's match
    // another tensor's (same or close); a tensor whose namesake (last segment and numbers,
    // as the confident pairs have them) is another tensor of the other side. (A review found
    // a clean port's extra tensor placed on a reference tensor whose namesake had its values:
    // a false divergence.)
    let matches = |x: usize, y: usize| by_values(score, x, y);
    let (match_o, match_r) = (
        std::cell::RefCell::new(vec![None::<bool>; n]),
        std::cell::RefCell::new(vec![None::<bool>; m]),
    );
    let matches_any_o =
        |x: usize| *match_o.borrow_mut()[x].get_or_insert_with(|| (0..m).any(|y| matches(x, y)));
    let matches_any_r =
        |y: usize| *match_r.borrow_mut()[y].get_or_insert_with(|| (0..n).any(|x| matches(x, y)));
    let keys_o: Vec<Option<(&str, Vec<i128>)>> =
        ours.iter().map(|t| names.key(&t.name, true)).collect();
    let keys_r: Vec<Option<(&str, Vec<i128>)>> = reference
        .iter()
        .map(|t| names.key(&t.name, false))
        .collect();
    type Key<'k> = Option<(&'k str, Vec<i128>)>;
    fn count<'k>(keys: &[Key<'k>]) -> HashMap<(&'k str, Vec<i128>), usize> {
        let mut c: HashMap<(&str, Vec<i128>), usize> = HashMap::new();
        for k in keys.iter().flatten() {
            *c.entry(k.clone()).or_default() += 1;
        }
        c
    }
    let (count_keys_o, count_keys_r) = (count(&keys_o), count(&keys_r));
    // `key` names another tensor of the side `counts` counts than the one whose key is `at`
    let namesake_elsewhere = |key: &Option<(&str, Vec<i128>)>,
                              counts: &HashMap<(&str, Vec<i128>), usize>,
                              at: &Option<(&str, Vec<i128>)>| {
        key.as_ref().is_some_and(|k| {
            counts.get(k).copied().unwrap_or(0) > usize::from(at.as_ref() == Some(k))
        })
    };
    let refuted = |x: usize, y: usize| {
        score(x, y).is_none()
            || names.word(&ours[x].name, &reference[y].name) == Word::Two
            || (!matches(x, y) && (matches_any_o(x) || matches_any_r(y)))
            || (!names.same_op(&ours[x].name, &reference[y].name)
                && (namesake_elsewhere(&keys_o[x], &count_keys_r, &keys_r[y])
                    || namesake_elsewhere(&keys_r[y], &count_keys_o, &keys_o[x])))
    };
    // (which pairs to compare, the places a same segment pairs)
    let by_segments = |pairs: &[(usize, usize, Pair)], with_zeros: bool| {
        let is_anchor = |p: &Pair, z: bool| p.compared || (with_zeros && z);
        let mut held_r = vec![false; m];
        for ((_, j, p), &z) in pairs.iter().zip(&of_zeros) {
            if is_anchor(p, z) {
                held_r[*j] = true;
            }
        }
        let anchors: Vec<(isize, isize)> = std::iter::once((-1, -1))
            .chain(
                pairs
                    .iter()
                    .zip(&of_zeros)
                    .filter(|((_, _, p), &z)| is_anchor(p, z))
                    .map(|(&(i, j, _), _)| (i as isize, j as isize)),
            )
            .chain(std::iter::once((n as isize, m as isize)))
            .collect();
        let mut compare = vec![false; pairs.len()];
        let mut places = Vec::new();
        let mut r_seen = -1isize;
        for w in anchors.windows(2) {
            let ((a, c), (b, d)) = (w[0], w[1]);
            r_seen = r_seen.max(c);
            let (os, rs) = (
                (a + 1) as usize..b.max(a + 1) as usize,
                (r_seen + 1) as usize..d.max(r_seen + 1) as usize,
            );
            let same = os.len() == rs.len()
                && !rs.clone().any(|y| held_r[y])
                && os
                    .clone()
                    .zip(rs.clone())
                    .all(|(x, y)| ours[x].numel == reference[y].numel);
            // A same segment's places are one hypothesis: none is taken where any is refuted.
            if same && !os.clone().zip(rs.clone()).any(|(x, y)| refuted(x, y)) {
                places.extend(os.clone().zip(rs.clone()));
            }
            // Or a tensor whose shape (else element count) appears once on each side of the
            // gap: a port that dumps fewer ops than the reference.
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
            for (k, &(i, j, _)) in pairs.iter().enumerate() {
                if os.contains(&i)
                    && rs.contains(&j)
                    && ((same && i - os.start == j - rs.start) || unique(i, j))
                {
                    compare[k] = true;
                }
            }
        }
        (compare, places)
    };
    let ((plain, mut places), (with_zeros, more)) =
        (by_segments(pairs, false), by_segments(pairs, true));
    for (k, (_, _, p)) in pairs.iter_mut().enumerate() {
        p.compared |= plain[k] || (with_zeros[k] && !of_zeros[k]);
    }
    // The places of same segments no pair holds yet (a place of zeros against zeros only by
    // the segments of the compared pairs, as above).
    places.extend(
        more.into_iter()
            .filter(|&(x, y)| !zeros(&ours[x], &reference[y])),
    );
    places.sort_unstable();
    places.dedup();
    // a tensor the two passes would place twice is placed by neither (counted before the
    // places a pair holds already go: a review found one pass's place kept over the other's)
    let (mut count_o, mut count_r) = (vec![0u8; n], vec![0u8; m]);
    for &(x, y) in &places {
        count_o[x] = count_o[x].saturating_add(1);
        count_r[y] = count_r[y].saturating_add(1);
    }
    let held: std::collections::HashSet<(usize, usize)> =
        pairs.iter().map(|&(i, j, _)| (i, j)).collect();
    places.retain(|&(x, y)| count_o[x] == 1 && count_r[y] == 1 && !held.contains(&(x, y)));
    if places.is_empty() {
        return;
    }
    let (mut taken_o, mut taken_r) = (vec![false; n], vec![false; m]);
    for &(x, y) in &places {
        taken_o[x] = true;
        taken_r[y] = true;
    }
    // what held them off their place goes (order-only pairs: no anchor lies in a segment)
    pairs.retain(|&(i, j, ref p)| {
        p.confidence != Confidence::OrderOnly || !(taken_o[i] || taken_r[j])
    });
    for (x, y) in places {
        let Some((_, confidence, stats_diff)) = score(x, y) else {
            continue;
        };
        pairs.push((
            x,
            y,
            Pair {
                ours: ours[x].name.clone(),
                reference: reference[y].name.clone(),
                confidence,
                stats_diff,
                compared: true,
            },
        ));
    }
    pairs.sort_by_key(|&(i, _, _)| i);
}

/// Where the names speak, a tensor no pair holds pairs with the one tensor of the other side
/// that is its namesake, and that one only with it: compared (the names agree). Where the
/// confident pairs agree in the numbers of their names (a prefix rename: `blk.3.x` is
/// `model.layers.3.x`; or shifted alike: `h.4.x`), the namesake has its last segment and its
/// numbers, wherever it is and whatever its count (another count is a shape mismatch to
/// report); with names without numbers, its last segment and count, between the same two
/// compared pairs. A port that dumps `v` before `k` after a bug (values that pair by nothing)
/// is paired k with k.
fn pair_by_names<'a>(
    ours: &'a [TensorStats],
    reference: &'a [TensorStats],
    names: &Names<'_>,
    pairs: &mut Vec<(usize, usize, Pair)>,
) {
    if !names.speak {
        return;
    }
    let (n, m) = (ours.len(), reference.len());
    let (mut paired_o, mut paired_r) = (vec![false; n], vec![false; m]);
    for &(i, j, _) in pairs.iter() {
        paired_o[i] = true;
        paired_r[j] = true;
    }
    // The compared pairs in ours' order, each with the reference's place: the window of an
    // unpaired tensor of ours is between the last one before it and the first one after it.
    let mut anchors: Vec<(usize, usize)> = pairs
        .iter()
        .filter(|(_, _, p)| p.compared)
        .map(|&(i, j, _)| (i, j))
        .collect();
    anchors.sort_unstable();
    let r_seen: Vec<usize> = anchors
        .iter()
        .scan(0, |seen, &(_, j)| {
            *seen = j.max(*seen);
            Some(*seen)
        })
        .collect();
    // Each side's tensors by last segment and count (by last segment alone where the numbers
    // speak: a namesake of another count is the same op gone wrong, a shape mismatch to
    // report, such as a port's empty cache slot), in order (a window is a slice of each).
    let speak = names.offset.is_some();
    let index = |side: &'a [TensorStats]| {
        let mut by: HashMap<(&'a str, Option<u64>), Vec<usize>> = HashMap::new();
        for (k, t) in side.iter().enumerate() {
            let count = (!speak).then_some(t.numel);
            by.entry((leaf_of(&t.name), count)).or_default().push(k);
        }
        by
    };
    let (by_o, by_r) = (index(ours), index(reference));
    let mut added = Vec::new();
    for i in 0..n {
        if paired_o[i] {
            continue;
        }
        // Where the confident pairs agree in the numbers of their names (the same, or the
        // same shift: `h.4.x` is `model.layers.3.x`), the last segment and the numbers name
        // the op wherever it is; names without numbers, only between the same two compared
        // pairs, by the last segment; other names, not at all (a layer's op is not told from
        // another layer's by its last segment).
        if !speak && numbers_of(&ours[i].name).next().is_some() {
            continue;
        }
        let (o_from, r_from, o_to, r_to) = if speak {
            (0, 0, n, m)
        } else {
            let after = anchors.partition_point(|&(a, _)| a < i);
            // (after every reference tensor an anchor before it holds: anchors can cross)
            let (o_from, r_from) = match after {
                0 => (0, 0),
                k => (anchors[k - 1].0 + 1, r_seen[k - 1] + 1),
            };
            let (o_to, r_to) = anchors.get(after).map_or((n, m), |&(a, b)| (a, b));
            (o_from, r_from, o_to, r_to)
        };
        let key = (leaf_of(&ours[i].name), (!speak).then_some(ours[i].numel));
        let (Some(in_o), Some(in_r)) = (by_o.get(&key), by_r.get(&key)) else {
            continue;
        };
        fn window(all: &[usize], from: usize, to: usize) -> &[usize] {
            let lo = all.partition_point(|&k| k < from);
            let hi = all.partition_point(|&k| k < to).max(lo);
            &all[lo..hi]
        }
        let (in_o, in_r) = (window(in_o, o_from, o_to), window(in_r, r_from, r_to));
        let fits = |o: &str, r: &str| {
            if speak {
                names.numbers_match(o, r)
            } else {
                numbers_of(r).next().is_none()
            }
        };
        // (unique among all of the window's tensors, paired or not: one op's leftover is not
        // its identity)
        let found = only(
            in_r.iter()
                .copied()
                .filter(|&y| fits(&ours[i].name, &reference[y].name)),
        )
        .filter(|&j| !paired_r[j])
        .filter(|&j| {
            only(
                in_o.iter()
                    .filter(|&&x| fits(&ours[x].name, &reference[j].name)),
            ) == Some(&i)
        });
        let Some(j) = found else {
            continue;
        };
        // (another count: by name only)
        let (confidence, stats_diff) = score(&ours[i], &reference[j])
            .map_or((Confidence::OrderOnly, None), |(_, c, d)| (c, d));
        added.push((
            i,
            j,
            Pair {
                ours: ours[i].name.clone(),
                reference: reference[j].name.clone(),
                confidence,
                stats_diff,
                compared: true,
            },
        ));
        paired_o[i] = true;
        paired_r[j] = true;
    }
    pairs.extend(added);
    pairs.sort_by_key(|&(i, _, _)| i);
}

/// Evidence by values beats evidence by place (found by a bad-input hunt, 2026-12-04): a clean
/// port that dumps each layer's `cache_v` before its `cache_k` had its slots paired k with v by
/// their place, compared, and a false first divergence. A match by values is the same values
/// or close ones (a bf16 port against an f32 reference).
/// 1. An order-only pair goes where either tensor matches by values another tensor of the
///    other side that no confident pair holds: its place is not its identity (the same last
///    segment is none either: each layer's `cache_k` has it).
/// 2. A tensor left unpaired whose values match exactly one unpaired tensor of the other side,
///    and that one only it, pairs with it (compared), whatever their places; unless the names
///    speak and say they are two ops.
///
/// A match by close values counts in both only where the names' numbers do not say two
/// layers ([`Names::other_layers`]); the same values, anywhere.
fn values_over_places(
    ours: &[TensorStats],
    reference: &[TensorStats],
    score: &Score<'_>,
    names: &Names<'_>,
    mut pairs: Vec<(usize, usize, Pair)>,
) -> Vec<(usize, usize, Pair)> {
    let (n, m) = (ours.len(), reference.len());
    let (mut confident_o, mut confident_r) = (vec![false; n], vec![false; m]);
    for &(i, j, ref p) in pairs.iter() {
        if p.confidence != Confidence::OrderOnly {
            confident_o[i] = true;
            confident_r[j] = true;
        }
    }
    // A match by close values (not the same values) between names whose numbers the
    // confident pairs say are two layers is none (a newcomer's check: a TransformerLens dump
    // of a `rope-interleaved` run had its faulty `blocks.3.attn.hook_rot_k` paired with
    // `model.layers.0.input_layernorm`, statistics within 2%, and a false first divergence
    // there). Order plays no part: a safetensors file without our metadata lists its keys
    // sorted (a review: a first rule that limited how many pairs such a match may cross in
    // execution order lost faults there).
    let matches = |i: usize, j: usize| match score(i, j) {
        Some((_, Confidence::Same, _)) => true,
        Some((_, Confidence::Close, _)) => !names.other_layers(&ours[i].name, &reference[j].name),
        _ => false,
    };
    pairs.retain(|&(i, j, ref p)| {
        p.confidence != Confidence::OrderOnly
            || !((0..m).any(|y| y != j && !confident_r[y] && matches(i, y))
                || (0..n).any(|x| x != i && !confident_o[x] && matches(x, j)))
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
        let mut cands = (0..m).filter(|&y| !paired_r[y] && matches(i, y));
        let (Some(j), None) = (cands.next(), cands.next()) else {
            continue;
        };
        let mut back = (0..n).filter(|&x| !paired_o[x] && matches(x, j));
        let (Some(_), None) = (back.next(), back.next()) else {
            continue;
        };
        if names.word(&ours[i].name, &reference[j].name) == Word::Two {
            continue;
        }
        let Some((_, confidence, stats_diff)) = score(i, j) else {
            continue;
        };
        pairs.push((
            i,
            j,
            Pair {
                ours: ours[i].name.clone(),
                reference: reference[j].name.clone(),
                confidence,
                stats_diff,
                compared: true,
            },
        ));
        paired_o[i] = true;
        paired_r[j] = true;
    }
    pairs.sort_by_key(|&(i, _, _)| i);
    pairs
}

/// What the names say of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// The same op: the same last segment.
    One,
    /// Two ops: two last segments, each found on the other side (`cache_v` against
    /// `cache_k`), or one segment under other numbers where the confident pairs agree in
    /// theirs (`blk.2.k` against `model.layers.3.k`).
    Two,
    /// Nothing: the names do not speak, or a segment is the port's own (`act` against the
    /// reference's `act_fn`) or a number (`h.3` is `model.layers.2`).
    Silent,
}

/// The names' word on pairs, where they speak: at least 4 confident pairs, and 9 in 10 or more
/// of them end in the same dotted segment, as under a prefix rename (pairs ending in a number
/// aside, and those the names call two ops: a port's swap of k and v must not silence them).
struct Names<'a> {
    speak: bool,
    /// The shift of the numbers in the names (ours' less the reference's, number by number)
    /// that 9 confident pairs in 10 or more of those with numbers in their names, at least 4,
    /// share: none for a prefix rename (`blk.3.x` is `model.layers.3.x`), 1 for layers counted
    /// from 1 (`h.4.x`); `None`: the numbers do not speak.
    offset: Option<Vec<i128>>,
    leaves_o: std::collections::HashSet<&'a str>,
    leaves_r: std::collections::HashSet<&'a str>,
}

impl<'a> Names<'a> {
    fn new<'b>(
        confident: impl IntoIterator<Item = (&'b str, &'b str)>,
        ours: impl IntoIterator<Item = &'a str>,
        reference: impl IntoIterator<Item = &'a str>,
    ) -> Names<'a> {
        let mut names = Names {
            speak: true,
            offset: None,
            leaves_o: ours.into_iter().map(leaf_of).collect(),
            leaves_r: reference.into_iter().map(leaf_of).collect(),
        };
        let (mut counted, mut agree) = (0usize, 0usize);
        let mut shifts: HashMap<Option<Vec<i128>>, usize> = HashMap::new();
        for (o, r) in confident {
            if numbers_of(o).next().is_some() || numbers_of(r).next().is_some() {
                *shifts.entry(shift(o, r)).or_default() += 1;
            }
            match names.word(o, r) {
                Word::One => (counted, agree) = (counted + 1, agree + 1),
                Word::Two => {}
                Word::Silent => counted += usize::from(!(number(leaf_of(o)) || number(leaf_of(r)))),
            }
        }
        names.speak = counted >= 4 && agree * 10 >= counted * 9;
        let numbered: usize = shifts.values().sum();
        names.offset = shifts
            .into_iter()
            .filter(|(shift, count)| shift.is_some() && *count >= 4 && count * 10 >= numbered * 9)
            .find_map(|(shift, _)| shift);
        names
    }

    fn word(&self, ours: &str, reference: &str) -> Word {
        let (lo, lr) = (leaf_of(ours), leaf_of(reference));
        if !self.speak || number(lo) || number(lr) {
            Word::Silent
        } else if lo == lr {
            // the same op of another layer, where the numbers speak
            if self.offset.is_some() && !self.numbers_match(ours, reference) {
                Word::Two
            } else {
                Word::One
            }
        } else if self.leaves_r.contains(lo) && self.leaves_o.contains(lr) {
            Word::Two
        } else {
            Word::Silent
        }
    }

    /// The names say one op, layer and all: the same last segment, and numbers that differ by
    /// the shift the confident pairs share.
    fn same_op(&self, ours: &str, reference: &str) -> bool {
        self.offset.is_some() && self.word(ours, reference) == Word::One
    }

    /// What names an op where the names and their numbers speak: the last segment and the
    /// numbers, ours' less the shift the confident pairs share (`None`: they do not speak).
    fn key<'n>(&self, name: &'n str, ours: bool) -> Option<(&'n str, Vec<i128>)> {
        let offset = self.offset.as_ref().filter(|_| self.speak)?;
        let numbers = numbers(name)?;
        if ours && numbers.len() != offset.len() {
            return None;
        }
        let numbers = if ours {
            numbers.iter().zip(offset).map(|(a, b)| a - b).collect()
        } else {
            numbers
        };
        Some((leaf_of(name), numbers))
    }

    /// The numbers of the two names differ by the shift the confident pairs share, or neither
    /// name has a number (the model's ops outside its layers: `top.embed_tokens` is
    /// `model.embed_tokens` under a prefix rename; a newcomer's renamed demo dump left them
    /// in one file each, and its embedding's wrong scale was found a layer later).
    fn numbers_match(&self, ours: &str, reference: &str) -> bool {
        self.offset.is_some()
            && (shift(ours, reference) == self.offset || numberless(ours, reference))
    }

    /// The names' numbers say two layers: the confident pairs share a shift of their numbers
    /// (none under a prefix rename, `blocks.3` is `model.layers.3`), and these two names, as
    /// many numbers each, differ by another. Whatever their last segments (a TransformerLens
    /// `hook_rot_k` has no namesake among transformers' ops). Names without numbers, or with
    /// counts that differ, say nothing.
    fn other_layers(&self, ours: &str, reference: &str) -> bool {
        self.offset.is_some()
            && !numberless(ours, reference)
            && shift(ours, reference).is_some_and(|s| Some(s) != self.offset)
    }

    /// Pairs the names call two ops: the confident ones go (same or close values under two
    /// ops' names: neither is trusted), the order-only ones are not compared.
    fn heed(&self, pairs: &mut Vec<Pair>) {
        pairs.retain(|p| {
            p.confidence == Confidence::OrderOnly || self.word(&p.ours, &p.reference) != Word::Two
        });
        for p in pairs.iter_mut() {
            if self.word(&p.ours, &p.reference) == Word::Two {
                p.compared = false;
            }
        }
    }
}

/// The names' word on pairs aligned in several passes (a caller's), over all of them at once:
/// where the names speak (9 confident pairs in 10 or more, at least 4, end in the same dotted
/// segment, as under a prefix rename; pairs ending in a number aside), a pair whose last
/// segments differ, each of them found on the other side (`cache_v` with `cache_k`), is two
/// ops: a confident one goes (a port that writes v into its k slot: its `cache_k` has the
/// reference's `cache_v` values), an order-only one is not compared (found by a bad-input
/// hunt, 2026-12-04: `cache-overwrite` in a port that dumps `cache_v` before `cache_k` had its
/// slots of zeros compared k with v). `ours` and `reference`: every name aligned on each side.
/// [`align`] does this within its own pass, and pairs the tensors such pairs leave by name.
pub fn heed_names<'a>(
    pairs: &mut Vec<Pair>,
    ours: impl IntoIterator<Item = &'a str>,
    reference: impl IntoIterator<Item = &'a str>,
) {
    let confident: Vec<(String, String)> = pairs
        .iter()
        .filter(|p| p.confidence != Confidence::OrderOnly)
        .map(|p| (p.ours.clone(), p.reference.clone()))
        .collect();
    Names::new(
        confident.iter().map(|(o, r)| (o.as_str(), r.as_str())),
        ours,
        reference,
    )
    .heed(pairs);
}

/// The one item of `items`; `None` for none or several.
fn only<T>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

/// A name's last dotted segment.
fn leaf_of(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The segments of `name` that are numbers (its layer's, its expert's).
fn numbers_of(name: &str) -> impl Iterator<Item = &str> + Clone {
    name.split('.').filter(|s| number(s))
}

/// The numbers of `name` (`None`: one too large).
fn numbers(name: &str) -> Option<Vec<i128>> {
    numbers_of(name).map(|s| s.parse::<i128>().ok()).collect()
}

/// Ours' numbers less the reference's, number by number (`None`: other counts of numbers, or
/// a number too large).
fn shift(ours: &str, reference: &str) -> Option<Vec<i128>> {
    let (a, b) = (numbers(ours)?, numbers(reference)?);
    (a.len() == b.len()).then(|| a.iter().zip(&b).map(|(x, y)| x - y).collect())
}

/// Neither name has a number.
fn numberless(ours: &str, reference: &str) -> bool {
    numbers_of(ours).next().is_none() && numbers_of(reference).next().is_none()
}

/// A segment of digits only (a layer's number).
fn number(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
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

    /// Eight zeros under `name`.
    fn zero_tensor(name: &str) -> TensorStats {
        TensorStats {
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
        let ours = [
            t("a", 10, 1.0),
            zero_tensor("k0"),
            zero_tensor("v0"),
            zero_tensor("k1"),
        ];
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
        let s = |o: &str, r: &str| (o.to_string(), r.to_string(), Confidence::Same, true);
        assert_eq!(
            triples(v_before_k(1.0)),
            [
                s("a", "A"),
                s("l0.k", "L0.k"),
                s("l0.v", "L0.v"),
                s("l1.k", "L1.k"),
                s("l1.v", "L1.v")
            ]
        );
    }

    /// `align` of a port that dumps `v` before `k` in two layers, its values `scale` times the
    /// reference's, against the reference; the pairs in ours' names' order.
    fn v_before_k(scale: f64) -> Vec<Pair> {
        let ours = [
            named("a", scale),
            named("l0.v", 3.0 * scale),
            named("l0.k", 2.0 * scale),
            named("l1.v", 5.0 * scale),
            named("l1.k", 4.0 * scale),
        ];
        let reference = [
            named("A", 1.0),
            named("L0.k", 2.0),
            named("L0.v", 3.0),
            named("L1.k", 4.0),
            named("L1.v", 5.0),
        ];
        let mut pairs = align(&ours, &reference);
        pairs.sort_by(|a, b| a.ours.cmp(&b.ours));
        pairs
    }

    /// Zeros against zeros have no identity: by count and place only (a reference's zero bias
    /// took a port's never written cache slot as the same values, and its row passed).
    #[test]
    fn zeros_against_zeros_are_order_only() {
        let zeros = zero_tensor("z");
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
    /// pair of two names each found on the other side is no pair: its tensors pair by their
    /// names between the same compared pairs (compared); where the names do not speak (opaque
    /// names), or where a name is the port's own (`act` against `act_fn`), the place stands.
    #[test]
    fn names_that_contradict_a_place_pair_by_name() {
        let reference = [
            named("L.a", 1.0),
            named("L.b", 2.0),
            named("L.c", 3.0),
            named("L.d", 4.0),
            named("L.k", 5.0),
            named("L.v", 6.0),
        ];
        let order_only = |names: [&str; 6], values: [f64; 6]| -> Vec<(String, String, bool)> {
            let ours: Vec<TensorStats> =
                names.iter().zip(values).map(|(n, v)| named(n, v)).collect();
            align(&ours, &reference)
                .into_iter()
                .filter(|p| p.confidence == Confidence::OrderOnly)
                .map(|p| (p.ours, p.reference, p.compared))
                .collect()
        };
        let s = |o: &str, r: &str, c: bool| (o.to_string(), r.to_string(), c);
        // v dumped before k, both wrong: the names say the places are swapped
        assert_eq!(
            order_only(
                ["l.a", "l.b", "l.c", "l.d", "l.v", "l.k"],
                [1.0, 2.0, 3.0, 4.0, 60.0, 50.0]
            ),
            [s("l.v", "L.v", true), s("l.k", "L.k", true)]
        );
        // the same places under opaque names: the places stand
        assert_eq!(
            order_only(
                ["t1", "t2", "t3", "t4", "t5", "t6"],
                [1.0, 2.0, 3.0, 4.0, 60.0, 50.0]
            ),
            [s("t5", "L.k", true), s("t6", "L.v", true)]
        );
        // a name of the port's own (no `v2` in the reference): the place stands
        assert_eq!(
            order_only(
                ["l.a", "l.b", "l.c", "l.d", "l.k", "l.v2"],
                [1.0, 2.0, 3.0, 4.0, 50.0, 60.0]
            ),
            [s("l.k", "L.k", true), s("l.v2", "L.v", true)]
        );
    }

    /// A port that writes v into its k slot and k into its v slot: its `k` has the values of
    /// the reference's `v`. The names speak and call that pair two ops: each slot is paired
    /// with its namesake, compared, and shows the error (the values alone paired k with v,
    /// the same values, and the bug was an ok row).
    #[test]
    fn a_swap_of_k_and_v_is_paired_by_name_and_shows() {
        let reference = [
            named("L.a", 1.0),
            named("L.b", 2.0),
            named("L.c", 3.0),
            named("L.d", 4.0),
            named("L.k", 5.0),
            named("L.v", 6.0),
            named("L.o", 7.0),
        ];
        let ours = [
            named("l.a", 1.0),
            named("l.b", 2.0),
            named("l.c", 3.0),
            named("l.d", 4.0),
            named("l.k", 6.0),
            named("l.v", 5.0),
            named("l.o", 70.0),
        ];
        let mut got = triples(align(&ours, &reference));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let tail: Vec<_> = got
            .into_iter()
            .filter(|(o, _, _, _)| ["l.k", "l.v", "l.o"].contains(&o.as_str()))
            .collect();
        let s = |o: &str, r: &str| (o.to_string(), r.to_string(), Confidence::OrderOnly, true);
        assert_eq!(tail, [s("l.k", "L.k"), s("l.o", "L.o"), s("l.v", "L.v")]);
    }

    /// A bf16 port that dumps v before k: its values are close to the reference's, not the
    /// same; they still beat the places.
    #[test]
    fn close_values_beat_places() {
        let got: Vec<(String, String, bool)> = v_before_k(1.001)
            .into_iter()
            .map(|p| (p.ours, p.reference, p.compared))
            .collect();
        let s = |o: &str, r: &str| (o.to_string(), r.to_string(), true);
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

    /// A match by close values (not the same values) does not pair two tensors whose names'
    /// numbers say two layers, as the confident pairs read them (a newcomer's check: a faulty
    /// layer-3 tensor within 2% of layer 0's `input_layernorm` was paired with it, a false
    /// first divergence there); close ones of one layer still do (`close_values_beat_places`).
    #[test]
    fn close_values_do_not_pair_two_layers() {
        // Ten layers of three tensors, each its twin's values, but ours has no twin of the
        // reference's layer-0 `x`; ours' layer-8 `p` (a fault) lost its twin's values and is
        // within 1% of that `x`, which no tensor of ours pairs.
        let side = |upper: bool, bad: Option<f64>| -> Vec<TensorStats> {
            let mut v = Vec::new();
            for l in 0..10 {
                for k in 0..3 {
                    if !upper && l == 0 && k == 0 {
                        continue;
                    }
                    // Other leaves on each side (TransformerLens' against transformers'):
                    // only the numbers say which layer.
                    let name = match upper {
                        true => format!("model.layers.{l}.{}", ["x", "y", "z"][k]),
                        false => format!("blocks.{l}.{}", ["p", "q", "r"][k]),
                    };
                    let l2 = 10.0 + 10.0 * l as f64 + 3.0 * k as f64;
                    let l2 = match bad {
                        Some(b) if l == 8 && k == 0 => b,
                        _ => l2,
                    };
                    v.push(named(&name, l2));
                }
            }
            v
        };
        let reference = side(true, None);
        let pairs = align(&side(false, Some(10.1)), &reference);
        let got = pairs
            .iter()
            .find(|p| p.ours == "blocks.8.p" && p.compared)
            .map(|p| p.reference.as_str());
        // Close values (1%): not paired with layer 0's but at its place.
        assert_eq!(got, Some("model.layers.8.x"), "{pairs:?}");
    }

    /// Names that end in a layer's number (`h.3` is `model.layers.2`) say nothing: after a
    /// bug, the layer's output keeps its place and is compared.
    #[test]
    fn a_layer_number_is_no_word_of_the_names() {
        let mut ours = Vec::new();
        let mut reference = Vec::new();
        for layer in 0..3 {
            let wrong = if layer >= 1 { 10.0 } else { 1.0 };
            let base = 10.0 * layer as f64;
            for (k, leaf) in ["q", "k", "v", "o", "a", "b", "c", "d", "e", "f"]
                .iter()
                .enumerate()
            {
                let l2 = base + k as f64 * 0.5 + 1.0;
                ours.push(named(&format!("h.{}.attn.{leaf}", layer + 1), l2 * wrong));
                reference.push(named(&format!("model.layers.{layer}.self_attn.{leaf}"), l2));
            }
            ours.push(named(&format!("h.{}", layer + 1), (base + 9.7) * wrong));
            reference.push(named(&format!("model.layers.{layer}"), base + 9.7));
        }
        let pairs = align(&ours, &reference);
        let p = pairs.iter().find(|p| p.ours == "h.2").expect("h.2 paired");
        assert_eq!(
            (p.reference.as_str(), p.confidence, p.compared),
            ("model.layers.1", Confidence::OrderOnly, true)
        );
        assert!(pairs.iter().all(|p| p.compared), "{pairs:?}");
    }

    /// A zero bias on both sides at every layer keeps the layers after a bug in step: the
    /// biases pair with each other (not with the tensor after them), and each layer's other
    /// pairs are compared even where a later layer dumps one more tensor than the reference.
    #[test]
    fn zero_biases_keep_the_layers_after_a_bug_in_step() {
        let (mut ours, mut reference) = (Vec::new(), Vec::new());
        for layer in 0..4 {
            let wrong = if layer >= 1 { 10.0 } else { 1.0 };
            let base = 10.0 * layer as f64;
            ours.push(zero_tensor(&format!("t{layer}a")));
            reference.push(zero_tensor(&format!("R{layer}a")));
            for k in 0..2 {
                let l2 = base + k as f64 + 1.0;
                ours.push(named(&format!("t{layer}b{k}"), l2 * wrong));
                reference.push(named(&format!("R{layer}b{k}"), l2));
            }
        }
        ours.push(named("extra", 99.0));
        let pairs = align(&ours, &reference);
        for layer in 1..3 {
            for k in 0..2 {
                let o = format!("t{layer}b{k}");
                let p = pairs.iter().find(|p| p.ours == o).expect("paired");
                assert_eq!(p.reference, format!("R{layer}b{k}"), "{pairs:?}");
                assert!(p.compared, "{pairs:?}");
            }
        }
        let bias = pairs.iter().find(|p| p.ours == "t2a").expect("paired");
        assert_eq!(bias.reference, "R2a");
    }

    /// Slots dumped v before k after a bug, two layers of them past the last compared pair:
    /// each layer's `k` pairs with the reference's `k` of its layer by the numbers of the
    /// names, as the confident pairs have them (the same, or shifted: `h.1` is
    /// `model.layers.0`); a layer's op never pairs with another layer's by its last segment.
    #[test]
    fn a_repeated_last_segment_pairs_by_the_numbers() {
        let run = |ours_layer: &dyn Fn(usize) -> String| -> Vec<(String, String)> {
            let (mut ours, mut reference) = (Vec::new(), Vec::new());
            for layer in 0..2 {
                for (k, leaf) in ["a", "b", "c"].iter().enumerate() {
                    let l2 = 10.0 * layer as f64 + k as f64 + 1.0;
                    ours.push(named(&format!("{}.{leaf}", ours_layer(layer)), l2));
                    reference.push(named(&format!("model.layers.{layer}.{leaf}"), l2));
                }
            }
            for layer in 0..2 {
                let l2 = 100.0 + 10.0 * layer as f64;
                ours.push(named(&format!("{}.v", ours_layer(layer)), 7.0 * l2));
                ours.push(named(&format!("{}.k", ours_layer(layer)), 9.0 * l2));
                reference.push(named(&format!("model.layers.{layer}.k"), l2));
                reference.push(named(&format!("model.layers.{layer}.v"), l2 + 1.0));
            }
            align(&ours, &reference)
                .into_iter()
                .filter(|p| p.compared && (p.ours.ends_with(".k") || p.ours.ends_with(".v")))
                .map(|p| (p.ours, p.reference))
                .collect()
        };
        let s = |o: &str, r: &str| (o.to_string(), r.to_string());
        assert_eq!(
            run(&|l| format!("blk.{l}")),
            [
                s("blk.0.v", "model.layers.0.v"),
                s("blk.0.k", "model.layers.0.k"),
                s("blk.1.v", "model.layers.1.v"),
                s("blk.1.k", "model.layers.1.k"),
            ]
        );
        // layers counted from 1 (`h.1` is `model.layers.0`): the shift the confident pairs
        // share
        assert_eq!(
            run(&|l| format!("h.{}", l + 1)),
            [
                s("h.1.v", "model.layers.0.v"),
                s("h.1.k", "model.layers.0.k"),
                s("h.2.v", "model.layers.1.v"),
                s("h.2.k", "model.layers.1.k"),
            ]
        );
        // where the last segment repeats, the numbers decide for every tensor: pairing layer
        // 0's `v` does not leave a `v` that looks unique to another layer's
        let (mut ours, mut reference) = (Vec::new(), Vec::new());
        for layer in 0..2 {
            for (k, leaf) in ["a", "b", "c"].iter().enumerate() {
                let l2 = 10.0 * layer as f64 + k as f64 + 1.0;
                ours.push(named(&format!("blk.{layer}.{leaf}"), l2));
                reference.push(named(&format!("model.layers.{layer}.{leaf}"), l2));
            }
        }
        for (layer, ours_layer) in [(0, 0), (1, 7)] {
            let l2 = 100.0 + 10.0 * layer as f64;
            ours.push(named(&format!("blk.{ours_layer}.v"), 7.0 * l2));
            ours.push(named(&format!("blk.{ours_layer}.k"), 9.0 * l2));
            reference.push(named(&format!("model.layers.{layer}.k"), l2));
            reference.push(named(&format!("model.layers.{layer}.v"), l2 + 1.0));
        }
        let got: Vec<(String, String)> = align(&ours, &reference)
            .into_iter()
            .filter(|p| p.compared && (p.ours.ends_with(".k") || p.ours.ends_with(".v")))
            .map(|p| (p.ours, p.reference))
            .collect();
        assert_eq!(
            got,
            [
                s("blk.0.v", "model.layers.0.v"),
                s("blk.0.k", "model.layers.0.k")
            ]
        );
    }

    /// A newcomer's prefix rename of the demo dump (`blk.N` for `model.layers.N`, `top.X` for
    /// `model.X`): the ops outside the layers, whose names hold no number, pair by their last
    /// segment too, the embedding scaled wrong included (its statistics match nothing; it
    /// was left in one file only, and the bug found a layer later).
    #[test]
    fn ops_outside_the_layers_pair_by_name_under_a_prefix_rename() {
        let (mut ours, mut reference) = (
            vec![
                t("top.embed_tokens", 64, 0.3),
                t("top.rotary_emb", 32, 21.0),
            ],
            vec![
                t("model.embed_tokens", 64, 2.5),
                t("model.rotary_emb", 32, 21.0),
            ],
        );
        for layer in 0..2 {
            for (k, leaf) in ["a", "b", "c"].iter().enumerate() {
                let l2 = 10.0 * layer as f64 + k as f64 + 1.0;
                ours.push(named(&format!("blk.{layer}.{leaf}"), l2 * 1.5));
                reference.push(named(&format!("model.layers.{layer}.{leaf}"), l2));
                // (the layers' outputs, the same values: the confident pairs)
                ours.push(t(&format!("blk.{layer}.out{k}"), 16, l2));
                reference.push(t(&format!("model.layers.{layer}.out{k}"), 16, l2));
            }
        }
        ours.push(t("top.norm", 64, 4.0));
        reference.push(t("model.norm", 64, 3.0));
        let outside = |pairs: &[Pair]| -> Vec<(String, String, bool)> {
            pairs
                .iter()
                .filter(|p| p.ours.starts_with("top."))
                .map(|p| (p.ours.clone(), p.reference.clone(), p.compared))
                .collect()
        };
        let s = |o: &str, r: &str| (o.to_string(), r.to_string(), true);
        let want = [
            s("top.embed_tokens", "model.embed_tokens"),
            s("top.rotary_emb", "model.rotary_emb"),
            s("top.norm", "model.norm"),
        ];
        let mut pairs = align(&ours, &reference);
        assert_eq!(outside(&pairs), want);
        // And the names' word over a decode dump's passes keeps them (a review: it called
        // them two ops, and the pairs went again).
        heed_names(
            &mut pairs,
            ours.iter().map(|t| t.name.as_str()),
            reference.iter().map(|t| t.name.as_str()),
        );
        assert_eq!(outside(&pairs), want);
    }

    /// The names' word over pairs of several passes: a confident pair of two ops goes, an
    /// order-only one stays, not compared; where the names do not speak, nothing changes.
    #[test]
    fn heed_names_drops_confident_pairs_of_two_ops_and_uncompares_the_rest() {
        let pair = |o: &str, r: &str, confidence: Confidence| Pair {
            ours: o.into(),
            reference: r.into(),
            confidence,
            stats_diff: None,
            compared: true,
        };
        let mut pairs: Vec<Pair> = ["a", "b", "c", "d"]
            .iter()
            .map(|x| pair(&format!("l.{x}"), &format!("L.{x}"), Confidence::Same))
            .collect();
        pairs.push(pair("l.k", "L.v", Confidence::Same));
        pairs.push(pair("l.v", "L.k", Confidence::OrderOnly));
        let names = ["a", "b", "c", "d", "k", "v"];
        let (ours, reference): (Vec<String>, Vec<String>) = names
            .iter()
            .map(|x| (format!("l.{x}"), format!("L.{x}")))
            .unzip();
        let heed = |mut pairs: Vec<Pair>| {
            heed_names(
                &mut pairs,
                ours.iter().map(String::as_str),
                reference.iter().map(String::as_str),
            );
            pairs
                .into_iter()
                .map(|p| (p.ours, p.compared))
                .collect::<Vec<_>>()
        };
        let got = heed(pairs.clone());
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(!got.iter().any(|(o, _)| o == "l.k"), "{got:?}");
        assert_eq!(got[4], ("l.v".to_string(), false));
        // three agreeing pairs: the names do not speak
        pairs.remove(0);
        assert!(heed(pairs).iter().all(|(_, c)| *c));
    }

    /// Opaque names, `v` dumped before `k`, then a bug: the slots pair by values across each
    /// other, and the ops after them, whose values tell nothing, pair by their places in the
    /// segment after (the alignment's ties had put `x` on `O`, `o` and `X` in no pair).
    #[test]
    fn the_ops_after_crossing_pairs_pair_by_their_places() {
        let ours = [
            named("a", 1.0),
            named("v", 3.0),
            named("k", 2.0),
            named("x", 40.0),
            named("o", 50.0),
        ];
        let reference = [
            named("A", 1.0),
            named("K", 2.0),
            named("V", 3.0),
            named("X", 4.0),
            named("O", 5.0),
        ];
        let mut got: Vec<(String, String, bool)> = align(&ours, &reference)
            .into_iter()
            .map(|p| (p.ours, p.reference, p.compared))
            .collect();
        got.sort();
        let s = |o: &str, r: &str| (o.to_string(), r.to_string(), true);
        assert_eq!(
            got,
            [
                s("a", "A"),
                s("k", "K"),
                s("o", "O"),
                s("v", "V"),
                s("x", "X")
            ]
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Layers of five ops each under `prefix` (`h`: layers counted from 1), their counts
        /// drawn, their values 1.1^index times `scale(index)`, k after v where `v_first` says.
        fn side(
            prefix: &str,
            counts: &[u64],
            scale: impl Fn(usize) -> f64,
            v_first: &[bool],
        ) -> Vec<TensorStats> {
            let mut out = Vec::new();
            for (layer, chunk) in counts.chunks(5).enumerate() {
                let mut ops: Vec<usize> = (0..chunk.len()).collect();
                // ops 2 and 3 are k and v: v first where asked
                if chunk.len() == 5 && v_first.get(layer).copied().unwrap_or(false) {
                    ops.swap(2, 3);
                }
                for k in ops {
                    let idx = layer * 5 + k;
                    let leaf = ["a", "b", "k", "v", "o"][k];
                    let l2 = 1.1f64.powi(idx as i32) * scale(idx);
                    let mut t = TensorStats {
                        name: format!("{prefix}.{}.{leaf}", layer + usize::from(prefix == "h")),
                        numel: chunk[k],
                        dims: vec![chunk[k] as usize],
                        values: None,
                    };
                    t.values = Some(ValueStats {
                        l2,
                        mean: l2 / 10.0,
                        max_abs: l2 / 3.0,
                        mean_abs: l2 / 5.0,
                        kurtosis: 3.0,
                    });
                    out.push(t);
                }
            }
            out
        }

        /// Each pair of `align` over the two sides: (ours' layer and leaf, the reference's,
        /// compared).
        fn pairs(ours: &[TensorStats], reference: &[TensorStats]) -> Vec<(String, String, bool)> {
            let strip = |n: &str| n.split_once('.').map_or(n, |(_, r)| r).to_string();
            align(ours, reference)
                .into_iter()
                .map(|p| (strip(&p.ours), strip(&p.reference), p.compared))
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// A clean port under a prefix rename, some layers dumping v before k: every
            /// tensor pairs with its namesake, compared. With a bug from some op on (values
            /// that pair by nothing): every tensor is in a pair with its namesake, compared,
            /// without v before k and, where the names speak, with it, under the names as
            /// they are or counting the layers from 1.
            #[test]
            fn namesakes_pair(
                counts in proptest::collection::vec(prop_oneof![Just(4u64), Just(8u64)], 5..30),
                v_first in proptest::collection::vec(any::<bool>(), 6),
                bug in 0usize..30,
            ) {
                let none = |_: usize| 1.0;
                let reference = side("R", &counts, none, &[]);
                let n = reference.len();
                // clean, v before k where drawn
                let ours = side("o", &counts, none, &v_first);
                let got = pairs(&ours, &reference);
                prop_assert_eq!(got.len(), n, "{:?}", got);
                prop_assert!(got.iter().all(|(o, r, c)| o == r && *c), "{:?}", got);
                // a bug from op `bug` on (a factor between two of the values' steps)
                let wrong = |idx: usize| if idx >= bug { 1.1f64.powf(20.5) } else { 1.0 };
                let ours = side("o", &counts, wrong, &[]);
                let got = pairs(&ours, &reference);
                prop_assert_eq!(got.len(), n, "{:?}", got);
                prop_assert!(got.iter().all(|(o, r, c)| o == r && *c), "{:?}", got);
                // (where at least 4 ops agree before the bug: the names speak)
                if bug >= 5 {
                    let ours = side("o", &counts, wrong, &v_first);
                    let got = pairs(&ours, &reference);
                    prop_assert!(got.iter().all(|(o, r, c)| !*c || o == r), "{:?}", got);
                    prop_assert!(got.len() == n && got.iter().all(|(_, _, c)| *c), "{:?}", got);
                    // layers counted from 1 in ours (`h.1` is layer 0): no compared pair of
                    // another layer or op
                    let ours = side("h", &counts, wrong, &v_first);
                    let got = pairs(&ours, &reference);
                    let shift = |name: &str| -> String {
                        let (layer, leaf) = name.split_once('.').unwrap_or((name, ""));
                        let layer: usize = layer.parse().unwrap_or(usize::MAX);
                        format!("{}.{leaf}", layer.wrapping_sub(1))
                    };
                    prop_assert!(got.len() == n, "{:?}", got);
                    prop_assert!(got.iter().all(|(o, r, c)| *c && shift(o) == *r), "{:?}", got);
                }
            }
        }
    }

    /// A clean port with one extra tensor, where a reference tensor repeats its neighbour's
    /// values (a review, 2026-12-04): the segment's places would put the extra tensor on the
    /// reference tensor whose namesake holds its values, compared, a false divergence. A
    /// segment's places are taken together or not at all.
    #[test]
    fn a_segment_refuted_by_values_or_names_places_nothing() {
        let ours = [
            t("o.0.v", 8, 1.0),
            t("x.99.extra", 16, 778.0),
            t("o.1.q", 16, 2.0),
            zero_tensor("o.3.q"),
            t("o.4.v", 8, 5.0),
            t("o.5.o", 8, 6.0),
            t("o.6.k", 8, 7.0),
        ];
        let reference = [
            t("R.0.v", 8, 1.0),
            t("R.1.q", 16, 2.0),
            t("R.2.o", 16, 2.0),
            zero_tensor("R.3.q"),
            t("R.4.v", 8, 5.0),
            t("R.5.o", 8, 6.0),
            t("R.6.k", 8, 7.0),
        ];
        let pairs = align(&ours, &reference);
        // no compared pair of values that disagree: the clean port has no divergence
        for p in pairs.iter().filter(|p| p.compared) {
            assert!(
                p.stats_diff.is_some_and(|d| d <= 1e-6),
                "{p:?} in {pairs:?}"
            );
        }
        assert!(
            !pairs.iter().any(|p| p.ours == "x.99.extra" && p.compared),
            "{pairs:?}"
        );
    }
}
