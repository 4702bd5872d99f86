//! Renderers of an inspect [`Report`]: a compact terminal table (comfy-table), the same content
//! as GitHub-flavoured Markdown (for CI step summaries), and JSON.
//!
//! All write to any `io::Write`, so tests render into a `Vec<u8>`. The caller decides about
//! colour ([`TableOptions::color`], only on a terminal) and width; without a width the table
//! is not wrapped, which keeps piped output and snapshots stable.

use std::io::{self, Write};

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{Attribute, Cell, CellAlignment, Color, ContentArrangement, Table};

use crate::checks::fmt_num;
use crate::report::{FindingKind, NormStat, Report, Severity, TensorReport};

/// At most this many findings of one kind are listed in the table and Markdown; the rest are
/// one "… and N more" row per kind (the JSON lists up to
/// [`MAX_FINDINGS_PER_KIND`](crate::MAX_FINDINGS_PER_KIND) of each).
pub const MAX_SHOWN_PER_KIND: usize = 20;

/// Most rows of the tensor table (table and Markdown; JSON lists every tensor). A checkpoint
/// of 600,000 one-element tensors made a 51 MB table and 1.9 GB of memory (found by a
/// bad-input hunt); the largest real checkpoints have tens of thousands of tensors, of which a
/// terminal or a CI summary shows nothing more by listing them all.
pub const MAX_TENSOR_ROWS: usize = 10_000;

/// How to render the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// ANSI colours (severities, flagged values). Only when writing to a terminal.
    pub color: bool,
    /// List every tensor, not only the flagged ones.
    pub all: bool,
    /// Wrap tables to this many columns; `None` = do not wrap.
    pub width: Option<u16>,
}

/// Writes the report as pretty-printed JSON (the [`Report`] struct, field for field) and a
/// trailing newline.
pub fn render_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

/// Terminal table or Markdown: the one switch between the two renderers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Terminal,
    Markdown,
}

