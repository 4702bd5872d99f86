//! Comparing one probe: shape rules, tolerance resolution, metrics and the per-op verdict.
//!
//! [`compare`] turns the two sides of one probe into an [`OpResult`] row and never fails: a probe
//! present on one side only, with mismatching shapes, or with values that do not fill its shape is a
//! row with the matching [`Status`]. [`unreadable`] makes the row for a probe the caller could not read.

use std::sync::Arc;

use divergence_names::Name;
use serde::{Deserialize, Serialize};

use crate::config::DiffConfig;
use crate::metrics::{Accumulator, Chunked, Params, Piece, SideStats, ValuesRef};
use crate::rows::{StepParts, StepRows, StepRun, StepSums};
use crate::tolerance::{
    truth_floor, truth_noise, DTypeClass, Resolved, Tolerance, REL_ERR_GUARD_MIN, TRUTH_MAX_REF_ERR,
};

/// One side of a probe: its shape, values and *original* dtype name (e.g. `"bfloat16"` for a tensor
/// stored as f32 because npy has no bf16).
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Shape as stored.
    pub shape: &'a [usize],
    /// Values, row-major, `shape.iter().product()` of them.
    pub values: ValuesRef<'a>,
    /// Original dtype name, torch-style: `"float32"`, `"bfloat16"`, `"int64"`, ...
    pub dtype: &'a str,
}

/// Which dump a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// Our port's dump.
    Ours,
    /// The reference dump.
    Ref,
}

impl Which {
    /// `"ours"` or `"ref"`.
    pub fn label(self) -> &'static str {
        match self {
            Which::Ours => "ours",
            Which::Ref => "ref",
        }
    }
}

/// The verdict of one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within tolerance.
    Ok,
    /// The norm-wise error exceeds the tolerance (or, in exact mode, some element differs).
    Diverged,
    /// Shapes differ even after dropping size-1 dimensions (or our name map could not make the
    /// tensor from the dump's: [`not_made`]).
    ShapeMismatch,
    /// NaN/Inf at different positions on the two sides.
    Nonfinite,
    /// Both sides have elements, all non-finite (NaN/Inf at the same positions): nothing could be
    /// compared, which usually means the reference itself is broken. Counts as a divergence.
    NoFinite,
    /// Present in our dump only.
    OnlyOurs,
    /// Present in the reference dump only.
    OnlyRef,
    /// One side could not be read (or its values do not fill its shape).
    Unreadable,
}

impl Status {
    /// True for the statuses that count as a divergence (and can be the first divergence):
    /// `diverged`, `shape_mismatch`, `nonfinite`, `no_finite`.
    pub fn is_divergence(self) -> bool {
        matches!(
            self,
            Status::Diverged | Status::ShapeMismatch | Status::Nonfinite | Status::NoFinite
        )
    }

    /// True where both sides were read and set against each other: not `only_ours`,
    /// `only_ref` or `unreadable` (what the per-step summaries count as missing).
    pub fn is_compared(self) -> bool {
        !matches!(
            self,
            Status::OnlyOurs | Status::OnlyRef | Status::Unreadable
        )
    }

    /// The snake_case name used in JSON (`"shape_mismatch"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Diverged => "diverged",
            Status::ShapeMismatch => "shape_mismatch",
            Status::Nonfinite => "nonfinite",
            Status::NoFinite => "no_finite",
            Status::OnlyOurs => "only_ours",
            Status::OnlyRef => "only_ref",
            Status::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the report: the comparison of one probe. Every float is finite or `None` (`null`).
/// Field meanings, units and null rules: `docs/report-schema.md`.
///
/// The optional fields are grouped by what they describe ([`TensorInfo`], [`RuleTerms`],
/// [`ErrorMetrics`], [`NonFiniteCounts`]); each group is `#[serde(flatten)]`ed, so the JSON row
/// is flat and its keys keep the documented order (`name` ... `local_growth`, tested).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// Probe name (shared with the plan's, [`Name`], except in a decode step built from its
    /// run's sums, [`crate::Rows`], which writes its own).
    pub name: Name,
    /// Verdict.
    pub status: Status,
    /// Why the row is not `ok` (one line); `None` for `ok`.
    pub reason: Option<String>,
    /// `N` when the name contains `layers.N`.
    pub layer: Option<usize>,
    /// Decode step of the probe: 0 for the prefill (and every one-pass dump), `s` for a name
    /// `...@s` (docs/dump-format.md, "Decode steps").
    #[serde(default)]
    pub step: usize,
    /// Shapes, dtypes and element count of the two sides: shared by the rows of one probe's
    /// decode steps compared in one call (a 256-step report has ~150,000 rows; change it with
    /// [`OpResult::tensor_mut`]).
    #[serde(flatten)]
    pub tensor: Arc<TensorInfo>,
    /// The terms of the norm-wise decision rule.
    #[serde(flatten)]
    pub rule: RuleTerms,
    /// Error metrics (diagnostics; the verdict comes from [`RuleTerms`]).
    #[serde(flatten)]
    pub errors: ErrorMetrics,
    /// NaN / Inf counts: shared by the rows of one probe's decode steps that have the same
    /// (none, as a rule; a new one is made for a row whose counts differ).
    #[serde(flatten)]
    pub nonfinite: Arc<NonFiniteCounts>,
    /// Both sides' errors against the truth run (`--truth` only): shared like
    /// [`OpResult::tensor`] (change it with [`OpResult::truth_mut`]).
    #[serde(flatten)]
    pub truth: Arc<TruthMetrics>,
    /// Fraction of compared elements with `|o - r| > atol + rtol * |r|` (an element-wise
    /// diagnostic; last in the JSON row, after the non-finite counts, as documented).
    pub frac_outside_tol: Option<f64>,
    /// Relative L2 error over the largest of its inputs' (dataflow), each input raised to the
    /// noise floor; set by [`crate::assemble`] (`crate::origin::local_growths`), last in the row.
    pub local_growth: Option<f64>,
    /// How a name map (`diff --map`) made our side of this row: the rule and the source
    /// tensor(s), one line; or how a pair of names was inferred by content. `None` for a row
    /// whose names matched as they are. Last in the row.
    #[serde(default)]
    pub mapped: Option<String>,
}

/// What the two sides of a row are: shapes, dtypes, element count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// The reference's shape (ours' when the probe is only in ours).
    pub shape: Option<Vec<usize>>,
    /// Ours' shape when it differs from `shape` (e.g. `[1, T, H]` vs `[T, H]`).
    pub shape_ours: Option<Vec<usize>>,
    /// Original dtype of our side.
    pub dtype_ours: Option<DtypeName>,
    /// Original dtype of the reference side.
    pub dtype_ref: Option<DtypeName>,
    /// Elements per side (when the sides are aligned), else the present side's count.
    pub numel: Option<u64>,
}

/// A multi-dimensional index into a tensor (a row's `max_abs_err_index`), serialized as a JSON
/// array of integers: up to [`Index::INLINE`] axes of at most `u32::MAX` each are held in the
/// row itself, any other on the heap (a decode report has ~150,000 rows, and this was the last
/// allocation of most of them).
#[derive(Clone, PartialEq, Eq)]
pub struct Index(IndexRepr);

#[derive(Clone, PartialEq, Eq)]
enum IndexRepr {
    Inline { len: u8, axes: [u32; Index::INLINE] },
    Heap(Box<[usize]>),
}

impl Index {
    /// Axes held without an allocation.
    pub const INLINE: usize = 4;

    /// The index of these axes.
    pub fn new(axes: &[usize]) -> Index {
        let mut inline = [0u32; Index::INLINE];
        let fits = axes.len() <= Index::INLINE
            && axes
                .iter()
                .zip(inline.iter_mut())
                .all(|(&a, slot)| u32::try_from(a).map(|a| *slot = a).is_ok());
        match u8::try_from(axes.len()) {
            Ok(len) if fits => Index(IndexRepr::Inline { len, axes: inline }),
            _ => Index(IndexRepr::Heap(axes.into())),
        }
    }

    /// The axes, in order, without a copy (the JSON of a decode report writes ~150,000).
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        // One of the two is empty.
        let (inline, heap): (&[u32], &[usize]) = match &self.0 {
            IndexRepr::Inline { len, axes } => (&axes[..usize::from(*len)], &[]),
            IndexRepr::Heap(axes) => (&[], axes),
        };
        inline
            .iter()
            .map(|&a| a as usize)
            .chain(heap.iter().copied())
    }

    /// How many axes.
    pub fn len(&self) -> usize {
        match &self.0 {
            IndexRepr::Inline { len, .. } => usize::from(*len),
            IndexRepr::Heap(axes) => axes.len(),
        }
    }

    /// No axis (the index of a 0-d tensor).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The axes, in order.
    pub fn to_vec(&self) -> Vec<usize> {
        self.iter().collect()
    }
}

impl std::fmt::Debug for Index {
    /// As the axes' list: `[1, 2]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Index {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for a in self.iter() {
            seq.serialize_element(&a)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Index {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Index, D::Error> {
        Vec::<usize>::deserialize(deserializer).map(|v| Index::new(&v))
    }
}

/// A dtype name as a row holds it: the names dumps write are static strings, any other is
/// owned (no allocation per row for the usual ones: a decode report has ~150,000 rows).
pub type DtypeName = std::borrow::Cow<'static, str>;

/// `name` as a [`DtypeName`].
pub fn dtype_name(name: &str) -> DtypeName {
    const KNOWN: [&str; 16] = [
        "float32",
        "bfloat16",
        "float16",
        "float64",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
        "float8_e4m3fn",
        "float8_e5m2",
        "complex64",
    ];
    match KNOWN.iter().find(|&&k| k == name) {
        Some(&k) => DtypeName::Borrowed(k),
        None => DtypeName::Owned(name.to_string()),
    }
}

impl TensorInfo {
    /// The coarser dtype class of the two sides (a missing or unknown dtype counts as float32):
    /// the class that picks a row's preset and noise floor.
    pub fn pair_class(&self) -> DTypeClass {
        let class = |d: &Option<DtypeName>| DTypeClass::of(d.as_deref().unwrap_or("float32"));
        class(&self.dtype_ours).max(class(&self.dtype_ref))
    }
}

/// The terms of the decision rule `||ours - ref||_2 > atol * sqrt(n) + rtol * ||ref||_2`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleTerms {
    /// Elements finite on both sides: the `n` of the decision rule.
    pub n_compared: Option<u64>,
    /// Relative tolerance applied.
    pub rtol: Option<f64>,
    /// Absolute tolerance applied.
    pub atol: Option<f64>,
    /// `||ours||_2` over the compared elements (over all finite elements when not aligned).
    pub ours_l2: Option<f64>,
    /// `||ref||_2`, same rule.
    pub ref_l2: Option<f64>,
    /// `||ours - ref||_2`.
    pub diff_l2: Option<f64>,
    /// `atol * sqrt(n) + rtol * ||ref||_2`: the op diverges when `diff_l2` exceeds it.
    pub tol_threshold: Option<f64>,
}

