//! What an error does to the tokens: the logits of both sides compared as next-token
//! distributions, position by position (issue #13 item 5; one forward pass here, decode steps
//! when dumps hold them). Per position: do the top-1 tokens agree, how much do the top-5 sets
//! overlap, and the KL divergence `KL(P_ref ‖ P_ours)` of the softmaxed logits, in f64 (as
//! llama.cpp's `--kl-divergence` reports, with the reference as the base distribution). At the
//! first position where the top-1 tokens differ, the rank of each side's token in the other's
//! ranking (vLLM's tests ask that a mismatched token be in the other's top-k), and each side's
//! margin between the two tokens (a near tie in the reference is said as one). Pure.

use serde::{Deserialize, Serialize};

use divergence_values::{Elem, Visit};
use rayon::prelude::*;

use crate::metrics::widest_unit;
use crate::tolerance::{unit_roundoff, DTypeClass};
use crate::ValuesRef;

/// Most positions one logits tensor may have for its token effect to be computed (each costs
/// ~250 bytes while it is): a million, past any model's context. More, and the logits are
/// compared as any tensor, without the token effect.
pub const MAX_POSITIONS: usize = 1 << 20;

/// The token-level effect of the differences, over every position of the logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEffect {
    /// The logits probe (`lm_head`).
    pub op: String,
    /// Positions compared (those with finite logits on both sides).
    pub positions: usize,
    /// Positions whose logits hold a NaN or an Inf on either side (not compared).
    pub nonfinite_positions: usize,
    /// Positions whose top-1 tokens agree.
    pub top1_agree: usize,
    /// Mean over positions of |top-5 of ours ∩ top-5 of ref| / 5.
    pub top5_overlap: f64,
    /// Mean and largest `KL(P_ref ‖ P_ours)` over positions (nats).
    pub mean_kld: f64,
    pub max_kld: f64,
    /// The position of the largest KLD.
    pub max_kld_position: usize,
    /// The first position whose top-1 tokens differ.
    pub first_flip: Option<Flip>,
    /// Per position: top-1 agreement and KLD (null where not compared). With decode steps,
    /// the prefill's positions first, then one per decode step ([`merge_steps`]).
    pub per_position: Vec<PositionTokens>,
    /// Per step (0 = the prefill), when the logits have decode steps; empty (and left out of
    /// the JSON) for one pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTokens>,
    /// The token position of the prefill's first logits row: the prompt's length less the
    /// prefill's logits rows, when the logits keep the last few positions only
    /// ([`TokenEffect::at_prompt`]); 0 (and left out of the JSON) when they keep every
    /// position. `max_kld_position`, `first_flip.position` and each `per_position`'s
    /// `position` are token positions.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_position: usize,
}

/// Serde's test for counts left out of the JSON when 0 (here and in `report.rs`).
pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One position's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionTokens {
    pub top1_agree: Option<bool>,
    pub kld: Option<f64>,
    /// The decode step the position belongs to (0 = the prefill).
    #[serde(default)]
    pub step: usize,
    /// The token position: the row for one pass; with decode steps the prefill's rows, then
    /// step s at the prefill's length + s - 1 (a step the dumps do not hold leaves its
    /// position out); shifted by [`TokenEffect::first_position`].
    #[serde(default)]
    pub position: usize,
}

/// One step's token numbers (decode dumps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTokens {
    /// 0 = the prefill, 1.. = decode steps.
    pub step: usize,
    /// Positions compared in this step (the prompt's for the prefill, 1 for a decode step).
    pub positions: usize,
    /// Of them, positions whose top-1 tokens agree.
    pub top1_agree: usize,
    /// Mean and largest KLD of the step (nats); `None` when nothing was compared.
    pub mean_kld: Option<f64>,
    pub max_kld: Option<f64>,
}

/// The first position where the top-1 tokens differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flip {
    pub position: usize,
    /// The decode step of that position (0 = the prefill).
    #[serde(default)]
    pub step: usize,
    /// Ours' and the reference's top-1 token ids.
    pub ours_token: usize,
    pub ref_token: usize,
    /// 1-based rank of the reference's token among ours' logits, and of ours' token among the
    /// reference's (1 = top).
    pub ref_token_rank_in_ours: usize,
    pub ours_token_rank_in_ref: usize,
    /// The reference's preference: its top logit less its logit of ours' token (>= 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_margin: Option<f64>,
    /// Ours' preference: ours' top logit less ours' logit of the reference's token (>= 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours_margin: Option<f64>,
    /// The reference's top logit (where its dtype's spacing is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_top_logit: Option<f64>,
    /// `ref_margin` in units in the last place of the reference's logits' dtype, at the larger
    /// in size of its two logits ([`TokenEffect::with_ref_dtype`]): at most [`NEAR_TIE_ULPS`],
    /// the reference's own bf16 / f16 rounding upstream could have picked ours' token (a
    /// held-out check's clean bf16 decode flipped a step on a margin of one bf16 ulp; its
    /// float64 truth picked the reference's token). A sufficient sign of noise, not a
    /// necessary one: logits a few ulps apart can be noise as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_margin_ulps: Option<f64>,
    /// The reference's logits' dtype class, where `ref_margin_ulps` counts in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_dtype: Option<DTypeClass>,
}

/// A flip whose reference margin is at most this many units in the last place of its logits'
/// dtype is a near tie in the reference ([`Flip::ref_margin_ulps`]).
pub const NEAR_TIE_ULPS: f64 = 2.0;

impl Flip {
    /// Where the reference's token stands in ours: `ref's token ranked 3 in ours`, or, at rank
    /// 1 (a logit no other of ours exceeds: ours' top is another token of the same logit, the
    /// lower id, as an argmax takes it), `ref's token tied with ours' top logit (ours' argmax
    /// takes the lower id)`. A held-out check (session 46) read "ranked 1" as agreement where
    /// ours' two bf16 logits were both 1.96875, and where ours' logits were all 0.
    pub fn rank_text(&self) -> String {
        if self.ref_token_rank_in_ours == 1 {
            "ref's token tied with ours' top logit (ours' argmax takes the lower id)".into()
        } else {
            format!("ref's token ranked {} in ours", self.ref_token_rank_in_ours)
        }
    }

    /// The margins: `; ref's margin 7.812e-03 (1 bfloat16 ulp: a near tie in the reference),
    /// ours' 1.562e-02`; a margin of 0 is a tie the reference's argmax broke; empty for a flip
    /// without them (a report written before they were).
    pub fn margin_text(&self) -> String {
        let (Some(r), Some(o)) = (self.ref_margin, self.ours_margin) else {
            return String::new();
        };
        let ulps = match (self.ref_margin_ulps, self.ref_dtype) {
            _ if r == 0.0 => " (a tie in the reference: its argmax takes the lower id)".to_string(),
            (Some(u), Some(class)) if u <= NEAR_TIE_ULPS => {
                let count = round_ulps(u);
                let unit = if count == "1" { "ulp" } else { "ulps" };
                format!(
                    " ({count} {} {unit}: a near tie in the reference)",
                    class.label()
                )
            }
            _ => String::new(),
        };
        format!(
            "; ref's margin {}{ulps}, ours' {}",
            crate::compare::sci(r),
            crate::compare::sci(o)
        )
    }
}

/// A count of ulps (at most [`NEAR_TIE_ULPS`]) as said: a whole number as itself, else to two
/// decimals.
fn round_ulps(u: f64) -> String {
    if u.fract() == 0.0 {
        format!("{u:.0}")
    } else {
        format!("{}", (u * 100.0).round() / 100.0)
    }
}

impl TokenEffect {
    /// The positions of a one-pass effect made token positions for a prompt of `prompt_len`
    /// tokens (its `input_ids`): logits of the last `n` positions only (an engine that keeps
    /// the last row) are positions `prompt_len - n ..`. Unchanged without a prompt length, or
    /// when the logits have as many positions or more.
    pub fn at_prompt(mut self, prompt_len: Option<usize>) -> TokenEffect {
        let rows = self.per_position.len();
        let first = prompt_len.filter(|&l| l > rows).map_or(0, |l| l - rows);
        self.shift(first);
        self
    }

    /// Adds `first` to every position the effect names.
    fn shift(&mut self, first: usize) {
        self.first_position += first;
        self.max_kld_position += first;
        if let Some(f) = self.first_flip.as_mut() {
            f.position += first;
        }
        for p in &mut self.per_position {
            p.position += first;
        }
    }

