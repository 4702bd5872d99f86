//! The interactive terminal view of a report (`divergence diff --tui`, ratatui).
//!
//! [`Tui`] is the whole state (which ops are shown, in which order, the cursor, the filter
//! being typed, the columns switched on, the overlays) and [`Tui::key`] its only input, so the
//! view is tested without a terminal: keys in, [`Tui::draw`] into ratatui's `TestBackend`, the
//! buffer out. [`run`] is the thin loop around it on a real terminal (raw mode, alternate
//! screen, restored on exit and on panic), with an optional reload callback for `--watch`: a
//! new report replaces the old one and the cursor stays on the same op.
//!
//! The ops list sorts by any metric of the rows ([`SortKey`]; missing and NaN values always
//! last, ties in execution order); the column chooser (`c`) hides and shows columns, and the
//! width then drops the visible ones by priority; the details of the first divergence draw its
//! per-position profile (`report.positions`) as bars on a log scale.
//!
//! The rows are read through their views ([`divergence_diff::Row`]): the filter, the sort, the
//! jumps and the name column's width ask each row a few fields, and only the rows drawn (the
//! table's window, the details) are built, one at a time, so a decode report's compact steps
//! are never all built (`Rows::is_built` stays false; tested in tests/rows.rs).

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use divergence_diff::{
    sci, Measure, OpResult, PositionProfile, Report, Row as RowView, Status, Tolerance,
};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Bar, BarChart, BarGroup, Block, Borders, Cell, Clear, List, ListItem, ListState, Paragraph,
    Row, Table, TableState, Wrap,
};
use ratatui::Frame;
use rayon::prelude::*;
use regex::Regex;

use crate::view::{self, OpsColumn};

/// What the ops list is sorted by: the execution order or one metric of the rows. Every key
/// but the execution order and the cosine sorts largest first (the worst first) until
/// reversed; rows without the value (or with NaN) always come last, ties in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Execution order (the report's).
    Order,
    /// Relative L2 error.
    RelErr,
    /// `max |ours - ref|`.
    MaxAbsErr,
    /// Local growth (error over its inputs'): where errors are born.
    Growth,
    /// The noise ratio (`--truth` only).
    NoiseRatio,
    /// `||ours - truth|| / ||truth||` (`--truth` only).
    TruthOurs,
    /// `||ref - truth|| / ||truth||` (`--truth` only).
    TruthRef,
    /// `mean |ours - ref|`.
    MeanAbsErr,
    /// `max |ours - ref| / max(|ref|, guard)`.
    MaxRelErr,
    /// `||ours - ref||`.
    DiffL2,
    /// Cosine similarity (smallest first: the least similar).
    Cosine,
    /// The share of elements outside the element-wise tolerance.
    OutTol,
    /// `||ours||`.
    OursL2,
    /// `||ref||`.
    RefL2,
    /// NaN count, both sides together.
    Nan,
    /// ±Inf count, both sides together.
    Inf,
    /// Places where the NaN/Inf masks of the two sides differ.
    NonFiniteMismatch,
    /// Element count.
    Numel,
}

/// The sort keys in the order `s` walks them (`S` backwards).
const SORT_KEYS: [SortKey; 18] = [
    SortKey::Order,
    SortKey::RelErr,
    SortKey::MaxAbsErr,
    SortKey::Growth,
    SortKey::NoiseRatio,
    SortKey::TruthOurs,
    SortKey::TruthRef,
    SortKey::MeanAbsErr,
    SortKey::MaxRelErr,
    SortKey::DiffL2,
    SortKey::Cosine,
    SortKey::OutTol,
    SortKey::OursL2,
    SortKey::RefL2,
    SortKey::Nan,
    SortKey::Inf,
    SortKey::NonFiniteMismatch,
    SortKey::Numel,
];

impl SortKey {
    /// The truth keys only apply with `--truth`.
    fn applies(self, truth: bool) -> bool {
        truth
            || !matches!(
                self,
                SortKey::NoiseRatio | SortKey::TruthOurs | SortKey::TruthRef
            )
    }

    /// The next (or previous) key that applies.
    fn step(self, forward: bool, truth: bool) -> SortKey {
        let keys: Vec<SortKey> = SORT_KEYS
            .iter()
            .copied()
            .filter(|k| k.applies(truth))
            .collect();
        let n = keys.len();
        let i = keys.iter().position(|&k| k == self).unwrap_or(0);
        keys[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }

    /// What the status bar and the table title call it.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Order => "execution order",
            SortKey::RelErr => "rel err",
            SortKey::MaxAbsErr => "max|o-r|",
            SortKey::Growth => "local growth",
            SortKey::NoiseRatio => "noise ratio",
            SortKey::TruthOurs => "ours~truth",
            SortKey::TruthRef => "ref~truth",
            SortKey::MeanAbsErr => "mean|o-r|",
            SortKey::MaxRelErr => "max rel err",
            SortKey::DiffL2 => "||ours-ref||",
            SortKey::Cosine => "cosine",
            SortKey::OutTol => "out of tol",
            SortKey::OursL2 => "||ours||",
            SortKey::RefL2 => "||ref||",
            SortKey::Nan => "NaN count",
            SortKey::Inf => "Inf count",
            SortKey::NonFiniteMismatch => "NaN/Inf mismatch",
            SortKey::Numel => "numel",
        }
    }

    /// The direction before `r`: largest first, but for the execution order and the cosine
    /// (smallest first: the least similar).
    fn descending(self) -> bool {
        !matches!(self, SortKey::Order | SortKey::Cosine)
    }

    /// The row's value (`index` its place in the report), read through its view (a compact
    /// decode step is not built); `None` (and NaN) sorts last.
    fn value(self, index: usize, row: RowView<'_>) -> Option<f64> {
        let counts = |a: Option<u64>, b: Option<u64>| -> Option<f64> {
            (a.is_some() || b.is_some())
                .then(|| a.unwrap_or(0).saturating_add(b.unwrap_or(0)) as f64)
        };
        let n = row.nonfinite();
        let t = row.truth();
        let v = match self {
            SortKey::Order => Some(index as f64),
            SortKey::RelErr => row.rel_l2_err(),
            SortKey::MaxAbsErr => row.max_abs_err(),
            SortKey::Growth => row.local_growth(),
            SortKey::NoiseRatio => t.noise_ratio,
            SortKey::TruthOurs => t.ours_truth_rel_err,
            SortKey::TruthRef => t.ref_truth_rel_err,
            SortKey::MeanAbsErr => row.terms().1.mean_abs_err,
            SortKey::MaxRelErr => row.terms().1.max_rel_err,
            SortKey::DiffL2 => row.diff_l2(),
            SortKey::Cosine => row.terms().1.cosine,
            SortKey::OutTol => row.frac_outside_tol(),
            SortKey::OursL2 => row.terms().0.ours_l2,
            SortKey::RefL2 => row.ref_l2(),
            SortKey::Nan => counts(n.nan_ours, n.nan_ref),
            SortKey::Inf => counts(n.inf_ours, n.inf_ref),
            SortKey::NonFiniteMismatch => n.nonfinite_mismatch.map(|m| m as f64),
            SortKey::Numel => row.tensor().numel.map(|m| m as f64),
        };
        v.filter(|v| !v.is_nan())
    }

    /// The column that shows the key.
    fn column(self) -> Col {
        match self {
            SortKey::Order => Col::Index,
            SortKey::RelErr => Col::RelErr,
            SortKey::MaxAbsErr => Col::MaxAbsErr,
            SortKey::Growth => Col::Growth,
            SortKey::NoiseRatio => Col::NoiseRatio,
            SortKey::TruthOurs => Col::TruthOurs,
            SortKey::TruthRef => Col::TruthRef,
            SortKey::MeanAbsErr => Col::MeanAbsErr,
            SortKey::MaxRelErr => Col::MaxRelErr,
            SortKey::DiffL2 => Col::DiffL2,
            SortKey::Cosine => Col::Cosine,
            SortKey::OutTol => Col::OutTol,
            SortKey::OursL2 => Col::OursL2,
            SortKey::RefL2 => Col::RefL2,
            SortKey::Nan => Col::Nan,
            SortKey::Inf => Col::Inf,
            SortKey::NonFiniteMismatch => Col::Mismatch,
            SortKey::Numel => Col::Numel,
        }
    }
}

/// A column of the terminal table: the ops table's ([`OpsColumn`]) and a few metrics of the
/// rows only this view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Mark,
    Index,
    Name,
    Status,
    Shape,
    Dtype,
    Numel,
    OursL2,
    RefL2,
    DiffL2,
    MaxAbsErr,
    MeanAbsErr,
    RelErr,
    MaxRelErr,
    TruthOurs,
    TruthRef,
    NoiseRatio,
    Origin,
    Growth,
    Cosine,
    OutTol,
    Nan,
    Inf,
    Mismatch,
}

/// Every column, left to right (the column chooser lists them in this order).
const COLUMNS: [Col; 24] = [
    Col::Mark,
    Col::Index,
    Col::Name,
    Col::Status,
    Col::Shape,
    Col::Dtype,
    Col::Numel,
    Col::OursL2,
    Col::RefL2,
    Col::DiffL2,
    Col::MaxAbsErr,
    Col::MeanAbsErr,
    Col::RelErr,
    Col::MaxRelErr,
    Col::TruthOurs,
    Col::TruthRef,
    Col::NoiseRatio,
    Col::Origin,
    Col::Growth,
    Col::Cosine,
    Col::OutTol,
    Col::Nan,
    Col::Inf,
    Col::Mismatch,
];

/// The columns, most important first: those that do not fit the width are dropped from the
/// end of this list (after the sort key's column and those the user switched on, which come
/// right after the rel err).
const PRIORITY: [Col; 24] = [
    Col::Mark,
    Col::Name,
    Col::Status,
    Col::RelErr,
    Col::Index,
    Col::MaxAbsErr,
    Col::Origin,
    Col::OursL2,
    Col::RefL2,
    Col::NoiseRatio,
    Col::TruthOurs,
    Col::TruthRef,
    Col::Growth,
    Col::Cosine,
    Col::OutTol,
    Col::MeanAbsErr,
    Col::MaxRelErr,
    Col::DiffL2,
    Col::Nan,
    Col::Inf,
    Col::Mismatch,
    Col::Numel,
    Col::Shape,
    Col::Dtype,
];

impl Col {
    /// The same column of the other views, when there is one.
    fn ops(self) -> Option<OpsColumn> {
        Some(match self {
            Col::Mark => OpsColumn::Mark,
            Col::Index => OpsColumn::Index,
            Col::Name => OpsColumn::Name,
            Col::Status => OpsColumn::Status,
            Col::Shape => OpsColumn::Shape,
            Col::Dtype => OpsColumn::Dtype,
            Col::OursL2 => OpsColumn::OursL2,
            Col::RefL2 => OpsColumn::RefL2,
            Col::MaxAbsErr => OpsColumn::MaxAbsErr,
            Col::RelErr => OpsColumn::RelErr,
            Col::TruthOurs => OpsColumn::TruthOurs,
            Col::TruthRef => OpsColumn::TruthRef,
            Col::NoiseRatio => OpsColumn::NoiseRatio,
            Col::Origin => OpsColumn::Origin,
            Col::Cosine => OpsColumn::Cosine,
            Col::OutTol => OpsColumn::OutTol,
            _ => return None,
        })
    }

