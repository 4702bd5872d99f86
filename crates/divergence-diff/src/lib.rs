//! `divergence-diff`: the pure diff engine of `divergence`.
//!
//! Given the two sides of every probe (already read by the caller), it computes per-op metrics in
//! f64, decides per op whether it diverges ([`DECISION_RULE`]), plans the execution order
//! ([`plan_order`]), finds the first divergence and the q/k-norm amplification, and assembles a
//! serializable [`Report`].
//!
//! Architecture invariants: this crate does no I/O and never returns an error. A probe that is
//! missing on one side, unreadable, misshapen or full of NaN is a row with a status, not an `Err`.
//! It does not depend on `divergence-dump`; the caller passes plain slices ([`Side`]).
//!
//! Typical use (the CLI):
//! ```
//! use divergence_diff::*;
//! let names = vec!["a".to_string()];
//! let plan = plan_order(
//!     &DumpNames { meta_order: None, names: &names, file_order_preserved: true },
//!     &DumpNames { meta_order: None, names: &names, file_order_preserved: true },
//! );
//! let cfg = DiffConfig::default();
//! let (o, r) = ([1.0f32, 2.0], [1.0f32, 2.0]);
//! let ops = vec![compare(
//!     "a",
//!     Some(Side { shape: &[2], values: ValuesRef::F32(&o), dtype: "float32" }),
//!     Some(Side { shape: &[2], values: ValuesRef::F32(&r), dtype: "float32" }),
//!     &cfg,
//! )];
//! let report = assemble(ops, ReportContext::new("ours.npz", "ref.npz", plan.source), &cfg);
//! assert!(!report.has_divergence());
//! ```

pub mod amplification;
pub mod compare;
pub mod metrics;
pub mod order;
pub mod report;
pub mod tolerance;

pub use amplification::{Amplification, AmplificationRow, NormWeightGains};
pub use compare::{compare, sci, unreadable, OpResult, Side, Status, Which};
pub use divergence_names::QkKind;
pub use metrics::ValuesRef;
pub use order::{natural_cmp, plan_order, DumpNames, OrderPlan, OrderSource};
pub use report::{assemble, FirstDivergence, Report, ReportContext, Summary, SCHEMA};
pub use tolerance::{DTypeClass, Preset, Tolerance, DECISION_RULE, PRESETS, REL_ERR_GUARD_MIN};

/// Default ratio above which an amplification row is marked.
pub const DEFAULT_AMPLIFICATION_THRESHOLD: f64 = 10.0;

/// Settings of one diff run (a config struct rather than boolean parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffConfig {
    /// How ops are judged (CLI: `--rtol`, `--atol`, `--exact`).
    pub tolerance: Tolerance,
    /// `norm rel err / proj rel err` above which an amplification row is marked (default 10).
    pub amplification_threshold: f64,
    /// Elements per rayon task in the metrics loop; a tensor longer than this is split into chunks
    /// processed in parallel. A tuning knob only: results do not depend on it beyond f64 rounding.
    pub chunk_len: usize,
}

impl Default for DiffConfig {
    fn default() -> Self {
        DiffConfig {
            tolerance: Tolerance::Auto,
            amplification_threshold: DEFAULT_AMPLIFICATION_THRESHOLD,
            chunk_len: metrics::DEFAULT_CHUNK_LEN,
        }
    }
}
