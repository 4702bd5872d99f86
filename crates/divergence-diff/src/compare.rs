//! Comparing one probe: shape rules, tolerance resolution, metrics and the per-op verdict.
//!
//! [`compare`] turns the two sides of one probe into an [`OpResult`] row and never fails: a probe
//! present on one side only, with mismatching shapes, or with values that do not fill its shape is a
//! row with the matching [`Status`]. [`unreadable`] makes the row for a probe the caller could not read.

use serde::{Deserialize, Serialize};

use crate::config::DiffConfig;
use crate::metrics::{self, Params, ValuesRef};
use crate::tolerance::{truth_floor, truth_noise, DTypeClass, Tolerance, REL_ERR_GUARD_MIN};

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
    /// Shapes differ even after dropping size-1 dimensions.
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
    /// Probe name.
    pub name: String,
    /// Verdict.
    pub status: Status,
    /// Why the row is not `ok` (one line); `None` for `ok`.
    pub reason: Option<String>,
    /// `N` when the name contains `layers.N`.
    pub layer: Option<usize>,
    /// Shapes, dtypes and element count of the two sides.
    #[serde(flatten)]
    pub tensor: TensorInfo,
    /// The terms of the norm-wise decision rule.
    #[serde(flatten)]
    pub rule: RuleTerms,
    /// Error metrics (diagnostics; the verdict comes from [`RuleTerms`]).
    #[serde(flatten)]
    pub errors: ErrorMetrics,
    /// NaN / Inf counts.
    #[serde(flatten)]
    pub nonfinite: NonFiniteCounts,
    /// Both sides' errors against the truth run (`--truth` only).
    #[serde(flatten)]
    pub truth: TruthMetrics,
    /// Fraction of compared elements with `|o - r| > atol + rtol * |r|` (an element-wise
    /// diagnostic; last in the JSON row, after the non-finite counts, as documented).
    pub frac_outside_tol: Option<f64>,
    /// Relative L2 error over the largest of its inputs' (dataflow), each input raised to the
    /// noise floor; set by [`crate::assemble`] (`crate::origin::local_growths`), last in the row.
    pub local_growth: Option<f64>,
}

/// What the two sides of a row are: shapes, dtypes, element count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// The reference's shape (ours' when the probe is only in ours).
    pub shape: Option<Vec<usize>>,
    /// Ours' shape when it differs from `shape` (e.g. `[1, T, H]` vs `[T, H]`).
    pub shape_ours: Option<Vec<usize>>,
    /// Original dtype of our side.
    pub dtype_ours: Option<String>,
    /// Original dtype of the reference side.
    pub dtype_ref: Option<String>,
    /// Elements per side (when the sides are aligned), else the present side's count.
    pub numel: Option<u64>,
}

