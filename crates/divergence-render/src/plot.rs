//! The two drawings of the HTML report, as SVG: the error-growth plot (relative L2 error of every
//! op along execution order, log scale, with the per-op tolerance; with `--truth`, ours' and the
//! reference's errors against the truth and the noise-ratio limit) and the layers × op-kind
//! heatmap. Both read only the [`Report`], its rows through their views ([`Row`]: a compact
//! report's decode steps are never built); op kinds come from [`divergence_names::Op`].
//!
//! A log axis cannot show 0 or a missing value: ops with a rel err of exactly 0 are drawn on a
//! separate `0` row under the axis, ops without one (not compared, shape mismatch, ...) on an
//! `n/a` row, never at -inf.

use std::collections::BTreeMap;

use divergence_diff::{
    ratio_text, sci, truth_floor, DTypeClass, PositionProfile, Report, Row, RowSource, Tolerance,
};
use divergence_names::Op;

use crate::svg::Svg;
use crate::view;

/// Marker colours (colour-blind safe pairs: blue / vermillion / purple).
const OK: &str = "#0072b2";
const BAD: &str = "#d55e00";
const QK: &str = "#8e44ad";
const TOL: &str = "#009e73";
const GRID: &str = "#e3e3e3";
/// The reference's own error against the truth (truth mode).
const REF_LINE: &str = "#e69f00";
const AXIS: &str = "#555";
/// The origin of the first divergence's error.
const ORIGIN: &str = "#8b4513";

/// A log10 axis over whole decades `[lo, hi]`, drawn from `y_bot` (lo) up to `y_top` (hi).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LogAxis {
    pub lo: i32,
    pub hi: i32,
}

impl LogAxis {
    /// The decades around every finite positive value (`-6..0` when there is none).
    pub(crate) fn around(values: impl IntoIterator<Item = f64>) -> LogAxis {
        let (mut min, mut max) = (f64::INFINITY, 0.0f64);
        for v in values {
            if v.is_finite() && v > 0.0 {
                min = min.min(v);
                max = max.max(v);
            }
        }
        if max == 0.0 {
            return LogAxis { lo: -6, hi: 0 };
        }
        let lo = min.log10().floor() as i32;
        let mut hi = max.log10().ceil() as i32;
        if hi <= lo {
            hi = lo + 1;
        }
        LogAxis { lo, hi }
    }

    /// [`LogAxis::around`] `values` and `thresholds`, with the lowest decade at least one
    /// below the smallest positive threshold: a threshold line drawn on the axis never sits on
    /// its base (where bars start and the lowest points lie), e.g. a tolerance of 1.001e-3
    /// gets an axis from 1e-4, not from 1e-3.
    pub(crate) fn above_thresholds(
        values: impl IntoIterator<Item = f64>,
        thresholds: impl IntoIterator<Item = f64>,
    ) -> LogAxis {
        let thresholds: Vec<f64> = thresholds
            .into_iter()
            .filter(|t| t.is_finite() && *t > 0.0)
            .collect();
        let mut axis = LogAxis::around(values.into_iter().chain(thresholds.iter().copied()));
        if let Some(min) = thresholds.into_iter().reduce(f64::min) {
            axis.lo = axis.lo.min(min.log10().floor() as i32 - 1);
        }
        axis
    }

    /// Where `v` (> 0) lies on the axis: 0 at `lo`, 1 at `hi`.
    pub(crate) fn frac(self, v: f64) -> f64 {
        (v.log10() - self.lo as f64) / (self.hi - self.lo) as f64
    }

    /// The labelled decades: every one up to 8 decades, then every 2nd, 3rd, ... (at most 9).
    pub(crate) fn labelled(self) -> Vec<i32> {
        let span = self.hi - self.lo;
        let step = ((span + 7) / 8).max(1);
        (self.lo..=self.hi)
            .filter(|e| (e - self.lo) % step == 0)
            .collect()
    }
}

/// The horizontal grid line of every decade of `axis` from `x0` to `x1`, drawn from `y_bot`
/// (the lowest decade) up to `y_top`, and the labels of [`LogAxis::labelled`] left of `x0`.
fn decade_grid(svg: &mut Svg, axis: LogAxis, (x0, x1): (f64, f64), (y_top, y_bot): (f64, f64)) {
    let y = |e: i32| y_bot - (e - axis.lo) as f64 / (axis.hi - axis.lo) as f64 * (y_bot - y_top);
    for e in axis.lo..=axis.hi {
        svg.line(
            x0,
            y(e),
            x1,
            y(e),
            &format!("stroke=\"{GRID}\" stroke-width=\"1\""),
        );
    }
    for e in axis.labelled() {
        svg.power_of_ten(x0 - 8.0, y(e) + 4.0, e);
    }
}

/// The rel-err tolerance of a row: the decision threshold over `||ref||`
/// (`(atol*sqrt(n) + rtol*||ref||) / ||ref||`); `None` when either is missing or not positive.
pub(crate) fn rel_tolerance(row: Row<'_>) -> Option<f64> {
    // A compact step's terms made once for both.
    let (rule, _) = row.terms();
    match (rule.tol_threshold, rule.ref_l2) {
        (Some(t), Some(r)) if t > 0.0 && r > 0.0 => Some(t / r).filter(|x| x.is_finite()),
        _ => None,
    }
}

/// What the growth plot draws for one op: in truth mode (`k` = the noise-ratio limit) ours'
/// error against the truth and the limit `k * max(ref's error against the truth, floor)`,
/// falling back to the two-way values for a row without a usable truth; otherwise the rel err
/// of ours vs ref and its tolerance.
#[derive(Debug, Clone, Copy)]
struct Plotted {
    truth_k: Option<f64>,
}

impl Plotted {
    fn of(report: &Report) -> Plotted {
        Plotted {
            truth_k: match report.tolerance {
                Tolerance::Truth { ratio } => Some(ratio),
                _ => None,
            },
        }
    }

    fn value(self, op: Row<'_>) -> Option<f64> {
        match (self.truth_k, op.truth().ours_truth_rel_err) {
            (Some(_), Some(v)) => Some(v),
            _ => op.rel_l2_err(),
        }
    }

