//! What the table and Markdown views share: number formats, op selection (context window, filters),
//! per-layer summaries and short labels.
//!
//! What reads every row (the selection, the per-layer tallies, the unreadable rows) reads it
//! through its view ([`Row`]), so that a report whose decode steps are kept compact is never
//! built whole by these views; only the few rows shown in full are built, one at a time.

use std::collections::{BTreeMap, BTreeSet};

use divergence_diff::{
    ratio_text, sci, AmplificationRow, DTypeClass, Measure, OpResult, QkKind, Report, Row, Status,
    StepSummary, Tolerance,
};
use rayon::prelude::*;
use regex::Regex;

use crate::options::TableOptions;

/// The amplification section without a pair: the dumps hold no q/k projection with its
/// q_norm / k_norm (a model without them has none).
pub(crate) const NO_PAIRS: &str =
    "no q/k proj + norm pair compared (a model without q_norm / k_norm, as Llama, Qwen2 and Mistral, has none; a dump may lack either: TransformerLens' holds no norm's output)";

/// Names listed per one-side list before truncating.
pub(crate) const MAX_LISTED_NAMES: usize = 10;

/// `1.234e-05`, or `-` for null.
pub(crate) fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), sci)
}

/// Cosine with 6 decimals, or `-`.
pub(crate) fn cos(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |c| format!("{c:.6}"))
}

/// A count, or `-` (not known: a side not read).
pub(crate) fn count(x: Option<u64>) -> String {
    x.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// Percentage with 2 decimals, or `-`.
pub(crate) fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |f| format!("{:.2}%", f * 100.0))
}

pub(crate) fn shape(s: &[usize]) -> String {
    let inner: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(","))
}

/// Shape column: the reference's shape, plus ours' when it differs.
pub(crate) fn shape_cell(op: &OpResult) -> String {
    match (&op.tensor.shape, &op.tensor.shape_ours) {
        (Some(r), Some(o)) => format!("ref {} ours {}", shape(r), shape(o)),
        (Some(r), None) => shape(r),
        (None, _) => "-".to_string(),
    }
}

pub(crate) fn short_dtype(d: &str) -> String {
    let d = d.strip_prefix("torch.").unwrap_or(d);
    match d {
        "float64" => "f64".into(),
        "float32" => "f32".into(),
        "float16" => "f16".into(),
        "bfloat16" => "bf16".into(),
        "bool" => "bool".into(),
        _ => {
            if let Some(bits) = d.strip_prefix("uint") {
                format!("u{bits}")
            } else if let Some(bits) = d.strip_prefix("int") {
                format!("i{bits}")
            } else {
                d.to_string()
            }
        }
    }
}

/// `bf16` when both sides agree, else `bf16/f32` (ours/ref).
pub(crate) fn dtype_cell(op: &OpResult) -> String {
    match (&op.tensor.dtype_ours, &op.tensor.dtype_ref) {
        (Some(o), Some(r)) if o == r => short_dtype(o),
        (Some(o), Some(r)) => format!("{}/{}", short_dtype(o), short_dtype(r)),
        (Some(o), None) => short_dtype(o),
        (None, Some(r)) => short_dtype(r),
        (None, None) => "-".into(),
    }
}

/// The header's two lines naming the sides, `(key, value)`: `("ours", path)` and
/// `("ref", path)`; where the report says what its sides are ([`Report::sides`], the stepped
/// run and the one pass of `--prefill-vs-decode`, whichever order they were given) each is
/// keyed by that, its path followed by the word the rest of the report calls it by.
pub(crate) fn side_lines(report: &Report) -> [(String, String); 2] {
    match &report.sides {
        None => [
            ("ours".to_string(), report.ours.clone()),
            ("ref".to_string(), report.reference.clone()),
        ],
        Some(sides) => [
            (sides.ours.clone(), format!("{} (ours below)", report.ours)),
            (
                sides.reference.clone(),
                format!("{} (ref below)", report.reference),
            ),
        ],
    }
}

pub(crate) fn tolerance_text(t: &Tolerance) -> String {
    match t {
        Tolerance::Auto => "auto (per-dtype presets, coarsest dtype of the two sides)".into(),
        Tolerance::Manual { rtol, atol } => format!(
            "manual: rtol {}, atol {}",
            rtol.map_or_else(|| "preset".to_string(), sci),
            atol.map_or_else(|| "preset".to_string(), sci)
        ),
        Tolerance::Exact => "exact (any differing element diverges)".into(),
        Tolerance::Truth { ratio } => format!(
            "truth (three-way: an op diverges when ours is more than {}x less accurate than ref against the truth run)",
            ratio_text(*ratio)
        ),
    }
}

/// What "no divergence" means in this report's mode: `within tolerance`, or, with `--truth`,
/// `as accurate as the reference against the truth (noise ratio limit 3.0)`; where the truth
/// could not judge some ops (the presets judged them: `judged_with`), how many of each (a
/// newcomer's run: the line claimed the truth for every op under a `TRUTH NOT USED` warning).
pub(crate) fn clean_text(report: &Report) -> String {
    match report.tolerance {
        Tolerance::Truth { ratio: k } => {
            let truth = format!(
                "as accurate as the reference against the truth (noise ratio limit {})",
                ratio_text(k)
            );
            // The ops where the reference itself is noise against the truth, judged by the
            // ratio all the same, are counted apart (a bad-input hunt: the line claimed them
            // as accurate as the reference with no word of it; the warning says why).
            let noisy = report.summary.noise_judged;
            let truth = match noisy {
                0 => truth,
                n => format!(
                    "{truth}, {n} of them where the reference itself is more than {} off the truth (see the warnings)",
                    divergence_diff::TRUTH_MAX_REF_ERR
                ),
            };
            // The decode-step rows over the ratio left ok as noise (the note says why) are
            // counted apart from the ops as accurate as the reference: they are not.
            let by_presets: usize = report.judged_with.iter().map(|j| j.ops).sum();
            let steps = report.summary.step_noise;
            if by_presets == 0 && steps == 0 {
                return truth;
            }
            let by_truth = report
                .summary
                .compared
                .saturating_sub(by_presets)
                .saturating_sub(steps);
            let mut parts = vec![format!("{by_truth} {truth}")];
            if steps > 0 {
                parts.push(format!(
                    "{steps} decode-step row{} over it but no further from the truth than the reference at another step of the op (see the notes)",
                    if steps == 1 { "" } else { "s" }
                ));
            }
            if by_presets > 0 {
                parts.push(format!(
                    "{by_presets} judged by the fixed presets (the truth could not judge them)"
                ));
            }
            format!("within tolerance: {}", parts.join(", "))
        }
        _ => "within tolerance".to_string(),
    }
}

/// The ops of a report with no divergence that were not compared: `41 not compared: 41 only
/// in ref`; `None` when every op was. Said on the verdict line (a newcomer's run: a port dump
/// missing half its probes read "NO DIVERGENCE: all 40 compared ops ..." with the 41 others in
/// the summary at the end).
pub(crate) fn uncompared_text(report: &Report) -> Option<String> {
    let s = &report.summary;
    let parts: Vec<String> = [
        (s.only_ours, "only in ours"),
        (s.only_ref, "only in ref"),
        (s.unreadable, "unreadable"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let n = s.only_ours + s.only_ref + s.unreadable;
    (n > 0).then(|| format!("{n} not compared: {}", parts.join(", ")))
}

/// The verdict line when nothing at all was compared (no name in common, nothing readable, or
/// ops that hold no element): never "no divergence" about zero ops or zero elements. `None`
/// when something was compared.
pub(crate) fn nothing_compared(report: &Report) -> Option<String> {
    let s = &report.summary;
    if report.compared_no_element() {
        return Some(format!(
            "NOTHING COMPARED: each of the {} ops compared holds no element on either side; no verdict",
            s.compared
        ));
    }
    (s.compared == 0).then(|| {
        format!(
            "NOTHING COMPARED: of {} probes, {} are only in ours, {} only in ref, {} unreadable; no verdict",
            s.total, s.only_ours, s.only_ref, s.unreadable
        )
    })
}

/// A ratio as [`ratio_text`] writes it (`2.4`, `130`, `1.234e+06`), `-` for null.
pub(crate) fn ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), ratio_text)
}

/// What the compared ops were judged with: `bfloat16 preset rtol 4.000e-02, atol 1.000e-03
/// (77 ops); integers preset exact (1 op)`; `None` when nothing was judged by a tolerance.
pub(crate) fn judged_text(report: &Report) -> Option<String> {
    if report.judged_with.is_empty() {
        return None;
    }
    let manual = matches!(report.tolerance, Tolerance::Manual { .. });
    let parts: Vec<String> = report
        .judged_with
        .iter()
        .map(|j| {
            let ops = if j.ops == 1 { "op" } else { "ops" };
            let what = if j.rtol == 0.0 && j.atol == 0.0 {
                "exact".to_string()
            } else {
                format!("rtol {}, atol {}", sci(j.rtol), sci(j.atol))
            };
            let kind = if manual { "" } else { " preset" };
            format!("{}{kind} {what} ({} {ops})", j.class.label(), j.ops)
        })
        .collect();
    let prefix = if matches!(report.tolerance, Tolerance::Truth { .. }) {
        "without a usable truth: "
    } else {
        ""
    };
    Some(format!("{prefix}{}", parts.join("; ")))
}

/// The note shown when a half-precision pair was judged by a fixed preset (not `--truth`, not
/// `--exact`): how to get a noise-aware verdict.
pub(crate) fn preset_note(report: &Report) -> Option<&'static str> {
    let half = report
        .judged_with
        .iter()
        .any(|j| matches!(j.class, DTypeClass::BF16 | DTypeClass::F16));
    (half && !matches!(report.tolerance, Tolerance::Truth { .. })).then_some(
        "bf16/f16 ops were judged by a fixed preset that cannot tell noise from a precision bug on every model; \
for a noise-aware verdict pass --truth (dump_reference.py --truth-out truth.npz)",
    )
}