/// Error metrics over the compared elements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorMetrics {
    /// `max |ours - ref|`.
    pub max_abs_err: Option<f64>,
    /// Multi-dimensional index (in the reference's shape) of the first element attaining it.
    pub max_abs_err_index: Option<Index>,
    /// `mean |ours - ref|`.
    pub mean_abs_err: Option<f64>,
    /// `||ours - ref||_2 / ||ref||_2`.
    pub rel_l2_err: Option<f64>,
    /// `max |ours - ref| / max(|ref|, guard)`.
    pub max_rel_err: Option<f64>,
    /// Cosine similarity; `None` when either side is all zeros.
    pub cosine: Option<f64>,
}

/// NaN / ±Inf counts of both sides and where their masks differ.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NonFiniteCounts {
    /// NaN count in ours.
    pub nan_ours: Option<u64>,
    /// ±Inf count in ours.
    pub inf_ours: Option<u64>,
    /// NaN count in the reference.
    pub nan_ref: Option<u64>,
    /// ±Inf count in the reference.
    pub inf_ref: Option<u64>,
    /// Positions where the non-finite masks differ.
    pub nonfinite_mismatch: Option<u64>,
}

/// Both sides judged against a high-precision truth run of the reference (`--truth`;
/// [`crate::tolerance::truth_rule`]). All `None` without `--truth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TruthMetrics {
    /// `||ours - truth||_2 / ||truth||_2`.
    pub ours_truth_rel_err: Option<f64>,
    /// `||ref - truth||_2 / ||truth||_2`.
    pub ref_truth_rel_err: Option<f64>,
    /// `ours_truth_rel_err / max(ref_truth_rel_err, half the unit roundoff of ref's dtype)`.
    pub noise_ratio: Option<f64>,
    /// Why this row could not use the truth (not in the truth dump, shape or dtype does not
    /// fit): it was judged by the presets instead. `None` when the truth was used (or not given).
    pub truth_problem: Option<String>,
}

impl OpResult {
    /// [`OpResult::tensor`] to change (copied first when another row shares it).
    pub fn tensor_mut(&mut self) -> &mut TensorInfo {
        Arc::make_mut(&mut self.tensor)
    }

    /// [`OpResult::truth`] to change (copied first when another row shares it).
    pub fn truth_mut(&mut self) -> &mut TruthMetrics {
        Arc::make_mut(&mut self.truth)
    }

    /// [`OpResult::nonfinite`] to change (copied first when another row shares it).
    pub fn nonfinite_mut(&mut self) -> &mut NonFiniteCounts {
        Arc::make_mut(&mut self.nonfinite)
    }

    /// A row with only the name, status and reason set.
    pub(crate) fn bare(name: &str, status: Status, reason: Option<String>) -> OpResult {
        OpResult {
            name: Name::from(name),
            status,
            reason,
            layer: divergence_names::layer_index(name),
            step: divergence_names::split_step(name).1,
            tensor: Arc::default(),
            rule: RuleTerms::default(),
            errors: ErrorMetrics::default(),
            nonfinite: Arc::default(),
            truth: Arc::default(),
            frac_outside_tol: None,
            local_growth: None,
            mapped: None,
        }
    }
}

/// Formats a number as `1.234e-05` (fixed width mantissa, signed two-digit exponent): the one
/// number format of reasons and renderers, so snapshots are stable.
pub fn sci(x: f64) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(16);
    if !x.is_finite() {
        let _ = write!(s, "{x}");
        return s;
    }
    // `{:.3e}` writes `1.234e4` / `1.235e-4`: the exponent gets its sign and two digits, in
    // place (one allocation: a decode report formats tens of thousands of these).
    let _ = write!(s, "{x:.3e}");
    if let Some(e) = s.find('e') {
        let digits_at = if s[e + 1..].starts_with('-') {
            e + 2
        } else {
            s.insert(e + 1, '+');
            e + 2
        };
        if s.len() - digits_at < 2 {
            s.insert(digits_at, '0');
        }
    }
    s
}

pub(crate) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Whether two shapes align as a row compares them: the same once size-1 axes are dropped
/// (`[T, H]` is compared with `[1, T, H]`).
pub fn shapes_align(a: &[usize], b: &[usize]) -> bool {
    a.iter()
        .filter(|&&d| d != 1)
        .eq(b.iter().filter(|&&d| d != 1))
}

/// Row-major unravel of a flat index.
pub(crate) fn unravel(flat: u64, shape: &[usize]) -> Index {
    // Row-major, from the last axis; on the stack for the ranks an index holds inline.
    let fill = |idx: &mut [usize]| {
        let mut flat = flat;
        for (slot, &dim) in idx.iter_mut().zip(shape).rev() {
            let d = dim.max(1) as u64;
            *slot = (flat % d) as usize;
            flat /= d;
        }
    };
    if shape.len() <= Index::INLINE {
        let mut idx = [0usize; Index::INLINE];
        fill(&mut idx[..shape.len()]);
        Index::new(&idx[..shape.len()])
    } else {
        let mut idx = vec![0usize; shape.len()];
        fill(&mut idx);
        Index::new(&idx)
    }
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn check_len(side: &Side<'_>, which: Which) -> Result<(), String> {
    match numel(side.shape) {
        Some(n) if n == side.values.len() => Ok(()),
        _ => Err(format!(
            "{}: {} values do not fill shape {:?}",
            which.label(),
            side.values.len(),
            side.shape
        )),
    }
}

fn fmt_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Compares one probe. `ours`/`reference` are `None` when the probe is missing from that dump.
/// Never fails: every problem is a row status (see [`Status`]).
///
/// The same as a [`ProbeFold`] fed the whole values at once.
pub fn compare(
    name: &str,
    ours: Option<Side<'_>>,
    reference: Option<Side<'_>>,
    cfg: &DiffConfig,
) -> OpResult {
    fold_whole(name, ours, reference, TruthArg::Off, cfg)
}

/// [`compare`], then, in truth mode ([`Tolerance::Truth`]), the three-way verdict: both sides'
/// errors against `truth` and their ratio decide a row the two-way comparison left `ok` or
/// `diverged` ([`crate::tolerance::truth_rule`]). Shape and non-finite verdicts stand. A
/// `truth` that is missing (`None`), misshapen, not finer than the reference or not finite
/// where the reference is leaves the preset's verdict, with `truth_problem` saying why.
/// Outside truth mode this is [`compare`].
pub fn compare_with_truth(
    name: &str,
    ours: Option<Side<'_>>,
    reference: Option<Side<'_>>,
    truth: Option<Side<'_>>,
    cfg: &DiffConfig,
) -> OpResult {
    let t = match truth {
        Some(t) => TruthArg::Side(t),
        None => TruthArg::Missing,
    };
    fold_whole(name, ours, reference, t, cfg)
}

/// The rows of one probe's decode steps, compared in one call: `ours` and `reference` hold
/// `names.len()` steps one after the other (a stacked member's values, `docs/dump-format.md`,
/// "Decode steps"), each step of its side's `shape`; `emit(k, row)` gets step `k`'s row, named
/// `names[k]`, in step order. Each row is [`compare`]'s on that step's values alone, bit for
/// bit (tested): the row's fields that do not depend on the values (shapes, dtypes, the
/// tolerance) are made once, and the values are summed in one pass over both members
/// (`metrics::step_sums`). Steps too large for that (a chunk or more each), or values that do
/// not hold every step, are compared one step at a time, as [`compare`] would. Outside truth
/// mode only ([`compare_with_truth`] reads a third tensor per row). Never fails.
pub fn compare_steps<'a>(
    names: &[Name],
    ours: Side<'a>,
    reference: Side<'a>,
    cfg: &DiffConfig,
    emit: &mut dyn FnMut(usize, OpResult),
) {
    for (k, row) in compare_step_run(StepNames::Given(names), ours, reference, cfg).into_rows() {
        emit(k, row);
    }
}

/// [`compare_steps`], with the steps kept compact: each step whose row its sums rebuild (no
/// NaN or Inf, the step's own name `base@s`, steps one after the other) is kept in a
/// [`StepRun`] (its row built where one is read, [`crate::Rows`]); every other step is a row.
/// `StepRows::into_rows` gives [`compare_steps`]' rows. Never fails.
pub fn compare_step_run<'a>(
    names: StepNames<'_>,
    ours: Side<'a>,
    reference: Side<'a>,
    cfg: &DiffConfig,
) -> StepRows {
    let mut sums = vec![StepSums::UNUSED; names.len()];
    let StepParts { run, rows } =
        compare_step_run_into(names, ours, reference, cfg, &mut |k, s| sums[k] = s);
    if run.is_none() {
        sums.clear();
    }
    StepRows { run, sums, rows }
}

/// The names of a run's steps ([`compare_step_run_into`]), asked one at a time: a step kept
/// compact needs none but the first's (a decode dump's run need touch no other name).
#[derive(Clone, Copy)]
pub enum StepNames<'a> {
    /// These names, each checked: a step not named as a run writes it back (the first step's
    /// base, its step plus `k`) is a row of its own.
    Given(&'a [Name]),
    /// `len` steps, step `k` named `name(k)`, which the caller knows is written back: the
    /// names a dump gives a stacked member's steps (under no map).
    WrittenBack {
        len: usize,
        name: &'a (dyn Fn(usize) -> Name + Sync),
    },
}

impl StepNames<'_> {
    /// How many steps.
    pub fn len(&self) -> usize {
        match self {
            StepNames::Given(names) => names.len(),
            StepNames::WrittenBack { len, .. } => *len,
        }
    }

    /// True when there are no steps.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Step `k`'s name.
    pub fn name(&self, k: usize) -> Name {
        match self {
            StepNames::Given(names) => names[k].clone(),
            StepNames::WrittenBack { name, .. } => name(k),
        }
    }
}

/// [`compare_step_run`], each step kept compact handed to `emit` (its index in the run and its
/// sums) as it is made, in step order, instead of kept in the result: what [`crate::RowSink`]
/// writes in place ([`crate::RowsBuilder::close_run`] takes the result). A step is emitted only
/// when the result has a run, and every step is either emitted or one of the result's rows,
/// once.
pub fn compare_step_run_into<'a>(
    names: StepNames<'_>,
    ours: Side<'a>,
    reference: Side<'a>,
    cfg: &DiffConfig,
    emit: &mut dyn FnMut(usize, StepSums),
) -> StepParts {
    compare_step_pieces_into(
        names,
        StepSide::joined(ours),
        StepSide::joined(reference),
        cfg,
        emit,
    )
}

/// One side of a run of decode steps ([`compare_step_pieces_into`]): every step's shape and
/// dtype, and the values, in one piece or a piece per step.
#[derive(Debug, Clone, Copy)]
pub struct StepSide<'v, 'a> {
    /// One step's shape as stored.
    pub shape: &'a [usize],
    /// Every step's values, `shape.iter().product()` a step.
    pub values: StepValues<'v, 'a>,
    /// Original dtype name, as [`Side::dtype`].
    pub dtype: &'a str,
}

/// A run's values on one side ([`StepSide`]).
#[derive(Debug, Clone, Copy)]
pub enum StepValues<'v, 'a> {
    /// Every step one after the other (a stacked member).
    Joined(ValuesRef<'a>),
    /// A piece per step, in step order.
    Apart(&'v [ValuesRef<'a>]),
}

impl<'a> StepSide<'a, 'a> {
    fn joined(side: Side<'a>) -> StepSide<'a, 'a> {
        StepSide {
            shape: side.shape,
            values: StepValues::Joined(side.values),
            dtype: side.dtype,
        }
    }
}

