//! The per-position profile of one op: which token positions carry its error.
//!
//! A port that is wrong everywhere (a scale, a wrong weight) is wrong at every position; a
//! position-dependent bug (RoPE, a position offset, a mask, a KV cache) is wrong from some
//! position on, or at the last one only. [`position_profile`] splits an op's error along its
//! token axis ([`position_axis`]: `[B, T, C]` activations, `[B, T, H, D]` q/k norms,
//! `[B, H, T, D]` RoPE outputs) and judges each position by the op's own decision rule
//! (`||ours_p - ref_p|| > atol * sqrt(n_p) + rtol * ||ref_p||`, or NaN/Inf at other places on
//! the two sides), so "affected" means what "diverged" / "nonfinite" mean for the whole op.
//! Pure, no I/O; the caller reads the tensors.

use divergence_names::Op;
use serde::{Deserialize, Serialize};

use crate::metrics::ValuesRef;

/// Most entries (token positions, decode steps) a profile may have: the token effect's
/// [`crate::tokens::MAX_POSITIONS`], a million, past any model's context. A profile costs ~65
/// bytes an entry while it is made, and its JSON ~40; 60,000,000 positions (two 233 KB
/// `savez_compressed` files) took 3.8 GB and wrote 2.3 GB of JSON (2026-12-04, session 31).
/// More, and the op has no profile; [`too_many_positions`] says so.
pub const MAX_POSITIONS: usize = crate::tokens::MAX_POSITIONS;

/// The note a report gives for an op with no profile because its token axis (or its
/// positions across decode steps) holds `entries`, more than [`MAX_POSITIONS`]; `None` within
/// the cap.
pub fn too_many_positions(op: &str, entries: usize) -> Option<String> {
    (entries > MAX_POSITIONS).then(|| {
        format!(
            "no per-position profile of {}: {entries} token positions, more than the {MAX_POSITIONS} a profile holds",
            divergence_names::one_line(op)
        )
    })
}

/// Where along the token axis an op's error lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PositionPattern {
    /// Every position is over the tolerance: a position-independent error.
    All,
    /// Every position from `start` on (`start > 0`), none before: a position-dependent op.
    From {
        /// The first affected position.
        start: usize,
    },
    /// The last position only.
    Last,
    /// Some positions, in no run to the end.
    Some,
    /// No position is over the tolerance. Under the norm-wise rule this cannot happen for a
    /// diverged op (the per-position limits add up to at most the op's); it can where the op
    /// was judged otherwise (the caller gives no profile then) or its sums overflow f64.
    None,
}

/// The per-position error of one op (the first divergence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionProfile {
    /// The probe.
    pub op: String,
    /// The token axis of the reference's shape.
    pub axis: usize,
    /// `||ours_p - ref_p|| / ||ref_p||` per position over the elements finite on both sides
    /// (`None` where `ref_p` is all zeros and ours is not, or nothing is finite).
    pub rel_err: Vec<Option<f64>>,
    /// The op's tolerance at each position in the same unit,
    /// `(atol * sqrt(n_p) + rtol * ||ref_p||) / ||ref_p||` (`None` where `ref_p` is all zeros
    /// or nothing is finite): a position is over it exactly when it is affected.
    pub rel_tol: Vec<Option<f64>>,
    /// Per position: over the op's tolerance (its error above `rel_tol`, or NaN/Inf at other
    /// places on the two sides).
    pub over: Vec<bool>,
    /// Positions over the op's tolerance.
    pub affected: usize,
    /// The first of them, as an index into the arrays above (its token position is
    /// [`PositionProfile::positions`]' entry there, when the profile numbers its entries).
    pub first_affected: Option<usize>,
    /// Where they are (a `from` pattern's `start` is an index too, like `first_affected`).
    pub pattern: PositionPattern,
    /// With decode steps: the step of each position (0 = the prefill's positions, then one
    /// position per decode step), when the profile runs across steps ([`across_steps`]);
    /// empty (and left out of the JSON) for one pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<usize>,
    /// The token position of each entry, `T` the prompt's length:
    /// - across decode steps ([`across_steps`]), when `T` is known: the prefill's positions
    ///   `0..T`, then step `s` at `T + s - 1` (entries and positions differ where a dump lacks
    ///   steps, or where the op has no prefill row: a cache probe's first entry is step 1,
    ///   position `T`);
    /// - the logits when they keep the prompt's last `k` rows only: those rows are `T - k..T`
    ///   (in one pass too: [`PositionProfile::at_prompt_end`]).
    ///
    /// Empty (and left out of the JSON) otherwise: one pass, where entry `i` is position `i`;
    /// or a profile of decode steps only whose `T` is unknown, whose entries are the steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<usize>,
}

