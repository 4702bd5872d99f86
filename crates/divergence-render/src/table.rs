//! The terminal view (comfy-table): compact by default, colors only when asked.
//!
//! The sections of [`crate::sections::SECTIONS`]: the input_ids warning (if any) as the very first
//! line; a header block (files, tolerance mode, order source, warnings); the first-divergence
//! summary; the ops table (context around the first divergence, or every / filtered op); one line
//! per layer; the q/k-norm amplification section; names not compared; the summary line.
//!
//! With [`TableOptions::width`] set, everything fits that width: text lines wrap between words,
//! the ops table drops columns in [`DROP_ORDER`] (then wraps the op name), and no table ever
//! wraps a number.

use std::io::{self, Write};

use comfy_table::{
    presets, Attribute, Cell, CellAlignment, Color, ColumnConstraint, ContentArrangement, Table,
    Width,
};
use divergence_diff::{AmplificationRow, Report, Status};

use crate::options::TableOptions;
use crate::sections::Sections;
#[cfg(test)]
use crate::view::OPS_COLUMNS;
use crate::view::{self, cos, count, num, OpsColumn};

const BOLD_RED: &str = "1;31";
const BOLD_GREEN: &str = "1;32";
const YELLOW: &str = "33";
const BOLD: &str = "1";

/// The ops table's columns in the order they are dropped when the table is wider than
/// [`TableOptions::width`]: the cosine, dtype, shape and norms first, the op name, mark and
/// rel err never. The columns from [`FIRST_KEPT`] on (the born / carried mark, max err, status)
/// are dropped only when the op name would otherwise get fewer than [`NAME_MIN`] characters.
/// The index, dropped so that names break less, comes back where the widest piece of a name
/// breaks without it all the same and the name still gets [`NAME_MIN`], never where a column
/// after it could ([`fit_ops_columns`]).
/// In truth mode the two errors against the truth go before the index, the noise ratio only
/// after max err.
pub(crate) const DROP_ORDER: [OpsColumn; 13] = [
    OpsColumn::Cosine,
    OpsColumn::Dtype,
    OpsColumn::Shape,
    OpsColumn::RefL2,
    OpsColumn::OursL2,
    OpsColumn::OutTol,
    OpsColumn::TruthRef,
    OpsColumn::TruthOurs,
    OpsColumn::Index,
    OpsColumn::Origin,
    OpsColumn::MaxAbsErr,
    OpsColumn::NoiseRatio,
    OpsColumn::Status,
];

/// Index in [`DROP_ORDER`] of the first column kept while the op name can wrap instead.
const FIRST_KEPT: usize = 9;

/// The narrowest the op name column gets (it wraps, between characters) before max err and
/// status are dropped.
const NAME_MIN: usize = 16;

/// The narrowest a column of the per-layer or amplification table gets when fitting a width:
/// its widest cell (numbers, statuses and op names never wrap) or the longest word of its header
/// (headers wrap between words).
fn min_width<'a>(header: &str, cells: impl Iterator<Item = &'a str>) -> usize {
    let widest = cells.map(text_cols).max().unwrap_or(0);
    let word = header.split(' ').map(text_cols).max();
    widest.max(word.unwrap_or(0))
}

/// Width of a comfy-table `UTF8_FULL_CONDENSED` table with these content widths: each column
/// has one space of padding on each side and a border after it, plus the left border.
fn table_width(content_widths: impl Iterator<Item = usize>) -> usize {
    let (sum, n) = content_widths.fold((0, 0), |(s, n), w| (s + w, n + 1));
    sum + 3 * n + 1
}

/// The columns of `all` that fit `width`, left to right (see [`DROP_ORDER`]); `widths` is
/// indexed like `all`, and may hold after them the widest piece of an op name
/// ([`name_piece`]; none: 0).
pub(crate) fn fit_ops_columns(all: &[OpsColumn], widths: &[usize], width: usize) -> Vec<OpsColumn> {
    let of = |c: OpsColumn| all.iter().position(|&k| k == c).map_or(0, |i| widths[i]);
    let total = |cols: &[OpsColumn]| table_width(cols.iter().map(|&c| of(c)));
    let name = of(OpsColumn::Name);
    let mut cols = all.to_vec();
    for (rank, drop) in DROP_ORDER.iter().enumerate() {
        if !cols.contains(drop) {
            continue;
        }
        let full = total(&cols);
        if full <= width {
            break;
        }
        if rank >= FIRST_KEPT && full - name + name.min(NAME_MIN) <= width {
            break;
        }
        cols.retain(|c| c != drop);
    }
    // The index goes so that the op names break less. Where the widest piece of a name
    // ([`break_name`] keeps it whole where it has room: `post_attention_layernorm`,
    // `widths[all.len()]`) breaks without it all the same, the index comes back if the name
    // still gets NAME_MIN, unless a column that goes after it and is gone would get the name
    // NAME_MIN too (at 60 columns under `--layer` the index went, and
    // `post_attention_layernorm` broke without it: a newcomer's check). Narrower pieces may
    // then break where they did not; a wider terminal, on which the widest piece fits without
    // the index, shows it without.
    let piece = widths.get(all.len()).copied().unwrap_or(0);
    let room = |cols: &[OpsColumn]| width.saturating_sub(total(cols) - name);
    let plus = |extra: OpsColumn| -> Vec<OpsColumn> {
        all.iter()
            .copied()
            .filter(|&c| c == extra || cols.contains(&c))
            .collect()
    };
    let fits = |cols: &[OpsColumn]| room(cols) >= name.min(NAME_MIN);
    let index_gone = all.contains(&OpsColumn::Index) && !cols.contains(&OpsColumn::Index);
    if index_gone && total(&cols) > width && room(&cols) < piece {
        let instead = DROP_ORDER[FIRST_KEPT..]
            .iter()
            .any(|&c| all.contains(&c) && !cols.contains(&c) && fits(&plus(c)));
        let with = plus(OpsColumn::Index);
        if !instead && fits(&with) {
            cols = with;
        }
    }
    cols
}