    fn reference(self, op: Row<'_>) -> Option<f64> {
        self.truth_k.and(op.truth().ref_truth_rel_err)
    }

    fn limit(self, op: Row<'_>) -> Option<f64> {
        match (self.truth_k, op.truth().ref_truth_rel_err) {
            (Some(k), Some(e_ref)) => {
                let class = DTypeClass::of(op.tensor().dtype_ref.as_deref().unwrap_or("float32"));
                Some(k * e_ref.max(truth_floor(class)))
            }
            _ => rel_tolerance(op),
        }
    }
}

/// [`Op::of`] the row's name, without writing a compact step's: `Op::of` reads a name
/// without its step, i.e. the probe's name, which gives the same kind unless it too ends as a
/// step's name does (probe `x@2`, whose steps are `x@2@1`, ...).
fn op_kind(row: Row<'_>) -> Op {
    match row {
        Row::Plain(o) => Op::of(&o.name),
        Row::Step(..) => match row.base() {
            base if divergence_names::split_step(base).1 == 0 => Op::of(base),
            _ => Op::of(&row.name()),
        },
    }
}

fn is_qk_norm(op: Row<'_>) -> bool {
    matches!(op_kind(op), Op::QkNorm(_))
}

/// Least distance between two boundary lines of the growth plot, in pixels.
const MIN_LINE_GAP: f64 = 3.0;

/// Runs of consecutive ops of one decode step: `(step, first index, last index)`.
fn step_spans<R: RowSource + ?Sized>(ops: &R) -> Vec<(usize, usize, usize)> {
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for i in 0..ops.row_count() {
        let s = ops.row_at(i).step();
        match spans.last_mut() {
            Some((step, _, last)) if *step == s => *last = i,
            _ => spans.push((s, i, i)),
        }
    }
    spans
}

/// Runs of consecutive ops of one layer: `(layer, first index, last index)`.
fn layer_spans<R: RowSource + ?Sized>(ops: &R) -> Vec<(usize, usize, usize)> {
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for i in 0..ops.row_count() {
        let Some(l) = ops.row_at(i).layer() else {
            continue;
        };
        match spans.last_mut() {
            Some((layer, _, last)) if *layer == l && *last + 1 == i => *last = i,
            _ => spans.push((l, i, i)),
        }
    }
    spans
}

fn tooltip(i: usize, op: Row<'_>, plotted: Plotted) -> String {
    let num = |x: Option<f64>| x.map_or_else(|| "-".to_string(), sci);
    let truth = op.truth();
    if let (Some(_), Some(ratio)) = (plotted.truth_k, truth.noise_ratio) {
        return format!(
            "#{i} {}\nstatus {}\nvs truth: ours {}, ref {} (noise ratio {}, limit {})",
            op.name(),
            op.status(),
            num(truth.ours_truth_rel_err),
            num(truth.ref_truth_rel_err),
            ratio_text(ratio),
            num(plotted.limit(op))
        );
    }
    format!(
        "#{i} {}\nstatus {}\nrel err {} (rel tolerance {})",
        op.name(),
        op.status(),
        num(op.rel_l2_err()),
        num(rel_tolerance(op))
    )
}

/// Ops per pixel column over which the growth plot thins its ok markers ([`dense_keep`]).
const DENSE_PER_PIXEL: f64 = 4.0;