/// `first at NAME (#i, max |o-r| X)` for the first op whose sides differ at all, or the text
/// saying every compared op is bit-identical.
pub(crate) fn first_difference_text(report: &Report) -> String {
    // Say that the difference is within tolerance when it is: without a divergence (a clean
    // run's "first at X" above "NO DIVERGENCE" made a newcomer look twice), and when it comes
    // before the first divergence (every row before it is within tolerance; a newcomer saw two
    // different "first" ops, `differs: first at model.rotary_emb` above `FIRST DIVERGENCE:
    // ...cache_k@1`).
    let within = match (&report.first_divergence, &report.first_difference) {
        (None, _) if report.summary.compared > 0 => ", within tolerance",
        (Some(f), Some(d)) if d.index < f.index => ", within tolerance",
        _ => "",
    };
    match &report.first_difference {
        Some(d) => match d.max_abs_err {
            Some(m) => format!(
                "first at {} (#{}, max |o-r| {}){within}",
                d.name,
                d.index,
                sci(m)
            ),
            None => format!("first at {} (#{}){within}", d.name, d.index),
        },
        None if report.summary.compared > 0 => "nowhere: every compared op is bit-identical".into(),
        None => "nowhere (nothing compared)".into(),
    }
}

/// What judged `op`: `noise ratio limit 3.0` where the truth did (`--truth`), else its
/// tolerance, `rtol 1.000e-03, atol 1.000e-06` (the TUI's details said the preset's under
/// `--truth` where the printed table said the ratio's: a visual check).
pub(crate) fn op_judged_text(report: &Report, op: &OpResult) -> String {
    match (&report.tolerance, op.truth.noise_ratio) {
        (divergence_diff::Tolerance::Truth { ratio: limit }, Some(_)) => {
            format!("noise ratio limit {}", ratio(Some(*limit)))
        }
        _ => format!("rtol {}, atol {}", num(op.rule.rtol), num(op.rule.atol)),
    }
}

/// The share of an op's elements outside its element-wise tolerance; where the op was judged
/// by the noise ratio (`--truth`), with that tolerance (`0.31% (rtol 1.6e-2, atol 1.0e-5)`):
/// the details state the ratio's limit there, and "outside tol" named a tolerance they did not
/// state (a visual check).
pub(crate) fn outside_tol_text(op: &OpResult) -> String {
    match op.truth.noise_ratio {
        Some(_) => format!(
            "{} (rtol {}, atol {})",
            pct(op.frac_outside_tol),
            num(op.rule.rtol),
            num(op.rule.atol)
        ),
        None => pct(op.frac_outside_tol),
    }
}

/// `ours 1.2e-02, ref 5.0e-03 (noise ratio 2.4)` for a row judged against the truth, or the
/// reason the truth was not used; `None` outside truth mode.
pub(crate) fn truth_line(op: &OpResult) -> Option<String> {
    if let Some(p) = &op.truth.truth_problem {
        return Some(format!("not used ({p}): judged by the preset"));
    }
    let t = &op.truth;
    t.noise_ratio?;
    Some(format!(
        "rel err ours {}, ref {} (noise ratio {})",
        num(t.ours_truth_rel_err),
        num(t.ref_truth_rel_err),
        ratio(t.noise_ratio)
    ))
}

/// The first divergence's per-position profile in one line, when there is one.
/// What the differences do to the next tokens (`lm_head` on both sides), one line.
pub(crate) fn tokens_text(report: &Report) -> Option<String> {
    report.tokens.as_ref().map(|t| t.summary())
}

pub(crate) fn positions_text(report: &Report) -> Option<String> {
    report.positions.as_ref().map(|p| p.summary())
}

/// One line per cause hint: `scale at model.embed_tokens: ours is ref scaled by ...`.
pub(crate) fn hint_lines(report: &Report) -> Vec<String> {
    report
        .hints
        .iter()
        .map(|h| format!("{} at {}: {}", h.code.as_str(), h.op, h.message))
        .collect()
}

/// The ops-table columns of this report, left to right: [`OPS_COLUMNS`], with the truth
/// columns only in truth mode.
pub(crate) fn ops_columns(report: &Report) -> Vec<OpsColumn> {
    let truth = matches!(report.tolerance, Tolerance::Truth { .. });
    OPS_COLUMNS
        .iter()
        .copied()
        .filter(|c| truth || !c.is_truth())
        .collect()
}

/// The input_ids warning, if flagged (by contract the first warning).
pub(crate) fn input_ids_warning(report: &Report) -> Option<&str> {
    if report.input_ids_mismatch {
        Some(
            report
                .warnings
                .first()
                .map_or("INPUT_IDS MISMATCH", String::as_str),
        )
    } else {
        None
    }
}

/// The warnings other than the input_ids one.
pub(crate) fn other_warnings(report: &Report) -> &[String] {
    if report.input_ids_mismatch && !report.warnings.is_empty() {
        &report.warnings[1..]
    } else {
        &report.warnings
    }
}

/// Whether a name filter's regex matches a row: its name, or a decode step's name without its
/// `@s` (`k_norm$` keeps `model.layers.0.self_attn.k_norm@3`: the docs' own pattern kept the
/// prefill alone, found by a UX review); `@3$` still picks a step. Read through the row's view
/// (a compact decode step is not built).
pub(crate) fn row_name_matches(re: &Regex, row: Row<'_>) -> bool {
    re.is_match(&row.name()) || (row.step() > 0 && re.is_match(row.base()))
}

/// A name filter from `--layer` / `--grep`.
pub(crate) struct Filter<'a> {
    layer: Option<usize>,
    grep: Option<&'a Regex>,
}

impl<'a> Filter<'a> {
    pub(crate) fn new(opts: &'a TableOptions) -> Filter<'a> {
        Filter {
            layer: opts.layer,
            grep: opts.grep.as_ref(),
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.layer.is_some() || self.grep.is_some()
    }

    /// Whether the row passes the filter (read through its view: nothing is built).
    pub(crate) fn matches(&self, row: Row<'_>) -> bool {
        if self.layer.is_some() && row.layer() != self.layer {
            return false;
        }
        self.grep.is_none_or(|re| row_name_matches(re, row))
    }

    pub(crate) fn layer_ok(&self, layer: usize) -> bool {
        self.layer.is_none_or(|l| l == layer)
    }
}

/// The amplification rows shown: those of the `--layer` filter; k rows, and q rows only when
/// marked, unless `--all`.
pub(crate) fn amplification_rows<'r>(
    report: &'r Report,
    opts: &TableOptions,
) -> Vec<&'r AmplificationRow> {
    let filter = Filter::new(opts);
    // In parallel, in row order: a decode report has 56 pairs per step.
    report
        .amplification
        .rows
        .par_iter()
        .with_min_len(1024)
        .filter(|r| {
            // Decode steps repeat every pair once per step: without --all only those with a
            // verdict are listed.
            let step = r.norm.step();
            filter.layer_ok(r.layer)
                && (opts.all || (r.kind == QkKind::K && step == 0) || r.verdict.is_some())
        })
        .collect()
}

/// Whether a shown amplification row has a norm weight gain (read from the checkpoint, `diff
/// --model DIR`): without one the column is left out (a visual check: at 80 columns a column
/// of dashes stayed while the abs err gain went).
pub(crate) fn shows_weight_gain(rows: &[&AmplificationRow]) -> bool {
    rows.iter().any(|r| r.weight_gain.is_some())
}

/// The amplification section's counts for its title: `1 amplified, 2 introduced at the norm`
/// (the verdicts' words, as the HTML says them: "marked" read as another count; a visual
/// check); under `--layer`, the layer's first and then the report's (a visual check: the
/// title's counts were the report's while the rows and the line under it were the layer's).
pub(crate) fn amplification_counts(report: &Report, opts: &TableOptions) -> String {
    let amp = &report.amplification;
    let all = format!(
        "{} amplified, {} introduced at the norm",
        amp.marked, amp.introduced
    );
    let Some(layer) = opts.layer else {
        return all;
    };
    let (marked, introduced) = amp.counts_in_layer(layer);
    format!(
        "in layer {layer}: {marked} amplified, {introduced} introduced at the norm; in all layers: {} amplified, {} introduced",
        amp.marked, amp.introduced
    )
}

/// A decode report's amplification pairs of its decode steps (of the layers `layer_ok`
/// keeps), which the section lists only where they have a verdict.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DecodePairs {
    /// Pairs of decode steps.
    pub pairs: usize,
    /// Of them, those with a verdict (amplified or introduced).
    pub with_verdict: usize,
    /// The decode steps they are of.
    pub steps: usize,
    /// Whether the prefill has pairs too (a diff of some steps only may have none).
    pub prefill: bool,
}

impl DecodePairs {
    /// The counts of `report`'s amplification rows in the layers `layer_ok` keeps.
    pub(crate) fn of(report: &Report, layer_ok: impl Fn(usize) -> bool) -> DecodePairs {
        let mut out = DecodePairs::default();
        let mut steps = std::collections::BTreeSet::new();
        for r in report
            .amplification
            .rows
            .iter()
            .filter(|r| layer_ok(r.layer))
        {
            match r.norm.step() {
                0 => out.prefill = true,
                step => {
                    out.pairs += 1;
                    out.with_verdict += usize::from(r.verdict.is_some());
                    steps.insert(step);
                }
            }
        }
        out.steps = steps.len();
        out
    }

    /// `96 pairs at 12 decode steps, 0 of them with a verdict` (`more pairs` after the
    /// prefill's).
    pub(crate) fn text(&self) -> String {
        format!(
            "{} {} at {} decode step{}, {} of them with a verdict",
            self.pairs,
            match (self.prefill, self.pairs == 1) {
                (true, true) => "more pair",
                (true, false) => "more pairs",
                (false, true) => "pair",
                (false, false) => "pairs",
            },
            self.steps,
            if self.steps == 1 { "" } else { "s" },
            self.with_verdict,
        )
    }
}

/// The line under the amplification section's title where not every pair is listed (no
/// `--all`): which rows are. In a decode report it counts the decode steps' pairs, which the
/// section lists only with a verdict (a visual check: the section read as the prefill's
/// alone).
pub(crate) fn amplification_scope(report: &Report, opts: &TableOptions) -> Option<String> {
    if opts.all {
        return None;
    }
    let filter = Filter::new(opts);
    let decode = DecodePairs::of(report, |l| filter.layer_ok(l));
    Some(match (decode.pairs, decode.prefill) {
        (0, _) => "k rows, and q rows over the ratio (--all shows every row)".to_string(),
        (_, true) => format!(
            "the prefill's k rows, and every row with a verdict: {} (--all shows every row)",
            decode.text()
        ),
        (_, false) => format!(
            "the rows with a verdict: {} (--all shows every row)",
            decode.text()
        ),
    })
}

