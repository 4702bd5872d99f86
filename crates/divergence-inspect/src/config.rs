//! `config.json` as `divergence inspect` reads it: the parsed [`Config`] of
//! [`divergence_checkpoint`] (one parser and one set of transformers defaults for every
//! command) turned into findings, and the tensors it implies.
//!
//! Lenient on purpose: malformed fields, missing required fields and defaults worth knowing
//! become findings (`FindingKind::Config`), and the report goes on. Tensor layouts mirror the
//! transformers 5.17 modeling files of `qwen3`, `qwen2`, `llama` and `mistral`
//! (`nn.Linear(in, out)` weights stored as `[out, in]`). Deliberate simplifications: only the
//! dense decoder layout (`model.layers.N.{self_attn,mlp}`); MoE and vision towers are out of
//! scope, and an unknown `model_type` skips the structural checks with an info note.

pub(crate) use divergence_checkpoint::Dims;
use divergence_checkpoint::{Config, Family, QWEN3_DEFAULT_HEAD_DIM};
use divergence_names::{Op, Param};

use crate::report::{ConfigSummary, Finding, FindingKind, Severity};

/// config.json as the lint uses it.
#[derive(Debug, Clone)]
pub(crate) struct ModelConfig {
    pub summary: ConfigSummary,
    pub family: Option<Family>,
    /// `None` if a field that sizes tensors is missing without a default, or present but
    /// malformed (see `notes`).
    pub dims: Option<Dims>,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// `None` when config.json's value was rejected (never replaced by a default).
    pub tie_word_embeddings: Option<bool>,
    /// Findings about config.json itself.
    pub notes: Vec<Finding>,
}

/// The activations transformers 5.17 knows by name (`transformers.activations.ACT2CLS`).
const ACTIVATIONS: [&str; 24] = [
    "gelu",
    "gelu_10",
    "gelu_accurate",
    "gelu_fast",
    "gelu_new",
    "gelu_python",
    "gelu_python_tanh",
    "gelu_pytorch_tanh",
    "hardswish",
    "laplace",
    "leaky_relu",
    "linear",
    "mish",
    "prelu",
    "quick_gelu",
    "relu",
    "relu2",
    "relu6",
    "sigmoid",
    "silu",
    "sqrtsoftplus",
    "swish",
    "tanh",
    "xielu",
];

fn note(severity: Severity, message: String) -> Finding {
    Finding {
        severity,
        kind: FindingKind::Config,
        tensor: None,
        message,
    }
}

