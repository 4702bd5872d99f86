//! The JSON renderer: the [`Report`] through serde_json, pretty-printed, fields in struct order.
//!
//! A report of many rows (a decode dump has tens of thousands) has its rows serialized in
//! parallel, a bounded window at a time, and spliced into the rest: the bytes are those of
//! `serde_json::to_writer_pretty` on the whole report (tested), the memory one window's (a
//! compact report's decode steps are built as their window is written, never all at once).

use std::io::{self, Write};

use divergence_diff::{Report, Rows};
use rayon::prelude::*;

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
        // Each task's rows, a compact report's steps built one at a time ([`Rows::op`]).
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
    let mut one = Vec::with_capacity(2048);
    for (i, row) in range.filter_map(|i| rows.op(i)).enumerate() {
        one.clear();
        serde_json::to_writer_pretty(&mut one, &*row)?;
        if i > 0 {
            buf.push(b',');
        }
        // serde_json escapes newlines inside strings: every raw newline is a line break.
        for line in one.split(|&b| b == b'\n') {
            buf.push(b'\n');
            buf.extend_from_slice(ROW_INDENT);
            buf.extend_from_slice(line);
        }
    }
    Ok(buf)
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