/// What the amplification section says where [`amplification_rows`] shows none of the report's
/// pairs (a decode report compared without its prefill, `--steps 3`, and nothing marked; or a
/// `--layer` without pairs).
pub(crate) fn no_amplification_row(report: &Report, opts: &TableOptions) -> &'static str {
    let filter = Filter::new(opts);
    let in_layer = report
        .amplification
        .rows
        .iter()
        .any(|r| filter.layer_ok(r.layer));
    if opts.all || !in_layer {
        "no q/k proj + norm pair in the layer shown"
    } else {
        "none to show: the prefill's k pairs and the pairs with a verdict are listed, and there are none here (--all shows every pair)"
    }
}

/// The layer cell of an amplification row: `3`, or `3@2` for a pair of decode step 2.
pub(crate) fn amp_layer(r: &AmplificationRow) -> String {
    match r.norm.step() {
        0 => r.layer.to_string(),
        s => format!("{}@{s}", r.layer),
    }
}

/// The rows that could not be read, in report order (found in parallel, through the rows'
/// views: a decode report has ~150,000 rows, nearly all compact steps, none of them built).
pub(crate) fn unreadable_ops(report: &Report) -> Vec<Row<'_>> {
    report
        .ops
        .par_rows()
        .with_min_len(4096)
        .filter(|r| r.status() == Status::Unreadable)
        .collect()
}

/// A column of the ops table, in both views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpsColumn {
    /// `>>` (terminal) / `➡️` (Markdown) on the first divergence.
    Mark,
    /// The row's index in `ops`.
    Index,
    /// The op name.
    Name,
    Status,
    Shape,
    Dtype,
    OursL2,
    RefL2,
    MaxAbsErr,
    RelErr,
    Cosine,
    OutTol,
    /// `born` / `carried` ([`divergence_diff::origin::row_role`]).
    Origin,
    /// `||ours - truth|| / ||truth||` (truth mode only).
    TruthOurs,
    /// `||ref - truth|| / ||truth||` (truth mode only).
    TruthRef,
    /// The noise ratio (truth mode only).
    NoiseRatio,
}

/// The ops table's columns, left to right (both views).
pub(crate) const OPS_COLUMNS: [OpsColumn; 16] = [
    OpsColumn::Mark,
    OpsColumn::Index,
    OpsColumn::Name,
    OpsColumn::Status,
    OpsColumn::Shape,
    OpsColumn::Dtype,
    OpsColumn::OursL2,
    OpsColumn::RefL2,
    OpsColumn::MaxAbsErr,
    OpsColumn::RelErr,
    OpsColumn::TruthOurs,
    OpsColumn::TruthRef,
    OpsColumn::NoiseRatio,
    OpsColumn::Origin,
    OpsColumn::Cosine,
    OpsColumn::OutTol,
];

impl OpsColumn {
    /// The columns shown only with `--truth`.
    pub(crate) fn is_truth(self) -> bool {
        matches!(
            self,
            OpsColumn::TruthOurs | OpsColumn::TruthRef | OpsColumn::NoiseRatio
        )
    }

    /// The terminal table's header.
    pub(crate) fn label(self) -> &'static str {
        match self {
            OpsColumn::Mark => "",
            OpsColumn::Index => "#",
            OpsColumn::Name => "op",
            OpsColumn::Status => "status",
            OpsColumn::Shape => "shape",
            OpsColumn::Dtype => "dtype",
            OpsColumn::OursL2 => "||ours||",
            OpsColumn::RefL2 => "||ref||",
            OpsColumn::MaxAbsErr => "max|o-r|",
            OpsColumn::RelErr => "rel err",
            OpsColumn::Cosine => "cosine",
            OpsColumn::OutTol => "out tol",
            OpsColumn::Origin => "error",
            OpsColumn::TruthOurs => "ours~truth",
            OpsColumn::TruthRef => "ref~truth",
            OpsColumn::NoiseRatio => "noise x",
        }
    }

    /// The Markdown table's header.
    pub(crate) fn markdown_label(self) -> &'static str {
        match self {
            OpsColumn::OursL2 => "‖ours‖",
            OpsColumn::RefL2 => "‖ref‖",
            OpsColumn::MaxAbsErr => "max abs err",
            other => other.label(),
        }
    }

    /// Numbers (and the index) are right-aligned.
    pub(crate) fn right_aligned(self) -> bool {
        !matches!(
            self,
            OpsColumn::Mark
                | OpsColumn::Name
                | OpsColumn::Status
                | OpsColumn::Shape
                | OpsColumn::Dtype
                | OpsColumn::Origin
        )
    }

    /// The cell's text, unstyled and unescaped (`i` is the row's index in `ops`; `measure`
    /// the report's, for the born / carried mark).
    pub(crate) fn text(self, i: usize, op: &OpResult, is_first: bool, measure: Measure) -> String {
        match self {
            OpsColumn::Mark => if is_first { ">>" } else { "" }.to_string(),
            OpsColumn::Index => i.to_string(),
            OpsColumn::Name => op.name.to_string(),
            OpsColumn::Status => op.status.as_str().to_string(),
            OpsColumn::Shape => shape_cell(op),
            OpsColumn::Dtype => dtype_cell(op),
            OpsColumn::OursL2 => num(op.rule.ours_l2),
            OpsColumn::RefL2 => num(op.rule.ref_l2),
            OpsColumn::MaxAbsErr => num(op.errors.max_abs_err),
            OpsColumn::RelErr => num(op.errors.rel_l2_err),
            OpsColumn::Cosine => cos(op.errors.cosine),
            OpsColumn::OutTol => pct(op.frac_outside_tol),
            OpsColumn::TruthOurs => num(op.truth.ours_truth_rel_err),
            OpsColumn::TruthRef => num(op.truth.ref_truth_rel_err),
            OpsColumn::NoiseRatio => ratio(op.truth.noise_ratio),
            OpsColumn::Origin => divergence_diff::origin::row_role(op, measure)
                .map_or("", |r| r.as_str())
                .to_string(),
        }
    }
}

/// The origin line of the first divergence: `crossed the line at X; born at Y (#i, local
/// growth ×G); amplified through Z`, or `born here (local growth ×G)` when the first divergence
/// is its own origin; `None` without an origin.
pub(crate) fn origin_text(report: &Report) -> Option<String> {
    let (o, f) = (report.origin.as_ref()?, report.first_divergence.as_ref()?);
    // By the noise ratio with the truth, unless the truth does not judge the first divergence.
    let truth = matches!(report.tolerance, Tolerance::Truth { .. }) && !o.by_rel_err;
    let born_here = o.index == f.index;
    let growth = match (born_here, f.status, truth) {
        // NaN/Inf at other places, or nothing finite: the error is there, not in a number
        // that grew (a bad-input hunt read `local growth ×0.000e+00` of an exact finite part).
        (true, Status::Nonfinite | Status::NoFinite, _) => {
            "its NaN/Inf are its error: no growth measured".to_string()
        }
        // Neither its error nor its inputs' to divide by (a user's check read `local growth
        // ×-` of an op whose inputs a map left unpaired).
        _ if o.growth.is_none() => {
            "no local growth measured: its error or its inputs' not known".to_string()
        }
        // the growth of the noise ratio over the inputs' (docs/origin.md)
        (_, _, true) => format!("noise ratio ×{} over its inputs'", ratio(o.growth)),
        (_, _, false) => format!("local growth ×{}", num(o.growth)),
    };
    // No op of the chain grew the error past the birth threshold: the origin is only where the
    // chain starts, and the op that grew it most is named too (a held-out check read "born at
    // layers.0 attn_out@4 (local growth ×2.017)" of a fault planted in layer 1; a review, "it
    // accumulated" of a fault at that op, ×4.6 over exact inputs).
    let birth = if truth {
        divergence_diff::TRUTH_BIRTH
    } else {
        divergence_diff::BIRTH_GROWTH
    };
    let most = o
        .chain
        .iter()
        .filter(|l| l.local_growth.is_some())
        .max_by(|a, b| {
            a.local_growth
                .partial_cmp(&b.local_growth)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    // A chain of this op alone whose growth is under the threshold read "born here (local
    // growth ×9.616e-01)" (a bad-input hunt): the threshold's sentence, as for a longer chain.
    let measured = !matches!(f.status, Status::Nonfinite | Status::NoFinite);
    let mut text = if born_here && measured && o.growth.is_some_and(|g| g <= birth) {
        format!(
            "the chain starts here: no op on it grew the error past ×{birth} (the birth \
             threshold; {growth})"
        )
    } else if born_here {
        format!("born here ({growth})")
    } else if o.growth.is_some_and(|g| g <= birth) {
        let grew = match most {
            Some(l) if l.index != o.index => {
                let by = match truth {
                    true => ratio(l.local_growth),
                    false => num(l.local_growth),
                };
                format!(", and grew most at {} (#{}, ×{by})", l.name, l.index)
            }
            _ => ", where it grew most".to_string(),
        };
        format!(
            "crossed the line at {}; no op on its chain grew the error past ×{birth} (the \
             birth threshold): the chain starts at {} (#{}, {growth}){grew}",
            f.name, o.name, o.index
        )
    } else {
        format!(
            "crossed the line at {}; born at {} (#{}, {growth})",
            f.name, o.name, o.index
        )
    };
    let amplified: Vec<String> = o
        .amplified_through()
        .map(|l| format!("{} (×{})", l.name, num(l.local_growth)))
        .collect();
    if !amplified.is_empty() {
        text.push_str(&format!("; amplified through {}", amplified.join(", ")));
    }
    if let Some(e) = &o.earlier {
        let (error, growth) = match truth {
            true => (
                format!("noise ratio {}", ratio(Some(e.error))),
                format!("×{} over its inputs'", ratio(e.local_growth)),
            ),
            false => (
                format!("rel err {}", num(Some(e.error))),
                format!("local growth ×{}", num(e.local_growth)),
            ),
        };
        text.push_str(&format!(
            "; the same op already added error at decode step {}, within the tolerance: {} (#{}, {error}, {growth})",
            e.step, e.name, e.index
        ));
    }
    if o.by_rel_err {
        text.push_str(" (by relative error: the truth does not judge the first divergence)");
    }
    text.push_str(&unmeasured_text(&o.unmeasured_inputs, truth));
    Some(text)
}

/// `; its input X (only in ours) has no error to weigh: ...` where the origin has inputs of no
/// error to weigh ([`divergence_diff::Origin::unmeasured_inputs`]), at most three named; empty
/// where it has none. `truth`: the origin was traced by noise ratio, which rows of no noise
/// ratio do not have.
fn unmeasured_text(inputs: &[divergence_diff::UnmeasuredInput], truth: bool) -> String {
    const NAMED: usize = 3;
    if inputs.is_empty() {
        return String::new();
    }
    let why = |status: Status| match status {
        Status::OnlyOurs => "only in ours",
        Status::OnlyRef => "only in ref",
        Status::Unreadable => "unreadable",
        Status::ShapeMismatch => "shapes differ",
        _ if truth => "not judged by the truth",
        _ => "no error measured",
    };
    let mut named: Vec<String> = inputs
        .iter()
        .take(NAMED)
        .map(|u| format!("{} ({})", u.name, why(u.status)))
        .collect();
    if inputs.len() > NAMED {
        named.push(format!("{} more", inputs.len() - NAMED));
    }
    let list = match named.as_slice() {
        [one] => one.clone(),
        [head @ .., last] => format!("{} and {last}", head.join(", ")),
        [] => String::new(),
    };
    let (inputs, has, them) = match inputs.len() {
        1 => ("input", "has", "it"),
        _ => ("inputs", "have", "them"),
    };
    format!("; its {inputs} {list} {has} no error to weigh: the error may have come from {them}")
}

/// The amplification row's verdict text: `AMPLIFIED` / `introduced` (terminal) or empty.
pub(crate) fn verdict_text(r: &AmplificationRow) -> &'static str {
    match r.verdict {
        Some(divergence_diff::AmpVerdict::Amplified) => "AMPLIFIED",
        Some(divergence_diff::AmpVerdict::Introduced) => "introduced",
        None => "",
    }
}

/// Which ops the ops table shows, its title and its columns.
pub(crate) struct Selection {
    pub title: String,
    pub indices: Vec<usize>,
    /// [`ops_columns`], without the first divergence's mark where it is not among the rows
    /// (`--layer` / `--grep` of other ops; a report without a divergence): a column that
    /// would stay empty (a visual check at 60 columns).
    pub columns: Vec<OpsColumn>,
    /// Names shown relative to their layer ([`relative_name`]: `self_attn.k_norm@2`), every
    /// row shown being of one layer prefix ([`layer_prefix`]), which the title names: under
    /// `--layer` (their full names wrapped over two lines at 60 columns, every one repeating
    /// the layer), and on a terminal whose width the full names do not fit (`table.rs`).
    pub relative: bool,
}

impl Selection {
    /// Names relative to their layer from now on, the title saying to which prefix
    /// (`Ops of layer 3 (145 of 615; names relative to model.layers.3)`).
    pub(crate) fn relative_to(&mut self, prefix: &str) {
        self.relative = true;
        let after = format!("names relative to {}", divergence_names::one_line(prefix));
        match self.title.strip_suffix(')') {
            Some(head) => self.title = format!("{head}; {after})"),
            None => self.title = format!("{} ({after})", self.title),
        }
    }

    /// The name column's text of `op`: its name, or [`relative_name`] where the selection says so.
    pub(crate) fn name<'o>(&self, op: &'o OpResult) -> std::borrow::Cow<'o, str> {
        match self.relative {
            true => std::borrow::Cow::Owned(relative_name(&op.name)),
            false => std::borrow::Cow::Borrowed(&op.name),
        }
    }
}

