//! The Markdown view for CI step summaries (GitHub-flavoured tables).
//!
//! The sections of [`crate::sections::SECTIONS`]: the input_ids warning first when flagged, a
//! headline (✅ / ❌) with a short facts list (which carries the first divergence's facts), the ops
//! table (compact like the table view), per-layer lines in a collapsed block, the amplification
//! section, the names not compared and the summary line.

use std::io::{self, Write};

use divergence_diff::Report;

use crate::options::TableOptions;
use crate::sections::Sections;
use crate::view::{self, cos, num, OpsColumn};

/// Escapes a code span for a table cell (GFM reads `\|` as `|` inside code in a table).
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// A name as a code span, shown as it is whatever it holds
/// ([`divergence_names::shown::markdown_code`]). In a table cell, wrap it in [`cell`].
fn code(name: &str) -> String {
    divergence_names::shown::markdown_code(name)
}

/// Free text that may hold names (warnings, reasons, hints, dtypes from metadata), its
/// Markdown markup escaped ([`divergence_names::shown::markdown_text`]): a name cannot become
/// an image, HTML, emphasis or a URL link (found by a bad-input hunt: a probe named
/// `x.![px](https://evil.example/p.png)` rendered as an image in the step summary).
fn text(s: &str) -> String {
    divergence_names::shown::markdown_text(s, false)
}

pub(crate) fn render(report: &Report, opts: &TableOptions, out: &mut dyn Write) -> io::Result<()> {
    Markdown { report, opts, out }.write_all()
}

struct Markdown<'a> {
    report: &'a Report,
    opts: &'a TableOptions,
    out: &'a mut dyn Write,
}

impl Markdown<'_> {
    /// One row of the ops table (row `i` built alone, [`divergence_diff::Rows::row`]).
    fn ops_row(&mut self, sel: &view::Selection, i: usize, is_first: bool) -> io::Result<()> {
        let op = self.report.ops.row(i).op();
        let op = &*op;
        let measure = divergence_diff::Measure::of(&self.report.tolerance);
        let mut line = String::from("|");
        for &col in &sel.columns {
            let text = match col {
                OpsColumn::Mark => if is_first { "➡️" } else { "" }.to_string(),
                // A `|` in a name would split the table cell: escape it (GFM allows `\|` in code).
                OpsColumn::Name if is_first => format!("**{}**", cell(&code(&sel.name(op)))),
                OpsColumn::Name => cell(&code(&sel.name(op))),
                OpsColumn::Shape => cell(&col.text(i, op, is_first, measure)),
                // A dtype is the metadata's word: user text.
                OpsColumn::Dtype => divergence_names::shown::markdown_text(
                    &col.text(i, op, is_first, measure),
                    true,
                ),
                _ => col.text(i, op, is_first, measure),
            };
            line.push_str(&format!(" {text} |"));
        }
        writeln!(self.out, "{line}")
    }
}

