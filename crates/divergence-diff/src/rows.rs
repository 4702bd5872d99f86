//! The report's rows, in execution order ([`Rows`]): plain [`OpResult`]s, and the decode steps
//! of a probe compared in one call ([`crate::compare_step_run`]) kept as a [`StepRun`], one
//! compact entry of sums per step, from which a step's `OpResult` is built only where one is
//! read whole.
//!
//! A 256-step decode of the 0.6B-shaped model has 152,345 rows, nearly all of them such steps:
//! as `OpResult`s (368 bytes each, ~56 MB) they were written by the comparison and read by every
//! later pass; as sums they take one 96-byte cell a row, ~15 MB (docs/performance.md,
//! "Decode steps"). What reads a few fields of every row
//! (the report's tallies, the table's per-layer lines) goes through [`Row`], a view that answers
//! them from the sums with the functions that build the row (`compare.rs`'s
//! `pair_terms` and `pair_verdict`), so a field read from a view and from the built row are the
//! same bits (tested). HTML and the TUI build each row they show alone ([`Rows::op`]), and so
//! does JSON but for a step within tolerance, which it writes from the views;
//! what needs every row whole at once (tests) dereferences [`Rows`] to a `Vec<OpResult>`,
//! which builds every row once, on first use, and keeps them; [`Rows::is_built`] says whether
//! that happened.
//!
//! Invariants: a run holds only steps whose sums rebuild their row bit for bit (no NaN or Inf,
//! every element finite on both sides, the step's own name); any other step of a run is a
//! plain row in its place. Every index below [`Rows::len`] is exactly one row.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use divergence_names::{step_name_shared, Name};
use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compare::{
    finite, frac_outside, pair_row, pair_terms, pair_threshold, pair_verdict, rel_l2, ErrorMetrics,
    Index, NonFiniteCounts, OpResult, RuleTerms, Status, TensorInfo, TruthMetrics,
};
use crate::metrics::Accumulator;
use crate::tolerance::{DTypeClass, Resolved};

/// The rows of a report, in execution order: see the module's doc. Dereferences to every row
/// as an [`OpResult`] (built on first use); [`Rows::row`] and [`Rows::rows`] read them without
/// building any.
#[derive(Clone, Default)]
pub struct Rows {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// Every row an `OpResult` (one-pass dumps, truth mode, rows changed in place).
    Vec(Vec<OpResult>),
    /// Plain rows and runs of decode steps.
    Compact(Box<Compact>),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Vec(Vec::new())
    }
}

#[derive(Clone)]
struct Compact {
    plain: Vec<OpResult>,
    /// The row index of each of `plain` (in `plain`'s order, not ascending).
    plain_at: Vec<u32>,
    runs: Vec<StepRun>,
    /// One per row, in execution order: the passes over every row read them front to back
    /// (a run's steps are rows a step's probes apart).
    cells: Vec<Cell>,
    /// Every row built, on first use of [`Deref`].
    built: OnceLock<Vec<OpResult>>,
}

/// Row `i`: `plain[k]` when `run` is [`Cell::PLAIN`], else step `k` of `runs[run]`, whose
/// sums are `sums`.
#[derive(Clone, Copy, Debug)]
struct Cell {
    run: u32,
    k: u32,
    sums: StepSums,
}

// A row of a compact run: 96 bytes, against 368 for an `OpResult`.
const _: () = assert!(std::mem::size_of::<Cell>() <= 96);

impl Cell {
    const PLAIN: u32 = u32::MAX;
    const UNSET: Cell = Cell {
        run: u32::MAX,
        k: u32::MAX,
        sums: StepSums::UNUSED,
    };
}

/// Consecutive decode steps of one probe, compared in one call: what their rows share (each
/// step's sums are kept apart, [`StepSums`]).
#[derive(Clone, Debug)]
pub struct StepRun {
    /// The row every step's is made from: shapes, dtypes, tolerance, layer, zero non-finite
    /// counts (its name, step and metrics are each step's).
    pub(crate) head: OpResult,
    /// The probe's name without the step.
    pub(crate) base: Name,
    /// The step of the run's first step (`k = 0`).
    pub(crate) first: usize,
    /// The tolerance every step was judged by.
    pub(crate) tol: Resolved,
    /// Elements per step.
    pub(crate) n: u64,
    /// The row index of each step (set when the run is closed, [`RowsBuilder::close_run`]).
    pub(crate) at: RunAt,
    /// `head`'s dtype class ([`TensorInfo::pair_class`], asked of every step by the passes
    /// over the rows).
    pub(crate) class: DTypeClass,
}

/// The row indices of a run's steps: a stride (a decode dump lists each step's probes in the
/// same order, so a probe's steps are a step's probes apart), else a list.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum RunAt {
    /// `start + k * stride` for `k < len`.
    Stride {
        start: usize,
        stride: usize,
        len: usize,
    },
    /// One index per step.
    List(Box<[usize]>),
    /// Not known (a run not closed by a builder).
    #[default]
    Unknown,
}

