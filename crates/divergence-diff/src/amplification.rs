//! Amplification through `q_norm` / `k_norm`: does a small error going into the norm come out large?
//!
//! Qwen3 applies RMSNorms over head_dim to q and k before RoPE; real k_norm weights are large (up to
//! ~96 in Qwen3-0.6B layer 0), so an error that is tiny at `k_proj` can be much larger after `k_norm`.
//! Per layer and per q/k we pair `<prefix>.{q,k}_proj` with `<prefix>.{q,k}_norm` and report both
//! relative L2 errors, their ratio, and the absolute error gain `||Δ norm|| / ||Δ proj||`. A pair whose
//! ratio exceeds `DiffConfig::amplification_threshold` gets a [`AmpVerdict`]: `amplified` when the
//! projection's error is material (above [`amp_noise`]), and only those rows are marked;
//! `introduced` when the projection carries only f32 accumulation noise, so the norm's output
//! error was made at the norm (a skipped or rescaled norm), not amplified by it, and where the
//! report's cause hint at the norm finds the norm at fault itself
//! ([`Amplification::made_at_the_norm`], after the hints are made).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use divergence_names::{Name, Op, QkKind, StepName};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::origin::{class_noise_floor, noise_floor};
use crate::rows::{Row, RowSource};
use crate::tolerance::DTypeClass;

/// Max |weight| of each layer's q_norm / k_norm, from the checkpoint (`diff --model DIR`):
/// the annotation of [`AmplificationRow::weight_gain`].
pub type NormWeightGains = BTreeMap<(usize, QkKind), f64>;

/// One q or k pair of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmplificationRow {
    /// Layer index.
    pub layer: usize,
    /// q or k (`"q"` / `"k"` in JSON).
    pub kind: QkKind,
    /// Name of the projection op (`model.layers.0.self_attn.k_proj`): the norm's input side
    /// (held by its base and step: a decode report has a row per norm and step).
    pub proj: StepName,
    /// Name of the norm op (`model.layers.0.self_attn.k_norm`): the output side.
    pub norm: StepName,
    /// Relative L2 error of the projection.
    pub proj_rel_err: Option<f64>,
    /// Relative L2 error of the norm output.
    pub norm_rel_err: Option<f64>,
    /// `norm_rel_err / proj_rel_err`; `None` when the projection has no error (or either is null).
    pub ratio: Option<f64>,
    /// `||ours - ref||_2` of the projection.
    pub proj_abs_err: Option<f64>,
    /// `||ours - ref||_2` of the norm output.
    pub norm_abs_err: Option<f64>,
    /// `norm_abs_err / proj_abs_err`: where the norm weight's gain shows up.
    pub abs_err_gain: Option<f64>,
    /// Optional annotation: max |weight| of this norm, from the checkpoint (`--model DIR`).
    pub weight_gain: Option<f64>,
    /// `amplified` or `introduced` when `ratio > threshold` (see [`AmpVerdict`]), else `None`.
    pub verdict: Option<AmpVerdict>,
    /// True when the verdict is `amplified`.
    pub marked: bool,
}

/// The projection error at or below which a norm's output error counts as introduced at the
/// norm: the f32 noise level, [`crate::origin::class_noise_floor`] of `float32` (1e-6; 1e-12
/// for a float64 pair). It is the f32 floor for bf16 / f16 rows too: one rounding of a bf16
/// element already moves the relative error of a small tensor well above it, and a real norm
/// amplifies such rounding-level differences (docs/origin.md).
pub fn amp_noise<'r>(proj: impl Into<Row<'r>>) -> f64 {
    noise_floor(proj).min(class_noise_floor(DTypeClass::F32))
}

/// What the norm did to the error, when its ratio exceeds the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmpVerdict {
    /// The projection's error is above its noise floor and the norm made it larger.
    Amplified,
    /// The projection's error is at the noise floor: the norm's error was made at the norm.
    Introduced,
}