/// The widest cell of each of `all`'s columns in `texts` (a row of cells each, in `all`'s
/// order), then the widest piece of an op name ([`name_piece`]).
fn ops_widths_of(all: &[OpsColumn], texts: &[Vec<String>]) -> Vec<usize> {
    let widest = |f: &dyn Fn(&str) -> usize, k: usize| texts.iter().map(|r| f(&r[k])).max();
    let mut widths: Vec<usize> = (0..all.len())
        .map(|k| widest(&text_cols, k).unwrap_or(0))
        .collect();
    let name = all.iter().position(|&c| c == OpsColumn::Name);
    widths.push(name.and_then(|k| widest(&name_piece, k)).unwrap_or(0));
    widths
}

/// Whether a rendered table is within `width` columns with its header on one line (the line
/// after the top border is the header's rule).
fn fits_whole(rendered: &str, width: u16) -> bool {
    let lines: Vec<&str> = rendered.lines().collect();
    lines.iter().all(|l| visible_width(l) <= usize::from(width))
        && lines.get(2).is_some_and(|l| l.starts_with('╞'))
}

/// How the ops table's `all` columns of these `widths` fit `width` ([`fit_ops_columns`]): how
/// many columns stay, and whether the op name is still broken onto lines.
fn fit_layout(all: &[OpsColumn], widths: &[usize], width: usize) -> (usize, bool) {
    let kept = fit_ops_columns(all, widths, width);
    let of = |c: OpsColumn| all.iter().position(|&k| k == c).map_or(0, |i| widths[i]);
    (kept.len(), table_width(kept.iter().map(|&c| of(c))) > width)
}

/// Char ranges of `chars`, one per output line: greedy word wrap to `width` (continuation lines
/// will be indented by `hang`). A word longer than a line stays whole. Words two or more spaces
/// apart are separate fields (`rel L2 err   8.750e-01   outside tol 100.00%`): a field that
/// does not fit the rest of a line but fits a line of its own starts one, so that a label and
/// its value stay together (a check at 60 columns read `outside` / `tol 100.00%`); a longer
/// field wraps word by word.
fn wrap_ranges(chars: &[char], width: Option<usize>, hang: usize) -> Vec<(usize, usize)> {
    let Some(width) = width.filter(|&w| chars.len() > w) else {
        return vec![(0, chars.len())];
    };
    // The fields, each a list of its words' ranges.
    let mut fields: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut i = 0;
    // Spaces since the last word (the first word opens a field whatever it follows).
    let mut gap = 0usize;
    while i < chars.len() {
        if chars[i] == ' ' {
            gap = gap.saturating_add(1);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i] != ' ' {
            i += 1;
        }
        match fields.last_mut() {
            Some(field) if gap < 2 => field.push((start, i)),
            _ => fields.push(vec![(start, i)]),
        }
        gap = 0;
    }
    let mut lines = Vec::new();
    // (start, end, offset): the current line's range and the columns before `start`.
    let (mut start, mut end, mut offset) = (0, 0, 0);
    for field in fields {
        let (fs, fe) = (field[0].0, field[field.len() - 1].1);
        let fits_here = end == start || offset + (fe - start) <= width;
        if !fits_here && hang + (fe - fs) <= width {
            lines.push((start, end));
            (start, offset) = (fs, hang);
            end = fe;
            continue;
        }
        for (ws, we) in field {
            if end > start && offset + (we - start) > width {
                lines.push((start, end));
                (start, offset) = (ws, hang);
            }
            end = we;
        }
    }
    lines.push((start, end));
    lines
}

/// The widest piece of `name` that [`break_name`] keeps whole where it has room: the text
/// after each `.`, up to and with the next.
fn name_piece(name: &str) -> usize {
    name.split_inclusive('.').map(text_cols).max().unwrap_or(0)
}

/// Breaks an op name into lines of at most `room` terminal columns (a CJK character or an
/// emoji takes two), after a `.` where one fits (`model.layers.0.self_attn.` / `q_proj`), else
/// anywhere.
fn break_name(name: &str, room: usize) -> String {
    let chars: Vec<(char, usize)> = name.chars().map(|c| (c, cols(c))).collect();
    let room = room.max(2);
    let mut lines = Vec::new();
    let mut start = 0;
    loop {
        // The longest run from `start` that fits `room` (at least one character).
        let (mut end, mut used) = (start, 0);
        while end < chars.len() && (end == start || used + chars[end].1 <= room) {
            used += chars[end].1;
            end += 1;
        }
        if end == chars.len() {
            lines.push(chars[start..].iter().map(|&(c, _)| c).collect::<String>());
            break;
        }
        let end = (start + 1..=end)
            .rev()
            .find(|&e| chars[e - 1].0 == '.')
            .unwrap_or(end);
        lines.push(
            chars[start..end]
                .iter()
                .map(|&(c, _)| c)
                .collect::<String>(),
        );
        start = end;
    }
    lines.join("\n")
}

/// Terminal columns of one character (0 for controls, which are escaped before they get here).
fn cols(c: char) -> usize {
    unicode_width::UnicodeWidthChar::width(c).unwrap_or(0)
}

/// Terminal columns of a cell's text (its widest line).
fn text_cols(text: &str) -> usize {
    text.lines()
        .map(unicode_width::UnicodeWidthStr::width)
        .max()
        .unwrap_or(0)
}

/// ANSI styling for the lines outside the tables.
fn paint(text: &str, code: Option<&str>, color: bool) -> String {
    match code {
        Some(code) if color && !text.is_empty() => format!("\x1b[{code}m{text}\x1b[0m"),
        _ => text.to_string(),
    }
}