impl RunAt {
    fn of(at: &[usize]) -> RunAt {
        match at {
            [] => RunAt::List(Box::new([])),
            [start] => RunAt::Stride {
                start: *start,
                stride: 0,
                len: 1,
            },
            [a, b, ..] if b > a && at.windows(2).all(|w| w[1].checked_sub(w[0]) == Some(b - a)) => {
                RunAt::Stride {
                    start: *a,
                    stride: b - a,
                    len: at.len(),
                }
            }
            _ => RunAt::List(at.into()),
        }
    }

    /// The row index of step `k` of the run.
    fn get(&self, k: usize) -> Option<usize> {
        match self {
            RunAt::Stride { start, stride, len } => (k < *len).then(|| start + k * stride),
            RunAt::List(at) => at.get(k).copied(),
            RunAt::Unknown => None,
        }
    }

    /// Number of steps whose row index is known.
    fn len(&self) -> usize {
        match self {
            RunAt::Stride { len, .. } => *len,
            RunAt::List(at) => at.len(),
            RunAt::Unknown => 0,
        }
    }
}

/// One step's sums (an accumulator of `n` finite elements a side), its status and its local
/// growth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepSums {
    pub(crate) sum_o2: f64,
    pub(crate) sum_r2: f64,
    pub(crate) sum_d2: f64,
    pub(crate) sum_abs_d: f64,
    pub(crate) dot: f64,
    pub(crate) max_abs_d: f64,
    pub(crate) max_rel: f64,
    /// `u64::MAX` for none.
    pub(crate) max_abs_d_index: u64,
    pub(crate) n_outside: u64,
    /// NaN for none (a growth is finite, `origin::local_growths`).
    pub(crate) local_growth: f64,
    pub(crate) status: Status,
}

impl StepSums {
    /// The sums of `acc` when they rebuild its row: `n` elements seen, all finite on both
    /// sides (so no NaN, Inf or mismatch to count).
    pub(crate) fn of(acc: &Accumulator, n: u64, tol: &Resolved) -> Option<StepSums> {
        (acc.n == n && acc.n_finite == n).then(|| StepSums {
            sum_o2: acc.sum_o2,
            sum_r2: acc.sum_r2,
            sum_d2: acc.sum_d2,
            sum_abs_d: acc.sum_abs_d,
            dot: acc.dot,
            max_abs_d: acc.max_abs_d,
            max_rel: acc.max_rel,
            max_abs_d_index: acc.max_abs_d_index.unwrap_or(u64::MAX),
            n_outside: acc.n_outside,
            status: pair_verdict(acc, tol).map_or(Status::Ok, |v| v.status()),
            local_growth: f64::NAN,
        })
    }

    /// The local growth, `None` where none was set.
    fn growth(&self) -> Option<f64> {
        Some(self.local_growth).filter(|g| !g.is_nan())
    }

    /// The accumulator these sums came from.
    fn acc(&self, n: u64) -> Accumulator {
        Accumulator {
            n,
            n_finite: n,
            sum_o2: self.sum_o2,
            sum_r2: self.sum_r2,
            sum_d2: self.sum_d2,
            sum_abs_d: self.sum_abs_d,
            dot: self.dot,
            max_abs_d: self.max_abs_d,
            max_abs_d_index: (self.max_abs_d_index != u64::MAX).then_some(self.max_abs_d_index),
            max_rel: self.max_rel,
            n_outside: self.n_outside,
            ..Accumulator::default()
        }
    }

    /// A placeholder for a step kept as a plain row.
    pub(crate) const UNUSED: StepSums = StepSums {
        sum_o2: 0.0,
        sum_r2: 0.0,
        sum_d2: 0.0,
        sum_abs_d: 0.0,
        dot: 0.0,
        max_abs_d: 0.0,
        max_rel: 0.0,
        max_abs_d_index: u64::MAX,
        n_outside: 0,
        local_growth: f64::NAN,
        status: Status::Ok,
    };
}

impl StepRun {
    /// The probe's name without the step.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The step of the run's first step.
    pub fn first(&self) -> usize {
        self.first
    }

    /// Number of steps whose row is known ([`StepRun::row_of`]).
    pub fn steps(&self) -> usize {
        self.at.len()
    }

    /// The row index of step `k` of the run (its step is [`StepRun::first`] `+ k`). The row
    /// is this run's step, or a row stored whole in its place (a step whose sums would not
    /// rebuild it, or whose given name is not the run's `base@step`: such a row keeps its
    /// own name).
    pub fn row_of(&self, k: usize) -> Option<usize> {
        self.at.get(k)
    }

    /// The row index of the run's step `step`, if the run holds it.
    pub fn row_of_step(&self, step: usize) -> Option<usize> {
        self.row_of(step.checked_sub(self.first)?)
    }

    /// The row of step `k` of the run, whose sums are `s`, built (what comparing it alone
    /// gives, bit for bit).
    pub(crate) fn build(&self, k: usize, s: &StepSums) -> OpResult {
        let mut row = self.head.clone();
        row.step = self.first + k;
        row.name = step_name_shared(&self.base, row.step);
        let mut row = pair_row(row, &s.acc(self.n), &self.tol);
        row.local_growth = s.growth();
        row
    }