    /// Shown when the view opens; the others are switched on in the column chooser.
    fn default_on(self) -> bool {
        matches!(
            self,
            Col::Mark
                | Col::Index
                | Col::Name
                | Col::Status
                | Col::OursL2
                | Col::RefL2
                | Col::MaxAbsErr
                | Col::RelErr
                | Col::Origin
        )
    }

    /// The truth columns only exist with `--truth`.
    fn applies(self, truth: bool) -> bool {
        truth || !matches!(self, Col::TruthOurs | Col::TruthRef | Col::NoiseRatio)
    }

    /// The header.
    fn label(self) -> &'static str {
        match self {
            Col::Numel => "numel",
            Col::DiffL2 => "||o-r||",
            Col::MeanAbsErr => "mean|o-r|",
            Col::MaxRelErr => "max rel",
            Col::Growth => "growth",
            Col::Nan => "NaN o/r",
            Col::Inf => "Inf o/r",
            Col::Mismatch => "mismatch",
            c => c.ops().map_or("", OpsColumn::label),
        }
    }

    /// The column chooser's line: the header and what the column is.
    fn describe(self) -> (&'static str, &'static str) {
        let what = match self {
            Col::Mark => ">> on the first divergence",
            Col::Index => "execution index",
            Col::Name => "op name (always shown)",
            Col::Status => "verdict",
            Col::Shape => "shape",
            Col::Dtype => "dtype",
            Col::Numel => "element count",
            Col::OursL2 => "norm of ours",
            Col::RefL2 => "norm of ref",
            Col::DiffL2 => "||ours - ref||",
            Col::MaxAbsErr => "max abs error",
            Col::MeanAbsErr => "mean abs error",
            Col::RelErr => "relative L2 error",
            Col::MaxRelErr => "max relative error",
            Col::TruthOurs => "ours' error vs truth",
            Col::TruthRef => "ref's error vs truth",
            Col::NoiseRatio => "noise ratio",
            Col::Origin => "born / carried",
            Col::Growth => "local growth",
            Col::Cosine => "cosine similarity",
            Col::OutTol => "share outside tol",
            Col::Nan => "NaN count ours/ref",
            Col::Inf => "Inf count ours/ref",
            Col::Mismatch => "NaN/Inf mask mismatch",
        };
        let label = match self {
            Col::Mark => ">>",
            c => c.label(),
        };
        (label, what)
    }

    /// The widest content of a column other than the name and the index.
    fn content_width(self) -> usize {
        match self {
            Col::Mark => 2,
            Col::Status | Col::Shape => 14,
            _ => 9,
        }
    }

    /// The cell's text (`i` is the row's index in `ops`).
    fn text(self, i: usize, op: &OpResult, is_first: bool, measure: Measure) -> String {
        let pair = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => "-".to_string(),
            (a, b) => format!("{}/{}", a.unwrap_or(0), b.unwrap_or(0)),
        };
        let count = view::count;
        let n = &op.nonfinite;
        match self {
            Col::Numel => count(op.tensor.numel),
            Col::DiffL2 => view::num(op.rule.diff_l2),
            Col::MeanAbsErr => view::num(op.errors.mean_abs_err),
            Col::MaxRelErr => view::num(op.errors.max_rel_err),
            Col::Growth => view::num(op.local_growth),
            Col::Nan => pair(n.nan_ours, n.nan_ref),
            Col::Inf => pair(n.inf_ours, n.inf_ref),
            Col::Mismatch => count(n.nonfinite_mismatch),
            c => c
                .ops()
                .map_or_else(String::new, |o| o.text(i, op, is_first, measure)),
        }
    }
}

/// The header's alert when the runs saw other input_ids (the printed formats give the whole
/// warning; this is its gist, short enough for one line of 80 columns).
const INPUT_IDS_ALERT: &str =
    "!!! INPUT_IDS MISMATCH: other inputs, every verdict here is meaningless !!!";

/// The state of the interactive view. See the module docs.
#[derive(Debug)]
pub struct Tui {
    report: Report,
    /// Indices into `report.ops` of the rows shown, in display order.
    rows: Vec<usize>,
    /// The cursor, an index into `rows`.
    cursor: usize,
    sort: SortKey,
    /// `sort` runs against its default direction ([`SortKey::descending`]).
    reversed: bool,
    filter: Option<Regex>,
    /// A layer number typed alone after `/` (or `--layer`): the rows of that layer, as the
    /// printed table's `--layer` keeps them (by the name's parsed layer index; a regex
    /// `\blayers\.N\b` kept other rows than the table's: `layers.03`, `x-layers.3`).
    layer: Option<usize>,
    /// The filter being typed after `/`.
    input: Option<String>,
    details: bool,
    layers: bool,
    /// Per column of [`COLUMNS`]: switched on.
    on: [bool; COLUMNS.len()],
    /// The columns the user switched on, most recent first: the width drops them last.
    promoted: Vec<Col>,
    /// The column chooser (`c`) is open, its cursor an index into [`Tui::choosable`].
    chooser: Option<usize>,
    /// The key help (`?`) is open.
    help: bool,
    /// The warnings and notes (`w`) are open.
    warnings: bool,
    /// The first line drawn of the help or the warnings, when they are taller than the
    /// terminal (j/k scroll them then).
    overlay_top: usize,
    /// How far the open help or warnings scroll (0: they fit), as last drawn.
    overlay_max: std::cell::Cell<usize>,
    /// The per-step overview (`p`) is shown instead of the ops.
    steps_view: bool,
    /// Its first line drawn, and the step under its cursor (an index into the report's
    /// steps).
    step_offset: usize,
    step_cursor: usize,
    /// A one-line message for the status bar (cleared by the next key).
    message: Option<String>,
    quit: bool,
    /// The first row drawn.
    offset: usize,
    /// The cursor jumped (the first divergence at the start, `f`, `o`, `n`, a step, a sort or
    /// a filter that keeps its op): the next draw centres it where it is off the window, with
    /// the rows around it in view (it was drawn on the last visible row, the rows after the
    /// first divergence hidden: a visual check). Moves of a row or a page scroll the window
    /// as little as they need.
    center: bool,
    /// The first layer line drawn in the per-layer overview.
    layer_offset: usize,
    /// Lines an overview (`l`, `p`) showed when last drawn: it scrolls no further than its
    /// last line at the bottom (a UX review scrolled 25 steps that fit off the top).
    overview_rows: usize,
    /// The per-layer overview's tallies, made once per report: each key and each frame of
    /// `l` asks for its lines, and a decode report has ~150,000 rows (a review).
    layer_cache: std::cell::OnceCell<LayerCache>,
    /// The longest op name, in characters (the name column's width), found once per report.
    name_width: std::cell::OnceCell<usize>,
    /// The widest status of the rows (`diverged`; `shape_mismatch` only where a row has it):
    /// the column was 14 wide for any report, and at 80 columns pushed out max|o-r| (a
    /// visual check).
    status_width: std::cell::OnceCell<usize>,
}

/// What the per-layer overview (`l`) shows, tallied: a line per layer, or per layer and phase
/// (the prefill, the decode steps) in a decode report; of the layers the table lists (at most
/// `view::SHOWN_LAYERS`), and what the layers left out hold.
#[derive(Debug)]
enum LayerCache {
    OnePass(Vec<view::LayerLine>, Option<String>),
    Phases(Vec<PhaseEntry>, Option<String>),
}

/// The details' text lines (with the top border) at the least, and the per-position plot
/// under them.
const DETAIL_TEXT_H: u16 = 9;
/// The rows the ops list keeps when the details' text grows past [`DETAIL_TEXT_H`].
const MIN_LIST_H: u16 = 6;
const PLOT_H: u16 = 4;

impl Tui {
    /// The view of `report`, the cursor on the first divergence (or the first op).
    pub fn new(mut report: Report) -> Tui {
        crate::safe::make_text_safe(&mut report);
        let mut tui = Tui {
            report,
            rows: Vec::new(),
            cursor: 0,
            sort: SortKey::Order,
            reversed: false,
            filter: None,
            layer: None,
            input: None,
            details: false,
            layers: false,
            on: COLUMNS.map(Col::default_on),
            promoted: Vec::new(),
            chooser: None,
            help: false,
            warnings: false,
            overlay_top: 0,
            overlay_max: std::cell::Cell::new(0),
            steps_view: false,
            step_offset: 0,
            step_cursor: 0,
            message: None,
            quit: false,
            offset: 0,
            center: false,
            layer_offset: 0,
            overview_rows: 1,
            layer_cache: std::cell::OnceCell::new(),
            name_width: std::cell::OnceCell::new(),
            status_width: std::cell::OnceCell::new(),
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

    /// The op under the cursor, whole (built alone when it is a compact decode step).
    pub fn selected(&self) -> Option<Cow<'_, OpResult>> {
        self.selected_row().map(RowView::op)
    }

    /// The view of the op under the cursor (nothing built).
    fn selected_row(&self) -> Option<RowView<'_>> {
        self.rows
            .get(self.cursor)
            .and_then(|&i| self.report.ops.get_row(i))
    }

