//! The Markdown view for CI step summaries (GitHub-flavoured tables).
//!
//! A headline (✅ / ❌), the input_ids warning first when flagged, a short facts list, the ops table
//! (compact like the table view), per-layer lines in a collapsed block, the amplification section,
//! the one-side names and the summary line.

use std::io::{self, Write};

use divergence_diff::{QkKind, Report, Status};

use crate::view::{self, cos, num, pct};
use crate::TableOptions;

/// Escapes text for a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'"))
}

pub(crate) fn render(report: &Report, opts: &TableOptions, out: &mut dyn Write) -> io::Result<()> {
    if let Some(w) = view::input_ids_warning(report) {
        writeln!(out, "> [!CAUTION]")?;
        writeln!(out, "> **{}**", cell(w))?;
        writeln!(out)?;
    }
    match &report.first_divergence {
        Some(f) => {
            let layer = f.layer.map_or_else(String::new, |l| format!(", layer {l}"));
            writeln!(
                out,
                "## ❌ First divergence at {} (#{}{layer})",
                code(&f.name),
                f.index
            )?;
        }
        None => writeln!(
            out,
            "## ✅ No divergence ({} ops compared)",
            report.summary.compared
        )?,
    }
    writeln!(out)?;
    writeln!(out, "- **ours:** {}", code(&report.ours))?;
    writeln!(out, "- **ref:** {}", code(&report.reference))?;
    writeln!(
        out,
        "- **tolerance:** {}",
        view::tolerance_text(&report.tolerance)
    )?;
    writeln!(out, "- **order:** {}", report.order_source.describe())?;
    if let (Some(f), Some(op)) = (&report.first_divergence, report.first_divergence_op()) {
        writeln!(out, "- **reason:** {}", f.reason)?;
        writeln!(
            out,
            "- **‖ours‖** {} · **‖ref‖** {} · **max abs err** {}{} · **rel L2 err** {} · **cosine** {}",
            num(op.ours_l2),
            num(op.ref_l2),
            num(op.max_abs_err),
            op.max_abs_err_index.as_ref().map_or_else(String::new, |ix| format!(" at `{ix:?}`")),
            num(op.rel_l2_err),
            cos(op.cosine)
        )?;
    }
    for w in view::other_warnings(report) {
        writeln!(out)?;
        writeln!(out, "> ⚠️ {}", w)?;
    }
    writeln!(out)?;

    if let Some(sel) = view::select_ops(report, opts) {
        writeln!(out, "### {}", sel.title)?;
        writeln!(out)?;
        if sel.indices.is_empty() {
            writeln!(out, "(none)")?;
        } else {
            writeln!(
                out,
                "| | # | op | status | shape | dtype | ‖ours‖ | ‖ref‖ | max abs err | rel err | cosine | out tol |"
            )?;
            writeln!(out, "|---|--:|---|---|---|---|--:|--:|--:|--:|--:|--:|")?;
            let first = report.first_divergence.as_ref().map(|f| f.index);
            for &i in &sel.indices {
                let op = &report.ops[i];
                let is_first = first == Some(i);
                // A `|` in a name would split the table cell: escape it (GFM allows `\|` in code).
                let name = if is_first {
                    format!("**{}**", cell(&code(&op.name)))
                } else {
                    cell(&code(&op.name))
                };
                writeln!(
                    out,
                    "| {} | {i} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    if is_first { "➡️" } else { "" },
                    op.status,
                    cell(&view::shape_cell(op)),
                    cell(&view::dtype_cell(op)),
                    num(op.ours_l2),
                    num(op.ref_l2),
                    num(op.max_abs_err),
                    num(op.rel_l2_err),
                    cos(op.cosine),
                    pct(op.frac_outside_tol),
                )?;
            }
        }
        writeln!(out)?;
    }

    let lines = view::layer_lines(report);
    if !lines.is_empty() {
        writeln!(
            out,
            "<details><summary>Per layer ({} layers)</summary>",
            lines.len()
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| layer | ops | status | diverged | worst rel err | in op | first diverging op |"
        )?;
        writeln!(out, "|--:|--:|---|--:|--:|---|---|")?;
        for l in &lines {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                l.layer,
                l.ops,
                l.status,
                l.diverged,
                num(l.worst_rel),
                l.worst_op.as_deref().map_or_else(|| "-".to_string(), code),
                l.first_bad.as_deref().map_or_else(|| "-".to_string(), code),
            )?;
        }
        writeln!(out)?;
        writeln!(out, "</details>")?;
        writeln!(out)?;
    }

    let amp = &report.amplification;
    writeln!(out, "### Amplification through q_norm / k_norm")?;
    writeln!(out)?;
    writeln!(
        out,
        "Marked when norm rel err / proj rel err > {}: **{} marked**.",
        amp.threshold, amp.marked
    )?;
    writeln!(out)?;
    let filter = view::Filter::new(opts);
    let rows: Vec<_> = amp
        .rows
        .iter()
        .filter(|r| filter.layer_ok(r.layer) && (opts.all || r.kind == QkKind::K || r.marked))
        .collect();
    if amp.rows.is_empty() {
        writeln!(out, "No q/k proj + norm pairs in the dumps.")?;
    } else {
        writeln!(
            out,
            "| | layer | q/k | proj rel err | norm rel err | ratio | abs err gain | weight gain |"
        )?;
        writeln!(out, "|---|--:|---|--:|--:|--:|--:|--:|")?;
        for r in rows {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                if r.marked { "⚠️ amplified" } else { "" },
                r.layer,
                r.kind,
                num(r.proj_rel_err),
                num(r.norm_rel_err),
                num(r.ratio),
                num(r.abs_err_gain),
                num(r.weight_gain),
            )?;
        }
    }
    writeln!(out)?;

    if !report.only_ours.is_empty() {
        writeln!(
            out,
            "**Only in ours ({}):** {}",
            report.only_ours.len(),
            view::name_list(&report.only_ours, "`")
        )?;
        writeln!(out)?;
    }
    if !report.only_ref.is_empty() {
        writeln!(
            out,
            "**Only in ref ({}):** {}",
            report.only_ref.len(),
            view::name_list(&report.only_ref, "`")
        )?;
        writeln!(out)?;
    }
    for op in report.ops.iter().filter(|o| o.status == Status::Unreadable) {
        let why = op.reason.as_deref().unwrap_or("unreadable");
        writeln!(out, "**Unreadable:** {}: {}", code(&op.name), why)?;
        writeln!(out)?;
    }
    writeln!(out, "**Summary:** {}", view::summary_line(report))?;
    Ok(())
}