    /// The effect with its first flip's reference margin counted in units in the last place of
    /// the reference's logits' dtype `class`, at the larger in size of the reference's two
    /// logits ([`Flip::ref_margin_ulps`]: the coarser spacing, so that a margin and its mirror
    /// image below 0 count alike, as a review asked; none for integers or two logits of 0).
    pub fn with_ref_dtype(mut self, class: DTypeClass) -> TokenEffect {
        if let Some(f) = self.first_flip.as_mut() {
            f.ref_margin_ulps = match (f.ref_margin, f.ref_top_logit) {
                (Some(m), Some(top)) => ulp(class, top.abs().max((top - m).abs())).map(|u| m / u),
                _ => None,
            };
            f.ref_dtype = f.ref_margin_ulps.is_some().then_some(class);
        }
        self
    }

    /// Top-1 agreement over the decode steps alone, `(agree, compared)`; `None` for one pass.
    /// The prompt's positions agree whenever a bug is in the decode path only: counted with
    /// them, 8 of 24 decode steps read as `24/40` (found by a UX review).
    pub fn decode_top1(&self) -> Option<(usize, usize)> {
        let decode = self.steps.iter().filter(|s| s.step > 0);
        (!self.steps.is_empty())
            .then(|| decode.fold((0, 0), |(a, n), s| (a + s.top1_agree, n + s.positions)))
    }

    /// One line: `lm_head: top-1 agree 15/16, top-5 overlap 0.963, mean KLD 1.2e-4 (max 2.1e-3
    /// at position 7), first flipped token at position 7 (ours 12 vs ref 40; ref's token ranked
    /// 2 in ours; ref's margin 7.812e-03 (1 bfloat16 ulp: a near tie in the reference), ours'
    /// 1.562e-02)`; with
    /// decode steps also their own agreement (`top-1 agree 24/40 (decode steps 8/24)`) and the
    /// step of the largest KLD.
    pub fn summary(&self) -> String {
        // A decode step feeds one token; logits of more positions at a step (against the dump
        // contract, on both sides) are counted as positions, and said so (a bad-input hunt:
        // 2 steps of 2 positions read "decode steps 4/4").
        let one_each = self.steps.iter().all(|s| s.step == 0 || s.positions <= 1);
        let what = if one_each {
            "decode steps"
        } else {
            "decode steps' positions"
        };
        let decode = self
            .decode_top1()
            .map_or_else(String::new, |(a, n)| format!(" ({what} {a}/{n})"));
        let max_step = self
            .per_position
            .iter()
            .find(|p| p.position == self.max_kld_position && p.kld.is_some())
            .map(|p| p.step)
            .filter(|&s| s > 0 && !self.steps.is_empty())
            .map_or_else(String::new, |s| format!(", step {s}"));
        let mut s = format!(
            "{}: top-1 agree {}/{}{decode}, top-5 overlap {:.3}, mean KLD {} (max {} at position {}{max_step})",
            self.op,
            self.top1_agree,
            self.positions,
            self.top5_overlap,
            crate::compare::sci(self.mean_kld),
            crate::compare::sci(self.max_kld),
            self.max_kld_position
        );
        match &self.first_flip {
            Some(f) if !self.steps.is_empty() => s.push_str(&format!(
                ", first flipped token at step {} (position {}; ours {} vs ref {}; {}{})",
                f.step,
                f.position,
                f.ours_token,
                f.ref_token,
                f.rank_text(),
                f.margin_text()
            )),
            Some(f) => s.push_str(&format!(
                ", first flipped token at position {} (ours {} vs ref {}; {}{})",
                f.position,
                f.ours_token,
                f.ref_token,
                f.rank_text(),
                f.margin_text()
            )),
            None => s.push_str(", no flipped token"),
        }
        if self.nonfinite_positions > 0 {
            s.push_str(&format!(
                ", {} positions with NaN/Inf logits not compared",
                self.nonfinite_positions
            ));
        }
        s
    }
}

/// One compared position: top-1 agreement, KLD, both top-5s, the reference's token's rank in
/// ours and ours' in the reference's, and where the top-1s differ the margins ([`Margins`]).
type Compared = (
    bool,
    f64,
    Vec<usize>,
    Vec<usize>,
    usize,
    usize,
    Option<Margins>,
);

/// At a flipped position: the reference's margin (its top logit less its logit of ours'
/// token), ours' (the other way round) and the reference's top logit.
type Margins = (f64, f64, f64);

/// The spacing of `class`'s values at `x`: the `rounding` hint's (`hints::ulp`) for the float
/// types below f64, and f64's own; `None` for integers, 0 and values that are not finite.
fn ulp(class: DTypeClass, x: f64) -> Option<f64> {
    if x == 0.0 || !x.is_finite() {
        return None;
    }
    match class {
        // |x|'s power of two from its bits (a subnormal read as the least normal's).
        DTypeClass::F64 => {
            let e = ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023;
            Some(2.0 * unit_roundoff(class) * 2f64.powi(e.max(-1022)))
        }
        _ => crate::hints::ulp(x, class),
    }
}

/// The token effect of `ours` against `reference`, logits of `shape` (vocab last; every other
/// axis a position). `None` when the shapes differ (size-1 axes aside), the vocabulary is
/// smaller than 2 or nothing is finite.
pub fn token_effect(
    op: &str,
    ours: ValuesRef<'_>,
    reference: ValuesRef<'_>,
    ours_shape: &[usize],
    ref_shape: &[usize],
) -> Option<TokenEffect> {
    match step_logits(op, ours, reference, ours_shape, ref_shape) {
        StepLogits::Compared(e) => Some(*e),
        StepLogits::NonFinite(_) | StepLogits::NotCompared => None,
    }
}

/// What one step's logits give [`merge_steps`].
#[derive(Debug, Clone, PartialEq)]
pub enum StepLogits {
    /// At least one position compared (boxed: the other variants are a count).
    Compared(Box<TokenEffect>),
    /// This many positions, every one with a NaN or an Inf on a side: none compared, each
    /// counted in `nonfinite_positions`.
    NonFinite(usize),
    /// Not comparable: the shapes differ (size-1 axes aside), a vocabulary under 2, no
    /// position, or more than [`MAX_POSITIONS`].
    NotCompared,
}

/// [`token_effect`], telling logits that are all non-finite from logits that cannot be
/// compared.
pub fn step_logits(
    op: &str,
    ours: ValuesRef<'_>,
    reference: ValuesRef<'_>,
    ours_shape: &[usize],
    ref_shape: &[usize],
) -> StepLogits {
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if squeeze(ours_shape) != squeeze(ref_shape) {
        return StepLogits::NotCompared;
    }
    let Some(&vocab) = ref_shape.last() else {
        return StepLogits::NotCompared;
    };
    let n = ref_shape.iter().product::<usize>();
    if vocab < 2 || n != ours.len() || n != reference.len() {
        return StepLogits::NotCompared;
    }
    let positions = n / vocab;
    // More positions than a context holds (a vocabulary of 2 over 12.5 million "positions":
    // 3.6 GB, ~250 bytes a position; a bad-input hunt, 2026-12-04): not next-token logits.
    if positions > MAX_POSITIONS {
        return StepLogits::NotCompared;
    }
    // Positions in parallel (rayon), reduced in position order: deterministic.
    let rows: Vec<Option<Compared>> = (0..positions)
        .into_par_iter()
        .map(|p| {
            ROWS.with_borrow_mut(|(o_row, r_row)| {
                // Every element is written before it is read: no zeroing.
                o_row.resize(vocab, 0.0);
                r_row.resize(vocab, 0.0);
                compare_position(ours, reference, p * vocab, o_row, r_row)
            })
        })
        .collect();
    let mut per_position = Vec::with_capacity(positions);
    let (mut agree, mut compared, mut nonfinite) = (0usize, 0usize, 0usize);
    let (mut overlap_sum, mut kld_sum, mut kld_max, mut kld_at) = (0f64, 0f64, f64::MIN, 0usize);
    let mut first_flip = None;
    for (p, row) in rows.into_iter().enumerate() {
        let Some((same, kld, o_top, r_top, r_in_o, o_in_r, margins)) = row else {
            nonfinite += 1;
            per_position.push(PositionTokens {
                top1_agree: None,
                kld: None,
                step: 0,
                position: p,
            });
            continue;
        };
        compared += 1;
        agree += usize::from(same);
        let k = o_top.len().min(r_top.len()).max(1);
        overlap_sum += o_top.iter().filter(|t| r_top.contains(t)).count() as f64 / k as f64;
        kld_sum += kld;
        if kld > kld_max {
            (kld_max, kld_at) = (kld, p);
        }
        if !same && first_flip.is_none() {
            first_flip = Some(Flip {
                position: p,
                step: 0,
                ours_token: o_top[0],
                ref_token: r_top[0],
                ref_token_rank_in_ours: r_in_o,
                ours_token_rank_in_ref: o_in_r,
                ref_margin: margins.map(|m| m.0),
                ours_margin: margins.map(|m| m.1),
                ref_top_logit: margins.map(|m| m.2),
                ref_margin_ulps: None,
                ref_dtype: None,
            });
        }
        per_position.push(PositionTokens {
            top1_agree: Some(same),
            kld: Some(kld),
            step: 0,
            position: p,
        });
    }
    if compared == 0 {
        // No position at all (an empty token axis) is nothing to compare, not non-finite.
        return if nonfinite == 0 {
            StepLogits::NotCompared
        } else {
            StepLogits::NonFinite(nonfinite)
        };
    }
    StepLogits::Compared(Box::new(TokenEffect {
        op: op.to_string(),
        positions: compared,
        nonfinite_positions: nonfinite,
        top1_agree: agree,
        top5_overlap: overlap_sum / compared as f64,
        mean_kld: kld_sum / compared as f64,
        max_kld: kld_max,
        max_kld_position: kld_at,
        first_flip,
        per_position,
        steps: Vec::new(),
        first_position: 0,
    }))
}