impl<'a> StepSide<'_, 'a> {
    fn head(&self) -> Head<'a> {
        Head {
            shape: self.shape,
            dtype: self.dtype,
        }
    }

    /// True when every one of `steps` steps holds exactly `n` values.
    fn holds(&self, n: usize, steps: usize) -> bool {
        match self.values {
            StepValues::Joined(v) => Some(v.len()) == n.checked_mul(steps),
            StepValues::Apart(pieces) => {
                pieces.len() == steps && pieces.iter().all(|v| v.len() == n)
            }
        }
    }

    /// Step `k` as a side of its own: its piece, or its share of the joined values (as much
    /// of them as there are).
    fn step(&self, k: usize) -> Side<'a> {
        let values = match self.values {
            StepValues::Joined(v) => {
                let per = numel(self.shape).unwrap_or(0);
                let len = v.len();
                let from = k.saturating_mul(per).min(len);
                v.slice(from..from.saturating_add(per).min(len))
            }
            StepValues::Apart(pieces) => pieces.get(k).copied().unwrap_or(ValuesRef::F32(&[])),
        };
        Side {
            shape: self.shape,
            values,
            dtype: self.dtype,
        }
    }
}

/// [`compare_step_run_into`] of steps stored apart, one piece of values per step on each side
/// (the per-step layout's arrays `x@1`, `x@2`, ..., each borrowed from its own place in the
/// file): the same rows and sums as those steps stored one after the other would give, bit
/// for bit (each step's sums are [`compare_step_run_into`]'s of a run of that step alone;
/// tested), without an `OpResult` per step.
pub fn compare_step_pieces_into(
    names: StepNames<'_>,
    ours: StepSide<'_, '_>,
    reference: StepSide<'_, '_>,
    cfg: &DiffConfig,
    emit: &mut dyn FnMut(usize, StepSums),
) -> StepParts {
    let steps = names.len();
    // The first step's name: the run's base and first step, and its layer.
    let first_name = (!names.is_empty()).then(|| names.name(0));
    let n = numel(ours.shape).filter(|&n| Some(n) == numel(reference.shape));
    let fast = n.filter(|&n| {
        n < cfg.chunk_len
            && ours.holds(n, steps)
            && reference.holds(n, steps)
            && first_name.is_some()
    });
    let template = fast.and_then(|_| {
        let first = first_name.as_deref().unwrap_or_default();
        let fold = ProbeFold::new(first, Some(ours.head()), Some(reference.head()), cfg);
        match fold.state {
            FoldState::Pair {
                row,
                numel,
                tol,
                truth: TruthFold::Off,
                ..
            } => Some((row, numel, tol)),
            _ => None,
        }
    });
    let (Some(n), Some((mut template, numel, tol)), Some(first_name)) =
        (fast, template, first_name.as_ref())
    else {
        // One step at a time, each with its own values (as much of them as there are).
        let rows = (0..steps)
            .map(|k| {
                let name = names.name(k);
                (
                    k,
                    compare(&name, Some(ours.step(k)), Some(reference.step(k)), cfg),
                )
            })
            .collect();
        return StepParts { run: None, rows };
    };
    // Every step's row counts `n` elements: set once in the tensor info the rows share.
    template.tensor_mut().numel = Some(n as u64);
    // And no NaN or Inf, as a rule: the counts the rows share unless theirs differ.
    template.nonfinite = Arc::new(NonFiniteCounts {
        nan_ours: Some(0),
        inf_ours: Some(0),
        nan_ref: Some(0),
        inf_ref: Some(0),
        nonfinite_mismatch: Some(0),
    });
    let params = Params {
        rtol: tol.rtol,
        atol: tol.atol,
        rel_guard: tol.rel_guard,
    };
    // The steps of one probe share their layer: it is parsed once (a name's layer depends on
    // its base alone; a row of another base, which a caller should not pass, is parsed on its
    // own). From the name, not its base: a base may itself end in `@<digits>` (`x@2@steps`
    // holds `x@2@1`, ...).
    let (first_base, first) = divergence_names::split_step(first_name);
    let first_layer = divergence_names::layer_index(first_name);
    template.layer = first_layer;
    // A step is kept compact when its name is `base@s` as the run would write it back: the
    // first step's base, the next step, no leading zero.
    let written_back = |k: usize| match names {
        StepNames::Given(names) => divergence_names::is_step_name(&names[k], first_base, first + k),
        StepNames::WrittenBack { .. } => true,
    };
    let mut rows = Vec::new();
    let mut on_step = |k: usize, acc: Accumulator| {
        let compact = [Some(acc.n); 2] == numel && written_back(k);
        if let Some(s) = compact
            .then(|| StepSums::of(&acc, n as u64, &tol))
            .flatten()
        {
            emit(k, s);
            return;
        }
        // The plan's name, shared: no allocation.
        let name = names.name(k);
        let mut row = template.clone();
        let (base, step) = divergence_names::split_step(&name);
        if base != first_base {
            row.layer = divergence_names::layer_index(&name);
        }
        row.step = step;
        row.name = name;
        let row = match pair_short_row(&row, numel, [acc.n, acc.n]) {
            Some(bad) => bad,
            None => apply_truth(pair_row(row, &acc, &tol), TruthFold::Off),
        };
        rows.push((k, row));
    };
    match (ours.values, reference.values) {
        (StepValues::Joined(o), StepValues::Joined(r)) => {
            crate::metrics::step_sums(o, r, n, steps, &params, &mut on_step)
        }
        // Each step a run of its own, in step order (as `step_sums` gives a joined run's).
        _ => (0..steps).for_each(|k| {
            let (o, r) = (ours.step(k).values, reference.step(k).values);
            crate::metrics::step_sums(o, r, n, 1, &params, &mut |_, acc| on_step(k, acc));
        }),
    }
    rows.sort_unstable_by_key(|(k, _)| *k);
    let run = (rows.len() < steps).then(|| StepRun {
        base: Name::from(first_base),
        class: template.tensor.pair_class(),
        head: template,
        first,
        tol,
        n: n as u64,
        at: crate::rows::RunAt::Unknown,
    });
    StepParts { run, rows }
}

/// A side's values, or none.
fn values<'a>(side: Option<Side<'a>>) -> ValuesRef<'a> {
    side.map_or(ValuesRef::F32(&[]), |s| s.values)
}

/// The truth side handed to [`fold_whole`].
enum TruthArg<'a> {
    /// [`compare`]: no truth, whatever the mode.
    Off,
    /// Truth mode, and the truth dump lacks the probe.
    Missing,
    /// Truth mode, and the truth's values.
    Side(Side<'a>),
}

/// [`compare`] and [`compare_with_truth`]: a [`ProbeFold`] fed every value in one push (which
/// runs on rayon, chunk by chunk, exactly as a streamed fold).
fn fold_whole(
    name: &str,
    ours: Option<Side<'_>>,
    reference: Option<Side<'_>>,
    truth: TruthArg<'_>,
    cfg: &DiffConfig,
) -> OpResult {
    // Values that do not fill their shape are a caller's bug or a broken reader: say so before
    // anything is computed.
    if let (Some(o), Some(r)) = (ours, reference) {
        for (side, which) in [(&o, Which::Ours), (&r, Which::Ref)] {
            if let Err(msg) = check_len(side, which) {
                let mut row = OpResult::bare(name, Status::Unreadable, Some(msg));
                row.tensor_mut().dtype_ours = Some(dtype_name(o.dtype));
                row.tensor_mut().dtype_ref = Some(dtype_name(r.dtype));
                return row;
            }
        }
    }
    let mut fold = ProbeFold::new(
        name,
        ours.map(|s| s.head()),
        reference.map(|s| s.head()),
        cfg,
    );
    match truth {
        TruthArg::Off => {}
        TruthArg::Missing => fold = fold.with_truth(None),
        TruthArg::Side(t) => {
            fold = fold.with_truth(Some(t.head()));
            // Values that do not fill the truth's shape are its first problem.
            if check_len(&t, Which::Ref).is_err() {
                fold.truth_failed(format!(
                    "truth: {} values do not fill shape {}",
                    t.values.len(),
                    fmt_shape(t.shape)
                ));
            }
        }
    }
    let truth_values = match truth {
        TruthArg::Side(t) => Some(t.values),
        _ => None,
    };
    match fold.needs() {
        Needs::Nothing => {}
        Needs::Ours => fold.push_side(Which::Ours, values(ours)),
        Needs::Ref => fold.push_side(Which::Ref, values(reference)),
        Needs::Apart => {
            fold.push_side(Which::Ours, values(ours));
            fold.push_side(Which::Ref, values(reference));
        }
        Needs::Pair { truth } => fold.push_pair(
            values(ours),
            values(reference),
            truth_values.filter(|_| truth).map(Piece::from),
        ),
    }
    fold.finish()
}

/// One side of a probe without its values: what [`ProbeFold::new`] needs before any value.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// Shape as stored.
    pub shape: &'a [usize],
    /// Original dtype name, torch-style.
    pub dtype: &'a str,
}

impl<'a> Side<'a> {
    /// The shape and dtype of this side.
    pub fn head(&self) -> Head<'a> {
        Head {
            shape: self.shape,
            dtype: self.dtype,
        }
    }
}

/// An owned [`Head`], with its element count.
#[derive(Debug, Clone)]
struct OwnedHead {
    shape: Vec<usize>,
    dtype: String,
    /// `None` when the shape's product overflows.
    numel: Option<u64>,
}

impl OwnedHead {
    fn head(&self) -> Head<'_> {
        Head {
            shape: &self.shape,
            dtype: &self.dtype,
        }
    }

    fn of(h: Head<'_>) -> OwnedHead {
        OwnedHead {
            shape: h.shape.to_vec(),
            dtype: h.dtype.to_string(),
            numel: numel(h.shape).map(|n| n as u64),
        }
    }
}

/// Which values a [`ProbeFold`] wants, given the two sides' heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// None: the row is decided (no data on either side).
    Nothing,
    /// Our side's values alone ([`ProbeFold::push_side`]): the probe is only in ours.
    Ours,
    /// The reference's values alone: the probe is only in the reference.
    Ref,
    /// Each side's values on their own ([`ProbeFold::push_side`], ours and ref, in any order):
    /// the shapes do not align, so each side gets its own statistics.
    Apart,
    /// Both sides in lockstep ([`ProbeFold::push_pair`]), and the truth's along with them when
    /// `truth` is true.
    Pair {
        /// The truth's values are wanted too.
        truth: bool,
    },
}

/// Comparing one probe whose values arrive in pieces, in order: a tensor streamed out of a
/// compressed file in bounded memory. [`ProbeFold::new`] takes the two sides' heads (shape and
/// dtype), [`ProbeFold::needs`] says which values to push, [`ProbeFold::push_pair`] /
/// [`ProbeFold::push_side`] take them piece by piece, and [`ProbeFold::finish`] gives the row.
///
/// Every piece but the last must hold a multiple of [`DiffConfig::piece_unit`] elements (a
/// [`crate::metrics::BLOCK`] of 2,048 by default): then the row is [`compare`]'s (or
/// [`compare_with_truth`]'s) on the whole values, bit for bit (the sums continue block by
/// block within a chunk and the per-chunk sums are merged in the same order; tested). Values that do not add up to
/// their shape make an `unreadable` row. Pure: no I/O, never fails.
#[derive(Debug, Clone)]
pub struct ProbeFold {
    tolerance: Tolerance,
    chunk_len: usize,
    state: FoldState,
}

