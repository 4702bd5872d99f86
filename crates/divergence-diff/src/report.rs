//! The report: every op row plus what a reader needs first (first divergence, summary, warnings).
//!
//! [`assemble`] is pure: it takes the rows in execution order and the [`ReportContext`] (labels,
//! order source, warnings, input_ids of both runs) and finds the first divergence, counts statuses,
//! lists one-side names, gives every row its local growth, traces the origin of the first divergence
//! ([`crate::origin`]) and builds the amplification section. The JSON form is documented field by
//! field in `docs/report-schema.md` (`"schema": "divergence-report/2"`).

use std::borrow::Cow;

use divergence_names::dataflow::Dataflow;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::amplification::{amplification, Amplification, NormWeightGains};
use crate::compare::{OpResult, Status};
use crate::config::DiffConfig;
use crate::hints::Hint;
use crate::order::OrderSource;
use crate::origin::{local_growths, origin_or_by_rel_err, Measure, Origin};
use crate::positions::PositionProfile;
use crate::rows::{Row, RowSource, Rows};
use crate::tokens::TokenEffect;
use crate::tolerance::{DTypeClass, Tolerance};

/// Value of the `"schema"` field.
pub const SCHEMA: &str = "divergence-report/2";

/// What the caller knows beyond the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportContext {
    /// Label of our dump (usually its path).
    pub ours_label: String,
    /// Label of the reference dump (usually its path).
    pub ref_label: String,
    /// Where the execution order came from ([`crate::OrderPlan::source`]).
    pub order_source: OrderSource,
    /// Warnings gathered so far (e.g. [`crate::OrderPlan::warnings`]), one line each.
    pub warnings: Vec<String>,
    /// Our metadata `input_ids`, if any.
    pub ours_input_ids: Option<Vec<i64>>,
    /// The reference's metadata `input_ids`, if any.
    pub ref_input_ids: Option<Vec<i64>>,
    /// Max |weight| of each layer's q_norm / k_norm (`(0, K)` -> 96.5), for the amplification
    /// section's `weight_gain`; empty unless the CLI read the checkpoint (`--model DIR`).
    pub norm_weight_gains: NormWeightGains,
}

impl ReportContext {
    /// A context with labels and order source; everything else empty.
    pub fn new(
        ours_label: impl Into<String>,
        ref_label: impl Into<String>,
        order_source: OrderSource,
    ) -> Self {
        ReportContext {
            ours_label: ours_label.into(),
            ref_label: ref_label.into(),
            order_source,
            warnings: Vec::new(),
            ours_input_ids: None,
            ref_input_ids: None,
            norm_weight_gains: NormWeightGains::new(),
        }
    }
}

/// What the two sides of a report are, in words the renderers name them by in the header
/// ([`Report::sides`]): the rows, hints and columns keep calling them `ours` and `ref`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideNames {
    /// What `ours` is (`"stepped"`: the prefill plus decode steps).
    pub ours: String,
    /// What `ref` is (`"one pass"`: one prefill over all the tokens).
    #[serde(rename = "ref")]
    pub reference: String,
}

impl SideNames {
    /// `--prefill-vs-decode`'s sides: the stepped run (`ours`) and the one pass (`ref`).
    pub fn prefill_vs_decode() -> SideNames {
        SideNames {
            ours: "stepped".to_string(),
            reference: "one pass".to_string(),
        }
    }
}

/// The earliest diverging op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirstDivergence {
    /// Probe name.
    pub name: String,
    /// Index into `ops`.
    pub index: usize,
    /// `diverged`, `shape_mismatch`, `nonfinite` or `no_finite`.
    pub status: Status,
    /// The row's reason.
    pub reason: String,
    /// Layer, when the name has `layers.N`.
    pub layer: Option<usize>,
    /// Decode step (0 = the prefill).
    #[serde(default)]
    pub step: usize,
}

/// One decode step of a dump pair with decode steps (`Report::steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    /// 0 = the prefill, 1.. = decode steps.
    pub step: usize,
    /// Rows of this step present and readable on both sides (ok + every divergence status, as
    /// `Summary::compared`).
    pub compared: usize,
    /// Rows of this step that diverge (any divergence status).
    pub diverged: usize,
    /// Rows of this step present on one side only, or unreadable.
    pub missing: usize,
    /// The largest `rel_l2_err` of the step's compared rows, `None` when none has one or
    /// when a diverged row has none (its sums past f64: its error is not measured).
    pub worst_rel_err: Option<f64>,
    /// The row that has it, or the first diverged row whose error is not measured.
    pub worst_op: Option<String>,
    /// The step's first diverging row in execution order, `None` when none diverges.
    pub first_divergence: Option<String>,
}