/// Turns the parsed config into what the lint needs, with a finding for every malformed
/// field, every missing required field and every default worth knowing.
pub(crate) fn interpret(cfg: &Config) -> ModelConfig {
    let mut notes: Vec<Finding> = cfg
        .issues
        .iter()
        .map(|issue| note(Severity::Error, format!("config.json: {issue}")))
        .collect();
    // The values `divergence run` refuses (crates/divergence-qwen3/src/config.rs): the lint is
    // never more lenient than the port (found by a bad-input hunt: rope_theta 0 and a negative
    // rms_norm_eps were clean here and refused there).
    if !(cfg.rope_theta.is_finite() && cfg.rope_theta > 0.0) {
        notes.push(note(
            Severity::Error,
            format!(
                "config.json: rope_theta ({}) must be finite and positive: RoPE's frequencies are theta^(-2i/d)",
                cfg.rope_theta
            ),
        ));
    }
    if !(cfg.rms_norm_eps.is_finite() && cfg.rms_norm_eps >= 0.0) {
        notes.push(note(
            Severity::Error,
            format!(
                "config.json: rms_norm_eps ({}) must be finite and >= 0: RMSNorm divides by sqrt(var + eps)",
                cfg.rms_norm_eps
            ),
        ));
    }
    let family = cfg.family;
    match (&cfg.model_type, family) {
        (None, _) => notes.push(note(
            Severity::Info,
            "config.json has no model_type: config checks skipped, only tensor statistics"
                .to_string(),
        )),
        (Some(t), None) => notes.push(note(
            Severity::Info,
            format!(
                "model_type {t:?} is not one we know ({}): config checks skipped, only tensor statistics",
                Family::KNOWN
            ),
        )),
        _ => {}
    }
    let (hidden, heads) = (cfg.hidden_size, cfg.num_attention_heads);
    let kv_heads = cfg.num_kv_heads(family);
    if let (None, Some(f), Some(k)) = (cfg.num_key_value_heads, family, kv_heads) {
        let message = if cfg.is_null("num_key_value_heads") {
            format!("config.json has num_key_value_heads: null: transformers uses num_attention_heads = {k} for {}", f.name())
        } else {
            format!(
                "config.json has no num_key_value_heads: transformers defaults it to {k} for {}",
                f.name()
            )
        };
        notes.push(note(Severity::Info, message));
    }
    let head_dim = cfg.head_dim(family);
    let no_head_dim = cfg.head_dim.is_none() && !cfg.rejected("head_dim");
    if let (true, Some(Family::Qwen3), Some(h), Some(n)) = (no_head_dim, family, hidden, heads) {
        // Qwen3Config declares head_dim: int = 128; it does not derive it.
        if h / n != QWEN3_DEFAULT_HEAD_DIM {
            notes.push(note(
                Severity::Warning,
                format!(
                    "config.json has no head_dim: transformers' Qwen3Config defaults it to {QWEN3_DEFAULT_HEAD_DIM}, not hidden_size / num_attention_heads = {}",
                    h / n
                ),
            ));
        }
    }

    // Also refused by `divergence run` (and failing in transformers' forward pass).
    if let (Some(q), Some(k)) = (heads, kv_heads) {
        if !q.is_multiple_of(k) {
            notes.push(note(
                Severity::Error,
                format!(
                    "config.json: num_attention_heads ({q}) is not a multiple of num_key_value_heads ({k}): each key/value head serves a whole group of query heads"
                ),
            ));
        }
    }
    if let Some(d) = head_dim.filter(|d| !d.is_multiple_of(2)) {
        notes.push(note(
            Severity::Error,
            format!("config.json: head_dim ({d}) must be even: RoPE rotates its two halves"),
        ));
    }
    // What transformers 5.17 refuses on load or in the forward pass (a bad-input hunt: both
    // read clean): an activation its `ACT2CLS` lacks (a `KeyError` at the first MLP), and
    // `layer_types` of another length than the layers (its configs' validation).
    if !cfg.rejected("hidden_act") && !ACTIVATIONS.contains(&cfg.hidden_act.as_str()) {
        notes.push(note(
            Severity::Error,
            format!(
                "config.json: hidden_act {:?} is no activation transformers knows ({})",
                divergence_names::one_line(&cfg.hidden_act),
                ACTIVATIONS.join(", ")
            ),
        ));
    }
    if let (Some(types), Some(layers)) = (&cfg.layer_types, cfg.num_hidden_layers) {
        if types.len() != layers {
            notes.push(note(
                Severity::Error,
                format!(
                    "config.json: layer_types lists {} layers, num_hidden_layers is {layers}",
                    types.len()
                ),
            ));
        }
    }
    // What transformers runs and `divergence run` does not (a review: inspect said nothing of
    // them, `run` refused the model): worth knowing before porting, as a port that leaves them
    // out diverges at the first attention.
    if family.is_some() {
        // (A RoPE object transformers refuses is a config error above, not this.)
        let rope_refused = cfg
            .issues
            .iter()
            .any(|i| i.key.starts_with("rope_scaling.") || i.key.starts_with("rope_parameters."));
        if cfg.rope_type != "default" && !rope_refused {
            notes.push(note(
                Severity::Info,
                format!(
                    "config.json: rope_type {:?}: RoPE's frequencies are scaled, not plain theta^(-2i/d) (a port must apply it; `divergence run` implements only \"default\" and refuses this config)",
                    divergence_names::one_line(&cfg.rope_type)
                ),
            ));
        }
        let sliding = cfg.sliding_layers();
        let window = cfg.window();
        let plural =
            |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        if sliding > 0 {
            let which = match (family, &cfg.layer_types) {
                (Some(Family::Mistral), _) if cfg.has("sliding_window") => {
                    "sliding_window set: every layer".to_string()
                }
                (Some(Family::Mistral), _) => {
                    "no sliding_window (mistral's default, 4096): every layer".to_string()
                }
                (_, Some(types)) => format!(
                    "layer_types has {sliding} of {} layers not \"full_attention\"",
                    types.len()
                ),
                (_, None) => format!(
                    "use_sliding_window: true: {sliding} {} from max_window_layers ({}) on",
                    plural(sliding, "layer", "layers"),
                    cfg.max_window_layers.unwrap_or(28)
                ),
            };
            // The window's size says when it matters: a port without the mask diverges only
            // past it.
            let span = match window.filter(|&w| w > 0) {
                Some(w) => format!(
                    "attention over the last {w} tokens (a port without the mask diverges on sequences longer than {w}"
                ),
                None => "attention over a window of past tokens (a port must mask it".to_string(),
            };
            notes.push(note(
                Severity::Info,
                format!(
                    "config.json: {which}: {span}; `divergence run` implements full attention only and refuses this config)"
                ),
            ));
            // What transformers' forward pass then fails on (a bad-input hunt: both read as
            // clean): sliding layers without a window (qwen3 and qwen2 keep `sliding_window`
            // only with `use_sliding_window`), or a window of no token.
            let bad_window = match window {
                None => Some(
                    if matches!(family, Some(Family::Qwen3 | Family::Qwen2))
                        && !cfg.use_sliding_window
                    {
                        "there is no window (sliding_window is dropped without use_sliding_window: true)".to_string()
                    } else {
                        "there is no window (sliding_window is null)".to_string()
                    },
                ),
                Some(w) if w <= 0 => Some(format!(
                    "sliding_window is {w}, not a positive number of tokens"
                )),
                Some(_) => None,
            };
            if let Some(why) = bad_window.filter(|_| !cfg.rejected("sliding_window")) {
                notes.push(note(
                    Severity::Error,
                    format!(
                        "config.json: {sliding} {} but {why}: transformers' forward pass fails",
                        plural(sliding, "layer slides", "layers slide")
                    ),
                ));
            }
        }
    }
    let tie = (!cfg.rejected("tie_word_embeddings")).then_some(cfg.tie_word_embeddings);
    let summary = ConfigSummary {
        model_type: cfg.model_type.clone(),
        hidden_size: hidden,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        intermediate_size: cfg.intermediate_size,
        vocab_size: cfg.vocab_size,
        attention_bias: cfg.attention_bias,
        tie_word_embeddings: tie,
    };

    let dims = family.and_then(|f| {
        let missing = cfg.missing_required();
        if !missing.is_empty() {
            notes.push(note(
                Severity::Error,
                format!(
                    "config.json ({}) has no {}: shape checks skipped",
                    f.name(),
                    missing.join(", ")
                ),
            ));
        }
        // Present but unusable (malformed, or above its sanity cap): already an error above.
        // Never replaced by a default (not even num_key_value_heads or head_dim, which have
        // one when absent), so the dimensions that depend on it are unknown.
        let unusable: Vec<&str> = cfg
            .issues
            .iter()
            .map(|i| i.key.as_str())
            .filter(|k| {
                divergence_checkpoint::REQUIRED.contains(k)
                    || matches!(*k, "num_key_value_heads" | "head_dim")
            })
            .collect();
        if !unusable.is_empty() {
            notes.push(note(
                Severity::Info,
                format!(
                    "shape checks skipped: config.json's {} not usable (see the config error)",
                    unusable.join(", ")
                ),
            ));
        }
        cfg.dims(family)
    });

    ModelConfig {
        summary,
        family,
        dims,
        attention_bias: cfg.attention_bias,
        mlp_bias: cfg.mlp_bias,
        tie_word_embeddings: tie,
        notes,
    }
}