/// `name` relative to its layer, with its decode step: `self_attn.k_norm@2`, and
/// `(layer output)@2` for the layer itself; the whole name outside layers.
pub(crate) fn relative_name(name: &str) -> String {
    let (base, step) = divergence_names::split_step(name);
    relative_of(base, step)
}

/// [`relative_name`] of the probe `base` at decode step `step`.
fn relative_of(base: &str, step: usize) -> String {
    let short = divergence_names::short_name(base);
    match step {
        0 => short.to_string(),
        s => format!("{short}@{s}"),
    }
}

/// The ops table's rows: those of the `--layer` / `--grep` filter, every row with `--all`, else
/// the context around the first divergence (`None` without one). Rows are read through their
/// views ([`Row`]): none is built.
pub(crate) fn select_ops(report: &Report, opts: &TableOptions) -> Option<Selection> {
    let filter = Filter::new(opts);
    let total = report.ops.len();
    if filter.is_active() {
        // In parallel, in row order (a regex over ~150,000 names).
        let indices: Vec<usize> = report
            .ops
            .par_rows()
            .enumerate()
            .with_min_len(1024)
            .filter(|&(_, row)| filter.matches(row))
            .map(|(i, _)| i)
            .collect();
        // "Ops of layer 3", "Ops matching `k_norm`", "Ops of layer 3 matching `k_norm`".
        let mut title = String::from("Ops");
        if let Some(l) = opts.layer {
            title.push_str(&format!(" of layer {l}"));
        }
        if let Some(g) = &opts.grep {
            // The pattern is the user's: its control characters escaped like any name's.
            title.push_str(&format!(
                " matching `{}`",
                divergence_names::one_line(g.as_str())
            ));
        }
        let prefix = opts.layer.and_then(|_| layer_prefix(report, &indices));
        let mut sel = Selection {
            title: format!("{title} ({} of {total})", indices.len()),
            columns: selection_columns(report, &indices),
            relative: false,
            indices,
        };
        if let Some(p) = prefix {
            sel.relative_to(&p);
        }
        return Some(sel);
    }
    if opts.all {
        let indices: Vec<usize> = (0..total).collect();
        return Some(Selection {
            title: format!("All ops ({total})"),
            columns: selection_columns(report, &indices),
            relative: false,
            indices,
        });
    }
    let first = report.first_divergence.as_ref()?.index;
    let lo = first.saturating_sub(opts.context);
    let hi = first
        .saturating_add(opts.context)
        .min(total.saturating_sub(1));
    let indices: Vec<usize> = (lo..=hi).collect();
    Some(Selection {
        title: format!("Ops around the first divergence (#{lo}..#{hi} of {total})"),
        columns: selection_columns(report, &indices),
        relative: false,
        indices,
    })
}

/// [`ops_columns`] for the rows at `indices` (ascending): the mark only where the first
/// divergence is one of them.
fn selection_columns(report: &Report, indices: &[usize]) -> Vec<OpsColumn> {
    let first = report.first_divergence.as_ref().map(|f| f.index);
    let marked = first.is_some_and(|f| indices.binary_search(&f).is_ok());
    ops_columns(report)
        .into_iter()
        .filter(|&c| marked || c != OpsColumn::Mark)
        .collect()
}

/// The layer prefix (`model.layers.3`) every row at `indices` has, if there are rows, they
/// share one (a `--layer` filter matches the layer's number under any prefix) and their names
/// relative to it are as distinct as their full names: none is the prefix and a dot
/// (`model.layers.3.`, which reads `(layer output)` as the layer's own does: a visual check) or
/// that very text.
pub(crate) fn layer_prefix(report: &Report, indices: &[usize]) -> Option<String> {
    let prefix = |i: usize| {
        let base = report.ops.row(i).base();
        let s = divergence_names::split_layer(base)?;
        let apart = s.rest.is_empty() && base.len() > s.prefix.len()
            || s.rest == divergence_names::LAYER_OUTPUT;
        (!apart).then_some(s.prefix)
    };
    let first = prefix(*indices.first()?)?;
    indices[1..]
        .iter()
        .all(|&i| prefix(i) == Some(first))
        .then(|| first.to_string())
}

/// The op a worst rel err is named in, for the per-step and per-layer tables: none where that
/// error is 0, where every op ties (a visual check read the first op, named so, as the worst).
pub(crate) fn worst_in(rel: Option<f64>, op: Option<&str>) -> Option<&str> {
    op.filter(|_| rel != Some(0.0))
}

/// One line of the per-layer view: a layer's rows, or one phase's of them (the prefill's, the
/// decode steps').
#[derive(Debug)]
pub(crate) struct LayerLine {
    pub layer: usize,
    pub ops: usize,
    pub diverged: usize,
    pub status: String,
    pub worst_rel: Option<f64>,
    pub worst_op: Option<String>,
    /// The decode step of the worst row (0: the prefill).
    pub worst_step: usize,
    pub first_bad: Option<String>,
}

/// Layers listed in the per-layer section of the table and the Markdown, and rows of the HTML
/// heatmap ([`crate::plot::heatmap`]): a real model has up to ~130. A dump of a million
/// distinct layer numbers (1,000,000 one-element tensors, a 90 MB file) made a per-layer table
/// of 98 MB at a peak of 4.5 GiB (2026-12-04, session 31).
pub(crate) const SHOWN_LAYERS: usize = 1024;

/// The per-layer lines the table and the Markdown show, one per layer in layer order (rows
/// without a layer left out; no row is built), what the layers left out hold
/// ([`shown_layers`] chooses them) and how many layers there are in all. Only the lines shown
/// are made (a line costs two names).
pub(crate) fn shown_layer_lines(report: &Report) -> (Vec<LayerLine>, Option<String>, usize) {
    let name = short_step_name;
    let tallies = layer_tallies(report, |r| r.layer());
    let total = tallies.len();
    let (keep, note) = choose_layers(report, &tallies);
    let lines = tallies
        .into_iter()
        .filter(|(l, _)| keep.as_ref().is_none_or(|k| k.contains(l)))
        .map(|(layer, t)| layer_line(report, layer, t, name))
        .collect();
    (lines, note, total)
}

/// A row's name relative to its layer, with its decode step: `self_attn.k_norm@2`, and
/// `(layer output)@2` for the layer itself ([`divergence_names::short_name`] of a layer's own
/// name is `(layer output)`, which lost the step: the per-layer table named a decode step's
/// layer output as the prefill's).
fn short_step_name(r: Row<'_>) -> String {
    let (base, step) = r.split();
    relative_of(base, step)
}

