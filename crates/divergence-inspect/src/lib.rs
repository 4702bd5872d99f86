//! `divergence_inspect`: lint a checkpoint (config.json + *.safetensors) before blaming the
//! kernels.
//!
//! Half of the "numerical instability" in a port comes from the checkpoint loader, not the
//! math: tensors applied that the config disables, transposed weights, garbage read from the
//! wrong offset. [`inspect`] streams over every tensor (memory-mapped, reduced in parallel
//! chunks without materialising it) and reports
//!
//! - per tensor: dtype, shape, min / max / mean / std and NaN / Inf counts (f64 accumulation),
//!   flagging non-finite values and magnitudes above [`InspectOptions::max_abs`];
//! - against config.json (qwen3, qwen2, llama, mistral): unused tensors (a bias while
//!   `attention_bias` is false: a port must not apply it), missing tensors, shapes that
//!   contradict the config, transposed weights, `lm_head.weight` vs `tie_word_embeddings`;
//! - per layer: the norm weights' gains ([`LayerGains`]); large q_norm / k_norm gains get an
//!   info note, because they amplify any upstream error.
//!
//! [`norm_gains`] reads only the norm weights; `divergence diff --model DIR` uses it to annotate
//! its k_norm amplification section. [`render`] turns a [`Report`] into a table or JSON.
//!
//! Invariant: everything that can be reported is a [`Finding`]; [`InspectError`] is only for
//! input that cannot be read at all.

mod checks;
mod config;
mod error;
mod names;
pub mod render;
mod report;
mod stats;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use divergence_checkpoint::{Anomaly, Checkpoint, Dtype, Layout, Weights};
use divergence_names::QkKind;
use rayon::prelude::*;

pub use crate::error::InspectError;
pub use crate::names::natural_cmp;
pub use crate::report::{
    ConfigSummary, Finding, FindingKind, LayerGains, LeftOut, NormStat, Report, Severity, Summary,
    TensorReport, TensorStats, Thresholds, MAX_FINDINGS_PER_KIND,
};

use crate::names::NormKind;

/// One tensor, borrowed from its shard's memory map.
#[derive(Debug, Clone)]
pub(crate) struct Entry<'a> {
    pub name: String,
    pub shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// Every tensor of `weights` (natural name order), or those whose name `keep` accepts.
fn entries<'a>(weights: &'a Weights, keep: impl Fn(&str) -> bool) -> Vec<Entry<'a>> {
    weights
        .tensors()
        .iter()
        .filter(|t| keep(&t.name))
        .map(|t| Entry {
            name: t.name.clone(),
            shard: t.shard,
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: weights.data(t),
        })
        .collect()
}

/// Findings about which files were read: files the layout leaves out (info) and what the
/// shards and the index disagree about.
fn layout_findings(layout: &Layout, weights: &Weights) -> Vec<Finding> {
    let mut out: Vec<Finding> = layout
        .ignored
        .iter()
        .map(|ignored| Finding {
            severity: Severity::Info,
            kind: FindingKind::IgnoredFile,
            tensor: None,
            message: ignored.to_string(),
        })
        .collect();
    for anomaly in weights.anomalies() {
        let (severity, kind) = match anomaly {
            Anomaly::Duplicate { .. } => (Severity::Error, FindingKind::DuplicateTensor),
            Anomaly::NotInShards { .. } => (Severity::Error, FindingKind::IndexMismatch),
            Anomaly::WrongShard { .. } | Anomaly::NotInIndex { .. } => {
                (Severity::Warning, FindingKind::IndexMismatch)
            }
        };
        out.push(Finding {
            severity,
            kind,
            tensor: Some(anomaly.tensor().to_string()),
            message: anomaly.to_string(),
        });
    }
    out
}