/// One dimension of an expected shape, with the config expression it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dim {
    pub size: usize,
    pub label: &'static str,
}

/// A tensor the config implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    pub name: String,
    pub dims: Vec<Dim>,
}

impl Expected {
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().map(|d| d.size).collect()
    }
}

/// The tensors a `family` model with `dims` needs, names prefixed by `prefix` ("model." or
/// ""), in module order. `lm_head.weight` is not included (see the tied-embeddings check).
pub(crate) fn expected_tensors(cfg: &ModelConfig, dims: &Dims, prefix: &str) -> Vec<Expected> {
    const HIDDEN: &str = "hidden_size";
    const Q: &str = "num_attention_heads * head_dim";
    const KV: &str = "num_key_value_heads * head_dim";
    const INTER: &str = "intermediate_size";
    let family = cfg.family;
    let d = |size, label| Dim { size, label };
    let q = dims.heads * dims.head_dim;
    let kv = dims.kv_heads * dims.head_dim;
    let mut out = vec![Expected {
        name: format!("{prefix}embed_tokens.weight"),
        dims: vec![d(dims.vocab, "vocab_size"), d(dims.hidden, HIDDEN)],
    }];
    let (qkv_bias, o_bias) = match family {
        Some(Family::Qwen2) => (true, false),
        Some(Family::Mistral) => (false, false),
        _ => (cfg.attention_bias, cfg.attention_bias),
    };
    let mlp_bias = family == Some(Family::Llama) && cfg.mlp_bias;
    for i in 0..dims.layers {
        let l = format!("{prefix}layers.{i}");
        let mut push = |name: String, dims: Vec<Dim>| out.push(Expected { name, dims });
        push(
            format!("{l}.input_layernorm.weight"),
            vec![d(dims.hidden, HIDDEN)],
        );
        for (proj, out_dim, label) in [("q_proj", q, Q), ("k_proj", kv, KV), ("v_proj", kv, KV)] {
            push(
                format!("{l}.self_attn.{proj}.weight"),
                vec![d(out_dim, label), d(dims.hidden, HIDDEN)],
            );
            if qkv_bias {
                push(
                    format!("{l}.self_attn.{proj}.bias"),
                    vec![d(out_dim, label)],
                );
            }
        }
        push(
            format!("{l}.self_attn.o_proj.weight"),
            vec![d(dims.hidden, HIDDEN), d(q, Q)],
        );
        if o_bias {
            push(
                format!("{l}.self_attn.o_proj.bias"),
                vec![d(dims.hidden, HIDDEN)],
            );
        }
        if family == Some(Family::Qwen3) {
            push(
                format!("{l}.self_attn.q_norm.weight"),
                vec![d(dims.head_dim, "head_dim")],
            );
            push(
                format!("{l}.self_attn.k_norm.weight"),
                vec![d(dims.head_dim, "head_dim")],
            );
        }
        push(
            format!("{l}.post_attention_layernorm.weight"),
            vec![d(dims.hidden, HIDDEN)],
        );
        for (proj, o, i_) in [
            (
                "gate_proj",
                (dims.intermediate, INTER),
                (dims.hidden, HIDDEN),
            ),
            ("up_proj", (dims.intermediate, INTER), (dims.hidden, HIDDEN)),
            (
                "down_proj",
                (dims.hidden, HIDDEN),
                (dims.intermediate, INTER),
            ),
        ] {
            push(
                format!("{l}.mlp.{proj}.weight"),
                vec![d(o.0, o.1), d(i_.0, i_.1)],
            );
            if mlp_bias {
                push(format!("{l}.mlp.{proj}.bias"), vec![d(o.0, o.1)]);
            }
        }
    }
    out.push(Expected {
        name: format!("{prefix}norm.weight"),
        dims: vec![d(dims.hidden, HIDDEN)],
    });
    out
}

