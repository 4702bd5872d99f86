//! The JSON renderer: the [`Report`] as serde_json pretty-prints it, fields in struct order.
//!
//! A report of many rows (a decode dump has tens of thousands) has its rows written in
//! parallel, a bounded window at a time, and spliced into the rest: the bytes are those of
//! `serde_json::to_writer_pretty` on the whole report (tested), the memory one window's (a
//! compact report's decode steps are built as their window is written, never all at once).
//! A row is written by [`write_row`], field by field as serde_json would, not through serde; a
//! compact decode step within tolerance by [`write_step`], from its sums, without building it.

use std::io::{self, Write};

use divergence_diff::{
    ErrorMetrics, NonFiniteCounts, OpResult, Report, Row, Rows, RuleTerms, Status, TensorInfo,
    TruthMetrics,
};
use rayon::prelude::*;
use serde_json::ser::{CompactFormatter, Formatter};

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 256;
/// Tasks per window: the rows serialized before they are written (a few MB).
const TASKS_PER_WINDOW: usize = 16;
/// The indentation of a row in the pretty report: inside `{ "ops": [ ... ] }`.
const ROW_INDENT: &[u8] = b"    ";

pub(crate) fn render(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.ops.len() <= ROWS_PER_TASK {
        return render_serial(report, out);
    }
    // The report without its rows ends with `"ops": []` and its closing brace.
    let head = serde_json::to_vec_pretty(&without_ops(report)).map_err(io::Error::from)?;
    let Some(head) = head.strip_suffix(b"[]\n}") else {
        return render_serial(report, out);
    };
    out.write_all(head)?;
    out.write_all(b"[")?;
    let mut first = true;
    let len = report.ops.len();
    let window = ROWS_PER_TASK * TASKS_PER_WINDOW;
    for start in (0..len).step_by(window) {
        // Each task's rows: a compact report's steps within tolerance from their sums, the
        // others built one at a time ([`Rows::op`]).
        let parts: Vec<Vec<u8>> = (start..len.min(start + window))
            .step_by(ROWS_PER_TASK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|from| rows_pretty(&report.ops, from..len.min(from + ROWS_PER_TASK)))
            .collect::<Result<_, _>>()
            .map_err(io::Error::from)?;
        for part in parts {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            out.write_all(&part)?;
        }
    }
    out.write_all(b"\n  ]\n}\n")
}

fn render_serial(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    // io::Error::from keeps the writer's own io error (and its kind: a broken pipe stays one).
    serde_json::to_writer_pretty(&mut *out, report).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Rows as they appear in the pretty report's `ops` array: each on a new line, indented, the
/// rows separated by commas (no comma before the first or after the last).
fn rows_pretty(rows: &Rows, range: std::ops::Range<usize>) -> serde_json::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(range.len() * 1536);
    for (i, row) in range.filter_map(|i| rows.get_row(i)).enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'\n');
        buf.extend_from_slice(ROW_INDENT);
        match row {
            // A compact decode step within tolerance, read from its sums as the views read
            // it: nothing built (a diverged step's reason is written when built).
            Row::Step(..) if row.status() == Status::Ok => write_step(&mut buf, row)?,
            _ => write_row(&mut buf, &row.op())?,
        }
    }
    Ok(buf)
}

/// A field's key as serde_json pretty-prints it, `"key": ` on a line of its own after a comma,
/// in one piece. The keys are plain ASCII field names: nothing to escape.
macro_rules! key {
    ($w:expr, $key:literal) => {
        $w.key(concat!(",\n      \"", $key, "\": "))
    };
}

/// One row's fields, borrowed from a row stored whole or read from a decode step's sums.
struct Fields<'a> {
    /// The name, or a decode step's probe name, written `base@step` with [`Fields::step`]
    /// (without building it) where `step_name` says so.
    name: &'a str,
    step_name: bool,
    status: Status,
    reason: Option<&'a str>,
    layer: Option<usize>,
    step: usize,
    tensor: &'a TensorInfo,
    rule: &'a RuleTerms,
    errors: &'a ErrorMetrics,
    nonfinite: &'a NonFiniteCounts,
    truth: &'a TruthMetrics,
    frac_outside_tol: Option<f64>,
    local_growth: Option<f64>,
    mapped: Option<&'a str>,
}

