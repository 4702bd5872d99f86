//! The terminal view (comfy-table): compact by default, colors only when asked.
//!
//! Layout: the input_ids warning (if any) as the very first line; a header block (files, tolerance
//! mode, order source, warnings); the first-divergence summary; the ops table (context around the
//! first divergence, or every / filtered op); one line per layer; the q/k-norm amplification
//! section; names present on one side only; the summary line.

use std::io::{self, Write};

use comfy_table::{presets, Attribute, Cell, CellAlignment, Color, ContentArrangement, Table};
use divergence_diff::{OpResult, QkKind, Report, Status};

use crate::view::{self, cos, num, pct};
use crate::TableOptions;

/// ANSI styling for the lines outside the tables.
fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

const BOLD_RED: &str = "1;31";
const BOLD_GREEN: &str = "1;32";
const YELLOW: &str = "33";
const BOLD: &str = "1";

fn new_table(opts: &TableOptions) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.force_no_tty();
    if opts.color {
        t.enforce_styling();
    }
    match opts.width {
        Some(w) => {
            t.set_width(w);
            t.set_content_arrangement(ContentArrangement::Dynamic);
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    t
}

fn status_color(status: Status) -> Option<Color> {
    match status {
        Status::Ok => Some(Color::Green),
        Status::Diverged | Status::ShapeMismatch | Status::Nonfinite => Some(Color::Red),
        Status::OnlyOurs | Status::OnlyRef => Some(Color::Yellow),
        Status::Unreadable => Some(Color::Magenta),
    }
}

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

fn ops_table(report: &Report, indices: &[usize], opts: &TableOptions) -> Table {
    let mut t = new_table(opts);
    t.set_header(vec![
        "", "#", "op", "status", "shape", "dtype", "||ours||", "||ref||", "max|o-r|", "rel err",
        "cosine", "out tol",
    ]);
    let first = report.first_divergence.as_ref().map(|f| f.index);
    for &i in indices {
        let op: &OpResult = &report.ops[i];
        let is_first = first == Some(i);
        let mut status = Cell::new(op.status.as_str());
        if opts.color {
            if let Some(c) = status_color(op.status) {
                status = status.fg(c);
            }
        }
        let mut name = Cell::new(&op.name);
        let mut mark = Cell::new(if is_first { ">>" } else { "" });
        if is_first && opts.color {
            name = name.fg(Color::Red).add_attribute(Attribute::Bold);
            mark = mark.fg(Color::Red).add_attribute(Attribute::Bold);
        }
        t.add_row(vec![
            mark,
            right(i.to_string()),
            name,
            status,
            Cell::new(view::shape_cell(op)),
            Cell::new(view::dtype_cell(op)),
            right(num(op.ours_l2)),
            right(num(op.ref_l2)),
            right(num(op.max_abs_err)),
            right(num(op.rel_l2_err)),
            right(cos(op.cosine)),
            right(pct(op.frac_outside_tol)),
        ]);
    }
    t
}

pub(crate) fn render(report: &Report, opts: &TableOptions, out: &mut dyn Write) -> io::Result<()> {
    let c = opts.color;
    if let Some(w) = view::input_ids_warning(report) {
        writeln!(out, "{}", paint(&format!("!!! {w} !!!"), BOLD_RED, c))?;
        writeln!(out)?;
    }

    // Header block.
    writeln!(out, "{}", paint("divergence report", BOLD, c))?;
    writeln!(out, "  ours:      {}", report.ours)?;
    writeln!(out, "  ref:       {}", report.reference)?;
    writeln!(
        out,
        "  tolerance: {}",
        view::tolerance_text(&report.tolerance)
    )?;
    writeln!(out, "  order:     {}", report.order_source.describe())?;
    for w in view::other_warnings(report) {
        writeln!(out, "{}", paint(&format!("warning: {w}"), YELLOW, c))?;
    }
    writeln!(out)?;

    // First divergence.
    match (&report.first_divergence, report.first_divergence_op()) {
        (Some(f), Some(op)) => {
            let layer = f.layer.map_or_else(String::new, |l| format!(", layer {l}"));
            writeln!(
                out,
                "{} {}  (#{} of {}{layer})",
                paint(">> FIRST DIVERGENCE:", BOLD_RED, c),
                paint(&f.name, BOLD, c),
                f.index,
                report.ops.len()
            )?;
            writeln!(out, "  status       {}", f.status)?;
            writeln!(out, "  reason       {}", f.reason)?;
            writeln!(
                out,
                "  shape        {}   dtype ours {}, ref {}   rtol {}, atol {}",
                view::shape_cell(op),
                op.dtype_ours.as_deref().unwrap_or("-"),
                op.dtype_ref.as_deref().unwrap_or("-"),
                num(op.rtol),
                num(op.atol)
            )?;
            writeln!(
                out,
                "  ||ours||     {}   ||ref|| {}",
                num(op.ours_l2),
                num(op.ref_l2)
            )?;
            let at = op
                .max_abs_err_index
                .as_ref()
                .map_or_else(String::new, |ix| format!(" at {ix:?}"));
            writeln!(out, "  max |o-r|    {}{at}", num(op.max_abs_err))?;
            writeln!(
                out,
                "  rel L2 err   {}   max rel err {}   outside tol {}",
                num(op.rel_l2_err),
                num(op.max_rel_err),
                pct(op.frac_outside_tol)
            )?;
            writeln!(out, "  cosine       {}", cos(op.cosine))?;
            writeln!(
                out,
                "  NaN/Inf      ours {}/{}, ref {}/{}",
                count(op.nan_ours),
                count(op.inf_ours),
                count(op.nan_ref),
                count(op.inf_ref)
            )?;
        }
        _ => {
            writeln!(
                out,
                "{}",
                paint(
                    &format!(
                        "NO DIVERGENCE: all {} compared ops are within tolerance",
                        report.summary.compared
                    ),
                    BOLD_GREEN,
                    c
                )
            )?;
        }
    }
    writeln!(out)?;

    // Ops table.
    if let Some(sel) = view::select_ops(report, opts) {
        writeln!(out, "{}", paint(&sel.title, BOLD, c))?;
        if sel.indices.is_empty() {
            writeln!(out, "  (none)")?;
        } else {
            writeln!(out, "{}", ops_table(report, &sel.indices, opts))?;
        }
        writeln!(out)?;
    }

    // Per layer.
    let lines = view::layer_lines(report);
    if !lines.is_empty() {
        writeln!(out, "{}", paint("Per layer", BOLD, c))?;
        let mut t = new_table(opts);
        t.set_header(vec![
            "layer",
            "ops",
            "status",
            "diverged",
            "worst rel err",
            "in op",
            "first diverging op",
        ]);
        for l in &lines {
            let mut status = Cell::new(&l.status);
            if c {
                status = status.fg(if l.diverged > 0 {
                    Color::Red
                } else if l.status == "ok" {
                    Color::Green
                } else {
                    Color::Yellow
                });
            }
            t.add_row(vec![
                right(l.layer.to_string()),
                right(l.ops.to_string()),
                status,
                right(l.diverged.to_string()),
                right(num(l.worst_rel)),
                Cell::new(l.worst_op.as_deref().unwrap_or("-")),
                Cell::new(l.first_bad.as_deref().unwrap_or("-")),
            ]);
        }
        writeln!(out, "{t}")?;
        writeln!(out)?;
    }

    // Amplification.
    let amp = &report.amplification;
    let filter = view::Filter::new(opts);
    let rows: Vec<_> = amp
        .rows
        .iter()
        .filter(|r| filter.layer_ok(r.layer) && (opts.all || r.kind == QkKind::K || r.marked))
        .collect();
    writeln!(
        out,
        "{}",
        paint(
            &format!(
                "Amplification through q_norm/k_norm (marked when norm rel err / proj rel err > {}; {} marked)",
                amp.threshold, amp.marked
            ),
            BOLD,
            c
        )
    )?;
    if amp.rows.is_empty() {
        writeln!(out, "  no q/k proj + norm pairs in the dumps")?;
    } else {
        if !opts.all {
            writeln!(
                out,
                "  k rows, and q rows when marked (--all shows every row)"
            )?;
        }
        let mut t = new_table(opts);
        t.set_header(vec![
            "",
            "layer",
            "q/k",
            "proj rel err",
            "norm rel err",
            "ratio",
            "abs err gain",
            "weight gain",
        ]);
        for r in rows {
            let mut mark = Cell::new(if r.marked { "AMPLIFIED" } else { "" });
            if r.marked && c {
                mark = mark.fg(Color::Red).add_attribute(Attribute::Bold);
            }
            t.add_row(vec![
                mark,
                right(r.layer.to_string()),
                Cell::new(r.kind),
                right(num(r.proj_rel_err)),
                right(num(r.norm_rel_err)),
                right(num(r.ratio)),
                right(num(r.abs_err_gain)),
                right(num(r.weight_gain)),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    writeln!(out)?;

    // One-side names.
    if !report.only_ours.is_empty() {
        writeln!(
            out,
            "{}",
            paint(
                &format!(
                    "Only in ours ({}): {}",
                    report.only_ours.len(),
                    view::name_list(&report.only_ours, "")
                ),
                YELLOW,
                c
            )
        )?;
    }
    if !report.only_ref.is_empty() {
        writeln!(
            out,
            "{}",
            paint(
                &format!(
                    "Only in ref ({}): {}",
                    report.only_ref.len(),
                    view::name_list(&report.only_ref, "")
                ),
                YELLOW,
                c
            )
        )?;
    }

    for op in report.ops.iter().filter(|o| o.status == Status::Unreadable) {
        let why = op.reason.as_deref().unwrap_or("unreadable");
        writeln!(
            out,
            "{}",
            paint(&format!("Unreadable: {}: {why}", op.name), YELLOW, c)
        )?;
    }

    let code = if report.has_divergence() {
        BOLD_RED
    } else {
        BOLD_GREEN
    };
    writeln!(
        out,
        "{}",
        paint(&format!("Summary: {}", view::summary_line(report)), code, c)
    )?;
    Ok(())
}

fn count(x: Option<u64>) -> String {
    x.map_or_else(|| "-".to_string(), |n| n.to_string())
}