#[derive(Debug, Clone)]
// One value per probe in flight: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum FoldState {
    /// Decided from the heads.
    Row(OpResult),
    /// One side only.
    One {
        /// The probe (the other states have it in their row).
        name: String,
        which: Which,
        head: OwnedHead,
        stats: Chunked<SideStats>,
    },
    /// Shapes that do not align: each side's statistics.
    Apart {
        row: OpResult,
        o: OwnedHead,
        r: OwnedHead,
        so: Chunked<SideStats>,
        sr: Chunked<SideStats>,
    },
    /// Aligned sides, compared element by element. Their shapes and dtypes are the row's
    /// (`tensor`); only their element counts are kept beside it (no copies: a decode dump has
    /// ~150,000 rows).
    Pair {
        row: OpResult,
        /// Ours' and the reference's element counts (`None`: the shape's product overflows).
        numel: [Option<u64>; 2],
        tol: Resolved,
        acc: Chunked<Accumulator>,
        /// Elements pushed per side, when they differ (a broken feed).
        uneven: bool,
        truth: TruthFold,
    },
}

/// The truth's part of a pair fold.
#[derive(Debug, Clone)]
// One value per probe in flight: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum TruthFold {
    /// Not in truth mode (or [`compare`] in truth mode).
    Off,
    /// Truth mode, and the truth cannot judge this row: why.
    Problem(String),
    /// Truth mode, the truth's values wanted: both sides against it.
    Fold {
        t: OwnedHead,
        ratio: f64,
        ot: Chunked<Accumulator>,
        rt: Chunked<Accumulator>,
        seen: u64,
    },
}

/// The tolerance of the errors against the truth: exact sums, no element-wise counts.
const TRUTH_PARAMS: Params = Params {
    rtol: 0.0,
    atol: 0.0,
    rel_guard: REL_ERR_GUARD_MIN,
};

impl ProbeFold {
    /// Starts the comparison of probe `name` from its sides' heads (`None`: not in that dump).
    pub fn new(
        name: &str,
        ours: Option<Head<'_>>,
        reference: Option<Head<'_>>,
        cfg: &DiffConfig,
    ) -> ProbeFold {
        let state = match (ours, reference) {
            (None, None) => FoldState::Row(OpResult::bare(
                name,
                Status::Unreadable,
                Some("no data on either side".to_string()),
            )),
            (Some(h), None) | (None, Some(h)) => FoldState::One {
                name: name.to_string(),
                which: if ours.is_some() {
                    Which::Ours
                } else {
                    Which::Ref
                },
                head: OwnedHead::of(h),
                stats: Chunked::default(),
            },
            (Some(o), Some(r)) => {
                let tol = cfg.tolerance.resolve(o.dtype, r.dtype);
                let mut row = OpResult::bare(name, Status::Ok, None);
                row.tensor_mut().shape = Some(r.shape.to_vec());
                if o.shape != r.shape {
                    row.tensor_mut().shape_ours = Some(o.shape.to_vec());
                }
                row.tensor_mut().dtype_ours = Some(dtype_name(o.dtype));
                row.tensor_mut().dtype_ref = Some(dtype_name(r.dtype));
                row.rule.rtol = Some(tol.rtol);
                row.rule.atol = Some(tol.atol);
                if !shapes_align(o.shape, r.shape) {
                    FoldState::Apart {
                        row,
                        o: OwnedHead::of(o),
                        r: OwnedHead::of(r),
                        so: Chunked::default(),
                        sr: Chunked::default(),
                    }
                } else {
                    FoldState::Pair {
                        row,
                        numel: [o, r].map(|h| numel(h.shape).map(|n| n as u64)),
                        tol,
                        acc: Chunked::default(),
                        uneven: false,
                        truth: TruthFold::Off,
                    }
                }
            }
        };
        ProbeFold {
            tolerance: cfg.tolerance,
            chunk_len: cfg.chunk_len,
            state,
        }
    }

    /// In truth mode ([`Tolerance::Truth`]), the truth's head (`None`: the truth dump lacks the
    /// probe), for the three-way verdict of [`compare_with_truth`]. Outside truth mode, or for a
    /// probe whose sides do not align, nothing changes.
    pub fn with_truth(mut self, truth: Option<Head<'_>>) -> ProbeFold {
        let Tolerance::Truth { ratio } = self.tolerance else {
            return self;
        };
        if let FoldState::Pair { row, truth: tf, .. } = &mut self.state {
            let (r_shape, r_dtype) = ref_head(row);
            *tf = match truth {
                None => TruthFold::Problem("not in the truth dump".to_string()),
                Some(t) => match truth_head_problem(r_shape, r_dtype, t) {
                    Some(p) => TruthFold::Problem(p),
                    None => TruthFold::Fold {
                        t: OwnedHead::of(t),
                        ratio,
                        ot: Chunked::default(),
                        rt: Chunked::default(),
                        seen: 0,
                    },
                },
            };
        }
        self
    }

    /// The values this fold wants ([`Needs`]).
    pub fn needs(&self) -> Needs {
        match &self.state {
            FoldState::Row(_) => Needs::Nothing,
            FoldState::One {
                which: Which::Ours, ..
            } => Needs::Ours,
            FoldState::One { .. } => Needs::Ref,
            FoldState::Apart { .. } => Needs::Apart,
            FoldState::Pair { truth, .. } => Needs::Pair {
                truth: matches!(truth, TruthFold::Fold { .. }),
            },
        }
    }

    /// The next values of both sides (equally many), and of the truth when
    /// [`Needs::Pair`] asks for it. Ignored unless the fold [`Needs::Pair`]. A side may be a
    /// [`Piece`] of a strided gather (a split part read in place): the row is the same, bit
    /// for bit, as with its values copied out.
    pub fn push_pair<'o, 'r, 't>(
        &mut self,
        ours: impl Into<Piece<'o>>,
        reference: impl Into<Piece<'r>>,
        truth: Option<Piece<'t>>,
    ) {
        let (ours, reference) = (ours.into(), reference.into());
        let chunk_len = self.chunk_len;
        let FoldState::Pair {
            tol,
            acc,
            uneven,
            truth: tf,
            ..
        } = &mut self.state
        else {
            return;
        };
        if ours.len() != reference.len() {
            *uneven = true;
        }
        let params = Params {
            rtol: tol.rtol,
            atol: tol.atol,
            rel_guard: tol.rel_guard,
        };
        acc.feed_pair(ours, reference, &params, chunk_len);
        if let TruthFold::Fold {
            t: th,
            ot,
            rt,
            seen,
            ..
        } = tf
        {
            match truth {
                Some(t) if t.len() == ours.len() && t.len() == reference.len() => {
                    ot.feed_pair(ours, t, &TRUTH_PARAMS, chunk_len);
                    rt.feed_pair(reference, t, &TRUTH_PARAMS, chunk_len);
                    *seen += t.len() as u64;
                }
                // A missing or short piece of the truth: it can no longer judge this row.
                _ => {
                    let have = *seen + truth.map_or(0, |t| t.len() as u64);
                    *tf = TruthFold::Problem(format!(
                        "truth: {have} values do not fill shape {}",
                        fmt_shape(&th.shape)
                    ));
                }
            }
        }
    }

    /// The truth could not be read (`why`, one line, e.g. a read error or a CRC mismatch found
    /// at its end): the row keeps the presets' verdict and says why (`truth_problem`), as
    /// [`compare_with_truth`] does for a truth it cannot use. No effect outside truth mode.
    pub fn truth_failed(&mut self, why: String) {
        if let FoldState::Pair { truth, .. } = &mut self.state {
            if !matches!(truth, TruthFold::Off) {
                *truth = TruthFold::Problem(why);
            }
        }
    }

    /// The next values of one side, for a fold that [`Needs::Ours`], [`Needs::Ref`] or
    /// [`Needs::Apart`]; ignored otherwise.
    pub fn push_side<'v>(&mut self, which: Which, values: impl Into<Piece<'v>>) {
        let values = values.into();
        let chunk_len = self.chunk_len;
        let stats = match (&mut self.state, which) {
            (
                FoldState::One {
                    which: w, stats, ..
                },
                _,
            ) if *w == which => stats,
            (FoldState::Apart { so, .. }, Which::Ours) => so,
            (FoldState::Apart { sr, .. }, Which::Ref) => sr,
            _ => return,
        };
        stats.feed_side(values, chunk_len);
    }

    /// The row, from everything pushed.
    pub fn finish(self) -> OpResult {
        match self.state {
            FoldState::Row(row) => row,
            FoldState::One {
                name,
                which,
                head,
                stats,
            } => {
                let seen = stats.seen();
                let stats = stats.total();
                one_side(
                    &name,
                    &head,
                    which,
                    (Some(seen) == head.numel).then_some(stats),
                    seen,
                )
            }
            FoldState::Apart { row, o, r, so, sr } => {
                let sides = [(o.head(), o.numel), (r.head(), r.numel)];
                if let Some(bad) = short_row(&row.name, sides, [so.seen(), sr.seen()]) {
                    return bad;
                }
                shape_mismatch(row, &o, &r, so.total(), sr.total())
            }
            FoldState::Pair {
                row,
                numel,
                tol,
                acc,
                uneven,
                truth,
            } => {
                let acc = acc.total();
                let seen = if uneven {
                    [acc.n, acc.n + 1]
                } else {
                    [acc.n, acc.n]
                };
                if let Some(bad) = pair_short_row(&row, numel, seen) {
                    return bad;
                }
                let row = pair_row(row, &acc, &tol);
                apply_truth(row, truth)
            }
        }
    }
}

/// The reference's shape and dtype of a pair fold's row (set by [`ProbeFold::new`]).
pub(crate) fn ref_head(row: &OpResult) -> (&[usize], &str) {
    (
        row.tensor.shape.as_deref().unwrap_or_default(),
        row.tensor.dtype_ref.as_deref().unwrap_or_default(),
    )
}

/// [`short_row`] of a pair fold, whose sides' shapes and dtypes are in its row.
fn pair_short_row(row: &OpResult, numel: [Option<u64>; 2], seen: [u64; 2]) -> Option<OpResult> {
    let (r_shape, r_dtype) = ref_head(row);
    let ours = Head {
        shape: row.tensor.shape_ours.as_deref().unwrap_or(r_shape),
        dtype: row.tensor.dtype_ours.as_deref().unwrap_or_default(),
    };
    let reference = Head {
        shape: r_shape,
        dtype: r_dtype,
    };
    short_row(&row.name, [(ours, numel[0]), (reference, numel[1])], seen)
}