impl AmpVerdict {
    /// `"amplified"` or `"introduced"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AmpVerdict::Amplified => "amplified",
            AmpVerdict::Introduced => "introduced",
        }
    }
}

/// The amplification section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amplification {
    /// Ratio above which a row is marked.
    pub threshold: f64,
    /// Number of marked (`amplified`) rows.
    pub marked: usize,
    /// Number of `introduced` rows (over the threshold, from a projection error at noise level).
    pub introduced: usize,
    /// One row per (layer, q/k) pair with both ops present, in the norm ops' execution order.
    pub rows: Vec<AmplificationRow>,
}

impl Amplification {
    /// Rows whose norm the report's hints find at fault itself (a norm not applied, another
    /// scale or epsilon, a rounding, a bias, zeros, the first NaN / Inf made there) say
    /// `introduced`, not `amplified`: the norm's output error was made at the norm, whatever
    /// its projection carried. The ratio alone cannot tell: past layer 0, or in bf16, the
    /// projection's error is above [`amp_noise`] and a norm not applied gives a ratio a real
    /// k_norm can give too (a held-out check: `skip-k-norm@3` of a 300-token f32 run, k_proj
    /// at 3.4e-6, and every bf16 `skip-k-norm` past layer 0 read `amplified`, while the same
    /// report's origin said born at the k_norm, with a `skipped_op` hint). A hint at one decode
    /// step of a norm reads for its every step (one op, one code: a review found `k_norm@3`
    /// introduced and `k_norm@4` amplified). As `introduced` by the ratio, the norm's error
    /// must be above its own dtype's noise floor: `floor_of(hint's op)`, the f32 floor where
    /// that is not known. The counts follow.
    pub fn made_at_the_norm(
        &mut self,
        hints: &[crate::hints::Hint],
        floor_of: &dyn Fn(&str) -> Option<f64>,
    ) {
        let at_fault: Vec<(&str, f64)> = hints
            .iter()
            .filter(|h| own_fault(h.code))
            .map(|h| {
                let floor = floor_of(&h.op).unwrap_or(class_noise_floor(DTypeClass::F32));
                (divergence_names::split_step(&h.op).0, floor)
            })
            .collect();
        if at_fault.is_empty() {
            return;
        }
        let mut changed = false;
        for row in &mut self.rows {
            if row.verdict != Some(AmpVerdict::Amplified) {
                continue;
            }
            let base = row.norm.base();
            let made = at_fault
                .iter()
                .any(|&(b, floor)| b == base && row.norm_rel_err.is_some_and(|e| e > floor));
            if made {
                row.verdict = Some(AmpVerdict::Introduced);
                row.marked = false;
                changed = true;
            }
        }
        if changed {
            (self.marked, self.introduced) = counts(&self.rows);
        }
    }
}

impl Amplification {
    /// [`Amplification::marked`] and [`Amplification::introduced`] of layer `layer`'s rows.
    pub fn counts_in_layer(&self, layer: usize) -> (usize, usize) {
        counts(self.rows.iter().filter(|r| r.layer == layer))
    }
}

/// The rows marked (`amplified`) and the rows `introduced`.
fn counts<'r>(rows: impl IntoIterator<Item = &'r AmplificationRow>) -> (usize, usize) {
    rows.into_iter().fold((0, 0), |(m, i), r| {
        (
            m + usize::from(r.marked),
            i + usize::from(r.verdict == Some(AmpVerdict::Introduced)),
        )
    })
}

/// A hint that finds an op's own computation at fault, not what reached it: a norm not
/// applied, another scale or epsilon, a rounding point, a bias, values never written, the
/// first NaN / Inf made there.
fn own_fault(code: crate::hints::HintCode) -> bool {
    use crate::hints::HintCode as C;
    matches!(
        code,
        C::SkippedOp | C::Scale | C::Eps | C::Rounding | C::Bias | C::Zeros | C::NonfiniteOrigin
    )
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d).filter(|x| x.is_finite()),
        _ => None,
    }
}

