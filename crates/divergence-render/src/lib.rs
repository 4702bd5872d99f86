//! `divergence-render`: turns a diff [`Report`] into a terminal table, JSON or Markdown.
//!
//! Renderers are separate from the work: all three consume the same [`Report`] value and write to
//! any `&mut dyn Write`, so tests render into a `Vec<u8>`. Numbers use fixed formats (`1.234e-05`,
//! cosine with 6 decimals) so output is stable enough for snapshots. Nothing here decides anything:
//! statuses, the first divergence and the amplification marks come from `divergence-diff`.

mod json;
mod markdown;
mod options;
mod sections;
mod table;
mod view;

use std::io::{self, Write};

pub use divergence_diff::Report;
pub use options::TableOptions;
pub use regex::Regex;

/// Renders the human view: header, first divergence, ops around it (or all / filtered ops),
/// per-layer lines, amplification, one-side names and a summary line.
pub fn render_table(report: &Report, opts: &TableOptions, out: &mut dyn Write) -> io::Result<()> {
    table::render(report, opts, out)
}

/// Renders the report as pretty JSON (schema `divergence-report/1`, see `docs/report-schema.md`).
pub fn render_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    json::render(report, out)
}

/// Renders GitHub-flavoured Markdown for CI step summaries.
pub fn render_markdown(
    report: &Report,
    opts: &TableOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    markdown::render(report, opts, out)
}

/// The layers (`layers.N` in a name) that have at least one op in the report, ascending: lets a
/// caller reject a [`TableOptions::layer`] the dumps do not have.
pub fn layers_present(report: &Report) -> Vec<usize> {
    view::layers_present(report)
}

/// How many ops the filters of `opts` ([`TableOptions::layer`], [`TableOptions::grep`]) select;
/// `None` when neither is set.
pub fn matching_ops(report: &Report, opts: &TableOptions) -> Option<usize> {
    let filter = view::Filter::new(opts);
    filter
        .is_active()
        .then(|| report.ops.iter().filter(|op| filter.matches(op)).count())
}