/// The `unreadable` row of a fold whose sides' values (`seen`) do not add up to their shapes
/// (each side's head and element count).
fn short_row(name: &str, sides: [(Head<'_>, Option<u64>); 2], seen: [u64; 2]) -> Option<OpResult> {
    let [(o, _), (r, _)] = sides;
    for (((head, numel), which), n) in sides.into_iter().zip([Which::Ours, Which::Ref]).zip(seen) {
        if numel != Some(n) {
            let mut row = OpResult::bare(
                name,
                Status::Unreadable,
                Some(format!(
                    "{}: {n} values do not fill shape {:?}",
                    which.label(),
                    head.shape
                )),
            );
            row.tensor_mut().dtype_ours = Some(dtype_name(o.dtype));
            row.tensor_mut().dtype_ref = Some(dtype_name(r.dtype));
            return Some(row);
        }
    }
    None
}

/// Why the truth cannot judge a row, from its head alone (shape, dtype class).
fn truth_head_problem(r_shape: &[usize], r_dtype: &str, t: Head<'_>) -> Option<String> {
    let (ref_class, truth_class) = (DTypeClass::of(r_dtype), DTypeClass::of(t.dtype));
    if !shapes_align(t.shape, r_shape) {
        Some(format!(
            "truth shape {} differs from ref {}",
            fmt_shape(t.shape),
            fmt_shape(r_shape)
        ))
    } else if ref_class != DTypeClass::Int
        && (truth_class == DTypeClass::Int || truth_class >= ref_class)
    {
        Some(format!(
            "truth is {}, not finer than ref's {}",
            t.dtype, r_dtype
        ))
    } else {
        None
    }
}

/// Ours holds the logits of the last `kept` of the reference's `of` positions only, of one
/// vocabulary of `vocab` tokens ([`last_logit_rows`]): what an engine that keeps the sampled
/// positions' logits gives (vLLM and llama.cpp keep the last position's in prefill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRows {
    pub kept: usize,
    pub of: usize,
    pub vocab: usize,
}

impl LastRows {
    /// The reference's elements that ours' rows stand for: its last `kept` rows.
    pub fn range(&self) -> std::ops::Range<usize> {
        (self.of - self.kept) * self.vocab..self.of * self.vocab
    }

    /// The reference's values of those rows, as a side of ours' shape (`ours_shape`): what
    /// ours is compared with.
    pub fn reference_side<'a>(&self, ours_shape: &'a [usize], reference: Side<'a>) -> Side<'a> {
        Side {
            shape: ours_shape,
            values: reference.values.slice(self.range()),
            dtype: reference.dtype,
        }
    }

    /// The report's note on the row: `lm_head: ours holds the logits of the last position
    /// only (of 16): compared with the reference's last`.
    pub fn note(&self, name: &str) -> String {
        let (which, last) = if self.kept == 1 {
            ("the last position".to_string(), "last".to_string())
        } else {
            (
                format!("the last {} positions", self.kept),
                format!("last {}", self.kept),
            )
        };
        format!(
            "{name}: ours holds the logits of {which} only (of the reference's {}; an engine that keeps the sampled positions' logits, as vLLM and llama.cpp do in prefill): compared with the reference's {last}",
            self.of
        )
    }
}

/// Whether the logits `name` (`lm_head`, the prefill's) of shape `ours` hold fewer positions
/// than the reference's (`reference`) of the same vocabulary, which are a `[.., T, vocab]`
/// of one sequence (every axis before the positions of size 1): then the caller compares
/// ours with the reference's last positions ([`LastRows`]); else the shapes are a mismatch
/// (its reason says why). Only for a reference's own tensor: one
/// computed from other rows (`--prefill-vs-decode`'s) has its positions where they are.
pub fn last_logit_rows(name: &str, ours: &[usize], reference: &[usize]) -> Option<LastRows> {
    // The dump contract's logits of the prefill: not a decode step's (`lm_head@s`, one row
    // on both sides), nor another model's head (`language_model.lm_head`), which the token
    // effect and the report's note would not name.
    if name != LOGITS {
        return None;
    }
    let (&vocab, lead) = reference.split_last()?;
    let (&of, outer) = lead.split_last()?;
    // Ours: `[.., k, vocab]` of one sequence too (`[2, 1, vocab]` is two sequences' last
    // positions, not one's last two).
    let ours_outer = ours.len().saturating_sub(2);
    if vocab < 2
        || ours.last() != Some(&vocab)
        || outer.iter().chain(&ours[..ours_outer]).any(|&d| d != 1)
    {
        return None;
    }
    let kept = ours.get(ours.len().wrapping_sub(2)).copied().unwrap_or(1);
    (kept >= 1 && kept < of).then_some(LastRows { kept, of, vocab })
}

/// The logits' name in the dump contract (docs/dump-format.md).
pub const LOGITS: &str = "lm_head";

/// What a shape mismatch at the logits says where ours holds fewer positions of the same
/// vocabulary (a user's check: a vLLM dump, which keeps the sampled positions' logits only,
/// read as a bare shape mismatch, exit 1, nothing said). A pair [`last_logit_rows`] gives is
/// compared by the caller where it can (`divergence` bounds what it holds of a streamed pair).
fn fewer_logit_rows(name: &str, ours: &[usize], reference: &[usize]) -> Option<String> {
    if divergence_names::Op::of(name) != divergence_names::Op::LmHead {
        return None;
    }
    let vocab = *reference.last()?;
    let rows = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        (vocab > 0 && shape.last() == Some(&vocab)).then(|| n / vocab)
    };
    let (k, t) = (rows(ours)?, rows(reference)?);
    let what = if last_logit_rows(name, ours, reference).is_some() {
        // Compared by the caller where it can (`divergence`: stored or streamed, but not
        // under --prefill-vs-decode, which lines positions up itself).
        "not compared with the reference's last rows here"
    } else {
        "dump every position's logits to compare them"
    };
    (k < t).then(|| {
        format!(
            " (ours holds {k} position{} of the reference's {t}: an engine that keeps the sampled positions' logits only gives these, vLLM the last in prefill; {what})",
            if k == 1 { "" } else { "s" }
        )
    })
}

/// The row of two sides whose shapes do not align.
fn shape_mismatch(
    mut row: OpResult,
    o: &OwnedHead,
    r: &OwnedHead,
    so: SideStats,
    sr: SideStats,
) -> OpResult {
    row.status = Status::ShapeMismatch;
    row.reason = Some(format!(
        "shape mismatch: ours {} vs ref {}{}",
        fmt_shape(&o.shape),
        fmt_shape(&r.shape),
        fewer_logit_rows(&row.name, &o.shape, &r.shape).unwrap_or_default()
    ));
    row.rule.ours_l2 = finite(so.sum_sq.sqrt());
    row.rule.ref_l2 = finite(sr.sum_sq.sqrt());
    row.nonfinite_mut().nan_ours = Some(so.nan);
    row.nonfinite_mut().inf_ours = Some(so.inf);
    row.nonfinite_mut().nan_ref = Some(sr.nan);
    row.nonfinite_mut().inf_ref = Some(sr.inf);
    row
}

/// The row of two aligned sides from their accumulated sums: metrics and verdict.
pub(crate) fn pair_row(mut row: OpResult, acc: &Accumulator, tol: &Resolved) -> OpResult {
    // Written only when it changes: a decode step's row shares its tensor info with its
    // probe's other steps, and a write copies it.
    if row.tensor.numel != Some(acc.n) {
        row.tensor_mut().numel = Some(acc.n);
    }
    pair_terms(&mut row.rule, &mut row.errors, acc, tol);
    row.errors.max_abs_err_index = acc.max_abs_d_index.map(|i| unravel(i, ref_head(&row).0));
    let counts = NonFiniteCounts {
        nan_ours: Some(acc.nan_o),
        inf_ours: Some(acc.inf_o),
        nan_ref: Some(acc.nan_r),
        inf_ref: Some(acc.inf_r),
        nonfinite_mismatch: Some(acc.nonfinite_mismatch),
    };
    // A decode step's row shares its counts with its probe's other steps (all zero, as a
    // rule): a new one only where they differ.
    if *row.nonfinite != counts {
        row.nonfinite = Arc::new(counts);
    }
    row.frac_outside_tol = Some(frac_outside(acc));
    let terms = (
        row.rule.diff_l2,
        row.rule.tol_threshold,
        row.errors.rel_l2_err,
    );
    if let Some(verdict) = pair_verdict(acc, tol) {
        row.status = verdict.status();
        row.reason = Some(verdict.reason(acc, terms));
    }
    row
}

/// `frac_outside_tol` of a pair's row.
pub(crate) fn frac_outside(acc: &Accumulator) -> f64 {
    let n = acc.n_finite;
    if n == 0 {
        0.0
    } else {
        acc.n_outside as f64 / n as f64
    }
}

/// The norm-wise rule's terms and the error metrics of a pair's sums, written into a row's
/// [`RuleTerms`] (its `rtol`/`atol` are left as they are) and [`ErrorMetrics`] (all but the
/// index of the largest error). What [`pair_row`] writes, and what a compact decode step
/// ([`crate::rows`]) answers field by field.
pub(crate) fn pair_terms(
    rule: &mut RuleTerms,
    errors: &mut ErrorMetrics,
    acc: &Accumulator,
    tol: &Resolved,
) {
    let n = acc.n_finite;
    let ours_l2 = acc.sum_o2.sqrt();
    let ref_l2 = acc.sum_r2.sqrt();
    let diff_l2 = acc.sum_d2.sqrt();
    let threshold = pair_threshold(acc, tol);
    rule.n_compared = Some(n);
    rule.ours_l2 = finite(ours_l2);
    rule.ref_l2 = finite(ref_l2);
    rule.diff_l2 = finite(diff_l2);
    rule.tol_threshold = finite(threshold);
    errors.max_abs_err = finite(acc.max_abs_d);
    let mean = if n == 0 {
        0.0
    } else {
        acc.sum_abs_d / n as f64
    };
    errors.mean_abs_err = finite(mean);
    errors.rel_l2_err = rel_l2(acc);
    errors.max_rel_err = finite(acc.max_rel);
    errors.cosine = if ours_l2 > 0.0 && ref_l2 > 0.0 {
        finite((acc.dot / (ours_l2 * ref_l2)).clamp(-1.0, 1.0))
    } else {
        None
    };
}

/// `||ours - ref|| / ||ref||` of a pair's sums (0 for two zero tensors, and for a pair with
/// no element finite on both sides, as docs/report-schema.md gives an empty tensor's; `None`
/// where the reference is zero and ours not, or past f64: a reference whose sum of squares
/// overflowed read 0 over its infinite norm, beside the reason that its values are too large
/// to judge, a bad-input hunt).
pub(crate) fn rel_l2(acc: &Accumulator) -> Option<f64> {
    let (ref_l2, diff_l2) = (acc.sum_r2.sqrt(), acc.sum_d2.sqrt());
    if !ref_l2.is_finite() {
        None
    } else if ref_l2 > 0.0 {
        finite(diff_l2 / ref_l2)
    } else if diff_l2 == 0.0 {
        Some(0.0)
    } else {
        None
    }
}

/// `atol * sqrt(n) + rtol * ||ref||`: the norm-wise rule's threshold of a pair's sums.
pub(crate) fn pair_threshold(acc: &Accumulator, tol: &Resolved) -> f64 {
    tol.atol * (acc.n_finite as f64).sqrt() + tol.rtol * acc.sum_r2.sqrt()
}

/// Why a pair's row is not `ok` ([`pair_verdict`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PairVerdict {
    /// The non-finite masks differ.
    Nonfinite,
    /// Every element is NaN or Inf on both sides.
    NoFinite,
    /// Exact mode, and some elements differ.
    Exact,
    /// The sums of squares overflowed f64, and the sides differ.
    Overflow,
    /// `||ours - ref||` over the threshold.
    NormWise,
}