/// The layers the per-layer views show (the table's and the Markdown's lines, the HTML
/// heatmap's rows): `None` for every layer, up to [`SHOWN_LAYERS`]; past it, up to the cap and
/// in this order of choice: the layer of the first divergence, the layers with a diverged op,
/// those with a missing or unreadable op, then the first layers; and a note of the rest
/// ([`hidden_layers_note`]).
pub(crate) fn shown_layers(report: &Report) -> (Option<BTreeSet<usize>>, Option<String>) {
    choose_layers(report, &layer_tallies(report, |r| r.layer()))
}

/// [`shown_layers`] from the layers' tallies.
fn choose_layers(
    report: &Report,
    tallies: &BTreeMap<usize, LayerTally>,
) -> (Option<BTreeSet<usize>>, Option<String>) {
    if tallies.len() <= SHOWN_LAYERS {
        return (None, None);
    }
    let first = report
        .first_divergence
        .as_ref()
        .and_then(|f| report.ops.get_row(f.index)?.layer());
    let diverged = tallies
        .iter()
        .filter(|(_, t)| t.diverged > 0)
        .map(|(&l, _)| l);
    let incomplete = tallies
        .iter()
        .filter(|(_, t)| t.incomplete)
        .map(|(&l, _)| l);
    let chosen = first
        .into_iter()
        .chain(diverged)
        .chain(incomplete)
        .chain(tallies.keys().copied());
    let mut keep: BTreeSet<usize> = BTreeSet::new();
    for l in chosen {
        if keep.len() == SHOWN_LAYERS {
            break;
        }
        keep.insert(l);
    }
    let hidden: Vec<&LayerTally> = tallies
        .iter()
        .filter(|&(l, _)| !keep.contains(l))
        .map(|(_, t)| t)
        .collect();
    let note = hidden_layers_note(
        hidden.len(),
        hidden.iter().filter(|t| t.diverged > 0).count(),
        hidden.iter().filter(|t| t.incomplete).count(),
    );
    (Some(keep), note)
}

/// What the layers left out of the per-layer lines hold, as [`hidden_note`] says it for
/// steps, and how many of them have a missing or unreadable op: `3072 more layers, 5 with
/// diverged ops, 3067 without; 40 with missing or unreadable ops`.
fn hidden_layers_note(hidden: usize, diverged: usize, incomplete: usize) -> Option<String> {
    let note = hidden_note(hidden, diverged, ("layer", "layers"))?;
    Some(match incomplete {
        0 => note,
        n => format!("{note}; {n} with missing or unreadable ops"),
    })
}

/// A decode report's per-layer lines with the prefill and the decode steps apart, of the
/// layers the table lists ([`shown_layers`]: at most [`SHOWN_LAYERS`]), and what the layers
/// left out hold: the TUI's overview (`l`). Only the lines shown are made.
pub(crate) fn shown_layer_phase_lines(report: &Report) -> (Vec<PhaseLines>, Option<String>) {
    let (keep, note) = shown_layers(report);
    (layer_phase_lines_of(report, keep.as_ref()), note)
}

/// A layer's prefill line and decode steps' line (`None` where the layer has no row of it);
/// their names carry the step (`self_attn.k_norm@2`, `(layer output)@2`).
pub(crate) type PhaseLines = (usize, Option<LayerLine>, Option<LayerLine>);

/// [`PhaseLines`] of the layers in `keep` (every layer: `None`).
fn layer_phase_lines_of(report: &Report, keep: Option<&BTreeSet<usize>>) -> Vec<PhaseLines> {
    let name = short_step_name;
    let mut out: Vec<PhaseLines> = Vec::new();
    for ((layer, decode), t) in layer_tallies(report, |r| r.layer().map(|l| (l, r.step() > 0))) {
        if keep.is_some_and(|k| !k.contains(&layer)) {
            continue;
        }
        let line = Some(layer_line(report, layer, t, name));
        match out.last_mut() {
            Some(last) if last.0 == layer => last.2 = line,
            _ if decode => out.push((layer, None, line)),
            _ => out.push((layer, line, None)),
        }
    }
    out
}

/// The rows' tallies by `key` (rows without one left out). One pass over the rows' views, in
/// parallel by blocks of [`TALLY_BLOCK`] rows, each block's rows in order with the tally of the
/// last key at hand (a decode report has ~150,000 rows in runs of one layer: grouping them by
/// layer first, then walking each group four times, cost milliseconds; building them, tens of
/// milliseconds; a map lookup per row through rayon's fold, ~4.4 ms on one thread).
fn layer_tallies<'r, K: Ord + Send>(
    report: &'r Report,
    key: impl Fn(Row<'r>) -> Option<K> + Sync,
) -> BTreeMap<K, LayerTally> {
    let rows = &report.ops;
    let blocks = rows.len().div_ceil(TALLY_BLOCK);
    (0..blocks)
        .into_par_iter()
        .map(|b| {
            let mut m: BTreeMap<K, LayerTally> = BTreeMap::new();
            let mut last: Option<(K, LayerTally)> = None;
            let end = rows.len().min((b + 1) * TALLY_BLOCK);
            for i in b * TALLY_BLOCK..end {
                let row = rows.row(i);
                let Some(k) = key(row) else { continue };
                match &mut last {
                    Some((lk, t)) if *lk == k => t.add(i, row),
                    _ => {
                        if let Some((lk, t)) = last.take() {
                            m.entry(lk).or_default().merge(t);
                        }
                        let mut t = LayerTally::default();
                        t.add(i, row);
                        last = Some((k, t));
                    }
                }
            }
            if let Some((lk, t)) = last {
                m.entry(lk).or_default().merge(t);
            }
            m
        })
        .reduce(BTreeMap::new, |mut a, b| {
            for (k, t) in b {
                a.entry(k).or_default().merge(t);
            }
            a
        })
}

/// Rows a task of [`layer_tallies`] tallies.
const TALLY_BLOCK: usize = 8192;

/// The line of a layer's (or a phase's) tally, its ops named by `name`.
fn layer_line<'r>(
    report: &'r Report,
    layer: usize,
    t: LayerTally,
    name: impl Fn(Row<'r>) -> String,
) -> LayerLine {
    let op = |i: Option<usize>| i.and_then(|i| report.ops.get_row(i));
    let first_bad = op(t.first_bad);
    let worst = op(t.worst.map(|(_, i)| i));
    let status = match first_bad {
        Some(row) => row.status().to_string(),
        None if t.incomplete => "incomplete".to_string(),
        None => "ok".to_string(),
    };
    LayerLine {
        layer,
        ops: t.ops,
        diverged: t.diverged,
        status,
        worst_rel: t.worst.map(|(r, _)| r),
        worst_op: worst.map(&name),
        worst_step: worst.map_or(0, |r| r.step()),
        first_bad: first_bad.map(&name),
    }
}

/// What [`shown_layer_lines`] needs of one layer's rows, gathered in one pass: rows are added in
/// row order within a part, and parts merge in any order (ties go to the earlier row).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct LayerTally {
    ops: usize,
    diverged: usize,
    /// Some row is missing on a side or unreadable.
    incomplete: bool,
    /// The first diverging row.
    first_bad: Option<usize>,
    /// The largest rel L2 error and the first row that has it.
    worst: Option<(f64, usize)>,
}

impl LayerTally {
    fn add(&mut self, i: usize, row: Row<'_>) {
        let status = row.status();
        self.ops += 1;
        if status.is_divergence() {
            self.diverged += 1;
            self.first_bad = Some(self.first_bad.map_or(i, |f| f.min(i)));
        }
        self.incomplete |= matches!(
            status,
            Status::OnlyOurs | Status::OnlyRef | Status::Unreadable
        );
        if let Some(r) = row.rel_l2_err() {
            self.worst = Some(worse(self.worst, (r, i)));
        }
    }

    fn merge(&mut self, other: LayerTally) {
        self.ops += other.ops;
        self.diverged += other.diverged;
        self.incomplete |= other.incomplete;
        self.first_bad = match (self.first_bad, other.first_bad) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.worst = match (self.worst, other.worst) {
            (Some(a), Some(b)) => Some(worse(Some(a), b)),
            (a, b) => a.or(b),
        };
    }
}

/// The worse of two (rel error, row) pairs: the larger error, or the earlier row on a tie.
fn worse(acc: Option<(f64, usize)>, (r, i): (f64, usize)) -> (f64, usize) {
    match acc {
        Some((best, j)) if best > r || (best == r && j < i) => (best, j),
        _ => (r, i),
    }
}

/// Whether the per-step lines have a `top-1` column: the report compared the logits of its
/// steps (`tokens.steps`).
pub(crate) fn has_step_tokens(report: &Report) -> bool {
    report.tokens.as_ref().is_some_and(|t| !t.steps.is_empty())
}

/// A step's top-1 agreement for its per-step line: `agree` / `FLIP` for a decode step's one
/// position, `a/n` for the prefill's positions, `n/a` where no position had finite logits on
/// both sides, `-` where its logits were not compared (a UX review could not tell which steps
/// flipped but from the JSON).
pub(crate) fn step_top1(report: &Report, step: usize) -> String {
    let Some(t) = report.tokens.as_ref() else {
        return "-".to_string();
    };
    match t.steps.binary_search_by_key(&step, |s| s.step) {
        Err(_) => "-".to_string(),
        Ok(i) => match (t.steps[i].positions, t.steps[i].top1_agree) {
            (0, _) => "n/a".to_string(),
            (1, 1) => "agree".to_string(),
            (1, _) => "FLIP".to_string(),
            (n, a) => format!("{a}/{n}"),
        },
    }
}

/// Steps listed in the per-step section without `--all`: the prefill, the first diverging
/// steps and the worst one, up to this many.
pub(crate) const SHOWN_STEPS: usize = 12;