/// Which markers a dense growth plot draws (`None`: every one, the plot is not dense): one per
/// cell of one pixel column by two pixels of height, per kind (`look`: the marker's y, its
/// value — a positive value, 0 or none — and whether it is a q/k norm's diamond) and per
/// colour (diverged or not), the last in execution order, which the full plot draws on top of
/// the others of its kind there: every dot the full plot shows is still shown, to within a
/// cell, and the first divergence always. A decode bug diverges at every step after its
/// own (136,333 of a 256-step report's 152,345 ops): its diverged markers, all drawn, were
/// 30 MB of the page.
fn dense_keep<R: RowSource + ?Sized>(
    ops: &R,
    first: Option<usize>,
    x: impl Fn(usize) -> f64,
    look: impl Fn(Row<'_>) -> (f64, Option<f64>, bool),
) -> Option<Vec<bool>> {
    let len = ops.row_count();
    let columns = x(len.saturating_sub(1)) - x(0);
    if (len as f64) <= DENSE_PER_PIXEL * columns.max(1.0) {
        return None;
    }
    let mut keep = vec![false; len];
    // (column, row of 2 px, kind and colour) -> the last op there.
    let mut cells: std::collections::HashMap<(i64, i64, u8), usize> =
        std::collections::HashMap::new();
    for i in 0..len {
        let op = ops.row_at(i);
        let (y, value, qk) = look(op);
        let kind = match value {
            Some(v) if v > 0.0 => 0,
            Some(_) => 1,
            None => 2,
        } + 3 * u8::from(qk)
            + 6 * u8::from(op.status().is_divergence());
        cells.insert((x(i).floor() as i64, (y / 2.0).floor() as i64, kind), i);
    }
    for i in cells.into_values().chain(first) {
        keep[i] = true;
    }
    Some(keep)
}

/// The error-growth plot. `standalone` for a file of its own (`--plot`).
pub(crate) fn growth(report: &Report, standalone: bool) -> String {
    let ops = &report.ops;
    let plotted = Plotted::of(report);
    let (width, height) = (1320.0, 408.0);
    let (left, right, top) = (64.0, 16.0, 44.0);
    let y_bot = 300.0; // the lowest decade
    let y_zero = y_bot + 22.0;
    let y_na = y_zero + 18.0;
    let y_layers = y_na + 24.0;
    let pw = width - left - right;
    let count = ops.len().max(1) as f64;
    let x = |i: usize| left + (i as f64 + 0.5) * pw / count;
    let axis = LogAxis::above_thresholds(
        ops.rows()
            .filter_map(|o| plotted.value(o))
            .chain(ops.rows().filter_map(|o| plotted.reference(o))),
        ops.rows().filter_map(|o| plotted.limit(o)),
    );
    let y = |v: f64| y_bot - axis.frac(v) * (y_bot - top);

    let mut svg = Svg::new(
        width,
        height,
        standalone,
        if plotted.truth_k.is_some() {
            "relative L2 error against the truth run of every op along execution order, ours and the reference's, log scale"
        } else {
            "relative L2 error of every op along execution order, log scale"
        },
    );
    svg.rect(0.0, 0.0, width, height, "fill=\"#fff\"", None);
    decade_grid(&mut svg, axis, (left, width - right), (top, y_bot));
    svg.text(left - 8.0, y_zero + 4.0, "end", "fill=\"#333\"", "0");
    svg.text(left - 8.0, y_na + 4.0, "end", "fill=\"#333\"", "n/a");
    svg.line(
        left,
        y_zero - 11.0,
        width - right,
        y_zero - 11.0,
        &format!("stroke=\"{AXIS}\" stroke-width=\"1\""),
    );
    svg.line(
        left,
        top,
        left,
        y_na + 8.0,
        &format!("stroke=\"{AXIS}\" stroke-width=\"1\""),
    );
    svg.text(
        14.0,
        (top + y_bot) / 2.0,
        "middle",
        &format!(
            "fill=\"#333\" transform=\"rotate(-90 14 {})\"",
            crate::svg::n((top + y_bot) / 2.0)
        ),
        if plotted.truth_k.is_some() {
            "rel L2 error vs truth"
        } else {
            "rel L2 error"
        },
    );

    // Layer boundaries and labels (thinned out so that labels never touch); in a report of
    // decode steps, the steps' (each step runs every layer again: at 256 steps the layers'
    // 7,196 dashed lines, 0.15 px apart, greyed the plot, and their labels named layers at
    // random).
    let stepped = ops.rows().any(|o| o.step() > 0);
    let spans = if stepped {
        step_spans(ops)
    } else {
        layer_spans(ops)
    };
    // A label is drawn where it clears the last one drawn by a gap (its width from its
    // characters, ~6.6 px each at 12 px: `s104` beside `s109` ran together at a fixed gap).
    const CHAR_W: f64 = 6.6;
    const LABEL_GAP: f64 = 8.0;
    let (mut last_right, mut last_line) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &(unit, first, last) in &spans {
        let x0 = x(first) - 0.5 * pw / count;
        if x0 - last_line >= MIN_LINE_GAP {
            svg.line(
                x0,
                top,
                x0,
                y_na + 8.0,
                "stroke=\"#bbb\" stroke-width=\"1\" stroke-dasharray=\"3 3\"",
            );
            last_line = x0;
        }
        let mid = (x(first) + x(last)) / 2.0;
        let label = match (stepped, unit) {
            (false, l) => format!("L{l}"),
            (true, 0) => "prefill".to_string(),
            (true, s) => format!("s{s}"),
        };
        let half = label.chars().count() as f64 * CHAR_W / 2.0;
        if mid - half >= last_right + LABEL_GAP {
            svg.text(mid, y_layers, "middle", "fill=\"#333\"", &label);
            last_right = mid + half;
        }
    }
    svg.text(
        left + pw / 2.0,
        y_layers + 22.0,
        "middle",
        "fill=\"#333\"",
        &if stepped {
            format!(
                "op, in execution order ({} ops; s = decode step, each through every layer)",
                ops.len()
            )
        } else {
            format!(
                "op, in execution order ({} ops; L = decoder layer)",
                ops.len()
            )
        },
    );

    // First divergence.
    if let Some(first) = &report.first_divergence {
        let fx = x(first.index);
        svg.line(
            fx,
            top - 6.0,
            fx,
            y_na + 8.0,
            &format!("stroke=\"{BAD}\" stroke-width=\"1.5\""),
        );
        let anchor = if fx > left + pw * 0.6 { "end" } else { "start" };
        let dx = if anchor == "end" { -4.0 } else { 4.0 };
        svg.text(
            fx + dx,
            top - 10.0,
            anchor,
            &format!("fill=\"{BAD}\" font-weight=\"bold\""),
            &format!("first divergence: #{} {}", first.index, first.name),
        );
    }

    // The origin, where the first divergence's error was born (docs/origin.md), when it is an
    // earlier op: a dashed line, labelled above the first divergence's label.
    if let (Some(o), Some(first)) = (&report.origin, &report.first_divergence) {
        if o.index != first.index {
            let ox = x(o.index);
            svg.line(
                ox,
                top - 20.0,
                ox,
                y_na + 8.0,
                &format!("stroke=\"{ORIGIN}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\""),
            );
            let anchor = if ox > left + pw * 0.6 { "end" } else { "start" };
            let dx = if anchor == "end" { -4.0 } else { 4.0 };
            svg.text(
                ox + dx,
                top - 24.0,
                anchor,
                &format!("fill=\"{ORIGIN}\" font-weight=\"bold\""),
                &format!("origin (error born here): #{} {}", o.index, o.name),
            );
        }
    }

    // Markers. Where few ops diverge (their markers, enlarged, would cover at most a quarter
    // of the width), the diverged ones are drawn after the ok ones, no smaller than `r_bad` and
    // ringed in white, so that one diverged op among hundreds still shows; where many do, all
    // keep one size and the execution order, so that they hide neither the ok ones nor the
    // tolerance line. The first divergence's marker sits in a white disc with a vermillion
    // ring, which cuts its vertical line (same colour) around it; the disc goes under the
    // tolerance and error lines and every marker, hiding none.
    let r = if ops.len() > 200 { 2.2 } else { 3.2 };
    let diverged = ops.rows().filter(|o| o.status().is_divergence()).count();
    let sparse = diverged as f64 * (2.0 * 3.6 + 1.0) <= 0.25 * pw;
    let r_bad = if sparse { f64::max(r, 3.6) } else { r };
    let marker_y = |op: Row<'_>| match plotted.value(op) {
        Some(v) if v > 0.0 => y(v),
        Some(_) => y_zero,
        None => y_na,
    };
    let first = report
        .first_divergence
        .as_ref()
        .and_then(|f| Some((f.index, ops.get_row(f.index)?)));
    if let Some((i, op)) = first {
        let halo = r_bad + if is_qk_norm(op) { 7.5 } else { 5.0 };
        svg.circle(
            x(i),
            marker_y(op),
            halo,
            &format!("fill=\"#fff\" stroke=\"{BAD}\" stroke-width=\"1.5\""),
            None,
        );
    }

    // Tolerance: a step line, one level per op (it depends on the op's n and ||ref||).
    let half = 0.5 * pw / count;
    let mut run: Vec<(f64, f64)> = Vec::new();
    let flush = |svg: &mut Svg, run: &mut Vec<(f64, f64)>| {
        svg.polyline(
            run,
            &format!("stroke=\"{TOL}\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\""),
        );
        run.clear();
    };
    for (i, op) in ops.rows().enumerate() {
        match plotted.limit(op) {
            Some(t) => {
                run.push((x(i) - half, y(t)));
                run.push((x(i) + half, y(t)));
            }
            None => flush(&mut svg, &mut run),
        }
    }
    flush(&mut svg, &mut run);

    // The error lines, broken where an op has no positive error: in truth mode the reference's
    // own error against the truth first (underneath), then ours'.
    type Series = fn(Plotted, Row<'_>) -> Option<f64>;
    let mut series: Vec<(Series, &str)> = Vec::new();
    if plotted.truth_k.is_some() {
        series.push((Plotted::reference, REF_LINE));
    }
    series.push((Plotted::value, "#888"));
    for (value, colour) in &series {
        let style = format!("stroke=\"{colour}\" stroke-width=\"1\"");
        let mut line: Vec<(f64, f64)> = Vec::new();
        for (i, op) in ops.rows().enumerate() {
            match value(plotted, op).filter(|v| *v > 0.0) {
                Some(v) => line.push((x(i), y(v))),
                None => {
                    svg.polyline(&line, &style);
                    line.clear();
                }
            }
        }
        svg.polyline(&line, &style);
    }

    // The markers, over everything. Far more ops than pixel columns (decode steps: 38,489 ops
    // for 64 steps on 1,240 px), an op's marker is drawn only when it is the last of its kind
    // and colour in its cell of 1 x 2 px ([`dense_keep`]): the others lay under it and made
    // most of the page's elements.
    let mut shown = dense_keep(ops, first.map(|(i, _)| i), x, |op| {
        (marker_y(op), plotted.value(op), is_qk_norm(op))
    });
    if let (Some(keep), Some(o)) = (shown.as_mut(), &report.origin) {
        if let Some(k) = keep.get_mut(o.index) {
            *k = true;
        }
    }
    let passes: &[Option<bool>] = if sparse {
        &[Some(false), Some(true)]
    } else {
        &[None]
    };
    for pass in passes {
        for (i, op) in ops.rows().enumerate() {
            let diverged = op.status().is_divergence();
            if pass.is_some_and(|p| p != diverged) {
                continue;
            }
            if shown.as_ref().is_some_and(|keep| !keep[i]) {
                continue;
            }
            let (colour, r) = if diverged { (BAD, r_bad) } else { (OK, r) };
            let tip = tooltip(i, op, plotted);
            let cx = x(i);
            let cy = marker_y(op);
            if is_qk_norm(op) {
                let s = r + 2.5;
                let d = format!(
                    "M{} {}L{} {}L{} {}L{} {}Z",
                    crate::svg::n(cx),
                    crate::svg::n(cy - s),
                    crate::svg::n(cx + s),
                    crate::svg::n(cy),
                    crate::svg::n(cx),
                    crate::svg::n(cy + s),
                    crate::svg::n(cx - s),
                    crate::svg::n(cy)
                );
                svg.path(
                    &d,
                    &format!("fill=\"{colour}\" stroke=\"{QK}\" stroke-width=\"2\""),
                    Some(&tip),
                );
            } else if plotted.value(op).is_some_and(|v| v > 0.0) {
                let ring = if diverged && sparse {
                    " stroke=\"#fff\" stroke-width=\"1\""
                } else {
                    ""
                };
                svg.circle(cx, cy, r, &format!("fill=\"{colour}\"{ring}"), Some(&tip));
            } else {
                // 0 and n/a: hollow, so they read as "not on the axis".
                svg.circle(
                    cx,
                    cy,
                    r,
                    &format!("fill=\"#fff\" stroke=\"{colour}\" stroke-width=\"1.5\""),
                    Some(&tip),
                );
            }
        }
    }

    // Legend, top right.
    let lx = width
        - right
        - if plotted.truth_k.is_some() {
            730.0
        } else {
            560.0
        };
    let ly = 14.0;
    svg.circle(lx, ly, 3.5, &format!("fill=\"{OK}\""), None);
    svg.text(lx + 8.0, ly + 4.0, "start", "fill=\"#333\"", "ok");
    svg.circle(lx + 44.0, ly, 3.5, &format!("fill=\"{BAD}\""), None);
    svg.text(lx + 52.0, ly + 4.0, "start", "fill=\"#333\"", "diverged");
    let d = format!(
        "M{} {}l5 5l-5 5l-5 -5Z",
        crate::svg::n(lx + 128.0),
        crate::svg::n(ly - 5.0)
    );
    svg.path(
        &d,
        &format!("fill=\"#fff\" stroke=\"{QK}\" stroke-width=\"2\""),
        None,
    );
    svg.text(
        lx + 138.0,
        ly + 4.0,
        "start",
        "fill=\"#333\"",
        "q_norm / k_norm",
    );
    svg.line(
        lx + 248.0,
        ly,
        lx + 276.0,
        ly,
        &format!("stroke=\"{TOL}\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\""),
    );
    match plotted.truth_k {
        None => svg.text(
            lx + 282.0,
            ly + 4.0,
            "start",
            "fill=\"#333\"",
            "tolerance (atol·√n + rtol·‖ref‖) / ‖ref‖",
        ),
        Some(k) => {
            svg.text(
                lx + 282.0,
                ly + 4.0,
                "start",
                "fill=\"#333\"",
                &format!("limit {}× max(ref's error, floor)", ratio_text(k)),
            );
            svg.line(
                lx + 510.0,
                ly,
                lx + 538.0,
                ly,
                &format!("stroke=\"{REF_LINE}\" stroke-width=\"1.5\""),
            );
            svg.text(
                lx + 544.0,
                ly + 4.0,
                "start",
                "fill=\"#333\"",
                "ref vs truth (dots: ours)",
            );
        }
    }
    svg.finish()
}

/// The column label of an op kind: the last part of its path in the layer (`k_norm`, `mlp`),
/// `output` for the layer's own output.
fn kind_label(op: Op) -> &'static str {
    match op.layer_path() {
        Some("") => "output",
        Some(path) => path.rsplit('.').next().unwrap_or(path),
        None => "other",
    }
}