impl PairVerdict {
    /// The row's status.
    pub(crate) fn status(self) -> Status {
        match self {
            PairVerdict::Nonfinite => Status::Nonfinite,
            PairVerdict::NoFinite => Status::NoFinite,
            PairVerdict::Exact | PairVerdict::Overflow | PairVerdict::NormWise => Status::Diverged,
        }
    }

    /// The row's reason, from its sums and its `(diff_l2, tol_threshold, rel_l2_err)` as
    /// [`pair_terms`] wrote them.
    fn reason(
        self,
        acc: &Accumulator,
        (diff_l2, threshold, rel): (Option<f64>, Option<f64>, Option<f64>),
    ) -> String {
        match self {
            PairVerdict::Nonfinite => format!(
                "non-finite values differ at {} of {} positions (ours: {} NaN, {} Inf; ref: {} NaN, {} Inf)",
                acc.nonfinite_mismatch, acc.n, acc.nan_o, acc.inf_o, acc.nan_r, acc.inf_r
            ),
            // Same non-finite mask on both sides, and it covers every element: a probe that
            // is NaN/Inf everywhere compares nothing and must not pass as `ok` (an empty
            // tensor, with nothing to compare in the first place, stays `ok`).
            PairVerdict::NoFinite => format!(
                "no finite value on either side: all {} elements are NaN or Inf on both (ours: {} NaN, {} Inf; ref: {} NaN, {} Inf); nothing was compared",
                acc.n, acc.nan_o, acc.inf_o, acc.nan_r, acc.inf_r
            ),
            PairVerdict::Exact => format!(
                "{} of {} elements differ (exact mode); max |ours - ref| = {}",
                acc.n_outside,
                acc.n,
                sci(acc.max_abs_d)
            ),
            PairVerdict::Overflow => format!(
                "values too large for the norm-wise rule (the sums of squares overflow f64); max |ours - ref| = {}",
                sci(acc.max_abs_d)
            ),
            // Both finite here (else the overflow verdict).
            PairVerdict::NormWise => format!(
                "||ours - ref|| = {} > tolerance {} (atol*sqrt(n) + rtol*||ref||); rel L2 err {}",
                sci(diff_l2.unwrap_or(f64::NAN)),
                sci(threshold.unwrap_or(f64::NAN)),
                rel.map_or_else(|| "undefined".to_string(), sci)
            ),
        }
    }
}

/// The verdict of the norm-wise rule (or exact mode) on a pair's sums: `None` for `ok`.
pub(crate) fn pair_verdict(acc: &Accumulator, tol: &Resolved) -> Option<PairVerdict> {
    let n = acc.n_finite;
    let diff_l2 = acc.sum_d2.sqrt();
    let threshold = pair_threshold(acc, tol);
    if acc.nonfinite_mismatch > 0 {
        Some(PairVerdict::Nonfinite)
    } else if n == 0 && acc.n > 0 {
        Some(PairVerdict::NoFinite)
    } else if tol.exact {
        (acc.n_outside > 0).then_some(PairVerdict::Exact)
    } else if n > 0 && !(diff_l2.is_finite() && acc.sum_r2.is_finite()) {
        // The sums of squares overflowed f64 (|values| above ~1e154): the norm-wise rule
        // cannot be evaluated. Equal tensors stay ok; any difference at that magnitude is
        // reported rather than passed. A threshold made infinite by the tolerance alone
        // (`--rtol 1e308` times a finite norm) is a rule every finite difference passes (a
        // newcomer's run: it was called an overflow of the values, and diverged).
        (acc.max_abs_d > 0.0).then_some(PairVerdict::Overflow)
    } else {
        (diff_l2 > threshold).then_some(PairVerdict::NormWise)
    }
}

/// The three-way verdict ([`compare_with_truth`]) on a pair's row: both sides' errors against
/// the truth decide a row the two-way rule left `ok` or `diverged`.
fn apply_truth(mut row: OpResult, truth: TruthFold) -> OpResult {
    if !matches!(row.status, Status::Ok | Status::Diverged) {
        return row;
    }
    let (t, ratio, ot, rt) = match truth {
        TruthFold::Off => return row,
        TruthFold::Problem(p) => {
            row.truth_mut().truth_problem = Some(p);
            return row;
        }
        TruthFold::Fold {
            t,
            ratio,
            ot,
            rt,
            seen,
        } => {
            if t.numel != Some(seen) {
                row.truth_mut().truth_problem = Some(format!(
                    "truth: {seen} values do not fill shape {}",
                    fmt_shape(&t.shape)
                ));
                return row;
            }
            (t, ratio, ot.total(), rt.total())
        }
    };
    let ref_class = DTypeClass::of(ref_head(&row).1);
    let truth_class = DTypeClass::of(&t.dtype);
    if ot.nonfinite_mismatch > 0 || rt.nonfinite_mismatch > 0 {
        row.truth_mut().truth_problem = Some(format!(
            "NaN/Inf of the truth at other positions than ref's ({} positions) or ours' ({})",
            rt.nonfinite_mismatch, ot.nonfinite_mismatch
        ));
        return row;
    }
    let truth_l2 = rt.sum_r2.sqrt();
    let rel = |d2: f64| {
        if truth_l2 > 0.0 {
            d2.sqrt() / truth_l2
        } else if d2 == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let (e_ours, e_ref) = (rel(ot.sum_d2), rel(rt.sum_d2));
    let noise_ratio = e_ours / e_ref.max(truth_floor(ref_class));
    if !(e_ours.is_finite() && e_ref.is_finite() && noise_ratio.is_finite()) {
        // A truth of zeros (or of subnormals, whose squares underflow: found by a bad-input
        // hunt) against a non-zero side, or sums of squares that overflow f64:
        // no ratio can be formed, so the preset's verdict stands, and says so.
        row.truth_mut().truth_problem = Some(if truth_l2 == 0.0 {
            "the truth's norm is 0 (all zeros, or values too small to square in f64) where ours or ref is not: no relative error".to_string()
        } else {
            "the errors against the truth overflow f64: no ratio".to_string()
        });
        return row;
    }
    row.truth_mut().ours_truth_rel_err = finite(e_ours);
    row.truth_mut().ref_truth_rel_err = finite(e_ref);
    row.truth_mut().noise_ratio = finite(noise_ratio);
    if e_ref > TRUTH_MAX_REF_ERR {
        // The reference is not near its own high-precision run: the truth is of another
        // model or another input at this op (or the values were replaced), and cannot judge
        // ours against it. Found by a bad-input hunt: a truth row of random values let a bug
        // pass at ratio 1.0.
        row.truth_mut().truth_problem = Some(format!(
            "ref is {} from the truth (more than {TRUTH_MAX_REF_ERR}): not a run of the reference's model here",
            sci(e_ref)
        ));
        return row;
    }
    judge_by_ratio(
        &mut row,
        (e_ours, e_ref, noise_ratio),
        ratio,
        truth_noise(truth_class),
    );
    row
}

/// The three-way verdict on `row` from its errors against the truth (`e`: ours', ref's and
/// their noise ratio): diverged past `ratio` where ours' excess is over the truth's own
/// `noise`.
fn judge_by_ratio(row: &mut OpResult, e: (f64, f64, f64), ratio: f64, noise: f64) {
    let (e_ours, e_ref, noise_ratio) = e;
    if noise_ratio > ratio && e_ours - e_ref > noise {
        row.status = Status::Diverged;
        row.reason = Some(format!(
            "ours is {}x less accurate than ref against the truth (noise ratio > {}): \
             ||ours - truth||/||truth|| = {} vs ref {}",
            ratio_text(noise_ratio),
            ratio_text(ratio),
            sci(e_ours),
            sci(e_ref)
        ));
    } else {
        row.status = Status::Ok;
        row.reason = None;
    }
}

/// How far (relative L2) the reference may already be from the truth at one of an op's inputs
/// for [`judge_noisy_reference`] to take the op's own distance past [`TRUTH_MAX_REF_ERR`] for
/// the reference's noise: clean bf16 references are ~0.06 from their float64 truth on most
/// held-out models.
pub const NOISY_INPUT_REF_ERR: f64 = 0.1;

/// The rows [`compare_with_truth`] left to the presets because the reference is more than
/// [`TRUTH_MAX_REF_ERR`] from the truth, judged by the noise ratio after all where an input of
/// theirs (`flow`) has the reference already [`NOISY_INPUT_REF_ERR`] or more off the truth, the
/// truth still judging it, or is such a row itself: the reference's own run is noise there,
/// grown from its inputs', not a truth of another model (far from the first op on) or a row of
/// replaced values (whose inputs the reference is near). Held-out models with q/k-norm gains
/// twice Qwen3-0.6B's: transformers' own bf16 run is 0.50-0.63 from its float64 truth at some
/// ops and 1.04-1.07 at a few of late decode steps, and the presets flagged clean ports there.
/// The caller does not ask where the truth is not known to be of the reference's weights
/// ([`crate::DiffConfig::judge_noisy_reference`]): a truth of a checkpoint a few percent off
/// is noisy from its first ops on, and the ratio would judge by it (a bad-input hunt). Nor
/// does this where the truth's embedding is further from the reference's than rounding allows
/// (another checkpoint recorded under the reference's source): then its warning says so and no
/// row is judged. Returns the warning and how many rows were judged by the ratio, or `None`
/// where no row would be.
pub fn judge_noisy_reference(
    ops: &mut crate::rows::Rows,
    flow: &divergence_names::dataflow::Dataflow,
    ratio: f64,
) -> Option<(String, usize)> {
    // Truth mode keeps every row whole: `Rows::plain_mut` is then every row, in order.
    if ops.is_compact() {
        return None;
    }
    let far = |o: crate::rows::Row<'_>| {
        let t = o.truth();
        t.truth_problem.is_some()
            && matches!(o.status(), Status::Ok | Status::Diverged)
            && t.ref_truth_rel_err.is_some_and(|e| e > TRUTH_MAX_REF_ERR)
            && t.ours_truth_rel_err.is_some()
            && t.noise_ratio.is_some()
    };
    // In row order (an op's inputs are earlier rows): an input counts where the truth judged
    // it with the reference `NOISY_INPUT_REF_ERR` to `TRUTH_MAX_REF_ERR` off, or where it was
    // taken for noise itself. A truth that is another model's (or random) throughout is far
    // from the first op on, with no judged input anywhere: its rows stay with the presets.
    let judged_noisy = |j: usize| {
        ops.get_row(j).is_some_and(|o| {
            let t = o.truth();
            t.truth_problem.is_none()
                && t.ref_truth_rel_err
                    .is_some_and(|e| (NOISY_INPUT_REF_ERR..=TRUTH_MAX_REF_ERR).contains(&e))
        })
    };
    // An op one side lacks passes its inputs' noise on, as one neither side dumps does (the
    // dataflow skips those): a port without `attn_out`, which the reference and the truth
    // hold, broke the chain there and was flagged past it (a bad-input hunt).
    let mut noisy: Vec<usize> = Vec::new();
    let mut through: Vec<usize> = Vec::new();
    for i in 0..ops.len() {
        let o = ops.row(i);
        let one_side = matches!(o.status(), Status::OnlyOurs | Status::OnlyRef);
        if !one_side && !far(o) {
            continue;
        }
        let counts = |j: usize| {
            judged_noisy(j) || noisy.binary_search(&j).is_ok() || through.binary_search(&j).is_ok()
        };
        if flow.inputs(i).iter().any(counts) {
            if one_side {
                through.push(i);
            } else {
                noisy.push(i);
            }
        }
    }
    let (&first, worst) = (
        noisy.first()?,
        noisy
            .iter()
            .filter_map(|&i| ops.row(i).truth().ref_truth_rel_err)
            .fold(0.0f64, f64::max),
    );
    let first_name = ops.row(first).name().into_owned();
    // The embedding is a lookup: the reference and a truth run of its weights differ there by
    // the rounding of the reference's dtype at most (0 from a checkpoint stored in it). More
    // says the truth ran other weights (a checkpoint saved again under the same directory;
    // a bad-input hunt's truths of weights 2-20% off): the ratio would judge by it.
    // (Where no embedding row was measured, ours lacking it say, nothing is checked: a port
    // that dumps no embedding was flagged when that refused the reading, a bad-input hunt.)
    if let Some((name, err, bound)) = embedding_off_the_truth(ops) {
        let warning = format!(
            "the reference is more than {TRUTH_MAX_REF_ERR} from the truth at {} op{} (first {first_name}), but the truth is not a run of the reference's weights: at {name}, a lookup, the two are {} apart where rounding allows {}; those ops were left to the fixed presets",
            noisy.len(),
            if noisy.len() == 1 { "" } else { "s" },
            sci(err),
            sci(bound)
        );
        return Some((warning, 0));
    }
    let mut plain = ops.plain_mut();
    for &i in &noisy {
        let Some(row) = plain.get_mut(i) else {
            continue;
        };
        let t = row.truth.clone();
        let (Some(e_ours), Some(e_ref), Some(nr)) =
            (t.ours_truth_rel_err, t.ref_truth_rel_err, t.noise_ratio)
        else {
            continue;
        };
        row.truth_mut().truth_problem = None;
        // The truth's dtype is not at hand: the larger of its noises (f32's, 1e-6). With the
        // reference past 0.5 off the truth, a ratio over `ratio` is an excess far above it.
        judge_by_ratio(
            row,
            (e_ours, e_ref, nr),
            ratio,
            truth_noise(DTypeClass::F32),
        );
    }
    let warning = format!(
        "the reference is more than {TRUTH_MAX_REF_ERR} from the truth at {} op{} (first {first_name}; up to {} off it), after inputs already {NOISY_INPUT_REF_ERR} or more off: its own run is noise there (very peaked attention, say), so a fixed preset cannot judge those ops either; they were judged by the noise ratio",
        noisy.len(),
        if noisy.len() == 1 { "" } else { "s" },
        sci(worst)
    );
    Some((warning, noisy.len()))
}