/// The per-step lines to show, and how many steps are left out. Every step with `--all` or
/// when there are few; else the prefill, the steps around the first diverging one, every
/// diverging step up to [`SHOWN_STEPS`], the step with the worst error and the step of the
/// first flipped token.
pub(crate) fn step_lines<'r>(
    report: &'r Report,
    opts: &TableOptions,
) -> (Vec<&'r StepSummary>, Option<String>) {
    let steps = &report.steps;
    if opts.all || steps.len() <= SHOWN_STEPS {
        return (steps.iter().collect(), None);
    }
    let mut keep = vec![false; steps.len()];
    keep[0] = true;
    let first = steps.iter().position(|s| s.diverged > 0);
    if let Some(f) = first {
        keep[f.saturating_sub(1)] = true;
        keep[f] = true;
    }
    let worst = steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.worst_rel_err.map(|e| (i, e)))
        .fold(None::<(usize, f64)>, |acc, (i, e)| match acc {
            Some((_, best)) if best >= e => acc,
            _ => Some((i, e)),
        });
    if let Some((w, _)) = worst {
        keep[w] = true;
    }
    // the step of the first flipped token
    let flip = report.tokens.as_ref().and_then(|t| t.first_flip.as_ref());
    if let Some(i) = flip.and_then(|f| steps.iter().position(|s| s.step == f.step)) {
        keep[i] = true;
    }
    // Counted as it goes: a count per step made this quadratic in the steps (a dump of 262,144
    // empty steps took 23 s here).
    let mut kept = keep.iter().filter(|&&k| k).count();
    for (i, s) in steps.iter().enumerate() {
        if kept >= SHOWN_STEPS {
            break;
        }
        if s.diverged > 0 && !keep[i] {
            keep[i] = true;
            kept += 1;
        }
    }
    let shown: Vec<&StepSummary> = steps
        .iter()
        .zip(&keep)
        .filter_map(|(s, &k)| k.then_some(s))
        .collect();
    let hidden = steps.len() - shown.len();
    // One step left out would take the line that says so: shown instead (a visual check read
    // "(1 more step, with diverged ops)" under 12 of 13 steps).
    if hidden == 1 {
        return (steps.iter().collect(), None);
    }
    let diverged = steps
        .iter()
        .zip(&keep)
        .filter(|(s, &k)| !k && s.diverged > 0)
        .count();
    (shown, hidden_note(hidden, diverged, ("step", "steps")))
}

/// What the steps (or layers, by `noun`: one, many) left out of the per-step (per-layer) lines
/// hold: `53 more steps, every one with diverged ops` (a newcomer read "all within tolerance or
/// not the first" as clean steps, where all 53 had diverged ops); `None` when none is left out.
fn hidden_note(hidden: usize, diverged: usize, noun: (&str, &str)) -> Option<String> {
    let what = match (hidden, diverged) {
        (0, _) => return None,
        (1, 0) => "without a diverged op".to_string(),
        (1, _) => "with diverged ops".to_string(),
        (_, 0) => "none with a diverged op".to_string(),
        (h, d) if d == h => "every one with diverged ops".to_string(),
        (h, d) => format!("{d} with diverged ops, {} without", h - d),
    };
    let noun = if hidden == 1 { noun.0 } else { noun.1 };
    Some(format!("{hidden} more {noun}, {what}"))
}

/// `step 3` / `prefill` for the first divergence's place line, when the dumps have decode
/// steps; `None` for one-pass dumps.
pub(crate) fn step_text(report: &Report, step: usize) -> Option<String> {
    if report.steps.is_empty() {
        return None;
    }
    Some(if step == 0 {
        "step 0 = prefill".to_string()
    } else {
        format!("decode step {step}")
    })
}

/// `a, b, c ... and 7 more`, each name as `show` writes it.
pub(crate) fn name_list(names: &[String], show: impl Fn(&str) -> String) -> String {
    let shown: Vec<String> = names
        .iter()
        .take(MAX_LISTED_NAMES)
        .map(|n| show(n))
        .collect();
    let mut s = shown.join(", ");
    if names.len() > MAX_LISTED_NAMES {
        s.push_str(&format!(" ... and {} more", names.len() - MAX_LISTED_NAMES));
    }
    s
}

pub(crate) fn summary_line(report: &Report) -> String {
    let s = &report.summary;
    // `no finite value` only when there are some, so the usual line keeps its shape.
    let no_finite = if s.no_finite > 0 {
        format!(", {} with no finite value", s.no_finite)
    } else {
        String::new()
    };
    let mut line = format!(
        "{} ops: {} ok, {} diverged ({} shape mismatch, {} non-finite{no_finite}), {} only in ours, {} only in ref, {} unreadable",
        s.total, s.ok, s.diverged, s.shape_mismatch, s.nonfinite, s.only_ours, s.only_ref, s.unreadable
    );
    match &report.first_divergence {
        Some(f) => line.push_str(&format!("; first divergence: {} (#{})", f.name, f.index)),
        None if s.compared == 0 || report.compared_no_element() => {
            line.push_str("; nothing compared")
        }
        None if !report.steps.is_empty() => {
            // Only the steps with a row compared are judged: a step whose every name is on
            // one side only is not (the warnings say so), and is not counted as clean (a
            // newcomer's run: "no divergence in 7 steps (prefill + 6 decode)" with the
            // prefill's 81 probes all unpaired).
            let judged = |s: &&StepSummary| s.compared > 0;
            let decode = report
                .steps
                .iter()
                .filter(|s| s.step > 0)
                .filter(judged)
                .count();
            let prefill = if report.steps.iter().filter(judged).any(|s| s.step == 0) {
                "prefill + "
            } else {
                ""
            };
            let n = report.steps.iter().filter(judged).count();
            let steps = if n == 1 { "step" } else { "steps" };
            // (the prefill alone judged: "(the prefill)", not "(prefill + 0 decode)", a
            // bad-input hunt's wording)
            let which = match (prefill.is_empty(), decode) {
                (false, 0) => "the prefill".to_string(),
                _ => format!("{prefill}{decode} decode"),
            };
            line.push_str(&format!("; no divergence in {n} {steps} ({which})"));
            let unjudged = report.steps.len() - n;
            if unjudged > 0 {
                let steps = if unjudged == 1 { "step" } else { "steps" };
                let prefill = report.steps.iter().any(|s| s.step == 0 && s.compared == 0);
                let prefill = match (prefill, unjudged) {
                    (false, _) => "",
                    (true, 1) => ": the prefill",
                    (true, _) => ", the prefill among them",
                };
                line.push_str(&format!(
                    "; {unjudged} {steps} not judged (no probe compared{prefill})"
                ));
            }
        }
        None => line.push_str("; no divergence"),
    }
    line
}

#[cfg(test)]
mod tests {
    use divergence_diff::{assemble, DiffConfig, OrderSource, ReportContext};

    use super::*;

    #[test]
    fn a_worst_error_of_zero_names_no_op() {
        assert_eq!(worst_in(Some(0.0), Some("x")), None);
        assert_eq!(worst_in(Some(1e-3), Some("x")), Some("x"));
        assert_eq!(worst_in(None, Some("x")), Some("x"));
        assert_eq!(worst_in(Some(1e-3), None), None);
    }

    /// A decode step's layer output keeps its step in the per-layer lines (it read
    /// `(layer output)`, the prefill's name, in the table's and the Markdown's per-layer
    /// section) as in the TUI's per-phase lines.
    #[test]
    fn a_decode_steps_layer_output_keeps_its_step_in_the_layer_lines() {
        let row = |name: &str, step: usize, status: &str, rel: f64| -> OpResult {
            serde_json::from_value(serde_json::json!({
                "name": name, "status": status, "rel_l2_err": rel, "layer": 0, "step": step,
            }))
            .unwrap()
        };
        let ops = vec![
            row("model.layers.0.mlp", 0, "ok", 1e-7),
            row("model.layers.0", 0, "ok", 1e-7),
            row("model.layers.0.mlp@2", 2, "ok", 1e-7),
            row("model.layers.0@2", 2, "diverged", 0.5),
        ];
        let report = assemble(
            ops,
            ReportContext::new("ours", "ref", OrderSource::RefMeta),
            &DiffConfig::default(),
        );
        let (lines, _, _) = shown_layer_lines(&report);
        assert_eq!(lines[0].first_bad.as_deref(), Some("(layer output)@2"));
        assert_eq!(lines[0].worst_op.as_deref(), Some("(layer output)@2"));
        let phases = layer_phase_lines_of(&report, None);
        let decode = phases[0].2.as_ref().expect("a decode line");
        assert_eq!(decode.first_bad.as_deref(), Some("(layer output)@2"));
    }