/// One row as serde_json pretty-prints it inside the report (`OpResult`'s derived
/// `Serialize`: its fields in order, the flattened groups' fields in place), written straight
/// into `buf`: a decode report's JSON is ~150,000 such rows, and serde's flattened map and a
/// second pass to indent them took about a third of its output time. Every field is named
/// here: the struct is destructured in full, so a new field does not compile until it is
/// named, and one named but not written is an unused variable, which CI's clippy (`-D
/// warnings`) refuses. The bytes are tested against serde_json's (`tests/render.rs`).
fn write_row(buf: &mut Vec<u8>, row: &OpResult) -> serde_json::Result<()> {
    let OpResult {
        name,
        status,
        reason,
        layer,
        step,
        tensor,
        rule,
        errors,
        nonfinite,
        truth,
        frac_outside_tol,
        local_growth,
        mapped,
    } = row;
    write_fields(
        buf,
        Fields {
            name,
            step_name: false,
            status: *status,
            reason: reason.as_deref(),
            layer: *layer,
            step: *step,
            tensor,
            rule,
            errors,
            nonfinite,
            truth,
            frac_outside_tol: *frac_outside_tol,
            local_growth: *local_growth,
            mapped: mapped.as_deref(),
        },
    )
}

/// [`write_row`] of a compact decode step, read through its [`Row`] view (the same values as
/// the row built, `Rows::op`, which the views answer for: tested in divergence-diff and, byte
/// for byte, in `tests/rows.rs`): no row built, no name written to the heap.
fn write_step(buf: &mut Vec<u8>, row: Row<'_>) -> serde_json::Result<()> {
    let (rule, errors) = row.terms();
    let mut errors = errors.into_owned();
    errors.max_abs_err_index = row.max_abs_err_index();
    let reason = row.reason();
    write_fields(
        buf,
        Fields {
            name: row.base(),
            step_name: true,
            status: row.status(),
            reason: reason.as_deref(),
            layer: row.layer(),
            step: row.step(),
            tensor: row.tensor(),
            rule: &rule,
            errors: &errors,
            nonfinite: row.nonfinite(),
            truth: row.truth(),
            frac_outside_tol: row.frac_outside_tol(),
            local_growth: row.local_growth(),
            mapped: row.mapped(),
        },
    )
}

/// The fields of [`write_row`], in `OpResult`'s order, each group destructured in full.
fn write_fields(buf: &mut Vec<u8>, f: Fields<'_>) -> serde_json::Result<()> {
    let TensorInfo {
        shape,
        shape_ours,
        dtype_ours,
        dtype_ref,
        numel,
    } = f.tensor;
    let RuleTerms {
        n_compared,
        rtol,
        atol,
        ours_l2,
        ref_l2,
        diff_l2,
        tol_threshold,
    } = f.rule;
    let ErrorMetrics {
        max_abs_err,
        max_abs_err_index,
        mean_abs_err,
        rel_l2_err,
        max_rel_err,
        cosine,
    } = f.errors;
    let NonFiniteCounts {
        nan_ours,
        inf_ours,
        nan_ref,
        inf_ref,
        nonfinite_mismatch,
    } = f.nonfinite;
    let TruthMetrics {
        ours_truth_rel_err,
        ref_truth_rel_err,
        noise_ratio,
        truth_problem,
    } = f.truth;
    let mut w = RowWriter { buf, first: true };
    w.buf.push(b'{');
    key!(w, "name");
    match f.step_name {
        false => w.string(f.name)?,
        true => w.step_name(f.name, f.step)?,
    }
    key!(w, "status");
    serde_json::to_writer(&mut *w.buf, &f.status)?;
    key!(w, "reason").opt_string(f.reason)?;
    key!(w, "layer").opt_int(f.layer.map(|l| l as u64));
    key!(w, "step").int(f.step as u64);
    key!(w, "shape").opt_ints(shape.as_deref().map(|s| s.iter().copied()));
    key!(w, "shape_ours").opt_ints(shape_ours.as_deref().map(|s| s.iter().copied()));
    key!(w, "dtype_ours").opt_string(dtype_ours.as_deref())?;
    key!(w, "dtype_ref").opt_string(dtype_ref.as_deref())?;
    key!(w, "numel").opt_int(*numel);
    key!(w, "n_compared").opt_int(*n_compared);
    key!(w, "rtol").float(*rtol);
    key!(w, "atol").float(*atol);
    key!(w, "ours_l2").float(*ours_l2);
    key!(w, "ref_l2").float(*ref_l2);
    key!(w, "diff_l2").float(*diff_l2);
    key!(w, "tol_threshold").float(*tol_threshold);
    key!(w, "max_abs_err").float(*max_abs_err);
    key!(w, "max_abs_err_index").opt_ints(max_abs_err_index.as_ref().map(|i| i.iter()));
    key!(w, "mean_abs_err").float(*mean_abs_err);
    key!(w, "rel_l2_err").float(*rel_l2_err);
    key!(w, "max_rel_err").float(*max_rel_err);
    key!(w, "cosine").float(*cosine);
    key!(w, "nan_ours").opt_int(*nan_ours);
    key!(w, "inf_ours").opt_int(*inf_ours);
    key!(w, "nan_ref").opt_int(*nan_ref);
    key!(w, "inf_ref").opt_int(*inf_ref);
    key!(w, "nonfinite_mismatch").opt_int(*nonfinite_mismatch);
    key!(w, "ours_truth_rel_err").float(*ours_truth_rel_err);
    key!(w, "ref_truth_rel_err").float(*ref_truth_rel_err);
    key!(w, "noise_ratio").float(*noise_ratio);
    key!(w, "truth_problem").opt_string(truth_problem.as_deref())?;
    key!(w, "frac_outside_tol").float(f.frac_outside_tol);
    key!(w, "local_growth").float(f.local_growth);
    key!(w, "mapped").opt_string(f.mapped)?;
    w.buf.extend_from_slice(b"\n");
    w.buf.extend_from_slice(ROW_INDENT);
    w.buf.push(b'}');
    Ok(())
}