impl PositionProfile {
    /// Numbers a one-pass profile of the logits (`lm_head`) with their token positions where
    /// its token axis holds fewer positions than the prompt's `prompt_len` tokens: the last
    /// ones (logits kept for the last `k` tokens only, numbered as the token effect numbers
    /// them). Unchanged otherwise: another op, a profile as long as the prompt, no prompt
    /// length, or a profile across decode steps ([`across_steps`] numbers those).
    pub fn at_prompt_end(mut self, prompt_len: Option<usize>) -> PositionProfile {
        let t = self.rel_err.len();
        let first = first_token_position(&self.op, t, prompt_len);
        if self.steps.is_empty() && first > 0 {
            self.positions = (first..first + t).collect();
        }
        self
    }

    /// One line: `error at every position (16)`, `error from position 9 on (7 of 16)`, ...
    pub fn summary(&self) -> String {
        let t = self.rel_err.len();
        // With decode steps, a position is named by its step too; a profile without the
        // prefill's positions (cache probes exist in decode steps only) counts steps.
        let decode_only = self.steps.first().is_some_and(|&s| s > 0);
        // An entry is named by its token position where the profile numbers them
        // ([`PositionProfile::positions`]: a prefill that keeps the prompt's last rows only,
        // decode steps); else step s is the token at the prefill's length + s - 1, whichever
        // steps the dumps hold (found by a bad-input hunt: with steps 2 and 3 only, step 3 was
        // named position 5).
        let prefill = self.steps.iter().take_while(|&&s| s == 0).count();
        let position = |i: usize| self.positions.get(i).copied();
        let label = |i: usize| match self.steps.get(i) {
            Some(&s) if s > 0 && decode_only => format!("decode step {s}"),
            Some(&s) if s > 0 => format!(
                "position {} (decode step {s})",
                position(i).unwrap_or(prefill + s - 1)
            ),
            _ => format!("position {}", position(i).unwrap_or(i)),
        };
        let unit = if decode_only {
            "decode steps"
        } else {
            "positions"
        };
        // The worst of the affected positions (an unaffected one may have a larger relative
        // error where its reference is tiny and atol dominates).
        let worst = self
            .rel_err
            .iter()
            .zip(&self.over)
            .enumerate()
            .filter(|(_, (_, &over))| over)
            .filter_map(|(p, (e, _))| e.map(|e| (p, e)))
            .fold(None, |m: Option<(usize, f64)>, (p, e)| match m {
                Some((_, w)) if w >= e => m,
                _ => Some((p, e)),
            });
        let worst = worst.map_or(String::new(), |(p, e)| {
            format!("; worst rel err {} at {}", crate::sci(e), label(p))
        });
        let what = match self.pattern {
            PositionPattern::All if decode_only => format!("error at every decode step ({t})"),
            PositionPattern::All => format!("error at every position ({t})"),
            PositionPattern::From { start } => format!(
                "error from {} on ({} of {t} {unit}; earlier ones within tolerance)",
                label(start),
                self.affected
            ),
            PositionPattern::Last => format!("error at the last {} only", label(t - 1)),
            // Every position but the last: what a missing causal mask leaves (the last sees
            // every key either way; session 62's `no-causal-mask`).
            PositionPattern::Some
                if t >= 3 && self.affected + 1 == t && self.over.last() == Some(&false) =>
            {
                format!(
                    "error at every one of {t} {unit} but the last ({} within tolerance)",
                    label(t - 1)
                )
            }
            PositionPattern::Some => format!(
                "error at {} of {t} {unit}, the first at {}",
                self.affected,
                label(self.first_affected.unwrap_or(0))
            ),
            PositionPattern::None => {
                format!("no single one of {t} {unit} over the tolerance")
            }
        };
        // How close the prefill's positions come to the tolerance, against the decode steps
        // over it: a port that rounds at other points (a fused kernel) errs at every position
        // alike, and a decode step's one row can cross a preset first while the prompt's rows
        // stay under it (a held-out check read a late rounding's one step of 14 at 1.21 of its
        // tolerance, the prefill at 0.30, as a decode-path error). A prefill under a fifth of
        // the worst step over it is clean (a review: an exact prefill was hedged; a held-out
        // check's decode-mask with a 1-token prompt, the prefill and the unaffected steps both
        // at f32 noise, was hedged by a rule against the steps' median).
        let margin = |(e, t): (&Option<f64>, &Option<f64>)| {
            Some(e.as_ref()? / t.as_ref().filter(|t| **t > 0.0)?)
        };
        let entries = || {
            self.steps
                .iter()
                .zip(&self.over)
                .zip(self.rel_err.iter().zip(&self.rel_tol))
        };
        let prefill_margin = entries()
            .filter(|((&s, _), _)| s == 0)
            .filter_map(|(_, m)| margin(m))
            .fold(0.0f64, f64::max);
        let worst_over = entries()
            .filter(|((&s, &over), _)| s > 0 && over)
            .filter_map(|(_, m)| margin(m))
            .fold(0.0f64, f64::max);
        let alike = worst_over > 0.0 && prefill_margin > 0.0 && prefill_margin >= 0.2 * worst_over;
        let decode_steps = self.steps.iter().filter(|&&s| s > 0).count();
        let decode_under = self
            .steps
            .iter()
            .zip(&self.over)
            .filter(|(&s, &over)| s > 0 && !over)
            .count();
        let decode = match (self.first_affected, decode_only) {
            (Some(p), false) if !self.steps.is_empty() => match self.steps.get(p) {
                Some(0) => "; already in the prefill".to_string(),
                // Judged by another measure than the rows' tolerance (`--truth`'s noise
                // ratio): the prefill is clean though its positions pass that tolerance (a
                // held-out check read "within the tolerance (at most 6.94 of it)").
                Some(_) if alike && prefill_margin > 1.0 => {
                    // A prefill as far over that tolerance as the flagged steps is no reading
                    // of a decode-path error (a review).
                    let reading = if prefill_margin >= worst_over {
                        "an error of every position alike, which the verdict flags at some \
                         decode steps"
                    } else {
                        "a decode-path error, or an error of every position that some rows \
                         cross first"
                    };
                    format!(
                        "; the prefill is judged clean, and so are {decode_under} of \
                         {decode_steps} decode steps, though its positions reach {:.2} of the \
                         rows' tolerance and the worst flagged step {:.2} of it: {reading}",
                        prefill_margin, worst_over
                    )
                }
                Some(_) if alike => {
                    format!(
                        "; the prefill's positions are within the tolerance (at most {:.2} of it), \
                         and so are {decode_under} of {decode_steps} decode steps: a decode-path \
                         error, or an error of every position that some rows cross first",
                        prefill_margin
                    )
                }
                Some(_) => "; the prefill's positions are clean: a decode-path error".to_string(),
                None => String::new(),
            },
            _ => String::new(),
        };
        format!("{what}{worst}{decode}")
    }
}