thread_local! {
    /// Each thread's two rows of widened logits, reused by every position it compares: a
    /// decode dump compares one position per step, and fresh rows per call zeroed megabytes
    /// per step (a 151,936-token vocabulary is 1.2 MB a row in f64).
    static ROWS: std::cell::RefCell<(Vec<f64>, Vec<f64>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// The position of `ours` and `reference` whose logits start at element `at` (`o_row` and
/// `r_row`: one vocabulary long each, overwritten); `None` when a logit is not finite, but for
/// a mask both sides share ([`masked_position`]).
fn compare_position(
    ours: ValuesRef<'_>,
    reference: ValuesRef<'_>,
    at: usize,
    o_row: &mut [f64],
    r_row: &mut [f64],
) -> Option<Compared> {
    fill_row(ours, at, o_row);
    fill_row(reference, at, r_row);
    scan_rows(o_row, r_row).or_else(|| masked_position(o_row, r_row))
}

widest_unit! {
    /// [`compare_rows`] of two rows of logits, `None` when a value of either is not finite: the
    /// token effect's every pass over a position's rows (finiteness, both top-5s, the KLD's
    /// two), compiled for the widest vector unit available (`metrics::widest_unit`: the same
    /// IEEE operations in the same order on every build, so the same bits on every CPU;
    /// tested). The KLD alone used to be compiled for AVX2, the rest for the baseline
    /// (docs/performance.md, "The token-level effect", session 59).
    fn scan_rows, scan_rows_avx512, scan_rows_avx2 => scan_rows_portable
    [] []
    (o_row: &[f64], r_row: &[f64]) -> Option<Compared>
}

#[inline(always)]
fn scan_rows_portable(o_row: &[f64], r_row: &[f64]) -> Option<Compared> {
    all_finite(o_row, r_row).then(|| compare_rows(o_row, r_row))
}

/// Whether every value of both rows is finite: `x * 0` is ±0 for a finite `x` and NaN for a NaN
/// or an infinity, summed per lane, without a branch (the loop vectorizes, where
/// `all(is_finite)` tested each element in turn).
#[inline(always)]
fn all_finite(a: &[f64], b: &[f64]) -> bool {
    let mut acc = [0f64; LANES];
    for row in [a, b] {
        let (chunks, rest) = row.as_chunks::<LANES>();
        for c in chunks {
            for l in 0..LANES {
                acc[l] += c[l] * 0.0;
            }
        }
        for &x in rest {
            acc[0] += x * 0.0;
        }
    }
    acc.iter().all(|&s| s == 0.0)
}

/// Top-1 agreement, KL divergence, top-5 tokens and ranks of two finite rows of logits.
#[inline(always)]
fn compare_rows(o_row: &[f64], r_row: &[f64]) -> Compared {
    let (o_top, r_top) = (top_k(o_row, 5), top_k(r_row, 5));
    let same = o_top[0] == r_top[0];
    let ranks = if same {
        (1, 1)
    } else {
        (rank(o_row, r_top[0]), rank(r_row, o_top[0]))
    };
    let margins = (!same).then(|| {
        let (r_tok, o_tok) = (r_top[0], o_top[0]);
        (
            r_row[r_tok] - r_row[o_tok],
            o_row[o_tok] - o_row[r_tok],
            r_row[r_tok],
        )
    });
    (
        same,
        kl_portable(r_row, o_row),
        o_top,
        r_top,
        ranks.0,
        ranks.1,
        margins,
    )
}

/// A position whose logits are `-inf` at the same entries on both sides (a masked vocabulary:
/// padding rows, banned tokens) and finite at every other: compared over the finite entries,
/// which is the whole rows' comparison (a masked token has probability 0 on both sides, and
/// ranks below every other), tokens numbered as in the whole rows. Found by a bad-input hunt:
/// such logits gave no token effect at all, and a flipped token went unsaid. `None` for any
/// other NaN or Inf (`-inf` on one side only: a token one side rules out).
fn masked_position(o_row: &[f64], r_row: &[f64]) -> Option<Compared> {
    let mut keep = Vec::new();
    for (i, (&a, &b)) in o_row.iter().zip(r_row).enumerate() {
        if a.is_finite() && b.is_finite() {
            keep.push(i);
        } else if a != f64::NEG_INFINITY || b != f64::NEG_INFINITY {
            return None;
        }
    }
    if keep.is_empty() {
        return None;
    }
    let pick = |row: &[f64]| keep.iter().map(|&i| row[i]).collect::<Vec<f64>>();
    // Finite: `scan_rows` compares them.
    let (same, kld, o_top, r_top, r_in_o, o_in_r, margins) = scan_rows(&pick(o_row), &pick(r_row))?;
    let token = |k: Vec<usize>| k.into_iter().map(|k| keep[k]).collect();
    Some((
        same,
        kld,
        token(o_top),
        token(r_top),
        r_in_o,
        o_in_r,
        margins,
    ))
}

/// One token effect over the steps of a decode dump pair: `parts` are the effects of each
/// step's logits (`lm_head`, `lm_head@1`, ...), in step order. Positions are token positions
/// across the steps (the prefill's T rows 0..T, then step s at T + s - 1, whichever steps
/// `parts` holds), each tagged with its step; with `prompt_len` (the prompt's `input_ids`
/// length) over T, all shifted by `prompt_len - T`: prefill logits of the last rows only. The
/// aggregates are over every compared position; `steps` has each step's numbers. A step whose
/// logits are all non-finite counts its positions in `nonfinite_positions`, has a `steps`
/// entry of 0 positions and placeholders (nulls) in `per_position`; one that could not be
/// compared (shapes differ) has no `steps` entry, and a decode step's position is a
/// placeholder. `None` when no position of any step was compared.
pub fn merge_steps(
    op: &str,
    parts: Vec<(usize, StepLogits)>,
    prompt_len: Option<usize>,
) -> Option<TokenEffect> {
    // The prefill's logits rows: step s is row `prefill + s - 1` of `per_position`.
    let prefill = parts
        .iter()
        .find(|(s, _)| *s == 0)
        .map_or(0, |(_, part)| match part {
            StepLogits::Compared(e) => e.per_position.len(),
            StepLogits::NonFinite(n) => *n,
            StepLogits::NotCompared => 0,
        });
    let mut out = TokenEffect {
        op: op.to_string(),
        positions: 0,
        nonfinite_positions: 0,
        top1_agree: 0,
        top5_overlap: 0.0,
        mean_kld: 0.0,
        max_kld: f64::MIN,
        max_kld_position: 0,
        first_flip: None,
        per_position: Vec::new(),
        steps: Vec::new(),
        first_position: 0,
    };
    let (mut overlap_sum, mut kld_sum) = (0f64, 0f64);
    let placeholder = |step, position| PositionTokens {
        top1_agree: None,
        kld: None,
        step,
        position,
    };
    // The first position after those numbered so far.
    let mut next = 0;
    for (step, part) in parts {
        // Step s is the token at the prefill's length + s - 1, whichever steps the dumps hold
        // (found by a bad-input hunt: with steps 2 and 3 only, step 3 was named position 5);
        // never before the positions of the steps before it (a step of several rows).
        let base = if step == 0 { 0 } else { prefill + step - 1 }.max(next);
        next = base
            + match &part {
                StepLogits::Compared(e) => e.per_position.len(),
                StepLogits::NonFinite(n) => *n,
                StepLogits::NotCompared => usize::from(step > 0),
            };
        let e = match part {
            StepLogits::Compared(e) => *e,
            StepLogits::NonFinite(n) => {
                // Found by a bad-input hunt: an Inf in one decode step's logits left that step
                // out of the counts without a word.
                out.nonfinite_positions += n;
                out.per_position
                    .extend((0..n).map(|j| placeholder(step, base + j)));
                out.steps.push(StepTokens {
                    step,
                    positions: 0,
                    top1_agree: 0,
                    mean_kld: None,
                    max_kld: None,
                });
                continue;
            }
            StepLogits::NotCompared => {
                // A decode step's one position is kept as a placeholder.
                if step > 0 {
                    out.per_position.push(placeholder(step, base));
                }
                continue;
            }
        };
        let offset = base;
        out.positions += e.positions;
        out.nonfinite_positions += e.nonfinite_positions;
        out.top1_agree += e.top1_agree;
        overlap_sum += e.top5_overlap * e.positions as f64;
        kld_sum += e.mean_kld * e.positions as f64;
        if e.max_kld > out.max_kld {
            out.max_kld = e.max_kld;
            out.max_kld_position = offset + e.max_kld_position;
        }
        if out.first_flip.is_none() {
            out.first_flip = e.first_flip.map(|f| Flip {
                position: offset + f.position,
                step,
                ..f
            });
        }
        out.steps.push(StepTokens {
            step,
            positions: e.positions,
            top1_agree: e.top1_agree,
            mean_kld: (e.positions > 0).then_some(e.mean_kld),
            max_kld: (e.positions > 0).then_some(e.max_kld),
        });
        out.per_position
            .extend(e.per_position.into_iter().map(|p| PositionTokens {
                step,
                position: base + p.position,
                ..p
            }));
    }
    if out.positions == 0 {
        return None;
    }
    out.top5_overlap = overlap_sum / out.positions as f64;
    out.mean_kld = kld_sum / out.positions as f64;
    // Logits of the prompt's last rows only: the prefill's rows are its last positions, and
    // step s the token at the prompt's length + s - 1.
    out.shift(
        prompt_len
            .filter(|&l| l > prefill)
            .map_or(0, |l| l - prefill),
    );
    Some(out)
}

/// `out` = elements `at..at + out.len()` of `values`, widened exactly (one dispatch per row).
fn fill_row(values: ValuesRef<'_>, at: usize, out: &mut [f64]) {
    struct Row<'o>(usize, &'o mut [f64]);
    impl Visit for Row<'_> {
        type Out = ();
        fn visit<E: Elem>(self, raw: &[E::Raw]) {
            for (slot, &x) in self.1.iter_mut().zip(&raw[self.0..]) {
                *slot = E::wide(x);
            }
        }
    }
    values.visit(Row(at, out));
}