/// One cell of the heatmap: the worst rel err of its ops, and whether any diverges.
#[derive(Default)]
struct Cell {
    worst: Option<f64>,
    /// The op of [`Cell::worst`] (its line of the tooltip).
    worst_line: Option<String>,
    /// Ops in the cell, and those that diverged.
    count: usize,
    diverged: usize,
    /// The tooltip's lines of the first [`CELL_LINES`] ops, and of the first diverged ones.
    names: Vec<String>,
    diverged_names: Vec<String>,
    missing: bool,
}

/// Ops a heatmap cell's tooltip lists one by one. A decode report has an op per step in
/// each cell (257 at 256 steps): its tooltip says how many, the worst and the first that
/// diverged (listing them all made 8.9 MB of tooltips of 257 lines each).
const CELL_LINES: usize = 8;

impl Cell {
    fn add(&mut self, op: Row<'_>) {
        let (status, rel_l2_err) = (op.status(), op.rel_l2_err());
        let line = || {
            format!(
                "{} ({}, rel err {})",
                op.name(),
                status,
                rel_l2_err.map_or_else(|| "-".to_string(), sci)
            )
        };
        self.count += 1;
        if let Some(v) = rel_l2_err {
            // as f64::max: a NaN is passed over
            if self
                .worst
                .is_none_or(|w| v > w || (w.is_nan() && !v.is_nan()))
            {
                self.worst = Some(v);
                self.worst_line = Some(line());
            }
        } else {
            self.missing = true;
        }
        if status.is_divergence() {
            self.diverged += 1;
            if self.diverged_names.len() < CELL_LINES / 2 {
                self.diverged_names.push(line());
            }
        }
        if self.names.len() < CELL_LINES {
            self.names.push(line());
        }
    }