    /// The names shown, in display order.
    pub fn shown(&self) -> Vec<Cow<'_, str>> {
        self.rows
            .iter()
            .filter_map(|&i| self.report.ops.get_row(i))
            .map(RowView::name)
            .collect()
    }

    /// The report shown (made safe for the terminal: `make_text_safe`).
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The sort key and whether it sorts largest first.
    pub fn sort(&self) -> (SortKey, bool) {
        (self.sort, self.descending())
    }

    /// Replaces the report (`--watch`): filter and sort stay, the cursor stays on the op of the
    /// same name when it is still shown.
    pub fn replace(&mut self, mut report: Report) {
        crate::safe::make_text_safe(&mut report);
        let name = self.selected_row().map(|r| r.name().into_owned());
        self.report = report;
        self.layer_cache = std::cell::OnceCell::new();
        self.name_width = std::cell::OnceCell::new();
        self.status_width = std::cell::OnceCell::new();
        if !self.sort.applies(self.truth()) {
            self.sort = SortKey::Order;
            self.reversed = false;
        }
        self.rebuild(name.as_deref());
        self.message = Some("reloaded: a dump changed".to_string());
    }

    /// Shows a one-line message in the status bar (until the next key).
    pub fn notice(&mut self, message: String) {
        self.message = Some(message);
    }

    fn truth(&self) -> bool {
        matches!(self.report.tolerance, Tolerance::Truth { .. })
    }

    fn descending(&self) -> bool {
        self.sort.descending() != self.reversed
    }

    /// `rel err ↓` for the status bar.
    fn sort_short(&self) -> String {
        let arrow = if self.descending() { '↓' } else { '↑' };
        let label = match self.sort {
            SortKey::Order => "order",
            k => k.label(),
        };
        format!("sort: {label} {arrow}")
    }

    /// `rel err, largest first` for the table title.
    fn sort_text(&self) -> String {
        match (self.sort, self.descending()) {
            (SortKey::Order, false) => "execution order".to_string(),
            (SortKey::Order, true) => "execution order, reversed".to_string(),
            (k, true) => format!("{}, largest first", k.label()),
            (k, false) => format!("{}, smallest first", k.label()),
        }
    }

    /// Recomputes the rows from the filter and the sort; the cursor goes to `keep` if shown.
    fn rebuild(&mut self, keep: Option<&str>) {
        let ops = &self.report.ops;
        let mut rows: Vec<usize> = (0..ops.len())
            .filter(|&i| {
                let row = ops.row(i);
                self.layer.is_none_or(|l| row.layer() == Some(l))
                    && self
                        .filter
                        .as_ref()
                        .is_none_or(|re| view::row_name_matches(re, row))
            })
            .collect();
        let desc = self.descending();
        if self.sort != SortKey::Order || desc {
            let key = self.sort;
            // Rows without the value last, ties in execution order: the same order as a
            // stable sort, by an unstable one on (key, index), 2-3x faster on 100,000 rows.
            let mut keyed: Vec<(u64, usize)> = rows
                .iter()
                .map(|&i| {
                    let k = key.value(i, ops.row(i)).map_or(u64::MAX, |v| {
                        let k = ordered_bits(v);
                        if desc {
                            !k
                        } else {
                            k
                        }
                    });
                    (k, i)
                })
                .collect();
            keyed.sort_unstable();
            rows = keyed.into_iter().map(|(_, i)| i).collect();
        }
        self.rows = rows;
        self.cursor = keep
            .and_then(|n| self.rows.iter().position(|&i| ops.row(i).is_named(n)))
            .unwrap_or(0);
        // A sort or a filter moves the kept op anywhere: centred as a jump is (a review).
        self.center = true;
    }

    /// Re-sorts by `sort` (in its default direction unless `reversed`), the cursor on its op.
    fn resort(&mut self, sort: SortKey, reversed: bool) {
        let name = self.selected_row().map(|r| r.name().into_owned());
        self.sort = sort;
        self.reversed = reversed;
        self.rebuild(name.as_deref());
    }

    /// Moves the cursor to op `index` of the report, when it is shown.
    fn goto(&mut self, index: usize) -> bool {
        match self.rows.iter().position(|&i| i == index) {
            Some(p) => {
                self.cursor = p;
                self.center = true;
                true
            }
            None => false,
        }
    }

    /// Enter in the per-step overview: the ops, the cursor on the step's first diverging op,
    /// else on its first op; a filter that hides it is said, the overview stays.
    fn open_step(&mut self) {
        let Some(st) = self.report.steps.get(self.step_cursor) else {
            return;
        };
        let step = st.step;
        let ops = &self.report.ops;
        let target = match &st.first_divergence {
            Some(name) => ops.rows().position(|r| r.is_named(name)),
            None => ops.rows().position(|r| r.step() == step),
        };
        match target {
            Some(i) if self.goto(i) => self.steps_view = false,
            Some(i) => {
                let name = self.report.ops.row(i).name();
                self.message = Some(format!("{name} is filtered out"));
            }
            None => self.message = Some(format!("no op of step {step}")),
        }
    }

    /// The selected op in the next (or previous) decode step: `x@3` -> `x@4` (the prefill's
    /// `x` -> `x@1`), wherever the sort puts it.
    fn jump_step(&mut self, forward: bool) {
        let Some(row) = self.selected_row() else {
            return;
        };
        if self.report.steps.is_empty() {
            self.message = Some("no decode steps".into());
            return;
        }
        let (base, step) = row.split();
        let target = match (forward, step) {
            (true, s) => s + 1,
            (false, 0) => {
                self.message = Some("the prefill is the first step".into());
                return;
            }
            (false, s) => s - 1,
        };
        let name = divergence_names::step_name(base, target);
        let target = self.report.ops.rows().position(|r| r.is_named(&name));
        match target {
            Some(i) if self.goto(i) => {}
            Some(_) => self.message = Some(format!("{name} is filtered out")),
            None => self.message = Some(format!("no {name}")),
        }
    }

    /// The next (or previous) divergent row from the cursor, in display order.
    fn jump_divergence(&mut self, forward: bool) {
        let ops = &self.report.ops;
        let is_div = |&i: &usize| ops.row(i).status().is_divergence();
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
            Some((p, _)) => {
                self.cursor = p;
                self.center = true;
            }
            None => {
                self.message = Some(format!(
                    "no {} divergent op",
                    if forward { "next" } else { "previous" }
                ))
            }
        }
    }

    /// The columns of this report, in the chooser's (and the table's) order.
    fn choosable(&self) -> Vec<Col> {
        let truth = self.truth();
        COLUMNS
            .iter()
            .copied()
            .filter(|c| c.applies(truth))
            .collect()
    }

    fn is_on(&self, c: Col) -> bool {
        COLUMNS
            .iter()
            .position(|&x| x == c)
            .is_some_and(|i| self.on[i])
    }

    /// Switches a column on or off (the name stays).
    fn toggle(&mut self, c: Col) {
        if c == Col::Name {
            self.message = Some("the op name column cannot be hidden".into());
            return;
        }
        let Some(i) = COLUMNS.iter().position(|&x| x == c) else {
            return;
        };
        self.on[i] = !self.on[i];
        self.promoted.retain(|&x| x != c);
        if self.on[i] {
            self.promoted.insert(0, c);
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
        if self.help || self.warnings {
            // Any key closes the help and the warnings, but the keys that scroll, while they
            // are taller than the terminal (the help at 60x20: its last keys were cut).
            let last = self.overlay_max.get();
            if last == 0 || !scroll(key.code, &mut self.overlay_top, last, 10) {
                self.help = false;
                self.warnings = false;
                self.overlay_top = 0;
            }
            return;
        }
        if let Some(cur) = self.chooser {
            let cols = self.choosable();
            let last = cols.len().saturating_sub(1);
            match key.code {
                KeyCode::Down | KeyCode::Char('j') => self.chooser = Some((cur + 1).min(last)),
                KeyCode::Up | KeyCode::Char('k') => self.chooser = Some(cur.saturating_sub(1)),
                KeyCode::Home | KeyCode::Char('g') => self.chooser = Some(0),
                KeyCode::End | KeyCode::Char('G') => self.chooser = Some(last),
                KeyCode::Char(' ') | KeyCode::Enter | KeyCode::Char('x') => {
                    if let Some(&c) = cols.get(cur) {
                        self.toggle(c);
                    }
                }
                KeyCode::Esc | KeyCode::Char('c') | KeyCode::Char('q') => self.chooser = None,
                _ => {}
            }
            return;
        }
        let page = 10;
        // The per-step overview (`p`): a cursor on a step; Enter goes to its first diverging
        // op (else its first op) in the ops (a UX review found it read-only).
        if self.steps_view {
            let last = self.report.steps.len().saturating_sub(1);
            let c = &mut self.step_cursor;
            *c = (*c).min(last);
            if scroll(key.code, c, last, page) {
                let rows = self.overview_rows;
                let o = &mut self.step_offset;
                if *c < *o {
                    *o = *c;
                } else if *c >= *o + rows {
                    *o = *c + 1 - rows;
                }
                return;
            }
            match key.code {
                KeyCode::Enter => self.open_step(),
                KeyCode::Esc | KeyCode::Char('p') => self.steps_view = false,
                KeyCode::Char('?') => self.help = true,
                KeyCode::Char('q') => self.quit = true,
                _ => {}
            }
            return;
        }
        // The per-layer overview (`l`): it scrolls, and its own key or Esc goes back to the
        // ops.
        if self.layers {
            let last = self
                .layer_overview(usize::MAX)
                .len()
                .saturating_sub(self.overview_rows);
            let o = &mut self.layer_offset;
            *o = (*o).min(last);
            if !scroll(key.code, o, last, page) {
                match key.code {
                    KeyCode::Esc | KeyCode::Char('l') => self.layers = false,
                    KeyCode::Char('?') => self.help = true,
                    KeyCode::Char('q') => self.quit = true,
                    _ => {}
                }
            }
            return;
        }
        let last = self.rows.len().saturating_sub(1);
        match key.code {
            // Esc closes the details first, as it closes the overlays (a UX review lost its
            // session closing them with Esc)
            KeyCode::Esc if self.details => self.details = false,
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
            KeyCode::Char(']') => self.jump_step(true),
            KeyCode::Char('[') => self.jump_step(false),
            KeyCode::Char('w') => {
                if self.report.warnings.is_empty() && self.notes().is_empty() {
                    self.message = Some("no warnings".into());
                } else {
                    self.warnings = true;
                }
            }
            KeyCode::Char('/') => self.input = Some(String::new()),
            KeyCode::Char('s') => self.resort(self.sort.step(true, self.truth()), false),
            KeyCode::Char('S') => self.resort(self.sort.step(false, self.truth()), false),
            KeyCode::Char('r') => self.resort(self.sort, !self.reversed),
            KeyCode::Char('c') => self.chooser = Some(0),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Enter | KeyCode::Char('d') => self.details = !self.details,
            KeyCode::Char('l') => self.layers = !self.layers,
            KeyCode::Char('p') => match self.report.steps.is_empty() {
                true => self.message = Some("no decode steps".into()),
                false => {
                    // the cursor on the selected op's step (the first divergence's at start)
                    let step = self.selected_row().map_or(0, RowView::step);
                    let steps = &self.report.steps;
                    self.step_cursor = steps.iter().position(|s| s.step == step).unwrap_or(0);
                    let rows = self.overview_rows.max(1);
                    if self.step_cursor < self.step_offset
                        || self.step_cursor >= self.step_offset + rows
                    {
                        self.step_offset = self.step_cursor.saturating_sub(rows / 2);
                    }
                    self.steps_view = true;
                }
            },
            _ => {}
        }
    }

    /// Filters the view as `diff --tui --grep R` or `--layer N` ask (they were ignored in the
    /// view): `R` as the regex it is (`--grep 1` keeps names holding a 1, where `/1` is layer
    /// 1), else the layer as `/N`; one regex cannot ask for both, and the status bar says so.
    /// The cursor stays on the first divergence when the filter keeps it.
    pub fn open_filtered(&mut self, grep: Option<Regex>, layer: Option<usize>) {
        match (grep, layer) {
            (Some(re), l) => {
                self.filter = Some(re);
                self.rebuild(None);
                if self.rows.is_empty() {
                    self.message = Some("no op matches --grep".into());
                } else if let Some(l) = l {
                    self.message = Some(format!(
                        "filtered by --grep alone: type /{l} for --layer {l}"
                    ));
                }
            }
            (None, Some(l)) => self.apply_filter(&l.to_string()),
            (None, None) => return,
        }
        if let Some(f) = self.report.first_divergence.as_ref().map(|f| f.index) {
            self.goto(f);
        }
    }

    /// A filter typed after `/`: a regex over op names; an empty one clears it. A layer
    /// number alone (`/7`) keeps that layer's ops.
    fn apply_filter(&mut self, text: &str) {
        let name = self.selected_row().map(|r| r.name().into_owned());
        let text = text.trim();
        if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
            let Ok(layer) = text.parse::<usize>() else {
                self.message = Some(format!("not a layer number: {text}"));
                return;
            };
            (self.filter, self.layer) = (None, Some(layer));
        } else if text.is_empty() {
            (self.filter, self.layer) = (None, None);
        } else {
            match Regex::new(text) {
                Ok(re) => (self.filter, self.layer) = (Some(re), None),
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

    /// The per-position profile of `row`, when it has one (only the first divergence does; a
    /// profile across decode steps is named by the probe, `x`, where the row is `x@s`: the
    /// plot never drew for a decode step's first divergence).
    fn profile(&self, row: RowView<'_>) -> Option<&PositionProfile> {
        let first = self
            .report
            .first_divergence
            .as_ref()
            .is_some_and(|f| row.is_named(&f.name));
        self.report.positions.as_ref().filter(|p| {
            // a profile across steps is the first divergence's alone (the prefill's row `x`
            // has the probe's name too, and showed it with status ok)
            let named = match p.steps.is_empty() {
                true => row.is_named(&p.op),
                false => first && row.base() == p.op,
            };
            named && !p.rel_err.is_empty()
        })
    }

    /// Draws the whole view into `frame`.
    pub fn draw(&mut self, frame: &mut Frame<'_>) {
        let area = frame.area();
        // The plot needs 4 rows: only where the ops list keeps a few (24 rows and more).
        let plot = self.details
            && area.height >= 20
            && self.selected_row().and_then(|r| self.profile(r)).is_some();
        // The header's lines as they wrap (the summary takes three at 80 columns: its end,
        // the first divergence, was cut).
        let header = self.head();
        let head_h = u16::try_from(header.line_count(area.width)).unwrap_or(u16::MAX);
        // The details' text as tall as it wraps, within what leaves the ops list its rows
        // (a table header and a few rows, the status bar, the header, the plot).
        let text_h = if self.details {
            let plot_rows = if plot { PLOT_H } else { 0 };
            let room = area
                .height
                .saturating_sub(head_h + 1 + MIN_LIST_H + plot_rows)
                .max(DETAIL_TEXT_H);
            self.details_text_h(area.width).min(room)
        } else {
            0
        };
        let detail_h = match (self.details, plot) {
            (false, _) => 0,
            (true, false) => text_h,
            (true, true) => text_h + PLOT_H,
        };
        let [head, body, detail, foot] = Layout::vertical([
            Constraint::Length(head_h),
            Constraint::Min(3),
            Constraint::Length(detail_h),
            Constraint::Length(1),
        ])
        .areas(area);
        frame.render_widget(header, head);
        if self.layers {
            self.overview_rows = usize::from(body.height.saturating_sub(1)).max(1);
            self.draw_layers(frame, body);
        } else if self.steps_view {
            self.overview_rows = usize::from(body.height.saturating_sub(1)).max(1);
            self.draw_steps(frame, body);
        } else {
            self.draw_ops(frame, body);
        }
        if self.details {
            self.draw_details(frame, detail, plot);
        }
        self.draw_footer(frame, foot);
        if self.chooser.is_some() {
            self.draw_chooser(
                frame,
                Rect {
                    height: area.height.saturating_sub(1),
                    ..area
                },
            );
        }
        if self.help {
            self.draw_help(
                frame,
                Rect {
                    height: area.height.saturating_sub(1),
                    ..area
                },
            );
        }
        if self.warnings {
            self.draw_warnings(
                frame,
                Rect {
                    height: area.height.saturating_sub(1),
                    ..area
                },
            );
        }
    }

    /// The header: the files, other input_ids' alert above the verdict, the verdict, the
    /// summary and [`Tui::extra_header`], wrapped.
    fn head(&self) -> Paragraph<'static> {
        let r = &self.report;
        let alert = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        let first = match &r.first_divergence {
            Some(f) => Line::from(vec![
                Span::styled("FIRST DIVERGENCE ", alert),
                Span::styled(
                    f.name.to_string(),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(match view::step_text(r, f.step) {
                    Some(step) => format!(" (#{}, {}, {step})", f.index, f.status),
                    None => format!(" (#{}, {})", f.index, f.status),
                }),
            ]),
            None => match view::nothing_compared(r) {
                Some(text) => Line::styled(text, Style::new().fg(Color::Red)),
                // Not green when the inputs differ: nothing is shown to be right.
                None if r.input_ids_mismatch => Line::raw("no divergence found"),
                None => Line::styled("NO DIVERGENCE", Style::new().fg(Color::Green)),
            },
        };
        let mut lines = vec![Line::raw(format!("{} vs {}", r.ours, r.reference))];
        // Other input_ids make every verdict meaningless: said above the verdict, as in the
        // printed table (the whole warning is in the printed formats; here its gist).
        if r.input_ids_mismatch {
            lines.push(Line::styled(INPUT_IDS_ALERT, alert));
        }
        // The summary without its first divergence, which the line above names (a visual
        // check: at 80x24 the header took 8 rows, the name twice).
        let mut summary = view::summary_line(r);
        if let Some(f) = &r.first_divergence {
            let named = format!("; first divergence: {} (#{})", f.name, f.index);
            if let Some(counts) = summary.strip_suffix(&named) {
                summary = counts.to_string();
            }
        }
        lines.extend([first, Line::raw(summary)]);
        lines.extend(
            self.extra_header()
                .into_iter()
                .map(|(text, warn)| match warn {
                    true => Line::styled(text, Style::new().fg(Color::Yellow)),
                    false => Line::raw(text),
                }),
        );
        Paragraph::new(lines).wrap(Wrap { trim: true })
    }

    /// The header's lines under the summary: the token effect, and how many warnings and
    /// notes `w` shows (true: styled as a warning). The printed formats have them in full;
    /// the view said nothing of them before.
    fn extra_header(&self) -> Vec<(String, bool)> {
        let r = &self.report;
        let mut out = Vec::new();
        if let Some(t) = view::tokens_text(r) {
            out.push((format!("tokens: {t}"), false));
        }
        let count = |n: usize, one: &str, many: &str| match n {
            0 => None,
            1 => Some(format!("1 {one}")),
            n => Some(format!("{n} {many}")),
        };
        let said: Vec<String> = [
            count(r.warnings.len(), "warning", "warnings"),
            count(self.notes().len(), "note", "notes"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !said.is_empty() {
            out.push((format!("{}: w shows them", said.join(", ")), true));
        }
        out
    }

    /// The notes `w` shows: the report's, and the note the printed formats put in their header
    /// where a bf16 / f16 pair was judged by a fixed preset (a user's check: the table, the
    /// Markdown and the HTML said it, the view never did).
    fn notes(&self) -> Vec<&str> {
        self.report
            .notes
            .iter()
            .map(String::as_str)
            .chain(view::preset_note(&self.report))
            .collect()
    }

    /// The warnings and notes overlay (`w`).
    fn draw_warnings(&self, frame: &mut Frame<'_>, area: Rect) {
        let r = &self.report;
        let mut lines: Vec<Line> = Vec::new();
        let notes: Vec<String> = self.notes().into_iter().map(str::to_string).collect();
        for (what, list) in [("warning", &r.warnings), ("note", &notes)] {
            for text in list {
                lines.push(Line::from(vec![
                    Span::styled(
                        format!("{what}: "),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(text.clone()),
                ]));
            }
        }
        let width = area.width.saturating_sub(4).clamp(20, 120);
        self.draw_overlay(frame, area, width, lines, "warnings and notes");
    }

    /// The help or the warnings: `lines` wrapped by word in a bordered box `width` wide
    /// (at most the terminal's), as tall as they are drawn ([`drawn_rows`]), and scrolled
    /// from [`Tui::overlay_top`] where that is taller than the terminal.
    fn draw_overlay(
        &self,
        frame: &mut Frame<'_>,
        area: Rect,
        width: u16,
        lines: Vec<Line<'_>>,
        what: &str,
    ) {
        let width = width.min(area.width);
        let p = Paragraph::new(lines).wrap(Wrap { trim: false });
        // With the border: two lines and two columns.
        let tall = drawn_rows(&p, width.saturating_sub(2)) + 2;
        let height = u16::try_from(tall).unwrap_or(u16::MAX).min(area.height);
        let last = tall.saturating_sub(usize::from(height));
        self.overlay_max.set(last);
        let top = self.overlay_top.min(last);
        let title = if last == 0 {
            format!(" {what} (any key closes) ")
        } else {
            format!(
                " {what}, lines {}-{} of {}: j/k scroll, other keys close ",
                top + 1,
                top + usize::from(height.saturating_sub(2)),
                tall.saturating_sub(2)
            )
        };
        let p = p
            .block(Block::bordered().title(title))
            .scroll((u16::try_from(top).unwrap_or(u16::MAX), 0));
        let rect = centered(area, width, height);
        frame.render_widget(Clear, rect);
        frame.render_widget(p, rect);
    }

    /// The header of a column: the sort key's carries the direction (but in plain execution
    /// order).
    fn header(&self, c: Col) -> String {
        let plain = self.sort == SortKey::Order && !self.descending();
        if !plain && c == self.sort.column() {
            let arrow = if self.descending() { '↓' } else { '↑' };
            format!("{}{arrow}", c.label())
        } else {
            c.label().to_string()
        }
    }

    /// The columns drawn at `width` and their widths, left to right: those switched on, the
    /// least important dropped until they fit.
    fn columns(&self, width: u16) -> Vec<(Col, u16)> {
        let widest = |c: Col| -> u16 {
            let content = match c {
                Col::Name => self.name_width(),
                Col::Index => self.report.ops.len().max(1).to_string().len(),
                Col::Status => self.status_width(),
                c => c.content_width(),
            };
            content.max(self.header(c).chars().count()) as u16
        };
        let truth = self.truth();
        let sorted_by = self.sort.column();
        let mut order: Vec<Col> = PRIORITY[..4].to_vec();
        order.push(sorted_by);
        order.extend(self.promoted.iter().copied());
        order.extend(PRIORITY[4..].iter().copied());
        let mut seen = Vec::new();
        // The sort key's column is shown whether or not the chooser has it on (a user's check:
        // rows sorted by local growth, its column off by default, in an order nothing shown
        // explained).
        order.retain(|&c| {
            let keep = !seen.contains(&c) && c.applies(truth) && (self.is_on(c) || c == sorted_by);
            seen.push(c);
            keep
        });
        let mut out: Vec<(Col, u16)> = Vec::new();
        let mut used = 0u16;
        for c in order {
            let w = widest(c);
            let sep = u16::from(!out.is_empty());
            if c == Col::Name {
                // The name takes what is left after status and rel err (when shown), at
                // least 12 (long names keep their tail: `…self_attn.k_norm`).
                let rest: u16 = [Col::Status, Col::RelErr]
                    .iter()
                    .filter(|&&c| self.is_on(c))
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
        // Back in the table's column order.
        out.sort_by_key(|(c, _)| COLUMNS.iter().position(|x| x == c));
        out
    }

    /// The widest status of the rows (2 without ops), read as the name's width is.
    fn status_width(&self) -> usize {
        *self.status_width.get_or_init(|| {
            self.report
                .ops
                .par_rows()
                .with_min_len(4096)
                .map(|r| r.status().as_str().len())
                .max()
                .unwrap_or(2)
        })
    }

    /// The longest op name in characters (2 without ops), read through the rows' views (in
    /// parallel, once per report: every frame asks for it).
    fn name_width(&self) -> usize {
        *self.name_width.get_or_init(|| {
            self.report
                .ops
                .par_rows()
                .with_min_len(4096)
                .map(|r| r.name().chars().count())
                .max()
                .unwrap_or(2)
        })
    }

    fn draw_ops(&mut self, frame: &mut Frame<'_>, area: Rect) {
        let cols = self.columns(area.width);
        let measure = Measure::of(&self.report.tolerance);
        let first = self.report.first_divergence.as_ref().map(|f| f.index);
        let header = Row::new(cols.iter().map(|(c, _)| Cell::from(self.header(*c))))
            .style(Style::new().add_modifier(Modifier::BOLD));
        // Only the rows that fit are built (a report may have 100,000 ops): the window
        // follows the cursor.
        let visible = usize::from(area.height.saturating_sub(2)).max(1);
        if std::mem::take(&mut self.center)
            && !(self.offset..self.offset + visible).contains(&self.cursor)
        {
            self.offset = self.cursor.saturating_sub(visible / 2);
        }
        if self.cursor < self.offset {
            self.offset = self.cursor;
        } else if self.cursor >= self.offset + visible {
            self.offset = self.cursor + 1 - visible;
        }
        self.offset = self.offset.min(self.rows.len().saturating_sub(visible));
        let window = self.rows.iter().skip(self.offset).take(visible);
        let rows: Vec<Row> = window
            .map(|&i| {
                // built alone (a compact decode step)
                let op = self.report.ops.row(i).op();
                let style = match op.status {
                    Status::Ok => Style::new(),
                    s if s.is_divergence() => Style::new().fg(Color::Red),
                    _ => Style::new().fg(Color::Yellow),
                };
                Row::new(cols.iter().map(|(c, w)| {
                    let text = keep_tail(c.text(i, &op, first == Some(i), measure), *w);
                    Cell::from(text)
                }))
                .style(style)
            })
            .collect();
        let filter = match (&self.filter, self.layer) {
            (Some(re), _) => Some(format!("filter /{}/", re.as_str())),
            (None, Some(l)) => Some(format!("layer {l}")),
            (None, None) => None,
        };
        let title = match filter {
            Some(f) => format!(
                " {} of {} ops, {f}, sort: {} ",
                self.rows.len(),
                self.report.ops.len(),
                self.sort_text()
            ),
            None => format!(" {} ops, sort: {} ", self.rows.len(), self.sort_text()),
        };
        let table = Table::new(rows, cols.iter().map(|(_, w)| Constraint::Length(*w)))
            .header(header)
            .block(Block::new().borders(Borders::TOP).title(title))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default()
            .with_selected((!self.rows.is_empty()).then(|| self.cursor - self.offset));
        frame.render_stateful_widget(table, area, &mut state);
    }

    /// The per-layer overview (`l`): a line per layer; in a decode report two, the prefill's
    /// and the decode steps' (lumped together, a decode step's error hid the prefill's).
    fn draw_layers(&self, frame: &mut Frame<'_>, area: Rect) {
        let all = self.layer_overview(usize::from(area.width));
        let top = self
            .layer_offset
            .min(all.len().saturating_sub(self.overview_rows));
        let title = match self.report.steps.is_empty() {
            true => " per layer (j/k scroll, l: back to the ops) ",
            false => " per layer, the prefill and the decode steps apart (j/k scroll, l: back) ",
        };
        let title = fitting(area.width, title, " per layer (j/k scroll, l: back) ");
        let shown = all
            .into_iter()
            .enumerate()
            .skip(top)
            .take(self.overview_rows);
        frame.render_widget(overview(shown, None, title), area);
    }

    /// The per-layer overview's lines (true: diverged) for `width` columns.
    fn layer_overview(&self, width: usize) -> Vec<(String, bool)> {
        use unicode_width::UnicodeWidthStr;
        let cache = self
            .layer_cache
            .get_or_init(|| match self.report.steps.is_empty() {
                true => {
                    let (lines, note, _) = view::shown_layer_lines(&self.report);
                    LayerCache::OnePass(lines, note)
                }
                false => {
                    let (lines, note) = view::shown_layer_phase_lines(&self.report);
                    LayerCache::Phases(lines, note)
                }
            });
        // The layers left out, said last (a million layers listed took the table 4.5 GiB).
        let note = |note: &Option<String>| note.clone().map(|n| (n, false));
        let (lines, left_out) = match cache {
            LayerCache::Phases(lines, left_out) => (lines, left_out),
            LayerCache::OnePass(lines, left_out) => {
                // As below (a newcomer's run at 80 columns: the full form cut the first bad op
                // off every line).
                let w = number_width(lines.iter().map(|l| l.layer), 3);
                let fit = fullest_form(|form| {
                    lines
                        .iter()
                        .all(|l| phase_line((l.layer, w), None, Some(l), form).0.width() <= width)
                });
                return lines
                    .iter()
                    .map(|l| phase_line((l.layer, w), None, Some(l), fit))
                    .chain(note(left_out))
                    .collect();
            }
        };
        // A phase no layer has (the prefill under `diff --steps 3`) gets no lines.
        let has_prefill = lines.iter().any(|(_, p, _)| p.is_some());
        let has_decode = lines.iter().any(|(_, _, d)| d.is_some());
        let phases = |entry| layer_phases(entry, (has_prefill, has_decode));
        let w = number_width(lines.iter().map(|(layer, _, _)| *layer), 3);
        let fit = fullest_form(|form| {
            lines.iter().flat_map(phases).all(|(layer, phase, l)| {
                phase_line((layer, w), Some(phase), l, form).0.width() <= width
            })
        });
        lines
            .iter()
            .flat_map(phases)
            .map(|(layer, phase, l)| phase_line((layer, w), Some(phase), l, fit))
            .chain(note(left_out))
            .collect()
    }

    /// The per-step overview (`p`): a line per decode step, the prefill first, diverged
    /// steps in red.
    fn draw_steps(&self, frame: &mut Frame<'_>, area: Rect) {
        let top = self
            .step_offset
            .min(self.report.steps.len().saturating_sub(self.overview_rows));
        // The lines shown, made alone: a paragraph of every step scrolled to the cursor went
        // blank past 65,535 steps (its scroll is a u16: a bad-input hunt) and made every
        // step's line at every frame.
        // One width for the step's number on every line (past step 99,999 it widened).
        let w = number_width(self.report.steps.iter().map(|s| s.step), 4);
        let shown: Vec<(usize, &divergence_diff::StepSummary)> = self
            .report
            .steps
            .iter()
            .enumerate()
            .skip(top)
            .take(self.overview_rows)
            .collect();
        let top1 = view::has_step_tokens(&self.report);
        let line = |s: &divergence_diff::StepSummary, form: usize| -> String {
            let top1 = match top1 {
                true => format!("; top-1 {}", view::step_top1(&self.report, s.step)),
                false => String::new(),
            };
            step_line(s, w, &top1, form)
        };
        // The fullest form whose lines all fit (at 120 columns the first diverging op, the
        // line's point, was cut off every line).
        let width = usize::from(area.width);
        let fit = fullest_form(|form| {
            shown.iter().all(|(_, s)| {
                unicode_width::UnicodeWidthStr::width(line(s, form).as_str()) <= width
            })
        });
        let lines = shown
            .iter()
            .map(|&(i, s)| (i, (whole_fields(line(s, fit), width), s.diverged > 0)));
        let title = fitting(
            area.width,
            " per step, 0 = prefill (j/k move, Enter: its first diverging op, p: back) ",
            " per step (j/k, Enter: its first bad op, p: back) ",
        );
        frame.render_widget(overview(lines, Some(self.step_cursor), title), area);
    }

    fn draw_details(&self, frame: &mut Frame<'_>, area: Rect, plot: bool) {
        // the one row shown whole, built alone
        let Some(op) = self.selected() else {
            return;
        };
        let op: &OpResult = &op;
        let lines = self.details_lines(op);
        let block = Block::new()
            .borders(Borders::TOP)
            .title(format!(" {} ", op.name));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let para = Paragraph::new(lines).wrap(Wrap { trim: false });
        // The text before the plot: where the plot would leave the text fewer than
        // [`TEXT_BEFORE_PLOT`] rows and it has more lines, the plot is left out (at 60x20 the
        // details showed one line, the hint that names the bug cut without a word: a visual
        // check).
        let total = para.line_count(inner.width);
        let with_plot = usize::from(inner.height.saturating_sub(PLOT_H));
        let plot = plot && (total <= with_plot || with_plot >= TEXT_BEFORE_PLOT);
        let plot_h = if plot { PLOT_H.min(inner.height) } else { 0 };
        let [text, chart] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(plot_h)]).areas(inner);
        // Text taller than its room (a short terminal under a long header) says how much is
        // left out on its last row, not a line cut off without a word (a visual check at
        // 80x24 lost the norms, and a line ended "at decode step").
        let rows = usize::from(text.height);
        if total > rows && rows >= 2 {
            let [shown, more] =
                Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(text);
            frame.render_widget(para, shown);
            let hidden = total - usize::from(shown.height);
            // Its shorter forms where the width asks (at 60 columns it was cut: a visual
            // check).
            let said = [
                format!("… {hidden} more lines: a taller terminal shows them (or --format json)"),
                format!("… {hidden} more lines (a taller terminal, or --format json)"),
                format!("… {hidden} more lines"),
            ]
            .into_iter()
            .find(|t| t.chars().count() <= usize::from(more.width))
            .unwrap_or_else(|| format!("… {hidden} more"));
            frame.render_widget(
                Paragraph::new(Line::styled(said, Style::new().add_modifier(Modifier::DIM))),
                more,
            );
        } else {
            frame.render_widget(para, text);
        }
        if let Some(p) = self.profile(RowView::from(op)).filter(|_| plot) {
            draw_profile(frame, chart, p);
        }
    }

    /// The rows the details' text takes at `width` columns, with its top border: at least
    /// [`DETAIL_TEXT_H`], more where the row's reason and hints wrap past it (a newcomer's
    /// run: a hint was cut mid-sentence at any terminal height).
    fn details_text_h(&self, width: u16) -> u16 {
        let Some(op) = self.selected() else {
            return DETAIL_TEXT_H;
        };
        let text = Paragraph::new(self.details_lines(&op)).wrap(Wrap { trim: false });
        let h = u16::try_from(text.line_count(width)).unwrap_or(u16::MAX);
        h.saturating_add(1).max(DETAIL_TEXT_H)
    }

    /// The details' text lines of `op`.
    fn details_lines(&self, op: &OpResult) -> Vec<Line<'static>> {
        let mut lines = vec![Line::raw(format!(
            "status {}   {}",
            op.status,
            op.reason.clone().unwrap_or_default()
        ))];
        if let Some(m) = &op.mapped {
            lines.push(Line::raw(format!("mapped {m}")));
        }
        // The diagnosis first (the hints, the origin, the positions), then the numbers the
        // table's columns show too: a terminal too short for every line cuts the numbers, not
        // the hint (a user's check at 80x24 lost the hint and the positions).
        for h in self.report.hints.iter().filter(|h| *h.op == *op.name) {
            lines.push(Line::styled(
                format!("hint {}: {}", h.code.as_str(), h.message),
                Style::new().add_modifier(Modifier::BOLD),
            ));
        }
        let is_first = self
            .report
            .first_divergence
            .as_ref()
            .is_some_and(|f| *f.name == *op.name);
        if is_first {
            if let Some(t) = view::origin_text(&self.report) {
                lines.push(Line::raw(format!("origin {t}")));
            }
            if let Some(t) = view::positions_text(&self.report) {
                lines.push(Line::raw(format!("positions {t}")));
            }
        }
        // Each number is kept on its label's line: the paragraph wraps between fields, not
        // inside one (at 60-72 columns `outside` / `tol 100.00%`, `NaN/Inf` / `none` and
        // `cosine` / `1.000000` were split; a check of session 52).
        lines.extend([
            Line::raw(format!(
                "{}   {}   {}",
                field("shape", &view::shape_cell(op)),
                field("dtype", &view::dtype_cell(op)),
                view::op_judged_text(&self.report, op)
            )),
            Line::raw(format!(
                "{}   {}   {}   {}",
                field("||ours||", &view::num(op.rule.ours_l2)),
                field("||ref||", &view::num(op.rule.ref_l2)),
                field("rel err", &view::num(op.errors.rel_l2_err)),
                field("cosine", &view::cos(op.errors.cosine))
            )),
            // The share outside the element-wise tolerance, as the table's and the HTML's
            // details give it (a visual check found it in every view but this one), on the
            // line of the max error, whose NaN/Inf counts say `none` where there are none to
            // make room: a line more pushed the norms out at 80x24.
            Line::raw(format!(
                "{}{}   {}   {}",
                field("max|o-r|", &view::num(op.errors.max_abs_err)),
                op.errors
                    .max_abs_err_index
                    .as_ref()
                    .map_or_else(String::new, |ix| format!(" at {ix:?}")),
                field("outside tol", &view::outside_tol_text(op)),
                field("NaN/Inf", &nonfinite_counts(op))
            )),
        ]);
        if let Some(t) = view::truth_line(op) {
            lines.push(Line::raw(format!("vs truth {t}")));
        }
        lines
    }

    fn draw_footer(&self, frame: &mut Frame<'_>, area: Rect) {
        let line = if let Some(text) = &self.input {
            Line::raw(format!(
                "/{text}▏ (regex or layer number; Enter applies, Esc cancels)"
            ))
        } else if let Some(m) = &self.message {
            Line::styled(m.clone(), Style::new().fg(Color::Yellow))
        } else if self.chooser.is_some() {
            Line::raw("j/k move  Space toggle  Esc/c close")
        } else if self.layers {
            // The overviews take their own keys, not the ops' (a bad-input hunt found the
            // ops' keys listed under the per-step overview, where they do nothing).
            Line::raw("j/k scroll  l/Esc back to the ops  ? help  q quit")
        } else if self.steps_view {
            Line::raw("j/k move  ⏎ the step's first diverging op  p/Esc back  ? help  q quit")
        } else {
            let warnings = !self.report.warnings.is_empty() || !self.notes().is_empty();
            footer_line(
                &self.sort_short(),
                usize::from(area.width),
                !self.report.steps.is_empty(),
                warnings,
            )
        };
        frame.render_widget(Paragraph::new(line), area);
    }

    /// The column chooser: every column of the report with its state, over the table.
    fn draw_chooser(&self, frame: &mut Frame<'_>, area: Rect) {
        let cols = self.choosable();
        let drawn: Vec<Col> = self
            .columns(area.width)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let items: Vec<ListItem> = cols
            .iter()
            .map(|&c| {
                let on = self.is_on(c);
                let (label, what) = c.describe();
                let room = if on && !drawn.contains(&c) {
                    " (no room)"
                } else {
                    ""
                };
                let text = format!("[{}] {label:<10} {what}{room}", if on { 'x' } else { ' ' });
                let style = if on {
                    Style::new()
                } else {
                    Style::new().fg(Color::DarkGray)
                };
                ListItem::new(Line::styled(text, style))
            })
            .collect();
        let rect = centered(area, 50, cols.len() as u16 + 2);
        let list = List::new(items)
            .block(Block::bordered().title(" columns: Space shows / hides, Esc closes "))
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = ListState::default().with_selected(self.chooser);
        frame.render_widget(Clear, rect);
        frame.render_stateful_widget(list, rect, &mut state);
    }

    /// Every key, over the view (any key closes it).
    fn draw_help(&self, frame: &mut Frame<'_>, area: Rect) {
        let keys: Vec<String> = SORT_KEYS
            .iter()
            .filter(|k| k.applies(self.truth()))
            .map(|k| {
                match k {
                    SortKey::Order => "order",
                    k => k.label(),
                }
                .to_string()
            })
            .collect();
        let mut lines: Vec<Line> = HELP
            .iter()
            .map(|(k, what)| {
                Line::from(vec![
                    Span::styled(
                        format!("{k:<14}"),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(*what),
                ])
            })
            .collect();
        lines.push(Line::raw(""));
        lines.push(Line::raw(format!("sort keys: {}", keys.join(", "))));
        self.draw_overlay(frame, area, 76, lines, "keys");
    }
}

/// The key help (`?`): keys and what they do.
const HELP: [(&str, &str); 15] = [
    (
        "j k ↓ ↑",
        "move (Space/PgDn, PgUp: 10 rows; g/Home top, G/End bottom)",
    ),
    ("f / o", "the first divergence / its origin"),
    ("n / N", "the next / previous divergent op"),
    ("] / [", "the same op in the next / previous decode step"),
    ("w", "the report's warnings and notes"),
    ("/", "filter: a regex, or a layer number; / Enter clears"),
    ("s / S", "sort by the next / previous metric"),
    ("r", "reverse the sort (missing values stay last)"),
    ("c", "columns: show / hide (the op name stays)"),
    (
        "Enter, d",
        "details; the first divergence's error per position",
    ),
    ("l", "per-layer overview"),
    (
        "p",
        "per-step overview (Enter: a step's first diverging op)",
    ),
    ("?", "this help"),
    (
        "q, Esc",
        "quit (Esc closes an overlay or the details first)",
    ),
    ("Ctrl-C", "quit, also while typing"),
];

/// Moves an overview's first line `o` (at most `last`) for a scrolling key; false for any
/// other key.
fn scroll(code: KeyCode, o: &mut usize, last: usize, page: usize) -> bool {
    match code {
        KeyCode::Down | KeyCode::Char('j') => *o = (*o + 1).min(last),
        KeyCode::Up | KeyCode::Char('k') => *o = o.saturating_sub(1),
        KeyCode::PageDown | KeyCode::Char(' ') => *o = (*o + page).min(last),
        KeyCode::PageUp => *o = o.saturating_sub(page),
        KeyCode::Home | KeyCode::Char('g') => *o = 0,
        KeyCode::End | KeyCode::Char('G') => *o = last,
        _ => return false,
    }
    true
}

/// The rows `p` (no block) takes wrapped at `width` columns, as it is drawn: to its last row
/// that is not blank (`Paragraph::line_count` counted one or two short at some widths, 60 to
/// 72 among them: a review found the help's last line out of reach), at most
/// [`MAX_OVERLAY_ROWS`] (the scratch buffer of a frame: a warning holding a name of megabytes
/// would have asked for 65,535 rows of cells at every frame).
fn drawn_rows(p: &Paragraph<'_>, width: u16) -> usize {
    if width == 0 {
        return 0;
    }
    let guess = p.line_count(width);
    let h = u16::try_from((guess + guess / 4 + 8).min(MAX_OVERLAY_ROWS)).unwrap_or(u16::MAX);
    let area = Rect::new(0, 0, width, h);
    let mut buf = ratatui::buffer::Buffer::empty(area);
    ratatui::widgets::Widget::render(p.clone(), area, &mut buf);
    (0..h)
        .rev()
        .find(|&y| (0..width).any(|x| buf[(x, y)].symbol() != " "))
        .map_or(0, |y| usize::from(y) + 1)
}

/// Most rows the help or the warnings are drawn into ([`drawn_rows`]); a longer text's rest
/// is not reached.
const MAX_OVERLAY_ROWS: usize = 4096;

/// `title`, or `short` where `title` is wider than `width` columns (at 60 columns the keys
/// were cut off the overviews' titles).
fn fitting(width: u16, title: &'static str, short: &'static str) -> &'static str {
    match unicode_width::UnicodeWidthStr::width(title) <= usize::from(width) {
        true => title,
        false => short,
    }
}

/// An overview (per layer, per step): the lines shown, each with its index among all (true:
/// diverged, in red; the `cursor`'s reversed), under a rule titled `title`.
fn overview(
    lines: impl Iterator<Item = (usize, (String, bool))>,
    cursor: Option<usize>,
    title: &'static str,
) -> Paragraph<'static> {
    let lines: Vec<Line> = lines
        .map(|(i, (text, bad))| {
            let mut style = match bad {
                true => Style::new().fg(Color::Red),
                false => Style::new(),
            };
            if cursor == Some(i) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Line::styled(text, style)
        })
        .collect();
    Paragraph::new(lines).block(Block::new().borders(Borders::TOP).title(title))
}

/// The fewest rows of the details' text shown above the per-position plot: where the plot
/// would leave fewer and the text has more lines, the plot is left out.
const TEXT_BEFORE_PLOT: usize = 6;

/// The forms of a decode report's per-layer line, from the fullest (0) to the shortest.
const PHASE_FORMS: usize = 4;

/// A layer of a decode report's per-layer overview: its prefill's and its decode steps' tallies.
type PhaseEntry = view::PhaseLines;

/// A layer's phase lines of the per-layer overview: `(layer, phase, its tally)` for each phase
/// `shown` (the prefill, the decode steps).
fn layer_phases(
    (layer, prefill, decode): &PhaseEntry,
    shown: (bool, bool),
) -> Vec<(usize, &'static str, Option<&view::LayerLine>)> {
    [("prefill", prefill, shown.0), ("decode", decode, shown.1)]
        .into_iter()
        .filter(|&(_, _, shown)| shown)
        .map(|(phase, l, _)| (*layer, phase, l.as_ref()))
        .collect()
}

/// `line` cut to `width` columns after its last whole field (fields end at `; `) where it is
/// wider, never mid-word (a visual check at 80 columns read `78/89 diver` and `top`); a first
/// field wider than the line is left to be cut at the edge.
fn whole_fields(line: String, width: usize) -> String {
    use unicode_width::UnicodeWidthStr;
    if line.width() <= width {
        return line;
    }
    let end = line
        .match_indices("; ")
        .map(|(i, _)| i)
        .take_while(|&i| line[..i].width() <= width)
        .last();
    match end {
        Some(i) => line[..i].to_string(),
        None => line,
    }
}

/// The fullest of [`phase_line`]'s forms in which every line `fits`; else the shortest (a
/// step's line then ends after its last whole field, [`whole_fields`]; a layer's shortest line
/// is one field, cut at the edge).
fn fullest_form(fits: impl Fn(usize) -> bool) -> usize {
    (0..PHASE_FORMS)
        .find(|&form| fits(form))
        .unwrap_or(PHASE_FORMS - 1)
}

/// The digits of the largest of `numbers`, at least `min`: one width for every line of an
/// overview (past layer 999 and step 99,999 the column widened from one line to the next: a
/// bad-input hunt).
fn number_width(numbers: impl Iterator<Item = usize>, min: usize) -> usize {
    numbers.max().map_or(0, |n| n.to_string().len()).max(min)
}

/// A step's line in the per-step overview, its number right-aligned in `w` columns, `top1`
/// its token's agreement (`; top-1 ...`, or empty), in `form` (of [`PHASE_FORMS`]): in full,
/// `81 of 89 ops diverged; top-1 FLIP; worst rel err 7.070e-01 at OP; first diverging OP`;
/// then the first diverging op first (what is cut where none fits is the rest) and the
/// counts short; then the worst's value alone; then no worst where an op diverged.
fn step_line(s: &divergence_diff::StepSummary, w: usize, top1: &str, form: usize) -> String {
    let missing = match s.missing {
        0 => String::new(),
        n => format!(", {n} missing"),
    };
    let counts = match form {
        0 => format!("{} of {} ops diverged{missing}", s.diverged, s.compared),
        _ => format!("{}/{} diverged{missing}", s.diverged, s.compared),
    };
    let worst = match (&s.worst_op, s.worst_rel_err, form) {
        _ if form >= 3 && s.first_divergence.is_some() => None,
        // (An error of 0 is every op's: none named.)
        (Some(_), Some(v), 0 | 1) if v == 0.0 => {
            Some(format!("worst rel err {}", view::num(Some(v))))
        }
        (Some(op), Some(v), 0 | 1) => Some(format!("worst rel err {} at {op}", view::num(Some(v)))),
        (Some(op), None, 0 | 1) => Some(format!("worst rel err not measured, at {op}")),
        (Some(_), Some(v), _) => Some(format!("worst {}", view::num(Some(v)))),
        (Some(_), None, _) => Some("worst not measured".to_string()),
        _ => Some("no error measured".to_string()),
    };
    let first = s.first_divergence.as_ref().map(|n| match form {
        0 => format!("first diverging {n}"),
        _ => format!("first bad {n}"),
    });
    match (form, first) {
        (0, first) => {
            let parts: Vec<String> = worst.into_iter().chain(first).collect();
            format!("step {:>w$}  {counts}{top1}; {}", s.step, parts.join("; "))
        }
        // The narrowest form: the op, then the token's word, then the counts, which a line
        // still too wide loses first (a visual check at 80 columns: "top-1 a" for agree).
        (_, Some(first)) if form + 1 == PHASE_FORMS => {
            let worst = worst.map_or_else(String::new, |w| format!("; {w}"));
            format!("step {:>w$}  {first}{top1}; {counts}{worst}", s.step)
        }
        (_, first) => {
            let first = first.map_or_else(String::new, |f| format!("{f}; "));
            let worst = worst.map_or_else(String::new, |w| format!("; {w}"));
            format!("step {:>w$}  {first}{counts}{top1}{worst}", s.step)
        }
    }
}

/// One phase's line of a layer in a decode report's per-layer overview (true: diverged), its
/// number right-aligned in `w` columns, in `form` (of [`PHASE_FORMS`]): in full as a one-pass
/// report's line, `1 of 3 ops diverged; worst rel err 5.000e-02 at self_attn.k_norm@2; first
/// bad self_attn.k_norm@2`; then `1/3 diverged; worst 5.000e-02@2; first bad ...`; then the
/// worst and the first bad op alone; then the first bad op alone where there is one (at 60
/// columns the third form cut it). A one-pass report's line has no phase (`phase` `None`), in
/// the same forms.
fn phase_line(
    (layer, w): (usize, usize),
    phase: Option<&str>,
    l: Option<&view::LayerLine>,
    form: usize,
) -> (String, bool) {
    // A one-pass report's line has no phase column.
    let phase = phase.map_or_else(String::new, |p| format!("{p:<7}  "));
    let Some(l) = l else {
        return (
            format!("layer {layer:>w$}  {phase}{:<8} no ops", "-"),
            false,
        );
    };
    // After a status that says "diverged", the counts do not say it again (a visual check
    // read `diverged 6 of 12 ops diverged`).
    let said = l.status == divergence_diff::Status::Diverged.as_str();
    let counts = match (form, said) {
        (0, false) => format!("{} of {} ops diverged; ", l.diverged, l.ops),
        (0, true) => format!("in {} of {} ops; ", l.diverged, l.ops),
        (1, false) => format!("{}/{} diverged; ", l.diverged, l.ops),
        (1, true) => format!("in {}/{}; ", l.diverged, l.ops),
        _ => String::new(),
    };
    let worst = match (&l.worst_op, l.worst_rel, form) {
        _ if form >= 3 && l.first_bad.is_some() => String::new(),
        // (An error of 0 is every op's: none named.)
        (Some(_), Some(v), 0) if v == 0.0 => format!("worst rel err {}", view::num(Some(v))),
        (Some(op), Some(v), 0) => format!("worst rel err {} at {op}", view::num(Some(v))),
        (Some(_), Some(v), _) => match l.worst_step {
            0 => format!("worst {}", view::num(Some(v))),
            s => format!("worst {}@{s}", view::num(Some(v))),
        },
        _ => "no error measured".to_string(),
    };
    let first = l
        .first_bad
        .as_ref()
        .map_or_else(String::new, |n| match worst.is_empty() {
            true => format!("first bad {n}"),
            false => format!("; first bad {n}"),
        });
    let text = format!(
        "layer {layer:>w$}  {phase}{:<8} {counts}{worst}{first}",
        l.status
    );
    (text, l.diverged > 0)
}

/// `label value` for the details, with a no-break space (U+00A0, shown as a space) between
/// the label's words and before the value's first word: the paragraph's word wrap then breaks
/// between fields or inside the rest of a value (`(rtol ..., atol ...)`), never between a
/// label and its number.
fn field(label: &str, value: &str) -> String {
    const NBSP: char = '\u{a0}';
    let (first, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut out = label.replace(' ', "\u{a0}");
    out.push(NBSP);
    out.push_str(first);
    if !rest.is_empty() {
        out.push(' ');
        out.push_str(rest);
    }
    out
}

/// An op's NaN / Inf counts for the details: `ours 1/0, ref 0/0`, `-` for a side not read
/// (`ours -/-, ref 0/1` of an op only in ref), or `none` where both sides were read and hold
/// none (a visual check read a side never read as `0/0`, and as `none`).
fn nonfinite_counts(op: &OpResult) -> String {
    let n = &op.nonfinite;
    let counts = [n.nan_ours, n.inf_ours, n.nan_ref, n.inf_ref];
    if counts == [Some(0); 4] {
        return "none".to_string();
    }
    let [a, b, c, d] = counts.map(view::count);
    format!("ours {a}/{b}, ref {c}/{d}")
}

/// The status bar: the sort, then the keys that fit `width`, the most useful kept first; a
/// decode report's step keys (`]/[`, `p`) and `w` only where there are steps, warnings or
/// notes (a UX review found them in the help alone, at any width).
fn footer_line(sort: &str, width: usize, steps: bool, warnings: bool) -> Line<'static> {
    // (text, priority: lower stays longer, whether it applies), in display order.
    // The moves to the divergence before the sort and the columns (a UX review at 80
    // columns had the column chooser's key, not `f`).
    let keys: [(&str, u8, bool); 12] = [
        ("q quit", 1, true),
        ("f/o first/origin", 2, true),
        ("n/N next/prev", 4, true),
        ("]/[ step", 5, steps),
        ("/ filter", 3, true),
        ("s/S/r sort", 6, true),
        ("c columns", 8, true),
        ("⏎ details", 7, true),
        ("l layers", 9, true),
        ("p steps", 10, steps),
        ("w warnings", 11, warnings),
        ("? help", 0, true),
    ];
    let lead = format!("{sort} │ ");
    let mut budget = width.saturating_sub(lead.chars().count());
    let mut by_priority: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].2).collect();
    by_priority.sort_by_key(|&i| keys[i].1);
    // In priority order until one does not fit: a key of lower priority is not shown in the
    // place of one that did not fit (a visual check saw `s/S/r sort` kept and `n/N` dropped at
    // 80 columns).
    let mut keep = vec![false; keys.len()];
    for i in by_priority {
        let w = keys[i].0.chars().count() + 2;
        if w > budget {
            break;
        }
        keep[i] = true;
        budget -= w;
    }
    let shown: Vec<&str> = (0..keys.len())
        .filter(|&i| keep[i])
        .map(|i| keys[i].0)
        .collect();
    Line::from(vec![
        Span::styled(lead, Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(shown.join("  ")),
    ])
}

/// `v`'s bits, ordered as [`f64::total_cmp`] orders the numbers; never `u64::MAX` (nor 0) for a
/// number that is not NaN, so `u64::MAX` sorts after every number in both directions.
fn ordered_bits(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// A `width` x `height` rectangle in the middle of `area` (clipped to it).
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// `1e-03` for decade -3.
fn decade(d: i32) -> String {
    format!("1e{}{:02}", if d < 0 { '-' } else { '+' }, d.unsigned_abs())
}

/// The per-position profile as bars: the relative error per token position on a log scale
/// (whole decades, labelled on the left), red with a `▲` under it where the position is over
/// its tolerance (a `─` line through the empty cells of the tolerance's row); a position without a relative error (NaN/Inf) that is over it is a full red
/// bar, an exact one no bar. Positions are merged (the largest, over when any is) when there
/// are more than columns. A caption on the right when there is room: in full, or short on a
/// narrow terminal ([`caption_lines`]), never cut.
fn draw_profile(frame: &mut Frame<'_>, area: Rect, p: &PositionProfile) {
    let t = p.rel_err.len();
    let gutter: u16 = 6;
    if t == 0 || area.height < 2 || area.width < gutter + 4 {
        return;
    }
    let logs: Vec<f64> = p
        .rel_err
        .iter()
        .chain(&p.rel_tol)
        .filter_map(|v| *v)
        .filter(|v| *v > 0.0 && v.is_finite())
        .map(f64::log10)
        .collect();
    let (lo, hi) = match (
        logs.iter().copied().reduce(f64::min),
        logs.iter().copied().reduce(f64::max),
    ) {
        (Some(a), Some(b)) => (a.floor() as i32, b.ceil() as i32),
        _ => (-1, 0),
    };
    let hi = hi.max(lo + 1);
    let rows = area.height - 1;
    let max_ticks = u64::from(rows) * 8;
    let level = |e: Option<f64>, over: bool| -> u64 {
        match e {
            Some(v) if v > 0.0 && v.is_finite() => {
                let f = (v.log10() - f64::from(lo)) / f64::from(hi - lo);
                ((f * max_ticks as f64).round() as u64).clamp(1, max_ticks)
            }
            Some(_) => 0,
            None if over => max_ticks,
            None => 0,
        }
    };
    // The caption on the right: in full where it fits beside at least 16 bar columns, else
    // in short, else none. Its width is measured with `t` positions a bar (the most digits),
    // and reserved whole, with the 2 columns between it and the bars.
    let caption = [false, true]
        .into_iter()
        .map(|short| (short, caption_width(&caption_lines(p, t, short))))
        .find(|&(_, w)| area.width.saturating_sub(gutter + 2 + 16) >= w);
    let avail = usize::from(area.width - gutter - caption.map_or(0, |(_, w)| w + 2));
    let (n, bar_w, gap) = if avail >= 2 * t {
        (t, (avail / t - 1).min(2) as u16, 1u16)
    } else {
        (t.min(avail), 1, 0)
    };
    let bars: Vec<Bar> = (0..n)
        .map(|b| {
            let range = b * t / n..(b + 1) * t / n;
            let over = p.over[range.clone()].iter().any(|&o| o);
            let value = range
                .map(|i| level(p.rel_err[i], p.over[i]))
                .max()
                .unwrap_or(0);
            let (color, mark) = if over {
                (Color::Red, "▲")
            } else {
                (Color::Gray, " ")
            };
            Bar::default()
                .value(value)
                .text_value(String::new())
                .style(Style::new().fg(color))
                .label(Line::styled(mark, Style::new().fg(Color::Red)))
        })
        .collect();
    let bars_w = (n as u16) * (bar_w + gap);
    let [axis, chart, _, text] = Layout::horizontal([
        Constraint::Length(gutter),
        Constraint::Length(bars_w),
        Constraint::Length(2),
        Constraint::Min(0),
    ])
    .areas(area);
    let mut labels = vec![Line::raw(""); usize::from(area.height)];
    labels[0] = Line::raw(decade(hi));
    labels[usize::from(rows) - 1] = Line::raw(decade(lo));
    labels[usize::from(rows)] = Line::styled("over", Style::new().fg(Color::Red));
    frame.render_widget(Paragraph::new(labels), axis);
    let chart_widget = BarChart::default()
        .data(BarGroup::default().bars(&bars))
        .bar_width(bar_w)
        .bar_gap(gap)
        .max(max_ticks);
    frame.render_widget(chart_widget, chart);
    // The tolerance, a line through the empty cells of its row.
    let buf = frame.buffer_mut();
    let step = bar_w + gap;
    for b in 0..n {
        let range = b * t / n..(b + 1) * t / n;
        let Some(tol) = p.rel_tol[range].iter().filter_map(|v| *v).reduce(f64::max) else {
            continue;
        };
        let ticks = level(Some(tol), false);
        if ticks == 0 {
            continue;
        }
        let y = chart.y + rows - 1 - ((ticks - 1) / 8) as u16;
        for x in (chart.x + b as u16 * step..).take(usize::from(step)) {
            if x < chart.right() && y < chart.bottom() && buf[(x, y)].symbol() == " " {
                buf[(x, y)]
                    .set_symbol("─")
                    .set_style(Style::new().fg(Color::Green));
            }
        }
    }
    if let Some((short, _)) = caption {
        let [what, over, tol, per] = caption_lines(p, t.div_ceil(n), short);
        let lines = vec![
            Line::raw(what),
            Line::styled(over, Style::new().fg(Color::Red)),
            Line::styled(tol, Style::new().fg(Color::Green)),
            Line::raw(per),
        ];
        frame.render_widget(Paragraph::new(lines), text);
    }
}

/// The 4 lines of the per-position plot's caption (`per_bar` positions merged into a bar), in
/// full (`rel err per position, log`, `▲ over tolerance: 7 of 16`, ...) or `short` (`log rel
/// err`, `▲ 7/16 over`, ...).
fn caption_lines(p: &PositionProfile, per_bar: usize, short: bool) -> [String; 4] {
    let t = p.rel_err.len();
    // The token positions of the first and last entries (entry i is position i unless the
    // profile numbers them: `PositionProfile::positions`).
    let at = |i: usize| p.positions.get(i).copied().unwrap_or(i);
    let span = format!("{}-{}", at(0), at(t.saturating_sub(1)));
    let tols: Vec<f64> = p.rel_tol.iter().filter_map(|v| *v).collect();
    let range = (
        tols.iter().copied().reduce(f64::min),
        tols.iter().copied().reduce(f64::max),
    );
    let tol = match (range, short) {
        ((Some(a), Some(b)), false) if sci(a) == sci(b) => format!("─ rel tol {}", sci(a)),
        ((Some(a), Some(b)), false) => format!("─ tol {}..{}", sci(a), sci(b)),
        ((Some(a), Some(b)), true) if sci(a) == sci(b) => format!("─ tol {}", sci(a)),
        ((Some(_), Some(b)), true) => format!("─ tol ≤{}", sci(b)),
        (_, false) => "no tolerance".to_string(),
        (_, true) => "no tol".to_string(),
    };
    if short {
        [
            "log rel err".to_string(),
            format!("▲ {}/{t} over", p.affected),
            tol,
            if per_bar > 1 {
                format!("≤{per_bar} pos./bar")
            } else {
                format!("pos. {span}")
            },
        ]
    } else {
        [
            "rel err per position, log".to_string(),
            format!("▲ over tolerance: {} of {t}", p.affected),
            tol,
            if per_bar > 1 {
                format!("up to {per_bar} positions a bar")
            } else {
                format!("positions {span}")
            },
        ]
    }
}

/// The width of the widest caption line, in terminal columns.
fn caption_width(lines: &[String]) -> u16 {
    lines
        .iter()
        .map(|l| Line::raw(l.as_str()).width())
        .max()
        .unwrap_or(0)
        .try_into()
        .unwrap_or(u16::MAX)
}

/// The `--watch` callback of [`run`]: `None` while nothing changed, else the new report or
/// the one-line error of reading it.
pub type Reload<'a> = dyn FnMut() -> Option<Result<Report, String>> + 'a;

/// Runs the view on the terminal until `q`. `reload`, polled every 300 ms, gives a new report
/// when the dumps changed (`--watch`); an error is shown in the status line and the report on
/// screen stays. The terminal is restored on return and on panic.
pub fn run(
    report: Report,
    mut reload: Option<&mut Reload<'_>>,
    grep: Option<Regex>,
    layer: Option<usize>,
) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let mut tui = Tui::new(report);
    tui.open_filtered(grep, layer);
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

/// `text` cut to `width` terminal columns keeping its tail (`…self_attn.k_norm`): a name's end
/// tells the ops apart. Columns, not characters: a CJK character or an emoji takes two (cut by
/// characters, a wide name lost its tail to ratatui's clipping; found by a bad-input hunt).
fn keep_tail(text: String, width: u16) -> String {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    let width = usize::from(width);
    if text.width() <= width {
        return text;
    }
    let mut used = 1; // the ellipsis
    let mut tail = Vec::new();
    for c in text.chars().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > width {
            break;
        }
        used += w;
        tail.push(c);
    }
    std::iter::once('…').chain(tail.into_iter().rev()).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_cut_name_keeps_its_tail_in_terminal_columns() {
        use unicode_width::UnicodeWidthStr;
        assert_eq!(keep_tail("short".into(), 10), "short");
        assert_eq!(keep_tail("model.layers.0.k_norm".into(), 8), "….k_norm");
        let wide = format!("model.layers.0.{}.TAIL_END", "中".repeat(70));
        let cut = keep_tail(wide, 20);
        assert!(cut.ends_with(".TAIL_END") && cut.starts_with('…'), "{cut}");
        assert!(cut.width() <= 20, "{cut}");
    }
    use super::*;

    /// The status bar keeps its keys in priority order and stops at the first that does not
    /// fit: `n/N` (priority 4) is not dropped for the shorter `s/S/r sort` (6) (a visual
    /// check at 80 columns).
    #[test]
    fn the_status_bar_stops_at_the_first_key_that_does_not_fit() {
        let text = |width: usize| -> String {
            footer_line("noise ratio", width, false, false)
                .spans
                .iter()
                .map(|s| s.content.to_string())
                .collect()
        };
        // "noise ratio │ " and `? help`, `q quit`, `f/o first/origin`, `/ filter` (8, 8, 18,
        // 10 with their gaps): 14 columns left, one short of `n/N next/prev`.
        let lead = "noise ratio │ ".chars().count();
        let short = text(lead + 44 + 14);
        assert!(
            short.contains("/ filter") && !short.contains("n/N"),
            "{short}"
        );
        assert!(!short.contains("s/S/r sort"), "{short}");
        let room = text(lead + 44 + 15);
        assert!(room.contains("n/N next/prev"), "{room}");
    }

    /// A report of `layers` one-op layers (`@1` too, a decode report, where `steps`), layer
    /// `bad` diverged.
    fn layers_report(layers: usize, bad: usize, steps: bool) -> Report {
        use divergence_diff::{assemble, DiffConfig, OpResult, OrderSource, ReportContext};
        let row = |l: usize, step: usize| -> OpResult {
            let name = match step {
                0 => format!("model.layers.{l}.mlp"),
                s => format!("model.layers.{l}.mlp@{s}"),
            };
            let status = if l == bad && step == 0 {
                "diverged"
            } else {
                "ok"
            };
            serde_json::from_value(serde_json::json!({
                "name": name, "status": status, "rel_l2_err": 0.0, "layer": l, "step": step,
            }))
            .unwrap()
        };
        let ops: Vec<OpResult> = (0..layers)
            .map(|l| row(l, 0))
            .chain((0..layers).filter(|_| steps).map(|l| row(l, 1)))
            .collect();
        assemble(
            ops,
            ReportContext::new("ours", "ref", OrderSource::RefMeta),
            &DiffConfig::default(),
        )
    }

    /// The overview (`l`) lists the layers the table lists, at most `view::SHOWN_LAYERS` (a
    /// bad-input hunt: a million layers were all listed), the diverged one among them, and
    /// says the rest last; a report under the cap lists every layer and no note.
    #[test]
    fn the_layer_overview_stops_at_the_tables_cap() {
        for steps in [false, true] {
            let phases = if steps { 2 } else { 1 };
            let tui = Tui::new(layers_report(view::SHOWN_LAYERS + 500, 1_200, steps));
            let lines = tui.layer_overview(200);
            assert_eq!(lines.len(), view::SHOWN_LAYERS * phases + 1, "{steps}");
            let last = &lines.last().unwrap().0;
            assert!(
                last.starts_with("500 more layers, none with a diverged op"),
                "{last}"
            );
            assert!(
                lines.iter().any(|(l, bad)| *bad && l.contains("1200")),
                "{steps}"
            );
            // One column for the layer's number on every line, layers 0 to 1,199 (layer 5
            // and layer 1000 both `layer NNNN`: the 3 digits of layers under 1,000 widened
            // past them until 2026-12-05).
            let start = |l: &str| l.split_whitespace().nth(2).and_then(|w| l.find(w));
            let layer_lines: Vec<&String> = lines[..lines.len() - 1].iter().map(|l| &l.0).collect();
            assert!(
                layer_lines.iter().any(|l| l.starts_with("layer    5  ")),
                "{steps}"
            );
            assert!(
                layer_lines.iter().any(|l| l.starts_with("layer 1000  ")),
                "{steps}"
            );
            let starts: std::collections::BTreeSet<Option<usize>> =
                layer_lines.iter().map(|l| start(l)).collect();
            assert_eq!(starts.len(), 1, "{steps}: {starts:?}");
            let small = Tui::new(layers_report(10, 3, steps)).layer_overview(200);
            assert_eq!(small.len(), 10 * phases, "{steps}");
            assert!(small[0].0.starts_with("layer   0  "), "{}", small[0].0);
        }
    }

    #[test]
    fn ordered_bits_orders_as_total_cmp() {
        let v = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -f64::MIN_POSITIVE / 2.0,
            -0.0,
            0.0,
            f64::MIN_POSITIVE / 2.0,
            1e-5,
            1.0,
            1e300,
            f64::INFINITY,
        ];
        for a in v {
            for b in v {
                assert_eq!(
                    ordered_bits(a).cmp(&ordered_bits(b)),
                    a.total_cmp(&b),
                    "{a} {b}"
                );
            }
            assert!(ordered_bits(a) != u64::MAX && !ordered_bits(a) != u64::MAX);
        }
    }
}