    /// The rule terms and error metrics of a step whose sums are `s` (all but the index of
    /// the largest error).
    fn terms(&self, s: &StepSums) -> (RuleTerms, ErrorMetrics) {
        let mut rule = self.head.rule.clone();
        let mut errors = ErrorMetrics::default();
        pair_terms(&mut rule, &mut errors, &s.acc(self.n), &self.tol);
        (rule, errors)
    }
}

/// One row of [`Rows`], without building it: a plain row, or step `k` of a run.
#[derive(Clone, Copy, Debug)]
pub enum Row<'r> {
    /// A row stored whole.
    Plain(&'r OpResult),
    /// Step `.2` of a run, whose sums are `.1`.
    Step(&'r StepRun, &'r StepSums, usize),
}

impl<'r> From<&'r OpResult> for Row<'r> {
    fn from(op: &'r OpResult) -> Row<'r> {
        Row::Plain(op)
    }
}

/// Rows read one at a time as [`Row`]s, without building any: [`Rows`], or `OpResult`s.
pub trait RowSource: Sync {
    /// Number of rows.
    fn row_count(&self) -> usize;
    /// Row `i` (panics past the rows).
    fn row_at(&self, i: usize) -> Row<'_>;
    /// The rows by how they are kept, for a pass that works a run of decode steps at once:
    /// `None` when every row is stored whole.
    fn parts(&self) -> Option<Parts<'_>> {
        None
    }
}

/// A compact report's rows by how they are kept: the rows stored whole, by index, and the
/// runs of decode steps (each knows its steps' row indices, [`StepRun::row_of`]). Every row
/// is a plain one or a step of one run, never both; a run's step stored whole in its place
/// is a plain row (its `row_of` is that row, which [`Row::run`] says is none of the run's).
#[derive(Clone, Copy)]
pub struct Parts<'r> {
    /// The index of each row stored whole, in the order they were stored (not ascending: a
    /// run's steps stored whole come when it is closed).
    pub plain: &'r [u32],
    /// The runs.
    pub runs: &'r [StepRun],
}

impl RowSource for Rows {
    fn row_count(&self) -> usize {
        self.len()
    }
    fn row_at(&self, i: usize) -> Row<'_> {
        self.row(i)
    }
    fn parts(&self) -> Option<Parts<'_>> {
        match &self.repr {
            Repr::Vec(_) => None,
            Repr::Compact(c) => Some(Parts {
                plain: &c.plain_at,
                runs: &c.runs,
            }),
        }
    }
}

impl RowSource for [OpResult] {
    fn row_count(&self) -> usize {
        self.len()
    }
    fn row_at(&self, i: usize) -> Row<'_> {
        Row::Plain(&self[i])
    }
}

impl RowSource for Vec<OpResult> {
    fn row_count(&self) -> usize {
        self.len()
    }
    fn row_at(&self, i: usize) -> Row<'_> {
        Row::Plain(&self[i])
    }
}

