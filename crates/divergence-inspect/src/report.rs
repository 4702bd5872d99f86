//! The inspect report: findings, per-layer norm gains and per-tensor statistics.
//!
//! Plain data (Serialize + Deserialize), produced by [`inspect`](crate::inspect) and consumed
//! by the renderers in [`render`](crate::render). The JSON output is this struct, field for
//! field.

use divergence_names::QkKind;
use serde::{Deserialize, Serialize};

/// How bad a finding is. `Error` and `Warning` make the report "flagged" (exit 1);
/// `Info` never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The checkpoint is wrong for this config: a port that loads it as-is computes garbage.
    Error,
    /// Suspicious: probably a loader or export problem, worth a look before blaming kernels.
    Warning,
    /// Worth knowing while debugging (e.g. a k_norm gain of 96.5); not a defect.
    Info,
}

impl Severity {
    /// "error", "warning" or "info".
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// What kind of problem a finding is about (stable names for JSON consumers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// NaN or ±Inf values in a tensor.
    NonFinite,
    /// Finite values with |x| above the `max_abs` threshold.
    ExtremeValue,
    /// A tensor the config does not use (e.g. a bias while `attention_bias` is false).
    UnusedTensor,
    /// A tensor the config needs is absent.
    MissingTensor,
    /// A tensor's shape contradicts the config.
    ShapeMismatch,
    /// A tensor's shape is the transpose of what the config implies.
    Transposed,
    /// `lm_head.weight` and `tie_word_embeddings` disagree.
    TiedEmbeddings,
    /// A q_norm / k_norm weight large enough to amplify upstream errors.
    HighNormGain,
    /// The same tensor name in two shards.
    DuplicateTensor,
    /// `model.safetensors.index.json` and the shards disagree.
    IndexMismatch,
    /// A file of the checkpoint directory that is not read (`model.safetensors.index.json`
    /// next to `model.safetensors`, a `*.safetensors` the index does not name).
    IgnoredFile,
    /// Statistics not computed for this dtype (e.g. FP8).
    UnsupportedDtype,
    /// Something about config.json itself (unknown model_type, missing or defaulted fields).
    Config,
}

impl FindingKind {
    /// The snake_case name used in JSON (`"unused_tensor"`).
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::NonFinite => "non_finite",
            FindingKind::ExtremeValue => "extreme_value",
            FindingKind::UnusedTensor => "unused_tensor",
            FindingKind::MissingTensor => "missing_tensor",
            FindingKind::ShapeMismatch => "shape_mismatch",
            FindingKind::Transposed => "transposed",
            FindingKind::TiedEmbeddings => "tied_embeddings",
            FindingKind::HighNormGain => "high_norm_gain",
            FindingKind::DuplicateTensor => "duplicate_tensor",
            FindingKind::IndexMismatch => "index_mismatch",
            FindingKind::IgnoredFile => "ignored_file",
            FindingKind::UnsupportedDtype => "unsupported_dtype",
            FindingKind::Config => "config",
        }
    }
}

/// At most this many findings of one [`FindingKind`] are kept in a [`Report`] (and so in its
/// JSON); the rest are counted in [`Report::findings_left_out`]. Bounds the report of a
/// checkpoint with, say, 100,000 unused tensors.
pub const MAX_FINDINGS_PER_KIND: usize = 1000;

/// Findings of one kind left out of [`Report::findings`] (beyond [`MAX_FINDINGS_PER_KIND`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub kind: FindingKind,
    pub count: usize,
}

/// One thing the lint has to say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    /// The tensor concerned, or `None` for checkpoint-wide findings.
    pub tensor: Option<String>,
    /// One lowercase sentence (or two, separated by ": ") saying what is wrong and what it means.
    pub message: String,
}

/// Streaming statistics of one tensor, accumulated in f64.
///
/// `min`, `max`, `mean`, `std` and `max_abs` are over the finite values only (NaN and ±Inf are
/// counted separately); they are `None` when the tensor has no finite value. `std` is the
/// population standard deviation (divide by n).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    pub count: u64,
    pub nan: u64,
    pub pos_inf: u64,
    pub neg_inf: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub max_abs: Option<f64>,
}