/// Whether `name` is an op whose token axis may hold the prompt's last rows only: the logits
/// (`lm_head`; an engine computes the last position's, or the last k), numbered from the
/// prompt's end as the token effect numbers them. Every other op's token axis is the whole
/// prompt (docs/dump-format.md); a shorter one is not renumbered.
fn keeps_last_rows(name: &str) -> bool {
    Op::of(name) == Op::LmHead
}

/// The token position of the first of `rows` positions along the token axis of the prefill's
/// `name`, in a prompt of `prompt_len` tokens: `prompt_len - rows` for logits that keep the
/// prompt's last rows only ([`keeps_last_rows`]), else 0 (the one numbering of the profile and
/// the `position` hint; a decode step's rows are not the prompt's).
pub(crate) fn first_token_position(name: &str, rows: usize, prompt_len: Option<usize>) -> usize {
    match prompt_len {
        Some(p)
            if keeps_last_rows(name) && divergence_names::split_step(name).1 == 0 && p > rows =>
        {
            p - rows
        }
        _ => 0,
    }
}

/// Which positions an op's error reaches across decode steps: the prefill's positions (the
/// step-0 row's own profile, when it has one), then one position per decode step, judged by
/// that step's row (its `rel_l2_err` against its tolerance, over when the row diverges). A
/// decode bug shows as "from position T on": positions >= the prompt length. `steps` are the
/// op's decode rows in step order; `prompt_len` the prompt's length in tokens when known, which
/// numbers the entries' token positions ([`PositionProfile::positions`]) where the op has no
/// prefill profile (a cache probe), and for the logits, which may keep the prompt's last rows
/// only; else the prefill's own positions count the prompt.
pub fn across_steps(
    op: &str,
    prefill: Option<PositionProfile>,
    steps: &[&crate::OpResult],
    prompt_len: Option<usize>,
) -> Option<PositionProfile> {
    let prefill_entries = prefill.as_ref().map_or(0, |p| p.rel_err.len());
    if steps.is_empty() || too_many_positions(op, prefill_entries + steps.len()).is_some() {
        return None;
    }
    let (mut rel_err, mut rel_tol, mut over, mut at, axis) = match prefill {
        Some(p) => {
            let n = p.rel_err.len();
            (p.rel_err, p.rel_tol, p.over, vec![0; n], p.axis)
        }
        // No prefill row (a cache probe): the token axis of the first step's shape (a
        // newcomer's check: `cache_k`'s `[B, H, 1, D]` said axis 1, its heads).
        None => {
            let axis = steps
                .first()
                .and_then(|row| token_axis(op, row.tensor.shape.as_deref()?))
                .unwrap_or(1);
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), axis)
        }
    };
    for row in steps {
        rel_err.push(row.errors.rel_l2_err);
        rel_tol.push(match (row.rule.tol_threshold, row.rule.ref_l2) {
            (Some(t), Some(r)) if r > 0.0 => Some(t / r).filter(|x| x.is_finite()),
            _ => None,
        });
        over.push(row.status.is_divergence());
        at.push(row.step);
    }
    let (affected, first_affected, pattern) = tally(&over);
    // Step s is the token at T + s - 1. T is the prefill's count of positions where the op
    // has a prefill row, else the prompt's length. The logits may keep the prompt's last k
    // rows only (as tokens.rs numbers them): their T is the prompt's length, and the prefill's
    // entries its last k positions; a prompt shorter than their rows cannot be it, and the
    // rows count instead. (Another op's token axis is the whole prompt, by the dump contract.)
    let prefill_len = at.iter().take_while(|&&s| s == 0).count();
    let t = match prompt_len {
        Some(p) if keeps_last_rows(op) && p >= prefill_len => Some(p),
        _ if prefill_len > 0 => Some(prefill_len),
        p => p,
    };
    let positions = t.map_or_else(Vec::new, |t| {
        let first = t - prefill_len;
        at.iter()
            .enumerate()
            .map(|(i, &s)| if s == 0 { first + i } else { t + s - 1 })
            .collect()
    });
    Some(PositionProfile {
        op: op.to_string(),
        axis,
        rel_err,
        rel_tol,
        over,
        affected,
        first_affected,
        pattern,
        steps: at,
        positions,
    })
}