impl<'r> Row<'r> {
    /// The run this row is a step of (`None` for a row stored whole).
    pub fn run(self) -> Option<&'r StepRun> {
        match self {
            Row::Plain(_) => None,
            Row::Step(run, ..) => Some(run),
        }
    }

    /// Whether the row's name is `name` (without writing a step's name).
    pub fn is_named(self, name: &str) -> bool {
        match self {
            Row::Plain(o) => *o.name == *name,
            Row::Step(run, _, k) => divergence_names::is_step_name(name, &run.base, run.first + k),
        }
    }

    /// The row whole: borrowed when plain, else built.
    pub fn op(self) -> Cow<'r, OpResult> {
        match self {
            Row::Plain(o) => Cow::Borrowed(o),
            Row::Step(run, s, k) => Cow::Owned(run.build(k, s)),
        }
    }

    /// [`OpResult::name`]: borrowed when plain, else written (`base@step`).
    pub fn name(self) -> Cow<'r, str> {
        match self {
            Row::Plain(o) => Cow::Borrowed(&o.name),
            Row::Step(run, _, k) => {
                Cow::Owned(divergence_names::step_name(&run.base, run.first + k))
            }
        }
    }

    /// The name split into the probe's name without the step and the step
    /// ([`divergence_names::split_step`] of [`Row::name`]).
    pub fn split(self) -> (&'r str, usize) {
        match self {
            Row::Plain(o) => divergence_names::split_step(&o.name),
            Row::Step(run, _, k) => (&run.base, run.first + k),
        }
    }

    /// The probe's name without the step (the whole name of a row that is no decode step).
    pub fn base(self) -> &'r str {
        self.split().0
    }

    /// [`OpResult::status`].
    pub fn status(self) -> Status {
        match self {
            Row::Plain(o) => o.status,
            Row::Step(_, s, _) => s.status,
        }
    }

    /// [`OpResult::step`].
    pub fn step(self) -> usize {
        match self {
            Row::Plain(o) => o.step,
            Row::Step(run, _, k) => run.first + k,
        }
    }

    /// [`OpResult::layer`].
    pub fn layer(self) -> Option<usize> {
        match self {
            Row::Plain(o) => o.layer,
            Row::Step(run, ..) => run.head.layer,
        }
    }

    /// [`OpResult::tensor`].
    pub fn tensor(self) -> &'r TensorInfo {
        match self {
            Row::Plain(o) => &o.tensor,
            Row::Step(run, ..) => &run.head.tensor,
        }
    }

    /// [`TensorInfo::pair_class`] of the row's tensor (a run's is worked out once).
    pub fn pair_class(self) -> DTypeClass {
        match self {
            Row::Plain(o) => o.tensor.pair_class(),
            Row::Step(run, ..) => run.class,
        }
    }

    /// [`OpResult::nonfinite`].
    pub fn nonfinite(self) -> &'r NonFiniteCounts {
        match self {
            Row::Plain(o) => &o.nonfinite,
            Row::Step(run, ..) => &run.head.nonfinite,
        }
    }

    /// [`OpResult::truth`].
    pub fn truth(self) -> &'r TruthMetrics {
        match self {
            Row::Plain(o) => &o.truth,
            Row::Step(run, ..) => &run.head.truth,
        }
    }

    /// [`OpResult::local_growth`].
    pub fn local_growth(self) -> Option<f64> {
        match self {
            Row::Plain(o) => o.local_growth,
            Row::Step(_, s, _) => s.growth(),
        }
    }

    /// [`OpResult::mapped`].
    pub fn mapped(self) -> Option<&'r str> {
        match self {
            Row::Plain(o) => o.mapped.as_deref(),
            Row::Step(..) => None,
        }
    }

    /// [`OpResult::rule`] and [`OpResult::errors`] (`max_abs_err_index` only of a plain row).
    pub fn terms(self) -> (Cow<'r, RuleTerms>, Cow<'r, ErrorMetrics>) {
        match self {
            Row::Plain(o) => (Cow::Borrowed(&o.rule), Cow::Borrowed(&o.errors)),
            Row::Step(run, s, _) => {
                let (rule, errors) = run.terms(s);
                (Cow::Owned(rule), Cow::Owned(errors))
            }
        }
    }

    /// `errors.max_abs_err_index`: a step's from its sums, as the built row has it ([`Row::op`]).
    pub fn max_abs_err_index(self) -> Option<Index> {
        match self {
            Row::Plain(o) => o.errors.max_abs_err_index.clone(),
            Row::Step(run, s, _) => s
                .acc(run.n)
                .max_abs_d_index
                .map(|i| crate::compare::unravel(i, crate::compare::ref_head(&run.head).0)),
        }
    }

    /// `rule.n_compared`: the elements finite on both sides (every element of a compact step).
    pub fn n_compared(self) -> Option<u64> {
        match self {
            Row::Plain(o) => o.rule.n_compared,
            Row::Step(run, ..) => Some(run.n),
        }
    }

    /// `errors.rel_l2_err`.
    pub fn rel_l2_err(self) -> Option<f64> {
        match self {
            Row::Plain(o) => o.errors.rel_l2_err,
            Row::Step(run, s, _) => rel_l2(&s.acc(run.n)),
        }
    }

    /// `errors.max_abs_err`.
    pub fn max_abs_err(self) -> Option<f64> {
        match self {
            Row::Plain(o) => o.errors.max_abs_err,
            // As `pair_terms` writes it (every row reads it: the first difference).
            Row::Step(_, s, _) => Some(s.max_abs_d).filter(|x| x.is_finite()),
        }
    }

    /// `rule.tol_threshold`.
    pub fn tol_threshold(self) -> Option<f64> {
        match self {
            Row::Plain(o) => o.rule.tol_threshold,
            // As `pair_terms` writes it, without the rest of the row's terms.
            Row::Step(run, s, _) => finite(pair_threshold(&s.acc(run.n), &run.tol)),
        }
    }

    /// `rule.ref_l2`.
    pub fn ref_l2(self) -> Option<f64> {
        match self {
            Row::Plain(o) => o.rule.ref_l2,
            // As `pair_terms` writes it, without the rest of the row's terms.
            Row::Step(_, s, _) => finite(s.sum_r2.sqrt()),
        }
    }

    /// `rule.diff_l2`.
    pub fn diff_l2(self) -> Option<f64> {
        match self {
            Row::Plain(o) => o.rule.diff_l2,
            // As `pair_terms` writes it, without the rest of the row's terms.
            Row::Step(_, s, _) => finite(s.sum_d2.sqrt()),
        }
    }

    /// `rule.rtol` and `rule.atol`.
    pub fn rule_tol(self) -> (Option<f64>, Option<f64>) {
        let rule = match self {
            Row::Plain(o) => &o.rule,
            Row::Step(run, ..) => &run.head.rule,
        };
        (rule.rtol, rule.atol)
    }

    /// [`OpResult::frac_outside_tol`].
    pub fn frac_outside_tol(self) -> Option<f64> {
        match self {
            Row::Plain(o) => o.frac_outside_tol,
            Row::Step(run, s, _) => Some(frac_outside(&s.acc(run.n))),
        }
    }

    /// [`OpResult::reason`]: borrowed when plain, else written (only a diverged step has one).
    pub fn reason(self) -> Option<Cow<'r, str>> {
        match self {
            Row::Plain(o) => o.reason.as_deref().map(Cow::Borrowed),
            Row::Step(run, s, k) => {
                if s.status == Status::Ok {
                    return None;
                }
                run.build(k, s).reason.map(Cow::Owned)
            }
        }
    }
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Vec(v) => v.len(),
            Repr::Compact(c) => c.cells.len(),
        }
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`, without building it. Panics past the rows, as indexing does.
    pub fn row(&self, i: usize) -> Row<'_> {
        match &self.repr {
            Repr::Vec(v) => Row::Plain(&v[i]),
            Repr::Compact(c) => {
                let cell = &c.cells[i];
                if cell.run == Cell::PLAIN {
                    Row::Plain(&c.plain[cell.k as usize])
                } else {
                    Row::Step(&c.runs[cell.run as usize], &cell.sums, cell.k as usize)
                }
            }
        }
    }

    /// The rows' dataflow ([`divergence_names::dataflow::Dataflow::of_steps`]). A compact
    /// report's is worked out from its runs: each row's step, and whether two rows are steps of
    /// one run (one probe), without reading a row's cell (~150,000 cells read three times took
    /// 5-6 ms on one thread).
    pub fn dataflow(&self) -> divergence_names::dataflow::Dataflow {
        use divergence_names::dataflow::Dataflow;
        let split = |i| self.row(i).split();
        let name = |i| self.row(i).name();
        let Repr::Compact(c) = &self.repr else {
            return Dataflow::of_steps(self.len(), &split, &name);
        };
        let len = c.cells.len();
        let mut steps = vec![0usize; len];
        let mut runs = vec![Cell::PLAIN; len];
        for (r, run) in c.runs.iter().enumerate() {
            let r = u32::try_from(r).expect("fewer than 2^32 runs");
            for k in 0..run.steps() {
                if let Some(i) = run.row_of(k).filter(|&i| i < len) {
                    (steps[i], runs[i]) = (run.first + k, r);
                }
            }
        }
        // A run's step stored whole is a row of its own, in the run's place.
        for (row, &i) in c.plain.iter().zip(&c.plain_at) {
            let i = i as usize;
            (steps[i], runs[i]) = (divergence_names::split_step(&row.name).1, Cell::PLAIN);
        }
        // What the rows' cells say (a builder closes every run it keeps with its rows'
        // indices, `RowsBuilder::close_run`).
        debug_assert!(c.cells.iter().enumerate().all(|(i, cell)| {
            runs[i] == cell.run
                && (cell.run == Cell::PLAIN
                    || steps[i] == c.runs[cell.run as usize].first + cell.k as usize)
        }));
        let same_base = |a: usize, b: usize| {
            let (ra, rb) = (runs[a], runs[b]);
            (ra != Cell::PLAIN && ra == rb).then_some(true)
        };
        Dataflow::of_known_steps(steps, &split, &name, &same_base)
    }

    /// Row `i`, or `None` past the rows.
    pub fn get_row(&self, i: usize) -> Option<Row<'_>> {
        (i < self.len()).then(|| self.row(i))
    }

    /// Row `i` whole (built when it is a step of a run), or `None` past the rows.
    pub fn op(&self, i: usize) -> Option<Cow<'_, OpResult>> {
        match &self.repr {
            Repr::Vec(v) => v.get(i).map(Cow::Borrowed),
            Repr::Compact(c) => match c.built.get() {
                Some(built) => built.get(i).map(Cow::Borrowed),
                None => self.get_row(i).map(Row::op),
            },
        }
    }

    /// Every row, in order, without building any.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }

    /// [`Rows::rows`], in parallel.
    pub fn par_rows(&self) -> impl IndexedParallelIterator<Item = Row<'_>> + '_ {
        (0..self.len()).into_par_iter().map(|i| self.row(i))
    }

    /// Whether `f` holds for some row, asked of every plain row but of one row per run of
    /// decode steps, which stands for all of them: `f` must read only what a run's steps
    /// share (their base name, tensor, truth and non-finite counts), never a metric, a step or
    /// a whole name (the row stands for the run's first step, with no sums). What every row's
    /// shared parts cost to check once per run instead of once per step (a decode report has
    /// ~150,000 steps in ~600 runs).
    pub fn any_shared(&self, f: impl Fn(Row<'_>) -> bool + Sync + Send) -> bool {
        let plain =
            |rows: &[OpResult]| rows.par_iter().with_min_len(4096).any(|o| f(Row::Plain(o)));
        match &self.repr {
            Repr::Vec(v) => plain(v),
            Repr::Compact(c) => {
                plain(&c.plain)
                    || c.runs
                        .iter()
                        .any(|run| f(Row::Step(run, &StepSums::UNUSED, 0)))
            }
        }
    }

    /// Whether every row has been built as an `OpResult` (by a use of [`Deref`]), or was one
    /// from the start.
    pub fn is_built(&self) -> bool {
        match &self.repr {
            Repr::Vec(_) => true,
            Repr::Compact(c) => c.built.get().is_some(),
        }
    }

    /// Whether some rows are kept as runs of decode steps.
    pub fn is_compact(&self) -> bool {
        matches!(self.repr, Repr::Compact(_))
    }

    /// Sets every row's [`OpResult::local_growth`] (`growths[i]` of row `i`; a compact step
    /// keeps a NaN growth as none, which `origin::local_growths` never gives).
    pub fn set_local_growths(&mut self, growths: Vec<Option<f64>>) {
        match &mut self.repr {
            Repr::Vec(v) => v
                .par_iter_mut()
                .zip(growths)
                .for_each(|(op, g)| op.local_growth = g),
            Repr::Compact(c) => {
                let c = &mut **c;
                // The steps' cells in parallel (~150,000 of a decode report, 14 MB), then the
                // rows stored whole by their indices.
                c.cells
                    .par_iter_mut()
                    .with_min_len(4096)
                    .zip(&growths)
                    .filter(|(cell, _)| cell.run != Cell::PLAIN)
                    .for_each(|(cell, g)| cell.sums.local_growth = g.unwrap_or(f64::NAN));
                for (row, &i) in c.plain.iter_mut().zip(&c.plain_at) {
                    row.local_growth = growths.get(i as usize).copied().flatten();
                }
                c.built = OnceLock::new();
            }
        }
    }

    /// The rows stored whole, to change in place, in row order (every row of a plain vector;
    /// a compact one's plain rows).
    pub fn plain_mut(&mut self) -> Vec<&mut OpResult> {
        match &mut self.repr {
            Repr::Vec(v) => v.iter_mut().collect(),
            Repr::Compact(c) => {
                let c = &mut **c;
                c.built = OnceLock::new();
                let mut plain: Vec<Option<&mut OpResult>> = c.plain.iter_mut().map(Some).collect();
                c.cells
                    .iter()
                    .filter(|cell| cell.run == Cell::PLAIN)
                    .filter_map(|cell| plain.get_mut(cell.k as usize)?.take())
                    .collect()
            }
        }
    }

    /// Changes the rows' text in place without building a compact step: `row` gets every row
    /// stored whole (every row of a plain vector, a compact one's plain rows) and, for each run
    /// of steps, the row its steps are made from (their shapes, dtypes and tolerance); `name`
    /// gets each run's probe name, the name without the step. A step's name is its probe's
    /// name, `@` and its step number, and a built step takes everything else it holds of text
    /// from the row it is made from: an edit that changes a name character by character and
    /// leaves `@` and ASCII digits as they are (an escape of control characters) gives every
    /// step the text its built row would get from the same edits (tested).
    pub fn edit_text(
        &mut self,
        row: &(dyn Fn(&mut OpResult) + Sync),
        name: &(dyn Fn(&mut Name) + Sync),
    ) {
        match &mut self.repr {
            Repr::Vec(v) => v.par_iter_mut().with_min_len(4096).for_each(row),
            Repr::Compact(c) => {
                let c = &mut **c;
                c.built = OnceLock::new();
                c.plain.par_iter_mut().with_min_len(4096).for_each(row);
                for run in &mut c.runs {
                    row(&mut run.head);
                    run.class = run.head.tensor.pair_class();
                    name(&mut run.base);
                }
            }
        }
    }

    /// Every row as an `OpResult`, in order.
    pub fn into_vec(self) -> Vec<OpResult> {
        match self.repr {
            Repr::Vec(v) => v,
            Repr::Compact(mut c) => match c.built.take() {
                Some(v) => v,
                None => build_all(&c),
            },
        }
    }
}

/// Every row of a compact representation, built, in order (in parallel).
fn build_all(c: &Compact) -> Vec<OpResult> {
    c.cells
        .par_iter()
        .with_min_len(1024)
        .map(|cell| {
            if cell.run == Cell::PLAIN {
                c.plain[cell.k as usize].clone()
            } else {
                c.runs[cell.run as usize].build(cell.k as usize, &cell.sums)
            }
        })
        .collect()
}

impl Deref for Rows {
    type Target = Vec<OpResult>;

    /// Every row whole: a compact report builds them all, once, on first use.
    fn deref(&self) -> &Vec<OpResult> {
        match &self.repr {
            Repr::Vec(v) => v,
            Repr::Compact(c) => c.built.get_or_init(|| build_all(c)),
        }
    }
}

impl DerefMut for Rows {
    /// Every row whole, to change: a compact report becomes a plain vector first.
    fn deref_mut(&mut self) -> &mut Vec<OpResult> {
        if let Repr::Compact(_) = self.repr {
            let rows = std::mem::take(self).into_vec();
            self.repr = Repr::Vec(rows);
        }
        match &mut self.repr {
            Repr::Vec(v) => v,
            Repr::Compact(_) => unreachable!("made a vector above"),
        }
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a OpResult;
    type IntoIter = std::slice::Iter<'a, OpResult>;

    /// Every row whole ([`Deref`]: a compact report builds them all).
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl From<Vec<OpResult>> for Rows {
    fn from(v: Vec<OpResult>) -> Rows {
        Rows { repr: Repr::Vec(v) }
    }
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.rows().map(Row::op)).finish()
    }
}

impl PartialEq for Rows {
    /// Row by row, each as an `OpResult`.
    fn eq(&self, other: &Rows) -> bool {
        self.len() == other.len() && (0..self.len()).all(|i| self.op(i) == other.op(i))
    }
}

impl Serialize for Rows {
    /// A sequence of the rows, each as an `OpResult` (built one at a time).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for i in 0..self.len() {
            if let Some(op) = self.op(i) {
                seq.serialize_element(&*op)?;
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Rows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rows, D::Error> {
        Vec::<OpResult>::deserialize(d).map(Rows::from)
    }
}

/// What [`crate::compare_step_run_into`] gives for a run of decode steps (its compact steps
/// went to the sink): what they share, and the other steps as rows (with their step's index in
/// the run).
#[derive(Debug)]
pub struct StepParts {
    /// What the steps kept compact share (`None`: every step is in `rows`).
    pub(crate) run: Option<StepRun>,
    /// The steps that are rows of their own, by index in the run, in order.
    pub(crate) rows: Vec<(usize, OpResult)>,
}

/// What [`crate::compare_step_run`] gives for a run of decode steps: the steps kept compact,
/// and the others as rows (with their step's index in the run).
#[derive(Debug)]
pub struct StepRows {
    /// What the steps kept compact share (`None`: every step is in `rows`).
    pub(crate) run: Option<StepRun>,
    /// With a `run`, every step's sums, by index in the run (those of a step in `rows`
    /// unused); else empty.
    pub(crate) sums: Vec<StepSums>,
    /// The steps that are rows of their own, by index in the run, in order.
    pub(crate) rows: Vec<(usize, OpResult)>,
}

impl StepRows {
    /// Every step's row, by index in the run, in order.
    pub fn into_rows(self) -> Vec<(usize, OpResult)> {
        let Some(run) = self.run else {
            return self.rows;
        };
        let mut rows = self.rows.into_iter().peekable();
        let mut out = Vec::with_capacity(self.sums.len());
        for (k, s) in self.sums.iter().enumerate() {
            match rows.next_if(|(j, _)| *j == k) {
                Some(row) => out.push(row),
                None => out.push((k, run.build(k, s))),
            }
        }
        out
    }
}

/// Makes [`Rows`] of `n` rows from rows and runs placed by index: one by one ([`RowsBuilder::put`],
/// [`RowsBuilder::put_run`]), or, for runs compared on many threads at once, each compact step
/// written to its row's cell by the thread that compares it ([`RowsBuilder::open_run`],
/// [`RowSink`], [`RowsBuilder::close_run`]): no second copy of a decode report's sums, and no
/// pass that gathers them.
pub struct RowsBuilder {
    plain: Vec<OpResult>,
    plain_at: Vec<u32>,
    /// Indexed by run number.
    runs: Vec<RunState>,
    /// One per row, [`Cell::UNSET`] until the row is written.
    cells: Vec<Cell>,
    /// Whether each row has been written: a second write of a row panics.
    written: Vec<AtomicBool>,
}

/// A run of a [`RowsBuilder`]: its steps may be written ([`RowSink::put_step`]) only while it
/// is open.
enum RunState {
    Open,
    /// Closed with what its steps share (`None`: every step a row, none written compact).
    Closed(Option<Box<StepRun>>),
}

impl RowsBuilder {
    /// A builder of `n` rows.
    pub fn new(n: usize) -> RowsBuilder {
        // Made on every thread: a decode report's cells are ~15 MB of fresh pages.
        let (cells, written) = rayon::join(
            || {
                (0..n)
                    .into_par_iter()
                    .with_min_len(4096)
                    .map(|_| Cell::UNSET)
                    .collect()
            },
            || (0..n).map(|_| AtomicBool::new(false)).collect(),
        );
        RowsBuilder {
            plain: Vec::new(),
            plain_at: Vec::new(),
            runs: Vec::new(),
            cells,
            written,
        }
    }

    /// Row `i`. Panics past the rows or on a second write of `i`.
    pub fn put(&mut self, i: usize, row: OpResult) {
        let k = u32::try_from(self.plain.len()).expect("fewer than 2^32 rows");
        self.claim(i);
        self.cells[i] = Cell {
            run: Cell::PLAIN,
            k,
            sums: StepSums::UNUSED,
        };
        self.plain.push(row);
        self.plain_at
            .push(u32::try_from(i).expect("fewer than 2^32 rows"));
    }

    /// The steps of a run, step `k` at row `at[k]` (one index per step of the run). Panics as
    /// [`RowsBuilder::put`], or when `at` has another number of indices than the run steps.
    pub fn put_run(&mut self, at: &[usize], steps: StepRows) {
        debug_assert!(steps.rows.windows(2).all(|w| w[0].0 < w[1].0));
        let StepRows { run, sums, rows } = steps;
        let r = self.open_run();
        if run.is_some() {
            assert_eq!(at.len(), sums.len(), "one row index per step");
            let sink = self.sink();
            let mut own = rows.iter().map(|(k, _)| *k).peekable();
            for (k, (&i, s)) in at.iter().zip(&sums).enumerate() {
                if own.next_if(|&j| j == k).is_none() {
                    sink.put_step(i, r, k, *s);
                }
            }
        }
        self.close_run(r, at, StepParts { run, rows });
    }

    /// A new run's number, for [`RowSink::put_step`] and [`RowsBuilder::close_run`].
    pub fn open_run(&mut self) -> u32 {
        let r = u32::try_from(self.runs.len()).expect("fewer than 2^32 runs");
        self.runs.push(RunState::Open);
        r
    }

    /// What many threads share to write the compact steps of open runs to their rows.
    pub fn sink(&mut self) -> RowSink<'_> {
        RowSink {
            cells: self.cells.as_mut_ptr(),
            written: &self.written,
            runs: &self.runs,
            _cells: std::marker::PhantomData,
        }
    }

    /// Run `r` ([`RowsBuilder::open_run`]) made: `steps` from [`crate::compare_step_run_into`],
    /// whose compact steps went to [`RowSink::put_step`] (row `at[k]` for step `k`); its other
    /// steps are placed as rows. A run left open (never compared in one call) leaves nothing
    /// behind. Panics on a run not open (never opened, or closed already), or as
    /// [`RowsBuilder::put`].
    pub fn close_run(&mut self, r: u32, at: &[usize], steps: StepParts) {
        let state = self.runs.get_mut(r as usize);
        let Some(state @ RunState::Open) = state else {
            panic!("run {r} is not open");
        };
        *state = RunState::Closed(steps.run.map(|mut run| {
            run.at = RunAt::of(at);
            Box::new(run)
        }));
        for (k, row) in steps.rows {
            self.put(at[k], row);
        }
    }

    fn claim(&mut self, i: usize) {
        let written = self
            .written
            .get_mut(i)
            .expect("a row index within the plan");
        assert!(
            !std::mem::replace(written.get_mut(), true),
            "row {i} written twice"
        );
    }

    /// The rows. Panics when one was never written, or a step was written for a run closed
    /// without one.
    pub fn finish(self) -> Rows {
        let RowsBuilder {
            plain,
            plain_at,
            runs,
            mut cells,
            written,
        } = self;
        assert!(
            written.iter().all(|w| w.load(Ordering::Relaxed)),
            "a row was never written"
        );
        // Runs left open or closed without a run leave no number behind.
        let runs: Vec<Option<StepRun>> = runs
            .into_iter()
            .map(|state| match state {
                // Closed by `close_run`, which set its rows' indices (the passes that go run
                // by run read a run's rows through them).
                RunState::Closed(run) => run.map(|run| *run),
                RunState::Open => None,
            })
            .collect();
        if runs.iter().all(Option::is_none) {
            // Plain rows only: in order, as a vector.
            let mut plain: Vec<Option<OpResult>> = plain.into_iter().map(Some).collect();
            let rows: Vec<OpResult> = cells
                .iter()
                .map(|c| {
                    assert_eq!(c.run, Cell::PLAIN, "a step of a run closed without one");
                    plain[c.k as usize].take().expect("each row once")
                })
                .collect();
            return Rows::from(rows);
        }
        // The runs kept are renumbered.
        let runs = if runs.iter().any(Option::is_none) {
            let mut number = Vec::with_capacity(runs.len());
            let mut kept = Vec::with_capacity(runs.len());
            for run in runs {
                number.push(run.as_ref().map(|_| kept.len() as u32));
                kept.extend(run);
            }
            cells
                .par_iter_mut()
                .with_min_len(4096)
                .filter(|c| c.run != Cell::PLAIN)
                .for_each(|c| {
                    c.run = number[c.run as usize].expect("a step of a run closed without one");
                });
            kept
        } else {
            runs.into_iter().flatten().collect()
        };
        Rows {
            repr: Repr::Compact(Box::new(Compact {
                plain,
                plain_at,
                runs,
                cells,
                built: OnceLock::new(),
            })),
        }
    }
}

/// Writes compact steps to their rows' cells from many threads ([`RowsBuilder::sink`]): each
/// row at most once, whichever thread writes it (a second write panics), while the builder is
/// borrowed.
pub struct RowSink<'b> {
    cells: *mut Cell,
    /// One flag per cell: `cells` holds `written.len()` of them.
    written: &'b [AtomicBool],
    /// The builder's runs, none closed or opened while the sink lives.
    runs: &'b [RunState],
    _cells: std::marker::PhantomData<&'b mut [Cell]>,
}

// SAFETY: shared across threads only to `put_step`, which writes each cell through `cells` at
// most once (marked in `written` before the write, so two threads never write one cell, and
// nothing else reads or writes the cells while the sink borrows the builder); cells are `Copy`
// data, initialized before the sink was made.
unsafe impl Sync for RowSink<'_> {}
// SAFETY: as above; the sink holds no thread-bound state.
unsafe impl Send for RowSink<'_> {}

impl RowSink<'_> {
    /// Step `k` of open run `r` ([`RowsBuilder::open_run`]), kept compact as `sums`, at row
    /// `i`. Panics past the rows, on a second write of `i`, or for a run not open (never
    /// opened, or closed already).
    pub fn put_step(&self, i: usize, r: u32, k: usize, sums: StepSums) {
        assert!(
            matches!(self.runs.get(r as usize), Some(RunState::Open)),
            "run {r} is not open"
        );
        let k = u32::try_from(k).expect("fewer than 2^32 steps");
        let written = self.written.get(i).expect("a row index within the plan");
        assert!(
            !written.swap(true, Ordering::Relaxed),
            "row {i} written twice"
        );
        // SAFETY: `i` is below `written.len()`, the number of cells; no other write or read of
        // cell `i` happens while the sink lives: its flag was unset until the swap above.
        unsafe { self.cells.add(i).write(Cell { run: r, k, sums }) };
    }
}