    /// The tooltip's lines below its title.
    fn lines(&self) -> String {
        if self.count <= CELL_LINES {
            return self.names.join("\n");
        }
        let mut out = format!("{} ops", self.count);
        if let Some(w) = &self.worst_line {
            out.push_str(&format!("\nworst: {w}"));
        }
        match self.diverged {
            0 => out.push_str("\nnone diverged"),
            n => {
                out.push_str(&format!("\n{n} diverged, the first:"));
                for l in &self.diverged_names {
                    out.push_str(&format!("\n  {l}"));
                }
                if n > self.diverged_names.len() {
                    out.push_str("\n  ...");
                }
            }
        }
        out
    }
}

/// A sequential colour (pale yellow -> dark red) for `t` in [0, 1].
pub(crate) fn colour(t: f64) -> String {
    const STOPS: [(u8, u8, u8); 5] = [
        (255, 255, 204),
        (254, 217, 118),
        (253, 141, 60),
        (227, 26, 28),
        (128, 0, 38),
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// Most entries (token positions) the per-position plot draws a bar each: a long context's
/// (real reports' pages are unchanged). Past it, at most [`MAX_POSITION_BARS`] bars, each the
/// worst of a bin of consecutive positions, its tooltip naming the range: a bar and its
/// tooltip per position made a 2.3 GB page of 10,000,000 positions (2026-12-04, session 31;
/// the profile holds at most [`divergence_diff::positions::MAX_POSITIONS`] now).
pub(crate) const POSITION_BAR_EACH: usize = 32_768;

/// Most bars of the per-position plot of more than [`POSITION_BAR_EACH`] positions (the
/// plot is at most 1,320 pixels wide).
pub(crate) const MAX_POSITION_BARS: usize = 2_000;

/// The entry of `lo..hi` a bar of the per-position plot shows: the worst one, over the
/// tolerance first (one with no relative error, NaN/Inf at other places, the worst of those),
/// then the largest relative error; the first of equals.
fn worst_entry(p: &PositionProfile, lo: usize, hi: usize) -> usize {
    let key = |i: usize| match (p.over[i], p.rel_err[i]) {
        (true, None) => (2, f64::INFINITY),
        (true, Some(e)) => (1, e),
        (false, Some(e)) => (0, e),
        (false, None) => (-1, 0.0),
    };
    (lo..hi).fold(lo, |w, i| {
        let (kw, ki) = (key(w), key(i));
        if ki.0 > kw.0 || (ki.0 == kw.0 && ki.1 > kw.1) {
            i
        } else {
            w
        }
    })
}

/// The first divergence's relative error per token position (`report.positions`) as bars on
/// a log axis, red where the position is over its tolerance (the dashed step line, the op's
/// own rule per position); exact positions get a mark on the `0` row, affected positions with
/// no relative error (NaN/Inf) a red mark at the top. Past [`POSITION_BAR_EACH`] positions a
/// bar is the worst of a bin of them ([`worst_entry`]). `None` without a profile.
pub(crate) fn positions(report: &Report) -> Option<String> {
    let p = report.positions.as_ref()?;
    let t = p.rel_err.len();
    if t == 0 || p.rel_tol.len() != t || p.over.len() != t {
        return None;
    }
    // Entries a bar, and bars.
    let per_bar = if t <= POSITION_BAR_EACH {
        1
    } else {
        t.div_ceil(MAX_POSITION_BARS)
    };
    let bars = t.div_ceil(per_bar);
    let (left, right, top) = (64.0, 16.0, 16.0);
    let width = (left + right + 14.0 * bars as f64).clamp(560.0, 1320.0);
    let (y_bot, height) = (196.0, 266.0);
    let y_zero = y_bot + 20.0;
    let pw = width - left - right;
    let bw = pw / bars as f64;
    let x = |b: usize| left + b as f64 * bw;
    // The tolerance at least a decade above the base of the bars, so that its line shows.
    let axis = LogAxis::above_thresholds(
        p.rel_err.iter().filter_map(|v| *v),
        p.rel_tol.iter().filter_map(|v| *v),
    );
    let y = |v: f64| y_bot - axis.frac(v) * (y_bot - top);
    let mut svg = Svg::new(
        width,
        height,
        false,
        "relative error of the first divergence per token position, log scale",
    );
    svg.rect(0.0, 0.0, width, height, "fill=\"#fff\"", None);
    decade_grid(&mut svg, axis, (left, width - right), (top, y_bot));
    svg.text(left - 8.0, y_zero + 4.0, "end", "fill=\"#333\"", "0");
    svg.line(
        left,
        top,
        left,
        y_zero + 8.0,
        &format!("stroke=\"{AXIS}\" stroke-width=\"1\""),
    );
    let gap = if bw > 4.0 { 1.0 } else { 0.0 };
    // Entry i's token position: the profile's numbering where it has one.
    let position = |i: usize| p.positions.get(i).copied().unwrap_or(i);
    // across decode steps, an entry's step too (the axis is the steps', not the tensor's)
    let step_of = |i: usize| match p.steps.get(i) {
        Some(0) => " (prefill)".to_string(),
        Some(s) => format!(" (decode step {s})"),
        None => String::new(),
    };
    // The entry each bar shows.
    let shown: Vec<usize> = (0..bars)
        .map(|b| worst_entry(p, b * per_bar, ((b + 1) * per_bar).min(t)))
        .collect();
    for (b, &i) in shown.iter().enumerate() {
        let (e, tol, over) = (&p.rel_err[i], &p.rel_tol[i], p.over[i]);
        let what = format!(
            "rel err {}{}",
            e.map_or_else(|| "n/a".to_string(), sci),
            tol.map_or_else(String::new, |t| format!(", tolerance {}", sci(t)))
        );
        let title = if per_bar == 1 {
            format!("position {}{}: {what}", position(i), step_of(i))
        } else {
            let (lo, hi) = (b * per_bar, ((b + 1) * per_bar).min(t) - 1);
            let affected = p.over[lo..=hi].iter().filter(|&&o| o).count();
            format!(
                "positions {}{} to {}{} ({} entries, {affected} over the tolerance): worst at position {}{}: {what}",
                position(lo),
                step_of(lo),
                position(hi),
                step_of(hi),
                hi - lo + 1,
                position(i),
                step_of(i)
            )
        };
        match e {
            Some(v) if *v > 0.0 => {
                let yy = y(*v).clamp(top, y_bot);
                let fill = if over { BAD } else { "#9aa5b1" };
                svg.rect(
                    x(b) + gap / 2.0,
                    yy,
                    (bw - gap).max(0.5),
                    y_bot - yy,
                    &format!("fill=\"{fill}\""),
                    Some(&title),
                );
            }
            Some(_) => svg.circle(
                x(b) + bw / 2.0,
                y_zero,
                2.5,
                "fill=\"#9aa5b1\"",
                Some(&title),
            ),
            // No relative error (NaN/Inf at other places, or a reference of zeros): a red
            // mark at the top when the position is affected.
            None if over => svg.circle(
                x(b) + bw / 2.0,
                top + 4.0,
                3.5,
                &format!("fill=\"{BAD}\""),
                Some(&title),
            ),
            None => {}
        }
    }
    // The tolerance per position (per bar: its entry's), a step line (none in exact mode: 0
    // has no log).
    let mut pts = Vec::new();
    for (b, &i) in shown.iter().enumerate() {
        if let Some(tv) = p.rel_tol[i].filter(|t| *t > 0.0) {
            let yy = y(tv).clamp(top, y_bot);
            pts.push((x(b), yy));
            pts.push((x(b) + bw, yy));
        }
    }
    if pts.len() >= 2 {
        // On a white band, so that the dashes read across the (red) bars.
        svg.polyline(
            &pts,
            "stroke=\"#fff\" stroke-width=\"4\" stroke-opacity=\"0.9\"",
        );
        svg.polyline(
            &pts,
            &format!("stroke=\"{TOL}\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\""),
        );
    }
    // Across decode steps, where the prefill's positions end and the steps' begin.
    if let Some(k) = p.steps.iter().position(|&s| s > 0).filter(|&k| k > 0) {
        svg.line(
            x(k / per_bar),
            top,
            x(k / per_bar),
            y_zero + 8.0,
            "stroke=\"#555\" stroke-width=\"1\" stroke-dasharray=\"4 3\"",
        );
        svg.text(
            x(k / per_bar) + 4.0,
            top + 10.0,
            "start",
            "fill=\"#555\" font-size=\"11\"",
            "decode steps",
        );
    }
    // Position labels, at most ~16 (each at its bar's first entry).
    let step = bars.div_ceil(16).max(1);
    for b in (0..bars).step_by(step) {
        svg.text(
            x(b) + bw / 2.0,
            y_zero + 24.0,
            "middle",
            "fill=\"#333\"",
            &position(b * per_bar).to_string(),
        );
    }
    let thinned = if per_bar > 1 {
        format!("; a bar the worst of {per_bar} positions")
    } else {
        String::new()
    };
    svg.text(
        left + pw / 2.0,
        height - 8.0,
        "middle",
        "fill=\"#333\"",
        &if p.steps.is_empty() {
            format!("token position (axis {} of {}{thinned})", p.axis, p.op)
        } else if p.steps.first() == Some(&0) {
            format!(
                "token position (of {}: the prefill's, then one per decode step{thinned})",
                p.op
            )
        } else {
            format!("token position (of {}: one per decode step{thinned})", p.op)
        },
    );
    Some(svg.finish())
}

/// The layers × op-kind heatmap of rel err (log colour scale), or `None` when no op is in a
/// layer; with a line to put under it when layers are left out. It draws the layers the
/// table lists ([`view::shown_layers`]: at most [`view::SHOWN_LAYERS`]); a row per layer of
/// 1,048,576 layers made a 433 MB page at 3.47 GB (2026-12-04, session 31).
pub(crate) fn heatmap(report: &Report) -> Option<(String, Option<String>)> {
    let (keep, hidden) = view::shown_layers(report);
    // Op kinds in order of first appearance; q / k variants keep their own columns.
    // With decode steps, the prefill's rows and then the steps' (a cell the worst of every
    // step): a KV-cache bug reads as a clean block above a dark one (the prefill and the
    // steps in one cell hid it).
    let stepped = report.ops.rows().any(|o| o.step() > 0);
    let mut kinds: Vec<Op> = Vec::new();
    let mut cells: BTreeMap<(usize, usize), Vec<(Op, Cell)>> = BTreeMap::new();
    // The kind before this row's in its step: a kind first seen in a decode step (the cache's
    // `cache_k`, `cache_v`) goes after it, in execution order, not after every kind of the
    // prefill (a visual check: the cache's columns, where a cache bug is born, came last).
    let mut before: Option<(usize, Op)> = None;
    for op in report.ops.rows() {
        let Some(layer) = op.layer() else { continue };
        if keep.as_ref().is_some_and(|k| !k.contains(&layer)) {
            continue;
        }
        let kind = op_kind(op);
        if !kinds.contains(&kind) {
            let at = match before {
                Some((step, prev)) if step == op.step() => kinds
                    .iter()
                    .position(|k| *k == prev)
                    .map_or(kinds.len(), |p| p + 1),
                _ => kinds.len(),
            };
            kinds.insert(at, kind);
        }
        before = Some((op.step(), kind));
        let phase = usize::from(stepped && op.step() > 0);
        let row = cells.entry((phase, layer)).or_default();
        let cell = match row.iter().position(|(k, _)| *k == kind) {
            Some(p) => &mut row[p].1,
            None => {
                row.push((kind, Cell::default()));
                &mut row.last_mut()?.1
            }
        };
        cell.add(op);
    }
    if kinds.is_empty() {
        return None;
    }
    // The colour scale spans the cells and the ops' tolerances, so that a report within
    // tolerance reads pale whatever its absolute error level.
    let tolerances: Vec<f64> = report
        .ops
        .rows()
        .filter(|o| o.layer().is_some())
        .filter_map(rel_tolerance)
        .collect();
    let axis = LogAxis::around(
        cells
            .values()
            .flat_map(|r| r.iter().filter_map(|(_, c)| c.worst))
            .chain(tolerances.iter().copied()),
    );
    // Room for the rotated column labels (about 6.6 px per character at 12 px, at 50 degrees).
    let longest = kinds
        .iter()
        .map(|k| kind_label(*k).len())
        .max()
        .unwrap_or(0) as f64;
    let (left, top) = (56.0, 16.0 + longest * 6.6 * 0.77);
    let cw = ((1200.0 - left) / kinds.len() as f64).clamp(34.0, 64.0);
    let ch = 18.0;
    let grid_w = cw * kinds.len() as f64;
    // A title above each block of a decode report.
    let title_h = if stepped { 22.0 } else { 0.0 };
    let blocks = if stepped {
        cells
            .keys()
            .map(|&(p, _)| p)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    } else {
        0
    };
    let grid_h = ch * cells.len() as f64 + title_h * blocks as f64;
    let legend_top = top + grid_h + 30.0;
    let width = (left + grid_w + 20.0 + longest * 6.6 * 0.64).max(560.0);
    let height = legend_top + 64.0;
    let mut svg = Svg::new(
        width,
        height,
        false,
        "relative L2 error per layer and op kind, log colour scale",
    );
    svg.rect(0.0, 0.0, width, height, "fill=\"#fff\"", None);
    for (c, kind) in kinds.iter().enumerate() {
        let cx = left + (c as f64 + 0.5) * cw;
        let qk = matches!(kind, Op::QkNorm(_));
        let weight = if qk { " font-weight=\"bold\"" } else { "" };
        svg.text(
            cx + 4.0,
            top - 6.0,
            "start",
            &format!(
                "fill=\"#333\" transform=\"rotate(-50 {} {})\"{weight}",
                crate::svg::n(cx + 4.0),
                crate::svg::n(top - 6.0)
            ),
            kind_label(*kind),
        );
    }
    let mut phase_at = None;
    let mut titles = 0.0;
    for (r, (&(phase, layer), row)) in cells.iter().enumerate() {
        if stepped && phase_at != Some(phase) {
            phase_at = Some(phase);
            titles += title_h;
            svg.text(
                left,
                top + r as f64 * ch + titles - 7.0,
                "start",
                "fill=\"#333\" font-weight=\"bold\"",
                match phase {
                    0 => "prefill (step 0)",
                    _ => "decode steps (each cell the worst of every step)",
                },
            );
        }
        let y = top + r as f64 * ch + titles;
        svg.text(
            left - 6.0,
            y + ch / 2.0 + 4.0,
            "end",
            "fill=\"#333\"",
            &format!("L{layer}"),
        );
        for (c, kind) in kinds.iter().enumerate() {
            let x = left + c as f64 * cw;
            let Some((_, cell)) = row.iter().find(|(k, _)| k == kind) else {
                continue;
            };
            let fill = match cell.worst {
                Some(v) if v > 0.0 => colour(axis.frac(v)),
                Some(_) => "#ffffff".to_string(),
                None => "#d0d0d0".to_string(),
            };
            let stroke = if cell.diverged > 0 {
                "stroke=\"#000\" stroke-width=\"1.5\""
            } else {
                "stroke=\"#fff\" stroke-width=\"1\""
            };
            let tip = match (stepped, phase) {
                (false, _) => format!("layer {layer}, {}\n{}", kind_label(*kind), cell.lines()),
                (true, 0) => format!(
                    "layer {layer}, {}, prefill\n{}",
                    kind_label(*kind),
                    cell.lines()
                ),
                (true, _) => format!(
                    "layer {layer}, {}, decode steps\n{}",
                    kind_label(*kind),
                    cell.lines()
                ),
            };
            svg.rect(
                x + 0.75,
                y + 0.75,
                cw - 1.5,
                ch - 1.5,
                &format!("fill=\"{fill}\" {stroke}"),
                Some(&tip),
            );
            let mark = match cell.worst {
                Some(v) => (v == 0.0).then_some("0"),
                None => cell.missing.then_some("n/a"),
            };
            if let Some(m) = mark {
                svg.text(
                    x + cw / 2.0,
                    y + ch / 2.0 + 4.0,
                    "middle",
                    "fill=\"#555\" font-size=\"10\"",
                    m,
                );
            }
        }
    }
    // Legend: the colour scale over the decades, then 0 / n/a / diverged.
    let lw = 300.0;
    let steps = 60;
    for s in 0..steps {
        let t = (s as f64 + 0.5) / steps as f64;
        svg.rect(
            left + lw * s as f64 / steps as f64,
            legend_top,
            lw / steps as f64 + 0.3,
            12.0,
            &format!("fill=\"{}\"", colour(t)),
            None,
        );
    }
    for e in axis.labelled() {
        let lx = left + lw * (e - axis.lo) as f64 / (axis.hi - axis.lo) as f64;
        svg.line(
            lx,
            legend_top + 12.0,
            lx,
            legend_top + 16.0,
            "stroke=\"#555\"",
        );
        svg.power_of_ten(lx + 10.0, legend_top + 30.0, e);
    }
    // The median tolerance of the layer ops, marked on the colour bar.
    let mut sorted = tolerances;
    sorted.sort_by(f64::total_cmp);
    if let Some(&tol) = sorted.get(sorted.len() / 2) {
        let tx = left + lw * axis.frac(tol).clamp(0.0, 1.0);
        svg.line(
            tx,
            legend_top - 4.0,
            tx,
            legend_top + 12.0,
            &format!("stroke=\"{TOL}\" stroke-width=\"2\""),
        );
        svg.text(
            tx,
            legend_top - 7.0,
            "middle",
            &format!("fill=\"{TOL}\" font-size=\"10\""),
            "tolerance",
        );
    }
    svg.text(
        left,
        legend_top + 48.0,
        "start",
        "fill=\"#333\"",
        "worst rel L2 error of the cell (log scale)",
    );
    let kx = left + lw + 30.0;
    svg.rect(
        kx,
        legend_top,
        18.0,
        12.0,
        "fill=\"#fff\" stroke=\"#999\"",
        None,
    );
    svg.text(
        kx + 24.0,
        legend_top + 10.0,
        "start",
        "fill=\"#333\"",
        "0 (exact)",
    );
    svg.rect(kx + 100.0, legend_top, 18.0, 12.0, "fill=\"#d0d0d0\"", None);
    svg.text(
        kx + 124.0,
        legend_top + 10.0,
        "start",
        "fill=\"#333\"",
        "n/a (not compared)",
    );
    svg.rect(
        kx,
        legend_top + 22.0,
        18.0,
        12.0,
        "fill=\"#fff\" stroke=\"#000\" stroke-width=\"1.5\"",
        None,
    );
    svg.text(
        kx + 24.0,
        legend_top + 32.0,
        "start",
        "fill=\"#333\"",
        "diverged (black border)",
    );
    let hidden = hidden.map(|note| {
        format!(
            "Layers not drawn: {note} (the heatmap draws at most {}; the JSON report has every op).",
            view::SHOWN_LAYERS
        )
    });
    Some((svg.finish(), hidden))
}

#[cfg(test)]
mod tests {
    use super::*;
    use divergence_names::QkKind;

    #[test]
    fn axis_spans_whole_decades_and_skips_zero() {
        let a = LogAxis::around([3e-7, 0.0, 0.2, f64::NAN]);
        assert_eq!(a, LogAxis { lo: -7, hi: 0 });
        assert_eq!(a.labelled(), (-7..=0).collect::<Vec<_>>());
        assert_eq!(LogAxis::around([0.0]), LogAxis { lo: -6, hi: 0 });
        assert_eq!(LogAxis::around([1e-3]), LogAxis { lo: -3, hi: -2 });
        let wide = LogAxis::around([1e-30, 1.0]);
        assert!(wide.labelled().len() <= 9);
        assert_eq!(wide.labelled()[0], -30);
    }

    #[test]
    fn thresholds_stay_a_decade_above_the_base() {
        // A tolerance of 1.001e-3 under errors of 0.5: from 1e-4, not from 1e-3.
        let a = LogAxis::above_thresholds([0.5], [1.001e-3]);
        assert_eq!(a, LogAxis { lo: -4, hi: 0 });
        assert!(a.frac(1.001e-3) >= 0.25);
        // Values lower still keep their decades; no threshold, the plain axis.
        assert_eq!(
            LogAxis::above_thresholds([1e-7, 0.5], [1e-3, 0.0, f64::NAN]),
            LogAxis { lo: -7, hi: 0 }
        );
        assert_eq!(
            LogAxis::above_thresholds([3e-7, 0.2], []),
            LogAxis::around([3e-7, 0.2])
        );
        // Thresholds alone: still a decade under the smallest.
        assert_eq!(
            LogAxis::above_thresholds([], [1e-3]),
            LogAxis { lo: -4, hi: -2 }
        );
    }

    #[test]
    fn colours_run_from_pale_to_dark() {
        assert_eq!(colour(0.0), "#ffffcc");
        assert_eq!(colour(1.0), "#800026");
        assert_eq!(colour(2.0), "#800026");
    }

    #[test]
    fn kind_labels() {
        assert_eq!(kind_label(Op::QkNorm(QkKind::K)), "k_norm");
        assert_eq!(kind_label(Op::Layer), "output");
        assert_eq!(kind_label(Op::Mlp), "mlp");
        assert_eq!(kind_label(Op::LmHead), "other");
    }
}