/// The token axis of a probe of this shape, by the dump contract's layouts: `[B, H, T, D]` for
/// the RoPE outputs, `[B, T, ...]` for every other probe of 3 or more dimensions, `[T, C]` for
/// 2; `None` for 0-d / 1-d probes and a token axis of fewer than 2 positions (a profile of one
/// position says nothing of which positions carry an error; [`token_axis`] takes it).
pub fn position_axis(name: &str, shape: &[usize]) -> Option<usize> {
    token_axis(name, shape).filter(|&axis| shape[axis] >= 2)
}

/// [`position_axis`], however few positions: a prefill row of one position (a one-token prompt,
/// the logits of the prompt's last row only) is still the first entry of a profile across
/// decode steps ([`across_steps`]).
pub fn token_axis(name: &str, shape: &[usize]) -> Option<usize> {
    match (shape.len(), Op::of(name)) {
        (4, Op::Rope(_) | Op::CacheK | Op::CacheV) => Some(2),
        (n, _) if n >= 3 => Some(1),
        (2, _) => Some(0),
        _ => None,
    }
}

/// The token axis of an op's prefill row as the first entries of its profile across decode
/// steps ([`across_steps`]): [`token_axis`], one position too, but for logits that keep the
/// prompt's last rows (`lm_head`) when the prompt's length is unknown, whose one
/// row would be numbered as a one-token prompt's ([`position_axis`] then).
pub fn prefill_axis(name: &str, shape: &[usize], prompt_len: Option<usize>) -> Option<usize> {
    if prompt_len.is_none() && keeps_last_rows(name) {
        position_axis(name, shape)
    } else {
        token_axis(name, shape)
    }
}

/// The per-position profile of `ours` against `reference` (row-major, `shape` the reference's,
/// equally many values) along `axis`, judged with the op's `rtol` / `atol`. `None` when the
/// values do not fill the shape, the axis is not in it or holds more than [`MAX_POSITIONS`]
/// positions ([`too_many_positions`]).
pub fn position_profile(
    name: &str,
    ours: ValuesRef<'_>,
    reference: ValuesRef<'_>,
    shape: &[usize],
    axis: usize,
    rtol: f64,
    atol: f64,
) -> Option<PositionProfile> {
    let t = *shape.get(axis)?;
    let inner: usize = shape.get(axis + 1..)?.iter().product();
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    if t == 0 || t > MAX_POSITIONS || inner == 0 || ours.len() != n || reference.len() != n {
        return None;
    }
    // Per position: squared error, squared reference norm, elements finite on both sides.
    let mut d2 = vec![0.0f64; t];
    let mut r2 = vec![0.0f64; t];
    let mut count = vec![0u64; t];
    let mut nonfinite = vec![0u64; t];
    for k in 0..n {
        let (Some(o), Some(r)) = (ours.get(k), reference.get(k)) else {
            continue;
        };
        if !(o.is_finite() && r.is_finite()) {
            // NaN/Inf at the same place on both sides is compared as equal (the op's rule).
            let same = (o.is_nan() && r.is_nan()) || o == r;
            if !same {
                nonfinite[(k / inner) % t] += 1;
            }
            continue;
        }
        let p = (k / inner) % t;
        d2[p] += (o - r) * (o - r);
        r2[p] += r * r;
        count[p] += 1;
    }
    let mut rel_err = Vec::with_capacity(t);
    let mut rel_tol = Vec::with_capacity(t);
    let mut over = Vec::with_capacity(t);
    for p in 0..t {
        let (d, rn) = (d2[p].sqrt(), r2[p].sqrt());
        rel_err.push(if count[p] == 0 {
            None
        } else if rn > 0.0 {
            Some(d / rn).filter(|e| e.is_finite())
        } else if d == 0.0 {
            Some(0.0)
        } else {
            None
        });
        let limit = atol * (count[p] as f64).sqrt() + rtol * rn;
        rel_tol.push(
            (count[p] > 0 && rn > 0.0)
                .then(|| limit / rn)
                .filter(|t| t.is_finite()),
        );
        over.push(nonfinite[p] > 0 || (count[p] > 0 && d > limit));
    }
    let (affected, first_affected, pattern) = tally(&over);
    Some(PositionProfile {
        op: name.to_string(),
        axis,
        rel_err,
        rel_tol,
        over,
        affected,
        first_affected,
        pattern,
        steps: Vec::new(),
        positions: Vec::new(),
    })
}

