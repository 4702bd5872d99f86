//! Amplification through `q_norm` / `k_norm`: does a small error going into the norm come out large?
//!
//! Qwen3 applies RMSNorms over head_dim to q and k before RoPE; real k_norm weights are large (up to
//! ~96 in Qwen3-0.6B layer 0), so an error that is tiny at `k_proj` can be much larger after `k_norm`.
//! Per layer and per q/k we pair `<prefix>.{q,k}_proj` with `<prefix>.{q,k}_norm` and report both
//! relative L2 errors, their ratio, and the absolute error gain `||Δ norm|| / ||Δ proj||`. A pair whose
//! ratio exceeds `DiffConfig::amplification_threshold` is marked.

use std::collections::{BTreeMap, HashMap};

use divergence_names::{Op, QkKind};
use serde::{Deserialize, Serialize};

use crate::compare::OpResult;

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
    /// Name of the projection op (`model.layers.0.self_attn.k_proj`): the norm's input side.
    pub proj: String,
    /// Name of the norm op (`model.layers.0.self_attn.k_norm`): the output side.
    pub norm: String,
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
    /// True when `ratio > threshold`.
    pub marked: bool,
}

/// The amplification section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amplification {
    /// Ratio above which a row is marked.
    pub threshold: f64,
    /// Number of marked rows.
    pub marked: usize,
    /// One row per (layer, q/k) pair with both ops present, in the norm ops' execution order.
    pub rows: Vec<AmplificationRow>,
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d).filter(|x| x.is_finite()),
        _ => None,
    }
}

/// Builds the section from the rows (in execution order). `weight_gains` holds the max |weight|
/// of each layer's norms, when the checkpoint was read.
pub fn amplification(
    ops: &[OpResult],
    threshold: f64,
    weight_gains: &NormWeightGains,
) -> Amplification {
    let by_name: HashMap<&str, &OpResult> = ops.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut rows = Vec::new();
    for op in ops {
        let Op::QkNorm(kind) = Op::of(&op.name) else {
            continue;
        };
        let (Some(layer), Some(proj_name)) = (
            op.layer,
            divergence_names::sibling(&op.name, Op::QkProj(kind)),
        ) else {
            continue;
        };
        let Some(proj) = by_name.get(proj_name.as_str()) else {
            continue;
        };
        let r = ratio(op.rel_l2_err, proj.rel_l2_err);
        rows.push(AmplificationRow {
            layer,
            kind,
            proj: proj_name,
            norm: op.name.clone(),
            proj_rel_err: proj.rel_l2_err,
            norm_rel_err: op.rel_l2_err,
            ratio: r,
            proj_abs_err: proj.diff_l2,
            norm_abs_err: op.diff_l2,
            abs_err_gain: ratio(op.diff_l2, proj.diff_l2),
            weight_gain: weight_gains.get(&(layer, kind)).copied(),
            marked: r.is_some_and(|x| x > threshold),
        });
    }
    let marked = rows.iter().filter(|r| r.marked).count();
    Amplification {
        threshold,
        marked,
        rows,
    }
}