/// Thresholds of the lint.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectOptions {
    /// Finite values with |x| above this are flagged as extreme (error). Default 1e6.
    pub max_abs: f64,
    /// q_norm / k_norm max |w| above this gets an info note. Default 10.
    pub norm_gain: f64,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            max_abs: 1e6,
            norm_gain: 10.0,
        }
    }
}

/// Lints the checkpoint at `path`: a directory with config.json and `model.safetensors`, or
/// shards named by `model.safetensors.index.json`, or else every `*.safetensors` in it (the
/// rule of [`divergence_checkpoint::Layout`], shared with `divergence run`); or one
/// `.safetensors` file with config.json next to it. Files the rule leaves out are info
/// findings.
///
/// Errors only when the input cannot be read (missing path, no config.json, unparsable JSON,
/// corrupt safetensors); everything else is a finding in the report.
pub fn inspect(path: &Path, opts: &InspectOptions) -> Result<Report, InspectError> {
    let Checkpoint {
        layout,
        config,
        weights,
    } = Checkpoint::open(path)?;
    let cfg = config::interpret(&config);
    let shards = weights.shards();
    let entries = entries(&weights, |_| true);
    let mut findings = layout_findings(&layout, &weights);

    let stats: Vec<Option<TensorStats>> = entries
        .par_iter()
        .map(|e| stats::tensor_stats(e.dtype, e.data))
        .collect();

    findings.extend(cfg.notes.iter().cloned());
    for (e, s) in entries.iter().zip(&stats) {
        match s {
            Some(s) => findings.extend(checks::check_values(&e.name, s, opts.max_abs)),
            None => findings.push(Finding {
                severity: Severity::Info,
                kind: FindingKind::UnsupportedDtype,
                tensor: Some(e.name.clone()),
                message: format!("values not decoded for dtype {:?}: no statistics", e.dtype),
            }),
        }
    }
    if let Some(dims) = &cfg.dims {
        findings.extend(checks::check_structure(&cfg, dims, &entries));
    }
    // A needed weight of a dtype `run` refuses is one finding (the warning), not that and the
    // note that its values were not decoded (a review: 28 FP8 weights read 56 findings).
    let refused: std::collections::HashSet<String> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::UnsupportedDtype && f.severity == Severity::Warning)
        .filter_map(|f| f.tensor.clone())
        .collect();
    findings.retain(|f| {
        !(f.kind == FindingKind::UnsupportedDtype
            && f.severity == Severity::Info
            && f.tensor.as_ref().is_some_and(|t| refused.contains(t)))
    });
    let layers = gains_from(&entries, &stats);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    findings.extend(checks::check_gains(
        &layers,
        opts.norm_gain,
        divergence_names::model_prefix(names.iter().copied()),
    ));

    findings.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then_with(|| match (&a.tensor, &b.tensor) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => natural_cmp(x, y),
            })
    });

    let flagged: HashSet<&str> = findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .filter_map(|f| f.tensor.as_deref())
        .collect();
    let tensors: Vec<TensorReport> = entries
        .iter()
        .zip(stats)
        .map(|(e, stats)| TensorReport {
            name: e.name.clone(),
            file: shards[e.shard].file_name.clone(),
            dtype: format!("{:?}", e.dtype),
            shape: e.shape.clone(),
            stats,
            flagged: flagged.contains(e.name.as_str()),
        })
        .collect();
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let summary = Summary {
        files: shards.len(),
        tensors: tensors.len(),
        parameters: entries
            .iter()
            .map(|e| e.shape.iter().product::<usize>() as u64)
            .sum(),
        bytes: entries.iter().map(|e| e.data.len() as u64).sum(),
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        infos: count(Severity::Info),
        flagged_tensors: tensors.iter().filter(|t| t.flagged).count(),
    };
    let (findings, findings_left_out) = cap_per_kind(findings, MAX_FINDINGS_PER_KIND);
    Ok(Report {
        path: path.display().to_string(),
        files: shards.iter().map(|s| s.file_name.clone()).collect(),
        config: Some(cfg.summary),
        thresholds: Thresholds {
            max_abs: opts.max_abs,
            norm_gain: opts.norm_gain,
        },
        findings,
        findings_left_out,
        layers,
        tensors,
        summary,
    })
}