/// Per-step summaries, for rows that have decode steps; empty when every row is of step 0.
pub fn step_summaries<R: RowSource + ?Sized>(ops: &R) -> Vec<StepSummary> {
    let len = ops.row_count();
    if (0..len)
        .into_par_iter()
        .with_min_len(4096)
        .all(|i| ops.row_at(i).step() == 0)
    {
        return Vec::new();
    }
    /// A step's numbers over some rows; rows by index, names taken at the end.
    #[derive(Default)]
    struct Part {
        compared: usize,
        diverged: usize,
        missing: usize,
        /// (rel_l2_err, row) of the first row that has one.
        first: Option<(f64, usize)>,
        /// (rel_l2_err, row), the first row of the largest that is not NaN.
        worst: Option<(f64, usize)>,
        first_divergence: Option<usize>,
        /// The first diverged row without a rel_l2_err (sums past f64): the step's worst is
        /// not measured (a bad-input hunt read `worst 0` at a clean row beside it).
        unmeasured: Option<usize>,
    }
    type Parts = std::collections::BTreeMap<usize, Part>;
    /// `b`'s rows come after `a`'s: counts add, the earlier row wins a tie.
    fn merge_part(a: &mut Part, b: Part) {
        a.compared += b.compared;
        a.diverged += b.diverged;
        a.missing += b.missing;
        a.first = a.first.or(b.first);
        if let Some((e, i)) = b.worst {
            if a.worst.is_none_or(|(w, _)| e > w) {
                a.worst = Some((e, i));
            }
        }
        a.first_divergence = a.first_divergence.or(b.first_divergence);
        a.unmeasured = a.unmeasured.or(b.unmeasured);
    }
    /// `later`'s rows come after `into`'s.
    fn merge(mut into: Parts, later: Parts) -> Parts {
        for (step, b) in later {
            merge_part(into.entry(step).or_default(), b);
        }
        into
    }
    // In parallel over chunks of rows, merged in row order (a decode dump has ~150,000 rows).
    // Within a chunk, the part of the rows' current step is at hand: a step's rows are
    // consecutive in a decode report, one map lookup a step, not one a row.
    let parts: Parts = (0..len.div_ceil(4096))
        .into_par_iter()
        .map(|c| {
            let mut out = Parts::new();
            let mut cur: Option<(usize, Part)> = None;
            for i in c * 4096..len.min((c + 1) * 4096) {
                let o = ops.row_at(i);
                let status = o.status();
                let step = o.step();
                let s = match &mut cur {
                    Some((at, s)) if *at == step => s,
                    cur => {
                        if let Some((at, done)) = cur.take() {
                            merge_part(out.entry(at).or_default(), done);
                        }
                        &mut cur.insert((step, Part::default())).1
                    }
                };
                match status.is_compared() {
                    false => s.missing += 1,
                    true => s.compared += 1,
                }
                if status.is_divergence() {
                    s.diverged += 1;
                    s.first_divergence = s.first_divergence.or(Some(i));
                }
                let rel = o.rel_l2_err();
                if status == Status::Diverged && rel.is_none() {
                    s.unmeasured = s.unmeasured.or(Some(i));
                }
                if let Some(e) = rel {
                    if matches!(status, Status::Ok | Status::Diverged) {
                        s.first = s.first.or(Some((e, i)));
                        if !e.is_nan() && s.worst.is_none_or(|(w, _)| e > w) {
                            s.worst = Some((e, i));
                        }
                    }
                }
            }
            if let Some((at, done)) = cur {
                merge_part(out.entry(at).or_default(), done);
            }
            out
        })
        .reduce(Parts::new, merge);
    let name = |i: usize| (i < len).then(|| ops.row_at(i).name().into_owned());
    parts
        .into_iter()
        .map(|(step, p)| {
            // The worst is the first value, replaced by every larger one: a NaN first stays
            // (nothing is larger than NaN), a NaN later never replaces.
            let worst = match p.first {
                Some((e, i)) if e.is_nan() => Some((e, i)),
                _ => p.worst,
            };
            (step, p, worst)
        })
        .map(|(step, p, worst)| StepSummary {
            step,
            compared: p.compared,
            diverged: p.diverged,
            missing: p.missing,
            worst_rel_err: worst.filter(|_| p.unmeasured.is_none()).map(|(e, _)| e),
            worst_op: p.unmeasured.or(worst.map(|(_, i)| i)).and_then(name),
            first_divergence: p.first_divergence.and_then(name),
        })
        .collect()
}

/// The first op whose two sides differ at all (any element, a shape, a NaN position), whether
/// or not that is over the tolerance: where the two runs stop being bit-identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirstDifference {
    /// Probe name.
    pub name: String,
    /// Index into `ops`.
    pub index: usize,
    /// `max |ours - ref|` there (`None` for a shape or NaN/Inf mismatch).
    pub max_abs_err: Option<f64>,
}

/// How many compared ops were judged with which rtol / atol (the presets by dtype class, or the
/// manual values), so the header can say what "auto" meant for this pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgedWith {
    /// The coarser dtype class of the two sides.
    pub class: DTypeClass,
    /// Relative tolerance applied.
    pub rtol: f64,
    /// Absolute tolerance applied.
    pub atol: f64,
    /// Compared rows judged by these values (in truth mode: rows without a usable truth).
    pub ops: usize,
}