/// How many positions are over the tolerance, the first of them, and where they are.
fn tally(over: &[bool]) -> (usize, Option<usize>, PositionPattern) {
    let t = over.len();
    let affected = over.iter().filter(|&&o| o).count();
    let first_affected = over.iter().position(|&o| o);
    let pattern = match first_affected {
        None => PositionPattern::None,
        Some(_) if affected == t => PositionPattern::All,
        Some(p) if p == t - 1 => PositionPattern::Last,
        Some(p) if affected == t - p => PositionPattern::From { start: p },
        Some(_) => PositionPattern::Some,
    };
    (affected, first_affected, pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[1, T, C]` ref values `1.0`; ours off by `err[p]` at every channel of position p.
    fn profile(err: &[f64]) -> PositionProfile {
        let c = 4;
        let r = vec![1.0f64; err.len() * c];
        let o: Vec<f64> = (0..r.len()).map(|k| 1.0 + err[k / c]).collect();
        let shape = [1, err.len(), c];
        position_profile(
            "model.layers.0.mlp",
            ValuesRef::F64(&o),
            ValuesRef::F64(&r),
            &shape,
            1,
            1e-3,
            0.0,
        )
        .unwrap()
    }

    /// [`profile`] of the logits (`lm_head`).
    fn logits(err: &[f64]) -> PositionProfile {
        PositionProfile {
            op: "lm_head".to_string(),
            ..profile(err)
        }
    }

    #[test]
    fn patterns() {
        let p = profile(&[0.1, 0.1, 0.1]);
        assert_eq!(p.pattern, PositionPattern::All);
        assert_eq!(
            p.summary(),
            "error at every position (3); worst rel err 1.000e-01 at position 0"
        );
        let p = profile(&[0.0, 1e-6, 0.1, 0.2]);
        assert_eq!(p.pattern, PositionPattern::From { start: 2 });
        assert_eq!((p.affected, p.first_affected), (2, Some(2)));
        assert!((p.rel_err[1].unwrap() - 1e-6).abs() < 1e-12);
        assert!(
            p.summary()
                .starts_with("error from position 2 on (2 of 4 positions;"),
            "{}",
            p.summary()
        );
        assert_eq!(profile(&[0.0, 0.0, 0.5]).pattern, PositionPattern::Last);
        // every position but the last (a missing causal mask)
        let p = profile(&[0.3, 0.2, 0.1, 0.0]);
        assert_eq!(p.pattern, PositionPattern::Some);
        assert_eq!(
            p.summary(),
            "error at every one of 4 positions but the last (position 3 within tolerance); worst rel err 3.000e-01 at position 0"
        );
        // two positions: the first only, said as such
        assert!(profile(&[0.3, 0.0])
            .summary()
            .starts_with("error at 1 of 2 positions, the first at position 0"));
        let p = profile(&[0.0, 0.5, 0.0, 0.0]);
        assert_eq!(p.pattern, PositionPattern::Some);
        assert_eq!(
            p.summary(),
            "error at 1 of 4 positions, the first at position 1; worst rel err 5.000e-01 at position 1"
        );
        assert_eq!(profile(&[1e-4, 1e-4]).pattern, PositionPattern::None);
    }

    fn step_row(step: usize, rel: f64, diverged: bool) -> crate::OpResult {
        let mut r: crate::OpResult = serde_json::from_value(serde_json::json!({
            "name": format!("model.rotary_emb@{step}"), "status": if diverged { "diverged" } else { "ok" },
            "reason": null, "layer": null, "step": step,
            "shape": null, "shape_ours": null, "dtype_ours": null, "dtype_ref": null, "numel": null,
            "n_compared": null, "rtol": null, "atol": null, "ours_l2": null, "ref_l2": 2.0,
            "diff_l2": null, "tol_threshold": 0.002, "max_abs_err": null, "max_abs_err_index": null,
            "mean_abs_err": null, "rel_l2_err": rel, "max_rel_err": null, "cosine": null,
            "nan_ours": null, "inf_ours": null, "nan_ref": null, "inf_ref": null,
            "nonfinite_mismatch": null, "ours_truth_rel_err": null, "ref_truth_rel_err": null,
            "noise_ratio": null, "truth_problem": null, "frac_outside_tol": null,
            "local_growth": null, "mapped": null
        }))
        .unwrap();
        r.step = step;
        r
    }

    #[test]
    fn decode_steps_extend_the_prefill_profile() {
        let prefill = profile(&[0.0, 0.0, 0.0]);
        let rows = [
            step_row(1, 1e-6, false),
            step_row(2, 0.3, true),
            step_row(3, 0.2, true),
        ];
        let refs: Vec<&crate::OpResult> = rows.iter().collect();
        let p = across_steps("model.rotary_emb", Some(prefill.clone()), &refs, Some(99)).unwrap();
        assert_eq!(p.steps, [0, 0, 0, 1, 2, 3]);
        // The prefill's own positions count the prompt (only the logits may keep its last
        // rows): entries are token positions here.
        assert_eq!(p.positions, [0, 1, 2, 3, 4, 5]);
        // So they do with the prompt's length, without it, or with a shorter one.
        for len in [Some(3), None, Some(2)] {
            let q = across_steps("model.rotary_emb", Some(prefill.clone()), &refs, len).unwrap();
            assert_eq!(q.positions, p.positions, "{len:?}");
        }
        assert_eq!(p.pattern, PositionPattern::From { start: 4 });
        assert_eq!(p.rel_tol[4], Some(1e-3));
        assert_eq!(
            p.summary(),
            "error from position 4 (decode step 2) on (2 of 6 positions; earlier ones within tolerance); worst rel err 3.000e-01 at position 4 (decode step 2); the prefill's positions are clean: a decode-path error"
        );
        // A prefill close to its tolerance (0.8 of it) against decode steps far over it (200
        // to 300 times): clean, a decode-path error.
        let close = across_steps(
            "model.rotary_emb",
            Some(profile(&[8e-4, 0.0, 0.0])),
            &refs,
            None,
        );
        assert!(
            close
                .as_ref()
                .unwrap()
                .summary()
                .ends_with("; the prefill's positions are clean: a decode-path error"),
            "{:?}",
            close.map(|c| c.summary())
        );
        // As close as 0.3 of it, with decode steps far over: clean; with decode steps at its
        // level (one of them over: an error of every position that a decode step's one row
        // crosses first, a held-out check's bf16 late rounding), hedged.
        let near = || Some(profile(&[3e-4, 0.0, 0.0]));
        let far = across_steps("model.rotary_emb", near(), &refs, None).unwrap();
        assert!(
            far.summary()
                .ends_with("; the prefill's positions are clean: a decode-path error"),
            "{}",
            far.summary()
        );
        // Noise at the prefill and at most steps, one step far over (a decode-mask after a
        // 1-token prompt, a held-out check): clean.
        let noise = [
            step_row(1, 1e-6, false),
            step_row(2, 1e-6, false),
            step_row(3, 0.3, true),
        ];
        let noise: Vec<&crate::OpResult> = noise.iter().collect();
        let quiet = across_steps(
            "model.rotary_emb",
            Some(profile(&[1e-6, 0.0, 0.0])),
            &noise,
            None,
        );
        assert!(
            quiet
                .as_ref()
                .unwrap()
                .summary()
                .ends_with("; the prefill's positions are clean: a decode-path error"),
            "{:?}",
            quiet.map(|c| c.summary())
        );
        let level = [
            step_row(1, 2.4e-4, false),
            step_row(2, 1.21e-3, true),
            step_row(3, 4.9e-4, false),
        ];
        let level: Vec<&crate::OpResult> = level.iter().collect();
        let alike = across_steps("model.rotary_emb", near(), &level, None).unwrap();
        assert!(
            alike.summary().ends_with("(at most 0.30 of it), and so are 2 of 3 decode steps: a decode-path error, or an error of every position that some rows cross first"),
            "{}",
            alike.summary()
        );
        // Judged by the truth's noise ratio: a prefill clean by it though over the rows'
        // tolerance (a held-out check's bf16 late rounding read "within the tolerance (at most
        // 6.94 of it)").
        let judged = || {
            let mut p = profile(&[7e-3, 1e-3, 0.0]);
            p.over.iter_mut().for_each(|o| *o = false);
            Some(p)
        };
        let level = [
            step_row(1, 2.4e-3, false),
            step_row(2, 8e-3, true),
            step_row(3, 4.9e-3, false),
        ];
        let level: Vec<&crate::OpResult> = level.iter().collect();
        let truth = across_steps("model.rotary_emb", judged(), &level, None).unwrap();
        assert!(
            truth.summary().ends_with(
                "; the prefill is judged clean, and so are 2 of 3 decode steps, though its \
                 positions reach 7.00 of the rows' tolerance and the worst flagged step 8.00 of \
                 it: a decode-path error, or an error of every position that some rows cross \
                 first"
            ),
            "{}",
            truth.summary()
        );
        // The flagged step under the rows' tolerance, the prefill over it (a review): no
        // decode-path reading.
        let level = [
            step_row(1, 2.4e-3, false),
            step_row(2, 6e-3, true),
            step_row(3, 4.9e-3, false),
        ];
        let level: Vec<&crate::OpResult> = level.iter().collect();
        let truth = across_steps("model.rotary_emb", judged(), &level, None).unwrap();
        assert!(
            truth.summary().ends_with(
                "though its positions reach 7.00 of the rows' tolerance and the worst flagged \
                 step 6.00 of it: an error of every position alike, which the verdict flags at \
                 some decode steps"
            ),
            "{}",
            truth.summary()
        );
        // cache probes have no prefill row: the profile counts decode steps
        let p = across_steps("model.layers.0.self_attn.cache_k", None, &refs, None).unwrap();
        assert!(
            p.positions.is_empty(),
            "no prompt length: no token positions"
        );
        assert_eq!(
            p.summary(),
            "error from decode step 2 on (2 of 3 decode steps; earlier ones within tolerance); worst rel err 3.000e-01 at decode step 2"
        );
        // With the prompt's length (3 tokens), step 2 is the token at 3 + 2 - 1 = 4: the
        // first affected entry, index 1, is token position 4.
        let p = across_steps("model.layers.0.self_attn.cache_k", None, &refs, Some(3)).unwrap();
        assert_eq!(p.positions, [3, 4, 5]);
        assert_eq!(
            (p.first_affected, p.pattern),
            (Some(1), PositionPattern::From { start: 1 })
        );
        assert_eq!(p.positions[1], 4);
        // Its axis is the token axis of the steps' shape, `[B, H, 1, D]`'s 2 (not its heads';
        // a newcomer's check), and 1 where the shape is unknown.
        assert_eq!(p.axis, 1);
        let shaped: Vec<crate::OpResult> = rows
            .iter()
            .cloned()
            .map(|mut r| {
                std::sync::Arc::make_mut(&mut r.tensor).shape = Some(vec![1, 2, 1, 32]);
                r
            })
            .collect();
        let shaped: Vec<&crate::OpResult> = shaped.iter().collect();
        let p = across_steps("model.layers.0.self_attn.cache_k", None, &shaped, Some(3)).unwrap();
        assert_eq!((p.axis, p.positions.as_slice()), (2, [3, 4, 5].as_slice()));
        let p = across_steps("model.layers.0.self_attn.cache_v", None, &shaped, Some(3)).unwrap();
        assert_eq!(p.axis, 2);
        assert!(across_steps("x", None, &[], Some(3)).is_none());
        // Steps 2 and 3 only: step 2 is the token at 3 + 2 - 1 = 4, not at its row, 3.
        let p = across_steps(
            "model.rotary_emb",
            Some(profile(&[0.0, 0.0, 0.0])),
            &refs[1..],
            None,
        )
        .unwrap();
        // The JSON's first affected entry is index 3, token position 4.
        assert_eq!(
            (p.first_affected, p.positions.as_slice()),
            (Some(3), &[0, 1, 2, 4, 5][..])
        );
        assert_eq!(
            p.summary(),
            "error from position 4 (decode step 2) on (2 of 5 positions; earlier ones within tolerance); worst rel err 3.000e-01 at position 4 (decode step 2); the prefill's positions are clean: a decode-path error"
        );
    }

    #[test]
    fn an_op_that_keeps_the_prompts_last_rows_is_numbered_from_its_end() {
        // Logits kept for the last 2 of 5 prompt tokens, then decode steps 1..3: the prefill's
        // entries are tokens 3 and 4, step s the token at 5 + s - 1 (not at 2 + s - 1).
        let rows = [
            step_row(1, 1e-6, false),
            step_row(2, 0.3, true),
            step_row(3, 0.2, true),
        ];
        let refs: Vec<&crate::OpResult> = rows.iter().collect();
        let p = across_steps("lm_head", Some(logits(&[0.0, 0.0])), &refs, Some(5)).unwrap();
        assert_eq!(p.steps, [0, 0, 1, 2, 3]);
        assert_eq!(p.positions, [3, 4, 5, 6, 7]);
        assert_eq!(p.first_affected, Some(3));
        assert!(
            p.summary()
                .starts_with("error from position 6 (decode step 2) on (2 of 5 positions;"),
            "{}",
            p.summary()
        );
        // Another op's prefill rows count the prompt: step s is the token at 2 + s - 1.
        let q = across_steps("model.norm", Some(profile(&[0.0, 0.0])), &refs, Some(5)).unwrap();
        assert_eq!(q.positions, [0, 1, 2, 3, 4]);
        // One pass: the same two rows are tokens 3 and 4 of the prompt.
        let p = logits(&[0.0, 0.5]).at_prompt_end(Some(5));
        assert_eq!(p.positions, [3, 4]);
        assert_eq!(
            p.summary(),
            "error at the last position 4 only; worst rel err 5.000e-01 at position 4"
        );
        // A profile over the whole prompt, or without its length, is left as it is.
        for len in [Some(2), None] {
            let p = logits(&[0.0, 0.5]).at_prompt_end(len);
            assert!(p.positions.is_empty(), "{len:?}");
            assert!(p.summary().starts_with("error at the last position 1 only"));
        }
        // So is another op's, whose token axis is the whole prompt by the dump contract (a
        // review found attention weights' heads axis named as the prompt's last positions).
        let p = profile(&[0.0, 0.5]).at_prompt_end(Some(5));
        assert!(p.positions.is_empty());
    }

    #[test]
    fn nan_at_other_places_makes_a_position_affected() {
        // [4, 2]: positions 2 and 3 hold a NaN on our side only; the finite values agree.
        let r = [1.0f64; 8];
        let mut o = r;
        o[5] = f64::NAN;
        o[6] = f64::NAN;
        let p = position_profile(
            "x",
            ValuesRef::F64(&o),
            ValuesRef::F64(&r),
            &[4, 2],
            0,
            1e-3,
            0.0,
        )
        .unwrap();
        assert_eq!(p.pattern, PositionPattern::From { start: 2 });
        // NaN at the same place on both sides is equal.
        let p = position_profile(
            "x",
            ValuesRef::F64(&o),
            ValuesRef::F64(&o),
            &[4, 2],
            0,
            1e-3,
            0.0,
        )
        .unwrap();
        assert_eq!(p.pattern, PositionPattern::None);
    }

    #[test]
    fn rope_outputs_are_heads_first() {
        let q = "model.layers.3.self_attn.rope_q";
        assert_eq!(position_axis(q, &[1, 16, 9, 128]), Some(2));
        assert_eq!(
            position_axis("model.layers.3.self_attn.k_norm", &[1, 9, 8, 128]),
            Some(1)
        );
        assert_eq!(position_axis("model.embed_tokens", &[1, 9, 1024]), Some(1));
        assert_eq!(position_axis("x", &[9, 4]), Some(0));
        assert_eq!(position_axis("x", &[9]), None);
        assert_eq!(position_axis("model.embed_tokens", &[1, 1, 1024]), None);
        assert_eq!(token_axis("model.embed_tokens", &[1, 1, 1024]), Some(1));
        assert_eq!(token_axis(q, &[1, 16, 1, 128]), Some(2));
        assert_eq!(token_axis("x", &[1, 4]), Some(0));
        assert_eq!(token_axis("x", &[9]), None);
        assert_eq!(prefill_axis("lm_head", &[1, 1, 16], Some(5)), Some(1));
        assert_eq!(prefill_axis("lm_head", &[1, 1, 16], None), None);
        assert_eq!(prefill_axis("lm_head", &[1, 2, 16], None), Some(1));
        assert_eq!(prefill_axis("model.norm", &[1, 1, 16], None), Some(1));
    }

    #[test]
    fn heads_first_layout_takes_positions_from_the_middle_axis() {
        // [1, H=2, T=3, D=2]: position 2 differs in both heads.
        let r = vec![1.0f64; 12];
        let mut o = r.clone();
        for h in 0..2 {
            for d in 0..2 {
                o[h * 6 + 2 * 2 + d] = 2.0;
            }
        }
        let p = position_profile(
            "model.layers.0.self_attn.rope_k",
            ValuesRef::F64(&o),
            ValuesRef::F64(&r),
            &[1, 2, 3, 2],
            2,
            1e-3,
            0.0,
        )
        .unwrap();
        assert_eq!(p.pattern, PositionPattern::Last);
        assert_eq!(p.rel_err, vec![Some(0.0), Some(0.0), Some(1.0)]);
    }

    /// A token axis of more than [`MAX_POSITIONS`] positions gives no profile, and the note
    /// says why (60,000,000 positions took 3.8 GB and wrote 2.3 GB of JSON); at the cap, a
    /// profile of every position. Across decode steps, the prefill's positions and the steps
    /// count together.
    #[test]
    fn a_token_axis_past_the_cap_gives_no_profile() {
        let run = |t: usize| {
            let (o, r) = (vec![2.0f32; t], vec![1.0f32; t]);
            position_profile(
                "model.embed_tokens",
                ValuesRef::F32(&o),
                ValuesRef::F32(&r),
                &[1, t, 1],
                1,
                1e-3,
                0.0,
            )
        };
        assert!(run(MAX_POSITIONS + 1).is_none());
        assert_eq!(
            too_many_positions("model.embed_tokens", MAX_POSITIONS + 1).as_deref(),
            Some("no per-position profile of model.embed_tokens: 1048577 token positions, more than the 1048576 a profile holds")
        );
        let at_cap = run(MAX_POSITIONS).unwrap();
        assert_eq!(
            (at_cap.rel_err.len(), at_cap.pattern),
            (MAX_POSITIONS, PositionPattern::All)
        );
        assert_eq!(too_many_positions("x", MAX_POSITIONS), None);
        let row = step_row(1, 0.3, true);
        let p = across_steps("model.embed_tokens", Some(at_cap), &[&row], None);
        assert!(p.is_none(), "one step past the cap");
        let rows = vec![step_row(1, 0.3, true); 2];
        let refs: Vec<&crate::OpResult> = rows.iter().collect();
        let short = run(MAX_POSITIONS - 2);
        assert_eq!(
            across_steps("model.embed_tokens", short, &refs, None).map(|p| p.rel_err.len()),
            Some(MAX_POSITIONS)
        );
    }

    #[test]
    fn values_that_do_not_fill_the_shape_give_no_profile() {
        let v = [1.0f64; 5];
        assert!(position_profile(
            "x",
            ValuesRef::F64(&v),
            ValuesRef::F64(&v),
            &[2, 3],
            0,
            0.0,
            0.0
        )
        .is_none());
    }
}