/// The fields of one row, at the depth of a row's fields in the pretty report.
struct RowWriter<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

/// A row's field on its own line: the row's indent and one level more.
const FIELD_LINE: &[u8] = b",\n      ";
/// An array's element on its own line: two levels more than the row.
const ELEMENT_LINE: &[u8] = b",\n        ";

impl RowWriter<'_> {
    /// A field's line up to its value ([`key!`]), without its comma for the first.
    fn key(&mut self, line: &'static str) -> &mut Self {
        let from = usize::from(std::mem::take(&mut self.first));
        self.buf.extend_from_slice(&line.as_bytes()[from..]);
        self
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(b"null");
    }

    fn int(&mut self, v: u64) {
        // `write_u64` of a Vec cannot fail.
        let _ = CompactFormatter.write_u64(&mut *self.buf, v);
    }

    fn opt_int(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }

    /// As serde_json writes an `f64`: `null` unless finite.
    fn float(&mut self, v: Option<f64>) {
        match v {
            Some(v) if v.is_finite() => {
                // `write_f64` of a Vec cannot fail.
                let _ = CompactFormatter.write_f64(&mut *self.buf, v);
            }
            _ => self.null(),
        }
    }

    fn string(&mut self, s: &str) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *self.buf, s)
    }

    /// A decode step's name, `base@step` (`base` alone at step 0, as the name is written),
    /// escaped as serde_json escapes the whole: `@` and digits need no escape.
    fn step_name(&mut self, base: &str, step: usize) -> serde_json::Result<()> {
        self.string(base)?;
        if step > 0 {
            // the closing quote, moved after the step
            self.buf.pop();
            self.buf.push(b'@');
            self.int(step as u64);
            self.buf.push(b'"');
        }
        Ok(())
    }

    fn opt_string(&mut self, s: Option<&str>) -> serde_json::Result<()> {
        match s {
            Some(s) => self.string(s),
            None => {
                self.null();
                Ok(())
            }
        }
    }

    /// An array of integers as serde_json pretty-prints it: `[]`, or one element a line.
    fn opt_ints(&mut self, v: Option<impl Iterator<Item = usize>>) {
        let Some(v) = v else {
            return self.null();
        };
        self.buf.push(b'[');
        let mut any = false;
        for x in v {
            self.buf
                .extend_from_slice(&ELEMENT_LINE[usize::from(!any)..]);
            any = true;
            self.int(x as u64);
        }
        if any {
            self.buf.extend_from_slice(&FIELD_LINE[1..]);
        }
        self.buf.push(b']');
    }
}

/// The report with no rows; every other field cloned (destructured so that a new field of
/// [`Report`] cannot be forgotten here).
fn without_ops(report: &Report) -> Report {
    let Report {
        schema,
        ours,
        reference,
        sides,
        tolerance,
        order_source,
        input_ids_mismatch,
        warnings,
        notes,
        step_selection,
        first_divergence,
        origin,
        hints,
        positions,
        tokens,
        first_difference,
        judged_with,
        summary,
        steps,
        only_ours,
        only_ref,
        amplification,
        ops: _,
    } = report;
    Report {
        schema: schema.clone(),
        ours: ours.clone(),
        reference: reference.clone(),
        sides: sides.clone(),
        tolerance: *tolerance,
        order_source: *order_source,
        input_ids_mismatch: *input_ids_mismatch,
        warnings: warnings.clone(),
        notes: notes.clone(),
        step_selection: step_selection.clone(),
        first_divergence: first_divergence.clone(),
        origin: origin.clone(),
        hints: hints.clone(),
        positions: positions.clone(),
        tokens: tokens.clone(),
        first_difference: first_difference.clone(),
        judged_with: judged_with.clone(),
        summary: summary.clone(),
        steps: steps.clone(),
        only_ours: only_ours.clone(),
        only_ref: only_ref.clone(),
        amplification: amplification.clone(),
        ops: Rows::default(),
    }
}