/// Status counts over `ops`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Rows in `ops`.
    pub total: usize,
    /// Rows present and readable on both sides (ok + diverged).
    pub compared: usize,
    /// Rows within tolerance.
    pub ok: usize,
    /// Rows that diverge in any way (`diverged` + `shape_mismatch` + `nonfinite` + `no_finite`).
    pub diverged: usize,
    /// Of `diverged`: shape mismatches.
    pub shape_mismatch: usize,
    /// Of `diverged`: non-finite mask mismatches.
    pub nonfinite: usize,
    /// Of `diverged`: rows with no finite element on either side (`no_finite`).
    pub no_finite: usize,
    /// Rows only in ours.
    pub only_ours: usize,
    /// Rows only in the reference.
    pub only_ref: usize,
    /// Rows that could not be read.
    pub unreadable: usize,
    /// Truth mode: of `compared`, the ops where the reference is more than
    /// [`crate::TRUTH_MAX_REF_ERR`] from the truth after inputs already noisy, judged
    /// by the noise ratio (`compare::judge_noisy_reference`, which warns of them). Left out of
    /// the JSON when 0.
    #[serde(default, skip_serializing_if = "crate::tokens::is_zero")]
    pub noise_judged: usize,
    /// Truth mode: of `compared`, the decode steps over the noise ratio left ok as noise within
    /// the reference's own spread over their op's steps (`compare::judge_by_step_envelope`,
    /// whose note says so). Left out of the JSON when 0.
    #[serde(default, skip_serializing_if = "crate::tokens::is_zero")]
    pub step_noise: usize,
}

/// The whole diff. Field order is the JSON field order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Label of our dump.
    pub ours: String,
    /// Label of the reference dump.
    #[serde(rename = "ref")]
    pub reference: String,
    /// What each side is where the two are not a port and its reference (`--prefill-vs-decode`:
    /// the stepped run is `ours`, the one pass `ref`, whichever order the files were given);
    /// `None` (left out of the JSON) for a plain diff. Filled by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sides: Option<SideNames>,
    /// The tolerance mode (`{"mode": "auto"}`, `{"mode": "manual", "rtol": .., "atol": ..}`, `{"mode": "exact"}`).
    pub tolerance: Tolerance,
    /// Where the execution order came from.
    pub order_source: OrderSource,
    /// True when both dumps carry input_ids and they differ: the comparison is meaningless.
    pub input_ids_mismatch: bool,
    /// Warnings, one line each; an input_ids mismatch is always first.
    pub warnings: Vec<String>,
    /// Notes, one line each: how the sides were read when that is not plain (what
    /// `--prefill-vs-decode` lines up with what), nothing to worry about. Filled by the caller.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The decode steps `diff --steps` selected, as the CLI writes them (`0-4`, `0,4-8`, `3-`; 0 =
    /// the prefill); `None` where every step was compared. Filled by the caller.
    #[serde(default)]
    pub step_selection: Option<String>,
    /// The earliest diverging op, or `None`.
    pub first_divergence: Option<FirstDivergence>,
    /// Where the first divergence's error was born ([`crate::origin`]), or `None`.
    pub origin: Option<Origin>,
    /// Cause hints for the first divergence and its origin ([`crate::hints`]); empty when
    /// nothing holds. Filled by the caller, which reads the tensors of [`Report::hint_targets`].
    pub hints: Vec<Hint>,
    /// Which token positions carry the first divergence's error ([`crate::positions`]);
    /// `None` without a divergence, for a shape mismatch, or a probe without a token axis.
    /// Filled by the caller, which reads the first divergence's tensors.
    #[serde(default)]
    pub positions: Option<PositionProfile>,
    /// What the differences do to the next-token distributions (`lm_head` on both sides):
    /// top-1 agreement, top-5 overlap, KL divergence per position ([`crate::tokens`]). `None`
    /// without logits on both sides. Filled by the caller, which reads the logits.
    #[serde(default)]
    pub tokens: Option<TokenEffect>,
    /// The first op whose sides differ at all, or `None` when every compared op is bit-identical.
    pub first_difference: Option<FirstDifference>,
    /// The rtol / atol the compared ops were judged with, per dtype class (empty in exact mode).
    pub judged_with: Vec<JudgedWith>,
    /// Status counts.
    pub summary: Summary,
    /// One entry per step (0 = the prefill) when the dumps have decode steps; empty (and left
    /// out of the JSON) for one-pass dumps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSummary>,
    /// Names present only in our dump, in execution order.
    pub only_ours: Vec<String>,
    /// Names present only in the reference dump, in execution order.
    pub only_ref: Vec<String>,
    /// q_norm / k_norm amplification per layer.
    pub amplification: Amplification,
    /// One row per probe, in execution order.
    pub ops: Rows,
}