/// Keeps the first `max` findings of each kind (in order) and counts the rest per kind, in
/// the order the kinds first appear.
fn cap_per_kind(findings: Vec<Finding>, max: usize) -> (Vec<Finding>, Vec<LeftOut>) {
    let mut seen: Vec<(FindingKind, usize)> = Vec::new();
    let mut kept = Vec::new();
    for f in findings {
        let i = match seen.iter().position(|(k, _)| *k == f.kind) {
            Some(i) => i,
            None => {
                seen.push((f.kind, 0));
                seen.len() - 1
            }
        };
        seen[i].1 += 1;
        if seen[i].1 <= max {
            kept.push(f);
        }
    }
    let left_out = seen
        .into_iter()
        .filter(|&(_, n)| n > max)
        .map(|(kind, n)| LeftOut {
            kind,
            count: n - max,
        })
        .collect();
    (kept, left_out)
}

/// The norm weights of every decoder layer of the checkpoint at `path` (same layouts as
/// [`inspect`]; config.json is not needed), in layer order. Only the norm tensors are read.
///
/// For the diff command: `layer.k_gain()` is the max |w| of `model.layers.N.self_attn.k_norm`,
/// the factor by which an error in k before k_norm can come out larger after it.
pub fn norm_gains(path: &Path) -> Result<Vec<LayerGains>, InspectError> {
    let weights = Weights::open(&Layout::locate(path)?)?;
    let norms = entries(&weights, |name| names::layer_norm(name).is_some());
    let stats: Vec<Option<TensorStats>> = norms
        .par_iter()
        .map(|e| stats::tensor_stats(e.dtype, e.data))
        .collect();
    Ok(gains_from(&norms, &stats))
}

/// The max |w| of every layer's q_norm / k_norm of the checkpoint at `path`, keyed as the diff
/// report's amplification section wants them: what `divergence diff --model DIR` annotates.
pub fn qk_norm_gains(path: &Path) -> Result<BTreeMap<(usize, QkKind), f64>, InspectError> {
    Ok(qk_gains(&norm_gains(path)?))
}

/// The max |w| of each layer's q_norm / k_norm among `layers` ([`norm_gains`]), keyed as
/// [`qk_norm_gains`] keys them.
pub fn qk_gains(layers: &[LayerGains]) -> BTreeMap<(usize, QkKind), f64> {
    let mut out = BTreeMap::new();
    for g in layers {
        for kind in [QkKind::Q, QkKind::K] {
            if let Some(gain) = g.qk_gain(kind) {
                out.insert((g.layer, kind), gain);
            }
        }
    }
    out
}

/// Groups the stats of the norm weights among `entries` by layer.
fn gains_from(entries: &[Entry<'_>], stats: &[Option<TensorStats>]) -> Vec<LayerGains> {
    let mut layers: BTreeMap<usize, LayerGains> = BTreeMap::new();
    for (e, s) in entries.iter().zip(stats) {
        let (Some((layer, kind)), Some(s)) = (names::layer_norm(&e.name), s) else {
            continue;
        };
        let (Some(max_abs), Some(mean), Some(std)) = (s.max_abs, s.mean, s.std) else {
            continue;
        };
        let stat = Some(NormStat { max_abs, mean, std });
        let g = layers.entry(layer).or_insert(LayerGains {
            layer,
            input_layernorm: None,
            post_attention_layernorm: None,
            q_norm: None,
            k_norm: None,
        });
        match kind {
            NormKind::Input => g.input_layernorm = stat,
            NormKind::PostAttention => g.post_attention_layernorm = stat,
            NormKind::Q => g.q_norm = stat,
            NormKind::K => g.k_norm = stat,
        }
    }
    layers.into_values().collect()
}
