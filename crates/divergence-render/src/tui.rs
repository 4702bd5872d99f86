//! The interactive terminal view of a report (`divergence diff --tui`, ratatui).
//!
//! [`Tui`] is the whole state (which ops are shown, in which order, the cursor, the filter
//! being typed) and [`Tui::key`] its only input, so the view is tested without a terminal:
//! keys in, [`Tui::draw`] into ratatui's `TestBackend`, the buffer out. [`run`] is the thin
//! loop around it on a real terminal (raw mode, alternate screen, restored on exit and on
//! panic), with an optional reload callback for `--watch`: a new report replaces the old one
//! and the cursor stays on the same op.

use std::io;
use std::time::Duration;

use divergence_diff::{Measure, OpResult, Report, Status};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;
use regex::Regex;

use crate::view::{self, OpsColumn};

/// The order of the ops list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Execution order (the report's).
    Order,
    /// Largest relative L2 error first.
    RelErr,
    /// Largest `max |ours - ref|` first.
    MaxAbsErr,
    /// Largest local growth (error over its inputs') first: where errors are born.
    Growth,
}

impl SortKey {
    fn next(self) -> SortKey {
        match self {
            SortKey::Order => SortKey::RelErr,
            SortKey::RelErr => SortKey::MaxAbsErr,
            SortKey::MaxAbsErr => SortKey::Growth,
            SortKey::Growth => SortKey::Order,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SortKey::Order => "execution order",
            SortKey::RelErr => "rel err",
            SortKey::MaxAbsErr => "max|o-r|",
            SortKey::Growth => "local growth",
        }
    }

    fn value(self, op: &OpResult) -> Option<f64> {
        match self {
            SortKey::Order => None,
            SortKey::RelErr => op.errors.rel_l2_err,
            SortKey::MaxAbsErr => op.errors.max_abs_err,
            SortKey::Growth => op.local_growth,
        }
    }
}

/// The state of the interactive view. See the module docs.
#[derive(Debug)]
pub struct Tui {
    report: Report,
    /// Indices into `report.ops` of the rows shown, in display order.
    rows: Vec<usize>,
    /// The cursor, an index into `rows`.
    cursor: usize,
    sort: SortKey,
    filter: Option<Regex>,
    /// The filter being typed after `/`.
    input: Option<String>,
    details: bool,
    layers: bool,
    /// A one-line message for the status bar (cleared by the next key).
    message: Option<String>,
    quit: bool,
    /// The first row drawn.
    offset: usize,
    /// The first layer line drawn in the per-layer overview.
    layer_offset: usize,
}

/// The columns shown, most important first: those that do not fit the width are dropped from
/// the end of this list.
const PRIORITY: [OpsColumn; 9] = [
    OpsColumn::Mark,
    OpsColumn::Name,
    OpsColumn::Status,
    OpsColumn::RelErr,
    OpsColumn::Index,
    OpsColumn::MaxAbsErr,
    OpsColumn::Origin,
    OpsColumn::OursL2,
    OpsColumn::RefL2,
];

impl Tui {
    /// The view of `report`, the cursor on the first divergence (or the first op).
    pub fn new(report: Report) -> Tui {
        let mut tui = Tui {
            report,
            rows: Vec::new(),
            cursor: 0,
            sort: SortKey::Order,
            filter: None,
            input: None,
            details: false,
            layers: false,
            message: None,
            quit: false,
            offset: 0,
            layer_offset: 0,
        };
        tui.rebuild(None);
        if let Some(f) = tui.report.first_divergence.as_ref().map(|f| f.index) {
            tui.goto(f);
        }
        tui
    }

    /// True once the user asked to quit.
    pub fn quit(&self) -> bool {
        self.quit
    }

    /// The op under the cursor.
    pub fn selected(&self) -> Option<&OpResult> {
        self.rows
            .get(self.cursor)
            .and_then(|&i| self.report.ops.get(i))
    }

    /// The names shown, in display order.
    pub fn shown(&self) -> Vec<&str> {
        self.rows
            .iter()
            .filter_map(|&i| self.report.ops.get(i))
            .map(|o| o.name.as_str())
            .collect()
    }