/// [`Report::compared_no_element`] of `ops`, `compared` of them compared. A row holds no
/// element where neither side's shape does (a shape mismatch of two non-empty sides compares
/// no element pairwise, yet is a divergence: the first version read the elements compared,
/// and a test's report of shape mismatches became no verdict).
fn compared_no_element(ops: &Rows, compared: usize) -> bool {
    let elements = |s: &Option<Vec<usize>>| s.as_ref().map_or(0, |s| s.iter().product::<usize>());
    // (A shape mismatch is a finding though both sides be empty: a second hunt's `[0, 3]`
    // against `[3, 0]` was no verdict.)
    let empty = |r: crate::rows::Row<'_>| {
        let t = r.tensor();
        !r.status().is_divergence() && elements(&t.shape) == 0 && elements(&t.shape_ours) == 0
    };
    // (A compared row found, none holding an element: a report without its rows, as tests
    // build them, is not said to compare nothing.)
    let mut seen = false;
    compared > 0
        && ops.rows().filter(|r| r.status().is_compared()).all(|r| {
            seen = true;
            empty(r)
        })
        && seen
}

impl Report {
    /// Ops were compared, and none of them holds an element on either side: a pass that
    /// compared nothing (two dumps of empty decode steps read "no divergence in 13 steps": a
    /// bad-input hunt). No verdict (`diff` exits 2, as where no op is compared), and a warning
    /// says so. The first op with an element ends the look.
    pub fn compared_no_element(&self) -> bool {
        compared_no_element(&self.ops, self.summary.compared)
    }

    /// True when some op diverges (the CLI's exit code 1).
    pub fn has_divergence(&self) -> bool {
        self.first_divergence.is_some()
    }

    /// The first diverging row (built when it is a compact decode step, [`Rows::op`]).
    pub fn first_divergence_op(&self) -> Option<Cow<'_, OpResult>> {
        self.first_divergence
            .as_ref()
            .and_then(|f| self.ops.op(f.index))
    }

    /// The ops whose tensors the cause hints look at: the first divergence, then its origin
    /// when that is another op, each with the names of its inputs (the dataflow of
    /// `divergence-names`). Empty without a divergence: a clean pair gets no hint.
    pub fn hint_targets(&self) -> Vec<(String, Vec<String>)> {
        let Some(first) = &self.first_divergence else {
            return Vec::new();
        };
        let mut targets = vec![first.index];
        if let Some(o) = &self.origin {
            if o.index != first.index {
                targets.push(o.index);
            }
        }
        // Inputs never cross decode steps: each target's dataflow is its own step's.
        targets
            .into_iter()
            .filter_map(|i| {
                let step = self.ops.get_row(i)?.step();
                let idx: Vec<usize> = (0..self.ops.len())
                    .filter(|&j| self.ops.row(j).step() == step)
                    .collect();
                let names: Vec<Cow<'_, str>> =
                    idx.iter().map(|&j| self.ops.row(j).name()).collect();
                let k = idx.iter().position(|&j| j == i)?;
                let flow = Dataflow::new(&names);
                let inputs = flow
                    .inputs(k)
                    .iter()
                    .map(|j| names[j].to_string())
                    .collect();
                Some((names[k].to_string(), inputs))
            })
            .collect()
    }

    /// The ops whose values the first divergence may hold ([`crate::hints::another_op`]): the
    /// other compared ops of its step and layer with its shapes on both sides, whose norms
    /// allow a match (ours' here within [`crate::hints::ANOTHER_OP_MATCH`] of the other's in
    /// the reference, or the other's in ours of the reference's here: a match that close needs
    /// it), nearest in execution order first, at most [`ANOTHER_OP_CANDIDATES`]. None where
    /// the hint cannot hold, so that nothing is read for it (a review: a first divergence of
    /// 0.03 read 16 ops of 4M elements for nothing): the first divergence not `diverged` (a
    /// shape mismatch or NaN reads otherwise), nearer its reference than
    /// [`crate::hints::ANOTHER_OP_FAR`], or larger than [`crate::hints::MAX_ELEMENTS`].
    pub fn another_op_candidates(&self) -> Vec<String> {
        use crate::hints::{ANOTHER_OP_FAR, ANOTHER_OP_MATCH, MAX_ELEMENTS};
        let Some(first) = &self.first_divergence else {
            return Vec::new();
        };
        let Some(row) = self.ops.get_row(first.index) else {
            return Vec::new();
        };
        let norms = |r: crate::rows::Row<'_>| {
            let (terms, _) = r.terms();
            terms.ours_l2.zip(terms.ref_l2)
        };
        let far = row.rel_l2_err().is_some_and(|e| e >= ANOTHER_OP_FAR);
        let small = row.n_compared().is_some_and(|n| n <= MAX_ELEMENTS as u64);
        let (Some((ours_here, ref_here)), true, true, Status::Diverged) =
            (norms(row), far, small, row.status())
        else {
            return Vec::new();
        };
        let (step, layer, tensor) = (row.step(), row.layer(), row.tensor());
        // `|‖a‖ − ‖b‖| ≤ ‖a − b‖ ≤ MATCH‖b‖`, with a little room for the norms' rounding.
        let near = |a: f64, b: f64| (a - b).abs() <= 1.01 * ANOTHER_OP_MATCH * b;
        let alike = |j: usize| {
            let other = self.ops.row(j);
            let t = other.tensor();
            j != first.index
                && other.step() == step
                && other.layer() == layer
                && matches!(other.status(), Status::Ok | Status::Diverged)
                && t.shape == tensor.shape
                && t.shape_ours == tensor.shape_ours
                && norms(other).is_some_and(|(ours_there, ref_there)| {
                    near(ours_here, ref_there) || near(ours_there, ref_here)
                })
        };
        // Nearest first: before and after the first divergence in turn.
        let (before, after) = ((0..first.index).rev(), first.index + 1..self.ops.len());
        let mut found = Vec::new();
        let (mut before, mut after) = (before.peekable(), after.peekable());
        while found.len() < ANOTHER_OP_CANDIDATES
            && (before.peek().is_some() || after.peek().is_some())
        {
            for j in [before.next(), after.next()].into_iter().flatten() {
                if found.len() < ANOTHER_OP_CANDIDATES && alike(j) {
                    found.push(self.ops.row(j).name().into_owned());
                }
            }
        }
        found
    }
}

