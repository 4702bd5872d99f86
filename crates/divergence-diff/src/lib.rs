//! `divergence-diff`: the pure diff engine of `divergence`.
//!
//! Given the two sides of every probe (already read by the caller), it computes per-op metrics in
//! f64, decides per op whether it diverges ([`decision_rule`]), plans the execution order
//! ([`plan_order`]), finds the first divergence, where its error was born ([`origin`]) and the
//! q/k-norm amplification, and assembles a serializable [`Report`].
//!
//! Architecture invariants: this crate does no I/O and never returns an error. A probe that is
//! missing on one side, unreadable, misshapen or full of NaN is a row with a status, not an `Err`.
//! It does not depend on `divergence-dump`; the caller passes plain slices ([`Side`]).
//!
//! Typical use (the CLI):
//! ```
//! use divergence_diff::*;
//! let names: NameList = vec![Name::from("a")].into();
//! let dump = DumpNames {
//!     meta_order: None,
//!     names: &names,
//!     file_order_preserved: true,
//!     single_tensor_file: false,
//! };
//! let plan = plan_order(&dump, &dump);
//! // --rtol 1e-2 (the preset's atol stays)
//! let cfg = DiffConfig {
//!     tolerance: Tolerance::from_flags(false, Some(1e-2), None, None),
//!     ..DiffConfig::default()
//! };
//! let (o, r) = ([1.0f32, 2.0], [1.0f32, 2.0]);
//! let ops = vec![compare(
//!     "a", // plan.ours_name("a") is the name to read from ours
//!     Some(Side { shape: &[2], values: ValuesRef::F32(&o), dtype: "float32" }),
//!     Some(Side { shape: &[2], values: ValuesRef::F32(&r), dtype: "float32" }),
//!     &cfg,
//! )];
//! let report = assemble(ops, ReportContext::new("ours.npz", "ref.npz", plan.source), &cfg);
//! assert!(!report.has_divergence());
//! ```

pub mod align;
pub mod amplification;
pub mod attention;
pub mod compare;
pub mod config;
pub mod hints;
pub mod layout;
pub mod metrics;
pub mod order;
pub mod origin;
pub mod positions;
pub mod report;
pub mod rows;
pub mod tokens;
pub mod tolerance;

pub use align::{align, Confidence, Pair, TensorStats, ValueStats};
pub use amplification::{AmpVerdict, Amplification, AmplificationRow, NormWeightGains};
pub use compare::{
    compare, compare_step_pieces_into, compare_step_run, compare_step_run_into, compare_steps,
    compare_with_truth, dtype_name, last_logit_rows, not_made, ratio_text, sci, shapes_align,
    unreadable, DtypeName, ErrorMetrics, Head, Index, LastRows, Needs, NonFiniteCounts, OpResult,
    ProbeFold, RuleTerms, Side, Status, StepNames, StepSide, StepValues, TensorInfo, TruthMetrics,
    Which, ENVELOPE_MAX_OVER, ENVELOPE_MIN_STEPS, LOGITS,
};
pub use config::{DiffConfig, DEFAULT_AMPLIFICATION_THRESHOLD};
pub use divergence_names::QkKind;
pub use divergence_names::{Name, NameList, StepName};
pub use hints::{diagnose, diagnose_decode, DecodeSubject, Hint, HintCode, ModelShape, Subject};
pub use layout::{layout_match, layout_work, LayoutMatch};
pub use metrics::{Gather, Piece, ValuesRef};
pub use order::{natural_cmp, plan_order, plan_order_from, DumpNames, OrderPlan, OrderSource};
pub use origin::{
    ChainLink, EarlierStep, Measure, Origin, Role, UnmeasuredInput, BIRTH_GROWTH,
    EARLIER_NOISE_TIMES, TRUTH_BIRTH,
};
pub use positions::{
    across_steps, position_axis, position_profile, prefill_axis, token_axis, PositionPattern,
    PositionProfile,
};
pub use report::{
    assemble, step_summaries, FirstDifference, FirstDivergence, JudgedWith, Report, ReportContext,
    SideNames, StepSummary, Summary, SCHEMA,
};
pub use rows::{
    Row, RowSink, RowSource, Rows, RowsBuilder, StepParts, StepRows, StepRun, StepSums,
};
pub use tokens::{
    merge_steps, step_logits, token_effect, Flip, PositionTokens, StepLogits, StepTokens,
    TokenEffect,
};
pub use tolerance::{
    decision_rule, truth_floor, truth_rule, unit_roundoff, DTypeClass, Preset, Tolerance,
    DEFAULT_NOISE_RATIO, F32_TRUTH_FLOOR, PRESETS, REL_ERR_GUARD_MIN, TRUTH_MAX_REF_ERR,
};