impl TensorInfo {
    /// The coarser dtype class of the two sides (a missing or unknown dtype counts as float32):
    /// the class that picks a row's preset and noise floor.
    pub fn pair_class(&self) -> DTypeClass {
        let class = |d: &Option<String>| DTypeClass::of(d.as_deref().unwrap_or("float32"));
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
    pub max_abs_err_index: Option<Vec<usize>>,
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
    /// A row with only the name, status and reason set.
    fn bare(name: &str, status: Status, reason: Option<String>) -> OpResult {
        OpResult {
            name: name.to_string(),
            status,
            reason,
            layer: divergence_names::layer_index(name),
            tensor: TensorInfo::default(),
            rule: RuleTerms::default(),
            errors: ErrorMetrics::default(),
            nonfinite: NonFiniteCounts::default(),
            truth: TruthMetrics::default(),
            frac_outside_tol: None,
            local_growth: None,
        }
    }
}

/// Formats a number as `1.234e-05` (fixed width mantissa, signed two-digit exponent): the one
/// number format of reasons and renderers, so snapshots are stable.
pub fn sci(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
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

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn squeezed(shape: &[usize]) -> Vec<usize> {
    shape.iter().copied().filter(|&d| d != 1).collect()
}

/// Row-major unravel of a flat index.
fn unravel(mut flat: u64, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0usize; shape.len()];
    for (slot, &dim) in idx.iter_mut().zip(shape).rev() {
        let d = dim.max(1) as u64;
        *slot = (flat % d) as usize;
        flat /= d;
    }
    idx
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
pub fn compare(
    name: &str,
    ours: Option<Side<'_>>,
    reference: Option<Side<'_>>,
    cfg: &DiffConfig,
) -> OpResult {
    let (o, r) = match (ours, reference) {
        (Some(o), Some(r)) => (o, r),
        (Some(o), None) => return one_side(name, &o, Which::Ours),
        (None, Some(r)) => return one_side(name, &r, Which::Ref),
        (None, None) => {
            return OpResult::bare(
                name,
                Status::Unreadable,
                Some("no data on either side".to_string()),
            )
        }
    };
    for (side, which) in [(&o, Which::Ours), (&r, Which::Ref)] {
        if let Err(msg) = check_len(side, which) {
            let mut row = OpResult::bare(name, Status::Unreadable, Some(msg));
            row.tensor.dtype_ours = Some(o.dtype.to_string());
            row.tensor.dtype_ref = Some(r.dtype.to_string());
            return row;
        }
    }
    let tol = cfg.tolerance.resolve(o.dtype, r.dtype);
    let mut row = OpResult::bare(name, Status::Ok, None);
    row.tensor.shape = Some(r.shape.to_vec());
    if o.shape != r.shape {
        row.tensor.shape_ours = Some(o.shape.to_vec());
    }
    row.tensor.dtype_ours = Some(o.dtype.to_string());
    row.tensor.dtype_ref = Some(r.dtype.to_string());
    row.rule.rtol = Some(tol.rtol);
    row.rule.atol = Some(tol.atol);

    if o.shape != r.shape && squeezed(o.shape) != squeezed(r.shape) {
        let so = metrics::side_stats(o.values);
        let sr = metrics::side_stats(r.values);
        row.status = Status::ShapeMismatch;
        row.reason = Some(format!(
            "shape mismatch: ours {} vs ref {}",
            fmt_shape(o.shape),
            fmt_shape(r.shape)
        ));
        row.rule.ours_l2 = finite(so.sum_sq.sqrt());
        row.rule.ref_l2 = finite(sr.sum_sq.sqrt());
        row.nonfinite.nan_ours = Some(so.nan);
        row.nonfinite.inf_ours = Some(so.inf);
        row.nonfinite.nan_ref = Some(sr.nan);
        row.nonfinite.inf_ref = Some(sr.inf);
        return row;
    }

    let params = Params {
        rtol: tol.rtol,
        atol: tol.atol,
        rel_guard: tol.rel_guard,
    };
    let acc = metrics::accumulate(o.values, r.values, &params, cfg.chunk_len);
    let n = acc.n_finite;
    let ours_l2 = acc.sum_o2.sqrt();
    let ref_l2 = acc.sum_r2.sqrt();
    let diff_l2 = acc.sum_d2.sqrt();
    let threshold = tol.atol * (n as f64).sqrt() + tol.rtol * ref_l2;
    row.tensor.numel = Some(acc.n);
    row.rule.n_compared = Some(n);
    row.rule.ours_l2 = finite(ours_l2);
    row.rule.ref_l2 = finite(ref_l2);
    row.rule.diff_l2 = finite(diff_l2);
    row.rule.tol_threshold = finite(threshold);
    row.errors.max_abs_err = finite(acc.max_abs_d);
    row.errors.max_abs_err_index = acc.max_abs_d_index.map(|i| unravel(i, r.shape));
    let mean = if n == 0 {
        0.0
    } else {
        acc.sum_abs_d / n as f64
    };
    row.errors.mean_abs_err = finite(mean);
    row.errors.rel_l2_err = if ref_l2 > 0.0 {
        finite(diff_l2 / ref_l2)
    } else if diff_l2 == 0.0 {
        Some(0.0)
    } else {
        None
    };
    row.errors.max_rel_err = finite(acc.max_rel);
    row.errors.cosine = if ours_l2 > 0.0 && ref_l2 > 0.0 {
        finite((acc.dot / (ours_l2 * ref_l2)).clamp(-1.0, 1.0))
    } else {
        None
    };
    row.nonfinite.nan_ours = Some(acc.nan_o);
    row.nonfinite.inf_ours = Some(acc.inf_o);
    row.nonfinite.nan_ref = Some(acc.nan_r);
    row.nonfinite.inf_ref = Some(acc.inf_r);
    row.nonfinite.nonfinite_mismatch = Some(acc.nonfinite_mismatch);
    row.frac_outside_tol = Some(if n == 0 {
        0.0
    } else {
        acc.n_outside as f64 / n as f64
    });

    if acc.nonfinite_mismatch > 0 {
        row.status = Status::Nonfinite;
        row.reason = Some(format!(
            "non-finite values differ at {} of {} positions (ours: {} NaN, {} Inf; ref: {} NaN, {} Inf)",
            acc.nonfinite_mismatch, acc.n, acc.nan_o, acc.inf_o, acc.nan_r, acc.inf_r
        ));
    } else if n == 0 && acc.n > 0 {
        // Same non-finite mask on both sides, and it covers every element: a probe that is
        // NaN/Inf everywhere compares nothing and must not pass as `ok` (an empty tensor, with
        // nothing to compare in the first place, stays `ok`).
        row.status = Status::NoFinite;
        row.reason = Some(format!(
            "no finite value on either side: all {} elements are NaN or Inf on both (ours: {} NaN, {} Inf; ref: {} NaN, {} Inf); nothing was compared",
            acc.n, acc.nan_o, acc.inf_o, acc.nan_r, acc.inf_r
        ));
    } else if tol.exact {
        if acc.n_outside > 0 {
            row.status = Status::Diverged;
            row.reason = Some(format!(
                "{} of {} elements differ (exact mode); max |ours - ref| = {}",
                acc.n_outside,
                acc.n,
                sci(acc.max_abs_d)
            ));
        }
    } else if n > 0 && !(diff_l2.is_finite() && threshold.is_finite()) {
        // The sums of squares overflowed f64 (|values| above ~1e154): the norm-wise rule
        // cannot be evaluated. Equal tensors stay ok; any difference at that magnitude is
        // reported rather than passed.
        if acc.max_abs_d > 0.0 {
            row.status = Status::Diverged;
            row.reason = Some(format!(
                "values too large for the norm-wise rule (the sums of squares overflow f64); max |ours - ref| = {}",
                sci(acc.max_abs_d)
            ));
        }
    } else if diff_l2 > threshold {
        row.status = Status::Diverged;
        row.reason = Some(format!(
            "||ours - ref|| = {} > tolerance {} (atol*sqrt(n) + rtol*||ref||); rel L2 err {}",
            sci(diff_l2),
            sci(threshold),
            row.errors
                .rel_l2_err
                .map_or_else(|| "undefined".to_string(), sci)
        ));
    }
    row
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
    let mut row = compare(name, ours, reference, cfg);
    let Tolerance::Truth { ratio } = cfg.tolerance else {
        return row;
    };
    let (Some(o), Some(r)) = (ours, reference) else {
        return row;
    };
    if !matches!(row.status, Status::Ok | Status::Diverged) {
        return row;
    }
    let t = match truth {
        Some(t) => t,
        None => {
            row.truth.truth_problem = Some("not in the truth dump".to_string());
            return row;
        }
    };
    let (ref_class, truth_class) = (DTypeClass::of(r.dtype), DTypeClass::of(t.dtype));
    let problem = if check_len(&t, Which::Ref).is_err() {
        Some(format!(
            "truth: {} values do not fill shape {}",
            t.values.len(),
            fmt_shape(t.shape)
        ))
    } else if squeezed(t.shape) != squeezed(r.shape) {
        Some(format!(
            "truth shape {} differs from ref {}",
            fmt_shape(t.shape),
            fmt_shape(r.shape)
        ))
    } else if ref_class != DTypeClass::Int
        && (truth_class == DTypeClass::Int || truth_class >= ref_class)
    {
        Some(format!(
            "truth is {}, not finer than ref's {}",
            t.dtype, r.dtype
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        row.truth.truth_problem = Some(p);
        return row;
    }
    let params = Params {
        rtol: 0.0,
        atol: 0.0,
        rel_guard: REL_ERR_GUARD_MIN,
    };
    let ot = metrics::accumulate(o.values, t.values, &params, cfg.chunk_len);
    let rt = metrics::accumulate(r.values, t.values, &params, cfg.chunk_len);
    if ot.nonfinite_mismatch > 0 || rt.nonfinite_mismatch > 0 {
        row.truth.truth_problem = Some(format!(
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
        // A truth of zeros against a non-zero side, or sums of squares that overflow f64:
        // no ratio can be formed, so the preset's verdict stands, and says so.
        row.truth.truth_problem = Some(if truth_l2 == 0.0 {
            "the truth is all zeros where ours or ref is not: no relative error".to_string()
        } else {
            "the errors against the truth overflow f64: no ratio".to_string()
        });
        return row;
    }
    row.truth.ours_truth_rel_err = finite(e_ours);
    row.truth.ref_truth_rel_err = finite(e_ref);
    row.truth.noise_ratio = finite(noise_ratio);
    let excess = e_ours - e_ref;
    if noise_ratio > ratio && excess > truth_noise(truth_class) {
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
    row
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

fn one_side(name: &str, side: &Side<'_>, which: Which) -> OpResult {
    let status = match which {
        Which::Ours => Status::OnlyOurs,
        Which::Ref => Status::OnlyRef,
    };
    let mut row = OpResult::bare(
        name,
        status,
        Some(format!("present only in {}", which.label())),
    );
    row.tensor.shape = Some(side.shape.to_vec());
    let stats = match check_len(side, which) {
        Ok(()) => Some(metrics::side_stats(side.values)),
        Err(_) => None,
    };
    let l2 = stats.and_then(|s| finite(s.sum_sq.sqrt()));
    match which {
        Which::Ours => {
            row.tensor.dtype_ours = Some(side.dtype.to_string());
            row.rule.ours_l2 = l2;
            row.nonfinite.nan_ours = stats.map(|s| s.nan);
            row.nonfinite.inf_ours = stats.map(|s| s.inf);
        }
        Which::Ref => {
            row.tensor.dtype_ref = Some(side.dtype.to_string());
            row.rule.ref_l2 = l2;
            row.nonfinite.nan_ref = stats.map(|s| s.nan);
            row.nonfinite.inf_ref = stats.map(|s| s.inf);
        }
    }
    row.tensor.numel = Some(side.values.len() as u64);
    row
}

/// The row of a probe that could not be read from one dump (`message` says why, one line).
pub fn unreadable(name: &str, side: Which, message: String) -> OpResult {
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
    fn sci_format() {
        assert_eq!(sci(0.0), "0.000e+00");
        assert_eq!(sci(1.0), "1.000e+00");
        assert_eq!(sci(12345.0), "1.234e+04"); // round-half-even of 1.2345
        assert_eq!(sci(-0.000123456), "-1.235e-04");
        assert_eq!(sci(1e-300), "1.000e-300");
    }

    #[test]
    fn unravel_row_major() {
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(unravel(13, &[2, 3, 4]), vec![1, 0, 1]);
    }
}