/// At most this many ops are read for [`Report::another_op_candidates`].
pub const ANOTHER_OP_CANDIDATES: usize = 16;

fn input_ids_warning(ours: &[i64], reference: &[i64]) -> Option<String> {
    if ours == reference {
        return None;
    }
    let first = ours
        .iter()
        .zip(reference)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(reference.len()));
    Some(format!(
        "INPUT_IDS MISMATCH: the two runs saw different inputs (ours: {} tokens, ref: {} tokens, first difference at position {first}); this comparison is meaningless",
        ours.len(),
        reference.len()
    ))
}

/// In truth mode, the rows that were compared without a usable truth (judged by the presets),
/// as one warning line: never a silent fallback.
fn truth_warning(ops: &Rows, tolerance: &Tolerance) -> Option<String> {
    if !matches!(tolerance, Tolerance::Truth { .. }) {
        return None;
    }
    let without: Vec<Row<'_>> = ops
        .rows()
        .filter(|o| o.truth().truth_problem.is_some())
        .collect();
    let first = without.first()?;
    let more = if without.len() > 1 {
        format!(" (and {} more)", without.len() - 1)
    } else {
        String::new()
    };
    Some(format!(
        "TRUTH NOT USED for {} of {} compared ops, judged by the fixed presets instead: {}: {}{more}",
        without.len(),
        ops.rows()
            .filter(|o| matches!(o.status(), Status::Ok | Status::Diverged))
            .count(),
        first.name(),
        first.truth().truth_problem.as_deref().unwrap_or("")
    ))
}

/// Whether row `o` (of `status`) differs at all from the reference: the first such row is
/// [`Report::first_difference`].
fn differs(o: Row<'_>, status: Status) -> bool {
    match status {
        Status::ShapeMismatch | Status::Nonfinite => true,
        Status::Ok | Status::Diverged | Status::NoFinite => {
            let max_abs_err = o.max_abs_err();
            max_abs_err.is_some_and(|m| m > 0.0)
                || o.nonfinite().nonfinite_mismatch.is_some_and(|n| n > 0)
                // max_abs_err overflowed (null) although something was compared
                || (max_abs_err.is_none() && status == Status::Diverged)
        }
        _ => false,
    }
}

/// What one pass over the rows counts and finds, in row order: a decode report has ~150,000
/// rows, each read once here instead of once per tally.
#[derive(Default)]
struct Tally {
    /// The first row that diverges.
    first_divergence: Option<usize>,
    /// The first row that differs at all ([`differs`]).
    first_difference: Option<usize>,
    /// The counts of each status (`total` and `compared` are set after).
    summary: Summary,
    only_ours: Vec<usize>,
    only_ref: Vec<usize>,
    /// What the compared rows were judged with, classes in the order first seen.
    judged: Vec<JudgedWith>,
}

impl Tally {
    /// Counts `j`'s rows into `out`, classes in the order first seen.
    fn add(out: &mut Vec<JudgedWith>, j: JudgedWith) {
        match out
            .iter_mut()
            .find(|o| o.class == j.class && o.rtol == j.rtol && o.atol == j.atol)
        {
            Some(o) => o.ops += j.ops,
            None => out.push(j),
        }
    }