    /// Four float32 values of shape `[1, 4]`, a side of a test's row.
    fn side(v: &'static [f32]) -> divergence_diff::Side<'static> {
        divergence_diff::Side {
            shape: &[1, 4],
            values: divergence_diff::ValuesRef::F32(v),
            dtype: "float32",
        }
    }

    /// A first divergence whose NaN/Inf are its error (their places differ; the finite part
    /// exact) says so on the origin line, not a growth of ×0 (a bad-input hunt).
    #[test]
    fn a_nonfinite_origin_measures_no_growth() {
        use divergence_diff::compare;
        let cfg = DiffConfig::default();
        let r = [1.0f32, 2.0, 3.0, 4.0];
        let o = [1.0f32, f32::NAN, 3.0, 4.0];
        let (r, o): (&'static [f32], &'static [f32]) =
            (Box::leak(Box::new(r)), Box::leak(Box::new(o)));
        let rows = vec![
            compare("model.embed_tokens", Some(side(r)), Some(side(r)), &cfg),
            compare(
                "model.layers.0.input_layernorm",
                Some(side(o)),
                Some(side(r)),
                &cfg,
            ),
        ];
        let report = assemble(
            rows,
            ReportContext::new("a", "b", OrderSource::RefMeta),
            &cfg,
        );
        assert_eq!(
            report.first_divergence.as_ref().map(|f| f.status),
            Some(divergence_diff::Status::Nonfinite)
        );
        let text = origin_text(&report).expect("an origin");
        assert_eq!(
            text,
            "born here (its NaN/Inf are its error: no growth measured)"
        );
    }

    /// An origin of no known growth (its inputs' errors not measured: ops a map left unpaired)
    /// says so, not `local growth ×-` (a user's check).
    #[test]
    fn an_origin_of_no_known_growth_says_so() {
        use divergence_diff::compare;
        let cfg = DiffConfig::default();
        let r: &'static [f32] = &[1.0, 2.0, 3.0, 4.0];
        let o: &'static [f32] = &[2.0, 4.0, 6.0, 8.0];
        let rows = vec![
            compare("model.layers.0.input_layernorm", Some(side(r)), None, &cfg),
            compare(
                "model.layers.0.self_attn.q_proj",
                Some(side(o)),
                Some(side(r)),
                &cfg,
            ),
        ];
        let mut report = assemble(
            rows,
            ReportContext::new("a", "b", OrderSource::RefMeta),
            &cfg,
        );
        let origin = report.origin.as_mut().expect("an origin");
        origin.growth = None;
        let text = origin_text(&report).expect("an origin");
        assert_eq!(
            text,
            "born here (no local growth measured: its error or its inputs' not known); its input \
             model.layers.0.input_layernorm (only in ours) has no error to weigh: the error may \
             have come from it"
        );
    }

    /// An origin "born here" over the inputs that were compared says which were not: its
    /// error may have come from them (left from session 40's list: the line read as if every
    /// input had been weighed).
    #[test]
    fn an_origin_names_its_inputs_of_no_error() {
        use divergence_diff::compare;
        let cfg = DiffConfig::default();
        let r: &'static [f32] = &[1.0, 2.0, 3.0, 4.0];
        let o: &'static [f32] = &[1.0, 2.5, 3.0, 4.0];
        // rope_k reads k_norm (compared, equal) and rotary_emb (in ours only).
        let rows = |rotary: Option<divergence_diff::Side<'static>>| {
            vec![
                compare("model.rotary_emb", Some(side(r)), rotary, &cfg),
                compare(
                    "model.layers.0.self_attn.k_norm",
                    Some(side(r)),
                    Some(side(r)),
                    &cfg,
                ),
                compare(
                    "model.layers.0.self_attn.rope_k",
                    Some(side(o)),
                    Some(side(r)),
                    &cfg,
                ),
            ]
        };
        let text = |rotary| {
            let report = assemble(
                rows(rotary),
                ReportContext::new("a", "b", OrderSource::RefMeta),
                &cfg,
            );
            let origin = report.origin.as_ref().expect("an origin");
            (
                origin_text(&report).expect("a line"),
                origin.unmeasured_inputs.clone(),
            )
        };
        let (line, unmeasured) = text(None);
        assert!(
            line.starts_with("born here (local growth ×")
                && line.ends_with(
                    "; its input model.rotary_emb (only in ours) has no error to weigh: the \
                     error may have come from it"
                ),
            "{line}"
        );
        assert_eq!(
            unmeasured,
            vec![divergence_diff::UnmeasuredInput {
                name: "model.rotary_emb".into(),
                index: 0,
                status: Status::OnlyOurs,
            }]
        );
        // Both inputs compared: nothing said.
        let (line, unmeasured) = text(Some(side(r)));
        assert!(!line.contains("no error to weigh"), "{line}");
        assert!(unmeasured.is_empty());
    }

    /// An origin whose growth is under the birth threshold is only where the chain starts: said
    /// so, with the op that grew the error most, not "born at" (a held-out check read "born at
    /// layers.0 attn_out@4 (local growth ×2.017)" of a fault planted in a later layer).
    #[test]
    fn an_origin_under_the_birth_threshold_names_where_the_chain_grew_most() {
        let mut report = empty_report();
        report.first_divergence = Some(divergence_diff::FirstDivergence {
            name: "b".into(),
            index: 3,
            status: Status::Diverged,
            reason: String::new(),
            layer: None,
            step: 0,
        });
        let link = |name: &str, index, growth| divergence_diff::ChainLink {
            name: name.into(),
            index,
            local_growth: Some(growth),
            role: divergence_diff::Role::Carried,
        };
        let origin = |growth, chain| divergence_diff::Origin {
            name: "a".into(),
            index: 1,
            growth: Some(growth),
            chain,
            earlier: None,
            by_rel_err: false,
            unmeasured_inputs: Vec::new(),
        };
        report.origin = Some(origin(
            2.017,
            vec![link("a", 1, 2.017), link("m", 2, 6.5), link("b", 3, 1.2)],
        ));
        assert_eq!(
            origin_text(&report).unwrap(),
            "crossed the line at b; no op on its chain grew the error past ×10 (the birth \
             threshold): the chain starts at a (#1, local growth ×2.017e+00), and grew most at \
             m (#2, ×6.500e+00)"
        );
        report.origin = Some(origin(4.6, vec![link("a", 1, 4.6), link("b", 3, 1.2)]));
        assert_eq!(
            origin_text(&report).unwrap(),
            "crossed the line at b; no op on its chain grew the error past ×10 (the birth \
             threshold): the chain starts at a (#1, local growth ×4.600e+00), where it grew most"
        );
        report.origin = Some(origin(20.0, vec![link("a", 1, 20.0), link("b", 3, 1.2)]));
        assert_eq!(
            origin_text(&report).unwrap(),
            "crossed the line at b; born at a (#1, local growth ×2.000e+01)"
        );
    }

    /// At most three inputs named, the rest counted.
    #[test]
    fn unmeasured_inputs_past_three_are_counted() {
        let u = |k: usize, status| divergence_diff::UnmeasuredInput {
            name: format!("x{k}"),
            index: k,
            status,
        };
        let four = [
            u(0, Status::OnlyRef),
            u(1, Status::Unreadable),
            u(2, Status::ShapeMismatch),
            u(3, Status::Ok),
        ];
        assert_eq!(
            unmeasured_text(&four, false),
            "; its inputs x0 (only in ref), x1 (unreadable), x2 (shapes differ) and 1 more have \
             no error to weigh: the error may have come from them"
        );
        assert_eq!(
            unmeasured_text(&four[2..], true),
            "; its inputs x2 (shapes differ) and x3 (not judged by the truth) have no error to \
             weigh: the error may have come from them"
        );
        assert_eq!(unmeasured_text(&[], false), "");
    }

    /// A report of no rows, to fill in by hand.
    fn empty_report() -> Report {
        assemble(
            Vec::new(),
            ReportContext::new("a", "b", OrderSource::RefMeta),
            &DiffConfig::default(),
        )
    }

    /// The clean verdict in truth mode counts the ops where the reference itself is noise
    /// against the truth apart (a bad-input hunt: "all N ops are as accurate as the reference"
    /// said nothing of them), and the presets' ops after them.
    #[test]
    fn the_truth_verdict_counts_the_ops_read_as_noise() {
        let mut report = empty_report();
        report.tolerance = Tolerance::Truth { ratio: 3.0 };
        report.summary.compared = 40;
        let limit = "as accurate as the reference against the truth (noise ratio limit 3.0)";
        assert_eq!(clean_text(&report), limit);
        report.summary.noise_judged = 7;
        let noisy = "7 of them where the reference itself is more than 0.5 off the truth (see the warnings)";
        assert_eq!(clean_text(&report), format!("{limit}, {noisy}"));
        report.judged_with = vec![divergence_diff::JudgedWith {
            class: divergence_diff::DTypeClass::BF16,
            rtol: 0.016,
            atol: 1e-3,
            ops: 3,
        }];
        assert_eq!(
            clean_text(&report),
            format!("within tolerance: 37 {limit}, {noisy}, 3 judged by the fixed presets (the truth could not judge them)")
        );
        // And the decode-step rows left ok as noise, counted apart from the ops as accurate.
        report.summary.step_noise = 2;
        let steps = "2 decode-step rows over it but no further from the truth than the reference at another step of the op (see the notes)";
        assert_eq!(
            clean_text(&report),
            format!("within tolerance: 35 {limit}, {noisy}, {steps}, 3 judged by the fixed presets (the truth could not judge them)")
        );
        report.judged_with.clear();
        assert_eq!(
            clean_text(&report),
            format!("within tolerance: 38 {limit}, {noisy}, {steps}")
        );
    }

    #[test]
    fn the_hidden_steps_note_says_whether_they_diverged() {
        assert_eq!(hidden_note(0, 0, ("step", "steps")), None);
        let note = |h, d| hidden_note(h, d, ("step", "steps")).unwrap();
        assert_eq!(note(53, 53), "53 more steps, every one with diverged ops");
        assert_eq!(note(53, 0), "53 more steps, none with a diverged op");
        assert_eq!(
            note(53, 3),
            "53 more steps, 3 with diverged ops, 50 without"
        );
        assert_eq!(note(1, 1), "1 more step, with diverged ops");
        assert_eq!(note(1, 0), "1 more step, without a diverged op");
    }

    /// The summary line names the steps judged: the prefill alone is "(the prefill)", not
    /// "(prefill + 0 decode)" (a bad-input hunt's wording).
    #[test]
    fn the_summary_line_names_the_steps_judged() {
        let mut report = empty_report();
        report.summary.total = 30;
        report.summary.ok = 10;
        report.summary.compared = 10;
        let step = |step, compared| divergence_diff::StepSummary {
            step,
            compared,
            diverged: 0,
            missing: 10 - compared,
            worst_rel_err: None,
            worst_op: None,
            first_divergence: None,
        };
        report.steps = vec![step(0, 10), step(1, 0), step(2, 0)];
        assert!(
            summary_line(&report).ends_with(
                "; no divergence in 1 step (the prefill); 2 steps not judged (no probe compared)"
            ),
            "{}",
            summary_line(&report)
        );
        report.steps = vec![step(0, 10), step(1, 10)];
        assert!(
            summary_line(&report).ends_with("; no divergence in 2 steps (prefill + 1 decode)"),
            "{}",
            summary_line(&report)
        );
    }