/// The indices of the `k` largest values, largest first; ties go to the smaller index (as a
/// stable descending sort, and argmax, pick them: bf16 logits tie often).
#[inline(always)]
fn top_k(row: &[f64], k: usize) -> Vec<usize> {
    let mut top: Vec<usize> = Vec::with_capacity(k + 1);
    // The k-th largest so far: most values are below it and cost one comparison.
    let mut floor = f64::NEG_INFINITY;
    let see = |i: usize, x: f64, top: &mut Vec<usize>, floor: &mut f64| {
        if top.len() == k && x <= *floor {
            return;
        }
        let at = top.partition_point(|&j| row[j] >= x);
        if at < k {
            top.insert(at, i);
            top.truncate(k);
            if top.len() == k {
                *floor = row[top[k - 1]];
            }
        }
    };
    // A group of LANES values all at or below the floor once the top is full is skipped
    // whole (each would be skipped alone, and the floor does not move): one vectorized test
    // for most groups instead of a branch per value.
    let (groups, rest) = row.as_chunks::<LANES>();
    for (g, xs) in groups.iter().enumerate() {
        if top.len() == k {
            let mut above = false;
            for &x in xs {
                above |= x > floor;
            }
            if !above {
                continue;
            }
        }
        for (l, &x) in xs.iter().enumerate() {
            see(g * LANES + l, x, &mut top, &mut floor);
        }
    }
    let start = groups.len() * LANES;
    for (l, &x) in rest.iter().enumerate() {
        see(start + l, x, &mut top, &mut floor);
    }
    top
}

/// 1-based rank of `token` in `row` (ties counted in its favour).
#[inline(always)]
fn rank(row: &[f64], token: usize) -> usize {
    let x = row[token];
    1 + row.iter().filter(|&&y| y > x).count()
}

/// [`kl_portable`] in the baseline build: the tests' fast KLD.
#[cfg(test)]
fn kl_fast(p: &[f64], q: &[f64]) -> f64 {
    kl_portable(p, q)
}

/// `KL(P ‖ Q)` of the softmaxes of logits `p` and `q`, in nats, >= 0, in the form that keeps
/// tiny divergences exact: with `d = p - q` (logits), `KL = E_P[d] + ln E_P[exp(-d)]`
/// (`ln_1p` of an `expm1` mean), so no two log-sum-exps of the size of the logits are
/// subtracted. One exponential per element, [`exp_fast`] (branch-free, vectorizes).
///
/// A softmax does not see a constant added to its logits, and neither does this: `q` is taken
/// shifted by `c = max p - max q` (`d - c` for `d`), so that
/// `P`-weighted `exp(-(d - c)) = exp(q - max q) <= 1` never overflows and its mean never falls
/// below `1 / vocab` (unshifted, logits of ours 40 below the reference's made that mean round
/// to 0 and the KLD to 0). Logits more than 700 below their row's maximum (a weight under
/// `e^-700`) are taken at 700 below in the second term, where `exp` would leave its range, and
/// count nothing in the first; with `c = 0` and no such logit the arithmetic is the unshifted
/// form's, operation for operation.
///
/// [`scan_rows`] computes it on the widest vector unit available (inlined there).
#[inline(always)]
fn kl_portable(p: &[f64], q: &[f64]) -> f64 {
    // Both rows' largest and smallest logits in one pass, per lane (the logits are finite:
    // compared by `>`, which vectorizes where `f64::max`'s NaN rule does not).
    let ([mp, lp], [mq, lq]) = {
        let mut hi = [[f64::NEG_INFINITY; LANES]; 2];
        let mut lo = [[f64::INFINITY; LANES]; 2];
        let (pb, pr) = p.as_chunks::<LANES>();
        let (qb, qr) = q.as_chunks::<LANES>();
        let mut see = |l: usize, a: f64, b: f64| {
            for (k, x) in [a, b].into_iter().enumerate() {
                hi[k][l] = if x > hi[k][l] { x } else { hi[k][l] };
                lo[k][l] = if x < lo[k][l] { x } else { lo[k][l] };
            }
        };
        for (a, b) in pb.iter().zip(qb) {
            for l in 0..LANES {
                see(l, a[l], b[l]);
            }
        }
        for (l, (&a, &b)) in pr.iter().zip(qr).enumerate() {
            see(l, a, b);
        }
        let max = |v: [f64; LANES]| v.into_iter().fold(f64::NEG_INFINITY, f64::max);
        let min = |v: [f64; LANES]| v.into_iter().fold(f64::INFINITY, f64::min);
        ([max(hi[0]), min(lo[0])], [max(hi[1]), min(lo[1])])
    };
    // Two facts of the whole rows pick the loop (each a branch-free loop of its own):
    // every logit within 700 of its row's maximum (no clamp to take), and every logit under
    // 2^19 in size (the precise `d - c`; see [`kl_sums`]).
    let near = mp - lp <= -FLOOR && mq - lq <= -FLOOR;
    let moderate =
        mp.abs().max(lp.abs()) < MODERATE / 2.0 && mq.abs().max(lq.abs()) < MODERATE / 2.0;
    let (s, sd, se) = match (near, moderate) {
        (true, true) => kl_sums::<true, true>(p, q, mp, mq),
        (true, false) => kl_sums::<true, false>(p, q, mp, mq),
        (false, true) => kl_sums::<false, true>(p, q, mp, mq),
        (false, false) => kl_sums::<false, false>(p, q, mp, mq),
    };
    (sd / s + (se / s).ln_1p()).max(0.0)
}

/// Lanes of [`kl_sums`]' independent sums.
const LANES: usize = 8;
/// How far below its row's maximum a logit is still taken as it is ([`exp_fast`]'s range).
const FLOOR: f64 = -700.0;
/// Logits and shifts under this are moderate ([`kl_sums`]).
const MODERATE: f64 = (1u64 << 20) as f64;