    /// Row `i`, after the rows before it.
    fn push(&mut self, i: usize, o: Row<'_>, tolerance: &Tolerance) {
        let status = o.status();
        if status.is_divergence() {
            self.first_divergence.get_or_insert(i);
        }
        if self.first_difference.is_none() && differs(o, status) {
            self.first_difference = Some(i);
        }
        let summary = &mut self.summary;
        match status {
            Status::Ok => summary.ok += 1,
            Status::Diverged => summary.diverged += 1,
            Status::ShapeMismatch => {
                summary.diverged += 1;
                summary.shape_mismatch += 1;
            }
            Status::Nonfinite => {
                summary.diverged += 1;
                summary.nonfinite += 1;
            }
            Status::NoFinite => {
                summary.diverged += 1;
                summary.no_finite += 1;
            }
            Status::OnlyOurs => {
                summary.only_ours += 1;
                self.only_ours.push(i);
            }
            Status::OnlyRef => {
                summary.only_ref += 1;
                self.only_ref.push(i);
            }
            Status::Unreadable => summary.unreadable += 1,
        }
        // What a compared row was judged with (not under --exact; in truth mode, only a row
        // judged by the presets for want of a truth).
        let judged = match tolerance {
            Tolerance::Exact => false,
            Tolerance::Truth { .. } => o.truth().truth_problem.is_some(),
            _ => true,
        };
        if judged && matches!(status, Status::Ok | Status::Diverged) {
            if let (Some(rtol), Some(atol)) = o.rule_tol() {
                let class = o.pair_class();
                Tally::add(
                    &mut self.judged,
                    JudgedWith {
                        class,
                        rtol,
                        atol,
                        ops: 1,
                    },
                );
            }
        }
    }

    /// `later`'s rows come after `self`'s.
    fn then(mut self, later: Tally) -> Tally {
        self.first_divergence = self.first_divergence.or(later.first_divergence);
        self.first_difference = self.first_difference.or(later.first_difference);
        let (a, b) = (&mut self.summary, later.summary);
        a.ok += b.ok;
        a.diverged += b.diverged;
        a.shape_mismatch += b.shape_mismatch;
        a.nonfinite += b.nonfinite;
        a.no_finite += b.no_finite;
        a.only_ours += b.only_ours;
        a.only_ref += b.only_ref;
        a.unreadable += b.unreadable;
        self.only_ours.extend(later.only_ours);
        self.only_ref.extend(later.only_ref);
        for j in later.judged {
            Tally::add(&mut self.judged, j);
        }
        self
    }

    /// Every row, in parallel over chunks merged in row order.
    fn of(ops: &Rows, tolerance: &Tolerance) -> Tally {
        const CHUNK: usize = 4096;
        let len = ops.len();
        (0..len.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut t = Tally::default();
                for i in c * CHUNK..len.min((c + 1) * CHUNK) {
                    t.push(i, ops.row(i), tolerance);
                }
                t
            })
            .reduce(Tally::default, Tally::then)
    }
}

impl Report {
    /// [`crate::Amplification::made_at_the_norm`] with this report's hints, each norm's noise
    /// floor that of its row (the first divergence's or the origin's: the rows hints are made
    /// for). Called once the hints are set.
    pub fn amplification_from_hints(&mut self) {
        let (ops, first, origin) = (&self.ops, &self.first_divergence, &self.origin);
        let floor_of = |name: &str| {
            let at = first
                .as_ref()
                .filter(|f| f.name == name)
                .map(|f| f.index)
                .or_else(|| origin.as_ref().filter(|o| o.name == name).map(|o| o.index))?;
            (at < ops.len()).then(|| crate::origin::noise_floor(ops.row(at)))
        };
        self.amplification.made_at_the_norm(&self.hints, &floor_of);
    }
}