    #[test]
    fn the_step_of_the_first_flipped_token_is_among_the_shown_steps() {
        // 40 clean steps, none diverged, a token flipped at step 23: its line is shown, with
        // its top-1 cell.
        let mut report = empty_report();
        report.steps = (0..=40)
            .map(|step| divergence_diff::StepSummary {
                step,
                compared: 10,
                diverged: 0,
                missing: 0,
                worst_rel_err: Some(if step == 7 { 2e-3 } else { 1e-3 }),
                worst_op: None,
                first_divergence: None,
            })
            .collect();
        let steps = (0..=40)
            .map(|step| divergence_diff::StepTokens {
                step,
                positions: if step == 0 { 4 } else { 1 },
                top1_agree: usize::from(step != 23) * if step == 0 { 4 } else { 1 },
                mean_kld: Some(0.0),
                max_kld: Some(0.0),
            })
            .collect();
        report.tokens = Some(divergence_diff::TokenEffect {
            op: "lm_head".into(),
            positions: 44,
            nonfinite_positions: 0,
            top1_agree: 43,
            top5_overlap: 1.0,
            mean_kld: 0.0,
            max_kld: 0.0,
            max_kld_position: 0,
            first_flip: Some(divergence_diff::Flip {
                position: 26,
                step: 23,
                ours_token: 1,
                ref_token: 2,
                ref_token_rank_in_ours: 2,
                ours_token_rank_in_ref: 2,
                ref_margin: None,
                ours_margin: None,
                ref_top_logit: None,
                ref_margin_ulps: None,
                ref_dtype: None,
            }),
            per_position: Vec::new(),
            steps,
            first_position: 0,
        });
        let (shown, note) = step_lines(&report, &TableOptions::default());
        let at: Vec<usize> = shown.iter().map(|s| s.step).collect();
        assert_eq!(at, [0, 7, 23], "the prefill, the worst, the flip");
        assert!(note.is_some());
        assert!(has_step_tokens(&report));
        assert_eq!(step_top1(&report, 0), "4/4");
        assert_eq!(step_top1(&report, 23), "FLIP");
        assert_eq!(step_top1(&report, 22), "agree");
        assert_eq!(step_top1(&report, 99), "-");
    }

    /// A [`LayerLine`]'s fields, in order.
    type Line = (
        usize,
        usize,
        usize,
        String,
        Option<f64>,
        Option<String>,
        Option<String>,
    );

    /// The per-layer lines as they were defined before the one-pass tally: each layer's rows
    /// in row order, walked one by one.
    fn serial(report: &Report) -> Vec<Line> {
        let mut by_layer: BTreeMap<usize, Vec<&OpResult>> = BTreeMap::new();
        for op in &report.ops {
            if let Some(l) = op.layer {
                by_layer.entry(l).or_default().push(op);
            }
        }
        let short = |o: &OpResult| divergence_names::short_name(&o.name).to_string();
        by_layer
            .into_iter()
            .map(|(layer, ops)| {
                let diverged = ops.iter().filter(|o| o.status.is_divergence()).count();
                let first_bad = ops.iter().find(|o| o.status.is_divergence());
                let incomplete = ops.iter().any(|o| {
                    matches!(
                        o.status,
                        Status::OnlyOurs | Status::OnlyRef | Status::Unreadable
                    )
                });
                let status = match first_bad {
                    Some(op) => op.status.to_string(),
                    None if incomplete => "incomplete".to_string(),
                    None => "ok".to_string(),
                };
                let mut worst: Option<(f64, &OpResult)> = None;
                for o in &ops {
                    if let Some(r) = o.errors.rel_l2_err {
                        if worst.is_none_or(|(best, _)| r > best) {
                            worst = Some((r, o));
                        }
                    }
                }
                (
                    layer,
                    ops.len(),
                    diverged,
                    status,
                    worst.map(|(r, _)| r),
                    worst.map(|(_, o)| short(o)),
                    first_bad.map(|o| short(o)),
                )
            })
            .collect()
    }

    /// Over 30,000 rows (several parallel parts): every layer's count, verdict, first bad op
    /// and worst op (the first row of the largest error, with many ties) are the serial ones,
    /// with each row's layer drawn at random and with layers in runs of rows (as a decode
    /// report lists them: the tally of the last layer kept at hand, runs across blocks).
    #[test]
    fn per_layer_tally_is_the_serial_walk() {
        per_layer_tally_case(|_, r| (r % 7) as usize);
        per_layer_tally_case(|i, r| if r % 97 == 0 { 6 } else { (i / 23) % 6 });
        per_layer_tally_case(|i, _| (i / 997) % 6);
    }

    fn per_layer_tally_case(layer_of: impl Fn(usize, u64) -> usize) {
        let statuses = [
            "ok",
            "ok",
            "ok",
            "ok",
            "diverged",
            "only_ours",
            "only_ref",
            "unreadable",
            "nonfinite",
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Runs of one layer across the blocks' boundaries: more rows than three blocks.
        const _: () = assert!(30_000 > 3 * TALLY_BLOCK);
        let ops: Vec<OpResult> = (0..30_000)
            .map(|i| {
                let r = next();
                let layer = layer_of(i, r);
                let name = if layer == 6 {
                    format!("model.norm.p{i}")
                } else {
                    format!("model.layers.{layer}.op{}@{}", r % 11, i / 600)
                };
                // Rare divergences (layer 5 none at all), errors from a small set (ties).
                let status = if layer == 5 {
                    "ok"
                } else {
                    statuses[((r >> 8) % 400).min(8) as usize]
                };
                let rel = ((r >> 20) % 5 != 0).then_some(((r >> 24) % 50) as f64 * 1e-3);
                serde_json::from_value(serde_json::json!({
                    "name": name, "status": status, "rel_l2_err": rel,
                    "layer": (layer < 6).then_some(layer),
                }))
                .unwrap()
            })
            .collect();
        let report = assemble(
            ops,
            ReportContext::new("ours", "ref", OrderSource::RefMeta),
            &DiffConfig::default(),
        );
        let got: Vec<_> = shown_layer_lines(&report)
            .0
            .into_iter()
            .map(|l| {
                (
                    l.layer,
                    l.ops,
                    l.diverged,
                    l.status,
                    l.worst_rel,
                    l.worst_op,
                    l.first_bad,
                )
            })
            .collect();
        let want = serial(&report);
        assert_eq!(got.len(), 6);
        assert!(want.iter().any(|w| w.3 == "incomplete") || want.iter().any(|w| w.3 == "ok"));
        assert_eq!(got, want);
        // The prefill's and the decode steps' lines apart (the TUI's `l` in a decode report)
        // are each the serial walk of that phase's rows alone.
        let mut report = report;
        for op in report.ops.iter_mut() {
            op.step = divergence_names::split_step(&op.name).1;
        }
        let phases = layer_phase_lines_of(&report, None);
        for decode in [false, true] {
            let mut part = report.clone();
            part.ops.retain(|o| (o.step > 0) == decode);
            let got: Vec<Line> = phases
                .iter()
                .filter_map(|(_, p, d)| if decode { d.as_ref() } else { p.as_ref() })
                .map(|l| {
                    (
                        l.layer,
                        l.ops,
                        l.diverged,
                        l.status.clone(),
                        l.worst_rel,
                        l.worst_op.clone(),
                        l.first_bad.clone(),
                    )
                })
                .collect();
            assert_eq!(got, serial(&part), "decode: {decode}");
        }
    }

    /// Past [`SHOWN_LAYERS`] layers the table and the Markdown list that many: the layers
    /// with a diverged or missing op first, then the first layers, in layer order, and a note
    /// of the rest; at the cap, every layer and no note.
    #[test]
    fn the_per_layer_lines_shown_stop_at_the_cap() {
        let report_of = |layers: usize, bad: &[(usize, &str)]| {
            let ops: Vec<OpResult> = (0..layers)
                .map(|l| {
                    let status = bad.iter().find(|b| b.0 == l).map_or("ok", |b| b.1);
                    serde_json::from_value(serde_json::json!({
                        "name": format!("model.layers.{l}.mlp"), "status": status,
                        "rel_l2_err": 0.0, "layer": l,
                    }))
                    .unwrap()
                })
                .collect();
            assemble(
                ops,
                ReportContext::new("ours", "ref", OrderSource::RefMeta),
                &DiffConfig::default(),
            )
        };
        let (lines, note, _) = shown_layer_lines(&report_of(SHOWN_LAYERS, &[]));
        assert_eq!((lines.len(), note), (SHOWN_LAYERS, None));
        let bad = [
            (5_000, "diverged"),
            (7_000, "only_ref"),
            (9_000, "diverged"),
        ];
        let (lines, note, _) = shown_layer_lines(&report_of(10_000, &bad));
        assert_eq!(lines.len(), SHOWN_LAYERS);
        let layers: Vec<usize> = lines.iter().map(|l| l.layer).collect();
        let mut want: Vec<usize> = (0..SHOWN_LAYERS - 3).collect();
        want.extend([5_000, 7_000, 9_000]);
        assert_eq!(layers, want);
        assert_eq!(
            note.as_deref(),
            Some("8976 more layers, none with a diverged op")
        );
        // More incomplete layers than the cap and one diverged after them (a review: the
        // layer of the first divergence was left out): the diverged layer is shown, and the
        // note says what the incomplete ones left out are.
        let mut bad: Vec<(usize, &str)> = (0..2_000).map(|l| (l, "only_ref")).collect();
        bad[1_500].1 = "diverged";
        let (lines, note, _) = shown_layer_lines(&report_of(2_000, &bad));
        assert!(lines.iter().any(|l| l.layer == 1_500 && l.diverged == 1));
        assert_eq!(lines.len(), SHOWN_LAYERS);
        assert_eq!(
            note.as_deref(),
            Some("976 more layers, none with a diverged op; 976 with missing or unreadable ops")
        );
        // More diverged layers than the cap: the first of them shown, the rest said.
        let many: Vec<(usize, &str)> = (0..SHOWN_LAYERS + 5).map(|l| (2 * l, "diverged")).collect();
        let (lines, note, _) = shown_layer_lines(&report_of(4 * SHOWN_LAYERS, &many));
        assert!(lines.iter().all(|l| l.diverged == 1));
        assert_eq!(lines.last().map(|l| l.layer), Some(2 * (SHOWN_LAYERS - 1)));
        assert_eq!(
            note.as_deref(),
            Some("3072 more layers, 5 with diverged ops, 3067 without")
        );
        // Rendered: the table and the Markdown say the note, and how many layers are shown.
        let report = report_of(4 * SHOWN_LAYERS, &many);
        let mut out = Vec::new();
        crate::render_table(&report, &TableOptions::default(), &mut out).unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(
            table.contains(
                "  (3072 more layers, 5 with diverged ops, 3067 without; the JSON report has every op)"
            ),
            "{table}"
        );
        let mut out = Vec::new();
        crate::render_markdown(&report, &TableOptions::default(), &mut out).unwrap();
        let md = String::from_utf8(out).unwrap();
        assert!(
            md.contains("<details><summary>Per layer (1024 of 4096 layers)</summary>")
                && md.contains(
                    "3072 more layers, 5 with diverged ops, 3067 without (the JSON report has every op)."
                ),
            "{md}"
        );
    }
}