/// The three sums of [`kl_portable`] over rows whose maxima are `mp` and `mq`: P's weights,
/// their share of `E_P[d - c]` and of `E_P[expm1(c - d)]`, with `c = mp - mq`.
/// - `MODERATE` (every logit under 2^19 in size, so `a - b` and `c` under 2^20): `d - c` is
///   `(a - b) - c`: with `c = 0` the unshifted form's arithmetic, and for p close to q two
///   near-exact differences (subtracting `c` after the sums lost its rounding, ~1e-14 at 40).
///   Beyond, the roundings of `a - b` and of `c` are no longer small (a review: reference
///   logits [1e20, 0] against ours [0, 10] gave 0.693 for 10.00005), and `d - c` is
///   `la - lb`, each side taken from its own maximum.
/// - Not `NEAR` (a logit more than 700 below its row's maximum): such a logit counts nothing
///   in the first term and is taken at 700 below in the second, where `exp` would leave its
///   range. `NEAR` and `MODERATE` with `c = 0` is the unshifted form, operation for operation.
#[inline(always)]
fn kl_sums<const NEAR: bool, const MODERATE_ROW: bool>(
    p: &[f64],
    q: &[f64],
    mp: f64,
    mq: f64,
) -> (f64, f64, f64) {
    let c = mp - mq;
    let terms = |a: f64, b: f64| {
        let (la, lb) = (a - mp, b - mq);
        let d = if MODERATE_ROW { (a - b) - c } else { la - lb };
        let w = exp_fast(la);
        if NEAR {
            return (w, w * d, w * expm1_fast(-d));
        }
        let (share, x) = if la < FLOOR || lb < FLOOR {
            let share = if la < FLOOR { 0.0 } else { w * d };
            (share, lb.max(FLOOR) - la.max(FLOOR))
        } else {
            (w * d, -d)
        };
        (w, share, w * expm1_fast(x))
    };
    // Independent sums per lane (a single running sum waits on every add and does not
    // vectorize), merged in a fixed order.
    let (mut s, mut sd, mut se) = ([0f64; LANES], [0f64; LANES], [0f64; LANES]);
    let (pb, pr) = p.as_chunks::<LANES>();
    let (qb, qr) = q.as_chunks::<LANES>();
    for (a, b) in pb.iter().zip(qb) {
        for l in 0..LANES {
            let (w, share, e) = terms(a[l], b[l]);
            s[l] += w;
            sd[l] += share;
            se[l] += e;
        }
    }
    for (l, (&a, &b)) in pr.iter().zip(qr).enumerate() {
        let (w, share, e) = terms(a, b);
        s[l] += w;
        sd[l] += share;
        se[l] += e;
    }
    let sum = |v: [f64; LANES]| v.iter().sum::<f64>();
    (sum(s), sum(sd), sum(se))
}

/// `(2^k, r)` with `x = k·ln 2 + r`, `|r| <= ln(2)/2`, for `x` clamped to ±700; `k` rounded
/// with the 1.5·2^52 trick (no libm call, so loops over it vectorize).
#[inline(always)]
fn split_exp(x: f64) -> (f64, f64) {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2: f64 = std::f64::consts::LN_2;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let x = x.clamp(-700.0, 700.0);
    let shifted = x * LOG2E + ROUND;
    let k = shifted - ROUND;
    // `shifted` is 1.5·2^52 + k exactly (|k| <= 1010, where the spacing of doubles is 1), so
    // its bits less ROUND's are k: 2^k built from them with integer lane operations. `k as
    // i32` gave the same bits but was compiled to a scalar conversion per lane (its NaN rule),
    // most of the KLD's time (docs/performance.md, "The token-level effect", session 59).
    let k_bits = shifted.to_bits() as i64 - ROUND.to_bits() as i64;
    let scale = f64::from_bits(((k_bits + 1023) as u64) << 52);
    (scale, x - k * LN2)
}

/// `e^r - 1` for `|r| <= ln(2)/2`: the degree-12 Taylor polynomial without its constant term
/// (relative error below 1e-12, none lost to cancellation near 0).
#[inline(always)]
fn expm1_reduced(r: f64) -> f64 {
    let mut poly = 1.0 / 479_001_600.0; // 1/12!
    for c in [
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
    ] {
        poly = poly * r + c;
    }
    poly * r
}

/// `exp(x)` (relative error below 1e-12 for |x| <= 700).
#[inline(always)]
fn exp_fast(x: f64) -> f64 {
    let (scale, r) = split_exp(x);
    scale + scale * expm1_reduced(r)
}

/// `exp(x) - 1`, exact near 0: `2^k (e^r - 1) + (2^k - 1)`.
#[inline(always)]
fn expm1_fast(x: f64) -> f64 {
    let (scale, r) = split_exp(x);
    scale * expm1_reduced(r) + (scale - 1.0)
}