/// Why a tensor that `expected_tensors` does not list is unused, as a phrase that follows
/// "not used by the config: ". `missing(n)`: whether the config needs a tensor named `n`
/// that the checkpoint does not hold.
pub(crate) fn unused_reason(
    cfg: &ModelConfig,
    dims: &Dims,
    name: &str,
    missing: impl Fn(&str) -> bool,
) -> String {
    let family = cfg.family.map_or("this model", Family::name);
    // A needed tensor under the other prefix than the checkpoint's (a bad-input hunt: a bare
    // `layers.0...k_norm.weight` among `model.` names read "qwen3 has no q_norm / k_norm").
    let other = match name.strip_prefix("model.") {
        Some(bare) => bare.to_string(),
        None => format!("model.{name}"),
    };
    if missing(&other) {
        return format!(
            "the config's name for it is {other}: its prefix differs from the checkpoint's other tensors, so a loader that looks it up by name misses it"
        );
    }
    if let Some(idx) = divergence_names::layer_index(name) {
        if idx >= dims.layers {
            return format!("layer {idx} is beyond num_hidden_layers = {}", dims.layers);
        }
    }
    match Op::of_param(name) {
        Some((Op::QkProj(_) | Op::VProj | Op::OProj, Param::Bias)) => match cfg.family {
            Some(Family::Qwen2) => "qwen2 has bias on q/k/v only, not on o_proj".to_string(),
            Some(Family::Mistral) => "mistral attention has no bias".to_string(),
            _ => "attention_bias is false in config.json".to_string(),
        },
        Some((Op::GateProj | Op::UpProj | Op::DownProj, Param::Bias)) => match cfg.family {
            Some(Family::Llama) => "mlp_bias is false in config.json".to_string(),
            _ => format!("{family} mlp has no bias"),
        },
        Some((Op::QkNorm(_), _)) if cfg.family != Some(Family::Qwen3) => {
            format!("{family} has no q_norm / k_norm (only qwen3 does)")
        }
        _ => format!("a {family} model with this config.json has no such tensor"),
    }
}
