//! The lint rules: values (NaN / Inf / extreme magnitudes), structure against config.json
//! (unused, missing, mis-shaped and transposed tensors, tied embeddings) and norm gains.
//!
//! Every rule returns findings; none fails.

use std::collections::HashMap;

use crate::config::{expected_tensors, unused_reason, Dims, Expected, ModelConfig};
use crate::report::{Finding, FindingKind, LayerGains, Severity, TensorStats};
use crate::Entry;
use divergence_checkpoint::Dtype;

fn finding(severity: Severity, kind: FindingKind, tensor: &str, message: String) -> Finding {
    Finding {
        severity,
        kind,
        tensor: Some(tensor.to_string()),
        message,
    }
}

/// Formats a number for messages: plain for everyday magnitudes, scientific otherwise.
pub(crate) fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 {
        "0".to_string()
    } else if (1e-3..1e5).contains(&a) {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{x:.3e}")
    }
}

/// NaN / ±Inf and extreme finite values in one tensor.
pub(crate) fn check_values(name: &str, stats: &TensorStats, max_abs: f64) -> Vec<Finding> {
    let mut out = Vec::new();
    if stats.non_finite() > 0 {
        let mut parts = Vec::new();
        for (n, what) in [
            (stats.nan, "NaN"),
            (stats.pos_inf, "+Inf"),
            (stats.neg_inf, "-Inf"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        out.push(finding(
            Severity::Error,
            FindingKind::NonFinite,
            name,
            format!(
                "non-finite values: {} in {} values; a port that loads this tensor computes NaN",
                parts.join(", "),
                stats.count
            ),
        ));
    }
    if let Some(m) = stats.max_abs.filter(|&m| m > max_abs) {
        out.push(finding(
            Severity::Error,
            FindingKind::ExtremeValue,
            name,
            format!(
                "extreme values: max |x| = {} > {max_abs:e} (--max-abs): garbage weights, e.g. read from the wrong offset or an uninitialised buffer",
                fmt_num(m)
            ),
        ));
    }
    out
}

fn shape_str(shape: &[usize]) -> String {
    let inner: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", inner.join(", "))
}

fn labels(exp: &Expected) -> String {
    let inner: Vec<&str> = exp.dims.iter().map(|d| d.label).collect();
    format!("[{}]", inner.join(", "))
}

/// A shape check of one present tensor.
fn check_shape(exp: &Expected, actual: &[usize], dims: &Dims) -> Option<Finding> {
    let want = exp.shape();
    if actual == want.as_slice() {
        return None;
    }
    let reversed: Vec<usize> = want.iter().rev().copied().collect();
    if want.len() == 2 && want[0] != want[1] && actual == reversed.as_slice() {
        return Some(finding(
            Severity::Error,
            FindingKind::Transposed,
            &exp.name,
            format!(
                "transposed: stored {}, config implies {} = {} (torch Linear weights are [out, in]); a loader that uses it as-is computes with the transpose",
                shape_str(actual),
                shape_str(&want),
                labels(exp)
            ),
        ));
    }
    let mut message = format!(
        "shape {} contradicts config.json: expected {} = {}",
        shape_str(actual),
        shape_str(&want),
        labels(exp)
    );
    // The classic Qwen3 mistake: head_dim derived as hidden / heads instead of read.
    let derived = dims.hidden / dims.heads.max(1);
    if derived != dims.head_dim {
        for (i, d) in exp.dims.iter().enumerate() {
            let heads = if d.label.starts_with("num_attention_heads") {
                dims.heads
            } else if d.label.starts_with("num_key_value_heads") {
                dims.kv_heads
            } else if d.label == "head_dim" {
                1
            } else {
                continue;
            };
            if actual.get(i) == Some(&(heads * derived)) {
                message.push_str(&format!(
                    " (as if head_dim were hidden_size / num_attention_heads = {derived}; config.json says head_dim = {})",
                    dims.head_dim
                ));
                break;
            }
        }
    }
    Some(finding(
        Severity::Error,
        FindingKind::ShapeMismatch,
        &exp.name,
        message,
    ))
}

/// Structural checks of the tensors against a known-family config.
pub(crate) fn check_structure(
    cfg: &ModelConfig,
    dims: &Dims,
    tensors: &[Entry<'_>],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let names: Vec<&str> = tensors.iter().map(|e| e.name.as_str()).collect();
    let prefix = divergence_names::model_prefix(names.iter().copied());
    let by_name: HashMap<&str, &Entry<'_>> = tensors.iter().map(|e| (e.name.as_str(), e)).collect();
    let expected = expected_tensors(cfg, dims, prefix);
    let family = cfg.family.map_or("model", |f| f.name());
    for exp in &expected {
        match by_name.get(exp.name.as_str()) {
            Some(e) => {
                out.extend(check_shape(exp, &e.shape, dims));
                // A weight the config needs stored in another dtype than a float: `run`
                // refuses it (a bad-input hunt: a bool or int8 q_proj read "clean" here).
                if !matches!(
                    e.dtype,
                    Dtype::BF16 | Dtype::F16 | Dtype::F32 | Dtype::F64
                ) {
                    out.push(finding(
                        Severity::Warning,
                        FindingKind::UnsupportedDtype,
                        &exp.name,
                        format!(
                            "dtype {:?} where a {family} model needs a float weight (bf16, f16, f32 or f64): `divergence run` refuses it, and a quantized checkpoint is not understood here",
                            e.dtype
                        ),
                    ));
                }
            }
            None => out.push(finding(
                Severity::Error,
                FindingKind::MissingTensor,
                &exp.name,
                format!(
                    "missing: a {family} model with this config.json needs it (expected shape {} = {}); a loader that skips it runs with uninitialised weights",
                    shape_str(&exp.shape()),
                    labels(exp)
                ),
            )),
        }
    }
    let expected_names: std::collections::HashSet<&str> =
        expected.iter().map(|e| e.name.as_str()).collect();
    let embed_name = format!("{prefix}embed_tokens.weight");
    for e in tensors {
        let name = e.name.as_str();
        if expected_names.contains(name) {
            continue;
        }
        if name == "lm_head.weight" {
            continue; // handled below
        }
        if name.ends_with("rotary_emb.inv_freq") {
            out.push(finding(
                Severity::Info,
                FindingKind::UnusedTensor,
                name,
                "a rotary buffer exported by an old transformers: transformers recomputes it from rope_theta, a port should too".to_string(),
            ));
            continue;
        }
        out.push(finding(
            Severity::Warning,
            FindingKind::UnusedTensor,
            name,
            format!(
                "not used by the config ({}): a port must not apply it",
                unused_reason(cfg, dims, name, |n| {
                    expected_names.contains(n) && !by_name.contains_key(n)
                })
            ),
        ));
    }
    // lm_head and tie_word_embeddings.
    let lm_head = by_name.get("lm_head.weight");
    let embed = by_name.get(embed_name.as_str());
    match (cfg.tie_word_embeddings, lm_head) {
        // Malformed in config.json (a `config` error): whether lm_head is needed is unknown.
        (None, _) => out.push(finding(
            Severity::Info,
            FindingKind::TiedEmbeddings,
            "lm_head.weight",
            "not checked: config.json's tie_word_embeddings is not usable (see the config error)"
                .to_string(),
        )),
        (Some(true), Some(head)) => {
            let same = embed.is_some_and(|emb| {
                emb.dtype == head.dtype && emb.shape == head.shape && emb.data == head.data
            });
            if same {
                out.push(finding(
                    Severity::Info,
                    FindingKind::TiedEmbeddings,
                    "lm_head.weight",
                    format!("tie_word_embeddings is true and lm_head.weight is an exact copy of {embed_name}: harmless"),
                ));
            } else {
                out.push(finding(
                    Severity::Warning,
                    FindingKind::TiedEmbeddings,
                    "lm_head.weight",
                    format!(
                        "tie_word_embeddings is true but lm_head.weight is stored and differs from {embed_name}: transformers uses the embedding as the output projection, so a port must not apply this tensor"
                    ),
                ));
            }
        }
        (Some(false), None) => out.push(finding(
            Severity::Error,
            FindingKind::TiedEmbeddings,
            "lm_head.weight",
            format!(
                "missing: tie_word_embeddings is false, so the model needs its own lm_head.weight; a port that falls back to {embed_name} computes different logits"
            ),
        )),
        (Some(false), Some(head)) => {
            let exp = Expected {
                name: "lm_head.weight".to_string(),
                dims: vec![
                    crate::config::Dim { size: dims.vocab, label: "vocab_size" },
                    crate::config::Dim { size: dims.hidden, label: "hidden_size" },
                ],
            };
            out.extend(check_shape(&exp, &head.shape, dims));
        }
        (Some(true), None) => {}
    }
    out
}

/// Info notes for q_norm / k_norm gains above `threshold`: one per norm kind, naming the
/// layer with the largest gain.
pub(crate) fn check_gains(layers: &[LayerGains], threshold: f64, prefix: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    type Getter = fn(&LayerGains) -> Option<f64>;
    let kinds: [(&str, &str, Getter); 2] = [
        ("k_norm", "k", LayerGains::k_gain),
        ("q_norm", "q", LayerGains::q_gain),
    ];
    for (norm, vec, get) in kinds {
        let with: Vec<(usize, f64)> = layers
            .iter()
            .filter_map(|l| get(l).map(|g| (l.layer, g)))
            .collect();
        let high: Vec<&(usize, f64)> = with.iter().filter(|(_, g)| *g > threshold).collect();
        let Some(&&(layer, gain)) = high.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
            continue;
        };
        out.push(finding(
            Severity::Info,
            FindingKind::HighNormGain,
            &format!("{prefix}layers.{layer}.self_attn.{norm}.weight"),
            format!(
                "{norm} gain up to {} (layer {layer}; {} of {} layers above {}): an error in {vec} before {norm} can come out up to {}x larger after it, so a small upstream error is not a {norm} bug",
                fmt_num(gain),
                high.len(),
                with.len(),
                fmt_num(threshold),
                fmt_num(gain),
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_format() {
        assert_eq!(fmt_num(96.5), "96.5");
        assert_eq!(fmt_num(1e30), "1.000e30");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(-0.01234), "-0.0123");
        assert_eq!(fmt_num(1.0), "1");
    }
}