/// Judged rows an op needs over its decode steps (the prefill included) for
/// [`judge_by_step_envelope`] to take their spread for noise.
pub const ENVELOPE_MIN_STEPS: usize = 8;

/// Most decode steps of one op over the noise ratio that [`judge_by_step_envelope`] takes for
/// noise: more is a pattern, not a swing at one step (a review: a `decode-mask` that hits 7 of
/// 25 steps had rows at three of them cleared, one at 12x).
pub const ENVELOPE_MAX_OVER: usize = 2;

/// Truth mode: a decode step over the noise ratio where ours is no further from the truth than
/// the reference itself is at another step of the same op, left ok as noise. It takes an op of
/// float32 pairs whose rows over its steps (at least [`ENVELOPE_MIN_STEPS`] the truth judged,
/// the prefill's included) have ours more accurate than the reference at most of them (the
/// median noise ratio under 1) and are over the ratio at [`ENVELOPE_MAX_OVER`] decode steps at
/// most; a decode-step row of it over the ratio whose error against the truth is at most the
/// reference's largest at any of the op's steps is ok. The prefill's row is never left ok, and
/// a step where the reference is more than [`NOISY_INPUT_REF_ERR`] off bounds nothing (it is
/// noise itself: with it, a bfloat16 reference 0.93 off at one step let a real fault pass). A
/// held-out model with k_norm gains ~30 (a 2-token prompt, 24 steps; docs/decode.md, "A
/// twelfth held-out check"): near one-hot attention took a clean f32 port's error at one step
/// to 5.9e-5 against the reference's 8.2e-6 there (a ratio of 5.9 over the 1e-5 floor), while
/// the reference was 9.8e-5 from the truth at another step and ours as accurate as it at 21
/// of the op's 25 rows. Until a review of the first version, the bound was `ratio` times the
/// reference's largest error, and the prefill's row and ops over the ratio at any number of
/// steps counted: a one-step fault of 2.5e-4 there (25x) passed. A port worse at most steps (a
/// cache kept in float16, say) keeps every verdict, as do half-type pairs and a port of the
/// reference's bits (a final held-out check: a bf16 port equal to the reference at nearly every
/// step, every ratio 1, had one-step faults up to 13 times the reference's error there
/// cleared). Returns the note and how many rows were left ok, or `None` where none was.
pub fn judge_by_step_envelope(ops: &mut crate::rows::Rows) -> Option<(String, usize)> {
    // Truth mode keeps every row whole: `Rows::plain_mut` is then every row, in order.
    if ops.is_compact() {
        return None;
    }
    // Float32 pairs only: a half-type port is often the reference's bits at most steps (a
    // held-out model's bf16 port at 2,175 of 2,176 decode rows), every ratio 1, and the
    // reference's largest error over the steps (7.7e-2) 13 times its error at the step of a
    // fault it then cleared (a final held-out check).
    let judged = |o: crate::rows::Row<'_>| {
        let t = o.truth();
        if t.truth_problem.is_some()
            || !matches!(o.status(), Status::Ok | Status::Diverged)
            || o.pair_class() != DTypeClass::F32
        {
            return None;
        }
        Some((t.ours_truth_rel_err?, t.ref_truth_rel_err?, t.noise_ratio?))
    };
    // Each op's judged rows: their noise ratios, the reference's largest error (and its row),
    // and its decode-step rows over the ratio (with ours' and ref's errors there).
    struct Op {
        ratios: Vec<f64>,
        env: (f64, usize),
        steps: usize,
        over: Vec<(usize, f64, f64)>,
    }
    let mut by_op: std::collections::HashMap<&str, Op> = std::collections::HashMap::new();
    for i in 0..ops.len() {
        let o = ops.row(i);
        let Some((e_ours, e_ref, nr)) = judged(o) else {
            continue;
        };
        let (base, step) = o.split();
        let op = by_op.entry(base).or_insert(Op {
            ratios: Vec::new(),
            env: (0.0, i),
            steps: 0,
            over: Vec::new(),
        });
        op.ratios.push(nr);
        op.steps = op.steps.max(step);
        if e_ref > op.env.0 && e_ref <= NOISY_INPUT_REF_ERR {
            op.env = (e_ref, i);
        }
        if step > 0 && o.status() == Status::Diverged {
            op.over.push((i, e_ours, e_ref));
        }
    }
    // (row, ours' error, ref's there, ref's largest, its row)
    let mut left: Vec<(usize, f64, f64, f64, usize)> = Vec::new();
    for (_, mut op) in by_op {
        if op.steps == 0
            || op.ratios.len() < ENVELOPE_MIN_STEPS
            || op.over.is_empty()
            || op.over.len() > ENVELOPE_MAX_OVER
        {
            continue;
        }
        let mid = op.ratios.len() / 2;
        let (_, median, _) = op.ratios.select_nth_unstable_by(mid, f64::total_cmp);
        // Ours more accurate than the reference at most steps, its own noise apart from the
        // reference's: a median of exactly 1 is a port of the reference's bits, whose one step
        // over the ratio is no swing of noise.
        if *median >= 1.0 {
            continue;
        }
        let (env, at) = op.env;
        left.extend(
            op.over
                .iter()
                .filter(|&&(_, e_ours, _)| e_ours <= env)
                .map(|&(i, e_ours, e_ref)| (i, e_ours, e_ref, env, at)),
        );
    }
    left.sort_by_key(|l| l.0);
    let &(first, e_ours, e_ref, env, at) = left.first()?;
    let (first_name, env_step) = (ops.row(first).name().into_owned(), ops.row(at).step());
    let mut steps: Vec<usize> = left.iter().map(|l| ops.row(l.0).step()).collect();
    steps.sort_unstable();
    steps.dedup();
    let ops_left = {
        let mut names: Vec<&str> = left.iter().map(|l| ops.row(l.0).base()).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    };
    let n = left.len();
    let shown: Vec<String> = steps.iter().take(8).map(usize::to_string).collect();
    let more = if steps.len() > 8 { ", ..." } else { "" };
    let note = format!(
        "{n} decode-step row{} over the noise ratio ({ops_left} op{}, step{} {}{more}) {} left ok as noise: ours there is no further from the truth than the reference is at another step of the same op, the op is over the ratio at one or two of its steps, and ours is more accurate than the reference at most of its steps (a peaked attention can swing one step's error tenfold on either side); first {first_name}: ours {} and ref {} from the truth, ref {} at step {env_step}",
        if n == 1 { "" } else { "s" },
        if ops_left == 1 { "" } else { "s" },
        if steps.len() == 1 { "" } else { "s" },
        shown.join(", "),
        if n == 1 { "was" } else { "were" },
        sci(e_ours),
        sci(e_ref),
        sci(env)
    );
    let mut plain = ops.plain_mut();
    for &(i, ..) in &left {
        if let Some(row) = plain.get_mut(i) {
            row.status = Status::Ok;
            row.reason = None;
        }
    }
    Some((note, n))
}

/// The first `model.embed_tokens` row (of any step) whose reference is further from the truth
/// than the rounding of the reference's dtype ([`crate::origin::class_noise_floor`]): its
/// name, that distance and the bound.
fn embedding_off_the_truth(ops: &crate::rows::Rows) -> Option<(String, f64, f64)> {
    ops.rows().find_map(|o| {
        if divergence_names::Op::of(o.base()) != divergence_names::Op::EmbedTokens {
            return None;
        }
        let err = o.truth().ref_truth_rel_err?;
        let class = DTypeClass::of(o.tensor().dtype_ref.as_deref().unwrap_or("float32"));
        let bound = crate::origin::class_noise_floor(class);
        // (a NaN distance is no measure of the weights)
        (err > bound).then(|| (o.name().into_owned(), err, bound))
    })
}