/// `KL(P ‖ Q)` of the softmaxes of logits `p` and `q`, in nats, >= 0 (the textbook form, with
/// libm's exp: the tests' yardstick for [`kl_fast`]).
#[cfg(test)]
fn kl(p: &[f64], q: &[f64]) -> f64 {
    let lse = |row: &[f64]| {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    let kl: f64 = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| {
            let log_p = a - lp;
            log_p.exp() * (log_p - (b - lq))
        })
        .sum();
    kl.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_of_more_positions_than_a_context_get_no_token_effect() {
        // A vocabulary of 2: at the bound, compared; one position more, not (each position
        // costs ~250 bytes: 12.5 million took 3.6 GB).
        let at = vec![0.0f32; 2 * MAX_POSITIONS];
        let shape = [MAX_POSITIONS, 2];
        let e = token_effect(
            "lm_head",
            ValuesRef::F32(&at),
            ValuesRef::F32(&at),
            &shape,
            &shape,
        );
        assert_eq!(e.map(|e| e.positions), Some(MAX_POSITIONS));
        let past = vec![0.0f32; 2 * (MAX_POSITIONS + 1)];
        let shape = [MAX_POSITIONS + 1, 2];
        assert_eq!(
            step_logits(
                "lm_head",
                ValuesRef::F32(&past),
                ValuesRef::F32(&past),
                &shape,
                &shape
            ),
            StepLogits::NotCompared
        );
    }

    #[test]
    fn identical_logits_agree_everywhere_with_zero_kld() {
        let v: Vec<f32> = (0..3 * 7).map(|i| ((i * 7919) % 13) as f32 * 0.3).collect();
        let e = token_effect(
            "lm_head",
            ValuesRef::F32(&v),
            ValuesRef::F32(&v),
            &[3, 7],
            &[1, 3, 7],
        )
        .unwrap();
        assert_eq!((e.positions, e.top1_agree), (3, 3));
        assert_eq!(e.top5_overlap, 1.0);
        assert_eq!(e.mean_kld, 0.0);
        assert!(e.first_flip.is_none());
        assert!(e.summary().contains("top-1 agree 3/3"), "{}", e.summary());
    }

    #[test]
    fn steps_merge_with_positions_numbered_across_them() {
        let r = [0.0f32, 1.0, 3.0, /* */ 0.0, 1.0, 3.0];
        let o = [0.0f32, 1.0, 3.0, /* */ 3.5, 1.0, 3.0];
        let one = |a: &[f32], b: &[f32], shape: &[usize]| {
            step_logits(
                "lm_head",
                ValuesRef::F32(a),
                ValuesRef::F32(b),
                shape,
                shape,
            )
        };
        let parts = vec![
            (0, one(&r, &r, &[1, 2, 3])),           // prefill: 2 positions, agree
            (1, StepLogits::NotCompared),           // step 1 not comparable
            (2, one(&o[3..], &r[3..], &[1, 1, 3])), // step 2 flips
            (3, one(&r[..3], &r[..3], &[1, 1, 3])),
        ];
        let e = merge_steps("lm_head", parts, None).unwrap();
        assert_eq!((e.positions, e.top1_agree), (4, 3));
        assert_eq!(e.per_position.len(), 5);
        let steps: Vec<usize> = e.per_position.iter().map(|p| p.step).collect();
        assert_eq!(steps, [0, 0, 1, 2, 3]);
        assert_eq!(e.per_position[2].kld, None);
        let f = e.first_flip.as_ref().unwrap();
        assert_eq!((f.position, f.step), (3, 2));
        assert_eq!(e.max_kld_position, 3);
        assert_eq!(
            e.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
            [0, 2, 3]
        );
        assert!(
            e.summary()
                .contains("first flipped token at step 2 (position 3"),
            "{}",
            e.summary()
        );
        // The decode steps' own agreement (the prompt's positions agree when the bug is in the
        // decode path alone) and the step of the largest KLD.
        assert_eq!(e.decode_top1(), Some((1, 2)));
        assert!(
            e.summary().contains("top-1 agree 3/4 (decode steps 1/2)")
                && e.summary().contains("at position 3, step 2)"),
            "{}",
            e.summary()
        );
        assert!(merge_steps("lm_head", vec![(1, StepLogits::NotCompared)], None).is_none());
        // Steps of two positions each (against the dump contract, on both sides): counted as
        // positions, and said so, not "decode steps 4/4" for 2 steps (a bad-input hunt).
        let parts = vec![
            (0, one(&r, &r, &[1, 2, 3])),
            (1, one(&r, &r, &[1, 2, 3])),
            (2, one(&r, &r, &[1, 2, 3])),
        ];
        let e = merge_steps("lm_head", parts, None).unwrap();
        assert!(
            e.summary()
                .contains("top-1 agree 6/6 (decode steps' positions 4/4)"),
            "{}",
            e.summary()
        );
    }

    #[test]
    fn positions_are_token_positions_whichever_rows_and_steps_the_dumps_keep() {
        let r = [0.0f32, 1.0, 3.0];
        let o = [3.5f32, 1.0, 3.0];
        let one = |a: &[f32], b: &[f32]| {
            step_logits(
                "lm_head",
                ValuesRef::F32(a),
                ValuesRef::F32(b),
                &[1, 1, 3],
                &[1, 1, 3],
            )
        };
        // The prefill's logits of its last position only (a 4-token prompt), a flip at step 2:
        // the token at position 4 + 2 - 1 = 5.
        let parts = vec![(0, one(&r, &r)), (1, one(&r, &r)), (2, one(&o, &r))];
        let e = merge_steps("lm_head", parts.clone(), Some(4)).unwrap();
        let f = e.first_flip.as_ref().unwrap();
        assert_eq!((f.position, f.step, e.max_kld_position), (5, 2, 5));
        assert_eq!((e.first_position, e.per_position.len()), (3, 3));
        let at: Vec<usize> = e.per_position.iter().map(|p| p.position).collect();
        assert_eq!(at, [3, 4, 5]);
        assert!(e.summary().contains("(position 5;"), "{}", e.summary());
        // Without the prompt's length the rows are the positions, as before.
        let e = merge_steps("lm_head", parts, None).unwrap();
        assert_eq!((e.first_flip.unwrap().position, e.first_position), (2, 0));
        // Steps 2 and 3 only (step 1 not in the dumps), a 1-row prefill of a 1-token prompt:
        // step 3 is position 3, step 1's position left out.
        let parts = vec![(0, one(&r, &r)), (2, one(&r, &r)), (3, one(&o, &r))];
        let e = merge_steps("lm_head", parts, Some(1)).unwrap();
        let at: Vec<(usize, usize)> = e
            .per_position
            .iter()
            .map(|p| (p.step, p.position))
            .collect();
        assert_eq!(at, [(0, 0), (2, 2), (3, 3)]);
        assert_eq!(e.first_flip.unwrap().position, 3);
        // A step number far out costs nothing: no placeholder for the steps between.
        let parts = vec![(0, one(&r, &r)), (999_999_999, one(&o, &r))];
        let e = merge_steps("lm_head", parts, None).unwrap();
        assert_eq!(e.per_position.len(), 2);
        assert_eq!(e.first_flip.unwrap().position, 999_999_999);
        // One pass, the last row of a 4-token prompt: position 3.
        let StepLogits::Compared(e) = one(&o, &r) else {
            panic!("compared")
        };
        let e = e.at_prompt(Some(4));
        assert_eq!((e.first_flip.unwrap().position, e.max_kld_position), (3, 3));
        // Logits of every position are left as they are.
        let StepLogits::Compared(e) = one(&o, &r) else {
            panic!("compared")
        };
        assert_eq!(e.at_prompt(Some(1)).first_position, 0);
    }

    #[test]
    fn a_step_of_non_finite_logits_is_counted_not_dropped() {
        let r = [0.0f32, 1.0, 3.0, /* */ 0.0, 1.0, 3.0];
        let inf = [0.0f32, f32::INFINITY, 3.0];
        let one = |a: &[f32], b: &[f32], shape: &[usize]| {
            step_logits(
                "lm_head",
                ValuesRef::F32(a),
                ValuesRef::F32(b),
                shape,
                shape,
            )
        };
        assert_eq!(one(&inf, &r[..3], &[1, 1, 3]), StepLogits::NonFinite(1));
        let parts = vec![
            (0, one(&r, &r, &[1, 2, 3])),
            (1, one(&inf, &r[..3], &[1, 1, 3])),
            (2, one(&r[..3], &r[..3], &[1, 1, 3])),
        ];
        let e = merge_steps("lm_head", parts, None).unwrap();
        assert_eq!((e.positions, e.nonfinite_positions), (3, 1));
        assert_eq!(e.per_position.len(), 4);
        assert_eq!(e.per_position[2].step, 1);
        assert_eq!(e.per_position[2].kld, None);
        let steps: Vec<(usize, usize)> = e.steps.iter().map(|s| (s.step, s.positions)).collect();
        assert_eq!(steps, [(0, 2), (1, 0), (2, 1)]);
        assert_eq!(e.steps[1].mean_kld, None);
        assert!(
            e.summary()
                .contains("1 positions with NaN/Inf logits not compared"),
            "{}",
            e.summary()
        );
        // every step non-finite: nothing compared
        assert!(merge_steps("lm_head", vec![(1, StepLogits::NonFinite(1))], None).is_none());
        // no position at all is not comparable, not non-finite
        assert_eq!(one(&[], &[], &[1, 0, 3]), StepLogits::NotCompared);
    }

    #[test]
    fn a_flipped_token_is_found_with_its_ranks() {
        // Position 1: ref prefers token 2, ours token 0 (ref's token second in ours).
        let r = [0.0f32, 1.0, 3.0, /* */ 0.0, 1.0, 3.0];
        let o = [0.0f32, 1.0, 3.0, /* */ 3.5, 1.0, 3.0];
        let e = token_effect(
            "lm_head",
            ValuesRef::F32(&o),
            ValuesRef::F32(&r),
            &[2, 3],
            &[2, 3],
        )
        .unwrap();
        assert_eq!(e.top1_agree, 1);
        let f = e.first_flip.unwrap();
        assert_eq!(
            (
                f.position,
                f.ours_token,
                f.ref_token,
                f.ref_token_rank_in_ours,
                f.ours_token_rank_in_ref
            ),
            (1, 0, 2, 2, 3)
        );
        assert_eq!(e.max_kld_position, 1);
        assert!(e.per_position[1].kld.unwrap() > 0.0);
        assert_eq!(e.per_position[0].kld, Some(0.0));
    }

    /// A flip on a tie in ours (the reference's token as high as ours' top, which an argmax
    /// takes at the lower id) says so, not "ranked 1": a held-out check's bf16 logits 1.96875
    /// and 1.96875, and ours' logits all 0 under a 1e30 bias, read as agreement.
    #[test]
    fn a_flip_on_a_tie_in_ours_says_the_tie() {
        let summary = |o: &[f32], r: &[f32]| {
            let e = token_effect(
                "lm_head",
                ValuesRef::F32(o),
                ValuesRef::F32(r),
                &[1, 4],
                &[1, 4],
            )
            .unwrap();
            let f = e.first_flip.clone().unwrap();
            (
                f.ours_token,
                f.ref_token,
                f.ref_token_rank_in_ours,
                e.summary(),
            )
        };
        let (o, r, rank, s) = summary(&[0.0, 2.0, 1.0, 2.0], &[0.0, 1.9, 1.0, 2.0]);
        assert_eq!((o, r, rank), (1, 3, 1));
        assert!(
            s.ends_with("(ours 1 vs ref 3; ref's token tied with ours' top logit (ours' argmax takes the lower id); ref's margin 1.000e-01, ours' 0.000e+00)"),
            "{s}"
        );
        let (_, _, rank, s) = summary(&[0.0; 4], &[0.0, 1.0, 3.0, 2.0]);
        assert_eq!(rank, 1);
        assert!(s.contains("ref's token tied with ours' top logit"), "{s}");
        let (_, _, rank, s) = summary(&[3.0, 2.0, 1.0, 0.0], &[0.0, 1.0, 3.0, 2.0]);
        assert_eq!(rank, 3);
        assert!(
            s.ends_with("(ours 0 vs ref 2; ref's token ranked 3 in ours; ref's margin 3.000e+00, ours' 2.000e+00)"),
            "{s}"
        );
    }

    /// Uniform numbers in [0, 1) from a seed (a 64-bit LCG's top 53 bits).
    fn uniform(mut seed: u64) -> impl FnMut() -> f64 {
        move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `split_exp`'s power of two as it was built before session 59 (`k as i32`, one scalar
    /// conversion per lane).
    fn scale_by_cast(x: f64) -> f64 {
        const ROUND: f64 = 6_755_399_441_055_744.0;
        let x = x.clamp(-700.0, 700.0);
        let k = (x * std::f64::consts::LOG2_E + ROUND) - ROUND;
        f64::from_bits(((k as i32 + 1023) as u64) << 52)
    }

    #[test]
    fn a_flip_carries_both_margins_and_a_near_tie_is_said() {
        // bf16 logits: the reference prefers token 1 by one bf16 ulp at 1.6171875 (a held-out
        // check's clean decode step), ours token 0 by two.
        // One position of logits, ours `o` against the reference's `r`.
        let effect = |o: &[f64], r: &[f64]| {
            let shape = [1, r.len()];
            token_effect(
                "lm_head",
                ValuesRef::F64(o),
                ValuesRef::F64(r),
                &shape,
                &shape,
            )
            .expect("compared")
        };
        let r = [1.609375, 1.6171875, 0.5];
        let o = [1.625, 1.609375, 0.5];
        let e = effect(&o, &r);
        let f = e.first_flip.clone().expect("a flip");
        assert_eq!(
            (
                f.ref_margin,
                f.ours_margin,
                f.ref_top_logit,
                f.ref_margin_ulps
            ),
            (Some(0.0078125), Some(0.015625), Some(1.6171875), None)
        );
        let bf16 = e.clone().with_ref_dtype(DTypeClass::BF16);
        assert_eq!(
            bf16.first_flip.as_ref().and_then(|f| f.ref_margin_ulps),
            Some(1.0)
        );
        assert!(
            bf16.summary().contains(
                "ref's token ranked 2 in ours; ref's margin 7.812e-03 (1 bfloat16 ulp: a near tie \
                 in the reference), ours' 1.562e-02)"
            ),
            "{}",
            bf16.summary()
        );
        // In f32 the same margin is 2^16 ulps: the margins alone.
        let f32 = e.clone().with_ref_dtype(DTypeClass::F32);
        assert_eq!(
            f32.first_flip.as_ref().and_then(|f| f.ref_margin_ulps),
            Some(65536.0)
        );
        for effect in [&f32, &e] {
            assert!(
                effect
                    .summary()
                    .contains("ranked 2 in ours; ref's margin 7.812e-03, ours' 1.562e-02)"),
                "{}",
                effect.summary()
            );
        }
        // Two ulps still a near tie; a top logit of 0 has no ulp.
        let two = [1.6015625, 1.6171875, 0.5];
        let e2 = effect(&o, &two).with_ref_dtype(DTypeClass::BF16);
        assert!(
            e2.summary().contains("(2 bfloat16 ulps: a near tie"),
            "{}",
            e2.summary()
        );
        // The same gap below 0 counts alike (a review: 1.5 ulps above 0 read 3 below, the
        // spacing taken at the top logit only); 1.5 is said as it is.
        let at = |r: [f64; 3]| effect(&[r[1], r[0], r[2]], &r).with_ref_dtype(DTypeClass::BF16);
        for r in [
            [1.0078125, 0.99609375, 0.5],
            [-0.99609375, -1.0078125, -2.0],
        ] {
            let e = at(r);
            assert_eq!(
                e.first_flip.as_ref().and_then(|f| f.ref_margin_ulps),
                Some(1.5),
                "{r:?}"
            );
            assert!(
                e.summary().contains("(1.5 bfloat16 ulps: a near tie"),
                "{}",
                e.summary()
            );
        }
        // A tie in the reference: its argmax took the lower id.
        let tie = effect(&[0.5, 0.75, 0.5], &[0.75, 0.75, 0.5]).with_ref_dtype(DTypeClass::BF16);
        assert!(
            tie.summary().contains(
                "ref's margin 0.000e+00 (a tie in the reference: its argmax takes the lower id)"
            ),
            "{}",
            tie.summary()
        );
        let zero = effect(&[0.0, -1.0], &[-1.0, 0.0]).with_ref_dtype(DTypeClass::BF16);
        // Logits 0 and -1: counted at 1, the larger in size.
        assert_eq!(zero.first_flip.and_then(|f| f.ref_margin_ulps), Some(128.0));
        let ints = at([3.0, 1.0, 0.0]).with_ref_dtype(DTypeClass::Int);
        let f = ints.first_flip.as_ref().expect("a flip");
        assert_eq!((f.ref_margin_ulps, f.ref_dtype), (None, None));
        // A report written before the margins reads, and says its flip as before.
        let old = r#"{"position":0,"step":0,"ours_token":0,"ref_token":1,"ref_token_rank_in_ours":2,"ours_token_rank_in_ref":2}"#;
        let f: Flip = serde_json::from_str(old).expect("an old flip");
        assert_eq!(f.margin_text(), "");
        assert!(!serde_json::to_string(&f).expect("json").contains("margin"));
    }

    #[test]
    fn the_power_of_two_from_the_bits_is_the_cast_ones() {
        // Every k split_exp can reach (x clamped to ±700: |k| <= 1010), at and around each
        // rounding boundary, and out of range on both sides.
        let ln2 = std::f64::consts::LN_2;
        let mut xs = vec![-1e300, -701.0, -700.0, 700.0, 701.0, 1e300, 0.0, -0.0];
        for k in -1011..=1011 {
            let at = k as f64 * ln2;
            for d in [-0.5, -0.5 + 1e-12, -1e-9, 0.0, 1e-9, 0.5 - 1e-12, 0.5] {
                xs.push(at + d * ln2);
            }
        }
        for x in xs {
            let (scale, _) = split_exp(x);
            assert_eq!(scale.to_bits(), scale_by_cast(x).to_bits(), "x = {x}");
        }
    }

    #[test]
    fn the_dispatched_scan_gives_the_baseline_build_s_bits() {
        // Rows of ordinary, shifted, extreme and tied logits, lengths around the lane count:
        // the build for the widest vector unit (`scan_rows`) and the baseline build agree on
        // every output, the KLD to the bit.
        let mut rnd = uniform(59);
        for (len, spread, shift, step) in [
            (2, 10.0, 0.0, 0.0),
            (7, 10.0, 0.0, 0.0),
            (8, 10.0, 0.0, 0.0),
            (9, 30.0, 40.0, 0.0),
            (1_000, 10.0, 0.0, 0.0),
            (1_003, 2_000.0, 0.0, 0.0),
            (4_099, 10.0, 1e13, 0.0),
            (4_099, 8.0, 0.0, 0.0625),
        ] {
            let quantize = |x: f64| {
                if step > 0.0 {
                    (x / step).round() * step
                } else {
                    x
                }
            };
            let r: Vec<f64> = (0..len)
                .map(|_| quantize(spread * (2.0 * rnd() - 1.0)))
                .collect();
            let o: Vec<f64> = r
                .iter()
                .map(|x| quantize(x + shift + 0.3 * (2.0 * rnd() - 1.0)))
                .collect();
            let base = scan_rows_portable(&o, &r).expect("finite rows");
            let mut builds = vec![scan_rows(&o, &r).expect("finite rows")];
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    builds.push(unsafe { scan_rows_avx2(&o, &r) }.expect("finite rows"));
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    builds.push(unsafe { scan_rows_avx512(&o, &r) }.expect("finite rows"));
                }
            }
            let bits =
                |m: Option<Margins>| m.map(|(a, b, c)| [a.to_bits(), b.to_bits(), c.to_bits()]);
            for fast in builds {
                assert_eq!(fast.0, base.0);
                assert_eq!(
                    fast.1.to_bits(),
                    base.1.to_bits(),
                    "len {len}: {} vs {}",
                    fast.1,
                    base.1
                );
                assert_eq!(
                    (&fast.2, &fast.3, fast.4, fast.5),
                    (&base.2, &base.3, base.4, base.5)
                );
                assert_eq!(bits(fast.6), bits(base.6));
            }
        }
    }

    #[test]
    fn top_k_is_a_stable_sort_s_first_k() {
        // Ties (values on a coarse grid), lengths that leave a remainder past the groups, and
        // rows where the largest values come last (no group skipped) or first (most skipped).
        let mut rnd = uniform(5);
        for len in [1, 3, 5, 8, 13, 64, 100, 1_001] {
            for order in 0..3 {
                let mut row: Vec<f64> = (0..len).map(|_| (8.0 * rnd()).floor()).collect();
                if order == 1 {
                    row.sort_by(f64::total_cmp);
                } else if order == 2 {
                    row.sort_by(|a, b| b.total_cmp(a));
                }
                let mut want: Vec<usize> = (0..len).collect();
                want.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                want.truncate(5);
                assert_eq!(top_k(&row, 5), want, "len {len}, order {order}: {row:?}");
            }
        }
    }

    #[test]
    fn a_value_not_finite_anywhere_in_either_row_is_seen() {
        for len in [1, 7, 8, 9, 17, 64] {
            for at in 0..len {
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    let ok = vec![1.5; len];
                    let mut row = ok.clone();
                    row[at] = bad;
                    assert!(!all_finite(&row, &ok), "len {len}, at {at}, {bad}");
                    assert!(!all_finite(&ok, &row), "len {len}, at {at}, {bad}");
                    assert!(scan_rows(&ok, &row).is_none());
                }
            }
            assert!(all_finite(&vec![-f64::MAX; len], &vec![f64::MAX; len]));
        }
    }

    #[test]
    fn the_fast_kld_is_the_textbook_one() {
        let mut rnd = uniform(7);
        for scale in [1e-7, 1e-4, 1e-2, 0.3, 3.0] {
            let p: Vec<f64> = (0..4000).map(|_| 20.0 * rnd() - 10.0).collect();
            let q: Vec<f64> = p.iter().map(|x| x + scale * (2.0 * rnd() - 1.0)).collect();
            let (fast, slow) = (kl_fast(&p, &q), kl(&p, &q));
            // The textbook form subtracts log-sum-exps of ~10: it is off by up to ~1e-14
            // absolute (cancellation); the fast one does not subtract them.
            assert!(
                (fast - slow).abs() <= 1e-9 * slow + 1e-13,
                "scale {scale}: {fast} vs {slow}"
            );
        }
        for x in [-700.0, -50.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 50.0] {
            let (f, e) = (exp_fast(x), f64::exp(x));
            assert!((f - e).abs() <= 1e-12 * e, "{x}: {f} vs {e}");
        }
    }

    #[test]
    fn the_kld_does_not_see_a_constant_and_survives_extreme_logits() {
        let mut rnd = uniform(11);
        let p: Vec<f64> = (0..4000).map(|_| 20.0 * rnd() - 10.0).collect();
        let noisy: Vec<f64> = p.iter().map(|x| x + 0.3 * (2.0 * rnd() - 1.0)).collect();
        let shift = |v: &[f64], c: f64| v.iter().map(|x| x + c).collect::<Vec<f64>>();
        let top = |v: &[f64]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
        // The top token flipped (the second one raised past it), as a port that flips it.
        let mut flipped = p.clone();
        let t = top(&p);
        let second = (0..p.len())
            .filter(|&i| i != t)
            .fold(usize::from(t == 0), |b, i| if p[i] > p[b] { i } else { b });
        flipped.swap(t, second);
        flipped[second] -= 3.0;
        // A reference sure of one token (40 above the rest), and a logit far out on either side.
        let mut sure = p.clone();
        sure[17] = 50.0;
        let mut huge = noisy.clone();
        huge[5] = 1e9;
        let mut far_below = noisy.clone();
        far_below[9] = -1000.0;
        let cases: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
            ("noise, ours 40 lower", p.clone(), shift(&noisy, -40.0)),
            ("noise, ours 40 higher", p.clone(), shift(&noisy, 40.0)),
            (
                "flipped top, ours 40 lower",
                p.clone(),
                shift(&flipped, -40.0),
            ),
            (
                "flipped top, ours 1e4 lower",
                p.clone(),
                shift(&flipped, -1e4),
            ),
            ("a sure reference", sure.clone(), noisy.clone()),
            ("a sure ours", noisy.clone(), sure.clone()),
            ("one huge logit of ours", p.clone(), huge.clone()),
            ("one huge logit of the reference", huge.clone(), p.clone()),
            ("a logit of ours far below", p.clone(), far_below.clone()),
            (
                "a logit of the reference far below",
                far_below.clone(),
                p.clone(),
            ),
        ];
        for (what, p, q) in cases {
            let (fast, slow) = (kl_fast(&p, &q), kl(&p, &q));
            // The textbook form rounds at the size of the logits (and of the constant).
            let c = p.iter().copied().fold(f64::MIN, f64::max)
                - q.iter().copied().fold(f64::MIN, f64::max);
            assert!(
                slow > 1e-6,
                "{what}: a case with something to measure ({slow})"
            );
            assert!(
                (fast - slow).abs() <= 1e-9 * slow + 1e-14 * (1.0 + c.abs()),
                "{what}: {fast} vs {slow}"
            );
        }
        // Logits far beyond any model's, against their exact KLD (a review found the first
        // version of the shift off there): a reference sure of token 0 against ours sure of
        // token 1 by 10; ours flat at -7e37 (f32's range); f64 logits at 1.7e308.
        let exact: [(&[f64], &[f64], f64); 3] = [
            (&[1e20, 0.0], &[0.0, 10.0], 10.0 + (-10f64).exp().ln_1p()),
            (
                &[12.97, -22.8],
                &[-6.98e37, -6.98e37],
                std::f64::consts::LN_2 - 35.77 * (-35.77f64).exp(),
            ),
            (
                &[1.7e308, 0.0, 0.0],
                &[-1.7e308, -1.7e308, -1.7e308],
                3f64.ln(),
            ),
        ];
        for (p, q, want) in exact {
            let got = kl_fast(p, q);
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "{p:?} {q:?}: {got} vs {want}"
            );
        }
        // And the same KLD with and without the constant, to the last few bits.
        let (a, b) = (kl_fast(&p, &noisy), kl_fast(&p, &shift(&noisy, -40.0)));
        assert!((a - b).abs() <= 1e-12 * a, "{a} vs {b}");
    }

    #[test]
    fn kld_matches_a_hand_computation() {
        // p = softmax([0, ln 3]) = [1/4, 3/4]; q = [1/2, 1/2]: KL = 1/4 ln(1/2) + 3/4 ln(3/2).
        let p = [0.0, 3f64.ln()];
        let q = [0.0, 0.0];
        let want = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!((kl(&p, &q) - want).abs() < 1e-15);
        assert!((kl_fast(&p, &q) - want).abs() < 1e-15);
    }

    #[test]
    fn nonfinite_positions_are_counted_not_compared() {
        let r = [0.0f32, 1.0, f32::NAN, 0.0];
        let o = [0.0f32, 1.0, 1.0, 0.0];
        let e = token_effect(
            "lm_head",
            ValuesRef::F32(&o),
            ValuesRef::F32(&r),
            &[2, 2],
            &[2, 2],
        )
        .unwrap();
        assert_eq!((e.positions, e.nonfinite_positions), (1, 1));
        assert_eq!(e.per_position[1].kld, None);
        let bad = [f32::NAN; 4];
        assert!(token_effect(
            "x",
            ValuesRef::F32(&bad),
            ValuesRef::F32(&r),
            &[2, 2],
            &[2, 2]
        )
        .is_none());
        assert!(token_effect("x", ValuesRef::F32(&o), ValuesRef::F32(&r), &[4], &[2, 2]).is_none());
    }

    /// Logits masked with `-inf` at the same entries on both sides are compared over the
    /// others: the same numbers as the rows without the masked entries, tokens numbered in the
    /// whole vocabulary. A mask on one side only, or a NaN, is not compared.
    #[test]
    fn a_mask_both_sides_share_is_compared_over_the_rest() {
        let m = f32::NEG_INFINITY;
        // two positions of a vocabulary of 4
        let effect = |o: &[f32], r: &[f32]| {
            token_effect(
                "lm_head",
                ValuesRef::F32(o),
                ValuesRef::F32(r),
                &[2, 4],
                &[2, 4],
            )
        };
        // position 0: ours flips to token 3 (entry 1 masked); position 1: agree
        let o = [0.0f32, m, 1.0, 2.0, m, 0.5, 2.0, 0.1];
        let r = [0.0f32, m, 2.0, 1.0, m, 0.5, 1.9, 0.2];
        let e = effect(&o, &r).unwrap();
        assert_eq!((e.positions, e.nonfinite_positions), (2, 0));
        assert_eq!(e.top1_agree, 1);
        let flip = e.first_flip.as_ref().unwrap();
        assert_eq!((flip.position, flip.ours_token, flip.ref_token), (0, 3, 2));
        assert_eq!(
            (flip.ref_token_rank_in_ours, flip.ours_token_rank_in_ref),
            (2, 2)
        );
        // the KLD of the unmasked entries alone
        let want = |o: &[f32], r: &[f32]| {
            let w = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            kl(&w(r), &w(o))
        };
        let k0 = want(&[0.0, 1.0, 2.0], &[0.0, 2.0, 1.0]);
        let k1 = want(&[0.5, 2.0, 0.1], &[0.5, 1.9, 0.2]);
        assert!((e.per_position[0].kld.unwrap() - k0).abs() < 1e-12, "{e:?}");
        assert!((e.per_position[1].kld.unwrap() - k1).abs() < 1e-12, "{e:?}");
        // a mask on one side only, +inf, or NaN: that position is not compared
        for bad in [0.0f32, f32::INFINITY, f32::NAN] {
            let mut r2 = r;
            r2[1] = bad;
            let e = effect(&o, &r2).unwrap();
            assert_eq!((e.positions, e.nonfinite_positions), (1, 1), "{bad}");
        }
        // every entry masked: nothing to compare
        let all = [m; 8];
        assert!(effect(&all, &all).is_none());
    }
}