    /// Replaces the report (`--watch`): filter and sort stay, the cursor stays on the op of the
    /// same name when it is still shown.
    pub fn replace(&mut self, report: Report) {
        let name = self.selected().map(|o| o.name.clone());
        self.report = report;
        self.rebuild(name.as_deref());
        self.message = Some("reloaded: a dump changed".to_string());
    }

    /// Shows a one-line message in the status bar (until the next key).
    pub fn notice(&mut self, message: String) {
        self.message = Some(message);
    }

    /// Recomputes the rows from the filter and the sort; the cursor goes to `keep` if shown.
    fn rebuild(&mut self, keep: Option<&str>) {
        let ops = &self.report.ops;
        let mut rows: Vec<usize> = (0..ops.len())
            .filter(|&i| {
                self.filter
                    .as_ref()
                    .is_none_or(|re| re.is_match(&ops[i].name))
            })
            .collect();
        if self.sort != SortKey::Order {
            let key = self.sort;
            // Largest first; rows without the value last, in execution order (stable sort).
            rows.sort_by(|&a, &b| match (key.value(&ops[a]), key.value(&ops[b])) {
                (Some(va), Some(vb)) => vb.total_cmp(&va),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            });
        }
        self.rows = rows;
        self.cursor = keep
            .and_then(|n| self.rows.iter().position(|&i| ops[i].name == n))
            .unwrap_or(0);
    }

    /// Moves the cursor to op `index` of the report, when it is shown.
    fn goto(&mut self, index: usize) -> bool {
        match self.rows.iter().position(|&i| i == index) {
            Some(p) => {
                self.cursor = p;
                true
            }
            None => false,
        }
    }

    /// The next (or previous) divergent row from the cursor, in display order.
    fn jump_divergence(&mut self, forward: bool) {
        let ops = &self.report.ops;
        let is_div = |&i: &usize| ops[i].status.is_divergence();
        let found = if forward {
            self.rows
                .iter()
                .enumerate()
                .skip(self.cursor + 1)
                .find(|(_, i)| is_div(i))
        } else {
            self.rows
                .iter()
                .enumerate()
                .take(self.cursor)
                .rev()
                .find(|(_, i)| is_div(i))
        };
        match found {
            Some((p, _)) => self.cursor = p,
            None => {
                self.message = Some(format!(
                    "no {} divergent op",
                    if forward { "next" } else { "previous" }
                ))
            }
        }
    }