/// A ratio as `2.4` / `130` / `1.234e+06` ([`sci`] from 1e5 on): the one format of noise
/// ratios in reasons and renderers.
pub fn ratio_text(x: f64) -> String {
    if !x.is_finite() || x.abs() >= 1e5 {
        sci(x)
    } else if x.abs() >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn one_side(
    name: &str,
    head: &OwnedHead,
    which: Which,
    stats: Option<SideStats>,
    seen: u64,
) -> OpResult {
    let status = match which {
        Which::Ours => Status::OnlyOurs,
        Which::Ref => Status::OnlyRef,
    };
    let mut row = OpResult::bare(
        name,
        status,
        Some(format!("present only in {}", which.label())),
    );
    row.tensor_mut().shape = Some(head.shape.clone());
    let l2 = stats.and_then(|s| finite(s.sum_sq.sqrt()));
    match which {
        Which::Ours => {
            row.tensor_mut().dtype_ours = Some(dtype_name(&head.dtype));
            row.rule.ours_l2 = l2;
            row.nonfinite_mut().nan_ours = stats.map(|s| s.nan);
            row.nonfinite_mut().inf_ours = stats.map(|s| s.inf);
        }
        Which::Ref => {
            row.tensor_mut().dtype_ref = Some(dtype_name(&head.dtype));
            row.rule.ref_l2 = l2;
            row.nonfinite_mut().nan_ref = stats.map(|s| s.nan);
            row.nonfinite_mut().inf_ref = stats.map(|s| s.inf);
        }
    }
    row.tensor_mut().numel = Some(seen);
    row
}

/// The row of a probe our side's name map could not make (`problem`, one line: a preset's
/// rule that does not fit the dump's tensor, e.g. llama.cpp's `Vcur` with no element):
/// `shape_mismatch`, a divergence (the layout does not explain the port's tensor: never a
/// silent pass), with the reference's shape and dtype when it has the probe and `ours` our
/// tensor's shape as the dump holds it.
pub fn not_made(
    name: &str,
    problem: &str,
    ours: Head<'_>,
    reference: Option<Head<'_>>,
) -> OpResult {
    let problem = divergence_names::one_line(problem);
    let mut row = OpResult::bare(
        name,
        Status::ShapeMismatch,
        Some(format!("ours: {problem}")),
    );
    row.tensor_mut().shape_ours = Some(ours.shape.to_vec());
    row.tensor_mut().dtype_ours = Some(dtype_name(ours.dtype));
    if let Some(r) = reference {
        row.tensor_mut().shape = Some(r.shape.to_vec());
        row.tensor_mut().dtype_ref = Some(dtype_name(r.dtype));
    }
    row
}

/// The row of a probe that could not be read from one dump (`message` says why, one line).
pub fn unreadable(name: &str, side: Which, message: String) -> OpResult {
    // A path or name in the message may hold a newline: a reason is one line.
    let message = divergence_names::one_line(&message);
    OpResult::bare(
        name,
        Status::Unreadable,
        Some(format!("{}: {message}", side.label())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names_dumps_write_are_static_and_others_kept() {
        for d in ["float32", "bfloat16", "float16", "float64", "int64", "bool"] {
            assert!(matches!(dtype_name(d), DtypeName::Borrowed(_)), "{d}");
            assert_eq!(dtype_name(d), d);
        }
        for d in ["torch.bfloat16", "Float32", "", "fp8\n"] {
            assert!(matches!(dtype_name(d), DtypeName::Owned(_)), "{d}");
            assert_eq!(dtype_name(d), d);
        }
    }

    #[test]
    fn sci_format() {
        assert_eq!(sci(0.0), "0.000e+00");
        assert_eq!(sci(1.0), "1.000e+00");
        assert_eq!(sci(12345.0), "1.234e+04"); // round-half-even of 1.2345
        assert_eq!(sci(-0.000123456), "-1.235e-04");
        assert_eq!(sci(1e-300), "1.000e-300");
        assert_eq!(sci(9.9996), "1.000e+01");
        assert_eq!(sci(-7.0e-7), "-7.000e-07");
        assert_eq!(sci(1.5e15), "1.500e+15");
        assert_eq!(sci(f64::INFINITY), "inf");
        assert_eq!(sci(f64::NAN), "NaN");
    }

    /// The in-place exponent fix-up equals the old three-step formatting on any finite value.
    #[test]
    fn sci_matches_reference_formatting() {
        fn old(x: f64) -> String {
            let s = format!("{x:.3e}");
            match s.split_once('e') {
                Some((mantissa, exp)) => {
                    let e: i32 = exp.parse().unwrap_or(0);
                    let sign = if e < 0 { '-' } else { '+' };
                    format!("{mantissa}e{sign}{:02}", e.unsigned_abs())
                }
                None => s,
            }
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f64::from_bits(state);
            if x.is_finite() {
                assert_eq!(sci(x), old(x), "{x:e}");
            }
        }
        for x in [
            0.0,
            -0.0,
            1.0,
            1e-5,
            9.9995e-10,
            1e100,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(sci(x), old(x));
        }
    }

    /// A tolerance so large that the threshold overflows f64 (`--rtol 1e308` times a finite
    /// norm) passes every finite difference: it was read as values too large for the rule, and
    /// diverged (a newcomer's run). Values whose sums of squares overflow still do.
    #[test]
    fn a_threshold_infinite_by_the_tolerance_alone_passes() {
        let side = |v: &'static [f64]| Side {
            shape: &[3],
            values: ValuesRef::F64(v),
            dtype: "float64",
        };
        // (1e308 * ||ref|| and 1.1e308 * sqrt(3) are past f64's 1.8e308)
        for (rtol, atol) in [(Some(1e308), None), (None, Some(1.1e308))] {
            let cfg = DiffConfig {
                tolerance: Tolerance::Manual { rtol, atol },
                ..DiffConfig::default()
            };
            let row = compare(
                "x",
                Some(side(&[1.0, 2.0, 3.0])),
                Some(side(&[1.0, 2.5, 3.0])),
                &cfg,
            );
            assert_eq!(row.status, Status::Ok, "{row:?}");
            assert_eq!(row.rule.tol_threshold, None, "{row:?}");
            let row = compare(
                "x",
                Some(side(&[1e200, 2.0, 3.0])),
                Some(side(&[2e200, 2.0, 3.0])),
                &cfg,
            );
            assert_eq!(row.status, Status::Diverged, "{row:?}");
            assert!(
                row.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("values too large for the norm-wise rule")),
                "{row:?}"
            );
            // No relative error over an infinite norm (it read 0.0: a bad-input hunt).
            assert_eq!(row.errors.rel_l2_err, None, "{row:?}");
        }
    }

    #[test]
    fn the_last_logit_rows_of_one_sequence_are_found() {
        let l = last_logit_rows("lm_head", &[1, 2, 640], &[1, 13, 640]).unwrap();
        assert_eq!(
            l,
            LastRows {
                kept: 2,
                of: 13,
                vocab: 640
            }
        );
        assert_eq!(l.range(), 11 * 640..13 * 640);
        // one row without a batch or position axis; a reference without a batch axis
        assert_eq!(
            last_logit_rows("lm_head", &[640], &[13, 640]).map(|l| l.kept),
            Some(1)
        );
        assert_eq!(
            last_logit_rows("lm_head", &[3, 640], &[1, 1, 13, 640]).map(|l| l.kept),
            Some(3)
        );
        // not the logits (a decode step's are `lm_head@s`, of one row on both sides; another
        // model's head), as many rows or more, another vocabulary, several sequences on
        // either side, a vocabulary of 1, no rows
        assert_eq!(last_logit_rows("model.norm", &[1, 64], &[1, 13, 64]), None);
        assert_eq!(last_logit_rows("lm_head@1", &[1, 1, 64], &[1, 2, 64]), None);
        assert_eq!(
            last_logit_rows("language_model.lm_head", &[1, 64], &[1, 13, 64]),
            None
        );
        assert_eq!(
            last_logit_rows("lm_head", &[2, 1, 640], &[1, 13, 640]),
            None
        );
        assert_eq!(
            last_logit_rows("lm_head", &[1, 13, 640], &[1, 13, 640]),
            None
        );
        assert_eq!(
            last_logit_rows("lm_head", &[1, 2, 600], &[1, 13, 640]),
            None
        );
        assert_eq!(
            last_logit_rows("lm_head", &[1, 1, 640], &[2, 13, 640]),
            None
        );
        assert_eq!(last_logit_rows("lm_head", &[1, 1], &[1, 13, 1]), None);
        assert_eq!(last_logit_rows("lm_head", &[0, 640], &[1, 13, 640]), None);
        assert_eq!(last_logit_rows("lm_head", &[640], &[640]), None);
        // the side ours is compared with: the reference's last rows, in ours' shape
        let r: Vec<f32> = (0..13 * 4).map(|i| i as f32).collect();
        let l = last_logit_rows("lm_head", &[1, 4], &[1, 13, 4]).unwrap();
        let side = l.reference_side(
            &[1, 4],
            Side {
                shape: &[1, 13, 4],
                values: ValuesRef::F32(&r),
                dtype: "float32",
            },
        );
        assert_eq!(side.shape, &[1, 4]);
        assert_eq!(side.values.to_f64_vec(), vec![48.0, 49.0, 50.0, 51.0]);
        assert!(l
            .note("lm_head")
            .ends_with("compared with the reference's last"));
        assert!(LastRows {
            kept: 2,
            of: 5,
            vocab: 4
        }
        .note("lm_head")
        .contains("the last 2 positions only (of the reference's 5;"));
    }

    #[test]
    fn fewer_logit_rows_are_said_as_such() {
        let said = fewer_logit_rows("lm_head", &[1, 640], &[1, 13, 640]).unwrap();
        assert!(
            said.contains("ours holds 1 position of the reference's 13"),
            "{said}"
        );
        assert!(fewer_logit_rows("lm_head", &[1, 3, 640], &[1, 13, 640])
            .unwrap()
            .contains("3 positions"));
        // several sequences in the reference: to be dumped otherwise
        assert!(fewer_logit_rows("lm_head", &[1, 640], &[2, 13, 640])
            .unwrap()
            .contains("dump every position's logits to compare them"));
        // not the logits, another vocabulary, or as many rows: nothing said
        assert_eq!(fewer_logit_rows("model.norm", &[1, 64], &[1, 13, 64]), None);
        assert_eq!(fewer_logit_rows("lm_head", &[1, 600], &[1, 13, 640]), None);
        assert_eq!(fewer_logit_rows("lm_head", &[13, 640], &[1, 13, 640]), None);
        assert_eq!(fewer_logit_rows("lm_head", &[0], &[0]), None);
    }

    #[test]
    fn unravel_row_major() {
        assert_eq!(unravel(0, &[]).to_vec(), Vec::<usize>::new());
        assert_eq!(unravel(5, &[2, 3]).to_vec(), vec![1, 2]);
        assert_eq!(unravel(23, &[2, 3, 4]).to_vec(), vec![1, 2, 3]);
        assert_eq!(unravel(13, &[2, 3, 4]).to_vec(), vec![1, 0, 1]);
        // Past the inline rank, and an axis past u32: on the heap, the same axes.
        assert_eq!(unravel(23, &[1, 1, 2, 3, 4]).to_vec(), vec![0, 0, 1, 2, 3]);
        let big = 1usize << 33;
        assert_eq!(unravel(big as u64 + 1, &[2, big]).to_vec(), vec![1, 1]);
    }

    /// An index is the list of its axes everywhere it shows: JSON, `{:?}` and back, inline
    /// or on the heap.
    #[test]
    fn an_index_reads_as_its_axes() {
        for axes in [
            vec![],
            vec![3],
            vec![1, 2, 3, 4],
            vec![1, 2, 3, 4, 5],
            vec![1 << 40, 0],
        ] {
            let ix = Index::new(&axes);
            assert_eq!(ix.to_vec(), axes);
            assert_eq!(format!("{ix:?}"), format!("{axes:?}"));
            let json = serde_json::to_string(&ix).unwrap();
            assert_eq!(json, serde_json::to_string(&axes).unwrap());
            assert_eq!(serde_json::from_str::<Index>(&json).unwrap(), ix);
        }
        assert!(matches!(Index::new(&[1, 2]).0, IndexRepr::Inline { .. }));
        assert!(matches!(Index::new(&[1 << 40]).0, IndexRepr::Heap(_)));
    }
}