fn new_table(opts: &TableOptions, mode: Mode) -> Table {
    let mut t = Table::new();
    if mode == Mode::Markdown {
        t.load_style(ASCII_MARKDOWN);
        t.set_content_arrangement(ContentArrangement::Disabled);
        t.force_no_tty();
        return t;
    }
    t.load_style(UTF8_FULL_CONDENSED);
    match opts.width {
        Some(w) => {
            t.set_content_arrangement(ContentArrangement::Dynamic);
            t.set_width(w);
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    if opts.color {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    t
}

fn colored(text: String, color: Option<Color>, opts: &TableOptions) -> Cell {
    let cell = Cell::new(text);
    match (opts.color, color) {
        (true, Some(c)) => cell.fg(c),
        _ => cell,
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), fmt_num)
}

fn right(cell: Cell) -> Cell {
    cell.set_alignment(CellAlignment::Right)
}

fn severity_color(s: Severity) -> Color {
    match s {
        Severity::Error => Color::Red,
        Severity::Warning => Color::Yellow,
        Severity::Info => Color::Cyan,
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn header_lines(report: &Report) -> Vec<String> {
    let mut lines = vec![format!("checkpoint: {}", report.path)];
    if let Some(c) = &report.config {
        let mut parts = vec![c
            .model_type
            .clone()
            .unwrap_or_else(|| "unknown model_type".to_string())];
        let mut field = |label: &str, v: Option<usize>| {
            if let Some(v) = v {
                parts.push(format!("{label} {v}"));
            }
        };
        field("layers", c.num_hidden_layers);
        field("hidden", c.hidden_size);
        field("heads", c.num_attention_heads);
        field("kv heads", c.num_key_value_heads);
        field("head_dim", c.head_dim);
        field("intermediate", c.intermediate_size);
        field("vocab", c.vocab_size);
        // What the model has, where its family decides whatever config.json says (a held-out
        // check: a qwen2 header read "attention_bias false" above an error for its missing
        // k_proj bias).
        parts.push(match c.model_type.as_deref() {
            Some("qwen2") => "q/k/v biases (qwen2's, whatever attention_bias says)".to_string(),
            Some("mistral") => {
                "no attention biases (mistral's, whatever attention_bias says)".to_string()
            }
            _ => format!("attention_bias {}", c.attention_bias),
        });
        parts.push(match c.tie_word_embeddings {
            Some(tie) => format!("tie_word_embeddings {tie}"),
            None => "tie_word_embeddings unknown".to_string(),
        });
        lines.push(format!("config: {}", parts.join(", ")));
    }
    let s = &report.summary;
    lines.push(format!(
        "files: {} ({}, {}, {} parameters, {})",
        report.files.join(", "),
        plural(s.files, "file"),
        plural(s.tensors, "tensor"),
        s.parameters,
        human_bytes(s.bytes)
    ));
    lines
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Writes the compact table: header, findings, norm gains per layer, tensor statistics
/// (flagged tensors only unless `opts.all`), and a one-line verdict.
pub fn render_table(report: &Report, opts: &TableOptions, out: &mut dyn Write) -> io::Result<()> {
    render(report, opts, Mode::Terminal, out)
}

/// Writes the same report as GitHub-flavoured Markdown (e.g. to `$GITHUB_STEP_SUMMARY`): a
/// heading with the verdict, then the sections of [`render_table`] as paragraphs and pipe
/// tables. `all` lists every tensor; colour and width do not apply.
pub fn render_markdown(report: &Report, all: bool, out: &mut dyn Write) -> io::Result<()> {
    let opts = TableOptions {
        color: false,
        all,
        width: None,
    };
    let verdict = if report.flagged() { "FLAGGED" } else { "clean" };
    writeln!(out, "### divergence inspect: {verdict}\n")?;
    render(report, &opts, Mode::Markdown, out)
}

/// Text from the checkpoint (tensor names, config strings, the path) made safe to print: control
/// characters escaped in both modes, as `diff` does (a checkpoint is untrusted: a tensor named
/// `\x1b]0;...\x07` set the terminal's title, a newline split a table row; found by a bad-input
/// hunt); in Markdown also every character that could start markup
/// ([`divergence_names::shown::markdown_text`]: `|` would end a cell, `*` and `` ` `` start
/// emphasis or code, `[` a link or an image, `<` HTML, a bare URL a link).
fn esc(text: &str, mode: Mode) -> String {
    let text = divergence_names::one_line(text);
    match mode {
        Mode::Terminal => text.into_owned(),
        Mode::Markdown => divergence_names::shown::markdown_text(&text, true),
    }
}

/// One section of an inspect report.
#[derive(Clone, Copy)]
enum Section {
    /// Checkpoint path, config summary, files.
    Header,
    /// The findings table (or "none").
    Findings,
    /// Norm gains per layer.
    NormGains,
    /// Tensor statistics (flagged tensors, or all).
    Tensors,
    /// The one-line result.
    Verdict,
}

/// The order of the sections, in both modes.
const SECTIONS: [Section; 5] = [
    Section::Header,
    Section::Findings,
    Section::NormGains,
    Section::Tensors,
    Section::Verdict,
];

fn render(report: &Report, opts: &TableOptions, mode: Mode, out: &mut dyn Write) -> io::Result<()> {
    let mut w = Sections {
        report,
        opts,
        mode,
        out,
    };
    for section in SECTIONS {
        match section {
            Section::Header => w.header()?,
            Section::Findings => w.findings()?,
            Section::NormGains => w.norm_gains()?,
            Section::Tensors => w.tensors()?,
            Section::Verdict => w.verdict()?,
        }
    }
    Ok(())
}

/// Writes the sections of one report in one mode.
struct Sections<'a> {
    report: &'a Report,
    opts: &'a TableOptions,
    mode: Mode,
    out: &'a mut dyn Write,
}

impl Sections<'_> {
    fn md(&self) -> bool {
        self.mode == Mode::Markdown
    }

    /// A text cell, escaped for the mode.
    fn cell(&self, text: &str) -> Cell {
        Cell::new(esc(text, self.mode))
    }

    /// A section's title line; in Markdown followed by the blank line a table needs.
    fn title(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "{text}")?;
        if self.md() {
            writeln!(self.out)?;
        }
        Ok(())
    }

    /// The header lines: as they are on a terminal; in Markdown, escaped and ended by a hard
    /// line break (two spaces) so they stay one block. The blank line before each section
    /// below separates the blocks.
    fn header(&mut self) -> io::Result<()> {
        let header = header_lines(self.report);
        for (i, line) in header.iter().enumerate() {
            match self.mode {
                Mode::Terminal => writeln!(self.out, "{}", esc(line, self.mode))?,
                Mode::Markdown if i + 1 < header.len() => {
                    writeln!(self.out, "{}  ", esc(line, self.mode))?
                }
                Mode::Markdown => writeln!(self.out, "{}", esc(line, self.mode))?,
            }
        }
        Ok(())
    }

    fn findings(&mut self) -> io::Result<()> {
        let (report, opts) = (self.report, self.opts);
        let s = &report.summary;
        writeln!(self.out)?;
        if report.findings.is_empty() {
            return writeln!(self.out, "findings: none");
        }
        self.title(&format!(
            "findings: {}, {}, {}",
            plural(s.errors, "error"),
            plural(s.warnings, "warning"),
            plural(s.infos, "info")
        ))?;
        let mut t = new_table(opts, self.mode);
        t.set_header(vec!["severity", "tensor", "message"]);
        let mut shown: Vec<(FindingKind, usize)> = Vec::new();
        for f in &report.findings {
            let i = match shown.iter().position(|(k, _)| *k == f.kind) {
                Some(i) => i,
                None => {
                    shown.push((f.kind, 0));
                    shown.len() - 1
                }
            };
            shown[i].1 += 1;
            if shown[i].1 > MAX_SHOWN_PER_KIND {
                continue;
            }
            t.add_row(vec![
                colored(
                    f.severity.name().to_string(),
                    Some(severity_color(f.severity)),
                    opts,
                ),
                self.cell(f.tensor.as_deref().unwrap_or("-")),
                self.cell(&f.message),
            ]);
        }
        for (kind, _) in shown {
            let more = report
                .finding_count(kind)
                .saturating_sub(MAX_SHOWN_PER_KIND);
            if more > 0 {
                t.add_row(vec![
                    self.cell("…"),
                    self.cell("-"),
                    self.cell(&format!(
                        "… and {more} more {} findings (the JSON output lists up to {} per kind)",
                        kind.name(),
                        crate::MAX_FINDINGS_PER_KIND
                    )),
                ]);
            }
        }
        writeln!(self.out, "{t}")
    }

    fn norm_gains(&mut self) -> io::Result<()> {
        let (report, opts, mode) = (self.report, self.opts, self.mode);
        if report.layers.is_empty() {
            return Ok(());
        }
        writeln!(self.out)?;
        let threshold = report.thresholds.norm_gain;
        let title = format!(
            "norm gains per layer: max |w| (std); * = gain above {}: an error before that norm can come out up to that many times larger",
            fmt_num(threshold)
        );
        self.title(&esc(&title, mode))?;
        let mut t = new_table(opts, mode);
        t.set_header(vec![
            "layer",
            "input_layernorm",
            "post_attention_layernorm",
            "q_norm",
            "k_norm",
        ]);
        let gain_cell = |n: Option<NormStat>, highlight: bool| -> Cell {
            let Some(n) = n else {
                return right(Cell::new("-"));
            };
            let high = highlight && n.max_abs > threshold;
            let text = format!(
                "{} ({}){}",
                fmt_num(n.max_abs),
                fmt_num(n.std),
                if high { " *" } else { "" }
            );
            let cell = right(colored(esc(&text, mode), high.then_some(Color::Red), opts));
            if high && opts.color {
                cell.add_attribute(Attribute::Bold)
            } else {
                cell
            }
        };
        for l in &report.layers {
            t.add_row(vec![
                right(Cell::new(l.layer)),
                gain_cell(l.input_layernorm, false),
                gain_cell(l.post_attention_layernorm, false),
                gain_cell(l.q_norm, true),
                gain_cell(l.k_norm, true),
            ]);
        }
        writeln!(self.out, "{t}")
    }

    fn tensors(&mut self) -> io::Result<()> {
        let (report, opts) = (self.report, self.opts);
        let s = &report.summary;
        writeln!(self.out)?;
        let rows: Vec<&TensorReport> = report
            .tensors
            .iter()
            .filter(|t| opts.all || t.flagged)
            .collect();
        if rows.is_empty() {
            return writeln!(
                self.out,
                "tensors: none flagged ({}; --all to list them)",
                plural(s.tensors, "tensor")
            );
        }
        if opts.all {
            self.title(&format!("tensors: all {}", s.tensors))?;
        } else {
            self.title(&format!(
                "tensors: {} of {} flagged (--all to list every tensor)",
                s.flagged_tensors, s.tensors
            ))?;
        }
        let mut t = new_table(opts, self.mode);
        t.set_header(vec![
            "tensor", "dtype", "shape", "min", "max", "mean", "std", "nan", "inf",
        ]);
        let left_out = rows.len().saturating_sub(MAX_TENSOR_ROWS);
        for r in rows.into_iter().take(MAX_TENSOR_ROWS) {
            t.add_row(self.tensor_row(r));
        }
        writeln!(self.out, "{t}")?;
        if left_out > 0 {
            writeln!(
                self.out,
                "... and {left_out} more (the first {MAX_TENSOR_ROWS} are shown; --format json lists every tensor)"
            )?;
        }
        Ok(())
    }

    /// One row of the tensor statistics table.
    fn tensor_row(&self, r: &TensorReport) -> Vec<Cell> {
        let (opts, mode) = (self.opts, self.mode);
        let shape = format!("{:?}", r.shape);
        let name_cell = colored(esc(&r.name, mode), r.flagged.then_some(Color::Red), opts);
        let Some(st) = &r.stats else {
            let mut v = vec![name_cell, self.cell(&r.dtype), self.cell(&shape)];
            v.extend((0..6).map(|_| right(Cell::new("-"))));
            return v;
        };
        let extreme = st
            .max_abs
            .is_some_and(|m| m > self.report.thresholds.max_abs);
        let bad = |b: bool| b.then_some(Color::Red);
        vec![
            name_cell,
            self.cell(&r.dtype),
            self.cell(&shape),
            right(colored(num(st.min), bad(extreme), opts)),
            right(colored(num(st.max), bad(extreme), opts)),
            right(Cell::new(num(st.mean))),
            right(Cell::new(num(st.std))),
            right(colored(st.nan.to_string(), bad(st.nan > 0), opts)),
            right(colored(
                (st.pos_inf + st.neg_inf).to_string(),
                bad(st.pos_inf + st.neg_inf > 0),
                opts,
            )),
        ]
    }

    fn verdict(&mut self) -> io::Result<()> {
        let report = self.report;
        let s = &report.summary;
        writeln!(self.out)?;
        let verdict = if report.flagged() { "FLAGGED" } else { "clean" };
        let verdict = if self.md() {
            format!("**{verdict}**")
        } else if self.opts.color {
            let code = if report.flagged() { "31;1" } else { "32;1" };
            format!("\x1b[{code}m{verdict}\x1b[0m")
        } else {
            verdict.to_string()
        };
        writeln!(
            self.out,
            "result: {verdict}: {}, {}, {}; {} of {} tensors flagged",
            plural(s.errors, "error"),
            plural(s.warnings, "warning"),
            plural(s.infos, "info"),
            s.flagged_tensors,
            s.tensors
        )
    }
}