fn status_color(status: Status) -> Color {
    match status {
        Status::Ok => Color::Green,
        Status::Diverged | Status::ShapeMismatch | Status::Nonfinite | Status::NoFinite => {
            Color::Red
        }
        Status::OnlyOurs | Status::OnlyRef => Color::Yellow,
        Status::Unreadable => Color::Magenta,
    }
}

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

pub(crate) fn render(report: &Report, opts: &TableOptions, out: &mut dyn Write) -> io::Result<()> {
    Terminal { report, opts, out }.write_all()
}

struct Terminal<'a> {
    report: &'a Report,
    opts: &'a TableOptions,
    out: &'a mut dyn Write,
}

impl Terminal<'_> {
    /// Writes one line made of styled spans, wrapped to the width (continuation lines indented
    /// by `hang`); each run of one style is painted once.
    fn spans(&mut self, spans: &[(&str, Option<&str>)], hang: usize) -> io::Result<()> {
        let mut chars = Vec::new();
        let mut styles = Vec::new();
        for &(text, style) in spans {
            for ch in text.chars() {
                chars.push(ch);
                styles.push(style);
            }
        }
        let width = self.opts.width.map(usize::from);
        for (n, (start, end)) in wrap_ranges(&chars, width, hang).into_iter().enumerate() {
            let mut line = if n == 0 {
                String::new()
            } else {
                " ".repeat(hang)
            };
            let mut i = start;
            while i < end {
                let style = styles[i];
                let j = (i..end).find(|&j| styles[j] != style).unwrap_or(end);
                let run: String = chars[i..j].iter().collect();
                line.push_str(&paint(&run, style, self.opts.color));
                i = j;
            }
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }

    /// One line in one style (or none), wrapped with a hanging indent.
    fn line(&mut self, text: &str, style: Option<&str>, hang: usize) -> io::Result<()> {
        self.spans(&[(text, style)], hang)
    }

    fn blank(&mut self) -> io::Result<()> {
        writeln!(self.out)
    }

    fn table(&self) -> Table {
        let mut t = Table::new();
        t.load_style(presets::UTF8_FULL_CONDENSED);
        t.force_no_tty();
        if self.opts.color {
            t.enforce_styling();
        }
        match self.opts.width {
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

    /// A table of `rows` (each cell with its text) fitted to the width: columns are kept at
    /// least [`min_width`] wide (comfy-table wraps only headers, between words), and the
    /// columns of `drop_order` (indices) are dropped, in that order, while even the minimum
    /// widths do not fit. Then, while the table is still too wide, the op names of the
    /// `names` columns (plain cells) are broken onto several lines ([`break_name`]), the
    /// widest column first, down to [`NAME_MIN`] columns.
    fn fitted(
        &self,
        header: &[&str],
        rows: Vec<Vec<(String, Cell)>>,
        drop_order: &[usize],
        names: &[usize],
    ) -> Table {
        let mut mins: Vec<usize> = (0..header.len())
            .map(|c| min_width(header[c], rows.iter().map(|r| r[c].0.as_str())))
            .collect();
        let mut kept: Vec<usize> = (0..header.len()).collect();
        let mut broken = vec![false; header.len()];
        if let Some(w) = self.opts.width.map(usize::from) {
            for d in drop_order {
                if table_width(kept.iter().map(|&c| mins[c])) <= w {
                    break;
                }
                kept.retain(|c| c != d);
            }
            let mut total = table_width(kept.iter().map(|&c| mins[c]));
            while total > w {
                let widest = kept
                    .iter()
                    .copied()
                    .filter(|c| names.contains(c) && mins[*c] > NAME_MIN)
                    .max_by_key(|&c| mins[c]);
                let Some(c) = widest else { break };
                let cut = (total - w).min(mins[c] - NAME_MIN);
                mins[c] -= cut;
                total -= cut;
                broken[c] = true;
            }
            // A header is kept on one line where the width has room for it (a visual check:
            // `worst rel err` wrapped onto two lines while the last column had room to spare).
            for &c in &kept {
                let whole = text_cols(header[c]);
                if whole > mins[c] && total + (whole - mins[c]) <= w {
                    total += whole - mins[c];
                    mins[c] = whole;
                }
            }
        }
        let mut t = self.table();
        t.set_header(kept.iter().map(|&c| header[c]).collect::<Vec<_>>());
        for row in rows {
            let mut cells: Vec<Option<Cell>> = row
                .into_iter()
                .enumerate()
                .map(|(c, (text, cell))| {
                    Some(if broken[c] {
                        Cell::new(break_name(&text, mins[c]))
                    } else {
                        cell
                    })
                })
                .collect();
            t.add_row(
                kept.iter()
                    .filter_map(|&c| cells[c].take())
                    .collect::<Vec<_>>(),
            );
        }
        if self.opts.width.is_some() {
            for (k, &c) in kept.iter().enumerate() {
                if let (Some(col), Ok(w)) = (t.column_mut(k), u16::try_from(mins[c] + 2)) {
                    col.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(w)));
                }
            }
        }
        t
    }

    /// The cells' texts of the ops `indices`, a row each, a cell for each of `all`'s columns
    /// (each row built alone while its cells are written, [`divergence_diff::Rows::row`]).
    fn ops_texts(
        report: &Report,
        sel: &view::Selection,
        indices: &[usize],
        all: &[OpsColumn],
    ) -> Vec<Vec<String>> {
        let first = report.first_divergence.as_ref().map(|f| f.index);
        let measure = divergence_diff::Measure::of(&report.tolerance);
        // Each shown row built alone, for its cells, and dropped (a compact report's rows are
        // never built all at once).
        indices
            .iter()
            .map(|&i| {
                let op = report.ops.row(i).op();
                all.iter()
                    .map(|c| match c {
                        OpsColumn::Name => sel.name(&op).into_owned(),
                        _ => c.text(i, &op, first == Some(i), measure),
                    })
                    .collect()
            })
            .collect()
    }

    /// The widest cell of each of `all`'s columns over the ops `indices` (their labels
    /// included), in pages of [`OPS_PAGE`] rows made in parallel and dropped; then the widest
    /// piece of an op name ([`ops_widths_of`]).
    fn ops_widths(&self, sel: &view::Selection, all: &[OpsColumn]) -> Vec<usize> {
        use rayon::prelude::*;
        let mut labels: Vec<usize> = all.iter().map(|c| text_cols(c.label())).collect();
        labels.push(0);
        let report = self.report;
        sel.indices
            .par_chunks(OPS_PAGE)
            .map(|page| ops_widths_of(all, &Self::ops_texts(report, sel, page, all)))
            .reduce(
                || labels.clone(),
                |a, b| a.iter().zip(&b).map(|(x, y)| *x.max(y)).collect(),
            )
    }

    /// Before page `p` (of [`OPS_PAGE`] rows, `len` of them) of a table of `total` rows printed
    /// a page at a time, after the first: which rows it holds (`(rows 4097-8192 of 152345)`).
    fn page_label(&mut self, p: usize, len: usize, total: usize) -> io::Result<()> {
        if p == 0 {
            return Ok(());
        }
        let from = p * OPS_PAGE;
        let text = format!("  (rows {}-{} of {})", from + 1, from + len, total);
        self.line(&text, None, 2)
    }

    /// The ops table of the rows at `indices` (of `sel`'s); `shared` widths
    /// ([`Self::ops_widths`] over every page) lay out every page of one table alike, else the
    /// widths are these rows' own.
    fn ops_table(
        &self,
        sel: &view::Selection,
        indices: &[usize],
        shared: Option<&[usize]>,
    ) -> Table {
        let (report, opts) = (self.report, self.opts);
        let first = report.first_divergence.as_ref().map(|f| f.index);
        let all = &sel.columns;
        let texts = Self::ops_texts(report, sel, indices, all);
        let widths: Vec<usize> = match shared {
            Some(w) => w.to_vec(),
            None => {
                let mut w = ops_widths_of(all, &texts);
                for (w, c) in w.iter_mut().zip(all) {
                    *w = (*w).max(text_cols(c.label()));
                }
                w
            }
        };
        let cols = match opts.width {
            Some(w) => fit_ops_columns(all, &widths, usize::from(w)),
            None => all.clone(),
        };
        // The room the op name has when even the kept columns are too wide.
        let name_room = opts.width.map(usize::from).and_then(|w| {
            let of = |c: OpsColumn| all.iter().position(|&k| k == c).map_or(0, |i| widths[i]);
            let name = of(OpsColumn::Name);
            let others = table_width(cols.iter().map(|&c| of(c))) - name;
            (others + name > w).then(|| w.saturating_sub(others).max(NAME_MIN.min(name)))
        });
        let mut t = self.table();
        // The columns are chosen to fit: lay them out as they are.
        t.set_content_arrangement(ContentArrangement::Disabled);
        t.set_header(cols.iter().map(|c| c.label()).collect::<Vec<_>>());
        for (row, &i) in texts.into_iter().zip(indices) {
            let status = report.ops.row(i).status();
            let is_first = first == Some(i);
            let cells: Vec<Cell> = all
                .iter()
                .zip(row)
                .filter(|(c, _)| cols.contains(c))
                .map(|(&c, text)| {
                    let text = match name_room {
                        Some(room) if c == OpsColumn::Name => break_name(&text, room),
                        _ => text,
                    };
                    let mut cell = if c.right_aligned() {
                        right(text)
                    } else {
                        Cell::new(text)
                    };
                    if opts.color {
                        match c {
                            OpsColumn::Status => cell = cell.fg(status_color(status)),
                            OpsColumn::Mark | OpsColumn::Name if is_first => {
                                cell = cell.fg(Color::Red).add_attribute(Attribute::Bold)
                            }
                            _ => {}
                        }
                    }
                    cell
                })
                .collect();
            t.add_row(cells);
        }
        // Every page of one table as wide as the widest, column by column (pages fitted each
        // on its own shifted every column at each page: a visual check).
        if shared.is_some() {
            for (k, c) in cols.iter().enumerate() {
                let i = all.iter().position(|a| a == c).unwrap_or(0);
                let w = match name_room {
                    Some(room) if *c == OpsColumn::Name => room.min(widths[i]),
                    _ => widths[i],
                };
                if let (Some(col), Ok(w)) = (t.column_mut(k), u16::try_from(w + 2)) {
                    col.set_constraint(ColumnConstraint::Absolute(Width::Fixed(w)));
                }
            }
        }
        t
    }
}