    /// Handles one key.
    pub fn key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        self.message = None;
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return;
        }
        if let Some(text) = &mut self.input {
            match key.code {
                KeyCode::Esc => self.input = None,
                KeyCode::Enter => {
                    let text = std::mem::take(text);
                    self.input = None;
                    self.apply_filter(&text);
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return;
        }
        let page = 10;
        if self.layers {
            let last = view::layer_lines(&self.report).len().saturating_sub(1);
            let o = &mut self.layer_offset;
            match key.code {
                KeyCode::Down | KeyCode::Char('j') => *o = (*o + 1).min(last),
                KeyCode::Up | KeyCode::Char('k') => *o = o.saturating_sub(1),
                KeyCode::PageDown | KeyCode::Char(' ') => *o = (*o + page).min(last),
                KeyCode::PageUp => *o = o.saturating_sub(page),
                KeyCode::Home | KeyCode::Char('g') => *o = 0,
                KeyCode::End | KeyCode::Char('G') => *o = last,
                KeyCode::Char('l') | KeyCode::Esc => self.layers = false,
                KeyCode::Char('q') => self.quit = true,
                _ => {}
            }
            return;
        }
        let last = self.rows.len().saturating_sub(1);
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Down | KeyCode::Char('j') => self.cursor = (self.cursor + 1).min(last),
            KeyCode::Up | KeyCode::Char('k') => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.cursor = (self.cursor + page).min(last),
            KeyCode::PageUp => self.cursor = self.cursor.saturating_sub(page),
            KeyCode::Home | KeyCode::Char('g') => self.cursor = 0,
            KeyCode::End | KeyCode::Char('G') => self.cursor = last,
            KeyCode::Char('f') => match self.report.first_divergence.as_ref().map(|f| f.index) {
                Some(i) if self.goto(i) => {}
                Some(_) => self.message = Some("the first divergence is filtered out".into()),
                None => self.message = Some("no divergence".into()),
            },
            KeyCode::Char('o') => match self.report.origin.as_ref().map(|o| o.index) {
                Some(i) if self.goto(i) => {}
                Some(_) => self.message = Some("the origin is filtered out".into()),
                None => self.message = Some("no origin".into()),
            },
            KeyCode::Char('n') => self.jump_divergence(true),
            KeyCode::Char('N') => self.jump_divergence(false),
            KeyCode::Char('/') => self.input = Some(String::new()),
            KeyCode::Char('s') => {
                let name = self.selected().map(|o| o.name.clone());
                self.sort = self.sort.next();
                self.rebuild(name.as_deref());
            }
            KeyCode::Enter | KeyCode::Char('d') => self.details = !self.details,
            KeyCode::Char('l') => self.layers = !self.layers,
            _ => {}
        }
    }

    /// A filter typed after `/`: a regex over op names; an empty one clears it. A layer
    /// number alone (`/7`) keeps that layer's ops.
    fn apply_filter(&mut self, text: &str) {
        let name = self.selected().map(|o| o.name.clone());
        let text = text.trim();
        let pattern = if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
            format!(r"\blayers\.{text}\b")
        } else {
            text.to_string()
        };
        if pattern.is_empty() {
            self.filter = None;
        } else {
            match Regex::new(&pattern) {
                Ok(re) => self.filter = Some(re),
                Err(_) => {
                    self.message = Some(format!("not a regex: {text}"));
                    return;
                }
            }
        }
        self.rebuild(name.as_deref());
        if self.rows.is_empty() {
            self.message = Some(format!("no op matches {text}"));
        }
    }

    /// Draws the whole view into `frame`.
    pub fn draw(&mut self, frame: &mut Frame<'_>) {
        let area = frame.area();
        let detail_h = if self.details { 9 } else { 0 };
        let [head, body, detail, foot] = Layout::vertical([
            Constraint::Length(4),
            Constraint::Min(3),
            Constraint::Length(detail_h),
            Constraint::Length(1),
        ])
        .areas(area);
        self.draw_header(frame, head);
        if self.layers {
            self.draw_layers(frame, body);
        } else {
            self.draw_ops(frame, body);
        }
        if self.details {
            self.draw_details(frame, detail);
        }
        self.draw_footer(frame, foot);
    }

    fn draw_header(&self, frame: &mut Frame<'_>, area: Rect) {
        let r = &self.report;
        let first = match &r.first_divergence {
            Some(f) => Line::from(vec![
                Span::styled(
                    "FIRST DIVERGENCE ",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ),
                Span::styled(f.name.clone(), Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(format!(" (#{}, {})", f.index, f.status)),
            ]),
            None => match view::nothing_compared(r) {
                Some(text) => Line::styled(text, Style::new().fg(Color::Red)),
                None => Line::styled("NO DIVERGENCE", Style::new().fg(Color::Green)),
            },
        };
        let lines = vec![
            Line::raw(format!("{} vs {}", r.ours, r.reference)),
            first,
            Line::raw(view::summary_line(r)),
        ];
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), area);
    }

    fn columns(&self, width: u16) -> Vec<(OpsColumn, u16)> {
        let ops = &self.report.ops;
        let widest = |c: OpsColumn| -> u16 {
            let content = match c {
                OpsColumn::Name => ops
                    .iter()
                    .map(|o| o.name.chars().count())
                    .max()
                    .unwrap_or(2),
                OpsColumn::Index => ops.len().max(1).to_string().len(),
                OpsColumn::Status => 14,
                OpsColumn::Origin => 9,
                OpsColumn::Mark => 2,
                _ => 9,
            };
            content.max(c.label().len()) as u16
        };
        let mut out: Vec<(OpsColumn, u16)> = Vec::new();
        let mut used = 0u16;
        for c in PRIORITY {
            let w = widest(c);
            let sep = u16::from(!out.is_empty());
            if c == OpsColumn::Name {
                // The name takes what is left after status and rel err, at least 12
                // (long names keep their tail: `…self_attn.k_norm`).
                let rest: u16 = [OpsColumn::Status, OpsColumn::RelErr]
                    .iter()
                    .map(|&c| widest(c) + 1)
                    .sum();
                let w = w.min(width.saturating_sub(used + sep + rest).max(12));
                out.push((c, w));
                used += w + sep;
                continue;
            }
            if used + sep + w > width {
                break;
            }
            out.push((c, w));
            used += w + sep;
        }
        // Back in the report's column order.
        out.sort_by_key(|(c, _)| view::OPS_COLUMNS.iter().position(|x| x == c));
        out
    }

    fn draw_ops(&mut self, frame: &mut Frame<'_>, area: Rect) {
        let cols = self.columns(area.width);
        let measure = Measure::of(&self.report.tolerance);
        let first = self.report.first_divergence.as_ref().map(|f| f.index);
        let header = Row::new(cols.iter().map(|(c, _)| Cell::from(c.label())))
            .style(Style::new().add_modifier(Modifier::BOLD));
        // Only the rows that fit are built (a report may have 100,000 ops): the window
        // follows the cursor.
        let visible = usize::from(area.height.saturating_sub(2)).max(1);
        if self.cursor < self.offset {
            self.offset = self.cursor;
        } else if self.cursor >= self.offset + visible {
            self.offset = self.cursor + 1 - visible;
        }
        self.offset = self.offset.min(self.rows.len().saturating_sub(visible));
        let window = self.rows.iter().skip(self.offset).take(visible);
        let rows: Vec<Row> = window
            .map(|&i| {
                let op = &self.report.ops[i];
                let style = match op.status {
                    Status::Ok => Style::new(),
                    s if s.is_divergence() => Style::new().fg(Color::Red),
                    _ => Style::new().fg(Color::Yellow),
                };
                Row::new(cols.iter().map(|(c, w)| {
                    let mut text = c.text(i, op, first == Some(i), measure);
                    if text.chars().count() > usize::from(*w) {
                        let keep = usize::from(*w).saturating_sub(1);
                        text = format!(
                            "…{}",
                            text.chars()
                                .rev()
                                .take(keep)
                                .collect::<Vec<_>>()
                                .into_iter()
                                .rev()
                                .collect::<String>()
                        );
                    }
                    Cell::from(text)
                }))
                .style(style)
            })
            .collect();
        let title = match &self.filter {
            Some(re) => format!(
                " {} of {} ops, filter /{}/, sort: {} ",
                self.rows.len(),
                self.report.ops.len(),
                re.as_str(),
                self.sort.label()
            ),
            None => format!(" {} ops, sort: {} ", self.rows.len(), self.sort.label()),
        };
        let table = Table::new(rows, cols.iter().map(|(_, w)| Constraint::Length(*w)))
            .header(header)
            .block(Block::new().borders(Borders::TOP).title(title))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default()
            .with_selected((!self.rows.is_empty()).then(|| self.cursor - self.offset));
        frame.render_stateful_widget(table, area, &mut state);
    }

    fn draw_layers(&self, frame: &mut Frame<'_>, area: Rect) {
        let lines: Vec<Line> = view::layer_lines(&self.report)
            .into_iter()
            .map(|l| {
                let worst = match (&l.worst_op, l.worst_rel) {
                    (Some(op), Some(v)) => format!("worst rel err {} at {op}", view::num(Some(v))),
                    _ => "no error measured".to_string(),
                };
                let first = l
                    .first_bad
                    .as_ref()
                    .map_or_else(String::new, |n| format!("; first bad {n}"));
                let text = format!(
                    "layer {:>3}  {:<8} {} of {} ops diverged; {worst}{first}",
                    l.layer, l.status, l.diverged, l.ops
                );
                if l.diverged > 0 {
                    Line::styled(text, Style::new().fg(Color::Red))
                } else {
                    Line::raw(text)
                }
            })
            .collect();
        let p = Paragraph::new(lines)
            .scroll((u16::try_from(self.layer_offset).unwrap_or(u16::MAX), 0))
            .block(
                Block::new()
                    .borders(Borders::TOP)
                    .title(" per layer (j/k scroll, l: back to the ops) "),
            );
        frame.render_widget(p, area);
    }

    fn draw_details(&self, frame: &mut Frame<'_>, area: Rect) {
        let Some(op) = self.selected() else {
            return;
        };
        let mut lines = vec![
            Line::raw(format!(
                "status {}   {}",
                op.status,
                op.reason.clone().unwrap_or_default()
            )),
            Line::raw(format!(
                "shape {}   dtype {}   rtol {}, atol {}",
                view::shape_cell(op),
                view::dtype_cell(op),
                view::num(op.rule.rtol),
                view::num(op.rule.atol)
            )),
            Line::raw(format!(
                "||ours|| {}   ||ref|| {}   rel err {}   cosine {}",
                view::num(op.rule.ours_l2),
                view::num(op.rule.ref_l2),
                view::num(op.errors.rel_l2_err),
                view::cos(op.errors.cosine)
            )),
            Line::raw(format!(
                "max|o-r| {}{}   NaN/Inf ours {}/{}, ref {}/{}",
                view::num(op.errors.max_abs_err),
                op.errors
                    .max_abs_err_index
                    .as_ref()
                    .map_or_else(String::new, |ix| format!(" at {ix:?}")),
                op.nonfinite.nan_ours.unwrap_or(0),
                op.nonfinite.inf_ours.unwrap_or(0),
                op.nonfinite.nan_ref.unwrap_or(0),
                op.nonfinite.inf_ref.unwrap_or(0)
            )),
        ];
        if let Some(t) = view::truth_line(op) {
            lines.push(Line::raw(format!("vs truth {t}")));
        }
        let is_first = self
            .report
            .first_divergence
            .as_ref()
            .is_some_and(|f| f.name == op.name);
        if is_first {
            if let Some(t) = view::origin_text(&self.report) {
                lines.push(Line::raw(format!("origin {t}")));
            }
            if let Some(t) = view::positions_text(&self.report) {
                lines.push(Line::raw(format!("positions {t}")));
            }
        }
        for h in self.report.hints.iter().filter(|h| h.op == op.name) {
            lines.push(Line::styled(
                format!("hint {}: {}", h.code.as_str(), h.message),
                Style::new().add_modifier(Modifier::BOLD),
            ));
        }
        let p = Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::new()
                .borders(Borders::TOP)
                .title(format!(" {} ", op.name)),
        );
        frame.render_widget(p, area);
    }

    fn draw_footer(&self, frame: &mut Frame<'_>, area: Rect) {
        let line = if let Some(text) = &self.input {
            Line::raw(format!(
                "/{text}▏ (regex or layer number; Enter applies, Esc cancels)"
            ))
        } else if let Some(m) = &self.message {
            Line::styled(m.clone(), Style::new().fg(Color::Yellow))
        } else {
            Line::raw(
                "q quit  f/o first/origin  n/N next/prev  / filter  s sort  ⏎ details  l layers",
            )
        };
        frame.render_widget(Paragraph::new(line), area);
    }
}

/// The `--watch` callback of [`run`]: `None` while nothing changed, else the new report or
/// the one-line error of reading it.
pub type Reload<'a> = dyn FnMut() -> Option<Result<Report, String>> + 'a;

/// Runs the view on the terminal until `q`. `reload`, polled every 300 ms, gives a new report
/// when the dumps changed (`--watch`); an error is shown in the status line and the report on
/// screen stays. The terminal is restored on return and on panic.
pub fn run(report: Report, mut reload: Option<&mut Reload<'_>>) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let mut tui = Tui::new(report);
    let result = (|| -> io::Result<()> {
        while !tui.quit() {
            terminal.draw(|f| tui.draw(f))?;
            if event::poll(Duration::from_millis(300))? {
                if let Event::Key(key) = event::read()? {
                    tui.key(key);
                }
            } else if let Some(reload) = reload.as_mut() {
                match reload() {
                    Some(Ok(report)) => tui.replace(report),
                    Some(Err(e)) => tui.notice(format!("reload failed: {e}")),
                    None => {}
                }
            }
        }
        Ok(())
    })();
    ratatui::restore();
    result
}