impl Sections for Markdown<'_> {
    fn input_ids_alert(&mut self) -> io::Result<()> {
        if let Some(w) = view::input_ids_warning(self.report) {
            writeln!(self.out, "> [!CAUTION]")?;
            writeln!(self.out, "> **{}**", text(w))?;
            writeln!(self.out)?;
        }
        Ok(())
    }

    /// The verdict headline, then the facts list (with the first divergence's) and warnings.
    fn header(&mut self) -> io::Result<()> {
        let (report, out) = (self.report, &mut *self.out);
        match &report.first_divergence {
            Some(f) => {
                let layer = f.layer.map_or_else(String::new, |l| format!(", layer {l}"));
                let step =
                    view::step_text(report, f.step).map_or_else(String::new, |s| format!(", {s}"));
                writeln!(
                    out,
                    "## ❌ First divergence at {} (#{}{layer}{step})",
                    code(&f.name),
                    f.index
                )?;
            }
            None => match view::nothing_compared(report) {
                Some(t) => writeln!(out, "## ⚠️ {}", text(&t))?,
                None => writeln!(
                    out,
                    "## ✅ No divergence ({} ops compared{}{})",
                    report.summary.compared,
                    // With --truth, what judged them, as the table and the page say (a
                    // bad-input hunt: the ops read as noise went unsaid here).
                    match report.tolerance {
                        divergence_diff::Tolerance::Truth { .. } =>
                            format!(": {}", text(&view::clean_text(report))),
                        _ => String::new(),
                    },
                    view::uncompared_text(report)
                        .map(|t| format!("; {t}"))
                        .unwrap_or_default()
                )?,
            },
        }
        writeln!(out)?;
        match &report.sides {
            None => {
                writeln!(out, "- **ours:** {}", code(&report.ours))?;
                writeln!(out, "- **ref:** {}", code(&report.reference))?;
            }
            Some(sides) => {
                let lines = [
                    (&sides.ours, &report.ours, "ours"),
                    (&sides.reference, &report.reference, "ref"),
                ];
                for (what, path, role) in lines {
                    writeln!(out, "- **{}:** {} ({role} below)", text(what), code(path))?;
                }
            }
        }
        writeln!(
            out,
            "- **tolerance:** {}",
            view::tolerance_text(&report.tolerance)
        )?;
        if let Some(judged) = view::judged_text(report) {
            writeln!(out, "- **judged:** {}", text(&judged))?;
        }
        writeln!(
            out,
            "- **differs:** {}",
            text(&view::first_difference_text(report))
        )?;
        if let Some(tokens) = view::tokens_text(report) {
            writeln!(out, "- **tokens:** {}", text(&tokens))?;
        }
        writeln!(out, "- **order:** {}", report.order_source.describe())?;
        let op = report.first_divergence_op();
        if let (Some(f), Some(op)) = (&report.first_divergence, op.as_deref()) {
            writeln!(out, "- **reason:** {}", text(&f.reason))?;
            if let Some(t) = &op.mapped {
                writeln!(out, "- **mapped:** {}", text(t))?;
            }
            if let Some(t) = view::origin_text(report) {
                writeln!(out, "- **origin:** {}", text(&t))?;
            }
            for t in view::hint_lines(report) {
                writeln!(out, "- **hint:** {}", text(&t))?;
            }
            if let Some(t) = view::positions_text(report) {
                writeln!(out, "- **positions:** {}", text(&t))?;
            }
            writeln!(
                out,
                "- **‖ours‖** {} · **‖ref‖** {} · **max abs err** {}{} · **rel L2 err** {} · **cosine** {} · **outside tol** {}",
                num(op.rule.ours_l2),
                num(op.rule.ref_l2),
                num(op.errors.max_abs_err),
                op.errors.max_abs_err_index.as_ref().map_or_else(String::new, |ix| format!(" at `{ix:?}`")),
                num(op.errors.rel_l2_err),
                cos(op.errors.cosine),
                text(&view::outside_tol_text(op))
            )?;
            writeln!(
                out,
                "- **judged by:** {}",
                text(&view::op_judged_text(report, op))
            )?;
            if let Some(t) = view::truth_line(op) {
                writeln!(out, "- **vs truth:** {}", text(&t))?;
            }
        }
        for w in view::other_warnings(report) {
            writeln!(out)?;
            writeln!(out, "> ⚠️ {}", text(w))?;
        }
        for n in &report.notes {
            writeln!(out)?;
            writeln!(out, "> {}", text(n))?;
        }
        if let Some(note) = view::preset_note(report) {
            writeln!(out)?;
            writeln!(out, "> ℹ️ {}", text(note))?;
        }
        writeln!(out)
    }

    /// Part of the Markdown header (the headline is the verdict).
    fn first_divergence(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn ops(&mut self) -> io::Result<()> {
        let Some(sel) = view::select_ops(self.report, self.opts) else {
            return Ok(());
        };
        writeln!(self.out, "### {}", text(&sel.title))?;
        writeln!(self.out)?;
        if sel.indices.is_empty() {
            writeln!(self.out, "(none)")?;
        } else {
            let columns = &sel.columns;
            let mut header = String::from("|");
            for &col in columns {
                match col.markdown_label() {
                    "" => header.push_str(" |"),
                    label => header.push_str(&format!(" {label} |")),
                }
            }
            writeln!(self.out, "{header}")?;
            let align: Vec<&str> = columns
                .iter()
                .map(|c| if c.right_aligned() { "--:" } else { "---" })
                .collect();
            writeln!(self.out, "|{}|", align.join("|"))?;
            let first = self.report.first_divergence.as_ref().map(|f| f.index);
            for &i in &sel.indices {
                self.ops_row(&sel, i, first == Some(i))?;
            }
        }
        writeln!(self.out)
    }

    fn per_step(&mut self) -> io::Result<()> {
        let (lines, hidden) = view::step_lines(self.report, self.opts);
        if lines.is_empty() {
            return Ok(());
        }
        let out = &mut *self.out;
        writeln!(out, "### Per step (0 = prefill)")?;
        writeln!(out)?;
        // The top-1 column where the steps' logits were compared: which steps flipped.
        let tokens = view::has_step_tokens(self.report);
        let (top1_head, top1_rule) = if tokens {
            (" top-1 |", "--:|")
        } else {
            ("", "")
        };
        writeln!(
            out,
            "| step | compared | diverged | missing |{top1_head} worst rel err | in op | first diverging op |"
        )?;
        writeln!(out, "|--:|--:|--:|--:|{top1_rule}--:|---|---|")?;
        for l in &lines {
            let top1 = if tokens {
                format!(" {} |", view::step_top1(self.report, l.step))
            } else {
                String::new()
            };
            writeln!(
                out,
                "| {} | {} | {} | {} |{top1} {} | {} | {} |",
                l.step,
                l.compared,
                l.diverged,
                l.missing,
                num(l.worst_rel_err),
                view::worst_in(l.worst_rel_err, l.worst_op.as_deref())
                    .map_or_else(|| "-".to_string(), |n| cell(&code(n))),
                l.first_divergence
                    .as_deref()
                    .map_or_else(|| "-".to_string(), |n| cell(&code(n))),
            )?;
        }
        if let Some(hidden) = hidden {
            writeln!(out)?;
            writeln!(out, "{hidden} (`--all` lists every step).")?;
        }
        writeln!(out)
    }

    fn per_layer(&mut self) -> io::Result<()> {
        let (lines, hidden, total) = view::shown_layer_lines(self.report);
        if lines.is_empty() {
            return Ok(());
        }
        let count = match hidden {
            Some(_) => format!("{} of {total}", lines.len()),
            None => lines.len().to_string(),
        };
        let noun = if total == 1 { "layer" } else { "layers" };
        let out = &mut *self.out;
        writeln!(
            out,
            "<details><summary>Per layer ({count} {noun})</summary>"
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
                view::worst_in(l.worst_rel, l.worst_op.as_deref())
                    .map_or_else(|| "-".to_string(), |n| cell(&code(n))),
                l.first_bad
                    .as_deref()
                    .map_or_else(|| "-".to_string(), |n| cell(&code(n))),
            )?;
        }
        if let Some(hidden) = hidden {
            writeln!(out)?;
            writeln!(out, "{hidden} (the JSON report has every op).")?;
        }
        writeln!(out)?;
        writeln!(out, "</details>")?;
        writeln!(out)
    }

    fn amplification(&mut self) -> io::Result<()> {
        let amp = &self.report.amplification;
        let out = &mut *self.out;
        writeln!(out, "### Amplification through q_norm / k_norm")?;
        writeln!(out)?;
        if amp.rows.is_empty() {
            let mut chars = view::NO_PAIRS.chars();
            let first = chars.next().map(|c| c.to_uppercase().to_string());
            writeln!(out, "{}{}.", first.unwrap_or_default(), chars.as_str())?;
            return writeln!(out);
        }
        writeln!(
            out,
            "Amplified where norm rel err / proj rel err > {} and the proj error is above noise: {} (introduced: proj error at noise level).",
            amp.threshold,
            view::amplification_counts(self.report, self.opts)
        )?;
        writeln!(out)?;
        let shown = view::amplification_rows(self.report, self.opts);
        if shown.is_empty() {
            let text = view::no_amplification_row(self.report, self.opts);
            let mut chars = text.chars();
            let first = chars.next().map(|c| c.to_uppercase().to_string());
            writeln!(out, "{}{}.", first.unwrap_or_default(), chars.as_str())?;
        } else {
            let gain = view::shows_weight_gain(&shown);
            if let Some(scope) = view::amplification_scope(self.report, self.opts) {
                writeln!(out, "Listed: {scope}.")?;
                writeln!(out)?;
            }
            let (head, rule) = match gain {
                true => (" weight gain |", "--:|"),
                false => ("", ""),
            };
            writeln!(
                out,
                "| verdict | layer | q/k | proj rel err | norm rel err | ratio | abs err gain |{head}"
            )?;
            writeln!(out, "|---|--:|---|--:|--:|--:|--:|{rule}")?;
            for r in shown {
                let weight = match gain {
                    true => format!(" {} |", num(r.weight_gain)),
                    false => String::new(),
                };
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |{weight}",
                    match r.verdict {
                        Some(divergence_diff::AmpVerdict::Amplified) => "⚠️ amplified",
                        Some(divergence_diff::AmpVerdict::Introduced) => "introduced",
                        None => "",
                    },
                    view::amp_layer(r),
                    r.kind,
                    num(r.proj_rel_err),
                    num(r.norm_rel_err),
                    num(r.ratio),
                    num(r.abs_err_gain),
                )?;
            }
        }
        writeln!(out)
    }

    fn not_compared(&mut self) -> io::Result<()> {
        let (report, out) = (self.report, &mut *self.out);
        for (label, names) in [("ours", &report.only_ours), ("ref", &report.only_ref)] {
            if !names.is_empty() {
                writeln!(
                    out,
                    "**Only in {label} ({}):** {}",
                    names.len(),
                    view::name_list(names, code)
                )?;
                writeln!(out)?;
            }
        }
        for row in view::unreadable_ops(report) {
            let why = row.reason();
            let why = why.as_deref().unwrap_or("unreadable");
            writeln!(out, "**Unreadable:** {}: {}", code(&row.name()), text(why))?;
            writeln!(out)?;
        }
        Ok(())
    }

    fn summary(&mut self) -> io::Result<()> {
        writeln!(
            self.out,
            "**Summary:** {}",
            text(&view::summary_line(self.report))
        )
    }
}