impl TensorStats {
    /// NaN + ±Inf count.
    pub fn non_finite(&self) -> u64 {
        self.nan + self.pos_inf + self.neg_inf
    }
}

/// One tensor of the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorReport {
    pub name: String,
    /// The shard file (file name only) that holds it.
    pub file: String,
    /// safetensors dtype name: "BF16", "F32", "I64", ...
    pub dtype: String,
    pub shape: Vec<usize>,
    /// `None` for dtypes whose values are not decoded (FP8, FP4, complex).
    pub stats: Option<TensorStats>,
    /// True if an error or warning finding names this tensor.
    pub flagged: bool,
}

/// Summary statistics of one norm weight vector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NormStat {
    /// max |w|: the largest per-channel gain of the norm.
    pub max_abs: f64,
    pub mean: f64,
    pub std: f64,
}

/// The norm weights of one decoder layer.
///
/// The `max_abs` of `q_norm` / `k_norm` is the factor by which an error in q / k before the
/// norm can come out larger after it (relative to a unit-gain norm): RMSNorm divides by the
/// RMS, then multiplies channel `i` by `w[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerGains {
    pub layer: usize,
    pub input_layernorm: Option<NormStat>,
    pub post_attention_layernorm: Option<NormStat>,
    pub q_norm: Option<NormStat>,
    pub k_norm: Option<NormStat>,
}

impl LayerGains {
    /// max |w| of this layer's q_norm, if it has one.
    pub fn q_gain(&self) -> Option<f64> {
        self.q_norm.map(|n| n.max_abs)
    }

    /// max |w| of this layer's k_norm, if it has one.
    pub fn k_gain(&self) -> Option<f64> {
        self.k_norm.map(|n| n.max_abs)
    }

    /// max |w| of this layer's q_norm or k_norm.
    pub fn qk_gain(&self, kind: QkKind) -> Option<f64> {
        match kind {
            QkKind::Q => self.q_gain(),
            QkKind::K => self.k_gain(),
        }
    }
}

/// The parts of config.json the checks used, after defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub model_type: Option<String>,
    pub hidden_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub vocab_size: Option<usize>,
    pub attention_bias: bool,
    /// `None` (null) when config.json's value is malformed (a `config` error).
    pub tie_word_embeddings: Option<bool>,
}

/// Counts over the whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: usize,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
    /// Findings by severity, including those left out of `findings`.
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    pub flagged_tensors: usize,
}

/// Thresholds the report was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Finite values with |x| above this are flagged as extreme.
    pub max_abs: f64,
    /// q_norm / k_norm gains above this get an info note.
    pub norm_gain: f64,
}

/// Everything `divergence inspect` found out about a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The directory (or file) inspected, as given.
    pub path: String,
    /// The safetensors files read (file names, in reading order).
    pub files: Vec<String>,
    pub config: Option<ConfigSummary>,
    pub thresholds: Thresholds,
    /// Sorted by severity (errors first), then tensor name in natural order; at most
    /// [`MAX_FINDINGS_PER_KIND`] of each kind (the first in this order).
    pub findings: Vec<Finding>,
    /// Per kind, the findings beyond [`MAX_FINDINGS_PER_KIND`] not listed in `findings` (still
    /// counted in `summary`); empty for almost every checkpoint.
    #[serde(default)]
    pub findings_left_out: Vec<LeftOut>,
    /// One entry per layer index that has at least one norm weight, in layer order.
    pub layers: Vec<LayerGains>,
    /// Every tensor, in natural name order.
    pub tensors: Vec<TensorReport>,
    pub summary: Summary,
}

impl Report {
    /// True if any finding is an error or a warning: `divergence inspect` then exits 1.
    pub fn flagged(&self) -> bool {
        self.findings.iter().any(|f| f.severity != Severity::Info)
    }

    /// How many findings of `kind` exist in all: those in `findings` and those left out.
    pub fn finding_count(&self, kind: FindingKind) -> usize {
        let listed = self.findings.iter().filter(|f| f.kind == kind).count();
        let left_out: usize = self
            .findings_left_out
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| l.count)
            .sum();
        listed + left_out
    }

    /// Findings that name `tensor`.
    pub fn findings_for<'a>(&'a self, tensor: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings
            .iter()
            .filter(move |f| f.tensor.as_deref() == Some(tensor))
    }
}