impl Sections for Terminal<'_> {
    fn input_ids_alert(&mut self) -> io::Result<()> {
        if let Some(w) = view::input_ids_warning(self.report) {
            self.line(&format!("!!! {w} !!!"), Some(BOLD_RED), 4)?;
            self.blank()?;
        }
        Ok(())
    }

    fn header(&mut self) -> io::Result<()> {
        let report = self.report;
        self.line("divergence report", Some(BOLD), 0)?;
        for (key, value) in view::side_lines(report) {
            let key = format!("{key}:");
            self.line(&format!("  {key:<10} {value}"), None, 13)?;
        }
        let tolerance = view::tolerance_text(&report.tolerance);
        self.line(&format!("  tolerance: {tolerance}"), None, 13)?;
        if let Some(judged) = view::judged_text(report) {
            self.line(&format!("  judged:    {judged}"), None, 13)?;
        }
        let first_diff = view::first_difference_text(report);
        self.line(&format!("  differs:   {first_diff}"), None, 13)?;
        if let Some(tokens) = view::tokens_text(report) {
            self.line(&format!("  tokens:    {tokens}"), None, 13)?;
        }
        let order = report.order_source.describe();
        self.line(&format!("  order:     {order}"), None, 13)?;
        for w in view::other_warnings(report) {
            self.line(&format!("warning: {w}"), Some(YELLOW), 9)?;
        }
        for n in &report.notes {
            self.line(&format!("note: {n}"), None, 6)?;
        }
        if let Some(note) = view::preset_note(report) {
            self.line(&format!("note: {note}"), None, 6)?;
        }
        self.blank()
    }

    fn first_divergence(&mut self) -> io::Result<()> {
        let report = self.report;
        let op = report.first_divergence_op();
        let (Some(f), Some(op)) = (&report.first_divergence, op.as_deref()) else {
            if let Some(text) = view::nothing_compared(report) {
                self.line(&text, Some(BOLD_RED), 2)?;
                return self.blank();
            }
            let mut text = format!(
                "NO DIVERGENCE: all {} compared ops are {}",
                report.summary.compared,
                view::clean_text(report)
            );
            if let Some(not) = view::uncompared_text(report) {
                text.push_str(&format!("; {not}"));
            }
            self.line(&text, Some(BOLD_GREEN), 2)?;
            return self.blank();
        };
        let layer = f.layer.map_or_else(String::new, |l| format!(", layer {l}"));
        let step = view::step_text(report, f.step).map_or_else(String::new, |s| format!(", {s}"));
        let place = format!("  (#{} of {}{layer}{step})", f.index, report.ops.len());
        self.spans(
            &[
                (">> FIRST DIVERGENCE:", Some(BOLD_RED)),
                (" ", None),
                (&f.name, Some(BOLD)),
                (&place, None),
            ],
            4,
        )?;
        const HANG: usize = 15;
        self.line(&format!("  status       {}", f.status), None, HANG)?;
        if let Some(text) = &op.mapped {
            self.line(&format!("  mapped       {text}"), None, HANG)?;
        }
        if let Some(text) = view::origin_text(report) {
            self.line(&format!("  origin       {text}"), None, HANG)?;
        }
        for text in view::hint_lines(report) {
            self.line(&format!("  hint         {text}"), Some(BOLD), HANG)?;
        }
        if let Some(text) = view::positions_text(report) {
            self.line(&format!("  positions    {text}"), None, HANG)?;
        }
        self.line(&format!("  reason       {}", f.reason), None, HANG)?;
        let (t, rule, e, nf) = (&op.tensor, &op.rule, &op.errors, &op.nonfinite);
        let judged = view::op_judged_text(report, op);
        let text = format!(
            "  shape        {}   dtype ours {}, ref {}   {judged}",
            view::shape_cell(op),
            t.dtype_ours.as_deref().unwrap_or("-"),
            t.dtype_ref.as_deref().unwrap_or("-"),
        );
        self.line(&text, None, HANG)?;
        let text = format!(
            "  ||ours||     {}   ||ref|| {}",
            num(rule.ours_l2),
            num(rule.ref_l2)
        );
        self.line(&text, None, HANG)?;
        let at = e
            .max_abs_err_index
            .as_ref()
            .map_or_else(String::new, |ix| format!(" at {ix:?}"));
        let text = format!("  max |o-r|    {}{at}", num(e.max_abs_err));
        self.line(&text, None, HANG)?;
        let text = format!(
            "  rel L2 err   {}   max rel err {}   outside tol {}",
            num(e.rel_l2_err),
            num(e.max_rel_err),
            view::outside_tol_text(op)
        );
        self.line(&text, None, HANG)?;
        self.line(&format!("  cosine       {}", cos(e.cosine)), None, HANG)?;
        if let Some(text) = view::truth_line(op) {
            self.line(&format!("  vs truth     {text}"), None, HANG)?;
        }
        let text = format!(
            "  NaN/Inf      ours {}/{}, ref {}/{}",
            count(nf.nan_ours),
            count(nf.inf_ours),
            count(nf.nan_ref),
            count(nf.inf_ref)
        );
        self.line(&text, None, HANG)?;
        self.blank()
    }

    fn ops(&mut self) -> io::Result<()> {
        let Some(mut sel) = view::select_ops(self.report, self.opts) else {
            return Ok(());
        };
        // Rows of one layer whose full names would be broken onto lines, or whose relative
        // names keep more columns, show their names relative to it (every name of the first
        // divergence's context wrapped over two lines at 80 columns and the index went: a
        // visual check; a review: a switch wherever a column went gained nothing at times; a
        // second check: at 68 columns full names kept a column by wrapping every name).
        let mut widths = None;
        if let (false, Some(w)) = (sel.relative, self.opts.width) {
            if let Some(prefix) = view::layer_prefix(self.report, &sel.indices) {
                let full = self.ops_widths(&sel, &sel.columns);
                sel.relative = true;
                let relative = self.ops_widths(&sel, &sel.columns);
                sel.relative = false;
                let fit = |widths: &[usize]| fit_layout(&sel.columns, widths, usize::from(w));
                let ((full_kept, full_breaks), (rel_kept, _)) = (fit(&full), fit(&relative));
                if rel_kept > full_kept || full_breaks {
                    sel.relative_to(&prefix);
                    widths = Some(relative);
                } else {
                    widths = Some(full);
                }
            }
        }
        self.line(&sel.title, Some(BOLD), 2)?;
        if sel.indices.is_empty() {
            writeln!(self.out, "  (none)")?;
        }
        // A table of [`OPS_PAGE`] rows at a time: a table holds every cell of its rows until it
        // is printed (~4 KB a row: `--all` over 2^20 decode steps took 5.4 GB; a bad-input
        // hunt). The pages are laid out alike, from every row's widths (a pass over the rows
        // made for it), and each after the first says which rows it holds.
        let pages = sel.indices.len().div_ceil(OPS_PAGE);
        let shared = match pages > 1 {
            true => Some(widths.unwrap_or_else(|| self.ops_widths(&sel, &sel.columns))),
            false => None,
        };
        for (p, page) in sel.indices.chunks(OPS_PAGE).enumerate() {
            self.page_label(p, page.len(), sel.indices.len())?;
            let t = self.ops_table(&sel, page, shared.as_deref());
            writeln!(self.out, "{t}")?;
        }
        self.blank()
    }

    fn per_step(&mut self) -> io::Result<()> {
        let (lines, hidden) = view::step_lines(self.report, self.opts);
        if lines.is_empty() {
            return Ok(());
        }
        self.line("Per step (0 = prefill)", Some(BOLD), 2)?;
        // The top-1 column where the steps' logits were compared: which steps flipped.
        let tokens = view::has_step_tokens(self.report);
        let mut header = vec!["step", "compared", "diverged", "missing"];
        if tokens {
            header.push("top-1");
        }
        header.extend(["worst rel err", "in op", "first diverging op"]);
        let rows = lines
            .iter()
            .map(|l| {
                let mut diverged = right(l.diverged.to_string());
                if self.opts.color {
                    diverged = diverged.fg(if l.diverged > 0 {
                        Color::Red
                    } else {
                        Color::Green
                    });
                }
                let short = |n: &Option<String>| {
                    n.as_deref()
                        .map_or_else(|| "-".to_string(), |n| n.to_string())
                };
                let worst_op = view::worst_in(l.worst_rel_err, l.worst_op.as_deref());
                let (worst_op, first_bad) = (
                    short(&worst_op.map(str::to_string)),
                    short(&l.first_divergence),
                );
                let mut row = vec![
                    (l.step.to_string(), right(l.step.to_string())),
                    (l.compared.to_string(), right(l.compared.to_string())),
                    (l.diverged.to_string(), diverged),
                    (l.missing.to_string(), right(l.missing.to_string())),
                ];
                if tokens {
                    let top1 = view::step_top1(self.report, l.step);
                    let mut c = right(top1.clone());
                    if self.opts.color && top1 == "FLIP" {
                        c = c.fg(Color::Red);
                    }
                    row.push((top1, c));
                }
                row.extend([
                    (num(l.worst_rel_err), right(num(l.worst_rel_err))),
                    (worst_op.clone(), Cell::new(worst_op)),
                    (first_bad.clone(), Cell::new(first_bad)),
                ]);
                row
            })
            .collect();
        // Narrow terminals lose "in op" (the worst op) first, then "missing", then "compared";
        // names too long for what is left are broken onto lines.
        let k = usize::from(tokens);
        let t = self.fitted(&header, rows, &[5 + k, 3, 1], &[5 + k, 6 + k]);
        writeln!(self.out, "{t}")?;
        if let Some(hidden) = hidden {
            let text = format!("  ({hidden}; --all shows every step)");
            self.line(&text, None, 2)?;
        }
        self.blank()
    }

    fn per_layer(&mut self) -> io::Result<()> {
        let (lines, hidden, _) = view::shown_layer_lines(self.report);
        if lines.is_empty() {
            return Ok(());
        }
        self.line("Per layer", Some(BOLD), 2)?;
        let header = [
            "layer",
            "ops",
            "status",
            "diverged",
            "worst rel err",
            "in op",
            "first diverging op",
        ];
        let rows = lines
            .iter()
            .map(|l| {
                let mut status = Cell::new(&l.status);
                if self.opts.color {
                    status = status.fg(if l.diverged > 0 {
                        Color::Red
                    } else if l.status == "ok" {
                        Color::Green
                    } else {
                        Color::Yellow
                    });
                }
                let worst_op = view::worst_in(l.worst_rel, l.worst_op.as_deref())
                    .unwrap_or("-")
                    .to_string();
                let first_bad = l.first_bad.clone().unwrap_or_else(|| "-".into());
                vec![
                    (l.layer.to_string(), right(l.layer.to_string())),
                    (l.ops.to_string(), right(l.ops.to_string())),
                    (l.status.clone(), status),
                    (l.diverged.to_string(), right(l.diverged.to_string())),
                    (num(l.worst_rel), right(num(l.worst_rel))),
                    (worst_op.clone(), Cell::new(worst_op)),
                    (first_bad.clone(), Cell::new(first_bad)),
                ]
            })
            .collect();
        // Narrow terminals lose "in op" (the worst op) first, then the worst rel err; names
        // too long for what is left are broken onto lines.
        let t = self.fitted(&header, rows, &[5, 4], &[5, 6]);
        writeln!(self.out, "{t}")?;
        if let Some(hidden) = hidden {
            let text = format!("  ({hidden}; the JSON report has every op)");
            self.line(&text, None, 2)?;
        }
        self.blank()
    }

    fn amplification(&mut self) -> io::Result<()> {
        let amp = &self.report.amplification;
        if amp.rows.is_empty() {
            // No counts of a check that had nothing to check (a held-out check on Llama read
            // "0 marked, 0 introduced" above it, the counts' words then).
            self.line("Amplification through q_norm/k_norm", Some(BOLD), 2)?;
            writeln!(self.out, "  {}", view::NO_PAIRS)?;
            return self.blank();
        }
        let title = format!(
            "Amplification through q_norm/k_norm (amplified where norm rel err / proj rel err > {} and the proj error is above noise; {})",
            amp.threshold,
            view::amplification_counts(self.report, self.opts)
        );
        self.line(&title, Some(BOLD), 2)?;
        let shown = view::amplification_rows(self.report, self.opts);
        if shown.is_empty() {
            let text = format!("  {}", view::no_amplification_row(self.report, self.opts));
            self.line(&text, None, 2)?;
            return self.blank();
        }
        let gain = view::shows_weight_gain(&shown);
        if let Some(scope) = view::amplification_scope(self.report, self.opts) {
            self.line(&format!("  {scope}"), None, 2)?;
        }
        let verdicts = shown.iter().any(|r| r.verdict.is_some());
        // `merged`: q/k in the layer's cell (`1 k`, `1@3 k`), for a terminal too narrow for
        // the table as it is (a verdict's word at 60 columns: a visual check).
        let table = |this: &Self, merged: bool, verdict: bool, shown: &[&AmplificationRow]| {
            let mut header = if verdict { vec!["verdict"] } else { vec![] };
            header.push("layer");
            if !merged {
                header.push("q/k");
            }
            header.extend(["proj rel err", "norm rel err", "ratio", "abs err gain"]);
            if gain {
                header.push("weight gain");
            }
            let rows = shown
                .iter()
                .map(|&r| {
                    let text = view::verdict_text(r);
                    let mut mark = Cell::new(text);
                    if r.marked && this.opts.color {
                        mark = mark.fg(Color::Red).add_attribute(Attribute::Bold);
                    }
                    let layer = match merged {
                        true => format!("{} {}", view::amp_layer(r), r.kind),
                        false => view::amp_layer(r),
                    };
                    let mut row = match verdict {
                        true => vec![(text.to_string(), mark)],
                        false => vec![],
                    };
                    row.push((layer.clone(), right(layer)));
                    if !merged {
                        row.push((r.kind.to_string(), Cell::new(r.kind.to_string())));
                    }
                    for x in [r.proj_rel_err, r.norm_rel_err, r.ratio, r.abs_err_gain] {
                        row.push((num(x), right(num(x))));
                    }
                    if gain {
                        row.push((num(r.weight_gain), right(num(r.weight_gain))));
                    }
                    row
                })
                .collect();
            // Narrow terminals lose the abs err gain first, then the weight gain (the last
            // columns); the ratio that decides the mark stays.
            let drop: Vec<usize> = (header.len() - 1 - usize::from(gain)..header.len()).collect();
            this.fitted(&header, rows, &drop, &[])
        };
        // As the ops table, [`OPS_PAGE`] rows at a time (`--all` lists every decode step's
        // pairs, two a layer: 14,336 at 256 steps of 28 layers; a bad-input hunt), each page
        // after the first saying which rows it holds. One layout for every page: q/k in the
        // layer's cell where any page is too wide (a review: pages switched layouts).
        let too_wide = |verdict: bool, page: &[&AmplificationRow]| {
            self.opts.width.is_some_and(|w| {
                table(self, false, verdict, page)
                    .to_string()
                    .lines()
                    .any(|l| visible_width(l) > usize::from(w))
            })
        };
        // A verdict column that no row shown fills goes first where the table as it is does
        // not fit, before any header wraps (the title's counts say there is none; a visual
        // check at 60 columns, and at 76-81 the gains' headers wrapped beside it).
        let verdict = verdicts
            || self.opts.width.is_none_or(|w| {
                shown
                    .chunks(OPS_PAGE)
                    .all(|page| fits_whole(&table(self, false, true, page).to_string(), w))
            });
        let merged = shown.chunks(OPS_PAGE).any(|page| too_wide(verdict, page));
        for (p, page) in shown.chunks(OPS_PAGE).enumerate() {
            self.page_label(p, page.len(), shown.len())?;
            writeln!(self.out, "{}", table(self, merged, verdict, page))?;
        }
        self.blank()
    }

    fn not_compared(&mut self) -> io::Result<()> {
        let report = self.report;
        for (label, names) in [("ours", &report.only_ours), ("ref", &report.only_ref)] {
            if !names.is_empty() {
                let text = format!(
                    "Only in {label} ({}): {}",
                    names.len(),
                    view::name_list(names, str::to_string)
                );
                self.line(&text, Some(YELLOW), 2)?;
            }
        }
        for row in view::unreadable_ops(report) {
            let why = row.reason();
            let why = why.as_deref().unwrap_or("unreadable");
            self.line(
                &format!("Unreadable: {}: {why}", row.name()),
                Some(YELLOW),
                2,
            )?;
        }
        Ok(())
    }

    fn summary(&mut self) -> io::Result<()> {
        let code = if self.report.has_divergence() {
            BOLD_RED
        } else {
            BOLD_GREEN
        };
        let text = format!("Summary: {}", view::summary_line(self.report));
        self.line(&text, Some(code), 2)
    }
}