/// How many rows before and after a norm its projection is looked for first.
const NEAR: usize = 16;

/// Builds the section from the rows (in execution order). `weight_gains` holds the max |weight|
/// of each layer's norms, when the checkpoint was read.
pub fn amplification<R: RowSource + ?Sized>(
    ops: &R,
    threshold: f64,
    weight_gains: &NormWeightGains,
) -> Amplification {
    // Only the q/k norms need their names parsed: a name (its step aside) that does not end
    // in `self_attn.q_norm` or `self_attn.k_norm` is not one (a decode report has ~150,000
    // rows; searching each whole name for them cost more).
    let is_norm =
        |base: &str| base.ends_with("self_attn.q_norm") || base.ends_with("self_attn.k_norm");
    let norm_of = |row: Row<'_>| -> Option<(QkKind, String)> {
        if !is_norm(row.base()) {
            return None;
        }
        let name = row.name();
        match Op::of(&name) {
            Op::QkNorm(kind) => Some((kind, name.into_owned())),
            _ => None,
        }
    };
    let len = ops.row_count();
    // A norm's projection is looked for among the rows near it (a dump lists them a few rows
    // apart, in every step); the map of every projection is built only if one is not there.
    // (A row named as the projection is the projection: no need to parse the others.)
    let by_name: OnceLock<HashMap<String, usize>> = OnceLock::new();
    let proj_of = |i: usize, name: &str| -> Option<Row<'_>> {
        // Nearest first (the projection is usually a row or two before its norm): each row
        // looked at is a cache miss in a decode report's ~150,000 rows. Names are unique, so
        // the order does not change what is found.
        let found = (1..=NEAR)
            .flat_map(|d| [i.checked_sub(d), i.checked_add(d)])
            .flatten()
            .filter(|&j| j < len)
            .map(|j| ops.row_at(j))
            .find(|o| o.is_named(name));
        found.or_else(|| {
            let map = by_name.get_or_init(|| {
                (0..len)
                    .filter_map(|j| {
                        let name = ops.row_at(j).name();
                        matches!(Op::of(&name), Op::QkProj(_)).then(|| (name.into_owned(), j))
                    })
                    .collect()
            });
            map.get(name).map(|&j| ops.row_at(j))
        })
    };
    let pair = |op: Row<'_>, proj: Row<'_>, layer, kind, proj_name, name| {
        let (op_rel, proj_rel) = (op.rel_l2_err(), proj.rel_l2_err());
        let (op_diff, proj_diff) = (op.diff_l2(), proj.diff_l2());
        let r = ratio(op_rel, proj_rel);
        // Amplified: the projection's error is material and the norm's is `threshold` times
        // larger. Introduced: the projection's error is at noise level (or exactly 0, where the
        // ratio is undefined) and the norm's is `threshold` times that noise level: the error
        // was made at the norm.
        let noise = amp_noise(proj);
        let verdict = match (op_rel, proj_rel) {
            (Some(_), Some(p)) if p > noise => {
                r.filter(|&x| x > threshold).map(|_| AmpVerdict::Amplified)
            }
            // Above the norm's own rounding too: a bf16 norm whose error is under one bf16
            // rounding made none to speak of (a held-out check: a clean bf16 run read
            // "introduced" from a k_norm error of 9.8e-5 after an exact k_proj).
            (Some(n), Some(_)) => {
                (n > (threshold * noise).max(noise_floor(op))).then_some(AmpVerdict::Introduced)
            }
            _ => None,
        };
        AmplificationRow {
            layer,
            kind,
            proj: proj_name,
            norm: name,
            proj_rel_err: proj_rel,
            norm_rel_err: op_rel,
            ratio: r,
            proj_abs_err: proj_diff,
            norm_abs_err: op_diff,
            abs_err_gain: ratio(op_diff, proj_diff),
            weight_gain: weight_gains.get(&(layer, kind)).copied(),
            verdict,
            marked: verdict == Some(AmpVerdict::Amplified),
        }
    };
    // A pair needs both rows compared: a norm or projection in one dump only (a
    // TransformerLens dump holds no norm's output; llama.cpp's keeps no q projection) gave
    // rows of dashes under "k rows, and q rows over the ratio" (a newcomer's check).
    let compared = |r: Row<'_>| r.status().is_compared();
    // The row of norm `i`, found by its name.
    let one = |i: usize| -> Option<AmplificationRow> {
        let op = ops.row_at(i);
        if !compared(op) {
            return None;
        }
        let (kind, name) = norm_of(op)?;
        let (Some(layer), Some(proj_name)) = (
            op.layer(),
            divergence_names::sibling(&name, Op::QkProj(kind)),
        ) else {
            return None;
        };
        let proj = proj_of(i, &proj_name).filter(|&p| compared(p))?;
        Some(pair(
            op,
            proj,
            layer,
            kind,
            StepName::from(proj_name),
            StepName::from(name),
        ))
    };
    // One row per norm, in row order (28 layers x 2 norms x every step).
    let rows: Vec<AmplificationRow> = match ops.parts() {
        None => (0..len).into_par_iter().filter_map(one).collect(),
        Some(parts) => {
            // A run of decode steps is one probe: its name is parsed and its projection's run
            // found once, not per step (~14,000 norm steps among ~150,000 rows, each a name
            // to write and parse and ~16 rows to look through). The rows stored whole go
            // the way above.
            let mut runs_of: HashMap<&str, Vec<&crate::rows::StepRun>> = HashMap::new();
            for run in parts.runs {
                runs_of.entry(run.base()).or_default().push(run);
            }
            // The runs of norms, each with its kind and its projection's name and runs. A
            // base that ends so has no step of its own (no `@` and digits at its end): each
            // step's name parses as its base does, and its projection's name is the base's
            // projection's at the step.
            let norms: Vec<_> = parts
                .runs
                .iter()
                .filter(|run| is_norm(run.base()))
                .filter_map(|run| match Op::of(run.base()) {
                    Op::QkNorm(kind) => {
                        let proj = divergence_names::sibling(run.base(), Op::QkProj(kind))?;
                        let projs = runs_of.get(proj.as_str());
                        Some((run, kind, Name::from(proj), projs))
                    }
                    _ => None,
                })
                .collect();
            // Every row that may be a norm's, in row order: the rows stored whole, and each
            // norm run's steps kept compact (a step stored whole is one of the plain rows).
            // Sorted as keys, so that each row is made in its place (the rows come run by
            // run; sorting the rows themselves moved ~200 bytes a swap).
            // (A row stored whole has no run: `PLAIN` in place of a norm run's number.)
            const PLAIN: u32 = u32::MAX;
            let mut at: Vec<(usize, u32, u32)> = parts
                .plain
                .iter()
                .map(|&i| (i as usize, PLAIN, 0))
                .collect();
            for (n, (run, ..)) in norms.iter().enumerate() {
                let n = u32::try_from(n).expect("fewer than 2^32 runs");
                at.extend((0..run.steps()).filter_map(|k| {
                    let i = run.row_of(k)?;
                    // This run's own step (a step stored whole is a plain row).
                    let compact = |row| {
                        matches!(row, Row::Step(r, _, kk) if std::ptr::eq(r, *run) && kk == k)
                    };
                    // (A run holds fewer than 2^32 steps: its cells number them in a u32.)
                    let k = u32::try_from(k).expect("fewer than 2^32 steps");
                    compact(ops.row_at(i)).then_some((i, n, k))
                }));
            }
            at.par_sort_unstable();
            at.into_par_iter()
                .filter_map(|(i, n, k)| {
                    let Some((run, kind, proj_base, projs)) = norms.get(n as usize) else {
                        return one(i);
                    };
                    let op = ops.row_at(i);
                    let step = run.first() + k as usize;
                    // (A step kept compact is never step 0, whose name is its base: read by
                    // name, were it one.)
                    if step == 0 {
                        return one(i);
                    }
                    let layer = op.layer()?;
                    let proj = projs
                        .and_then(|ps| ps.iter().find_map(|p| p.row_of_step(step)))
                        .map(|j| ops.row_at(j))
                        // (a step of the run stored whole under a name of its own is not it:
                        // found by a review)
                        .filter(|p| p.split() == (&**proj_base, step))
                        .or_else(|| proj_of(i, &divergence_names::step_name(proj_base, step)))?;
                    // The names by their parts: no string a row (~14,300 of them).
                    let (proj_name, name) = (
                        StepName::new(proj_base.clone(), step),
                        StepName::new(run.base.clone(), step),
                    );
                    Some(pair(op, proj, layer, *kind, proj_name, name))
                })
                .collect()
        }
    };
    let (marked, introduced) = counts(&rows);
    Amplification {
        threshold,
        marked,
        introduced,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{OpResult, Status};

    fn row(name: &str, rel: f64) -> OpResult {
        let mut o = OpResult::bare(name, Status::Ok, None);
        o.errors.rel_l2_err = Some(rel);
        o.rule.diff_l2 = Some(rel);
        o
    }

    fn bf16(mut o: OpResult) -> OpResult {
        o.tensor_mut().dtype_ours = Some(crate::compare::dtype_name("bfloat16"));
        o.tensor_mut().dtype_ref = Some(crate::compare::dtype_name("bfloat16"));
        o
    }

    /// An exact projection and a norm whose error is under one rounding of its own dtype: no
    /// verdict (a clean bf16 run read `introduced`, 9.8e-5 at k_norm); above it, `introduced`.
    #[test]
    fn introduced_only_above_the_norms_own_rounding() {
        let verdict = |norm_err: f64| {
            let ops = vec![
                bf16(row("model.layers.0.self_attn.k_proj", 0.0)),
                bf16(row("model.layers.0.self_attn.k_norm", norm_err)),
            ];
            amplification(&ops, 10.0, &NormWeightGains::new()).rows[0].verdict
        };
        assert_eq!(verdict(9.8e-5), None);
        assert_eq!(verdict(0.5), Some(AmpVerdict::Introduced));
    }

    /// A pair needs both rows compared: a norm or a projection in one dump only makes no row
    /// (a newcomer's check: a TransformerLens dump, which holds no norm's output, read a table
    /// of dashes).
    #[test]
    fn a_pair_with_a_row_in_one_dump_only_makes_no_row() {
        let one_sided = |name: &str, status| OpResult::bare(name, status, None);
        let rows = |ops: Vec<OpResult>| amplification(&ops, 10.0, &NormWeightGains::new()).rows;
        let both = vec![
            row("model.layers.0.self_attn.k_proj", 1e-3),
            row("model.layers.0.self_attn.k_norm", 2e-2),
        ];
        assert_eq!(rows(both).len(), 1);
        for status in [Status::OnlyRef, Status::OnlyOurs, Status::Unreadable] {
            let no_norm = vec![
                row("model.layers.0.self_attn.k_proj", 1e-3),
                one_sided("model.layers.0.self_attn.k_norm", status),
            ];
            assert!(rows(no_norm).is_empty(), "{status:?}");
            let no_proj = vec![
                one_sided("model.layers.0.self_attn.k_proj", status),
                row("model.layers.0.self_attn.k_norm", 2e-2),
            ];
            assert!(rows(no_proj).is_empty(), "{status:?}");
        }
    }

    /// A norm the hints find at fault itself (not applied, another scale, ...) made its error:
    /// `introduced`, unmarked, whatever its projection carried; another hint changes nothing.
    #[test]
    fn a_norm_at_fault_by_its_hint_introduced_the_error() {
        use crate::hints::{Hint, HintCode};
        let ops = vec![
            row("model.layers.3.self_attn.k_proj", 3.4e-6),
            row("model.layers.3.self_attn.k_norm", 0.65),
            row("model.layers.3.self_attn.q_proj", 3.0e-6),
            row("model.layers.3.self_attn.q_norm", 0.1),
        ];
        let amp = amplification(&ops, 10.0, &NormWeightGains::new());
        assert_eq!((amp.marked, amp.introduced), (2, 0));
        let hint = |code, op: &str| Hint {
            code,
            op: op.to_string(),
            message: String::new(),
            evidence: Default::default(),
        };
        let mut same = amp.clone();
        same.made_at_the_norm(
            &[
                hint(HintCode::Position, "model.layers.3.self_attn.k_norm"),
                hint(HintCode::SkippedOp, "model.layers.3.self_attn.k_proj"),
            ],
            &|_| None,
        );
        assert_eq!(same, amp);
        let mut made = amp.clone();
        made.made_at_the_norm(
            &[hint(HintCode::SkippedOp, "model.layers.3.self_attn.k_norm")],
            &|_| None,
        );
        assert_eq!((made.marked, made.introduced), (1, 1));
        let k = made
            .rows
            .iter()
            .find(|r| r.kind == QkKind::K)
            .expect("k row");
        assert_eq!((k.verdict, k.marked), (Some(AmpVerdict::Introduced), false));
        assert_eq!(
            k.ratio,
            amp.rows.iter().find(|r| r.kind == QkKind::K).unwrap().ratio
        );
        // under the norm's own noise floor, no flip
        let mut under = amp.clone();
        under.made_at_the_norm(
            &[hint(HintCode::Rounding, "model.layers.3.self_attn.k_norm")],
            &|_| Some(0.7),
        );
        assert_eq!(under, amp);
        // a hint at one decode step reads for the norm's every step
        let steps: Vec<OpResult> = (1..=3)
            .flat_map(|s| {
                [
                    row(&format!("model.layers.3.self_attn.k_proj@{s}"), 3.4e-6),
                    row(&format!("model.layers.3.self_attn.k_norm@{s}"), 0.65),
                ]
            })
            .collect();
        let mut amp = amplification(&steps, 10.0, &NormWeightGains::new());
        assert_eq!((amp.marked, amp.introduced), (3, 0));
        amp.made_at_the_norm(
            &[hint(
                HintCode::SkippedOp,
                "model.layers.3.self_attn.k_norm@2",
            )],
            &|_| None,
        );
        assert_eq!((amp.marked, amp.introduced), (0, 3));
    }

    #[test]
    fn a_projection_far_from_its_norm_is_still_paired() {
        // k_proj next to k_norm (found nearby), q_proj 40 rows before q_norm (found in the
        // map of every projection), a norm without a projection (no row).
        let mut ops = vec![row("model.layers.0.self_attn.q_proj", 1e-3)];
        ops.extend((0..40).map(|i| row(&format!("filler.{i}"), 0.0)));
        ops.push(row("model.layers.0.self_attn.k_proj", 1e-3));
        ops.push(row("model.layers.0.self_attn.k_norm", 5e-2));
        ops.push(row("model.layers.0.self_attn.q_norm", 2e-3));
        ops.push(row("model.layers.1.self_attn.k_norm", 5e-2));
        let amp = amplification(&ops, 10.0, &NormWeightGains::new());
        let pairs: Vec<(String, String, Option<f64>)> = amp
            .rows
            .iter()
            .map(|r| (r.proj.whole(), r.norm.whole(), r.ratio))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "model.layers.0.self_attn.k_proj".to_string(),
                    "model.layers.0.self_attn.k_norm".to_string(),
                    Some(5e-2 / 1e-3)
                ),
                (
                    "model.layers.0.self_attn.q_proj".to_string(),
                    "model.layers.0.self_attn.q_norm".to_string(),
                    Some(2e-3 / 1e-3)
                ),
            ]
        );
        assert_eq!((amp.marked, amp.introduced), (1, 0));
    }
}
