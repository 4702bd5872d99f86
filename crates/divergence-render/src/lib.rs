//! `divergence-render`: turns a diff [`Report`] into a terminal table, JSON, Markdown or a
//! self-contained HTML page (with an SVG error-growth plot and heatmap).
//!
//! Renderers are separate from the work: all of them consume the same [`Report`] value and write to
//! any `&mut dyn Write`, so tests render into a `Vec<u8>`. Numbers use fixed formats (`1.234e-05`,
//! cosine with 6 decimals) so output is stable enough for snapshots. Nothing here decides anything:
//! statuses, the first divergence and the amplification marks come from `divergence-diff`.

mod html;
mod json;
mod markdown;
mod options;
mod plot;
mod safe;
mod sections;
mod svg;
mod table;
pub mod tui;
mod view;

use std::io::{self, Write};

pub use divergence_diff::Report;
pub use options::TableOptions;
pub use regex::Regex;

/// Renders the human view: header, first divergence, ops around it (or all / filtered ops),
/// per-layer lines, amplification, one-side names and a summary line.
pub fn render_table(report: &Report, opts: &TableOptions, out: &mut dyn Write) -> io::Result<()> {
    table::render(&safe::text_safe(report), opts, out)
}

/// Renders the report as pretty JSON (schema `divergence-report/2`, see `docs/report-schema.md`).
pub fn render_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    json::render(report, out)
}

/// Renders the HTML report: one self-contained page (inline CSS, SVG and vanilla JS, no URL)
/// with the header, the first divergence, the error-growth plot, the layers × op-kind heatmap,
/// the amplification table and every op in a sortable, filterable table. The JSON report is
/// embedded in `<script type="application/json" id="report">`, gzip+base64 in a report of
/// more than 2,000 ops or of a profile of more than 32,768 positions (docs/html-report.md).
pub fn render_html(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    html::render(report, out)
}

/// Renders the error-growth plot alone as a standalone SVG file: rel L2 error of every op in
/// execution order on a log axis, the per-op tolerance, the first divergence, q_norm / k_norm
/// ops and layer boundaries marked; ops with an error of 0 or none on their own rows.
pub fn render_growth_svg(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(plot::growth(report, true).as_bytes())
}

/// Renders GitHub-flavoured Markdown for CI step summaries.
pub fn render_markdown(
    report: &Report,
    opts: &TableOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    markdown::render(&safe::text_safe(report), opts, out)
}