/// Rows of the ops table printed as one table ([`Sections::ops`]); more are printed as several
/// tables of this many rows, one after the other.
const OPS_PAGE: usize = 4096;

/// Characters of `line` a terminal shows: its color codes (`ESC [ ... m`) left out.
fn visible_width(line: &str) -> usize {
    let mut n = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Up to and including the code's final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_width_leaves_color_codes_out() {
        assert_eq!(visible_width("abc"), 3);
        assert_eq!(visible_width("\x1b[31;1mAMPLIFIED\x1b[0m ┆ x"), 13);
        assert_eq!(visible_width(""), 0);
    }

    fn wrapped(text: &str, width: Option<usize>, hang: usize) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        wrap_ranges(&chars, width, hang)
            .into_iter()
            .map(|(s, e)| chars[s..e].iter().collect())
            .collect()
    }

    #[test]
    fn wraps_between_words_only() {
        assert_eq!(wrapped("  a  b c", None, 4), ["  a  b c"]);
        assert_eq!(wrapped("  a  b c", Some(8), 4), ["  a  b c"]);
        assert_eq!(
            wrapped("  reason   1.234e-05 > 2.000e-01 x", Some(20), 4),
            ["  reason   1.234e-05", "> 2.000e-01 x"]
        );
        // A label and its value stay together where they fit a line of their own.
        assert_eq!(
            wrapped(
                "  rel L2 err   8.750e-01   max rel err 8.750e-01   outside tol 100.00%",
                Some(60),
                15
            ),
            [
                "  rel L2 err   8.750e-01   max rel err 8.750e-01",
                "outside tol 100.00%"
            ]
        );
        // A field longer than a line wraps word by word, from where the line is.
        assert_eq!(
            wrapped("  positions    one two three four five six", Some(24), 15),
            ["  positions    one two", "three", "four five", "six"]
        );
        // A word longer than the line stays whole, on its own line.
        assert_eq!(
            wrapped("ab averyveryverylongword cd", Some(10), 2),
            ["ab", "averyveryverylongword", "cd"]
        );
    }

    #[test]
    fn ops_columns_drop_in_priority_order() {
        // mark, #, op, status, shape, dtype, ours, ref, max, rel, origin, cosine, out tol
        let widths = [2, 2, 31, 8, 9, 5, 9, 9, 9, 9, 7, 8, 7];
        let all: Vec<OpsColumn> = OPS_COLUMNS.into_iter().filter(|c| !c.is_truth()).collect();
        // The names' widest piece: `post_attention_layernorm`'s.
        let fit_with_piece = |w, piece| {
            let widths: Vec<usize> = widths.iter().copied().chain([piece]).collect();
            fit_ops_columns(&all, &widths, w)
        };
        let fit = |w| fit_with_piece(w, 24);
        let full = table_width(widths.iter().copied());
        assert_eq!(fit(full), all);
        let without_cosine: Vec<_> = all
            .iter()
            .copied()
            .filter(|&c| c != OpsColumn::Cosine)
            .collect();
        assert_eq!(fit(full - 1), without_cosine);
        use OpsColumn::*;
        assert_eq!(fit(80), [Mark, Name, Status, MaxAbsErr, RelErr, Origin]);
        // At 80 the name wraps (26 characters) with the index gone, its pieces whole; were the
        // widest piece 27, it would break all the same, and the index comes back.
        assert_eq!(
            fit_with_piece(80, 27),
            [Mark, Index, Name, Status, MaxAbsErr, RelErr, Origin]
        );
        // Narrower: the name wraps down to NAME_MIN before the born / carried mark, max err and
        // status go. Where the widest piece breaks all the same, the index comes back while
        // the name still gets NAME_MIN (17 characters at 66 columns), not when it would not
        // (64).
        assert_eq!(fit(66), [Mark, Index, Name, Status, MaxAbsErr, RelErr]);
        assert_eq!(fit(65), [Mark, Index, Name, Status, MaxAbsErr, RelErr]);
        assert_eq!(fit(64), [Mark, Name, Status, MaxAbsErr, RelErr]);
        // Where a column that goes after it has gone, the index comes back only if that
        // column could not (a review): at 55 max err would leave the name 11, at 44 status 12.
        assert_eq!(fit(55), [Mark, Index, Name, Status, RelErr]);
        assert_eq!(fit(44), [Mark, Index, Name, RelErr]);
        // At 45 the widest piece fits without it: the index stays gone.
        assert_eq!(fit(45), [Mark, Name, RelErr]);
        assert_eq!(fit(40), [Mark, Name, RelErr]);
    }

    #[test]
    fn the_index_never_comes_back_where_a_column_after_it_could() {
        // mark, #, op, status, shape, dtype, ours, ref, max, rel, origin, cosine, out tol, and
        // the widest piece (a name without dots: all of it). At 62 max err went (the name
        // would get 13) after the born / carried mark (1 with max err there): the mark would
        // leave the name 18 now, so the index does not come back in its place.
        let widths = [2, 2, 31, 8, 9, 5, 9, 9, 14, 9, 9, 8, 7, 31];
        let all: Vec<OpsColumn> = OPS_COLUMNS.into_iter().filter(|c| !c.is_truth()).collect();
        use OpsColumn::*;
        assert_eq!(
            fit_ops_columns(&all, &widths, 62),
            [Mark, Name, Status, RelErr]
        );
    }

    #[test]
    fn truth_columns_drop_before_the_index_but_the_ratio_stays() {
        // mark, #, op, status, shape, dtype, ours, ref, max, rel, o~t, r~t, ratio, origin, cos, tol
        // (and the names' widest piece, 24)
        let widths = [2, 2, 31, 8, 9, 5, 9, 9, 9, 9, 10, 9, 7, 7, 8, 7, 24];
        let fit = |w| fit_ops_columns(&OPS_COLUMNS, &widths, w);
        use OpsColumn::*;
        assert_eq!(
            fit(100),
            [Mark, Index, Name, Status, MaxAbsErr, RelErr, NoiseRatio, Origin]
        );
        assert_eq!(
            fit(99),
            [Mark, Name, Status, MaxAbsErr, RelErr, NoiseRatio, Origin]
        );
        assert_eq!(fit(60), [Mark, Name, Status, RelErr, NoiseRatio]);
        // The index back where the widest piece breaks all the same (75: the name 17 with it,
        // 22 without; 65: max err or the born / carried mark would leave it 11 or 13).
        assert_eq!(
            fit(75),
            [Mark, Index, Name, Status, MaxAbsErr, RelErr, NoiseRatio]
        );
        assert_eq!(fit(65), [Mark, Index, Name, Status, RelErr, NoiseRatio]);
    }

    #[test]
    fn names_break_after_dots() {
        assert_eq!(
            break_name("model.layers.0.self_attn.q_proj", 40),
            "model.layers.0.self_attn.q_proj"
        );
        assert_eq!(
            break_name("model.layers.0.self_attn.q_proj", 30),
            "model.layers.0.self_attn.\nq_proj"
        );
        assert_eq!(break_name("abcdefgh", 3), "abc\ndef\ngh");
    }
}