/// Builds the report from the rows (in execution order). Pure and infallible.
pub fn assemble(ops: impl Into<Rows>, ctx: ReportContext, cfg: &DiffConfig) -> Report {
    let mut ops: Rows = ops.into();
    let mut warnings = Vec::new();
    let mut input_ids_mismatch = false;
    if let (Some(o), Some(r)) = (&ctx.ours_input_ids, &ctx.ref_input_ids) {
        if let Some(w) = input_ids_warning(o, r) {
            input_ids_mismatch = true;
            warnings.push(w);
        }
    }
    warnings.extend(ctx.warnings);

    let flow = ops.dataflow();
    let mut noise_judged = 0;
    if let (Tolerance::Truth { ratio }, true) = (cfg.tolerance, cfg.judge_noisy_reference) {
        if let Some((warning, n)) = crate::compare::judge_noisy_reference(&mut ops, &flow, ratio) {
            warnings.push(warning);
            noise_judged = n;
        }
    }
    let mut notes = Vec::new();
    let mut step_noise = 0;
    if let Tolerance::Truth { .. } = cfg.tolerance {
        if let Some((note, n)) = crate::compare::judge_by_step_envelope(&mut ops) {
            notes.push(note);
            step_noise = n;
        }
    }
    // One pass over the rows, in parallel; each pass below too: a decode dump has ~150,000
    // rows.
    let tally = Tally::of(&ops, &cfg.tolerance);
    let first_divergence = tally
        .first_divergence
        .and_then(|i| Some((i, ops.get_row(i)?)))
        .map(|(i, o)| FirstDivergence {
            name: o.name().into_owned(),
            index: i,
            status: o.status(),
            reason: o.reason().map(Cow::into_owned).unwrap_or_default(),
            layer: o.layer(),
            step: o.step(),
        });
    let mut summary = tally.summary;
    summary.total = ops.len();
    summary.compared = summary.ok + summary.diverged;
    summary.noise_judged = noise_judged;
    summary.step_noise = step_noise;
    // Ops compared, none of them holding an element: a pass that compared nothing (a bad-input
    // hunt: two dumps of empty decode steps read "no divergence in 13 steps"). The first op
    // with an element ends the look.
    if compared_no_element(&ops, summary.compared) {
        warnings.push(format!(
            "nothing was compared: each of the {} ops compared holds no element on either side",
            summary.compared
        ));
    }
    let names = |rows: &[usize]| -> Vec<String> {
        rows.iter()
            .map(|&i| ops.row(i).name().into_owned())
            .collect()
    };
    let (only_ours, only_ref) = (names(&tally.only_ours), names(&tally.only_ref));
    if let Some(w) = truth_warning(&ops, &cfg.tolerance) {
        warnings.push(w);
    }
    let first_difference = tally.first_difference.map(|i| {
        let o = ops.row(i);
        FirstDifference {
            name: o.name().into_owned(),
            index: i,
            max_abs_err: o.max_abs_err(),
        }
    });
    let mut judged_with = tally.judged;
    judged_with.sort_by(|a, b| b.class.cmp(&a.class).then(b.ops.cmp(&a.ops)));
    let measure = Measure::of(&cfg.tolerance);
    let growths = local_growths(&ops, &flow, measure);
    let origin = first_divergence
        .as_ref()
        .and_then(|f| origin_or_by_rel_err(&ops, &flow, &growths, f.index, measure));
    ops.set_local_growths(growths);
    let amplification = amplification(&ops, cfg.amplification_threshold, &ctx.norm_weight_gains);
    let steps = step_summaries(&ops);
    Report {
        schema: SCHEMA.to_string(),
        ours: ctx.ours_label,
        reference: ctx.ref_label,
        sides: None,
        tolerance: cfg.tolerance,
        order_source: ctx.order_source,
        input_ids_mismatch,
        warnings,
        notes,
        step_selection: None,
        first_divergence,
        origin,
        hints: Vec::new(),
        positions: None,
        tokens: None,
        first_difference,
        judged_with,
        summary,
        steps,
        only_ours,
        only_ref,
        amplification,
        ops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass definition of [`step_summaries`] (what it was before it ran in parallel).
    fn serial(ops: &[OpResult]) -> Vec<StepSummary> {
        let mut out: std::collections::BTreeMap<usize, StepSummary> = Default::default();
        // A step's first diverged row without an error: its worst is not measured.
        let mut unmeasured: std::collections::BTreeMap<usize, String> = Default::default();
        for o in ops {
            if o.status == Status::Diverged && o.errors.rel_l2_err.is_none() {
                unmeasured
                    .entry(o.step)
                    .or_insert_with(|| o.name.to_string());
            }
            let s = out.entry(o.step).or_insert_with(|| StepSummary {
                step: o.step,
                compared: 0,
                diverged: 0,
                missing: 0,
                worst_rel_err: None,
                worst_op: None,
                first_divergence: None,
            });
            match o.status.is_compared() {
                false => s.missing += 1,
                true => s.compared += 1,
            }
            if o.status.is_divergence() {
                s.diverged += 1;
                if s.first_divergence.is_none() {
                    s.first_divergence = Some(o.name.to_string());
                }
            }
            if let Some(e) = o.errors.rel_l2_err {
                if matches!(o.status, Status::Ok | Status::Diverged)
                    && s.worst_rel_err.is_none_or(|w| e > w)
                {
                    s.worst_rel_err = Some(e);
                    s.worst_op = Some(o.name.to_string());
                }
            }
        }
        for (step, name) in unmeasured {
            if let Some(s) = out.get_mut(&step) {
                s.worst_rel_err = None;
                s.worst_op = Some(name);
            }
        }
        out.into_values().collect()
    }

    /// Every status.
    const STATUSES: [Status; 8] = [
        Status::Ok,
        Status::Diverged,
        Status::OnlyOurs,
        Status::OnlyRef,
        Status::Unreadable,
        Status::ShapeMismatch,
        Status::Nonfinite,
        Status::NoFinite,
    ];

    /// A deterministic stream of pseudo-random numbers (xorshift64) from `seed`.
    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn the_tally_in_parallel_is_the_one_pass_tally() {
        // More rows than one chunk (4096): every status, errors that are 0, positive or none,
        // NaN/Inf mismatches, three dtype classes and two tolerances, in each tolerance mode.
        // The chunks' merge must keep the first row of each kind and the classes' first-seen
        // order of one pass over the rows.
        let statuses = STATUSES;
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let dtypes = ["float32", "bfloat16", "float16"];
        for rows in [20_000usize, 4_097, 9, 0] {
            let ops: Vec<OpResult> = (0..rows)
                .map(|i| {
                    let r = next();
                    // Rare statuses other than ok, so that the first of each is not row 0.
                    let status = if r.is_multiple_of(97) {
                        statuses[(r >> 8) as usize % 8]
                    } else {
                        Status::Ok
                    };
                    let mut o = OpResult::bare(&format!("op{i}"), status, None);
                    o.errors.max_abs_err = match (r >> 16) % 4 {
                        0 => None,
                        1 => Some(0.0),
                        _ if r.is_multiple_of(89) => Some(1e-3),
                        _ => Some(0.0),
                    };
                    if r.is_multiple_of(211) {
                        std::sync::Arc::make_mut(&mut o.nonfinite).nonfinite_mismatch = Some(1);
                    }
                    if !r.is_multiple_of(3) {
                        o.rule.rtol = Some([1e-2, 1.6e-2][(r >> 20) as usize % 2]);
                        o.rule.atol = Some(1e-5);
                    }
                    let t = std::sync::Arc::make_mut(&mut o.tensor);
                    t.dtype_ours = Some(dtypes[(r >> 24) as usize % 3].into());
                    t.dtype_ref = Some("float32".into());
                    if r.is_multiple_of(5) {
                        std::sync::Arc::make_mut(&mut o.truth).truth_problem = Some("none".into());
                    }
                    o
                })
                .collect();
            let rows_of = Rows::from(ops.clone());
            for (mode, tolerance) in [
                Tolerance::default(),
                Tolerance::from_flags(true, None, None, None),
                Tolerance::from_flags(false, None, None, Some(3.0)),
            ]
            .into_iter()
            .enumerate()
            {
                let mut one = Tally::default();
                for (i, o) in ops.iter().enumerate() {
                    one.push(i, o.into(), &tolerance);
                }
                let par = Tally::of(&rows_of, &tolerance);
                let key = |t: &Tally| {
                    (
                        t.first_divergence,
                        t.first_difference,
                        t.summary.clone(),
                        t.only_ours.clone(),
                        t.only_ref.clone(),
                        t.judged.clone(),
                    )
                };
                assert_eq!(key(&par), key(&one), "{rows} rows, {tolerance:?}");
                if rows > 4096 {
                    assert!(par.first_divergence.is_some_and(|i| i > 0));
                    assert!(par.first_difference.is_some_and(|i| i > 0));
                    // The presets (each class and rtol), and in truth mode the rows without one.
                    if mode != 1 {
                        assert!(par.judged.len() > 2, "{:?}", par.judged);
                    }
                }
            }
        }
    }

    /// A step whose diverged row has no rel err (its sums past f64) has no measured worst, and
    /// names that row (a bad-input hunt read `worst 0` at the clean embedding beside it).
    #[test]
    fn a_diverged_row_without_an_error_leaves_its_steps_worst_unmeasured() {
        let row = |name: &str, status, rel| {
            let mut o = OpResult::bare(name, status, None);
            o.errors.rel_l2_err = rel;
            o
        };
        let ops = vec![
            row("model.embed_tokens", Status::Ok, Some(0.0)),
            row("lm_head", Status::Ok, Some(1e-4)),
            row("model.embed_tokens@1", Status::Ok, Some(0.0)),
            row("lm_head@1", Status::Diverged, None),
        ];
        let s = step_summaries(&ops);
        assert_eq!(
            (s[0].worst_rel_err, s[0].worst_op.as_deref()),
            (Some(1e-4), Some("lm_head"))
        );
        assert_eq!(
            (s[1].worst_rel_err, s[1].worst_op.as_deref()),
            (None, Some("lm_head@1"))
        );
    }

    #[test]
    fn step_summaries_in_parallel_are_the_one_pass_summaries() {
        // More rows than one chunk (4096), steps in blocks and out of order, every status,
        // tied and NaN errors: the chunks' merge must keep the first row of a tie and the
        // first divergence in row order.
        let statuses = STATUSES;
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for (rows, steps) in [(20_000usize, 64usize), (9_000, 3), (4_097, 1), (50, 5)] {
            let ops: Vec<OpResult> = (0..rows)
                .map(|i| {
                    let r = next();
                    let step = if r.is_multiple_of(50) {
                        (r as usize / 7) % steps
                    } else {
                        i * steps / rows
                    };
                    let status = statuses[(r >> 8) as usize % 8];
                    let mut o = OpResult::bare(
                        &divergence_names::step_name(&format!("op{i}"), step),
                        status,
                        None,
                    );
                    o.errors.rel_l2_err = match (r >> 16) % 5 {
                        0 => None,
                        1 => Some(f64::NAN),
                        2 => Some(0.5), // ties
                        _ => Some(((r >> 20) % 1000) as f64 / 1000.0),
                    };
                    o
                })
                .collect();
            let (a, b) = (step_summaries(&ops), serial(&ops));
            let key = |v: &[StepSummary]| {
                v.iter()
                    .map(|s| {
                        (
                            s.step,
                            s.compared,
                            s.diverged,
                            s.missing,
                            s.worst_rel_err.map(f64::to_bits),
                            s.worst_op.clone(),
                            s.first_divergence.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            if steps > 1 {
                assert_eq!(key(&a), key(&b), "{rows} rows, {steps} steps");
            } else {
                assert!(a.is_empty(), "one-pass rows have no step summary");
            }
        }
    }
}
